"""Steered decoding on the real SmolLM2-135M-Instruct (marked ``slow``): a vector built by ``steerkit.build`` from
a LoRA warm start attaches in both modes, changes greedy outputs on TruthfulQA prompts, and detaches cleanly.
Prints tokens/s of plain, static and dynamic generation (``pytest -m slow -s`` to see them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

import steerkit

pytestmark = pytest.mark.slow

N_PAIRS = 32
N_PROMPTS = 8
NEW_TOKENS = 24


def _short(prompt: str) -> str:
    """Drop the QA primer: keep the last "Q: ...\\nA:" (short prompts keep the test quick)."""
    return prompt[prompt.rindex("Q: ") :]


def _tokens_per_s(fn: Any, batch: dict[str, torch.Tensor], repeats: int = 1) -> tuple[float, torch.Tensor]:
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        best = min(best, time.perf_counter() - start)
    assert out is not None
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    return generated / best, out


def test_smollm2_vector_attaches_in_both_modes_and_steers(smollm2_dir: Path, data_dir: Path) -> None:
    from steerkit import build
    from steerkit.models import load_model
    from steerkit.readers import load_items, load_pairs
    from steerkit.warmstart import warm_start

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tqa = data_dir / "bigbench" / "truthful_qa"
    pairs = [{"prompt": _short(p["prompt"]), "completion": p["completion"]} for p in load_pairs(tqa)]
    items = load_items(tqa)
    model, tokenizer = load_model(smollm2_dir)
    t0 = time.perf_counter()
    warm = warm_start(model, pairs[:N_PAIRS], tokenizer=tokenizer, method="lora", lr=1e-3, batch_size=4, seed=0)
    t1 = time.perf_counter()
    vector = build(warm, None, pairs[:N_PAIRS], tokenizer=tokenizer, batch_size=8)
    print(f"\nwarm start {t1 - t0:.1f}s, build {time.perf_counter() - t1:.1f}s")
    print(f"\nvector: mu={vector.mu:.4g} mu_static={vector.mu_static:.4g} adapter={vector.adapter_files is not None}")

    tokenizer.padding_side = "left"
    prompts = [_short(it["prompt"]) for it in items[N_PAIRS : N_PAIRS + N_PROMPTS]]  # not the calibration ones
    batch = dict(tokenizer(prompts, return_tensors="pt", padding=True))

    plain_tps, plain = _tokens_per_s(warm.generate, batch)
    with steerkit.attach(vector, warm, mode="static", tokenizer=tokenizer) as steered:
        static_tps, static = _tokens_per_s(steered.generate, batch)
    with steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer) as steered:
        dynamic_tps, dynamic = _tokens_per_s(steered.generate, batch)
    assert torch.equal(warm.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False), plain[:, : plain.shape[1]])
    print(
        f"tokens/s (batch {N_PROMPTS}, {NEW_TOKENS} new tokens, CPU): plain {plain_tps:.1f}, "
        f"static {static_tps:.1f} ({static_tps / plain_tps:.2f}x), dynamic {dynamic_tps:.1f} "
        f"({dynamic_tps / plain_tps:.2f}x)"
    )
    changed_static = sum(not torch.equal(a, b) for a, b in zip(static, plain))
    changed_dynamic = sum(not torch.equal(a, b) for a, b in zip(dynamic, plain))
    print(f"greedy outputs changed: static {changed_static}/{N_PROMPTS}, dynamic {changed_dynamic}/{N_PROMPTS}")
    for i in range(2):
        n = batch["input_ids"].shape[1]
        print(f"[{i}] plain  : {tokenizer.decode(plain[i, n:], skip_special_tokens=True)!r}")
        print(f"[{i}] static : {tokenizer.decode(static[i, n:], skip_special_tokens=True)!r}")
        print(f"[{i}] dynamic: {tokenizer.decode(dynamic[i, n:], skip_special_tokens=True)!r}")
    assert changed_static >= 1 and changed_dynamic >= 1

    # Dynamic mode on a plain base model loads the artifact's adapter, gives the same tokens, and unloads it.
    base, _ = load_model(smollm2_dir)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    with steerkit.attach(vector, base, mode="dynamic", tokenizer=tokenizer) as steered:
        again = steered.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(again, dynamic)
    after = base.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
