"""Build's ranking criteria (``criterion="split"``, the default, and ``"rank"``): distractors (drawn, or the base
model's own answer), the preference format, the fold rule, the base candidate and its recommendation, and that
nothing but the calibration data is read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_crossval import pairs, synthetic_terms
from tiny import tiny_llama, tiny_lora

import steerkit
from steerkit.crossval import RULES, _gold_mass, cross_validate_ranking, fit_strengths, folds_of
from steerkit.errors import InvalidOptionError
from steerkit.gate import recommend, split_pick
from steerkit.ranking import DISTRACTORS, _answer, base_answers, ranking_items
from steerkit.schema import criterion_words, recommended_words
from steerkit.terms import OptionTerms

# --- distractors ---------------------------------------------------------------------------------------------


def test_drawn_distractors_are_seeded_never_a_completion_of_the_same_prompt_and_own_ones_come_first() -> None:
    data = [
        {"prompt": "a", "completion": " yes"},
        {"prompt": "a", "completion": " sure"},  # same prompt: neither is ever the other's distractor
        {"prompt": "b", "completion": " no"},
        {"prompt": "c", "completion": " maybe"},
        {"prompt": "d", "completion": " never"},
        {"prompt": "e", "completion": " yes", "distractors": [" nope"]},
    ]
    keys = [p["prompt"] for p in data]
    found, source = ranking_items(data, keys, k=3, seed=0)
    assert source == "record+drawn" and found is not None
    assert [it["choices"][0] for it in found] == [p["completion"] for p in data]
    assert all(it["label"] == 0 and it["prompt"] == p["prompt"] for it, p in zip(found, data, strict=True))
    assert found[5]["choices"] == [" yes", " nope"]  # the record's own, none drawn
    for it in found[:5]:
        wrong = it["choices"][1:]
        assert len(wrong) == 3 and len(set(wrong)) == 3
        assert it["choices"][0] not in wrong
    assert not {" yes", " sure"} & set(found[0]["choices"][1:] + found[1]["choices"][1:])
    assert ranking_items(data, keys, k=3, seed=0) == (found, source)  # seeded
    assert any(a["choices"] != b["choices"] for a, b in zip(ranking_items(data, keys, k=3, seed=1)[0] or [], found))
    everyone_own = [p | {"distractors": [" x"]} for p in data[:5]]
    assert ranking_items(everyone_own, keys[:5])[1] == "record"
    assert ranking_items(data[:5], keys[:5])[1] == "drawn"


def test_on_a_two_label_task_the_distractor_is_the_other_label_and_messages_draw_messages() -> None:
    labels = [{"prompt": f"r{i}", "completion": " positive" if i % 2 else " negative"} for i in range(6)]
    found, _ = ranking_items(labels, [p["prompt"] for p in labels], k=3)
    assert found is not None
    assert all(it["choices"] == [p["completion"], " negative" if i % 2 else " positive"] for i, (it, p) in
               enumerate(zip(found, labels, strict=True)))  # fmt: skip
    say = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    chat = [{"prompt": [{"role": "user", "content": f"q{i}"}], "completion": say(f"a{i}")} for i in range(4)]
    mixed = [*chat, {"prompt": "p", "completion": " text"}, {"prompt": "o", "completion": " other"}]
    found, _ = ranking_items(mixed, [str(i) for i in range(6)], k=3)
    assert found is not None
    assert all(isinstance(c, list) for it in found[:4] for c in it["choices"])
    assert [it["choices"] for it in found[4:]] == [[" text", " other"], [" other", " text"]]


def test_the_base_models_answer_replaces_the_drawn_distractors_and_the_draw_does_not_depend_on_it() -> None:
    data = [{"prompt": c, "completion": f" {c}{c}"} for c in "abcdef"]
    data.append({"prompt": "g", "completion": " gg", "rejected": " no", "distractors": [" no"]})
    keys = [p["prompt"] for p in data]
    drawn, source = ranking_items(data, keys)
    assert drawn is not None and source == "record+drawn"
    answers = [" zz", None, " qq", None, None, None, " unused"]
    found, source = ranking_items(data, keys, answers=answers)
    assert found is not None and source == "record+base-answer+drawn"
    assert found[0]["choices"] == [" aa", " zz"] and found[2]["choices"] == [" cc", " qq"]
    assert [found[i] for i in (1, 3, 4, 5)] == [drawn[i] for i in (1, 3, 4, 5)]  # the same draw where no answer
    assert found[6]["choices"] == [" gg", " no"]  # the record's own wrong completion comes first
    assert ranking_items(data[:6], keys[:6], answers=[" x"] * 6)[1] == "base-answer"


def test_an_answer_is_the_first_non_empty_line_led_like_the_gold_and_none_when_empty_or_the_gold() -> None:
    assert _answer(" Paris.", "\n\n  The moon.\nMore text") == " The moon."
    assert _answer("Paris", "  London  ") == "London"
    assert _answer(" Paris.", " Paris. \nno") is None  # the gold text itself is no distractor
    assert _answer(" Paris.", " \n\t\n") is None
    assert _answer(" Paris.", "paris.") is None  # letter case aside
    reply = [{"role": "assistant", "content": "Paris."}]
    assert _answer(reply, "Rome.\nmore") == [{"role": "assistant", "content": "Rome."}]  # a reply for a reply
    assert _answer([*reply, *reply], "Rome.") is None  # two messages: no answer of that form


def test_base_answers_are_the_base_models_greedy_answers_with_the_adapter_off(tokenizer: Any) -> None:
    from steerkit.data import encode_pair

    say = [{"role": "assistant", "content": "yo"}]
    data = [*pairs(5), {"prompt": [{"role": "user", "content": "hi"}], "completion": say * 2}]
    data[2] = data[2] | {"completion": data[2]["completion"] * 12}  # a long gold: more new tokens
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in data[:5]] + [([5, 6, 7], 2)]
    warm = tiny_lora(tiny_llama())
    probe = tokenizer("q 1 cat", return_tensors="pt")["input_ids"]
    before = warm(probe).logits
    answers = base_answers(warm, tokenizer, data, encoded, batch_size=1)
    assert answers[5] is None  # a completion of two messages: ranked against drawn ones
    base = tiny_llama()
    for pair, (ids, start), answer in zip(data[:5], encoded, answers, strict=False):
        prompt = torch.tensor([ids[:start]])
        n = min(len(ids) - start + 4, 48)
        out = base.generate(prompt, max_new_tokens=n, min_new_tokens=2, do_sample=False, pad_token_id=0)
        assert answer == _answer(pair["completion"], tokenizer.decode(out[0, start:], skip_special_tokens=True))
    assert all(a is not None for a in answers[:5])
    after = warm(probe).logits  # the adapter is on again
    assert torch.equal(before, after) and not torch.allclose(after, tiny_llama()(probe).logits)
    steps: list[tuple[int, int]] = []
    own = [data[0] | {"distractors": [" x"]}, *data[1:]]  # nothing is generated for a record with its own
    batched = base_answers(warm, tokenizer, own, encoded, batch_size=2, progress=lambda *s: steps.append(s))
    assert batched[0] is None and batched[5] is None and steps == [(1, 2), (2, 2)]


def test_fewer_than_two_distinct_completions_recommends_warm_alone_and_still_writes_the_artifact(
    tmp_path: Path, tokenizer: Any
) -> None:
    same = [{"prompt": f"q {i} cat", "completion": " dog egg"} for i in range(12)]
    assert ranking_items(same, [p["prompt"] for p in same])[0] is None
    vector = steerkit.build(tiny_lora(tiny_llama()), None, same, tokenizer=tokenizer)
    block = vector.config.validation
    assert block is not None and block["recommended"]["setting"] == "warm"
    assert block["reason"] == (
        "no ranking possible: pair 0 has no distractor to rank against: the calibration data have fewer than 2 "
        "distinct completions; recommending μ = 0"
    )
    vector.save(tmp_path / "v")
    assert steerkit.load(tmp_path / "v").config.validation == json.loads(json.dumps(block))


def test_preference_records_rank_the_chosen_completion_against_their_own_rejected_one(tokenizer: Any) -> None:
    prefs = [{"prompt": p["prompt"], "chosen": p["completion"], "rejected": " hat hat"} for p in pairs(12)]
    block = steerkit.build(tiny_lora(tiny_llama()), None, prefs, tokenizer=tokenizer).config.validation
    assert block is not None
    assert (block["criterion"], block["distractors"]) == ("split", {"source": "record", "k": DISTRACTORS})
    ranked = steerkit.build(tiny_lora(tiny_llama()), None, prefs, tokenizer=tokenizer, criterion="rank")
    assert ranked.config.validation is not None
    assert ranked.config.validation["distractors"] == {"source": "record", "k": DISTRACTORS}
    with pytest.raises(InvalidOptionError, match="unknown criterion 'bleu'"):
        steerkit.build(tiny_lora(tiny_llama()), None, prefs, tokenizer=tokenizer, criterion="bleu")


def test_build_ranks_only_the_calibration_prompts_and_passes_only_over_the_distractors(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerkit.ranking as ranking
    from steerkit.data import encode_pair

    made: list[list[dict[str, Any]]] = []
    passes: list[list[dict[str, Any]]] = []
    real_items, real_pass = ranking.ranking_items, ranking.collect_setting_terms

    def items_spy(*args: Any, **kwargs: Any) -> Any:
        out = real_items(*args, **kwargs)
        made.append(out[0])
        return out

    def pass_spy(model: Any, items: list[dict[str, Any]], **kwargs: Any) -> Any:
        passes.append(items)
        return real_pass(model, items, **kwargs)

    monkeypatch.setattr(ranking, "ranking_items", items_spy)
    monkeypatch.setattr(ranking, "collect_setting_terms", pass_spy)
    data = pairs(12)
    steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer, criterion="rank")
    assert len(made) == 1 and len(passes) == 1
    assert [(it["prompt"], it["choices"][0]) for it in made[0]] == [(p["prompt"], p["completion"]) for p in data]
    golds = {p["completion"] for p in data}
    assert all(set(it["choices"][1:]) <= golds for it in made[0])  # drawn from the calibration completions only
    # the gold completions' terms are the calibration pass's own: the one extra pass scores the distractors alone
    assert [(it["prompt"], it["choices"]) for it in passes[0]] == [(it["prompt"], it["choices"][1:]) for it in made[0]]
    made.clear()
    passes.clear()
    steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer, criterion="nll")
    assert made == [] and passes == []  # the NLL criterion needs no extra pass
    block = steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer).config.validation
    assert block is not None and block["criterion"] == "split" and len(made) == 2 and len(passes) == 1
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in data]
    answers = base_answers(tiny_lora(tiny_llama()), tokenizer, data, encoded, batch_size=8)
    assert all(answers) and [it["choices"][1:] for it in made[1]] == [[a] for a in answers]  # the base model's own
    assert [it["prompt"] for it in passes[0]] == [p["prompt"] for p in data]
    assert block["recommended"] == {k: split_pick(block["candidates"])[k] for k in ("setting", "mode", "rule", "mu")}


def test_the_ranking_pass_continues_builds_progress_count(tokenizer: Any) -> None:
    steps: list[tuple[int, int]] = []
    data, on = pairs(12), lambda *s: steps.append(s)
    steerkit.build(
        tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer, batch_size=4, criterion="rank", progress=on
    )
    # 12 pairs in batches of 4 (3 steps); then 12 prompts with 3 distractors each, counted in sequences
    assert steps == [(1, 3), (2, 3), (3, 3), *[(3 + 3 * k, 3 + 36) for k in range(1, 13)]]
    steps.clear()
    steerkit.build(tiny_lora(tiny_llama()), None, data, tokenizer=tokenizer, batch_size=4, progress=on)
    # split: the calibration pass, 3 batches of generated answers, then 12 prompts with one answer each
    assert steps == [(1, 3), (2, 3), (3, 3), (4, 6), (5, 6), (6, 6), *[(6 + k, 6 + 12) for k in range(1, 13)]]


# --- the measure and the fold rule -----------------------------------------------------------------------------


def test_gold_mass_is_the_softmax_share_of_option_zero_and_a_tie_is_a_miss() -> None:
    scores = torch.tensor([-1.0, -2.0, -3.0, -1.0, -1.0, float("-inf"), 0.0], dtype=torch.float64)
    layout = [{"choices": [0, 1, 2]}, {"choices": [3, 4]}, {"choices": [5, 6]}]
    mass, hit = _gold_mass(scores, layout)
    expected = torch.softmax(torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64), 0)[0]
    assert mass.tolist() == pytest.approx([float(expected), 0.5, 0.0])
    assert hit.tolist() == [1.0, 0.0, 0.0]


def _options(n_items: int, seed: int = 1) -> OptionTerms:
    """Three options per item over V = 12, 1-3 tokens each (synthetic logits and directions)."""
    terms, option = synthetic_terms(3 * n_items, seed=seed)
    layout = [{"choices": [3 * i, 3 * i + 1, 3 * i + 2]} for i in range(n_items)]
    return OptionTerms(terms=terms, segment=option, n_options=3 * n_items, layout=layout)


def test_rank_cross_validation_equals_a_fold_loop_written_out() -> None:
    gold, unit = synthetic_terms(20)
    options = _options(20)
    keys = [f"k{i}" for i in range(20)]
    base_options = torch.linspace(-9.0, -1.0, 60, dtype=torch.float64)
    base_logprob = torch.full((gold.n_tokens,), -2.0, dtype=torch.float64)
    block = cross_validate_ranking(gold, unit, keys, options, base_options, base_logprob=base_logprob, folds=4, seed=3)
    fold = torch.tensor(folds_of(keys, 4, seed=3))
    count = torch.bincount(options.segment, minlength=60).double()

    def mass(option_logprobs: torch.Tensor) -> torch.Tensor:
        summed = torch.zeros(60, dtype=torch.float64).index_add_(0, options.segment, option_logprobs)
        return _gold_mass(summed / count, options.layout)[0]

    expected = {s: torch.zeros(20, dtype=torch.float64) for s in ("warm", "base", "static/fit", "dynamic/mean/paper")}
    for k in range(4):
        train = gold.subset(fold[unit] != k)
        v = torch.zeros(12, dtype=torch.float64).index_add_(0, train.index, train.delta) / train.n_tokens
        held = fold == k
        expected["warm"][held] = mass(options.terms.logprobs(0.0))[held]
        expected["base"][held] = _gold_mass(base_options / count, options.layout)[0][held]
        mu_s = fit_strengths(train.with_direction(v)).fit  # fitted on the training folds' gold tokens only
        expected["static/fit"][held] = mass(options.terms.with_direction(v).logprobs(mu_s))[held]
        mu = fit_strengths(train).select("mean/paper")
        expected["dynamic/mean/paper"][held] = mass(options.terms.logprobs(mu))[held]
    by_setting = {c["setting"]: c for c in block["candidates"]}
    for setting, values in expected.items():
        assert by_setting[setting]["estimate"] == pytest.approx(float(values.mean()), rel=1e-9)
    assert [c["setting"] for c in block["candidates"]] == [
        "warm",
        "base",
        *(f"static/{r}" for r in RULES),
        *(f"dynamic/{r}" for r in RULES),
    ]
    assert (block["measure"], block["unit"], block["n"], block["warm_vs_base"]) == ("rank", "example", 20, None)
    assert {"accuracy_delta", "accuracy_ci_low", "nll_delta", "nll_ci_high"} <= set(by_setting["static/fit"])


# --- the base model as a candidate --------------------------------------------------------------------------


def _meta() -> dict[str, Any]:
    return {"measure": "rank", "unit": "example", "folds": 5, "seed": 0, "n": 40}


def test_a_base_model_that_beats_warm_is_recommended_in_plain_words() -> None:
    warm = torch.tensor([0.2, 0.6] * 20, dtype=torch.float64)
    block = recommend(
        {"warm": warm, "base": warm + 0.3, "static/fit": warm + 0.1},
        {"static/fit": 2.0},
        base=None,
        meta=_meta(),
    )
    assert block["recommended"] == {"setting": "base", "mode": None, "rule": None, "mu": 0.0}
    assert block["reason"].startswith("the adapter hurts on this data: the base model (adapter off) gains +0.3000")
    assert block["reason"].endswith("use the base model, or warm-start again with a lower learning rate or fewer steps")
    assert recommended_words(block["recommended"]) == "the base model, adapter off (μ = 0)"
    gated = recommend(
        {"warm": warm, "base": warm + 0.3, "static/fit": warm + 0.1},
        {"static/fit": 2.0},
        base=None,
        meta=_meta(),
        columns={"nll": {"warm": warm, "base": warm - 1.0, "static/fit": warm}},
        gate="nll",
    )
    assert gated["recommended"]["setting"] == "static/fit"  # base's NLL is significantly worse: gated out
    assert "the base model (adapter off) beats warm alone too" in gated["reason"]


def _recommending_base(vector: Any) -> Any:
    rec = {"setting": "base", "mode": None, "rule": None, "mu": 0.0}
    validation = {"recommended": rec, "reason": "the adapter hurts", "candidates": []}
    return dataclasses.replace(vector, config=dataclasses.replace(vector.config, validation=validation))


def test_attach_with_a_base_recommendation_runs_the_base_model(tokenizer: Any) -> None:
    from test_crossval import _greedy, items

    from steerkit.compare import evaluate_settings

    vector = _recommending_base(steerkit.build(tiny_lora(tiny_llama()), None, pairs(8), tokenizer=tokenizer))
    warm = tiny_lora(tiny_llama())
    with steerkit.attach(vector, warm, tokenizer=tokenizer) as steered:
        assert steered.setting == "base"
        on_base = _greedy(steered, tokenizer)
    assert torch.equal(on_base, _greedy(tiny_llama(), tokenizer))
    assert not torch.equal(on_base, _greedy(warm, tokenizer))
    with steerkit.attach(vector, tiny_llama(), tokenizer=tokenizer) as steered:  # a plain model: no adapter loaded
        assert torch.equal(_greedy(steered, tokenizer), on_base)
    out = evaluate_settings(vector, warm, items(6), tokenizer=tokenizer, settings=["recommended", "base"])
    assert out["recommended"]["accuracy"] == out["base"]["accuracy"]


# --- old artifacts ------------------------------------------------------------------------------------------


def test_a_block_without_criterion_reads_as_nll_and_the_words_name_each_criterion() -> None:
    from tiny import make_vector

    from steerkit.config import SteerConfig

    warm = {"setting": "warm", "mode": None, "rule": None, "mu": 0.0}
    candidate = warm | {"estimate": 1.0, "delta_vs_warm": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    old = {"measure": "nll", "unit": "example", "folds": 5, "n": 40, "recommended": warm, "reason": "r"}
    old |= {"candidates": [candidate]}
    data = make_vector().config.to_dict() | {"validation": old}
    assert SteerConfig.from_dict(data).validation == old
    assert criterion_words(old) == "held-out NLL per token of the gold completions"
    rank = {"measure": "rank", "criterion": "rank", "distractors": {"source": "drawn", "k": 3}}
    assert criterion_words(rank) == (
        "held-out rank of each gold completion against up to 3 completions drawn from the other records: its "
        "softmax mass, scored per token"
    )
    own = rank | {"distractors": {"source": "record", "k": 3}}
    assert criterion_words(own) == (
        "held-out rank of each gold completion against the records' own wrong completions: its softmax mass, "
        "scored per token"
    )
    assert criterion_words({"measure": "mc2", "criterion": "metric:mc2"}) == "held-out mc2 on the items"


def test_conversational_pairs_rank_against_the_base_models_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_chat import TEMPLATE
    from tiny import tiny_tokenizer

    import steerkit.ranking as ranking

    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    made: list[Any] = []
    real = ranking.ranking_items
    monkeypatch.setattr(ranking, "ranking_items", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    chat = [
        {"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["completion"]}]}
        for p in pairs(12)
    ]
    block = steerkit.build(tiny_lora(tiny_llama()), None, chat, tokenizer=tok).config.validation
    assert block is not None and block["distractors"]["source"].startswith("base-answer")
    items, _ = made[-1]
    replies = [it["choices"][1] for it in items if len(it["choices"]) == 2]
    assert replies and all(isinstance(r, list) and r[0]["role"] == "assistant" for r in replies)
