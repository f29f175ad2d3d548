"""The real thing, offline: warm-start a LoRA on SmolLM2-135M-Instruct with TruthfulQA pairs, build, save, load."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from steerkit.builder import build
from steerkit.data import split
from steerkit.models import load_model
from steerkit.readers import load_pairs
from steerkit.vector import SteeringVector
from steerkit.warmstart import warm_start


@pytest.mark.slow
def test_smollm2_warm_start_build_save_load(smollm2_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(smollm2_dir)
    train, calibration = split(load_pairs(data_dir / "bigbench" / "truthful_qa"), [32, 16], seed=0)

    started = time.perf_counter()
    # 64 tokens of context keep the CPU run short (the primer is cut from its start); build sees the full prompt
    warm = warm_start(
        model, train, tokenizer=tokenizer, method="lora", lr=1e-3, epochs=1, batch_size=4, max_length=64, seed=0
    )
    trained = time.perf_counter() - started
    losses = warm.steerkit_losses
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)

    started = time.perf_counter()
    vector = build(warm, warm, calibration, tokenizer=tokenizer, batch_size=8)
    built = time.perf_counter() - started
    cal = vector.config.calibration
    n_tokens = cal["n_tokens"]
    print(
        f"\nSmolLM2-135M LoRA warm start: 32 pairs in {trained:.1f} s (loss {losses[0]:.3f} → {losses[-1]:.3f}); "
        f"build: {n_tokens} calibration tokens in {built:.2f} s = "
        f"{built / n_tokens * 1e3:.2f} ms per calibration token; KL {cal['kl_mean']:.4f} nats/token, "
        f"kept {cal['kept_mean']:.2f}, gold masked {cal['masked_gold_fraction']:.2f}; "
        f"μ median/paper {vector.config.mu.paper['median']:.3f}, median/exact {vector.config.mu.exact['median']:.3f}, "
        f"fit {vector.config.mu.fit:.3f}; μ_s fit {vector.config.mu_static.fit:.3f}"
    )
    assert cal["n_examples"] == 16 and n_tokens > 100
    assert cal["kl_mean"] > 1e-4  # lr 1e-3 moves the model
    assert vector.vocab_size == 49152
    assert vector.config.adapter["peft_type"] == "LORA"
    # the packaged model's cache folder is recorded by name, which every steerkit command resolves on any machine
    assert vector.config.base_model["name_or_path"] == "SmolLM2-135M-Instruct"

    vector.save(tmp_path / "vector")
    loaded = SteeringVector.load(tmp_path / "vector")
    assert torch.equal(loaded.task_vector, vector.task_vector)
    assert loaded.config == vector.config
    assert loaded.adapter_files == vector.adapter_files
