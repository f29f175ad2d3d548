"""One vLLM engine run for the tests: ``python tests_vllm/engine.py ARTIFACT FLIPPED OUT.json``.

The engine is created under ``if __name__ == "__main__"`` (vLLM spawns its engine process), serves the two
artifacts as ``tqa`` and ``flip`` through ``$STEERKIT_VLLM_VECTORS`` and a live registry folder (``other``, a
permuted ``tqa``, from the start; ``live`` added and removed while it runs), and writes what the tests check:
greedy tokens for each setting, batched and alone, the refusals, and the full processed logits of a few contexts.
It names no logits processor: steerkit's ``vllm.logits_processors`` entry point loads it, so every steered result
here also checks that the entry point is registered and used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = 8
MAX_TOKENS = 16
LOGIT_STEPS = (0, 6)  # steered-path positions whose full logits are compared with the static rule
OTHER_MU = 4.0  # the composition: tqa at μ_s plus other (a permuted tqa) at OTHER_MU·μ_s


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


def make_registry(artifact: str, folder: Path) -> None:
    """The registry at engine start: ``other``, ``tqa``'s vector with its entries permuted (same adapter)."""
    import dataclasses

    import torch

    from steerkit.vector import SteeringVector

    tqa = SteeringVector.load(artifact)
    order = torch.randperm(tqa.vocab_size, generator=torch.Generator().manual_seed(0))
    config = dataclasses.replace(tqa.config, task_vector_sha256="")
    dataclasses.replace(tqa, task_vector=tqa.task_vector[order].contiguous(), config=config).save(folder / "other")


def registry_run(llm: Any, tokens: Any, refusal: Any, ids: list[list[int]], artifact: str, folder: Path) -> dict:
    """Add a vector while the engine runs, serve it, remove it, refuse it; a corrupt folder never served."""
    from steerkit.vllm import lora_request, steer

    run: dict[str, Any] = {"before": refusal(steer("live"))}
    shutil.copytree(artifact, folder / ".live.tmp")  # staged under a hidden name, then renamed: never half-read
    os.rename(folder / ".live.tmp", folder / "live")
    run["served"] = tokens([ids[0]], [steer("live")], lora=lora_request("live"))[0]
    shutil.rmtree(folder / "live")
    run["after"] = refusal(steer("live"))
    shutil.copytree(artifact, folder / "broken")
    tensors = next(p for p in (folder / "broken").iterdir() if p.suffix == ".safetensors")
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    run["broken"] = refusal(steer("broken"))
    run["path"] = refusal(steer(str(folder / "other")))
    run["twice"] = refusal({"steerkit": {"vectors": [{"vector": "tqa"}, {"vector": "tqa"}]}})
    run["too_many"] = refusal({"steerkit_vectors": ["tqa", "other", "flip"] * 3})
    run["serves_on"] = tokens([ids[0]], [steer("tqa")])[0]
    return run


def main(artifact: str, flipped: str, out: str) -> None:
    os.environ["STEERKIT_VLLM_VECTORS"] = f"tqa={artifact},flip={flipped}"
    folder = Path(out).parent / "registry"
    folder.mkdir()
    make_registry(artifact, folder)
    os.environ["STEERKIT_VLLM_REGISTRY"] = str(folder)
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

    def refusal(extra: object) -> str | None:
        try:
            tokens([ids[0]], [extra], n=2)
        except Exception as exc:  # the test asserts the type and message
            return f"{type(exc).__name__}: {exc}"
        return None

    # several vectors per request: composed, in a batch with single ones, each equal to its run alone
    both = steer({"tqa": mu_s, "other": OTHER_MU * mu_s})
    result["composed"] = tokens(ids, [both] * each)
    mixed2 = [both, steer("other"), steer({"other": -mu_s, "flip": mu_s / 2}), None]
    result["composed_batch"] = tokens([ids[1]] * len(mixed2), mixed2)
    result["composed_alone"] = [tokens([ids[1]], [e])[0] for e in mixed2]
    result["registry"] = registry_run(llm, tokens, refusal, ids, artifact, folder)
    result["registry_folder"] = str(folder)

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
        refused[label] = refusal(extra)
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
    result["composed_logit_checks"] = composed_logits(llm, ids, result["composed"], warm, folder, mu_s)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def processed_row(llm: Any, context: list[int], extra: object, lora: Any, width: int) -> Any:
    """vLLM's full processed logits of the next token after ``context`` (``-inf`` where it reports none)."""
    import torch
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=-1, extra_args=extra)
    (o,) = llm.generate([{"prompt_token_ids": context}], params, lora_request=lora, use_tqdm=False)
    entry = o.outputs[0].logprobs[0]
    row = torch.full((width,), float("-inf"))
    row[list(entry)] = torch.tensor([lp.logprob for lp in entry.values()])
    return row


def composed_logits(llm: Any, ids: list[list[int]], composed: list, warm: Any, folder: Path, mu_s: float) -> list:
    """The plugin's composed ẑ against transformers' static processor of ``steerkit.compose``'s vector, on vLLM's
    own unsteered z."""
    import torch

    import steerkit
    from steerkit.compose import compose
    from steerkit.processors import StaticSteeringProcessor
    from steerkit.vllm import served, steer

    tqa, other = served()["tqa"].vector, steerkit.load(folder / "other")
    both = compose([steerkit.Steering(tqa, "static", mu_s), steerkit.Steering(other, "static", OTHER_MU * mu_s)])
    rule = StaticSteeringProcessor(both.task_vector, 1.0, alpha=both.config.alpha)
    checks = []
    for i, prompt in enumerate(ids[:2]):
        for step in LOGIT_STEPS:
            context = prompt + composed[i][:step]
            z = processed_row(llm, context, None, warm, tqa.vocab_size)
            steered = processed_row(llm, context, steer({"tqa": mu_s, "other": OTHER_MU * mu_s}), warm, tqa.vocab_size)
            expected = rule(torch.tensor([context]), z[None])[0]
            diff = float((steered - expected).abs().max())
            checks.append(
                {
                    "max_abs_diff": diff,
                    "changed": int((steered != z).sum()),
                    "argmax_equal": int(steered.argmax()) == int(expected.argmax()),
                }
            )
    return checks


if __name__ == "__main__":
    main(*sys.argv[1:4])
