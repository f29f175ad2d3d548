"""Cross-validated choice of the decoding setting and its no-regression gate (steerkit.crossval), and what uses it:
the ``validation`` block, ``attach(mode=None)``, static mode on the warm model, ``acc_norm``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import make_vector, tiny_llama, tiny_lora

import steerkit
from steerkit.crossval import RULES, cross_validate_pairs, fit_strengths, folds_of
from steerkit.errors import ArtifactValueError, InvalidOptionError
from steerkit.gate import recommend
from steerkit.stats import item_metrics
from steerkit.terms import TokenTerms

WORDS = ["apple", "banana", "cat", "dog", "egg", "fish", "goat", "hat"]


def pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    g = torch.Generator().manual_seed(seed)
    pick = lambda k: " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=g))  # noqa: E731
    return [{"prompt": f"q {i} {pick(1)}", "completion": " " + pick(3)} for i in range(n)]


def items(n: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"Q: {WORDS[i % 8]} {i}?\nA:", "choices": [" yes", " no, not at all", " maybe"], "label": i % 3}
        for i in range(n)
    ]


def synthetic_terms(n_units: int, seed: int = 0) -> tuple[TokenTerms, torch.Tensor]:
    """Random logits and directions over V = 12 for 2-4 tokens per unit; the direction leans towards the gold."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, 5, (n_units,), generator=g)
    t = int(counts.sum())
    z = torch.randn(t, 12, generator=g, dtype=torch.float64) * 2
    gold = torch.randint(12, (t,), generator=g)
    keep = z >= z.max(dim=-1, keepdim=True).values - 2.5
    keep[torch.arange(t), gold] |= torch.rand(t, generator=g) < 0.7
    d = torch.randn(t, 12, generator=g, dtype=torch.float64) * 0.3
    d[torch.arange(t), gold] += 0.5
    d = torch.where(keep, d, torch.zeros_like(d))
    return TokenTerms.from_logits(z, d, keep, gold), torch.repeat_interleave(torch.arange(n_units), counts)


# --- folds ---------------------------------------------------------------------------------------------------


def test_folds_are_disjoint_cover_every_unit_and_keep_a_prompt_together() -> None:
    keys = [f"p{i // 2}" for i in range(24)]  # 12 prompts, two records each
    fold = folds_of(keys, 5, seed=0)
    assert sorted(set(fold)) == [0, 1, 2, 3, 4]
    assert all(fold[2 * j] == fold[2 * j + 1] for j in range(12))
    sizes = [len({k for k, f in zip(keys, fold, strict=True) if f == i}) for i in range(5)]
    assert sorted(sizes) == [2, 2, 2, 3, 3]


def test_folds_depend_on_the_seed_and_the_set_of_keys_only() -> None:
    keys = [f"k{i}" for i in range(15)]
    by_key = dict(zip(keys, folds_of(keys, 3, seed=1), strict=True))
    shuffled = keys[::-1]
    assert dict(zip(shuffled, folds_of(shuffled, 3, seed=1), strict=True)) == by_key
    assert folds_of(keys, 3, seed=2) != folds_of(keys, 3, seed=1)


def test_too_few_prompts_is_refused_and_build_then_records_no_block(lora_model: Any, tokenizer: Any) -> None:
    with pytest.raises(InvalidOptionError, match="5-fold cross-validation needs at least 10 distinct prompts, got 9"):
        folds_of([f"k{i}" for i in range(9)], 5)
    assert steerkit.build(lora_model, None, pairs(9), tokenizer=tokenizer).config.validation is None
    assert steerkit.build(lora_model, None, pairs(12), tokenizer=tokenizer, folds=0).config.validation is None
    with pytest.raises(InvalidOptionError, match="folds must be 0"):
        steerkit.build(lora_model, None, pairs(12), tokenizer=tokenizer, folds=1)


# --- the pair measure: held-out NLL --------------------------------------------------------------------------


def test_pair_cross_validation_equals_a_fold_loop_written_out() -> None:
    terms, unit = synthetic_terms(20)
    keys = [f"k{i}" for i in range(20)]
    block = cross_validate_pairs(terms, unit, keys, folds=4, seed=3)
    fold = torch.tensor(folds_of(keys, 4, seed=3))[unit]
    nll = {"warm": torch.zeros(terms.n_tokens), "static/fit": torch.zeros(terms.n_tokens)}
    nll["dynamic/median/paper"] = torch.zeros(terms.n_tokens)
    for k in range(4):
        train, held = terms.subset(fold != k), terms.subset(fold == k)
        v = torch.zeros(12, dtype=torch.float64).index_add_(0, train.index, train.delta) / train.n_tokens
        nll["warm"][fold == k] = -held.logprobs(0.0).float()
        nll["static/fit"][fold == k] = (
            -held.with_direction(v).logprobs(fit_strengths(train.with_direction(v)).fit).float()
        )
        mu = fit_strengths(train).select("median/paper")
        nll["dynamic/median/paper"][fold == k] = -held.logprobs(mu).float()
    counts = torch.bincount(unit).double()
    by_setting = {c["setting"]: c for c in block["candidates"]}
    for setting, values in nll.items():
        per_unit = torch.zeros(20, dtype=torch.float64).index_add_(0, unit, values.double()) / counts
        assert by_setting[setting]["estimate"] == pytest.approx(float(per_unit.mean()), rel=1e-5)
    assert [c["setting"] for c in block["candidates"]] == [
        "warm",
        *(f"static/{r}" for r in RULES),
        *(f"dynamic/{r}" for r in RULES),
    ]
    assert block["recommended"]["setting"] != "warm"  # the direction leans towards the gold: steering helps
    assert block["recommended"]["mu"] == by_setting[block["recommended"]["setting"]]["mu"]


# --- the gate ------------------------------------------------------------------------------------------------


def _meta() -> dict[str, Any]:
    return {"measure": "accuracy", "unit": "item", "folds": 5, "seed": 0, "n": 40}


def test_the_gate_recommends_warm_alone_when_nothing_beats_it_with_an_interval_above_zero() -> None:
    g = torch.Generator().manual_seed(0)
    warm = (torch.rand(40, generator=g) < 0.6).double()
    worse = warm.clone()
    worse[:6] = 0.0
    noisy = torch.where(torch.rand(40, generator=g) < 0.5, 1.0 - warm, warm)
    block = recommend(
        {"warm": warm, "static/fit": worse, "dynamic/fit": noisy},
        {"static/fit": -3.0, "dynamic/fit": 2.0},
        base=warm + 0.0,
        meta=_meta(),
    )
    assert block["recommended"] == {"setting": "warm", "mode": None, "rule": None, "mu": 0.0}
    assert block["reason"].startswith("steering did not help on this data")
    assert block["reason"].endswith("recommending μ = 0")
    assert "worse than base" not in block["reason"]


def test_the_gate_takes_the_largest_gain_above_zero_and_names_a_warm_model_worse_than_base() -> None:
    warm = torch.tensor([0.0, 1.0] * 20, dtype=torch.float64)
    small, large = warm.clone(), warm.clone()
    small[0:12:2] = 1.0  # +6 items
    large[0:24:2] = 1.0  # +12 items
    block = recommend(
        {"warm": warm, "static/fit": small, "dynamic/mean/paper": large},
        {"static/fit": -3.0, "dynamic/mean/paper": 2.0},
        base=torch.ones(40, dtype=torch.float64),
        meta=_meta(),
    )
    assert block["recommended"] == {"setting": "dynamic/mean/paper", "mode": "dynamic", "rule": "mean/paper", "mu": 2.0}
    assert block["candidates"][2]["delta_vs_warm"] == pytest.approx(0.3)
    assert "the warm model is worse than base on this data (-0.5000" in block["reason"]


def test_identical_warm_and_base_give_mu_zero(tokenizer: Any) -> None:
    from peft import LoraConfig, get_peft_model

    same = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))  # B = 0: warm = base
    block = steerkit.build(same, None, pairs(12), tokenizer=tokenizer).config.validation
    assert block is not None
    assert block["recommended"]["mode"] is None and block["recommended"]["mu"] == 0.0
    assert all(c["delta_vs_warm"] == 0.0 for c in block["candidates"])


# --- the recorded block --------------------------------------------------------------------------------------


def test_build_records_the_same_block_for_the_same_inputs_and_it_round_trips(tmp_path: Path, tokenizer: Any) -> None:
    data = pairs(20)
    a = steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer)
    b = steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer)
    assert a.config.validation is not None
    assert a.config.to_json() == b.config.to_json()
    block = a.config.validation
    assert (block["measure"], block["criterion"], block["n"]) == ("rank", "split", 20)  # build's default criterion
    assert block["distractors"] == {"source": "base-answer", "k": 3}
    a.save(tmp_path / "v")
    loaded = steerkit.load(tmp_path / "v")
    assert loaded.config.validation == json.loads(json.dumps(a.config.validation))
    card = (tmp_path / "v" / "README.md").read_text()
    assert "## Recommended setting" in card and a.config.validation["reason"] in card


GOOD_REC = {"setting": "warm", "mode": None, "rule": None, "mu": 0.0}
GOOD_BLOCK = {
    "measure": "rank",
    "criterion": "rank",
    "distractors": {"source": "drawn", "k": 3},
    "unit": "example",
    "folds": 5,
    "n": 40,
    "seed": 0,
    "n_bootstrap": 1000,
    "candidates": [GOOD_REC | {"estimate": 0.5, "delta_vs_warm": 0.0, "ci_low": 0.0, "ci_high": 0.0}],
    "warm_vs_base": None,
    "recommended": GOOD_REC,
    "reason": "r",
}


def test_a_validation_block_with_a_bad_recommendation_is_refused() -> None:
    from steerkit.config import SteerConfig

    data = make_vector().config.to_dict() | {"validation": GOOD_BLOCK}
    assert SteerConfig.from_dict(data).validation == GOOD_BLOCK
    bad = data | {"validation": GOOD_BLOCK | {"recommended": GOOD_REC | {"mode": "sideways"}}}
    with pytest.raises(ArtifactValueError, match=r"validation\.recommended\.mode must be null, 'static' or 'dynamic'"):
        SteerConfig.from_dict(bad)
    nan = data | {"validation": GOOD_BLOCK | {"recommended": GOOD_REC | {"mu": "1"}}}
    with pytest.raises(ArtifactValueError, match=r"validation\.recommended\.mu is not a number"):
        SteerConfig.from_dict(nan)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("measure", r"validation\.measure must be a string, got"),
        ("unit", r"validation\.unit must be a string"),
        ("folds", r"validation\.folds must be a non-negative integer"),
        ("n", r"validation\.n must be a non-negative integer"),
        ("candidates", r"validation\.candidates must be a non-empty list"),
        ("candidates.0.mode", r"validation\.candidates\[0\]\.mode must be null, 'static' or 'dynamic', got nothing"),
        ("distractors.k", r"validation\.distractors\.k must be a non-negative integer"),
    ],
)
def test_a_validation_block_missing_a_key_a_reader_uses_is_refused_at_load(drop: str, message: str) -> None:
    """Each of these loaded before and failed later with a bare KeyError (files(), save(), push, inspect)."""
    from steerkit.config import SteerConfig

    block = json.loads(json.dumps(GOOD_BLOCK))
    *path, last = drop.split(".")
    node: Any = block
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]
    with pytest.raises(ArtifactValueError, match=message):
        SteerConfig.from_dict(make_vector().config.to_dict() | {"validation": block})


# --- what uses it --------------------------------------------------------------------------------------------


def _with_recommendation(vector: Any, mode: str | None, mu: float) -> Any:
    setting = "warm" if mode is None else f"{mode}/fit"
    rec = {"setting": setting, "mode": mode, "rule": None if mode is None else "fit", "mu": mu}
    validation = {"recommended": rec, "reason": "test", "candidates": []}
    return dataclasses.replace(vector, config=dataclasses.replace(vector.config, validation=validation))


@pytest.fixture
def built(tokenizer: Any) -> Any:
    return steerkit.build(tiny_lora(tiny_llama()), None, pairs(8), tokenizer=tokenizer)


def _greedy(handle_or_model: Any, tokenizer: Any) -> torch.Tensor:
    enc = tokenizer(["q 3 cat", "q 1 dog egg"], return_tensors="pt", padding=True)
    return handle_or_model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)


def test_attach_without_mode_decodes_in_the_recommended_setting(built: Any, tokenizer: Any) -> None:
    warm_vec = _with_recommendation(built, None, 0.0)
    warm_model = tiny_lora(tiny_llama())
    with steerkit.attach(warm_vec, warm_model, tokenizer=tokenizer) as steered:
        assert (steered.mode, steered.mu, steered.setting, steered.filter_masked) == ("static", 0.0, "warm", False)
        assert torch.equal(_greedy(steered, tokenizer), _greedy(warm_model, tokenizer))
    static_vec = _with_recommendation(built, "static", 7.5)
    with steerkit.attach(static_vec, tiny_llama(), tokenizer=tokenizer) as steered:
        assert (steered.mode, steered.mu, steered.setting) == ("static", 7.5, "static/fit")
    with steerkit.attach(static_vec, tiny_llama(), tokenizer=tokenizer, mu=-1.0) as steered:
        assert (steered.mode, steered.mu) == ("static", -1.0)
    with steerkit.attach(built, tiny_llama(), tokenizer=tokenizer) as steered:  # no block: dynamic, as before
        assert (steered.mode, steered.mu) == ("dynamic", built.mu)


def test_static_mode_steers_the_warm_model_unless_told_otherwise(built: Any, tokenizer: Any) -> None:
    with steerkit.attach(built, tiny_lora(tiny_llama()), mode="static", tokenizer=tokenizer) as steered:
        on_warm = _greedy(steered, tokenizer)
    with steerkit.attach(built, tiny_llama(), mode="static", tokenizer=tokenizer) as steered:
        loaded = _greedy(steered, tokenizer)  # the artifact's adapter is loaded onto the plain model
    plain = tiny_llama()
    with steerkit.attach(built, plain, mode="static", tokenizer=tokenizer, adapter=False) as steered:
        transfer = _greedy(steered, tokenizer)
    assert torch.equal(loaded, on_warm)
    assert not torch.equal(transfer, on_warm)
    assert not hasattr(plain, "peft_config")
    with pytest.raises(InvalidOptionError, match="adapter=False is a static-mode option"):
        steerkit.attach(built, tiny_llama(), mode="dynamic", tokenizer=tokenizer, adapter=False)


def test_static_scoring_of_a_plain_model_scores_warm_plus_static(built: Any, tokenizer: Any) -> None:
    from steerkit.scoring import collect_option_terms
    from steerkit.steering import Steering

    data = items(4)
    on_plain = collect_option_terms(tiny_llama(), data, tokenizer=tokenizer, steering=Steering(built, "static"))
    on_warm = collect_option_terms(
        tiny_lora(tiny_llama()), data, tokenizer=tokenizer, steering=Steering(built, "static")
    )
    base = collect_option_terms(
        tiny_llama(), data, tokenizer=tokenizer, steering=Steering(built, "static", adapter=False)
    )
    assert torch.allclose(on_plain.option_scores(), on_warm.option_scores())
    assert not torch.allclose(base.option_scores(), on_warm.option_scores())


def test_acc_norm_divides_each_option_log_probability_by_its_length_in_bytes() -> None:
    item = {"prompt": "p", "choices": ["ab", "abcdefgh", "é"], "label": 1}
    scores = [{"choices": [-4.0, -6.0, -3.0]}]  # per byte: -2, -0.75, -1.5
    out = item_metrics([item], scores)
    assert out["accuracy"] == [0.0] and out["acc_norm"] == [1.0]


def test_tune_cross_validates_on_items_with_the_search_fitted_on_training_folds(built: Any, tokenizer: Any) -> None:
    from steerkit.scoring import collect_setting_terms
    from steerkit.tune import search_terms, tune_and_validate

    data = items(12)
    warm = tiny_lora(tiny_llama())
    found, tuned = tune_and_validate(built, warm, data, tokenizer=tokenizer, metric="accuracy", mode="static")
    block = tuned.config.validation
    assert (block["measure"], block["unit"], block["n"]) == ("accuracy", "item", 12)
    assert tuned.mu_static == found.best
    terms = collect_setting_terms(warm, data, tokenizer=tokenizer, vector=built, settings=("warm", "static"))
    fold = folds_of([json.dumps(it["prompt"]) for it in data], 5)
    held_out = []
    for i in range(12):
        train = [j for j in range(12) if fold[j] != fold[i]]
        mu = search_terms(terms["static"], data, metric="accuracy", subset=train).best
        held_out.append(item_metrics(data, terms["static"].item_scores(mu))["accuracy"][i])
    searched = next(c for c in block["candidates"] if c["setting"] == "static/search:accuracy")
    assert searched["estimate"] == pytest.approx(sum(held_out) / 12)
    assert searched["mu"] == search_terms(terms["static"], data, metric="accuracy").best


def test_evaluate_settings_scores_the_recommended_setting(built: Any, tokenizer: Any) -> None:
    from steerkit.compare import evaluate_settings

    vector = _with_recommendation(built, "static", 3.0)
    model = tiny_lora(tiny_llama())
    out = evaluate_settings(vector, model, items(6), tokenizer=tokenizer, settings=["recommended"])
    ref = evaluate_settings(vector, model, items(6), tokenizer=tokenizer, settings=["static"], mu_static=3.0)
    assert out["recommended"]["accuracy"] == ref["static"]["accuracy"]
    assert out["recommended"]["steering"] == {
        "mode": "static",
        "mu": 3.0,
        "filter_masked": False,
        "setting": "static/fit",
    }


def test_tune_defaults_to_the_items_headline_metric_and_scores_base_as_a_candidate(built: Any, tokenizer: Any) -> None:
    from steerkit.tune import tune_and_validate

    data = items(12)  # choices " yes", " no, not at all", " maybe": lengths differ, so acc_norm
    found, tuned = tune_and_validate(built, tiny_lora(tiny_llama()), data, tokenizer=tokenizer, mode="static")
    block = tuned.config.validation
    assert found.metric == "acc_norm"
    assert (block["measure"], block["criterion"], block["warm_vs_base"]) == ("acc_norm", "metric:acc_norm", None)
    assert [c["setting"] for c in block["candidates"]][:1] == ["warm"]
    assert "base" in {c["setting"] for c in block["candidates"]}
