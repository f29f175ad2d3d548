"""Composition (steerkit.compose): several static vectors as one direction ``Σᵢ μᵢ·vᵢ``, in attach and export.

Pinned on a tiny LoRA model: the composed vector equals the sum on one tensor; attach with a list steers exactly
as the static rule with that sum; export writes the summed bias; dynamic composition needs one shared adapter; and
every mix that cannot compose is a one-line refusal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from test_decode import hand_vector
from tiny import tiny_llama, tiny_lora, tiny_tokenizer

import steerkit
from steerkit import svdecode
from steerkit.checks import MAX_STEP
from steerkit.compose import MAX_VECTORS, compose
from steerkit.errors import InvalidOptionError
from steerkit.export import export_bias
from steerkit.steering import Steering
from steerkit.vector import SteeringVector


@pytest.fixture(scope="module")
def setting() -> dict[str, Any]:
    """A tiny LoRA model, and two hand-built vectors from its adapter (so they share it) on different texts."""
    tokenizer = tiny_tokenizer()
    warm = tiny_lora(tiny_llama(sharpness=20))
    a = hand_vector(warm, tokenizer)
    b = hand_vector(warm, tokenizer, texts=("a quick brown fox", "jumps over the lazy dog"))
    return {"tokenizer": tokenizer, "warm": warm, "a": a, "b": b}


def _variant(vector: SteeringVector, **changes: Any) -> SteeringVector:
    config = dataclasses.replace(vector.config, task_vector_sha256="", **changes)
    return dataclasses.replace(vector, config=config)


def test_the_composed_vector_is_the_sum_of_the_scaled_vectors(setting: dict[str, Any]) -> None:
    a, b = setting["a"], setting["b"]
    both = compose([Steering(a, "static", mu=-2.0), b])  # b at its own mu_static
    expected = (-2.0 * a.task_vector.double() + b.mu_static * b.task_vector.double()).float()
    assert torch.equal(both.task_vector, expected)
    assert both.mu_static == 1.0 and both.config.mu_static.chosen_by == "composed"
    assert both.config.validation is None and both.adapter_files == a.adapter_files  # one shared adapter
    one = compose([Steering(a, "static", mu=3.0)])
    assert torch.equal(one.task_vector, (3.0 * a.task_vector.double()).float())


def test_attach_with_a_list_steers_by_the_static_rule_with_the_sum(setting: dict[str, Any]) -> None:
    a, b, tok, warm = setting["a"], setting["b"], setting["tokenizer"], setting["warm"]
    items = [Steering(a, "static", mu=-40.0), Steering(b, "static", mu=25.0)]
    ids = torch.tensor([tok.encode("the cat sat")])
    with torch.no_grad():
        z = warm(ids).logits[:, -1].float()
    with steerkit.attach(items, warm, tokenizer=tok) as steered:
        assert steered.mode == "static" and steered.setting == "composed" and steered.mu == 1.0
        out = steered.logits_processor()(ids, z.clone())
        tokens = steered.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    summed = (-40.0 * a.task_vector.double() + 25.0 * b.task_vector.double()).float()
    assert torch.equal(out, svdecode.static_step(z, summed, alpha=a.config.alpha))
    assert not torch.equal(out, z)
    with steerkit.attach(compose(items), warm, mode="static", tokenizer=tok) as same:
        assert torch.equal(same.generate(input_ids=ids, max_new_tokens=6, do_sample=False), tokens)


def test_export_writes_the_composed_bias(setting: dict[str, Any]) -> None:
    a, b = setting["a"], setting["b"]
    both = compose([Steering(a, "static", mu=-40.0), Steering(b, "static", mu=25.0)])
    export = export_bias(both, "sequence-bias")
    summed = (-40.0 * a.task_vector.double() + 25.0 * b.task_vector.double()).float()
    assert export.bias == {t: float(summed[t]) for t in torch.nonzero(summed).flatten().tolist()}


def test_dynamic_composes_one_shared_adapter_as_the_summed_mu(setting: dict[str, Any]) -> None:
    a, b, tok, warm = setting["a"], setting["b"], setting["tokenizer"], setting["warm"]
    items = [Steering(a, "dynamic", mu=-1.0), Steering(b, "dynamic", mu=-0.5)]
    with steerkit.attach(items, warm, mode="dynamic", tokenizer=tok) as steered:
        assert steered.mode == "dynamic" and steered.mu == -1.5
    other = hand_vector(tiny_lora(tiny_llama(sharpness=20), seed=7), tok)
    with pytest.raises(InvalidOptionError, match="dynamic mode composes only vectors that share one adapter"):
        steerkit.attach([a, other], warm, mode="dynamic", tokenizer=tok)


def test_vectors_that_cannot_compose_are_refused_in_one_line(setting: dict[str, Any]) -> None:
    a, b, tok = setting["a"], setting["b"], setting["tokenizer"]
    tokenizer = {**a.config.tokenizer, "sha256": "f" * 64}
    cases = {
        "tokenizer sha256 ffffffffffff": _variant(b, tokenizer=tokenizer),
        "base model 'other-model'": _variant(b, base_model={"name_or_path": "other-model", "revision": None}),
        "alpha 0.3, item 0 has 0.1": _variant(b, alpha=0.3),
    }
    for reason, other in cases.items():
        with pytest.raises(InvalidOptionError, match="does not compose with vector 0") as info:
            compose([a, other])
        assert reason in info.value.message and "\n" not in str(info.value)
    # a folder and a Hub id of the same model compose: only the model's own name is compared
    assert compose([a, _variant(b, base_model={"name_or_path": "/models/tiny-llama", "revision": None})])
    with pytest.raises(InvalidOptionError, match=f"1 to {MAX_VECTORS} steering vectors, got {MAX_VECTORS + 1}"):
        compose([a] * (MAX_VECTORS + 1))
    with pytest.raises(InvalidOptionError, match="got 0"):
        compose([])
    with pytest.raises(InvalidOptionError, match="per-row μ tensor"):
        compose([Steering(a, "static", mu=torch.tensor([1.0, 2.0]))])
    with pytest.raises(InvalidOptionError, match="is a dynamic-mode Steering"):
        compose([Steering(a, "dynamic")])
    with pytest.raises(InvalidOptionError, match="takes each vector's μ from its Steering value"):
        steerkit.attach([a, b], setting["warm"], mu=1.0, tokenizer=tok)


def test_a_composed_step_past_float32_is_refused_though_each_part_is_not(setting: dict[str, Any]) -> None:
    a = setting["a"]
    mu = 0.9 * MAX_STEP / a.max_abs  # each alone is accepted
    with pytest.raises(InvalidOptionError, match="too large"):
        compose([Steering(a, "static", mu=mu), Steering(a, "static", mu=mu)])


def test_vectors_of_different_adapters_need_adapter_false_in_static_mode(setting: dict[str, Any]) -> None:
    a, tok = setting["a"], setting["tokenizer"]
    other = hand_vector(tiny_lora(tiny_llama(sharpness=20), seed=7), tok)
    base = tiny_llama(sharpness=20)
    with pytest.raises(InvalidOptionError, match="carry different adapters") as info:
        steerkit.attach([a, other], base, tokenizer=tok)
    assert "adapter=False" in (info.value.hint or "")
    with steerkit.attach([a, other], base, tokenizer=tok, adapter=False) as steered:
        assert steered.model is base and compose([a, other]).adapter_files is None
