"""The docs and the README against the code: one default mode, one default μ rule, and no reference to a file a user
cannot see (the design notes live outside the repository)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import typer.main

import steerkit
from steerkit.lm_eval import SteerkitLM
from steerkit_cli.app import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SOURCES = [*PAGES, *sorted(ROOT.glob("steerkit/**/*.py")), *sorted(ROOT.glob("cli/**/*.py"))]
SOURCES += [*sorted(ROOT.glob("benchmarks/*.py")), *sorted(ROOT.glob("tests/*.py")), ROOT / "Makefile"]

# A default mode as the docs state it: "`--mode dynamic` (the default)", "`mode` is `dynamic` (default)",
# "`--mode recommended` (the default: ...)", "mode=None: the recommended setting" in a table of defaults.
MODE_CLAIMS = [
    re.compile(r"`(?:--mode |mode=)?(\w+)` \((?:the )?default"),
    re.compile(r"default(?:s)? (?:mode|to) (?:is )?`(?:--mode |mode=)?(\w+)`"),
]
# A comment on an ``attach`` call that passes no mode, saying which mode it decodes in.
ATTACH_COMMENT = re.compile(r"attach\((?![^)]*mode=)[^)]*\)[^#\n]*#\s*([^\n]*)")
AGGREGATOR_CLAIMS = [
    re.compile(r"default aggregator is `([\w/]+)`"),
    re.compile(r"uses `([\w/]+)` by default"),
    re.compile(r"default `([\w/]+)` adds"),
]


def mode_claims(text: str) -> list[str]:
    """Every default mode the text states, from sentences that speak of a mode."""
    found = []
    for sentence in re.split(r"(?<=[.;:])\s", text):
        if "mode" in sentence:
            found += [m for pattern in MODE_CLAIMS for m in pattern.findall(sentence)]
    return found


def test_the_checks_catch_the_old_contradictions() -> None:
    old = (
        "`--mode compare` prints both; `--mode dynamic` (the default) is the paper's SVDecode.\n"
        "`mode` is `dynamic` (default), `static` or `warm`.\n"
        "with steerkit.attach(vector, warm, tokenizer=tokenizer) as steered:  # dynamic mode, mu = vector.mu\n"
    )
    assert mode_claims(old) == ["dynamic", "dynamic"]
    assert ATTACH_COMMENT.findall(old) == ["dynamic mode, mu = vector.mu"]
    assert AGGREGATOR_CLAIMS[0].findall("The default aggregator is `median/paper`, chosen") == ["median/paper"]


def test_the_code_has_one_default_mode() -> None:
    assert inspect.signature(steerkit.attach).parameters["mode"].default is None  # None: the recommended setting
    assert inspect.signature(SteerkitLM.__init__).parameters["mode"].default == "recommended"
    generate = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    option = next(p for p in generate.params if p.name == "mode")
    assert option.default is None  # generate: --mode recommended unless --mu is given alone


def test_every_page_states_the_default_mode_the_code_has() -> None:
    stated = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for claim in mode_claims(text):
            stated.setdefault(claim, []).append(page.name)
        for comment in ATTACH_COMMENT.findall(text):
            if "mode" in comment or "setting" in comment:
                assert "recommended" in comment, f"{page.name}: attach without mode= commented as {comment!r}"
    assert set(stated) == {"recommended"}, stated


def test_every_page_states_the_default_mu_rule_the_code_has() -> None:
    default = inspect.signature(steerkit.build).parameters["mu_aggregator"].default
    build = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    assert next(p for p in build.params if p.name == "mu_aggregator").default == default
    stated = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        stated += [(page.name, m) for pattern in AGGREGATOR_CLAIMS for m in pattern.findall(text)]
    assert len(stated) >= 2  # concepts.md and results.md say it
    assert all(rule == default for _, rule in stated), stated


def test_nothing_cites_the_design_notes_a_user_cannot_see() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bDESIGN\b", line)
    ]
    assert cited == []


def test_the_mode_and_mu_page_is_linked_from_the_pages_that_used_to_answer_it() -> None:
    for name in ("README.md", "docs/quickstart.md", "docs/concepts.md"):
        assert "mode-and-mu.md" in (ROOT / name).read_text(encoding="utf-8"), name
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert nav.index("mode-and-mu.md") < nav.index("api/index.md")


# A default criterion of build as the docs state it: "Build's default criterion, `split`," or "its default criterion
# `split`".
CRITERION_CLAIM = re.compile(r"default criterion,? `(\w+)`")


def test_every_page_states_the_default_criterion_and_the_answer_length_the_code_has() -> None:
    from steerkit.ranking import ANSWER_EXTRA_TOKENS, ANSWER_MAX_TOKENS, ANSWER_MIN_TOKENS

    default = inspect.signature(steerkit.build).parameters["criterion"].default
    build = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    assert next(p for p in build.params if p.name == "criterion").default == default
    stated: dict[str, list[str]] = {}
    for page in PAGES:
        text = " ".join(page.read_text(encoding="utf-8").split())
        for claim in CRITERION_CLAIM.findall(text):
            stated.setdefault(claim, []).append(page.name)
    assert set(stated) == {default} and len(set(stated[default])) >= 3, stated  # README, concepts, results
    concepts = " ".join((ROOT / "docs" / "concepts.md").read_text(encoding="utf-8").split())
    assert (
        f"at least {ANSWER_MIN_TOKENS} and at most the gold completion's length + {ANSWER_EXTRA_TOKENS} new tokens, "
        f"never over {ANSWER_MAX_TOKENS}"
    ) in concepts
