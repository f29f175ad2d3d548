"""The one steering spec (``steerkit.Steering``), the one α and μ check, and the one static step every integration
applies: pinned against the code paths that used to carry their own copies."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
import torch
from test_crossval import _greedy, _with_recommendation, pairs
from tiny import tiny_llama, tiny_lora

import steerkit
from steerkit.checks import MAX_STEP, check_alpha, check_mu
from steerkit.errors import ArtifactValueError, InvalidOptionError
from steerkit.processors import StaticSteeringProcessor
from steerkit.svdecode import confidence_mask, static_step, steer, steering_direction


@pytest.fixture
def built(tokenizer: Any) -> Any:
    return steerkit.build(tiny_lora(tiny_llama()), None, pairs(8), tokenizer=tokenizer)


# --- the checks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True, None])
def test_check_alpha_refuses_with_one_error_type(bad: Any) -> None:
    with pytest.raises(InvalidOptionError, match=r"alpha must be in \[0, 1\]"):
        check_alpha(bad)
    assert issubclass(InvalidOptionError, ValueError)  # what the maths raised before: callers keep catching it


def test_check_alpha_and_mu_accept_what_they_should() -> None:
    assert check_alpha(0) == 0.0 and check_alpha(1) == 1.0 and isinstance(check_alpha(0), float)
    assert check_mu(-3) == -3.0 and isinstance(check_mu(-3), float)
    per_row = check_mu(torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert isinstance(per_row, torch.Tensor) and per_row.dtype == torch.float32


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (float("inf"), "μ must be a finite number"),
        (float("nan"), "μ must be a finite number"),
        ("1.0", "μ must be a finite number"),
        (True, "μ must be a finite number"),
        (10**400, "μ is too large for a float"),
        (torch.ones(2, 2), "1-D"),
        (torch.tensor([1.0, float("nan")]), "non-finite"),
    ],
)
def test_check_mu_refuses_with_one_error_type(bad: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        check_mu(bad)


def test_scoring_takes_one_mu_not_a_tensor() -> None:
    with pytest.raises(InvalidOptionError, match="option scoring takes one μ"):
        check_mu(torch.ones(3), per_row=False)


def test_a_stored_alpha_out_of_range_is_the_artifacts_fault(built: Any) -> None:
    with pytest.raises(ArtifactValueError, match=r"alpha must be in \[0, 1\], got 2"):
        dataclasses.replace(built.config, alpha=2.0)


# --- the static step -------------------------------------------------------------------------------------------


def test_static_step_is_the_static_rule_of_every_path() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 11, generator=g) * 3
    v = torch.randn(11, generator=g)
    direction, keep = steering_direction(z, static_vector=v, alpha=0.2, n_tokens=9)
    by_steer = steer(z, direction, keep, -1.5)
    by_step = static_step(z, -1.5 * v, alpha=0.2, n_tokens=9)
    assert torch.equal(by_step, by_steer)
    processor = StaticSteeringProcessor(v, -1.5, alpha=0.2, n_tokens=9)
    assert torch.equal(processor(torch.zeros(3, 1, dtype=torch.long), z), by_step)
    assert torch.equal(by_step[:, 9:], z[:, 9:])  # padding rows are never steered
    assert torch.equal(static_step(z, None, alpha=0.2), z)  # μ = 0: the input, bit for bit
    filtered = static_step(z, None, alpha=0.2, filter_masked=True)
    assert torch.equal(torch.isfinite(filtered), confidence_mask(z, alpha=0.2))


def test_static_step_per_row_strengths_and_half_precision() -> None:
    z = torch.tensor([[2.0, 1.0, -3.0], [0.0, 3.0, 2.9]])
    v = torch.tensor([1.0, -1.0, 5.0])
    rows = torch.tensor([[1.0], [-2.0]]) * v
    expected = torch.tensor([[3.0, 0.0, -3.0], [0.0, 5.0, 2.9 - 10.0]])  # row 2 keeps 3 and 2.9, not 0
    assert torch.equal(static_step(z, rows, alpha=0.1), expected)
    half = static_step(z.to(torch.bfloat16), v, alpha=0.1)
    assert half.dtype == torch.float32  # the maths runs in float32 whatever the model's dtype


# --- the spec --------------------------------------------------------------------------------------------------


def test_steering_is_frozen_and_validated_where_it_is_made(built: Any) -> None:
    spec = steerkit.Steering(built, "static", mu=-2)
    assert (spec.mode, spec.strength, spec.threshold, spec.setting) == ("static", -2.0, built.config.alpha, "static")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mu = 1.0  # type: ignore[misc]
    with pytest.raises(InvalidOptionError, match="unknown steering mode 'warm'"):
        steerkit.Steering(built, "warm")
    with pytest.raises(InvalidOptionError, match=r"alpha must be in \[0, 1\]"):
        steerkit.Steering(built, alpha=3.0)
    with pytest.raises(InvalidOptionError, match="μ must be a finite number"):
        steerkit.Steering(built, mu=float("inf"))
    assert steerkit.Steering(built).strength == built.mu and steerkit.Steering(built, "static").strength == (
        built.mu_static
    )


def test_recommended_is_the_one_reader_of_the_validation_block(built: Any) -> None:
    warm = steerkit.Steering.recommended(_with_recommendation(built, None, 0.0))
    assert (warm.mode, warm.mu, warm.setting, warm.is_warm_alone) == ("static", 0.0, "warm", True)
    static = steerkit.Steering.recommended(_with_recommendation(built, "static", 7.5))
    assert (static.mode, static.mu, static.setting) == ("static", 7.5, "static/fit")
    unvalidated = dataclasses.replace(built, config=dataclasses.replace(built.config, validation=None))
    assert (steerkit.Steering.recommended(unvalidated).mode, unvalidated.config.recommendation) == ("dynamic", None)
    rec = _with_recommendation(built, "dynamic", -2.0).config.recommendation
    assert (rec.setting, rec.mode, rec.mu, rec.reason) == ("dynamic/fit", "dynamic", -2.0, "test")


def test_attach_takes_the_spec_and_decodes_as_with_keywords(built: Any, tokenizer: Any) -> None:
    spec = steerkit.Steering(built, "static", mu=-4.0)
    with steerkit.attach(spec, tiny_llama(), tokenizer=tokenizer) as steered:
        by_spec = _greedy(steered, tokenizer)
        assert steered.steering is spec and isinstance(steered, steerkit.SteeredModel)
    with steerkit.attach(built, tiny_llama(), mode="static", mu=-4.0, tokenizer=tokenizer) as steered:
        assert torch.equal(_greedy(steered, tokenizer), by_spec)
    with pytest.raises(InvalidOptionError, match="takes mode, mu, alpha and adapter from the spec"):
        steerkit.attach(spec, tiny_llama(), mu=1.0)


def test_the_old_handle_name_is_a_deprecated_alias() -> None:
    import steerkit.decode

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert steerkit.Steered is steerkit.SteeredModel
        assert steerkit.decode.Steered is steerkit.SteeredModel
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "Steered" not in steerkit.__all__


# --- μ must stay finite in float32 (issue 28, defect 1) -----------------------------------------------------------


def test_a_mu_whose_step_overflows_float32_is_refused_at_every_boundary(built: Any, tokenizer: Any) -> None:
    from steerkit.export import export_bias
    from steerkit.processors import DynamicSteeringProcessor

    scale = float(built.task_vector.abs().max())
    assert check_mu(1e29, scale=0.5) == 1e29 and check_mu(1e39) == 1e39  # no scale: only finiteness
    with pytest.raises(InvalidOptionError, match=r"μ = 5e\+29 is too large: μ times the direction's largest entry"):
        check_mu(5e29, scale=2.5)
    with pytest.raises(InvalidOptionError, match=r"μ = 1e\+39 is too large: steered logits are computed in float32"):
        check_mu(1e39, scale=scale)
    with pytest.raises(InvalidOptionError, match="too large"):
        check_mu(torch.tensor([1.0, -1e39], dtype=torch.float64), scale=scale)
    for mode in ("static", "dynamic"):
        with pytest.raises(InvalidOptionError, match="too large"):
            steerkit.attach(built, tiny_llama(), mode=mode, mu=1e39, tokenizer=tokenizer)
        with pytest.raises(InvalidOptionError, match="too large"):
            steerkit.Steering(built, mode, mu=-1e39)
    with pytest.raises(InvalidOptionError, match="too large"):
        StaticSteeringProcessor(built.task_vector, 1e39)
    with pytest.raises(InvalidOptionError, match="too large"):
        DynamicSteeringProcessor(tiny_lora(tiny_llama()), 1e36)
    with pytest.raises(InvalidOptionError, match="too large"):
        export_bias(built, mu=1e39)
    big = built.with_mu(1e39, static=True)  # a stored default is checked too, when it is used
    with pytest.raises(InvalidOptionError, match="too large"):
        steerkit.Steering(big, "static")


def test_the_largest_accepted_mu_keeps_every_steered_logit_finite(built: Any, tokenizer: Any) -> None:
    scale = float(built.task_vector.abs().max())
    mu = min(MAX_STEP, MAX_STEP / scale)
    with steerkit.attach(built, tiny_llama(), mode="static", mu=mu, tokenizer=tokenizer) as steered:
        out = steered.generate(
            **tokenizer(["q 3 cat"], return_tensors="pt"), max_new_tokens=4, do_sample=True, output_scores=True,
            return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    assert all(not bool(torch.isnan(s).any()) for s in out.scores)
