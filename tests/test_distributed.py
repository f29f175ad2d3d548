"""`steerkit build` and `steerkit eval` under torchrun (2 gloo processes on the CPU) equal one process, bytewise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import HANG_SECONDS

pytestmark = pytest.mark.slow  # each run starts processes that import torch and transformers

WORDS = ["abc", "dog", "cat", "sun", "moon", "tree", "fish", "bird", "lamp"]  # 9 pairs: 5 batches of 2, uneven


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_llama, tiny_lora, tiny_tokenizer

    root = tmp_path_factory.mktemp("dist")
    tiny_llama(sharpness=20).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    tiny_lora(tiny_llama(sharpness=20)).save_pretrained(root / "adapter")
    pairs = [{"prompt": f"{w}=", "completion": w[::-1] * 2} for w in WORDS]
    (root / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    items = [{"prompt": f"Q: {w}=", "choices": [w[::-1], w, w[:2]], "label": 0} for w in WORDS[:7]]
    (root / "test.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "bad.jsonl").write_text('{"prompt": "x"}\n')
    return root


def run(args: list[str], *, processes: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEERKIT_DIST_TIMEOUT": str(HANG_SECONDS), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "steerkit", *args]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command = [*launcher, "-m", "steerkit", *args]  # the module name a user guesses
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=HANG_SECONDS)


def test_build_on_two_processes_writes_the_same_bytes(work: Path) -> None:
    base = ["build", str(work / "model"), str(work / "adapter"), str(work / "train.jsonl"), "--batch-size", "2"]
    one = run([*base, "--out", str(work / "one"), "--json"], processes=1, cwd=work)
    two = run([*base, "--out", str(work / "two"), "--json"], processes=2, cwd=work)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout)["data"]["n_examples"] == 9  # printed once, by rank 0
    files = sorted(p.relative_to(work / "one").as_posix() for p in (work / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(work / "two").as_posix() for p in (work / "two").rglob("*") if p.is_file())
    for name in files:
        assert (work / "one" / name).read_bytes() == (work / "two" / name).read_bytes(), name


def test_build_nproc_2_writes_the_same_bytes_as_one_process_at_equal_threads(work: Path) -> None:
    base = ["build", str(work / "model"), str(work / "adapter"), str(work / "train.jsonl"), "--batch-size", "2"]
    env = {**os.environ, "STEERKIT_DIST_TIMEOUT": str(HANG_SECONDS)}
    env.pop("OMP_NUM_THREADS", None)  # --nproc sets torchrun's default, one thread per process
    command = [sys.executable, "-m", "steerkit", *base, "--out", str(work / "nproc"), "--nproc", "2", "--json"]
    two = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env, timeout=HANG_SECONDS)
    assert two.returncode == 0, two.stderr
    one = run([*base, "--out", str(work / "one-thread"), "--json"], processes=1, cwd=work)  # OMP_NUM_THREADS=1
    assert one.returncode == 0, one.stderr
    assert json.loads(two.stdout)["data"]["n_examples"] == 9  # printed once, by rank 0
    files = sorted(p.relative_to(work / "nproc").as_posix() for p in (work / "nproc").rglob("*") if p.is_file())
    assert "steering.safetensors" in files
    for name in files:
        assert (work / "nproc" / name).read_bytes() == (work / "one-thread" / name).read_bytes(), name


def test_eval_nproc_2_gives_the_same_metrics(work: Path) -> None:
    base = ["build", str(work / "model"), str(work / "adapter"), str(work / "train.jsonl")]
    assert run([*base, "--out", str(work / "for-eval"), "--force"], processes=1, cwd=work).returncode == 0
    args = ["eval", str(work / "for-eval"), str(work / "test.jsonl"), "--model", str(work / "model"), "--json"]
    one = run(args, processes=1, cwd=work)
    two = run([*args, "--nproc=2"], processes=1, cwd=work)  # one launcher process that starts two
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert json.loads(one.stdout) == json.loads(two.stdout)


def test_eval_on_two_processes_gives_the_same_metrics(work: Path) -> None:
    if not (work / "one").is_dir():
        base = ["build", str(work / "model"), str(work / "adapter"), str(work / "train.jsonl")]
        assert run([*base, "--out", str(work / "one")], processes=1, cwd=work).returncode == 0
    args = ["eval", str(work / "one"), str(work / "test.jsonl"), "--model", str(work / "model"), "--json"]
    one, two = run(args, processes=1, cwd=work), run(args, processes=2, cwd=work)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert json.loads(one.stdout) == json.loads(two.stdout)  # per-item scores, metrics and intervals alike


def test_bad_data_ends_every_rank_with_the_one_line_message(work: Path) -> None:
    args = ["build", str(work / "model"), str(work / "adapter"), str(work / "bad.jsonl"), "--out", str(work / "x")]
    two = run([*args, "--json"], processes=2, cwd=work)
    assert two.returncode != 0
    assert "neither a prompt/completion pair nor a multiple-choice item" in two.stdout + two.stderr
    assert not (work / "x").exists()
