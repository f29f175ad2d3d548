"""The documentation site: it builds offline with ``mkdocs build --strict``, its code runs, its references are whole.

Convention for code blocks in ``docs/**/*.md`` (the pages a reader copies from):

- ```` ```python ```` blocks run, in page order, in one namespace per page;
- ```` ```bash ```` blocks run line by line; every line is a ``steerkit ...`` command (run through Typer's
  ``CliRunner``), a comment, or blank;
- a block that cannot run here carries ``<!-- illustrative: REASON -->`` on the line just before its fence;
- ```` ```text ````, ```` ```json ```` and ```` ```yaml ```` blocks are data or output and never hold a command.

Each page runs in a fresh working directory holding what its commands name: the bundled sentiment data at
``steerkit/resources/sentiment/``, a steering artifact ``my-vector`` built from it (unless the page writes it
itself with ``--out``), and the model. The embedded
model name ``SmolLM2-135M-Instruct`` resolves (through ``steerkit.models.default_model_dir``, the same code path)
to a tiny random Llama, and the Hub is a Hub-compatible server on 127.0.0.1 (``tests/hubserver.py``) reached
through ``HF_ENDPOINT``-style settings and a token in ``HF_TOKEN``. Nothing else is substituted.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from tiny import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"
PAGES = sorted(p for p in DOCS.rglob("*.md") if HOOKS not in p.parents)
RUN_LANGS = {"python", "bash"}
DATA_LANGS = {"text", "json", "yaml"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", flags=re.M | re.S
)
ILLUSTRATIVE = re.compile(r"^\s*<!--\s*illustrative:(?P<reason>.*?)-->\s*$")
COMMAND_LIKE = re.compile(r"^\s*(\$ |>>> |steerkit |python |pip |make |import |from \w+ import )")
HUB_USER = "your-name"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    body: str
    illustrative: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, with the illustrative marker (if any) of the line before each."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = ILLUSTRATIVE.match(before)
        reason = marker.group("reason").strip() if marker else None
        body = "\n".join(row[len(match.group("indent")) :] for row in match.group("body").splitlines())
        out.append(Block(page, line, match.group("lang"), body, reason))
    return out


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in RUN_LANGS and b.illustrative is None]


def cli_lines(block: Block) -> list[list[str]]:
    """The commands of a bash block as argument lists (continuation lines joined, comments dropped)."""
    commands = []
    for line in block.body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "steerkit", (
            f"{block.where}: `{line}` is not a steerkit command; run it some other way or mark the block "
            "<!-- illustrative: REASON -->"
        )
        commands.append(words)
    return commands


# --- the convention itself -----------------------------------------------------------------------------------


def test_pages_exist_and_hold_code() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    for required in ("index.md", "quickstart.md", "concepts.md", "cli.md", "artifact-format.md", "hub.md"):
        assert required in names
    assert sum(len(runnable(p)) for p in PAGES) >= 15


def test_home_has_its_one_picture() -> None:
    import xml.etree.ElementTree as ET

    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", (DOCS / "index.md").read_text(encoding="utf-8"))
    assert len(pictures) == 1
    root = ET.parse(DOCS / pictures[0]).getroot()  # well-formed SVG
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}title") is not None  # accessible name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_block_follows_the_convention(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.count("```") % 2 == 0, f"{page}: unbalanced code fences"
    for block in blocks(page):
        assert block.lang in RUN_LANGS | DATA_LANGS, (
            f"{block.where}: tag the block with one of {RUN_LANGS | DATA_LANGS}"
        )
        if block.illustrative is not None:
            assert block.lang in RUN_LANGS, f"{block.where}: only python/bash blocks can be illustrative"
            assert len(block.illustrative.split()) >= 3, f"{block.where}: say why the block cannot run"
        if block.lang in DATA_LANGS:
            hidden = [line for line in block.body.splitlines() if COMMAND_LIKE.match(line)]
            assert not hidden, f"{block.where}: code in a {block.lang} block; use a python/bash block: {hidden}"
        if block.lang == "bash" and block.illustrative is None:
            assert cli_lines(block), f"{block.where}: an empty bash block"
    markers = [line for line in text.splitlines() if "illustrative" in line and line.lstrip().startswith("<!--")]
    assert len(markers) == sum(b.illustrative is not None for b in blocks(page)), f"{page}: a marker not before a fence"


# --- running the pages -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the pages' commands name: the tiny model, the bundled data, and an artifact ``my-vector``."""
    from tiny import tiny_llama, tiny_tokenizer

    from steerkit import build, warm_start
    from steerkit.models import load_model
    from steerkit.readers import load_pairs

    base = tmp_path_factory.mktemp("docs-base")
    tiny_llama(sharpness=20).save_pretrained(base / "model")
    tiny_tokenizer().save_pretrained(base / "model")
    data = base / "steerkit" / "resources" / "sentiment"
    data.mkdir(parents=True)
    for name in ("train.jsonl", "test.jsonl"):
        shutil.copy(ROOT / "steerkit" / "resources" / "sentiment" / name, data / name)
    model, tokenizer = load_model(base / "model")
    pairs = load_pairs(data / "train.jsonl")
    warm = warm_start(model, pairs, tokenizer=tokenizer, lr=1e-3, batch_size=4, seed=0)
    build(warm, None, pairs, tokenizer=tokenizer).save(base / "my-vector")
    return base


@pytest.fixture
def workspace(docs_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh copy of ``docs_base`` as the working directory, the tiny model as the embedded one, a local Hub."""
    import huggingface_hub.constants as hf
    from hubserver import HubServer

    import steerkit.models

    work = tmp_path / "work"
    shutil.copytree(docs_base, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(steerkit.models, "default_model_dir", lambda **_: work / "model")
    with HubServer(user=HUB_USER) as hub:
        cache = tmp_path / "hf-cache"
        for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("STEERKIT_HUB_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(hf, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(
            hf, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
        yield work


RUNNABLE_PAGES = [p for p in PAGES if runnable(p)]


def outputs(page: Path) -> set[str]:
    """Folders a page's commands write (``--out``/``-o``/``--to``)."""
    found = set()
    for block in runnable(page):
        if block.lang == "bash":
            for words in cli_lines(block):
                found |= {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "-o", "--to")}
    return found


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_code_runs(page: Path, workspace: Path) -> None:
    from typer.testing import CliRunner

    from steerkit_cli.app import app

    for folder in outputs(page):  # what the page writes itself is not there before it runs
        shutil.rmtree(workspace / folder, ignore_errors=True)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in runnable(page):
        if block.lang == "python":
            exec(compile(block.body, block.where, "exec"), namespace)
            continue
        for words in cli_lines(block):
            result = CliRunner().invoke(app, words[1:])
            assert result.exit_code == 0, f"{block.where}: `{shlex.join(words)}` failed:\n{result.output}"


def test_quickstart_loop_covers_the_whole_cli_loop() -> None:
    commands = [words[1] for b in runnable(DOCS / "quickstart.md") if b.lang == "bash" for words in cli_lines(b)]
    loop = ["warmstart", "build", "eval", "push", "pull", "generate"]
    positions = [commands.index(name) for name in loop]
    assert positions == sorted(positions), commands


# --- the site --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        env={**_clean_env(), "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"},
    )
    return out, proc


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_PROXY", "HTTPS_PROXY"))}


def test_mkdocs_build_strict_passes_offline(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = site
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("index.html", "quickstart/index.html", "cli/index.html", "api/internals/index.html"):
        assert (out / page).is_file(), page


def test_config_fetches_nothing_remote() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    plugins = {next(iter(p)) if isinstance(p, dict) else p: p for p in config["plugins"]}
    python = plugins["mkdocstrings"]["mkdocstrings"]["handlers"]["python"]
    assert "inventories" not in python and "import" not in python  # objects.inv downloads need the network
    assert python["options"]["filters"] == ["!^_"]
    assert python["options"]["docstring_style"] == "google"
    assert config["theme"]["font"] is False  # no Google Fonts
    assert "extra_javascript" not in config
    for sheet in config.get("extra_css", []):  # local style sheets only: nothing fetched from elsewhere
        assert "//" not in sheet and (ROOT / "docs" / sheet).is_file(), sheet
    assert config["strict"] is True


class _Headings(HTMLParser):
    """``id`` and text of every ``<h2>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[tuple[str, str]] = []
        self._open: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._open = dict(attrs).get("id") or ""
            self._buffer: list[str] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._open is not None:
            self.h2.append((self._open, "".join(self._buffer).replace("¶", "").strip()))
            self._open = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open is not None:
            self._buffer.append(data)


def _app_group() -> Any:
    import typer.main

    from steerkit_cli.app import app

    return typer.main.get_command(app)


def test_cli_reference_lists_exactly_the_registered_commands(site: tuple[Path, Any]) -> None:
    out, proc = site
    assert proc.returncode == 0, proc.stderr[-4000:]
    parser = _Headings()
    parser.feed((out / "cli" / "index.html").read_text(encoding="utf-8"))
    group = _app_group()
    assert [text for _, text in parser.h2] == [f"steerkit {name}" for name in group.commands]
    assert [anchor for anchor, _ in parser.h2] == [f"steerkit-{name}" for name in group.commands]
    # every option spelling of every command is on the page, in its command's section
    html = (out / "cli" / "index.html").read_text(encoding="utf-8")
    sections = re.split(r'<h2 id="steerkit-', html)[1:]
    for (name, command), section in zip(group.commands.items(), sections, strict=True):
        assert section.startswith(f'{name}"')
        for param in command.params:
            for spelling in [*param.opts, *getattr(param, "secondary_opts", [])]:
                shown = spelling.upper() if param.param_type_name == "argument" else spelling
                assert f"<code>{shown}</code>" in section, f"steerkit {name}: {shown} missing"


def test_cli_reference_examples_parse_as_their_commands() -> None:
    sys.path.insert(0, str(HOOKS))
    try:
        cli_reference = importlib.import_module("cli_reference")
    finally:
        sys.path.remove(str(HOOKS))
    group = _app_group()
    parent = group.context_class(group, info_name="steerkit")
    seen = 0
    for name, command in group.commands.items():
        for example in cli_reference.examples(command.epilog):
            words = shlex.split(example, comments=True)
            assert words[:2] == ["steerkit", name], example
            command.make_context(name, words[2:], parent=parent)  # raises on an unknown option or missing argument
            seen += 1
    assert seen >= len(group.commands)


def test_cli_reference_hook_refuses_a_page_without_its_marker() -> None:
    sys.path.insert(0, str(HOOKS))
    try:
        cli_reference = importlib.import_module("cli_reference")
    finally:
        sys.path.remove(str(HOOKS))

    class File:
        src_uri = "cli.md"

    class Page:
        file = File()

    with pytest.raises(ValueError, match="cli-reference"):
        cli_reference.on_page_markdown("# CLI reference\n", page=Page())
    assert (
        cli_reference.on_page_markdown("# other\n", page=type("P", (), {"file": type("F", (), {"src_uri": "x.md"})}))
        == "# other\n"
    )


def test_griffe_extension_renames_only_example_headers() -> None:
    sys.path.insert(0, str(HOOKS))
    try:
        griffe_examples = importlib.import_module("griffe_examples")
    finally:
        sys.path.remove(str(HOOKS))
    doc = 'Do it.\n\n    Example:\n        >>> x["a"]\n        1\n\n    See the Example: below.\n'
    assert griffe_examples.pluralize_example_headers(doc) == doc.replace("    Example:\n", "    Examples:\n")


# --- the API reference and the artifact spec stay whole --------------------------------------------------------


def test_every_public_module_has_an_api_page_and_the_rest_one_internals_page() -> None:
    from test_layout import PUBLIC_MODULES

    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    modules = sorted(p.stem for p in (ROOT / "steerkit").glob("*.py") if not p.stem.startswith("_"))
    assert modules, "no steerkit modules found"
    internals = (DOCS / "api" / "internals.md").read_text(encoding="utf-8")
    assert "api/internals.md" in config
    for name in modules:
        page = DOCS / "api" / f"{name}.md"
        if name in PUBLIC_MODULES:
            assert page.is_file(), f"docs/api/{name}.md missing"
            assert f"::: steerkit.{name}\n" in page.read_text(encoding="utf-8") + "\n"
            assert f"api/{name}.md" in config, f"api/{name}.md is not in the nav"
        else:
            assert not page.is_file(), f"docs/api/{name}.md: an internal module belongs on the internals page"
            assert f"::: steerkit.{name}\n" in internals, f"steerkit.{name} is not on the internals page"
    assert "::: steerkit\n" in (DOCS / "api" / "steerkit.md").read_text(encoding="utf-8")
    import steerkit

    listed = (DOCS / "api" / "steerkit.md").read_text(encoding="utf-8")
    for name in steerkit.__all__:
        assert f"`{name}`" in listed, f"steerkit.{name} is not listed on the steerkit page"


def _shape(value: Any) -> Any:
    """The key tree of a JSON value (dicts → their keys' shapes; anything else → its JSON kind)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return "null" if value is None else "string" if isinstance(value, str) else "number"


def test_artifact_spec_example_has_exactly_the_keys_build_writes(docs_base: Path) -> None:
    page = DOCS / "artifact-format.md"
    examples = [b for b in blocks(page) if b.lang == "json" and '"format_version"' in b.body]
    assert len(examples) == 1
    written = json.loads((docs_base / "my-vector" / "steer_config.json").read_text(encoding="utf-8"))
    assert _shape(json.loads(examples[0].body)) == _shape(written)


def test_artifact_spec_documents_every_config_key() -> None:
    from steerkit.config import MuStats, SteerConfig

    text = (DOCS / "artifact-format.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.M))
    for cls in (SteerConfig, MuStats):
        for f in dataclasses.fields(cls):
            assert f.name in rows, f"{cls.__name__}.{f.name} has no row in the artifact spec"
    for key in ("n_examples", "n_tokens", "data_sha256", "kl_mean", "kept_mean", "masked_gold_fraction"):
        assert key in rows


def test_concepts_states_the_real_defaults() -> None:
    import inspect

    from steerkit.builder import build

    text = (DOCS / "concepts.md").read_text(encoding="utf-8")
    params = inspect.signature(build).parameters
    assert f"The default aggregator is `{params['mu_aggregator'].default}`" in text
    assert f"α = {params['alpha'].default} by default" in text
