"""Peak memory of ``build`` against a plain forward at a second model's vocabulary width (target ≤ 1.3×).

The same measurement as ``benchmarks/speed.py``'s for SmolLM2, at a packaged model with a wider vocabulary
(Gemma-3-270M: 262,144 logits a position): each side runs in a fresh process (this file with ``--child``) on the
first ``--pairs`` TruthfulQA pairs in batches of 8, the warm model a LoRA with random non-zero weights, and reports
its peak resident set (``VmHWM``) and its resident set just before the pass. The plain forward is the warm model's
over the same right-padded batches with full logits; ``build`` steers the warm model against its own disabled
adapter (``base=None``), as ``speed.py`` does.

Writes ``benchmarks/results/memory_second_model.json``. Usage::

    .venv/bin/python benchmarks/memory.py [--model gemma-3-270m] [--pairs 16] [--threads 1] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "steerkit" / "resources" / "bigbench" / "truthful_qa"
BATCH = 8
TARGET = 1.3


def _status_mib(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process in MiB (``ru_maxrss`` would carry the parent's peak over exec)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(what: str, model_name: str, n_pairs: int, threads: int) -> dict[str, Any]:
    """One side of the measurement, in this process: ``forward`` or ``build``."""
    import gc

    import torch
    from peft import LoraConfig, get_peft_model

    from steerkit import build
    from steerkit.data import encode_pair
    from steerkit.models import load_model, logits_width, model_dir
    from steerkit.readers import load_pairs

    torch.set_num_threads(threads)
    model, tokenizer = load_model(model_dir(model_name))
    pairs = load_pairs(DATA)[:n_pairs]
    torch.manual_seed(0)
    warm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False))
    warm.eval()
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in pairs]
    gc.collect()
    before = _status_mib("VmRSS")
    started = time.perf_counter()
    if what == "build":
        vector = build(warm, None, pairs, tokenizer=tokenizer, batch_size=BATCH)
        assert vector.config.calibration["n_tokens"] == sum(len(ids) - start for ids, start in encoded)
    else:
        pad = tokenizer.pad_token_id or 0
        with torch.no_grad():
            for i in range(0, len(encoded), BATCH):
                chunk = encoded[i : i + BATCH]
                width = max(len(ids) for ids, _ in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                for row, (ids, _) in enumerate(chunk):
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    mask[row, : len(ids)] = 1
                logits = warm(input_ids=input_ids, attention_mask=mask).logits
                del logits
    return {
        "peak_rss_mib": _status_mib("VmHWM"),
        "rss_before_mib": before,
        "seconds": time.perf_counter() - started,
        "calibration_tokens": sum(len(ids) - start for ids, start in encoded),
        "tokens": sum(len(ids) for ids, _ in encoded),
        "max_sequence_length": max(len(ids) for ids, _ in encoded),
        "vocab_size": logits_width(warm),
    }


def measure(model_name: str, n_pairs: int, threads: int) -> dict[str, Any]:
    """Both sides, each in its own fresh process, and their ratio."""
    out: dict[str, dict[str, Any]] = {}
    for what in ("forward", "build"):
        args = ["--child", what, "--model", model_name, "--pairs", str(n_pairs), "--threads", str(threads)]
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the {what} process failed:\n{proc.stderr[-3000:]}")
        out[what] = json.loads(proc.stdout.strip().splitlines()[-1])
    forward, built = out["forward"], out["build"]
    ratio = built["peak_rss_mib"] / forward["peak_rss_mib"]
    grow_forward = forward["peak_rss_mib"] - forward["rss_before_mib"]
    grow_build = built["peak_rss_mib"] - built["rss_before_mib"]
    return {
        "model": model_name,
        "vocab_size": built["vocab_size"],
        "n_pairs": n_pairs,
        "batch_size": BATCH,
        "calibration_tokens": built["calibration_tokens"],
        "tokens": built["tokens"],
        "max_sequence_length": built["max_sequence_length"],
        "forward_peak_rss_mib": forward["peak_rss_mib"],
        "build_peak_rss_mib": built["peak_rss_mib"],
        "build_over_forward_rss": ratio,
        "forward_rss_before_mib": forward["rss_before_mib"],
        "build_rss_before_mib": built["rss_before_mib"],
        "forward_rss_increase_mib": grow_forward,
        "build_rss_increase_mib": grow_build,
        "build_over_forward_rss_increase": grow_build / grow_forward,
        "target": TARGET,
        "within_target": ratio <= TARGET,
        "seconds": {"forward": forward["seconds"], "build": built["seconds"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="a packaged model (steerkit.models.model_dir)")
    parser.add_argument("--pairs", type=int, default=16, help="calibration pairs of TruthfulQA")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory_second_model.json")
    parser.add_argument("--child", choices=("forward", "build"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.pairs, args.threads)))
        return 0
    import torch

    result = measure(args.model, args.pairs, args.threads)
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{args.model}: build {result['build_peak_rss_mib']:.0f} MiB / forward {result['forward_peak_rss_mib']:.0f} "
        f"MiB = {result['build_over_forward_rss']:.3f} (target ≤ {TARGET}); growth during the pass: build "
        f"{result['build_rss_increase_mib']:.0f} MiB, forward {result['forward_rss_increase_mib']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
