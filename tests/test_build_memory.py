"""Peak memory of ``build`` against a plain forward pass over the same batches (target ≤ 1.3×), measured.

Each side runs in a fresh subprocess (this file run as a script) and reports its peak resident set size
(``VmHWM``) and its resident size just before the work starts. The model is a random Llama with a 32k
vocabulary, hidden size 64 and sharp logits (like a trained LM's: the confidence mask keeps a few tokens), so
the ``[tokens, V]`` logits dominate the memory of the pass; the calibration set has 2,048 completion tokens in
batches of 8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

VOCAB = 32_000
N_PAIRS = 64
COMPLETION_CHARS = 32  # the tiny tokenizer is char-level: 64 × 32 = 2,048 calibration tokens
BATCH = 8


def _status_kb(key: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _workload() -> tuple[Any, Any, list[dict[str, str]]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from tiny import tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    base = LlamaForCausalLM(config)
    with torch.no_grad():  # sharp logits, as a trained LM has: the confidence mask keeps a few tokens
        base.lm_head.weight.mul_(20.0)
    model = get_peft_model(base, LoraConfig(r=4, init_lora_weights=False))
    model.eval()
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [
        {
            "prompt": f"Question {i}: " + (letters * 4)[i % 26 : i % 26 + 80 + i % 17] + "?\nA:",
            "completion": " " + (letters[::-1] * 3)[i % 26 : i % 26 + COMPLETION_CHARS - 1],
        }
        for i in range(N_PAIRS)
    ]
    return model, tiny_tokenizer(), pairs


def _measure(mode: str) -> dict[str, Any]:
    import gc

    import torch

    from steerkit.builder import build
    from steerkit.calibration import _make_batch, _positions
    from steerkit.data import encode_pair

    model, tokenizer, pairs = _workload()
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in pairs]
    n_tokens = sum(len(ids) - start for ids, start in encoded)
    gc.collect()
    before = _status_kb("VmRSS")
    if mode == "build":
        vector = build(model, None, pairs, tokenizer=tokenizer, batch_size=BATCH)
        assert vector.config.calibration["n_tokens"] == n_tokens
    else:  # the warm model's plain forward over the same padded batches, full logits
        with torch.no_grad():
            for start in range(0, len(encoded), BATCH):
                batch = _make_batch(encoded[start : start + BATCH], pad_id=0, left=False)
                logits = model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=_positions(batch.attention_mask),
                ).logits
                del logits
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork/exec (the pytest process)
    peak = _status_kb("VmHWM")
    out = {"mode": mode, "before_kb": before, "peak_kb": peak, "n_tokens": n_tokens}
    if mode == "build":
        out["kept_mean"] = vector.config.calibration["kept_mean"]
    return out


def _run(mode: str) -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow  # two subprocesses, ~15-50 s: a measurement, kept out of the quick suite
def test_build_peak_memory_within_1_3x_of_a_plain_forward() -> None:
    plain, built = _run("forward"), _run("build")
    assert built["n_tokens"] >= 2000
    ratio = built["peak_kb"] / plain["peak_kb"]
    grow_plain = plain["peak_kb"] - plain["before_kb"]
    grow_build = built["peak_kb"] - built["before_kb"]
    print(
        f"\npeak RSS: build {built['peak_kb'] / 1024:.0f} MiB, plain forward {plain['peak_kb'] / 1024:.0f} MiB "
        f"(ratio {ratio:.3f}); growth during the pass: build {grow_build / 1024:.0f} MiB, "
        f"forward {grow_plain / 1024:.0f} MiB; {built['n_tokens']} calibration tokens"
    )
    assert ratio <= 1.3
    # the growth itself stays within the forward's: logits are only ever held in [chunk, V] blocks
    assert grow_build <= 1.3 * grow_plain


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1])))
