"""Building a steering vector: calibration over prompt/completion pairs with a base model and its PEFT adapter.

For every gold completion token (teacher-forced; prompt tokens excluded) :func:`build` takes the warm logits ``z_φ``
(adapter on) and the base logits ``z_θ`` (the same weights, adapter disabled) at the same real tokens, and from them
(docs/concepts.md, via :mod:`steerkit.svdecode`) the masked direction ``δ̂_t``, the per-token Newton step ``μ*_t``
under both curvatures, the exact NLL minimiser ``fit``, and the static task vector ``v = mean_t δ̂_t`` with its own
strengths μ_s.

Cost (targets in docs/results.md#speed): two decoder passes per batch, one per model. Logits are computed only at
completion positions: the decoder's hidden states are gathered there and the output head is applied to the gathered
rows in chunks, so at most one ``[chunk, V]`` float32 block per model exists at a time, whatever the batch.
Prompt-based adapters (prompt tuning, p-tuning) prepend virtual tokens to the warm pass only; positions are aligned
so that the base model sees exactly the real tokens. Batches are padded on the tokenizer's ``padding_side`` with
explicit ``position_ids``, so the result does not depend on batch size or padding side.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from steerkit.adapters import adapter_files_of, is_prompt_learning_adapter, peft_type, resolve_adapter
from steerkit.calibration import calibrate
from steerkit.chat import template_sha256
from steerkit.checks import check_alpha
from steerkit.config import SteerConfig, parse_mu_name
from steerkit.crossval import MIN_UNITS_PER_FOLD, cross_validate_pairs, fit_strengths, group_keys
from steerkit.data import as_pairs, data_sha256, encode_pair
from steerkit.distributed import shard
from steerkit.errors import AdapterError, EmptyDataError, InvalidOptionError
from steerkit.format import adapter_sha256
from steerkit.models import logits_width, packaged_name, tokenizer_fingerprint
from steerkit.ranking import CRITERIA, Calibrated, rank_validation
from steerkit.readers import load_pairs
from steerkit.svdecode import CURVATURES, mu_star
from steerkit.terms import TokenTerms
from steerkit.vector import SteeringVector

__all__ = ["build"]

#: Levels of the μ* quantiles stored in ``calibration["mu_star_quantiles"]``.
MU_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_PROMPT_METHODS = ("PROMPT_TUNING", "P_TUNING")


def build(
    model: Any,
    adapter: Any,
    data: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    tokenizer: Any,
    alpha: float = 0.1,
    mu_aggregator: str = "trimmed/exact",
    batch_size: int = 8,
    max_length: int = 512,
    folds: int = 5,
    criterion: str = "split",
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SteeringVector:
    """Calibrate an SVDecode steering vector from a base model and a warm-started PEFT adapter.

    Args:
        model: The base causal LM, or a ``PeftModel`` (then ``adapter`` may be ``None`` and its active adapter
            is used).
        adapter: A ``PeftModel`` (its active adapter), a local adapter directory, or a Hub id. A directory or
            Hub id is loaded onto ``model`` with ``PeftModel.from_pretrained`` and unloaded again afterwards, so
            ``model`` is left as it was.
        data: Prompt/completion pairs (optionally with ``distractors``), preference records
            (``prompt``/``chosen``/``rejected``), multiple-choice items, or a path :func:`steerkit.data.load_pairs`
            reads.
        tokenizer: The model's tokenizer (its ``padding_side`` is respected).
        alpha: Confidence-mask threshold: keep tokens with ``p_φ ≥ α · max p_φ``.
        mu_aggregator: Which strength becomes ``mu.value`` (and ``mu_static.value``): ``"mean"``, ``"median"``,
            ``"trimmed"``, ``"ratio"`` (each optionally ``/paper`` or ``/exact``) or ``"fit"``.
        batch_size: Pairs per forward pass.
        max_length: Most tokens per pair (the prompt is cut from its start past this).
        folds: K of the cross-validation that compares base, warm alone, static and dynamic on the pairs and
            records the recommended setting in ``config.validation`` (:mod:`steerkit.crossval`). Skipped (no
            ``validation``) with ``0`` or fewer than ``2·K`` distinct prompts.
        criterion: How the cross-validation measures a setting. ``"split"`` (the default): each mode by the
            measure that does not favour it by construction: base and static settings by the softmax mass of each
            held-out gold completion against the base model's own greedy answer to its prompt (the record's own
            wrong completions when it has them; drawn ones where the answer is empty or the gold), dynamic settings
            by the held-out NLL of the gold tokens when no static setting helps, and no steering when the base
            model's held-out NLL beats warm alone's (:func:`steerkit.gate.split_pick`; one short greedy generation
            with the adapter off, then one extra pass of warm and base logits over the distractors). ``"rank"``:
            every setting by that mass against the record's own or drawn distractors (one extra pass).
            ``"nll"``: the held-out NLL of the gold tokens (no extra pass; base is then no candidate).
        show_progress: Print one line per batch to stderr.
        progress: Called as ``progress(step, total)`` after each calibration batch, then on through the ranking
            pass (the CLI renders it).

    Returns:
        The :class:`~steerkit.vector.SteeringVector`, with the adapter's files and calibration statistics.

    Raises:
        InvalidOptionError: A bad ``alpha``, ``mu_aggregator``, ``batch_size``, ``max_length``, ``folds`` or
            ``criterion``.
        AdapterError: No usable adapter (missing, unloadable, or a PEFT method SVDecode cannot run).
        DataFormatError: Malformed data; ``EmptyDataError`` when no completion token is left.

    Example:
        >>> vector = build(model, "my-lora", "calib.jsonl", tokenizer=tok)  # doctest: +SKIP
        >>> vector.save("my-vector")                                          # doctest: +SKIP
    """
    how, curvature = parse_mu_name(mu_aggregator)
    label = "fit" if curvature is None else f"{how}/{curvature}"
    check_alpha(alpha)
    for name, value, least in (("batch_size", batch_size, 1), ("max_length", max_length, 2), ("folds", folds, 0)):
        if not isinstance(value, int) or value < least:
            default = inspect.signature(build).parameters[name].default
            raise InvalidOptionError(
                f"{name} must be an integer ≥ {least}, got {value!r}", hint=f"the default is {default}", got=value
            )
    if folds == 1:
        raise InvalidOptionError("folds must be 0 (no cross-validation) or at least 2, got 1", got=folds)
    if criterion not in CRITERIA:
        raise InvalidOptionError(
            f"unknown criterion {criterion!r}", hint=f"use one of: {', '.join(CRITERIA)}", got=criterion
        )
    pairs = load_pairs(data) if isinstance(data, (str, os.PathLike)) else as_pairs(data)
    peft_model, source, loaded = resolve_adapter(model, adapter)
    try:
        return _build(
            peft_model,
            pairs,
            source=source,
            tokenizer=tokenizer,
            alpha=float(alpha),
            label=label,
            batch_size=batch_size,
            max_length=max_length,
            folds=folds,
            criterion=criterion,
            show_progress=show_progress,
            progress=progress,
        )
    finally:
        if loaded and not is_prompt_learning_adapter(peft_model):
            peft_model.unload()  # remove the injected adapter layers: `model` is as the caller gave it


def _chat_record(pairs: Sequence[Mapping[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """``chat_template_sha256`` when the calibration pairs were rendered with a chat template (else nothing)."""
    if not any(isinstance(p["prompt"], list) for p in pairs):
        return {}
    return {"chat_template_sha256": template_sha256(tokenizer)}


def _build(
    peft_model: Any,
    pairs: list[dict[str, Any]],
    *,
    source: str | None,
    tokenizer: Any,
    alpha: float,
    label: str,
    batch_size: int,
    max_length: int,
    folds: int,
    criterion: str,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> SteeringVector:
    method = peft_type(peft_model)
    prompt_learning = is_prompt_learning_adapter(peft_model)
    if prompt_learning and method not in _PROMPT_METHODS:
        raise AdapterError(
            f"PEFT method {method} is not supported by build",
            hint="use LoRA, IA3 (or another weight adapter), prompt tuning or p-tuning",
            got=method,
        )
    transformer = peft_model.get_base_model()
    used_index, used = _encoded(pairs, tokenizer, max_length)
    width = logits_width(transformer)
    totals = calibrate(
        peft_model,
        used,
        tokenizer=tokenizer,
        alpha=alpha,
        batch_size=batch_size,
        prompt_learning=prompt_learning,
        show_progress=show_progress,
        progress=progress,
    )
    task_sum, kl_sum, kept_sum, gold_masked, terms, base_logprob = totals.gathered().merged(width)
    n_tokens = terms.n_tokens
    task_vector = (task_sum / n_tokens).to(torch.float32).cpu()
    mu, quantiles = fit_strengths(terms, label), _quantiles(terms)
    mu_static = fit_strengths(terms.with_direction(task_vector), label)
    files = adapter_files_of(peft_model)
    name = getattr(transformer.config, "_name_or_path", "") or getattr(transformer, "name_or_path", "") or None
    name = packaged_name(name) or name  # "SmolLM2-135M-Instruct", not this machine's cache folder
    revision = getattr(transformer.config, "_commit_hash", None)
    config = SteerConfig(
        vocab_size=width,
        mu=mu,
        mu_static=mu_static,
        tokenizer=tokenizer_fingerprint(tokenizer),
        base_model={"name_or_path": name, "revision": revision if isinstance(revision, str) else None},
        calibration={
            "n_examples": len(used),
            "n_tokens": n_tokens,
            "data_sha256": data_sha256(pairs),
            "kl_mean": kl_sum / n_tokens,
            "kept_mean": kept_sum / n_tokens,
            "masked_gold_fraction": gold_masked / n_tokens,
            "mu_star_quantiles": quantiles,
            **_chat_record(pairs, tokenizer),
        },
        adapter={"path": source, "peft_type": method, "sha256": adapter_sha256(files)},
        alpha=alpha,
    )
    vector = SteeringVector(task_vector=task_vector, config=config, adapter_files=files)
    calibrated = Calibrated([pairs[i] for i in used_index], used, terms, base_logprob)
    validation = _validation(
        peft_model,
        vector,
        calibrated,
        tokenizer,
        folds=folds,
        criterion=criterion,
        batch_size=batch_size,
        show_progress=show_progress,
        progress=progress,
    )
    return dataclasses.replace(vector, config=dataclasses.replace(config, validation=validation))


def _encoded(
    pairs: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[int], list[tuple[list[int], int]]]:
    """The pairs with completion tokens (their indices) and their ``(ids, first completion position)``."""
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"], max_length=max_length) for p in pairs]
    used_index = [i for i, (ids, start) in enumerate(encoded) if len(ids) > max(start, 1)]
    if not used_index:
        raise EmptyDataError(
            "no completion tokens to calibrate on (every completion is empty after tokenization)",
            hint="give pairs with non-empty completions",
        )
    return used_index, [(encoded[i][0], max(encoded[i][1], 1)) for i in used_index]


def _validation(
    peft_model: Any,
    vector: SteeringVector,
    calibrated: Calibrated,
    tokenizer: Any,
    *,
    folds: int,
    criterion: str,
    batch_size: int,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any] | None:
    """The cross-validated comparison of settings (the ``validation`` block), or ``None`` when ``folds`` is 0 or
    the data have too few distinct prompts for ``folds`` folds."""
    keys = group_keys(calibrated.pairs)
    if not folds or len(set(keys)) < folds * MIN_UNITS_PER_FOLD:
        return None
    if criterion == "nll":
        return cross_validate_pairs(
            calibrated.terms,
            calibrated.token_unit,
            keys,
            base_logprob=calibrated.base_logprob,
            folds=folds,
            full=(vector.config.mu, vector.config.mu_static),
        )
    done = len(shard(-(-len(calibrated.used) // batch_size)))  # the calibration pass's batches: the bar goes on

    def going_on(step: int, total: int) -> None:
        if progress is not None:
            progress(done + step, done + total)

    return rank_validation(
        peft_model,
        vector,
        calibrated,
        keys=keys,
        tokenizer=tokenizer,
        folds=folds,
        batch_size=batch_size,
        criterion=criterion,
        progress=going_on,
    )


def _quantiles(terms: TokenTerms) -> dict[str, dict[str, float]]:
    """The μ* quantiles under both curvatures (``calibration["mu_star_quantiles"]``)."""
    levels: dict[str, dict[str, float]] = {}
    for curvature in CURVATURES:
        values = mu_star(*terms.mu_terms(curvature=curvature))  # type: ignore[arg-type]
        q = torch.quantile(values, torch.tensor(MU_QUANTILES, dtype=values.dtype))
        levels[curvature] = {str(level): float(v) for level, v in zip(MU_QUANTILES, q, strict=True)}
    return levels
