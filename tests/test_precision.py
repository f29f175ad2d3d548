"""bfloat16 models: build, decode and eval keep the maths in float32 (docs/concepts.md) and agree with float32."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import tiny_llama, tiny_lora, tiny_tokenizer

import steerkit
from steerkit.builder import build
from steerkit.compare import evaluate_settings

WORDS = ["abc", "dog", "cat", "sun", "moon", "tree", "fish", "bird"]
PAIRS = [{"prompt": f"{w}=", "completion": w[::-1] * 2} for w in WORDS]
ITEMS = [{"prompt": f"Q: {w}=", "choices": [w[::-1], w, w[:2]], "label": 0} for w in WORDS]


def run(dtype: torch.dtype) -> dict[str, Any]:
    tok = tiny_tokenizer()
    model = tiny_lora(tiny_llama(sharpness=60)).to(dtype)  # sharp logits: bf16 rounding flips no argmax
    vector = build(model, None, PAIRS, tokenizer=tok)
    ids = tok("abc=", return_tensors="pt")
    out = {}
    for mode in ("static", "dynamic"):
        with steerkit.attach(vector, model, mode=mode, tokenizer=tok) as steered:
            out[mode] = steered.generate(**ids, max_new_tokens=8, do_sample=False)
    scores = evaluate_settings(vector, model, ITEMS, tokenizer=tok)
    return {"vector": vector, "tokens": out, "scores": scores}


def test_bfloat16_agrees_with_float32() -> None:
    full, half = run(torch.float32), run(torch.bfloat16)
    assert half["vector"].task_vector.dtype == torch.float32  # the maths stays in float32
    for mode in ("static", "dynamic"):
        assert torch.equal(full["tokens"][mode], half["tokens"][mode]), mode
    for curvature in ("paper", "exact"):
        for how, value in getattr(full["vector"].config.mu, curvature).items():
            got = getattr(half["vector"].config.mu, curvature)[how]
            assert got == pytest.approx(value, rel=0.1, abs=0.05), (curvature, how)  # stated: 10% relative
    a, b = full["vector"].task_vector, half["vector"].task_vector
    assert float((a - b).norm() / a.norm()) < 0.1  # stated: the static vectors within 10% (L2, relative)
    for setting, result in full["scores"].items():
        assert half["scores"][setting]["accuracy"]["value"] == result["accuracy"]["value"], setting
