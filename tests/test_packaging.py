"""Packaging (issue: Foundation): the wheel ships `steerkit` and `steerkit_cli`, never a top-level `cli`.

The wheel is built offline with the build backend installed in the venv (``--no-isolation``) and inspected as a
zip; the editable install in use is checked from another working directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from tiny import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("steerkit-*-py3-none-any.whl")
    return zipfile.ZipFile(built)


def dist_info(wheel: zipfile.ZipFile) -> str:
    (name,) = {n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")}
    return name


def test_wheel_holds_exactly_the_two_packages(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"steerkit", "steerkit_cli", dist_info(wheel)}
    assert not any(n.startswith(("cli/", "tests/", "benchmarks/", "docs/")) or n == "cli.py" for n in names)
    assert "steerkit/__init__.py" in names and "steerkit_cli/__init__.py" in names
    assert "steerkit/py.typed" in names
    # Every library module in the source tree is shipped, and no bytecode.
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "steerkit").rglob("*.py")}
    assert source <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # RECORD lists every file of the wheel (itself included).
    record = wheel.read(f"{dist_info(wheel)}/RECORD").decode()
    assert {line.split(",")[0] for line in record.splitlines() if line} == set(names)


def test_wheel_entry_point_and_metadata(wheel: zipfile.ZipFile) -> None:
    info = dist_info(wheel)
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    # Exactly the console script and the vLLM logits-processor plugin (vLLM loads the group into every engine).
    assert entry_points.split() == [
        "[console_scripts]",
        "steerkit",
        "=",
        "steerkit_cli.app:main",
        "[vllm.logits_processors]",
        "steerkit",
        "=",
        "steerkit.vllm:SteeringLogitsProcessor",
    ]
    meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert meta["Name"] == "steerkit"
    from steerkit import __version__

    assert meta["Version"] == __version__
    requires = meta.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in runtime}
    assert names == {"torch", "transformers", "peft", "safetensors", "huggingface-hub", "typer", "rich"}
    assert "torch>=2.6" in runtime and "transformers>=5" in runtime
    assert not any("<" in r or "==" in r for r in runtime)  # open lower bounds only
    dev = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requires if "extra == 'dev'" in r}
    assert {"pytest", "hypothesis", "ruff", "mypy"} <= dev


def test_editable_install_imports_both_packages_from_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import json, steerkit, steerkit_cli; print(json.dumps([steerkit.__file__, steerkit_cli.__file__]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib, cli = json.loads(result.stdout)
    assert Path(lib) == ROOT / "steerkit" / "__init__.py"
    assert Path(cli) == ROOT / "cli" / "steerkit_cli" / "__init__.py"
    dist = metadata.distribution("steerkit")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    assert direct_url.get("dir_info", {}).get("editable") is True
    assert sorted((e.group, e.name, e.value) for e in dist.entry_points) == [
        ("console_scripts", "steerkit", "steerkit_cli.app:main"),
        ("vllm.logits_processors", "steerkit", "steerkit.vllm:SteeringLogitsProcessor"),
    ]


def test_steerkit_never_imports_the_cli_stack(tmp_path: Path) -> None:
    code = (
        "import sys, steerkit, steerkit.svdecode, steerkit.vector, steerkit.errors, steerkit.constants; "
        "print(sorted(m for m in ('typer', 'rich', 'steerkit_cli', 'transformers', 'peft') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_make_test_installs_torch_first_then_runs_every_check() -> None:
    result = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def index(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    assert index(r"-m venv \.venv") < index(r"pip install .*torch==2\.13\.0") < index(r"pip install .*-e '\.\[dev\]'")
    assert index(r"-e '\.\[dev\]'") < index(r"ruff check") < index(r"mypy") < index(r"-m pytest")
    assert "make test" in (ROOT / ".ci" / "run").read_text()
