"""Multiple-choice scoring and metrics (steerkit.evaluate) against teacher-forced references on a tiny model."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from test_decode import hand_vector, sharp_pair
from tiny import tiny_llama, tiny_tokenizer

from steerkit import svdecode
from steerkit.errors import DataFormatError, EmptyDataError, InvalidOptionError
from steerkit.evaluate import evaluate_mc
from steerkit.scoring import score_choices
from steerkit.stats import item_metrics, paired_bootstrap
from steerkit.steering import Steering

ITEMS: list[dict[str, Any]] = [
    {
        "prompt": "Q: sky? A:",
        "choices": [" blue", " green", " red"],
        "label": 0,
        "mc2_choices": [" blue", " azure", " green", " red"],
        "mc2_labels": [1, 1, 0, 0],
        "category": "Nature",
    },
    {
        "prompt": "Q: 2+2? A:",
        "choices": [" 4", " 5"],
        "label": 0,
        "mc2_choices": [" 4", " four", " 5"],
        "mc2_labels": [1, 1, 0],
        "category": "Math",
    },
    {
        "prompt": "Q: cats? A:",
        "choices": [" meow", " woof", " moo"],
        "label": 1,
        "mc2_choices": [" meow", " woof", " moo"],
        "mc2_labels": [1, 0, 0],
        "category": "Animals",
    },
]


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


def reference_scores(
    peft_model: Any,
    tokenizer: Any,
    prompt: str,
    choices: list[str],
    *,
    mode: str,
    mu: float = 0.0,
    vector: torch.Tensor | None = None,
    filter_masked: bool = False,
) -> list[float]:
    """Each option alone, unpadded: full logits, svdecode.steer, log_softmax, gold log-probs summed."""
    out = []
    n_prompt = len(tokenizer(prompt)["input_ids"])
    for choice in choices:
        ids = torch.tensor([tokenizer(prompt + choice)["input_ids"]])
        with torch.no_grad():
            warm = peft_model(input_ids=ids).logits[0].double()
            with peft_model.disable_adapter():
                base = peft_model(input_ids=ids).logits[0].double()
        pos = torch.arange(n_prompt - 1, ids.shape[1] - 1)
        w, b, gold = warm[pos], base[pos], ids[0, pos + 1]
        if mode == "dynamic":
            direction, keep = svdecode.steering_delta(w, b, alpha=0.1)
        else:
            keep = svdecode.confidence_mask(w, alpha=0.1)
            v = vector.double() if (mode == "static" and vector is not None) else torch.zeros(w.shape[-1]).double()
            direction = torch.where(keep, v, torch.zeros((), dtype=torch.float64))
        z = svdecode.steer(w, direction, keep, mu, filter_masked=filter_masked)
        out.append(float(torch.log_softmax(z, -1).gather(1, gold[:, None]).sum()))
    return out


@pytest.mark.parametrize(("mode", "mu"), [("dynamic", -7.0), ("static", -40.0), ("dynamic", 3.0)])
def test_steered_scores_equal_teacher_forced_reference(peft: Any, tok: Any, mode: str, mu: float) -> None:
    vector = hand_vector(peft, tok)
    prompt = ITEMS[0]["prompt"]
    # "<unk><unk>" is the warm model's own greedy continuation: its tokens are inside the confidence mask.
    choices = [*ITEMS[0]["mc2_choices"], "<unk><unk>"]
    steering = Steering(vector, mode=mode, mu=mu)
    got = score_choices(peft, prompt, choices, tokenizer=tok, steering=steering)
    filtered = score_choices(peft, prompt, choices, tokenizer=tok, steering=steering, filter_masked=True)
    ref = reference_scores(peft, tok, prompt, choices, mode=mode, mu=mu, vector=vector.task_vector)
    unsteered = reference_scores(peft, tok, prompt, choices, mode="none")
    assert got == pytest.approx(ref, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(got, unsteered)) > 1e-3  # steering moved the scores
    ref_f = reference_scores(
        peft, tok, prompt, choices, mode=mode, mu=mu, vector=vector.task_vector, filter_masked=True
    )
    assert [math.isinf(x) for x in filtered] == [math.isinf(x) for x in ref_f]
    assert math.isinf(filtered[0]) and math.isfinite(filtered[-1])
    assert [x for x in filtered if math.isfinite(x)] == pytest.approx([x for x in ref_f if math.isfinite(x)], abs=1e-4)


def test_unsteered_scores_base_and_warm(peft: Any, tok: Any) -> None:
    item = ITEMS[1]
    warm = score_choices(peft, item["prompt"], item["mc2_choices"], tokenizer=tok)
    assert warm == pytest.approx(
        reference_scores(peft, tok, item["prompt"], item["mc2_choices"], mode="none"), abs=1e-4
    )
    base = tiny_llama(sharpness=20)
    plain = score_choices(base, item["prompt"], item["mc2_choices"], tokenizer=tok)
    ids = torch.tensor([tok(item["prompt"] + item["mc2_choices"][1])["input_ids"]])
    n = len(tok(item["prompt"])["input_ids"])
    with torch.no_grad():
        lp = torch.log_softmax(base(input_ids=ids).logits[0].double(), -1)
    expected = sum(float(lp[t - 1, ids[0, t]]) for t in range(n, ids.shape[1]))
    assert plain[1] == pytest.approx(expected, abs=1e-4)


def test_batching_does_not_change_scores(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    spec = Steering(vector, mode="dynamic", mu=-5.0)
    one = evaluate_mc(peft, ITEMS, tokenizer=tok, steering=spec, batch_size=1, n_bootstrap=0)
    many = evaluate_mc(peft, ITEMS, tokenizer=tok, steering=spec, batch_size=7, n_bootstrap=0)
    for a, b in zip(one["per_item"]["mc2_scores"], many["per_item"]["mc2_scores"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_item_metrics_hand_computed() -> None:
    items = [
        {
            "prompt": "p",
            "choices": ["a", "b", "c"],
            "label": 2,
            "mc2_choices": ["a", "b", "c"],
            "mc2_labels": [1, 0, 1],
        },
        {"prompt": "p", "choices": ["a", "b"], "label": 1, "mc2_choices": ["a", "b"], "mc2_labels": [0, 1]},
        {"prompt": "p", "choices": ["a", "b", "c"], "labels": [0, 1, 1]},
    ]
    scores = [
        {"choices": [-1.0, -2.0, -0.5], "mc2_choices": [-1.0, -2.0, -3.0]},
        {"choices": [-1.0, -1.0], "mc2_choices": [-1.0, -1.0]},  # a tie goes to the first choice
        {"choices": [-3.0, -1.0, -2.0]},
    ]
    got = item_metrics(items, scores)
    e = math.exp
    assert got["accuracy"] == [1.0, 0.0, 1.0]
    assert got["mc1"][:2] == [1.0, 0.0] and got["mc1"][2] is None
    assert got["mc2"][0] == pytest.approx((e(-1) + e(-3)) / (e(-1) + e(-2) + e(-3)), rel=1e-12)
    assert got["mc2"][1] == pytest.approx(0.5, rel=1e-12)
    assert got["mc2"][2] is None


def test_evaluate_mc_metrics_from_its_scores(peft: Any, tok: Any) -> None:
    res = evaluate_mc(peft, ITEMS, tokenizer=tok, n_bootstrap=200, seed=1)
    assert res["n"] == 3 and res["steering"]["mode"] == "none"
    mc2 = []
    mc1 = []
    for item in ITEMS:
        s = reference_scores(peft, tok, item["prompt"], item["mc2_choices"], mode="none")
        true = sum(math.exp(x) for x, lab in zip(s, item["mc2_labels"]) if lab)
        mc2.append(true / sum(math.exp(x) for x in s))
        s1 = reference_scores(peft, tok, item["prompt"], item["choices"], mode="none")
        mc1.append(float(max(range(len(s1)), key=lambda i: s1[i]) == item["label"]))
    assert res["mc2"]["value"] == pytest.approx(sum(mc2) / 3, abs=1e-5)
    assert res["mc1"]["value"] == sum(mc1) / 3 == res["accuracy"]["value"]
    assert res["per_item"]["mc2"] == pytest.approx(mc2, abs=1e-5)
    for key in ("accuracy", "mc1", "mc2"):
        m = res[key]
        assert m["n"] == 3 and m["ci_low"] <= m["value"] <= m["ci_high"]
    again = evaluate_mc(peft, ITEMS, tokenizer=tok, n_bootstrap=200, seed=1)
    assert again["mc2"] == res["mc2"]
    no_ci = evaluate_mc(peft, ITEMS[:1], tokenizer=tok, n_bootstrap=0)
    assert no_ci["accuracy"]["ci_low"] is None and "mc2" in no_ci


def test_plain_items_have_accuracy_only_and_progress(peft: Any, tok: Any) -> None:
    items = [{"prompt": it["prompt"], "choices": it["choices"], "label": it["label"]} for it in ITEMS]
    calls: list[tuple[int, int]] = []
    res = evaluate_mc(peft, items, tokenizer=tok, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert "mc1" not in res and "mc2" not in res and res["accuracy"]["n"] == 3
    assert calls[-1] == (8, 8) and [c[0] for c in calls] == [3, 5, 8]  # one call per item's options (3, 2, 3)


def test_steering_spec_forms_agree(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    by_spec = evaluate_mc(peft, ITEMS, tokenizer=tok, steering=Steering(vector, mode="static", mu=-9.0))
    by_handle = evaluate_mc(  # the same strength as the vector's own default
        peft, ITEMS, tokenizer=tok, steering=Steering(vector.with_mu(-9.0, static=True), mode="static")
    )
    assert by_spec["per_item"] == by_handle["per_item"]
    assert by_spec["steering"] == {"mode": "static", "mu": -9.0, "filter_masked": False}
    with pytest.raises(InvalidOptionError, match="cannot steer with a str"):
        evaluate_mc(peft, ITEMS, tokenizer=tok, steering="nope")


def test_paired_bootstrap() -> None:
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    same = paired_bootstrap(a, a, n_bootstrap=100, seed=0)
    assert same["difference"] == 0.0 and same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    shifted = paired_bootstrap([x + 1 for x in a], a, n_bootstrap=100)
    assert shifted["difference"] == pytest.approx(1.0) and shifted["ci_low"] == pytest.approx(1.0)
    assert shifted["p_le_zero"] == 0.0 and shifted["n"] == 6
    r = paired_bootstrap([1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], n_bootstrap=500, seed=3)
    assert r["ci_low"] <= r["difference"] <= r["ci_high"]
    assert r == paired_bootstrap([1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], n_bootstrap=500, seed=3)
    with pytest.raises(InvalidOptionError, match="got 2 and 3"):
        paired_bootstrap([1.0, 0.0], [1.0, 0.0, 1.0])


def test_bad_items_are_refused(peft: Any, tok: Any) -> None:
    with pytest.raises(EmptyDataError):
        evaluate_mc(peft, [], tokenizer=tok)
    with pytest.raises(DataFormatError, match="item 1: neither 'label' nor 'labels' given"):
        evaluate_mc(peft, [ITEMS[0], {"prompt": "p", "choices": ["a"]}], tokenizer=tok)
    with pytest.raises(DataFormatError, match="item 0: 'label' 3 is not an index into 2 choices"):
        evaluate_mc(peft, [{"prompt": "p", "choices": ["a", "b"], "label": 3}], tokenizer=tok)
    with pytest.raises(DataFormatError, match="choice '' adds no tokens"):
        evaluate_mc(peft, [{"prompt": "p", "choices": ["a", ""], "label": 0}], tokenizer=tok)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_shared_prompts_score_like_full_sequences(peft: Any, tok: Any, mode: str) -> None:
    from steerkit.scoring import collect_option_terms

    vector = hand_vector(peft, tok)
    items = [*ITEMS, {"prompt": "Q: longest? A:", "choices": [" a", " bbbbbb", " cc c", "d"], "label": 2}]
    steering = Steering(vector, mode=mode, mu=-5.0)
    full = collect_option_terms(peft, items, tokenizer=tok, steering=steering, share_prompts=False)
    shared = collect_option_terms(peft, items, tokenizer=tok, steering=steering, batch_size=2)
    assert shared.n_options == full.n_options == 14  # distinct (item, choice) pairs: 4 + 3 + 3 + 4
    assert torch.equal(torch.sort(shared.segment).values, torch.sort(full.segment).values)
    for mu in (0.0, -5.0, 4.0):
        assert torch.allclose(shared.option_scores(mu), full.option_scores(mu), atol=1e-4)


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_prompt_learning_models_share_prompts_behind_their_virtual_tokens(tok: Any, kind: str) -> None:
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    from steerkit.batching import is_prompt_learning, virtual_prompt
    from steerkit.scoring import collect_option_terms

    configs = {
        "prompt_tuning": PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),
        "p_tuning": PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3, encoder_hidden_size=16),
        "prefix_tuning": PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),
    }
    torch.manual_seed(0)
    pt = get_peft_model(tiny_llama(sharpness=20), configs[kind])
    with torch.no_grad():
        for p in pt.prompt_encoder.parameters():
            p.normal_(0.0, 1.0)  # virtual tokens that really change the logits
    pt.eval()
    assert is_prompt_learning(pt) and not is_prompt_learning(tiny_llama())
    assert (virtual_prompt(pt) is None) is (kind == "prefix_tuning")  # prefix tuning keeps full sequences
    items = [*ITEMS, {"prompt": "Q: longest? A:", "choices": [" a", " bbbbbb", " cc c", "d"], "label": 2}]
    vector = hand_vector(pt, tok)
    steering = Steering(vector, mode="dynamic", mu=-5.0)
    shared = collect_option_terms(pt, items, tokenizer=tok, steering=steering, batch_size=2)
    full = collect_option_terms(pt, items, tokenizer=tok, steering=steering, share_prompts=False)
    base = collect_option_terms(pt.get_base_model(), items, tokenizer=tok)
    for mu in (0.0, -5.0, 4.0):
        assert torch.allclose(shared.option_scores(mu), full.option_scores(mu), atol=1e-4)
    assert not torch.allclose(full.option_scores(0.0), base.option_scores(), atol=1e-2)  # the prompt matters


def test_common_prefix_is_the_longest_shared_token_run() -> None:
    from steerkit.batching import CommonPrefix

    seqs = [([1, 5, 6, 7, 9], 4), ([1, 5, 6, 8, 9, 9], 4), ([1, 5, 6, 7, 2], 4)]
    assert CommonPrefix(seqs).length == 3
    assert CommonPrefix([([1, 5, 6, 9], 3), ([1, 5, 6, 9, 9], 3)]).length == 2  # each prompt keeps a token
    assert CommonPrefix([([1, 5], 1), ([2, 5], 1)]).length == 0


@pytest.mark.parametrize("share_prompts", [True, False])
def test_setting_terms_of_one_pass_equal_each_setting_on_its_own(peft: Any, tok: Any, share_prompts: bool) -> None:
    """One pass (warm + base logits) gives every setting exactly the terms its own pass gives."""
    from steerkit.scoring import collect_option_terms, collect_setting_terms

    vector = hand_vector(peft, tok)
    kw: dict[str, Any] = {"tokenizer": tok, "batch_size": 2, "share_prompts": share_prompts}
    together = collect_setting_terms(
        peft, ITEMS, vector=vector, settings=["base", "warm", "static", "dynamic"], mu=-5.0, mu_static=3.0, **kw
    )
    alone = {"dynamic": collect_option_terms(peft, ITEMS, steering=Steering(vector, mode="dynamic", mu=-5.0), **kw)}
    alone["static"] = collect_option_terms(peft, ITEMS, steering=Steering(vector, mode="static", mu=3.0), **kw)
    alone["warm"] = collect_option_terms(peft, ITEMS, **kw)
    with peft.disable_adapter():
        alone["base"] = collect_option_terms(peft, ITEMS, **kw)
    assert list(together) == ["base", "warm", "static", "dynamic"]
    for setting, terms in together.items():
        assert (terms.mode, terms.mu) == (alone[setting].mode, alone[setting].mu), setting
        assert torch.allclose(terms.option_scores(), alone[setting].option_scores(), atol=1e-5), setting
        assert torch.allclose(terms.option_scores(1.5), alone[setting].option_scores(1.5), atol=1e-5), setting
    assert together["base"].mu == 0.0 and together["static"].mu == 3.0 and together["dynamic"].mu == -5.0
    with pytest.raises(InvalidOptionError, match=r"unknown setting\(s\) \['best'\]"):
        collect_setting_terms(peft, ITEMS, tokenizer=tok, vector=vector, settings=["warm", "best"])


def test_the_headline_metric_fits_the_items_and_chance_is_the_mean_share_of_correct_choices() -> None:
    from steerkit.stats import chance, headline_metric

    even = [{"prompt": "p", "choices": [" yes", " nah"], "label": 0}]
    uneven = [*even, {"prompt": "q", "choices": [" a", " bbb", " c"], "labels": [1, 0, 1]}]
    truthful = [{**even[0], "mc2_choices": [" yes", " nah"], "mc2_labels": [1, 0]}]
    assert headline_metric(even) == ("accuracy", "every item's choices have one length")
    assert headline_metric(uneven) == ("acc_norm", "the choices differ in length")
    assert headline_metric(truthful) == ("mc2", "the items carry an MC2 set")
    assert chance(uneven) == pytest.approx((1 / 2 + 2 / 3) / 2)
