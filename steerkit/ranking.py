"""Build's ranking criterion: how each calibration prompt's gold completion ranks against wrong ones.

The held-out NLL of the gold tokens punishes the sharpening that makes the right answer rank first, while
decoding and multiple-choice scoring reward the rank. So :func:`steerkit.build` (``criterion="rank"``, the
default) turns every calibration pair into an item whose choices are the gold completion and its distractors:

- the record's own wrong completions when it has them: a preference record's ``rejected`` (TRL's
  ``prompt``/``chosen``/``rejected``), a multiple-choice item's other choices, or a pair's ``distractors``;
- otherwise :data:`DISTRACTORS` completions drawn, seeded, from the other calibration records (never one whose
  text is a completion of the same prompt; on a True/False task that is the other label).

The gold completions are the calibration pairs themselves, so their terms come from build's calibration pass;
only the distractors take one more pass of warm and base logits (:func:`steerkit.scoring.collect_setting_terms`:
each prompt runs once for all its distractors, a prefix every prompt shares runs once in all). The option terms
are what :func:`steerkit.crossval.cross_validate_ranking` re-scores under every candidate setting and fold.

Build's default criterion, ``"split"``, ranks against a harder distractor: the *base model's own greedy answer*
to the prompt (:func:`base_answers`; adapter off), used in place of the drawn ones wherever it is text that is not
empty and differs from the gold; the record's own wrong completions still come first. It then judges each mode by
the measure that does not favour it by construction (:func:`steerkit.gate.split_pick`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit._generation import left_padded
from steerkit._hf import AdapterSwitch
from steerkit.crossval import cross_validate_ranking
from steerkit.scoring import collect_setting_terms
from steerkit.terms import OptionTerms, TokenTerms
from steerkit.vector import SteeringVector

__all__ = ["CRITERIA", "rank_validation"]

#: How build's cross-validation measures a setting (:func:`steerkit.build`'s ``criterion``), the default first.
CRITERIA: tuple[str, ...] = ("split", "rank", "nll")
#: Distractors drawn per calibration prompt when its record brings none.
DISTRACTORS = 3
#: The base model's answers are cut at the gold completion's length plus this many tokens (and at most
#: :data:`ANSWER_MAX_TOKENS`), and are at least :data:`ANSWER_MIN_TOKENS` long (a model that ends its turn at
#: once gives no answer).
ANSWER_EXTRA_TOKENS, ANSWER_MAX_TOKENS, ANSWER_MIN_TOKENS = 4, 48, 2


def _key(completion: Any) -> str:
    return json.dumps(completion, sort_keys=True, ensure_ascii=False)


def ranking_items(
    pairs: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    k: int = DISTRACTORS,
    seed: int = 0,
    answers: Sequence[Any] | None = None,
) -> tuple[list[dict[str, Any]] | None, str]:
    """One item per pair (gold completion first, then its distractors), and where the distractors came from.

    Args:
        pairs: The calibration pairs (``prompt``, ``completion``, optionally ``distractors``).
        keys: Each pair's grouping key (its prompt): completions of pairs with the same key are never drawn.
        k: Distractors drawn for a pair without its own.
        seed: Seed of the draw.
        answers: One per pair, the base model's own answer (:func:`base_answers`) or ``None``: a pair without
            its own distractors ranks against its answer when there is one, else against the drawn ones (drawn
            either way, so the draw does not depend on the answers).

    Returns:
        ``(items, source)``: ``source`` names the kinds used, joined by ``+`` in this order: ``record`` (a
        record's own), ``base-answer``, ``drawn``; ``(None, reason)`` when some pair has no distractor to rank
        against (fewer than two distinct completions).
    """
    gold_of: dict[str, set[str]] = {}
    for pair, key in zip(pairs, keys, strict=True):
        gold_of.setdefault(key, set()).add(_key(pair["completion"]))
    pool: dict[str, Any] = {}
    for pair in pairs:
        pool.setdefault(_key(pair["completion"]), pair["completion"])
    generator = torch.Generator().manual_seed(seed)
    items, used = [], set()
    for i, (pair, key) in enumerate(zip(pairs, keys, strict=True)):
        wrong, kind = list(pair.get("distractors") or []), "record"
        if not wrong:
            text = isinstance(pair["completion"], str)
            options = [c for t, c in pool.items() if t not in gold_of[key] and isinstance(c, str) == text]
            order = torch.randperm(len(options), generator=generator)[:k].tolist()
            answer = None if answers is None else answers[i]
            wrong, kind = ([answer], "base-answer") if answer is not None else ([options[j] for j in order], "drawn")
        if not wrong:
            return None, (
                f"pair {i} has no distractor to rank against: the calibration data have fewer than 2 distinct "
                "completions"
            )
        used.add(kind)
        items.append({"prompt": pair["prompt"], "choices": [pair["completion"], *wrong], "label": 0})
    return items, "+".join(kind for kind in SOURCES if kind in used)


#: The kinds of distractor, in the order a ``source`` names them.
SOURCES: tuple[str, ...] = ("record", "base-answer", "drawn")


def base_answers(
    peft_model: Any,
    tokenizer: Any,
    pairs: Sequence[Mapping[str, Any]],
    encoded: Sequence[tuple[list[int], int]],
    *,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """The base model's own greedy answer to each calibration prompt (adapter off), or ``None`` where it is no
    distractor.

    Greedy from the prompt tokens build calibrated on (a conversational prompt rendered through the chat template,
    cut to ``max_length``), in left-padded batches of ``batch_size`` prompts, at least :data:`ANSWER_MIN_TOKENS` and
    at most the batch's longest gold completion plus :data:`ANSWER_EXTRA_TOKENS` new tokens (never over
    :data:`ANSWER_MAX_TOKENS`). The answer is the first non-empty line of the new text, led by the gold completion's
    leading whitespace; after a completion given as one assistant reply, the answer is such a reply. ``None`` for a
    pair that brings its own distractors (nothing is generated for it), whose completion is neither text nor one
    assistant reply, or whose answer is empty or equals the gold text (letter case aside): that pair ranks against
    its own or the drawn distractors instead.

    Args:
        peft_model: The warm model; its adapter is off while generating (the same weights as the base model).
        tokenizer: The model's tokenizer.
        pairs: The calibration pairs.
        encoded: Each pair's ``(ids, first completion position)`` (:func:`steerkit.data.encode_pair`).
        batch_size: Prompts per generation batch.
        progress: Called as ``progress(batch, batches)`` after each batch.
    """
    transformer = peft_model.get_base_model()
    device = next(transformer.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = _answer_batches(pairs, batch_size)
    out: list[Any] = [None] * len(pairs)
    was_training = transformer.training
    transformer.eval()
    try:
        with AdapterSwitch(peft_model).off(), torch.inference_mode():
            for step, chunk in enumerate(batches, 1):
                rows = [torch.tensor(encoded[i][0][: encoded[i][1]], dtype=torch.long) for i in chunk]
                enc = {k: v.to(device) for k, v in left_padded(rows, pad).items()}
                longest = max(len(encoded[i][0]) - encoded[i][1] for i in chunk) + ANSWER_EXTRA_TOKENS
                ids = transformer.generate(
                    **enc,
                    max_new_tokens=min(longest, ANSWER_MAX_TOKENS),
                    min_new_tokens=ANSWER_MIN_TOKENS,
                    do_sample=False,
                    pad_token_id=pad,
                )
                for i, row in zip(chunk, ids[:, enc["input_ids"].shape[1] :], strict=True):
                    out[i] = _answer(pairs[i]["completion"], tokenizer.decode(row, skip_special_tokens=True))
                if progress is not None:
                    progress(step, len(batches))
    finally:
        transformer.train(was_training)
    return out


def _answer_batches(pairs: Sequence[Mapping[str, Any]], batch_size: int) -> list[list[int]]:
    """The generation batches of :func:`base_answers` (pair indices): the pairs with a text completion or one
    assistant reply and no distractors of their own, ``batch_size`` at a time."""
    todo = [i for i, p in enumerate(pairs) if _gold_text(p["completion"]) is not None and not p.get("distractors")]
    return [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]


def _gold_text(completion: Any) -> str | None:
    """The text of a completion: itself, or the content of a single assistant reply (``None`` otherwise)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and len(completion) == 1 and completion[0].get("role") == "assistant":
        content = completion[0].get("content")
        return content if isinstance(content, str) else None
    return None


def _answer(gold: Any, generated: str) -> Any:
    """The first non-empty line of ``generated``, led by the gold text's leading whitespace, in the gold's form (text,
    or one assistant reply); ``None`` when that line is empty or is the gold text (letter case aside)."""
    text = _gold_text(gold)
    line = generated.strip().split("\n")[0].strip()
    if text is None or not line or line.casefold() == text.strip().casefold():
        return None
    answer = text[: len(text) - len(text.lstrip())] + line
    return answer if isinstance(gold, str) else [{**gold[0], "content": answer}]


@dataclasses.dataclass(frozen=True)
class Calibrated:
    """What build's calibration pass leaves for the cross-validation.

    Attributes:
        pairs: The pairs that had completion tokens, in order.
        used: Their ``(ids, first completion position)``.
        terms: The kept-entry terms of every gold token (direction δ̂), pairs one after another.
        base_logprob: ``[T]`` the base model's log-probability of each gold token.
    """

    pairs: list[dict[str, Any]]
    used: list[tuple[list[int], int]]
    terms: TokenTerms
    base_logprob: Tensor

    @functools.cached_property
    def token_unit(self) -> Tensor:
        """``[T]`` the pair each gold token belongs to (computed once)."""
        counts = torch.tensor([len(ids) - start for ids, start in self.used], dtype=torch.long)
        return torch.repeat_interleave(torch.arange(len(self.used)), counts)


def rank_validation(
    peft_model: Any,
    vector: SteeringVector,
    calibrated: Calibrated,
    *,
    keys: Sequence[str],
    tokenizer: Any,
    folds: int,
    batch_size: int,
    criterion: str = "rank",
    gate: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The ``validation`` block by a ranking criterion (one extra pass of warm and base logits over the
    distractors; the gold completions' terms are the calibration pass's own).

    ``criterion="split"`` first generates the base model's answers (:func:`base_answers`), ranks against them, and
    recommends by :func:`steerkit.gate.split_pick`; ``"rank"`` ranks against the drawn distractors and recommends
    the largest rank gain. When no item can be made (fewer than two distinct completions) the block recommends warm
    alone and says why. ``progress`` counts the generation's batches, then the ranking pass's sequences.
    """
    items, source = ranking_items(calibrated.pairs, keys)
    if items is None:  # fewer than two distinct completions: not even a base model's answer is ranked against
        return _no_ranking(source, len(calibrated.pairs), folds, criterion)
    offset = 0
    if criterion == "split":
        answers = base_answers(
            peft_model, tokenizer, calibrated.pairs, calibrated.used, batch_size=batch_size, progress=progress
        )
        offset = len(_answer_batches(calibrated.pairs, batch_size))
        items, source = ranking_items(calibrated.pairs, keys, answers=answers)
        assert items is not None  # an answer only ever replaces drawn distractors

    def going_on(step: int, total: int) -> None:
        if progress is not None:
            progress(offset + step, offset + total)

    wrong = [{"prompt": it["prompt"], "choices": it["choices"][1:], "label": 0} for it in items]
    found = collect_setting_terms(
        peft_model,
        wrong,
        tokenizer=tokenizer,
        vector=vector,
        settings=("base", "dynamic"),
        batch_size=batch_size,
        progress=going_on,
        bounded_memory=True,
    )
    options, base_options = _options(calibrated, found["dynamic"], found["base"].option_scores(0.0))
    return cross_validate_ranking(
        calibrated.terms,
        calibrated.token_unit,
        keys,
        options,
        base_options,
        base_logprob=calibrated.base_logprob,
        folds=folds,
        full=(vector.config.mu, vector.config.mu_static),
        gate=gate,
        picker="split" if criterion == "split" else "largest",
        meta={"criterion": criterion, "distractors": {"source": source, "k": DISTRACTORS}},
    )


def _options(calibrated: Calibrated, wrong: OptionTerms, wrong_base: Tensor) -> tuple[OptionTerms, Tensor]:
    """Option terms of every item (option ``i`` is pair ``i``'s gold completion, from the calibration pass; then
    the distractors) and each option's summed base log-probability."""
    n = len(calibrated.pairs)
    segment = torch.cat([calibrated.token_unit, n + wrong.segment])
    layout = [{"choices": [i, *(n + j for j in entry["choices"])]} for i, entry in enumerate(wrong.layout)]
    gold_base = torch.zeros(n, dtype=torch.float64).index_add_(
        0, calibrated.token_unit, calibrated.base_logprob.double()
    )
    terms = TokenTerms.cat([calibrated.terms, wrong.terms])
    options = OptionTerms(terms=terms, segment=segment, n_options=n + wrong.n_options, layout=layout)
    return options, torch.cat([gold_base, wrong_base.double()])


def _no_ranking(reason: str, n: int, folds: int, criterion: str) -> dict[str, Any]:
    """A block that recommends warm alone because nothing can be ranked."""
    warm = {"setting": "warm", "mode": None, "rule": None, "mu": 0.0}
    return {
        "measure": "rank",
        "criterion": criterion,
        "unit": "example",
        "folds": folds,
        "seed": 0,
        "n": n,
        "n_bootstrap": 0,
        "candidates": [{**warm, "estimate": 0.0, "delta_vs_warm": 0.0, "ci_low": 0.0, "ci_high": 0.0}],
        "warm_vs_base": None,
        "recommended": warm,
        "reason": f"no ranking possible: {reason}; recommending μ = 0",
    }
