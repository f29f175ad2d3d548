"""One vLLM engine run for the tests: ``python tests_vllm/engine.py ARTIFACT FLIPPED OUT.json``.

The engine is created under ``if __name__ == "__main__"`` (vLLM spawns its engine process), serves the two
artifacts as ``tqa`` and ``flip`` through ``$STEERKIT_VLLM_VECTORS``, and writes what the tests check: greedy
tokens for each setting, batched and alone, the refusals, and the full processed logits of a few contexts. It names
no logits processor: steerkit's ``vllm.logits_processors`` entry point loads it, so every steered result here also
checks that the entry point is registered and used.
"""

from __future__ import annotations

import json
import os
import sys
import time

PROMPTS = 8
MAX_TOKENS = 16
LOGIT_STEPS = (0, 6)  # steered-path positions whose full logits are compared with the static rule


def prompt_ids() -> list[list[int]]:
    """Token ids of 8 held-out TruthfulQA prompts (neither warm-start nor calibration data)."""
    from transformers import AutoTokenizer

    from steerkit.data import split
    from steerkit.models import default_model_dir
    from steerkit.readers import load_pairs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pairs = split(load_pairs(os.path.join(root, "steerkit/resources/bigbench/truthful_qa")), [16, 8, 8], seed=0)[2]
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    return [tokenizer(p["prompt"])["input_ids"] for p in pairs[:PROMPTS]]


def main(artifact: str, flipped: str, out: str) -> None:
    os.environ["STEERKIT_VLLM_VECTORS"] = f"tqa={artifact},flip={flipped}"
    from vllm import LLM, SamplingParams

    from steerkit.models import default_model_dir
    from steerkit.processors import StaticSteeringProcessor
    from steerkit.vllm import lora_request, served, steer

    started = time.perf_counter()
    llm = LLM(
        model=str(default_model_dir()),
        dtype="float32",
        gpu_memory_utilization=0.15,
        max_model_len=512,
        enable_lora=True,
        max_lora_rank=8,
        enable_prefix_caching=False,  # every context is computed the same way in every run
        logprobs_mode="processed_logits",
        max_logprobs=-1,
        seed=0,
    )
    result: dict[str, object] = {"engine_start_s": time.perf_counter() - started}
    ids = prompt_ids()
    warm = lora_request("tqa")

    def tokens(prompts: list[list[int]], extras: list[object], lora: object = warm, n: int = MAX_TOKENS) -> list:
        params = [SamplingParams(temperature=0.0, max_tokens=n, extra_args=e) for e in extras]
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=lora, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    each = len(ids)
    result["prompts"] = ids
    result["base"] = tokens(ids, [None] * each, lora=None)
    result["warm"] = tokens(ids, [None] * each)
    result["static"] = tokens(ids, [steer("tqa")] * each)
    result["mu0"] = tokens(ids, [steer("tqa", mu=0.0)] * each)
    mu_s = served()["tqa"].vector.mu_static
    result["mu_static"] = mu_s

    # one batch of mixed requests vs each alone (prompt 0 for all of them)
    mixed = [steer("tqa"), steer("flip"), steer("tqa", mu=mu_s / 4), None, steer("tqa", mu=0.0)]
    result["batch"] = tokens([ids[0]] * len(mixed), mixed)
    result["alone"] = [tokens([ids[0]], [e])[0] for e in mixed]

    # refusals at admission; the engine keeps serving afterwards
    refused = {}
    for label, extra in {
        "unknown": steer("no-such-vector"),
        "mu_nan": steer("tqa", mu=float("nan")),
        "mu_text": {"steerkit": {"vector": "tqa", "mu": "big"}},
        "mu_overflow": {"steerkit_vector": "tqa", "steerkit_mu": 1e39},
        "mu_bigint": {"steerkit": {"vector": "tqa", "mu": 10**400}},
        "path": {"steerkit": {"vector": artifact}},
        "extra_key": {"steerkit": {"vector": "tqa", "path": artifact}},
    }.items():
        try:
            tokens([ids[0]], [extra], n=2)
            refused[label] = None
        except Exception as exc:  # the test asserts the type and message
            refused[label] = f"{type(exc).__name__}: {exc}"
    result["refused"] = refused
    result["after_refusals"] = tokens([ids[0]], [steer("tqa")])[0]

    # full processed logits: the plugin's ẑ vs the static rule applied to vLLM's own unsteered z
    vector = served()["tqa"].vector
    rule = StaticSteeringProcessor(vector.task_vector, mu_s, alpha=vector.config.alpha)
    import torch

    checks = []
    for i, prompt in enumerate(ids[:4]):
        for step in LOGIT_STEPS:
            context = prompt + result["static"][i][:step]
            rows = []
            for extra in (None, steer("tqa")):
                params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=-1, extra_args=extra)
                (o,) = llm.generate([{"prompt_token_ids": context}], params, lora_request=warm, use_tqdm=False)
                entry = o.outputs[0].logprobs[0]
                row = torch.full((vector.vocab_size,), float("-inf"))
                row[list(entry)] = torch.tensor([lp.logprob for lp in entry.values()])
                rows.append(row)
            z, steered = rows
            expected = rule(torch.tensor([context]), z[None])[0]
            checks.append(
                {
                    "prompt": i,
                    "step": step,
                    "max_abs_diff": float((steered - expected).abs().max()),
                    "changed": int((steered != z).sum()),
                    "argmax_equal": int(steered.argmax()) == int(expected.argmax()),
                }
            )
    result["logit_checks"] = checks
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
