"""The README: it opens with the two commands, its Python snippet runs (on a tiny model), its CLI examples are real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steerkit_cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL)
    assert first is not None
    assert first.group(2).split() == ["make", "demo", "make", "test"]


def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The snippet as written, with the embedded default model swapped for a tiny one (same code path)."""
    from tiny import tiny_llama, tiny_tokenizer

    import steerkit.models

    model_dir = tmp_path / "tiny-model"
    tiny_llama(sharpness=20).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    monkeypatch.setattr(steerkit.models, "default_model_dir", lambda **_: model_dir)
    monkeypatch.chdir(tmp_path)
    snippets = blocks("python")
    assert len(snippets) == 1
    exec(compile(snippets[0], str(README), "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert re.search(r"^mu = -?[\d.]+, mu_static = -?[\d.]+$", printed, flags=re.MULTILINE)
    assert "'value'" in printed and "'ci_low'" in printed
    assert (tmp_path / "my-vector" / "steering.safetensors").is_file()


def test_readme_cli_examples_are_real_commands_and_options() -> None:
    lines = [line for block in blocks("console") for line in block.splitlines() if line.startswith("$ steerkit")]
    assert len(lines) >= 8
    for line in lines:
        words = line.split()
        name = words[2] if len(words) > 2 else "--help"
        if name.startswith("-"):
            continue
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, line
        for option in (w for w in words[3:] if w.startswith("--")):
            assert option.split("=")[0] in result.stdout, f"{option} is not an option of `steerkit {name}`"
