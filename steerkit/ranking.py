"""Build's ranking criterion: how each calibration prompt's gold completion ranks against wrong ones.

The held-out NLL of the gold tokens punishes the sharpening that makes the right answer rank first, while
decoding and multiple-choice scoring reward the rank. So :func:`steerkit.build` (``criterion="rank"``, the
default) turns every calibration pair into an item whose choices are the gold completion and its distractors:

- the record's own wrong completions when it has them: a preference record's ``rejected`` (TRL's
  ``prompt``/``chosen``/``rejected``), a multiple-choice item's other choices, or a pair's ``distractors``;
- otherwise :data:`DISTRACTORS` completions drawn, seeded, from the other calibration records (never one whose
  text is a completion of the same prompt; on a True/False task that is the other label).

One pass of warm and base logits over these items (:func:`steerkit.scoring.collect_setting_terms`, prompts run
once and shared by their options) gives the option terms that :func:`steerkit.crossval.cross_validate_ranking`
re-scores under every candidate setting and fold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from steerkit.crossval import cross_validate_ranking
from steerkit.scoring import collect_setting_terms
from steerkit.terms import TokenTerms
from steerkit.vector import SteeringVector

__all__ = ["rank_validation"]

#: Distractors drawn per calibration prompt when its record brings none.
DISTRACTORS = 3


def _key(completion: Any) -> str:
    return json.dumps(completion, sort_keys=True, ensure_ascii=False)


def ranking_items(
    pairs: Sequence[Mapping[str, Any]], keys: Sequence[str], *, k: int = DISTRACTORS, seed: int = 0
) -> tuple[list[dict[str, Any]] | None, str]:
    """One item per pair (gold completion first, then its distractors), and where the distractors came from.

    Args:
        pairs: The calibration pairs (``prompt``, ``completion``, optionally ``distractors``).
        keys: Each pair's grouping key (its prompt): completions of pairs with the same key are never drawn.
        k: Distractors drawn for a pair without its own.
        seed: Seed of the draw.

    Returns:
        ``(items, source)``: ``source`` is ``"record"`` (every pair brought its own), ``"drawn"`` or
        ``"record+drawn"``; ``(None, reason)`` when some pair has no distractor to rank against (fewer than two
        distinct completions).
    """
    gold_of: dict[str, set[str]] = {}
    for pair, key in zip(pairs, keys, strict=True):
        gold_of.setdefault(key, set()).add(_key(pair["completion"]))
    pool: dict[str, Any] = {}
    for pair in pairs:
        pool.setdefault(_key(pair["completion"]), pair["completion"])
    generator = torch.Generator().manual_seed(seed)
    items, own, drawn = [], 0, 0
    for i, (pair, key) in enumerate(zip(pairs, keys, strict=True)):
        wrong = list(pair.get("distractors") or [])
        own += bool(wrong)
        if not wrong:
            text = isinstance(pair["completion"], str)
            options = [c for t, c in pool.items() if t not in gold_of[key] and isinstance(c, str) == text]
            order = torch.randperm(len(options), generator=generator)[:k].tolist()
            wrong = [options[j] for j in order]
            drawn += 1
        if not wrong:
            return None, (
                f"pair {i} has no distractor to rank against: the calibration data have fewer than 2 distinct "
                "completions"
            )
        items.append({"prompt": pair["prompt"], "choices": [pair["completion"], *wrong], "label": 0})
    source = "record" if not drawn else "drawn" if not own else "record+drawn"
    return items, source


def rank_validation(
    peft_model: Any,
    vector: SteeringVector,
    pairs: Sequence[Mapping[str, Any]],
    *,
    terms: TokenTerms,
    token_unit: torch.Tensor,
    keys: Sequence[str],
    base_logprob: torch.Tensor,
    tokenizer: Any,
    folds: int,
    batch_size: int,
    gate: str | None = None,
) -> dict[str, Any]:
    """The ``validation`` block by the ranking criterion (one extra pass of warm and base logits over the items).

    When no item can be made (fewer than two distinct completions) the block recommends warm alone and says why.
    """
    items, source = ranking_items(pairs, keys)
    if items is None:
        return _no_ranking(source, len(pairs), folds)
    found = collect_setting_terms(
        peft_model, items, tokenizer=tokenizer, vector=vector, settings=("base", "dynamic"), batch_size=batch_size
    )
    return cross_validate_ranking(
        terms,
        token_unit,
        keys,
        found["dynamic"],
        found["base"].option_scores(0.0),
        base_logprob=base_logprob,
        folds=folds,
        full=(vector.config.mu, vector.config.mu_static),
        gate=gate,
        meta={"criterion": "rank", "distractors": {"source": source, "k": DISTRACTORS}},
    )


def _no_ranking(reason: str, n: int, folds: int) -> dict[str, Any]:
    """A block that recommends warm alone because nothing can be ranked."""
    warm = {"setting": "warm", "mode": None, "rule": None, "mu": 0.0}
    return {
        "measure": "rank",
        "criterion": "rank",
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
