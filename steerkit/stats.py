"""Metrics and bootstrap intervals: pure statistics over per-item values (torch only, no models).

Multiple-choice metrics from option scores (:func:`item_metrics`): ``accuracy`` (argmax is a correct choice),
``acc_norm`` (the same with each option's log-probability divided by its length in UTF-8 bytes, as
lm-evaluation-harness does), and for items with an MC2 set TruthfulQA's standard ``mc1`` and ``mc2``
(``Σ_true exp(s) / Σ_all exp(s)`` over the MC2 choices). :func:`summarize` gives each a percentile-bootstrap 95%
interval; :func:`paired_bootstrap` compares two settings on the same items. Evaluation (:mod:`steerkit.evaluate`)
and cross-validation (:mod:`steerkit.crossval`) both use these, so building a vector never imports scoring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit.errors import InvalidOptionError

__all__ = ["METRICS", "chance", "headline_metric", "item_metrics", "paired_bootstrap", "summarize"]

#: The multiple-choice metrics, in table order.
METRICS: tuple[str, ...] = ("accuracy", "acc_norm", "mc1", "mc2")


def headline_metric(items: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The metric an item set is judged on by default, and why, in words.

    ``mc2`` when the items carry an MC2 set (TruthfulQA); else ``acc_norm`` when some item's choices differ in
    length (in UTF-8 bytes: summed log-probabilities favour short choices, so lm-evaluation-harness reports
    multiple-choice tasks by ``acc_norm``); else ``accuracy``.

    Example:
        >>> headline_metric([{"prompt": "p", "choices": [" yes", " no"], "label": 0}])
        ('acc_norm', 'the choices differ in length')
    """
    if any("mc2_choices" in it for it in items):
        return "mc2", "the items carry an MC2 set"
    if any(len({len(str(c).encode("utf-8")) for c in it["choices"]}) > 1 for it in items):
        return "acc_norm", "the choices differ in length"
    return "accuracy", "every item's choices have one length"


def chance(items: Sequence[Mapping[str, Any]]) -> float:
    """The accuracy of a uniform random pick over each item's choices, averaged over the items.

    Example:
        >>> chance([{"choices": ["a", "b"], "label": 0}, {"choices": ["a", "b", "c", "d"], "labels": [1, 1, 0, 0]}])
        0.5
    """
    shares = [(sum(it["labels"]) if "labels" in it else 1) / max(len(it["choices"]), 1) for it in items]
    return sum(shares) / max(len(shares), 1)


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def item_metrics(
    items: Sequence[Mapping[str, Any]], scores: Sequence[Mapping[str, list[float]]]
) -> dict[str, list[Any]]:
    """Per-item metric values from option scores.

    Args:
        items: The items.
        scores: Per item ``{"choices": [...], "mc2_choices": [...]}`` (as :meth:`OptionTerms.item_scores`).

    Returns:
        ``{"accuracy": [...], "acc_norm": [...], "mc1": [...], "mc2": [...]}``: ``accuracy`` and ``acc_norm``
        (the argmax of each option's log-probability per UTF-8 byte of its text, as lm-evaluation-harness's
        ``acc_norm``) for every item; ``mc1``/``mc2`` ``None`` for items without an MC2 set. Ties go to the
        first choice.
    """
    out: dict[str, list[Any]] = {"accuracy": [], "acc_norm": [], "mc1": [], "mc2": []}
    for item, s in zip(items, scores, strict=True):
        pred = _argmax(s["choices"])
        correct = pred == item["label"] if "label" in item else item["labels"][pred] == 1
        out["accuracy"].append(float(correct))
        lengths = [max(len(str(c).encode("utf-8")), 1) for c in item["choices"]]
        pred_norm = _argmax([v / n for v, n in zip(s["choices"], lengths, strict=True)])
        out["acc_norm"].append(float(pred_norm == item["label"] if "label" in item else item["labels"][pred_norm]))
        if "mc2_choices" in item:
            out["mc1"].append(float(correct))
            s2 = torch.tensor(s["mc2_choices"], dtype=torch.float64)
            true = torch.tensor(item["mc2_labels"], dtype=torch.bool)
            total = torch.logsumexp(s2, dim=0)
            if not bool(true.any()) or not math.isfinite(float(total)):
                out["mc2"].append(0.0)
            else:
                out["mc2"].append(float(torch.exp(torch.logsumexp(s2[true], dim=0) - total)))
        else:
            out["mc1"].append(None)
            out["mc2"].append(None)
    return out


def _bootstrap_means(values: Tensor, n_bootstrap: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(values.numel(), (n_bootstrap, values.numel()), generator=g)
    return values[idx].mean(dim=1)


def _interval(values: Sequence[float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    v = torch.tensor(list(values), dtype=torch.float64)
    out: dict[str, Any] = {"value": float(v.mean()), "n": int(v.numel()), "ci_low": None, "ci_high": None}
    if n_bootstrap > 0:
        means = _bootstrap_means(v, n_bootstrap, seed)
        out["ci_low"] = float(torch.quantile(means, 0.025))
        out["ci_high"] = float(torch.quantile(means, 0.975))
    return out


def summarize(
    per_item: Mapping[str, Sequence[Any]],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> dict[str, Any]:
    """Metric values with bootstrap 95% intervals from per-item values (``None`` entries skipped).

    Returns:
        ``{metric: {"value", "n", "ci_low", "ci_high"}}`` for each of ``metrics`` with at least one value.
    """
    out: dict[str, Any] = {}
    for metric in metrics:
        values = [v for v in per_item.get(metric, []) if v is not None]
        if values:
            out[metric] = _interval(values, n_bootstrap, seed)
    return out


def paired_bootstrap(
    a: Sequence[float] | Tensor, b: Sequence[float] | Tensor, *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Paired percentile bootstrap of ``mean(a) − mean(b)`` over the same items.

    Args:
        a: Per-item metric values of one setting (e.g. ``result["per_item"]["mc2"]``).
        b: The same items under another setting.
        n_bootstrap: Resamples (items drawn with replacement, the same draw for ``a`` and ``b``).
        seed: Seed of the resampling.

    Returns:
        ``{"difference", "ci_low", "ci_high", "n", "p_le_zero"}``: ``p_le_zero`` is the fraction of resampled
        differences ``≤ 0`` (a one-sided bootstrap p-value for "a beats b").

    Raises:
        InvalidOptionError: Different lengths, no items, or ``n_bootstrap < 1``.
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() != y.numel() or x.numel() == 0:
        raise InvalidOptionError(
            f"paired bootstrap needs two non-empty arrays over the same items, got {x.numel()} and {y.numel()}",
            hint="pass the per-item values of both settings on the same items",
        )
    if n_bootstrap < 1:
        raise InvalidOptionError(f"n_bootstrap must be at least 1, got {n_bootstrap}", got=n_bootstrap)
    diffs = _bootstrap_means(x - y, n_bootstrap, seed)
    return {
        "difference": float((x - y).mean()),
        "ci_low": float(torch.quantile(diffs, 0.025)),
        "ci_high": float(torch.quantile(diffs, 0.975)),
        "n": int(x.numel()),
        "p_le_zero": float((diffs <= 0).double().mean()),
    }
