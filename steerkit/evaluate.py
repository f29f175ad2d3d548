"""Multiple-choice evaluation: :func:`evaluate_mc`, its metrics and bootstrap intervals.

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
compare two settings with :func:`steerkit.stats.paired_bootstrap`. The metrics and the bootstrap are pure
statistics in :mod:`steerkit.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from steerkit.errors import InvalidOptionError
from steerkit.scoring import collect_option_terms
from steerkit.stats import item_metrics, summarize
from steerkit.steering import Steering
from steerkit.terms import OptionTerms
from steerkit.vector import SteeringVector

__all__ = ["evaluate_mc", "terms_result"]


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
        steering: ``None`` (unsteered), a :class:`~steerkit.steering.Steering` (vector, mode, μ, α), or a
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
