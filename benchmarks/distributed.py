"""Build throughput under torch.distributed: `steerkit build` as 1 process vs `torchrun --nproc-per-node 2`.

SmolLM2-135M-Instruct (the embedded model), a LoRA warm-started briefly on TruthfulQA's training split, and the
44 calibration pairs of the split ``benchmarks/reproduce.py`` uses. Every process runs one thread
(``OMP_NUM_THREADS=1``): torch's CPU kernels may round differently with another thread count, and byte identity
is a promise about the same per-process numerics. Writes ``benchmarks/results/distributed.json``: wall times,
their ratio, and whether the artifacts are byte-identical (and which files differ if not).

Usage::

    .venv/bin/python benchmarks/distributed.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "steerkit" / "resources" / "bigbench" / "truthful_qa"


def main() -> None:
    from steerkit import warm_start
    from steerkit.data import split
    from steerkit.models import default_model_dir, load_model
    from steerkit.readers import load_pairs
    from steerkit.warmstart import save_adapter

    cores = os.cpu_count() or 1
    model_dir = default_model_dir()
    train, cal, _ = split(load_pairs(DATA), [0.50, 0.15, 0.35], seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, tokenizer = load_model(model_dir)
        save_adapter(warm_start(model, train[:16], tokenizer=tokenizer, lr=3e-4, batch_size=4), root / "lora")
        (root / "cal.jsonl").write_text("".join(json.dumps(p) + "\n" for p in cal))
        args = ["build", str(model_dir), str(root / "lora"), str(root / "cal.jsonl"), "--batch-size", "4"]
        runs = {}
        for n in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            launch = [sys.executable, "-m", "steerkit_cli"]
            if n > 1:
                launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
                launch += ["-m", "steerkit_cli"]
            started = time.perf_counter()
            subprocess.run([*launch, *args, "--out", str(root / f"n{n}")], check=True, env=env, capture_output=True)
            runs[n] = time.perf_counter() - started
        names = sorted(p.relative_to(root / "n1").as_posix() for p in (root / "n1").rglob("*") if p.is_file())
        differ = [f for f in names if (root / "n1" / f).read_bytes() != (root / "n2" / f).read_bytes()]
    result = {
        "model": "SmolLM2-135M-Instruct (float32, CPU)",
        "calibration_pairs": len(cal),
        "cpu_count": cores,
        "wall_seconds": {str(n): s for n, s in runs.items()},
        "two_over_one": runs[2] / runs[1],
        "artifacts_byte_identical": not differ,
        "files_that_differ": differ,
        "threads_per_process": 1,
        "note": "wall time includes each process's start (imports, model load); one machine, its cores shared",
    }
    (HERE / "results" / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
