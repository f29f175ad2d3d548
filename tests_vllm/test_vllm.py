"""steerkit.vllm on vLLM's CPU build: the plugin's greedy tokens and logits against steerkit's own static mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine import OTHER_MU

EOS = 2


def _trim(tokens: list[int]) -> list[int]:
    """Tokens up to the first EOS (exclusive): vLLM and transformers differ on whether they return it."""
    return tokens[: tokens.index(EOS)] if EOS in tokens else tokens


@pytest.fixture(scope="module")
def hf(engine: dict[str, Any], artifacts: tuple[Path, Path]) -> dict[str, list[list[int]]]:
    """transformers greedy tokens, float32: base, warm (the vector's LoRA) and warm + steerkit static at μ_s."""
    from peft import PeftModel

    import steerkit
    from steerkit.models import default_model_dir, load_model

    model, tokenizer = load_model(default_model_dir())
    n = len(engine["static"][0])
    out: dict[str, list[list[int]]] = {"base": [], "warm": [], "static": [], "composed": []}

    def gen(target: Any, ids: list[int], steered: Any = None) -> list[int]:
        batch = torch.tensor([ids])
        kwargs = {"max_new_tokens": n, "do_sample": False, "attention_mask": torch.ones_like(batch)}
        result = (steered or target).generate(input_ids=batch, **kwargs)
        return [int(t) for t in result[0, len(ids) :]]

    for ids in engine["prompts"]:
        out["base"].append(gen(model, ids))
    vector = steerkit.load(artifacts[0])
    warm = PeftModel.from_pretrained(model, str(artifacts[0] / "adapter"))
    warm.eval()
    steered = steerkit.attach(vector, warm, mode="static", tokenizer=tokenizer)
    assert steered.mu == vector.mu_static and steered.filter_masked is False
    other = steerkit.load(Path(engine["registry_folder"]) / "other")
    mu_s = vector.mu_static
    both = [steerkit.Steering(vector, "static", mu_s), steerkit.Steering(other, "static", OTHER_MU * mu_s)]
    composed = steerkit.attach(both, warm, tokenizer=tokenizer)
    for ids in engine["prompts"]:
        out["warm"].append(gen(warm, ids))
        out["static"].append(gen(warm, ids, steered))
        out["composed"].append(gen(warm, ids, composed))
    return out


def test_steered_greedy_tokens_equal_steerkit_static_generate(engine: dict[str, Any], hf: dict[str, Any]) -> None:
    qualified = [i for i in range(len(engine["prompts"])) if _trim(engine["warm"][i]) == _trim(hf["warm"][i])]
    print(f"\nwarm vLLM == warm HF on {len(qualified)}/{len(engine['prompts'])} prompts")
    assert len(engine["prompts"]) == 8 and len(qualified) >= 6
    for i in qualified:
        assert _trim(engine["static"][i]) == _trim(hf["static"][i]), i
        assert _trim(engine["composed"][i]) == _trim(hf["composed"][i]), i
    # steering changed something, and the LoRA did too: the comparison is not of identical runs
    assert any(engine["static"][i] != engine["warm"][i] for i in qualified)
    assert engine["warm"] != engine["base"]
    assert sum(_trim(engine["base"][i]) == _trim(hf["base"][i]) for i in range(8)) >= 6


def test_plugin_logits_equal_the_static_rule_on_vllms_own_logits(engine: dict[str, Any]) -> None:
    checks = engine["logit_checks"]
    assert len(checks) == 8
    for check in checks:
        assert check["max_abs_diff"] <= 1e-5 * max(1.0, abs(engine["mu_static"])), check
        assert check["argmax_equal"], check
    assert sum(c["changed"] for c in checks) > 0  # the rule moved some logits


def test_mu_zero_equals_plain_vllm(engine: dict[str, Any]) -> None:
    assert engine["mu0"] == engine["warm"]


def test_mixed_batch_steers_each_request_by_its_own_choice(engine: dict[str, Any]) -> None:
    # [tqa μ_s, flip μ_s, tqa μ_s/4, unsteered, tqa μ=0] in one batch, each equal to its run alone
    assert engine["batch"] == engine["alone"]
    steered, flipped, _quarter, plain, zero = engine["batch"]
    assert plain == engine["warm"][0] and zero == plain and steered == engine["static"][0]
    assert flipped != steered and flipped != plain  # −v steers elsewhere than v


def test_bad_requests_are_refused_at_admission_and_the_engine_keeps_serving(engine: dict[str, Any]) -> None:
    refused = engine["refused"]
    assert refused["unknown"].startswith("VLLMValidationError: unknown steering vector 'no-such-vector'")
    assert "served: flip, other, tqa" in refused["unknown"]
    assert refused["path"].startswith("VLLMValidationError: steering vector names are plain names")  # never read
    assert refused["mu_nan"] == "VLLMValidationError: steering strength mu must be a finite number, got nan"
    assert refused["mu_text"] == "VLLMValidationError: steering strength mu must be a finite number, got 'big'"
    assert refused["extra_key"].startswith("VLLMValidationError: extra_args['steerkit'] must be")
    # a μ whose step overflows float32 (issue 28), and an int beyond float64, are 400s, never an engine error
    assert refused["mu_overflow"].startswith("VLLMValidationError: steering strength mu = 1e+39 is too large")
    assert refused["mu_bigint"].startswith("VLLMValidationError:")  # vLLM's own extra_args check comes first
    assert engine["after_refusals"] == engine["static"][0]


def test_composed_logits_equal_transformers_rule_with_the_summed_vector(engine: dict[str, Any]) -> None:
    checks = engine["composed_logit_checks"]
    assert len(checks) == 4
    for check in checks:
        assert check["max_abs_diff"] <= 1e-5 * max(1.0, (1 + OTHER_MU) * abs(engine["mu_static"])), check
        assert check["argmax_equal"], check
    assert sum(c["changed"] for c in checks) > 0


def test_composed_and_single_requests_share_a_batch(engine: dict[str, Any]) -> None:
    assert engine["composed_batch"] == engine["composed_alone"]
    assert engine["composed_batch"][0] == engine["composed"][1]


def test_the_live_registry_adds_serves_removes_and_refuses(engine: dict[str, Any]) -> None:
    run = engine["registry"]
    assert run["before"].startswith("VLLMValidationError: unknown steering vector 'live' (served: flip, other, tqa)")
    assert run["served"] == engine["static"][0]  # the same artifact, added while the engine ran, and its adapter
    assert run["after"].startswith("VLLMValidationError: unknown steering vector 'live' (served: flip, other, tqa)")
    assert run["broken"].startswith("VLLMValidationError: unknown steering vector 'broken' (served: flip, other")
    assert run["path"].startswith("VLLMValidationError: steering vector names are plain names")
    assert run["twice"].startswith("VLLMValidationError: the request names the steering vector 'tqa' twice")
    assert run["too_many"].startswith("VLLMValidationError: a request composes 1 to 8 steering vectors, got 9")
    assert run["serves_on"] == engine["static"][0]
