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
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit.crossval import cross_validate_ranking
from steerkit.scoring import collect_setting_terms
from steerkit.terms import OptionTerms, TokenTerms
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
    gate: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The ``validation`` block by the ranking criterion (one extra pass of warm and base logits over the
    distractors; the gold completions' terms are the calibration pass's own).

    When no item can be made (fewer than two distinct completions) the block recommends warm alone and says why.
    """
    items, source = ranking_items(calibrated.pairs, keys)
    if items is None:
        return _no_ranking(source, len(calibrated.pairs), folds)
    wrong = [{"prompt": it["prompt"], "choices": it["choices"][1:], "label": 0} for it in items]
    found = collect_setting_terms(
        peft_model,
        wrong,
        tokenizer=tokenizer,
        vector=vector,
        settings=("base", "dynamic"),
        batch_size=batch_size,
        progress=progress,
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
        meta={"criterion": "rank", "distractors": {"source": source, "k": DISTRACTORS}},
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
