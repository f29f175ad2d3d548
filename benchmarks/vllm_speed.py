"""vLLM tokens/s with and without steerkit's static steering (target: at most 1.05×),
side by side in one run.

One engine (SmolLM2-135M-Instruct, float32, the vector's LoRA served as the warm model, the steerkit processor
loaded) decodes the same TruthfulQA prompts greedily two ways per repetition, back to back: plain (warm, no
``extra_args``) and static (warm + ``steer(NAME)`` at the artifact's μ_s). Every request generates exactly
``--tokens`` tokens (``min_tokens`` = ``max_tokens``), at batch 1 and batch 8. The ratio is the median over the
paired repetitions of (plain tokens/s) / (static tokens/s). Writes ``benchmarks/results/vllm.json``.

Usage::

    make bench-vllm        # = VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/vllm_speed.py
    .venv-vllm/bin/python benchmarks/vllm_speed.py [--vector FOLDER] [--reps 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, help="artifact folder (default: build one, about a minute)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vllm.json")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory(prefix="steerkit-vllm-bench-") as tmp:
        vector = args.vector
        if vector is None:
            sys.path.insert(0, str(ROOT / "tests_vllm"))
            from artifact import make_artifact

            vector = make_artifact(Path(tmp) / "vector")
        os.environ["STEERKIT_VLLM_VECTORS"] = f"bench={vector}"
        result = measure(reps=args.reps, tokens=args.tokens)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["summary"], indent=2))


def measure(*, reps: int, tokens: int) -> dict[str, Any]:
    import torch
    import vllm
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from steerkit.data import split
    from steerkit.models import default_model_dir
    from steerkit.readers import load_pairs
    from steerkit.vllm import lora_request, served, steer

    model = default_model_dir()
    pairs = split(load_pairs(ROOT / "steerkit/resources/bigbench/truthful_qa"), [16, 8, 8], seed=0)[2]
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = [{"prompt_token_ids": tokenizer(p["prompt"])["input_ids"]} for p in pairs[:8]]
    llm = LLM(
        model=str(model),
        dtype="float32",
        gpu_memory_utilization=0.15,
        max_model_len=512,
        enable_lora=True,
        max_lora_rank=8,  # the processor comes from steerkit's vllm.logits_processors entry point
        seed=0,
    )
    warm = lora_request("bench")

    def run(batch: list[Any], extra: dict[str, Any] | None) -> tuple[float, int]:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, extra_args=extra)
        started = time.perf_counter()
        outs = llm.generate(batch, params, lora_request=warm, use_tqdm=False)
        elapsed = time.perf_counter() - started
        return elapsed, sum(len(o.outputs[0].token_ids) for o in outs)

    rows: dict[str, Any] = {}
    for label, batch in (("batch1", prompts[:1]), ("batch8", prompts)):
        run(batch, None), run(batch, steer("bench"))  # warm-up: the first LoRA load and shape compilations
        pairs_: list[dict[str, float]] = []
        for _ in range(reps):
            t_plain, n_plain = run(batch, None)
            t_static, n_static = run(batch, steer("bench"))
            assert n_plain == n_static == tokens * len(batch), (n_plain, n_static)
            pairs_.append({"plain_tok_s": n_plain / t_plain, "static_tok_s": n_static / t_static})
        ratios = [p["plain_tok_s"] / p["static_tok_s"] for p in pairs_]
        rows[label] = {
            "reps": pairs_,
            "plain_tok_s_median": statistics.median(p["plain_tok_s"] for p in pairs_),
            "static_tok_s_median": statistics.median(p["static_tok_s"] for p in pairs_),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    summary = {
        label: f"{r['ratio_median']:.3f}× (plain {r['plain_tok_s_median']:.1f} tok/s, static "
        f"{r['static_tok_s_median']:.1f} tok/s, n={reps} paired reps, range {r['ratio_min']:.3f}–{r['ratio_max']:.3f})"
        for label, r in rows.items()
    }
    return {
        "what": "vLLM tokens/s, plain (warm LoRA) vs static steering (warm LoRA + steerkit.vllm at μ_s)",
        "model": "SmolLM2-135M-Instruct float32",
        "mu_static": served()["bench"].vector.mu_static,
        "tokens_per_request": tokens,
        "target": "ratio ≤ 1.05",
        "rows": rows,
        "summary": summary,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": machine(),
    }


if __name__ == "__main__":
    main()
