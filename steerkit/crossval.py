"""Cross-validated choice of the decoding setting, behind a no-regression gate (the ``validation`` block).

A vector can be steered several ways: warm alone (μ = 0), static (``keep ⊙ v`` at μ_s) or dynamic (δ̂ at μ̄), each
strength chosen by one of the stored rules (four aggregates under two curvatures, and ``fit``) or, with
multiple-choice items, by a search on the items. Which one helps depends on the task and the adapter, and a
wrong default can make the user's model worse. So the calibration data is split into K folds (by example, or by
item; records sharing a prompt stay together), every candidate is fitted on K − 1 folds and measured on the one
held out, and the paired difference against warm alone gets a bootstrap interval over the held-out units:

- **pairs, by rank** (:func:`cross_validate_ranking`, :func:`steerkit.build`'s default criterion): each example's
  gold completion is scored against its distractors (:mod:`steerkit.ranking`) and the measure is its softmax mass
  over them, MC2-style, with accuracy and the gold-token NLL reported beside it; the base model is a candidate;
- **pairs, by NLL** (:func:`cross_validate_pairs`, ``build(criterion="nll")``): the measure is the held-out NLL of
  the gold completion tokens (mean per token, per example). For both pair criteria the static vector and every
  strength are refitted on the training folds from the kept-entry terms;
- **items** (:func:`cross_validate_items`, run by :func:`steerkit.tune.tune_mu`): the measure is the task metric
  (``mc2``, ``mc1``, ``accuracy`` or ``acc_norm``); the stored strengths are fixed, the searched one is searched
  on the training folds only; the base model is a candidate when its terms are given.

The gate (:mod:`steerkit.gate`): the recommendation is the candidate with the largest held-out gain whose interval
lies above zero; when none does it is warm alone (μ = 0), and the reason says so. The recommended μ is the chosen
rule refitted on all the calibration data. ``delta_vs_warm`` is always a gain (lower NLL, or a higher metric, is
positive).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit.config import MuStats
from steerkit.errors import InvalidOptionError
from steerkit.gate import recommend
from steerkit.stats import item_metrics
from steerkit.svdecode import AGGREGATORS, CURVATURES, aggregate_mu
from steerkit.terms import OptionTerms, TokenTerms, fit_mu

__all__ = [
    "MIN_UNITS_PER_FOLD",
    "cross_validate_items",
    "cross_validate_pairs",
    "cross_validate_ranking",
    "fit_strengths",
    "group_keys",
]

#: The stored strength rules every steered candidate is tried with, in table order.
RULES: tuple[str, ...] = (*(f"{a}/{c}" for c in CURVATURES for a in AGGREGATORS), "fit")
#: Cross-validation needs at least this many held-out units (examples or items) per fold.
MIN_UNITS_PER_FOLD = 2


def group_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """A grouping key per record (its prompt): records sharing a prompt always land in the same fold."""
    return [json.dumps(r.get("prompt"), sort_keys=True, ensure_ascii=False) for r in records]


def folds_of(keys: Sequence[str], k: int, *, seed: int = 0) -> list[int]:
    """The fold (``0..k-1``) of every unit: distinct keys in a seeded random order, dealt out round-robin.

    The assignment depends on the seed and the set of keys only. Raises :class:`InvalidOptionError` when there
    are fewer than ``k · MIN_UNITS_PER_FOLD`` distinct keys.
    """
    distinct = sorted(set(keys))
    if k < 2 or len(distinct) < k * MIN_UNITS_PER_FOLD:
        raise InvalidOptionError(
            f"{k}-fold cross-validation needs at least {max(k, 2) * MIN_UNITS_PER_FOLD} distinct prompts, "
            f"got {len(distinct)}",
            hint="give more calibration data, or fewer folds",
            got=len(distinct),
        )
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    fold = {distinct[i]: position % k for position, i in enumerate(order)}
    return [fold[key] for key in keys]


def fit_strengths(terms: TokenTerms, label: str = "trimmed/exact") -> MuStats:
    """Every stored strength (four aggregates under both curvatures, and ``fit``) of ``terms``; value by ``label``."""
    tables: dict[str, dict[str, float]] = {}
    for curvature in CURVATURES:
        num, den = terms.mu_terms(curvature=curvature)  # type: ignore[arg-type]
        tables[curvature] = {how: aggregate_mu(num, den, how=how) for how in AGGREGATORS}  # type: ignore[arg-type]
    stats = MuStats(value=0.0, chosen_by=label, paper=tables["paper"], exact=tables["exact"], fit=fit_mu(terms))
    return dataclasses.replace(stats, value=stats.select(label))


def _per_unit(values: Tensor, unit: Tensor, n_units: int) -> Tensor:
    """Mean of per-token ``values`` per unit."""
    total = torch.zeros(n_units, dtype=torch.float64).index_add_(0, unit, values)
    count = torch.zeros(n_units, dtype=torch.float64).index_add_(0, unit, torch.ones_like(values))
    return total / count.clamp(min=1.0)


def cross_validate_pairs(
    terms: TokenTerms,
    token_unit: Tensor,
    keys: Sequence[str],
    *,
    base_logprob: Tensor | None = None,
    folds: int = 5,
    seed: int = 0,
    full: tuple[MuStats, MuStats] | None = None,
) -> dict[str, Any]:
    """K-fold cross-validation of warm, static and dynamic on calibration pairs, by held-out gold-token NLL.

    Args:
        terms: The kept-entry terms of every calibration token (direction δ̂), tokens in unit order.
        token_unit: ``[T]`` the example (``0..len(keys)-1``) each token belongs to.
        keys: A grouping key per example (:func:`group_keys`).
        base_logprob: ``[T]`` the base model's log-probability of each gold token (for the warm-vs-base note).
        folds: K.
        seed: Seed of the fold assignment and the bootstrap.
        full: ``(mu, mu_static)`` fitted on all the data: the recommended μ comes from here (refitted if absent).

    Returns:
        The ``validation`` block (see :func:`recommend` for its shape).
    """
    n_units = len(keys)
    width = int(terms.index.max()) + 1 if terms.index.numel() else 1
    fold = torch.tensor(folds_of(keys, folds, seed=seed), dtype=torch.long)
    token_fold = fold[token_unit]
    nll: dict[str, Tensor] = {}  # per-token held-out NLL of each candidate
    for k in range(folds):
        train_terms = terms.subset(token_fold != k)
        held = token_fold == k
        test_terms = terms.subset(held)
        dyn = fit_strengths(train_terms)
        v = _mean_direction(train_terms, width)
        sta = fit_strengths(train_terms.with_direction(v))
        test_static = test_terms.with_direction(v)
        scored: dict[str, Tensor] = {"warm": -test_terms.logprobs(0.0)}
        for mode, stats, held_terms in (("static", sta, test_static), ("dynamic", dyn, test_terms)):
            for rule in RULES:
                scored[f"{mode}/{rule}"] = -held_terms.logprobs(stats.select(rule))
        for name, values in scored.items():
            nll.setdefault(name, torch.zeros(terms.n_tokens, dtype=torch.float64))[held] = values
    per_unit = {name: -_per_unit(values, token_unit, n_units) for name, values in nll.items()}  # higher is better
    base = None if base_logprob is None else _per_unit(base_logprob.double(), token_unit, n_units)
    mu, mu_static = full if full is not None else (fit_strengths(terms), _static_strengths(terms))
    strengths = {f"static/{r}": mu_static.select(r) for r in RULES} | {f"dynamic/{r}": mu.select(r) for r in RULES}
    return recommend(
        per_unit,
        strengths,
        base=base,
        meta={"measure": "nll", "criterion": "nll", "unit": "example", "folds": folds, "seed": seed, "n": n_units},
        seed=seed,
    )


def cross_validate_ranking(
    terms: TokenTerms,
    token_unit: Tensor,
    keys: Sequence[str],
    options: OptionTerms,
    base_options: Tensor,
    *,
    base_logprob: Tensor,
    folds: int = 5,
    seed: int = 0,
    full: tuple[MuStats, MuStats] | None = None,
    gate: str | None = None,
    picker: str = "largest",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """K-fold cross-validation of base, warm, static and dynamic by how each example's gold completion ranks.

    Every example is an item whose option 0 is the gold completion and the others its distractors. An option's
    score is its mean log-probability per token; the measure is the softmax mass of the gold option over the
    item's options (MC2-style), with accuracy (the gold option scores highest) and the gold tokens' NLL
    reported beside it. The static vector and every strength are refitted on the training folds' gold tokens.

    Args:
        terms: The kept-entry terms of every calibration (gold) token, direction δ̂, tokens in unit order.
        token_unit: ``[T]`` the example of each gold token.
        keys: A grouping key per example (:func:`group_keys`).
        options: The option terms of the items (direction δ̂; one item per example, gold option first).
        base_options: ``[n_options]`` each option's base (adapter off) summed log-probability.
        base_logprob: ``[T]`` the base model's log-probability of each gold token.
        folds: K.
        seed: Seed of the fold assignment and the bootstrap.
        full: ``(mu, mu_static)`` fitted on all the data: the recommended μ comes from here.
        gate: ``"nll"``: a candidate qualifies only if its held-out NLL is not significantly worse than warm's.
        picker: How the recommendation is picked from the candidates (:func:`steerkit.gate.recommend`).
        meta: Extra keys recorded in the block (the distractor source and count).

    Returns:
        The ``validation`` block, ``measure`` ``"rank"`` (see :func:`recommend`).
    """
    n_units = len(keys)
    width = int(max(terms.index.max(), options.terms.index.max())) + 1 if terms.index.numel() else 1
    fold = torch.tensor(folds_of(keys, folds, seed=seed), dtype=torch.long)
    token_fold = fold[token_unit]
    count = torch.bincount(options.segment, minlength=options.n_options).double().clamp(min=1.0)
    table: dict[str, dict[str, Tensor]] = {m: {} for m in ("rank", "accuracy", "nll")}

    def put(name: str, k: int, option_scores: Tensor, gold_nll: Tensor) -> None:
        held = fold == k
        mass, hit = _gold_mass(option_scores / count, options.layout)
        for column, values in (("rank", mass), ("accuracy", hit)):
            table[column].setdefault(name, torch.zeros(n_units, dtype=torch.float64))[held] = values[held]
        table["nll"].setdefault(name, torch.zeros(terms.n_tokens, dtype=torch.float64))[token_fold == k] = gold_nll

    segment_sum = _segment_sum(options)
    base_scores = base_options.double()
    for k in range(folds):
        train, test = terms.subset(token_fold != k), terms.subset(token_fold == k)
        v = _mean_direction(train, width)
        put("base", k, base_scores, -base_logprob.double()[token_fold == k])
        put("warm", k, segment_sum(options.terms.logprobs(0.0)), -test.logprobs(0.0))
        static_options, static_test = options.terms.with_direction(v), test.with_direction(v)
        for mode, stats, o_terms, g_terms in (
            ("static", fit_strengths(train.with_direction(v)), static_options, static_test),
            ("dynamic", fit_strengths(train), options.terms, test),
        ):
            for rule in RULES:
                strength = stats.select(rule)
                put(f"{mode}/{rule}", k, segment_sum(o_terms.logprobs(strength)), -g_terms.logprobs(strength))
    nll = {name: -_per_unit(values, token_unit, n_units) for name, values in table["nll"].items()}
    mu, mu_static = full if full is not None else (fit_strengths(terms), _static_strengths(terms))
    strengths = {f"static/{r}": mu_static.select(r) for r in RULES} | {f"dynamic/{r}": mu.select(r) for r in RULES}
    rank = {"warm": table["rank"]["warm"], **{s: v for s, v in table["rank"].items() if s != "warm"}}
    return recommend(
        rank,
        strengths,
        base=None,
        meta={"measure": "rank", "unit": "example", "folds": folds, "seed": seed, "n": n_units, **(meta or {})},
        seed=seed,
        columns={"accuracy": table["accuracy"], "nll": nll},
        gate=gate,
        picker=picker,
    )


def _segment_sum(options: OptionTerms) -> Callable[[Tensor], Tensor]:
    """Per-token log-probabilities ``[T]`` → summed per option ``[n_options]``."""

    def total(values: Tensor) -> Tensor:
        return torch.zeros(options.n_options, dtype=torch.float64).index_add_(0, options.segment, values)

    return total


def _gold_mass(scores: Tensor, layout: Sequence[Mapping[str, list[int]]]) -> tuple[Tensor, Tensor]:
    """Per item: the softmax mass of option 0 (the gold completion) over its options, and whether it ranks first
    (ties count as misses). A gold score of ``−inf`` has mass 0."""
    mass, hit = torch.zeros(len(layout), dtype=torch.float64), torch.zeros(len(layout), dtype=torch.float64)
    for i, entry in enumerate(layout):
        s = scores[entry["choices"]]
        if torch.isfinite(s[0]):
            mass[i] = torch.exp(s[0] - torch.logsumexp(s, dim=0))
            hit[i] = float(bool((s[0] > s[1:]).all()))
    return mass, hit


def _mean_direction(terms: TokenTerms, width: int) -> Tensor:
    """The static vector of these tokens: ``mean_t δ̂_t`` (δ̂ is zero outside the kept entries)."""
    v = torch.zeros(width, dtype=torch.float64).index_add_(0, terms.index, terms.delta)
    return v / max(terms.n_tokens, 1)


def _static_strengths(terms: TokenTerms) -> MuStats:
    width = int(terms.index.max()) + 1 if terms.index.numel() else 1
    return fit_strengths(terms.with_direction(_mean_direction(terms, width)))


def cross_validate_items(
    terms: Mapping[str, OptionTerms],
    items: Sequence[Mapping[str, Any]],
    *,
    metric: str,
    strengths: Mapping[str, MuStats],
    search: Callable[[OptionTerms, Sequence[int]], float] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """K-fold cross-validation of base, warm, static and dynamic on calibration items, by the task metric.

    Args:
        terms: ``{"warm", "static", "dynamic"}`` option terms of ``items``; a ``"base"`` entry makes the base
            model (adapter off) a candidate.
        items: The calibration items.
        metric: ``"mc2"``, ``"mc1"``, ``"accuracy"`` or ``"acc_norm"``.
        strengths: ``{"static": mu_static, "dynamic": mu}``: the vector's stored strengths (fixed in every fold).
        search: ``search(terms, item_indices) → μ``: the μ search, run on each training fold (and on all items
            for the recommended μ); ``None`` leaves the searched candidates out.
        folds: K.
        seed: Seed of the fold assignment and the bootstrap.

    Returns:
        The ``validation`` block.
    """
    fold = folds_of(group_keys(items), folds, seed=seed)

    def values(t: OptionTerms, mu: float) -> list[float]:
        return [float(v) for v in item_metrics(items, t.item_scores(mu))[metric]]

    per_unit: dict[str, Tensor] = {"warm": torch.tensor(values(terms["warm"], 0.0), dtype=torch.float64)}
    chosen: dict[str, float] = {}
    for mode in ("static", "dynamic"):
        for rule in RULES:
            chosen[f"{mode}/{rule}"] = strengths[mode].select(rule)
            per_unit[f"{mode}/{rule}"] = torch.tensor(values(terms[mode], chosen[f"{mode}/{rule}"]))
        if search is not None:
            out = torch.zeros(len(items), dtype=torch.float64)
            for k in range(folds):
                mu = search(terms[mode], [i for i, f in enumerate(fold) if f != k])
                held = [i for i, f in enumerate(fold) if f == k]
                out[held] = torch.tensor(values(terms[mode], mu), dtype=torch.float64)[held]
            per_unit[f"{mode}/search:{metric}"] = out
            chosen[f"{mode}/search:{metric}"] = search(terms[mode], list(range(len(items))))
    if "base" in terms:  # the base model (adapter off) is a candidate like the others
        per_unit["base"] = torch.tensor(values(terms["base"], 0.0), dtype=torch.float64)
    meta = {"measure": metric, "criterion": f"metric:{metric}", "unit": "item", "folds": folds, "seed": seed}
    return recommend(per_unit, chosen, base=None, meta={**meta, "n": len(items)}, seed=seed)
