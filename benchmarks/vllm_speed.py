"""vLLM tokens/s with and without steerkit's static steering (target: at most 1.05×, also with 4 composed vectors),
side by side in one run.

One engine (SmolLM2-135M-Instruct, float32, the vector's LoRA served as the warm model, the steerkit processor
loaded) decodes the same TruthfulQA prompts greedily several ways per repetition, back to back: plain (warm, no
``extra_args``), static (warm + ``steer(NAME)`` at the artifact's μ_s), 2 and 4 composed vectors
(``steer({NAME: μ_s, ...})``), and at batch 8 a batch whose every request names a different vector. The extra
vectors are the artifact's task vector with its entries permuted (same adapter, same vocabulary), served from a
live registry folder (``$STEERKIT_VLLM_REGISTRY``), so the registry's per-admission look at its folder is in the
measurement too. Every request generates exactly ``--tokens`` tokens (``min_tokens`` = ``max_tokens``), at batch 1
and batch 8. Each ratio is the median over the paired repetitions of (plain tokens/s) / (setting tokens/s).
Writes ``benchmarks/results/vllm.json``.

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
DISTINCT = 8  # vectors in the batch where every request names another one (p1 … p7, and bench)


def permuted(artifact: Path, folder: Path, count: int) -> Path:
    """``count`` registry vectors ``p1`` … : the artifact's task vector with its entries permuted (seeded)."""
    import dataclasses

    import torch

    from steerkit.vector import SteeringVector

    vector = SteeringVector.load(artifact)
    config = dataclasses.replace(vector.config, task_vector_sha256="")
    folder.mkdir()
    for i in range(1, count + 1):
        order = torch.randperm(vector.vocab_size, generator=torch.Generator().manual_seed(i))
        task = vector.task_vector[order].contiguous()
        dataclasses.replace(vector, task_vector=task, config=config).save(folder / f"p{i}")
    return folder


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
        os.environ["STEERKIT_VLLM_REGISTRY"] = str(permuted(Path(vector), Path(tmp) / "registry", DISTINCT - 1))
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

    def run(batch: list[Any], extra: dict[str, Any] | list[Any] | None) -> tuple[float, int]:
        extras = extra if isinstance(extra, list) else [extra] * len(batch)
        params = [SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, extra_args=e) for e in extras]
        started = time.perf_counter()
        outs = llm.generate(batch, params, lora_request=warm, use_tqdm=False)
        elapsed = time.perf_counter() - started
        return elapsed, sum(len(o.outputs[0].token_ids) for o in outs)

    mu_s = served()["bench"].vector.mu_static
    settings: dict[str, Any] = {
        "static": steer("bench"),
        "composed2": steer({"bench": mu_s, "p1": mu_s}),
        "composed4": steer({"bench": mu_s, "p1": mu_s, "p2": mu_s, "p3": mu_s}),
    }
    distinct = [steer("bench")] + [steer(f"p{i}") for i in range(1, DISTINCT)]
    rows: dict[str, Any] = {}
    for label, batch in (("batch1", prompts[:1]), ("batch8", prompts)):
        chosen = dict(settings, **({"distinct": distinct} if len(batch) == DISTINCT else {}))
        for extra in [None, *chosen.values()]:  # warm-up: the first LoRA load and shape compilations
            run(batch, extra)
        reps_: list[dict[str, float]] = []
        for _ in range(reps):
            t_plain, n_plain = run(batch, None)
            rep = {"plain_tok_s": n_plain / t_plain}
            for name, extra in chosen.items():
                t, n = run(batch, extra)
                assert n_plain == n == tokens * len(batch), (name, n_plain, n)
                rep[f"{name}_tok_s"] = n / t
            reps_.append(rep)
        rows[label] = {"reps": reps_, "plain_tok_s_median": statistics.median(r["plain_tok_s"] for r in reps_)}
        for name in chosen:
            ratios = [r["plain_tok_s"] / r[f"{name}_tok_s"] for r in reps_]
            rows[label][name] = {
                "tok_s_median": statistics.median(r[f"{name}_tok_s"] for r in reps_),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
    summary = {
        f"{label} {name}": f"{r['ratio_median']:.3f}× (plain {row['plain_tok_s_median']:.1f} tok/s, {name} "
        f"{r['tok_s_median']:.1f} tok/s, n={reps} paired reps, range {r['ratio_min']:.3f}–{r['ratio_max']:.3f})"
        for label, row in rows.items()
        for name, r in row.items()
        if isinstance(r, dict) and "ratio_median" in r
    }
    return {
        "what": "vLLM tokens/s, plain (warm LoRA) vs static steering (warm LoRA + steerkit.vllm at μ_s): one vector, "
        "2 and 4 composed, and (batch 8) a different vector per request",
        "model": "SmolLM2-135M-Instruct float32",
        "mu_static": mu_s,
        "tokens_per_request": tokens,
        "target": "ratio ≤ 1.05 (one vector and 4 composed)",
        "rows": rows,
        "summary": summary,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": machine(),
    }


if __name__ == "__main__":
    main()
