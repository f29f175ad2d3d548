"""Multiple-choice evaluation (DESIGN §5): :func:`evaluate_mc`, its metrics and bootstrap intervals.

Item schema (what :mod:`steerkit.data` readers produce)::

    {"prompt": str, "choices": list[str], "label": int}               # one correct choice
    {"prompt": str, "choices": list[str], "labels": list[int]}        # 0/1 per choice
    # TruthfulQA also: "mc2_choices": list[str], "mc2_labels": list[int], "category": str
    # (then "choices"/"label" are the MC1 set)

An option's score is the sum of the log-probabilities of its tokens after the prompt, teacher-forced.
Tokenisation is the one :func:`steerkit.build` and :func:`steerkit.warm_start` use
(:func:`steerkit.data.encode_pair`): the prompt with the tokenizer's special tokens (e.g. BOS), the choice
without, ids concatenated; the option tokens are exactly the choice's own tokens. Put the separating space in
the choice (``" Paris"``), not at the end of the prompt (the data readers do).

One code path (:mod:`steerkit.scoring`) scores every setting: the warm logits at the option positions (and,
in dynamic mode, the base logits with the adapter disabled) become :class:`~steerkit.terms.TokenTerms` with
direction δ̂ (dynamic),
``keep ⊙ v`` (static) or zero (no steering); an option's score is the segment sum of ``terms.logprobs(μ)``.
So any μ can be re-scored without a forward pass (:mod:`steerkit.tune` relies on this). No ``−inf`` filter
unless asked: most options contain a token outside the confidence mask.

Metrics: ``accuracy`` (argmax is a correct choice), ``acc_norm`` (the same with each option's log-probability
divided by its length in UTF-8 bytes, as lm-evaluation-harness does: use it where options differ in length); for
items with an MC2 set, TruthfulQA's standard ``mc1``
(argmax of the MC1 choices is the correct one) and ``mc2`` (``Σ_true exp(s) / Σ_all exp(s)`` over the MC2
choices). Each with ``n`` and a percentile-bootstrap 95% interval; per-item values are returned so callers can
compare two settings with :func:`paired_bootstrap`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit.errors import InvalidOptionError
from steerkit.scoring import OptionTerms, Steering, collect_option_terms
from steerkit.vector import SteeringVector

__all__ = ["METRICS", "evaluate_mc", "item_metrics", "paired_bootstrap", "summarize", "terms_result"]

METRICS: tuple[str, ...] = ("accuracy", "acc_norm", "mc1", "mc2")


# --- items -----------------------------------------------------------------------------------------------


# --- scoring ---------------------------------------------------------------------------------------------


# --- metrics ---------------------------------------------------------------------------------------------


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


def evaluate_mc(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    steering: Steering | SteeringVector | None = None,
    batch_size: int = 8,
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    filter_masked: bool = False,
    strict: bool = True,
) -> dict[str, Any]:
    """Evaluate multiple-choice items: accuracy, and TruthfulQA MC1/MC2 where items carry an MC2 set.

    Args:
        model: Base model, or warm ``PeftModel`` (scored as is when ``steering`` is ``None``).
        items: Items (schema in the module docstring).
        tokenizer: The model's tokenizer.
        steering: ``None`` (unsteered), a :class:`~steerkit.scoring.Steering` (vector, mode, μ, α), or a
            ``SteeringVector`` (dynamic, its default μ). With dynamic steering on a plain model the vector's
            adapter is loaded for the pass and unloaded after.
        batch_size: Sequences (prompt + one option) per forward pass.
        show_progress: Show a progress bar.
        progress: Called as ``progress(done, total)`` in sequences.
        n_bootstrap: Bootstrap resamples for the 95% intervals (0: no intervals).
        seed: Seed of the bootstrap.
        filter_masked: Score with the ``−inf`` filter on masked tokens (off by default).
        strict: Refuse a tokenizer that differs from the vector's.

    Returns:
        ``{"n", "accuracy": {"value", "n", "ci_low", "ci_high"}, "mc1": {...}, "mc2": {...}, "steering":
        {"mode", "mu", "filter_masked"}, "per_item": {"accuracy", "acc_norm", "mc1", "mc2", "scores", "mc2_scores"}}``;
        ``mc1``/``mc2`` only when some item has an MC2 set.

    Raises:
        DataFormatError: A malformed item. IncompatibleModelError: the vector does not fit the model.

    Example:
        >>> res = evaluate_mc(model, items, tokenizer=tok, steering=Steering(v, mode="static"))     # doctest: +SKIP
        >>> res["mc2"]["value"], res["mc2"]["ci_low"], res["mc2"]["ci_high"]                          # doctest: +SKIP
    """
    if n_bootstrap < 0:
        raise InvalidOptionError(f"n_bootstrap must be ≥ 0, got {n_bootstrap}", got=n_bootstrap)
    if isinstance(steering, SteeringVector):
        steering = Steering(steering)
    elif steering is not None and not isinstance(steering, Steering):
        raise InvalidOptionError(
            f"cannot steer with a {type(steering).__name__}",
            hint='give None, a SteeringVector, or Steering(vector, mode="static", mu=-1.0)',
        )
    terms = collect_option_terms(
        model,
        items,
        tokenizer=tokenizer,
        steering=steering,
        batch_size=batch_size,
        filter_masked=filter_masked,
        strict=strict,
        show_progress=show_progress,
        progress=progress,
    )
    return terms_result(terms, items, n_bootstrap=n_bootstrap, seed=seed)


def terms_result(
    terms: OptionTerms, items: Sequence[Mapping[str, Any]], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The :func:`evaluate_mc` result of option terms collected for ``items`` (scored at ``terms.mu``)."""
    scores = terms.item_scores()
    per_item: dict[str, Any] = item_metrics(items, scores)
    result: dict[str, Any] = {"n": len(items)}
    result.update(summarize(per_item, n_bootstrap=n_bootstrap, seed=seed))
    result["steering"] = {"mode": terms.mode, "mu": terms.mu, "filter_masked": terms.filter_masked}
    per_item["scores"] = [s["choices"] for s in scores]
    per_item["mc2_scores"] = [s.get("mc2_choices") for s in scores]
    result["per_item"] = per_item
    return result
