"""Choosing the steering strength μ for a task metric on multiple-choice calibration items (docs/concepts.md).

The forward passes run once: per option token only the kept entries (:class:`~steerkit.terms.TokenTerms`)
are cached, so each candidate μ is scored without touching the model. The search is 1-D: a log-spaced grid
of both signs (``0`` and ``±10^k``, ``k`` in ``linspace(−2, 2, 17)``), then two rounds of a finer linear grid
between the best point's neighbours. The metric is maximised; ties go to the smaller ``|μ|`` (then to the
smaller μ), so a flat metric keeps μ = 0. Never tune on test data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerkit._hf import is_peft
from steerkit.crossval import MIN_UNITS_PER_FOLD, cross_validate_items, group_keys
from steerkit.data import data_sha256
from steerkit.errors import InvalidOptionError
from steerkit.scoring import collect_option_terms, collect_setting_terms
from steerkit.stats import METRICS, headline_metric, item_metrics
from steerkit.steering import Steering
from steerkit.terms import OptionTerms
from steerkit.vector import SteeringVector

__all__ = ["MuSearch", "tune_and_validate", "tune_mu"]

Metric = Literal["mc2", "mc1", "accuracy", "acc_norm"]
REFINE_POINTS = 17
REFINE_ROUNDS = 2


def default_grid() -> list[float]:
    """``0`` and ``±10^k`` for ``k`` in ``linspace(−2, 2, 17)``: 35 strengths from −100 to 100, sorted."""
    magnitudes = [float(10.0**k) for k in torch.linspace(-2.0, 2.0, 17, dtype=torch.float64).tolist()]
    return sorted([0.0, *magnitudes, *(-m for m in magnitudes)])


@dataclass(frozen=True)
class MuSearch:
    """The outcome of a μ search.

    Attributes:
        best: The chosen μ.
        value: The metric at ``best``.
        metric: The metric maximised.
        grid: ``(μ, metric)`` for every point of the initial grid, in grid order.
        refined: ``(μ, metric)`` for the refinement points, in evaluation order.
        data_sha256: :func:`steerkit.data.data_sha256` of the calibration items.
        mode: Which strength was searched: ``"dynamic"`` (μ̄) or ``"static"`` (μ_s).
    """

    best: float
    value: float
    metric: str
    grid: list[tuple[float, float]]
    refined: list[tuple[float, float]]
    data_sha256: str
    mode: str = "dynamic"

    def apply(self, vector: SteeringVector) -> SteeringVector:
        """``vector`` with the found μ as its default (μ_s for a static search), recording how and on what.

        Example:
            >>> search_mu(vector, model, items, tokenizer=tok).apply(vector).config.mu.chosen_by  # doctest: +SKIP
            'search:mc2'
        """
        return vector.with_mu(
            self.best, static=self.mode == "static", chosen_by=f"search:{self.metric}", chosen_on=self.data_sha256
        )


def metric_at(
    terms: OptionTerms,
    items: Sequence[Mapping[str, Any]],
    mu: float,
    metric: str,
    subset: Sequence[int] | None = None,
) -> float:
    """The mean of ``metric`` over the items (or the items at ``subset``) at strength ``mu``, from cached option
    terms (no forward pass)."""
    values = item_metrics(items, terms.item_scores(mu))[metric]
    chosen = [values[i] for i in subset] if subset is not None else values
    kept = [v for v in chosen if v is not None]
    return float(sum(kept) / len(kept))


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``(μ, value)`` ``a`` beats ``b``: higher value, then smaller ``|μ|``, then smaller μ."""
    return (-a[1], abs(a[0]), a[0]) < (-b[1], abs(b[0]), b[0])


def _best(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    best = points[0]
    for p in points[1:]:
        if _better(p, best):
            best = p
    return best


def _check_metric(metric: str | None, items: Sequence[Mapping[str, Any]]) -> Metric:
    """``metric``, or the item set's headline metric when it is ``None`` (:func:`steerkit.stats.headline_metric`)."""
    if metric is None:
        return headline_metric(items)[0]  # type: ignore[return-value]
    if metric not in METRICS:
        raise InvalidOptionError(f"unknown metric {metric!r}", hint=f"use one of: {', '.join(METRICS)}", got=metric)
    if metric in ("mc1", "mc2") and not any("mc2_choices" in item for item in items):
        raise InvalidOptionError(
            f"metric {metric!r} needs items with an MC2 set ('mc2_choices', 'mc2_labels'), as TruthfulQA has",
            hint="use metric='accuracy' for plain multiple-choice items",
            got=metric,
        )
    return metric  # type: ignore[return-value]


def search_mu(
    vector: SteeringVector,
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    metric: Metric | None = None,
    mode: Literal["dynamic", "static"] = "dynamic",
    grid: Sequence[float] | None = None,
    refine: bool = True,
    batch_size: int = 8,
    show_progress: bool = False,
    strict: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> MuSearch:
    """Search the μ that maximises a multiple-choice metric on calibration items.

    Args:
        vector: The steering vector.
        model: The model to attach to (a plain base model loads the vector's adapter in dynamic mode).
        items: Calibration items (schema in :mod:`steerkit.evaluate`).
        tokenizer: The model's tokenizer.
        metric: ``"mc2"``, ``"mc1"`` (TruthfulQA items), ``"accuracy"`` or ``"acc_norm"``; ``None`` (the default)
            is the items' headline metric (:func:`steerkit.stats.headline_metric`: ``mc2`` with an MC2 set,
            ``acc_norm`` when the choices differ in length, else ``accuracy``).
        mode: Which strength to search: dynamic μ̄ or static μ_s.
        grid: Strengths to try first (default :func:`default_grid`).
        refine: Refine around the best grid point (two rounds of a 17-point linear grid between neighbours).
        batch_size: Sequences per forward pass.
        show_progress: Progress bar for the forward passes.
        strict: Refuse a tokenizer that differs from the vector's.
        progress: Called as ``progress(done, total)`` (sequences) after each batch of the forward passes.

    Returns:
        A :class:`MuSearch` with the chosen μ and every evaluated point.

    Raises:
        InvalidOptionError: Unknown metric, MC1/MC2 without MC2 sets, or an empty grid.
    """
    metric = _check_metric(metric, items)
    points = sorted({float(g) for g in (default_grid() if grid is None else grid)})
    if not points:
        raise InvalidOptionError("the μ grid is empty", hint="give at least one strength, or grid=None")
    terms = collect_option_terms(
        model,
        items,
        tokenizer=tokenizer,
        steering=Steering(vector, mode=mode, mu=0.0),
        batch_size=batch_size,
        strict=strict,
        show_progress=show_progress,
        progress=progress,
    )
    found = search_terms(terms, items, metric=metric, grid=points, refine=refine)
    return dataclasses.replace(found, mode=mode)


def search_terms(
    terms: OptionTerms,
    items: Sequence[Mapping[str, Any]],
    *,
    metric: Metric | None = None,
    grid: Sequence[float] | None = None,
    refine: bool = True,
    subset: Sequence[int] | None = None,
) -> MuSearch:
    """The μ search of :func:`search_mu` on option terms already collected (no forward pass).

    Args:
        terms: :func:`~steerkit.scoring.collect_option_terms` of ``items`` under the steering to tune.
        items: The items the terms were collected for.
        metric: ``"mc2"``, ``"mc1"`` (TruthfulQA items), ``"accuracy"`` or ``"acc_norm"``; ``None`` (the default)
            is the items' headline metric (:func:`steerkit.stats.headline_metric`: ``mc2`` with an MC2 set,
            ``acc_norm`` when the choices differ in length, else ``accuracy``).
        grid: Strengths to try first (default :func:`default_grid`).
        refine: Refine around the best grid point.
        subset: Search on the items at these indices only (a cross-validation training fold).

    Returns:
        A :class:`MuSearch`.

    Raises:
        InvalidOptionError: Unknown metric, MC1/MC2 without MC2 sets, or an empty grid.
    """
    metric = _check_metric(metric, items)
    points = sorted({float(g) for g in (default_grid() if grid is None else grid)})
    if not points:
        raise InvalidOptionError("the μ grid is empty", hint="give at least one strength, or grid=None")
    table = [(mu, metric_at(terms, items, mu, metric, subset)) for mu in points]
    best = _best(table)
    refined: list[tuple[float, float]] = []
    if refine and len(points) > 1:
        lo_hi = points
        for _ in range(REFINE_ROUNDS):
            i = (
                lo_hi.index(best[0])
                if best[0] in lo_hi
                else min(range(len(lo_hi)), key=lambda k: abs(lo_hi[k] - best[0]))
            )
            lo, hi = lo_hi[max(i - 1, 0)], lo_hi[min(i + 1, len(lo_hi) - 1)]
            local = torch.linspace(lo, hi, REFINE_POINTS, dtype=torch.float64).tolist()
            seen = {p for p, _ in table} | {p for p, _ in refined}
            new = [(mu, metric_at(terms, items, mu, metric, subset)) for mu in local if mu not in seen]
            refined.extend(new)
            best = _best([best, *new])
            lo_hi = sorted({*local, best[0]})
    used = items if subset is None else [items[i] for i in subset]
    return MuSearch(
        best=best[0], value=best[1], metric=metric, grid=table, refined=refined, data_sha256=data_sha256(used)
    )


def tune_mu(vector: SteeringVector, model: Any, items: Sequence[Mapping[str, Any]], **kwargs: Any) -> SteeringVector:
    """Choose μ for a task metric on calibration items (never the test set), and cross-validate every setting.

    Takes the arguments of :func:`tune_and_validate` (``tokenizer``, ``metric``, ``mode``, ``folds``, ``grid``,
    ``refine``, ``batch_size``, ``strict``). One pass of warm and base logits over the items serves both: the μ
    search of :func:`search_mu` (its result becomes the vector's default μ, or μ_s for ``mode="static"``, with
    ``chosen_by="search:<metric>"``), and the K-fold comparison of warm alone, static and dynamic under every stored
    rule and the search (searched on the training folds only) that becomes ``config.validation``
    (:func:`steerkit.crossval.cross_validate_items`; skipped with ``folds=0``, fewer than ``2·K`` distinct prompts,
    or a plain model and a vector without adapter).

    Returns:
        The tuned vector.

    Example:
        >>> tuned = tune_mu(vector, model, calibration_items, tokenizer=tok, metric="mc2")   # doctest: +SKIP
        >>> tuned.config.mu.chosen_by, tuned.config.validation["recommended"]["setting"]    # doctest: +SKIP
        ('search:mc2', 'static/trimmed/exact')
    """
    return tune_and_validate(vector, model, items, **kwargs)[1]


def tune_and_validate(
    vector: SteeringVector,
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    metric: Metric | None = None,
    mode: Literal["dynamic", "static"] = "dynamic",
    folds: int = 5,
    grid: Sequence[float] | None = None,
    refine: bool = True,
    batch_size: int = 8,
    strict: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[MuSearch, SteeringVector]:
    """:func:`tune_mu` returning the :class:`MuSearch` too: ``(search, tuned vector)``.

    ``progress(done, total)`` is called after each batch of the forward passes (sequences).
    """
    metric = _check_metric(metric, items)
    if not isinstance(folds, int) or folds < 0 or folds == 1:
        raise InvalidOptionError(f"folds must be 0 or at least 2, got {folds!r}", got=folds)
    keys = group_keys(items)
    can_validate = folds and len(set(keys)) >= folds * MIN_UNITS_PER_FOLD and (is_peft(model) or vector.adapter_files)
    if not can_validate:
        found = search_mu(
            vector, model, items, tokenizer=tokenizer, metric=metric, mode=mode, grid=grid, refine=refine,
            batch_size=batch_size, strict=strict, progress=progress,
        )  # fmt: skip
        return found, found.apply(vector)
    terms = collect_setting_terms(
        model,
        items,
        tokenizer=tokenizer,
        vector=vector,
        settings=("base", "warm", "static", "dynamic"),
        batch_size=batch_size,
        strict=strict,
        progress=progress,
    )
    found = dataclasses.replace(search_terms(terms[mode], items, metric=metric, grid=grid, refine=refine), mode=mode)

    def search(t: OptionTerms, subset: Sequence[int]) -> float:
        return search_terms(t, items, metric=metric, grid=grid, refine=refine, subset=subset).best

    validation = cross_validate_items(
        terms,
        items,
        metric=metric,
        strengths={"static": vector.config.mu_static, "dynamic": vector.config.mu},
        search=search,
        folds=folds,
    )
    tuned = found.apply(vector)
    return found, dataclasses.replace(tuned, config=dataclasses.replace(tuned.config, validation=validation))
