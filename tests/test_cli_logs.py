"""What a newcomer meets around the commands: progress lines in a log file, ``steerkit models``, ``python -m
steerkit`` and ``--nproc`` outside a command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny import HANG_SECONDS
from typer.testing import CliRunner

from steerkit_cli.app import app
from steerkit_cli.output import _ProgressLines

WORDS = ["abc", "dog", "cat", "sun", "moon", "tree", "fish", "bird"]
LINE = re.compile(r"^build: step (\d+)/(\d+), elapsed \d+ s(, ETA \d+ s)?$")


def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_llama, tiny_lora, tiny_tokenizer

    root = tmp_path_factory.mktemp("logs")
    tiny_llama(sharpness=20).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    tiny_lora(tiny_llama(sharpness=20)).save_pretrained(root / "adapter")
    pairs = [{"prompt": f"{w}=", "completion": w[::-1]} for w in WORDS]
    (root / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return root


def build_logging_to_a_file(work: Path, name: str, interval: str) -> list[str]:
    args = ["build", "model", "adapter", "train.jsonl", "--out", name, "--batch-size", "2", "--folds", "0"]
    env = {**os.environ, "STEERKIT_PROGRESS_INTERVAL": interval}
    log = work / f"{name}.log"
    with log.open("w") as stderr:  # stderr redirected to a file, as a user piping to a log or CI does
        proc = subprocess.run(
            [sys.executable, "-m", "steerkit", *args], stdout=subprocess.DEVNULL, stderr=stderr,
            cwd=work, env=env, timeout=HANG_SECONDS,
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    return [line for line in text.splitlines() if line.startswith("build: ")]


@pytest.mark.slow  # starts a process that imports torch
def test_progress_lines_reach_a_log_file_with_step_elapsed_and_eta(work: Path) -> None:
    lines = build_logging_to_a_file(work, "every", "0")
    steps = [LINE.match(line) for line in lines]
    assert all(steps), lines
    assert [(int(m[1]), int(m[2])) for m in steps if m] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 8 pairs, batches of 2
    assert [bool(m[3]) for m in steps if m] == [True, True, True, False]  # an ETA until the last step
    throttled = build_logging_to_a_file(work, "hourly", "3600")
    assert [line.split(",")[0] for line in throttled] == ["build: step 1/4", "build: step 4/4"]  # first and last


def test_progress_lines_are_throttled_per_interval() -> None:
    lines: list[str] = []
    progress = _ProgressLines(lines.append, interval=3600)
    for step in range(1, 11):
        progress.update("eval warm", step, 10)
    progress.update("eval static", 1, 5)
    assert [line.split(",")[0] for line in lines] == [
        "eval warm: step 1/10",
        "eval warm: step 10/10",
        "eval static: step 1/5",
    ]


def test_models_lists_the_packaged_models_and_their_folders(tmp_path: Path) -> None:
    env = {"STEERKIT_HOME": str(tmp_path)}
    cached = tmp_path / "models" / "SmolLM2-135M-Instruct"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    (cached / "model.safetensors").write_bytes(b"")
    result = invoke("models", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["data"]}
    assert rows["SmolLM2-135M-Instruct"]["folder"] == str(cached) and rows["SmolLM2-135M-Instruct"]["cached"]
    assert rows["gemma-3-270m"] == {**rows["gemma-3-270m"], "folder": str(tmp_path / "models" / "gemma-3-270m"),
                                    "cached": False}  # fmt: skip
    named = invoke("models", "SmolLM2-135M-Instruct", env=env)  # cached: printed, nothing made
    assert named.exit_code == 0 and named.stdout.strip() == str(cached)
    human = invoke("models", env=env)
    assert "gemma-3-270m (not cached yet: made on first use)" in human.stdout
    unknown = invoke("models", "nope", "--json", env=env)
    assert unknown.exit_code == 1
    assert json.loads(unknown.stdout)["error"]["message"] == "no packaged model named 'nope'"


def test_nproc_needs_the_steerkit_command_line(work: Path) -> None:
    result = invoke(
        "build", work / "model", work / "adapter", work / "train.jsonl", "--out", work / "x", "--nproc", "2"
    )
    assert result.exit_code == 1
    assert "--nproc needs the command line of 'steerkit build'" in result.stderr
    assert "torchrun --standalone --nproc-per-node 2 -m steerkit build" in result.stderr
    assert not (work / "x").exists()


@pytest.mark.slow  # starts a process that imports torch
def test_python_m_steerkit_is_the_steerkit_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "steerkit", "models", "--help"], capture_output=True, text=True, timeout=HANG_SECONDS
    )
    assert proc.returncode == 0, proc.stderr
    assert "$ steerkit models" in proc.stdout


def test_inspect_decodes_tokens_with_a_packaged_base_models_tokenizer(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact records a packaged model by name: inspect finds its tokenizer through the model's folder."""
    import dataclasses

    from tiny import make_vector, tiny_tokenizer

    import steerkit.models

    vector = make_vector()
    config = dataclasses.replace(vector.config, base_model={"name_or_path": "SmolLM2-135M-Instruct", "revision": None})
    dataclasses.replace(vector, config=config).save(tmp_path / "vec")
    monkeypatch.setattr(steerkit.models, "model_dir", lambda name, **_: work / "model")  # the tiny model stands in
    data = json.loads(invoke("inspect", tmp_path / "vec", "--top", "2", "--json").stdout)["data"]
    tokenizer = tiny_tokenizer()
    assert [e["token"] for e in data["top_promoted"]] == [tokenizer.decode([e["id"]]) for e in data["top_promoted"]]
    human = invoke("inspect", tmp_path / "vec", "--top", "2")
    assert re.search(r"base model +SmolLM2-135M-Instruct +\n", human.stdout), human.stdout  # no "(revision None)"
    assert "no tokenizer available" not in human.stderr
