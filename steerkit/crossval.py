"""Cross-validated choice of the decoding setting, behind a no-regression gate (the ``validation`` block).

A vector can be steered several ways: warm alone (μ = 0), static (``keep ⊙ v`` at μ_s) or dynamic (δ̂ at μ̄), each
strength chosen by one of the stored rules (four aggregates under two curvatures, and ``fit``) or, with
multiple-choice items, by a search on the items. Which one helps depends on the task and the adapter, and a
wrong default can make the user's model worse. So the calibration data is split into K folds (by example, or by
item; records sharing a prompt stay together), every candidate is fitted on K − 1 folds and measured on the one
held out, and the paired difference against warm alone gets a bootstrap interval over the held-out units:

- **pairs** (:func:`cross_validate_pairs`, run by :func:`steerkit.build`): the measure is the held-out NLL of the
  gold completion tokens (mean per token, per example); the static vector and every strength are refitted on the
  training folds from the kept-entry terms, so no extra forward pass is needed;
- **items** (:func:`cross_validate_items`, run by :func:`steerkit.tune.tune_mu`): the measure is the task metric
  (``mc2``, ``mc1``, ``accuracy`` or ``acc_norm``); the stored strengths are fixed, the searched one is searched
  on the training folds only.

The gate: the recommendation is the candidate with the largest held-out gain whose interval lies above zero;
when none does it is warm alone (μ = 0), and the reason says so. The recommended μ is the chosen rule refitted on
all the calibration data. ``delta_vs_warm`` is always a gain (lower NLL, or a higher metric, is positive).
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
from steerkit.stats import item_metrics, paired_bootstrap
from steerkit.svdecode import AGGREGATORS, CURVATURES, aggregate_mu
from steerkit.terms import OptionTerms, TokenTerms, fit_mu

__all__ = ["MIN_UNITS_PER_FOLD", "cross_validate_items", "cross_validate_pairs", "fit_strengths", "group_keys"]

#: The stored strength rules every steered candidate is tried with, in table order.
RULES: tuple[str, ...] = (*(f"{a}/{c}" for c in CURVATURES for a in AGGREGATORS), "fit")
#: Cross-validation needs at least this many held-out units (examples or items) per fold.
MIN_UNITS_PER_FOLD = 2
N_BOOTSTRAP = 2000


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
        meta={"measure": "nll", "unit": "example", "folds": folds, "seed": seed, "n": n_units},
        seed=seed,
    )


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
    """K-fold cross-validation of warm, static and dynamic on calibration items, by the task metric.

    Args:
        terms: ``{"warm", "static", "dynamic"}`` option terms of ``items`` (optionally ``"base"``).
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
    base = torch.tensor(values(terms["base"], 0.0), dtype=torch.float64) if "base" in terms else None
    return recommend(
        per_unit,
        chosen,
        base=base,
        meta={"measure": metric, "unit": "item", "folds": folds, "seed": seed, "n": len(items)},
        seed=seed,
    )


def recommend(
    per_unit: Mapping[str, Tensor],
    strengths: Mapping[str, float],
    *,
    base: Tensor | None,
    meta: Mapping[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """The ``validation`` block from held-out per-unit values (higher is better) of every candidate.

    Returns:
        ``{"measure", "unit", "folds", "seed", "n", "n_bootstrap", "candidates": [{"setting", "mode", "rule",
        "mu", "estimate", "delta_vs_warm", "ci_low", "ci_high"}, ...], "warm_vs_base": {...} | None,
        "recommended": {"setting", "mode", "rule", "mu"}, "reason"}``. For ``nll`` the estimate is the held-out
        NLL per token (lower is better); ``delta_vs_warm`` is always the gain over warm alone.
    """
    warm = per_unit["warm"]
    sign = -1.0 if meta["measure"] == "nll" else 1.0
    candidates: list[dict[str, Any]] = []
    for setting, values in per_unit.items():
        mode, _, rule = setting.partition("/")
        entry: dict[str, Any] = {
            "setting": setting,
            "mode": None if setting == "warm" else mode,
            "rule": rule or None,
            "mu": 0.0 if setting == "warm" else float(strengths[setting]),
            "estimate": sign * float(values.mean()),
            "delta_vs_warm": 0.0,
            "ci_low": 0.0,
            "ci_high": 0.0,
        }
        if setting != "warm":
            d = paired_bootstrap(values, warm, n_bootstrap=N_BOOTSTRAP, seed=seed)
            entry.update(delta_vs_warm=d["difference"], ci_low=d["ci_low"], ci_high=d["ci_high"])
        candidates.append(entry)
    warm_vs_base = None
    if base is not None:
        d = paired_bootstrap(warm, base, n_bootstrap=N_BOOTSTRAP, seed=seed)
        warm_vs_base = {
            "base_estimate": sign * float(base.mean()),
            "delta": d["difference"],
            "ci_low": d["ci_low"],
            "ci_high": d["ci_high"],
        }
    steered = [c for c in candidates if c["setting"] != "warm"]
    helping = [c for c in steered if c["ci_low"] > 0.0]
    unit = "examples" if meta["unit"] == "example" else "items"
    what = "held-out NLL per token" if meta["measure"] == "nll" else f"held-out {meta['measure']}"
    if helping:
        best = max(helping, key=lambda c: c["delta_vs_warm"])  # max keeps the first of equals: table order
        reason = (
            f"{best['setting']} gains {_signed(best['delta_vs_warm'])} {what} over warm alone "
            f"[{_signed(best['ci_low'])}, {_signed(best['ci_high'])}] on {meta['n']} {unit}, "
            f"{meta['folds']}-fold: the largest gain whose interval lies above zero"
        )
    else:
        best = candidates[0]
        top = max(steered, key=lambda c: c["delta_vs_warm"]) if steered else None
        reason = "steering did not help on this data: no candidate beats warm alone with an interval above zero"
        if top is not None:
            reason += (
                f" (best: {top['setting']}, {_signed(top['delta_vs_warm'])} "
                f"[{_signed(top['ci_low'])}, {_signed(top['ci_high'])}])"
            )
        reason += "; recommending μ = 0"
    if warm_vs_base is not None and warm_vs_base["ci_high"] < 0.0:
        reason += (
            f"; the warm model is worse than base on this data ({_signed(warm_vs_base['delta'])} "
            f"[{_signed(warm_vs_base['ci_low'])}, {_signed(warm_vs_base['ci_high'])}])"
        )
    return {
        **meta,
        "n_bootstrap": N_BOOTSTRAP,
        "candidates": candidates,
        "warm_vs_base": warm_vs_base,
        "recommended": {k: best[k] for k in ("setting", "mode", "rule", "mu")},
        "reason": reason,
    }


def _signed(x: float) -> str:
    return f"{x:+.4f}"
