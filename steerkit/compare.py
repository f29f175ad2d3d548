"""The four decoding settings side by side: evaluate and generate in base, warm, static, dynamic.

- ``base``: the base model θ, no adapter, no steering;
- ``warm``: the warm-started model φ (the vector's PEFT adapter on), no steering;
- ``static``: φ steered with the static task vector, ``ẑ = z_φ + μ_s·(keep ⊙ v)`` (on θ when the vector carries
  no adapter: static mode works on any model with the vocabulary);
- ``dynamic``: φ steered by SVDecode, ``ẑ = z_φ + μ̄·δ̂`` with δ̂ recomputed from θ and φ at every step;
- ``recommended`` (not in :data:`SETTINGS`, asked by name): what the vector's ``validation`` block recommends
  (:func:`recommended_setting`): one of the four above (static and dynamic at the cross-validated μ): warm alone
  when steering did not help, base when the adapter hurt.

:func:`evaluate_settings` scores multiple-choice items in any of them (one pass of warm and base logits serves
them all, with each setting's paired Δ against warm) and :func:`generate_settings` generates text in any of them.
This is what ``steerkit eval`` and ``steerkit generate`` run. Nothing here draws progress: callers pass a
``progress(stage, step, total)`` callback.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from steerkit._generation import NewlineStop, check_context, encoded, encoded_batch
from steerkit._hf import is_peft, pad_id
from steerkit.adapters import load_adapter
from steerkit.compatibility import check_compatible
from steerkit.decode import attach
from steerkit.errors import AdapterError, InvalidOptionError
from steerkit.evaluate import evaluate_mc, terms_result
from steerkit.scoring import collect_setting_terms
from steerkit.stats import METRICS, paired_bootstrap
from steerkit.steering import Steering
from steerkit.vector import SteeringVector

__all__ = ["SETTINGS", "Progress", "evaluate_settings", "generate_settings", "recommended_setting", "staged"]


#: The four decoding settings, in the order tables show them.
SETTINGS: tuple[str, ...] = ("base", "warm", "static", "dynamic")


Progress = Callable[[str, int, int], None]


def _check_settings(settings: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(settings))
    bad = [s for s in chosen if s not in (*SETTINGS, "recommended")]
    if bad or not chosen:
        raise InvalidOptionError(
            f"unknown setting(s) {', '.join(map(repr, bad)) or '(none given)'}",
            hint=f"choose from: {', '.join(SETTINGS)}, recommended",
            got=list(settings),
        )
    return chosen


def recommended_setting(vector: SteeringVector) -> tuple[str, float | None, str]:
    """What the ``recommended`` setting runs: ``(setting among base/warm/static/dynamic, μ, label)``, from
    :meth:`Steering.recommended <steerkit.steering.Steering.recommended>` (what ``attach(mode=None)`` runs)."""
    if vector.config.recommendation is None:
        return "dynamic", None, "dynamic (not validated)"
    spec = Steering.recommended(vector)
    if spec.is_warm_alone or spec.is_base:
        return str(spec.setting), None, str(spec.setting)
    return spec.mode, float(spec.strength), str(spec.setting)


@contextlib.contextmanager
def _warm_model(vector: SteeringVector, model: Any, *, tokenizer: Any, strict: bool) -> Iterator[Any]:
    """The warm model φ for the ``with`` block: ``model`` itself if it is a PeftModel, else ``model`` with the
    vector's adapter loaded (unloaded again on exit, leaving ``model`` as it was)."""
    if is_peft(model):
        yield model
        return
    if not vector.adapter_files:
        raise AdapterError(
            "this steering vector carries no adapter, so the warm and dynamic settings are unavailable",
            hint="use the base and static settings, or a vector built with its adapter",
        )
    check_compatible(vector, model, tokenizer=tokenizer, strict=strict)
    warm, undo = load_adapter(vector, model)
    try:
        yield warm
    finally:
        undo()


@contextlib.contextmanager
def _plain(model: Any) -> Iterator[Any]:
    """The base model θ: ``model`` with its adapter disabled when it is a PeftModel."""
    if is_peft(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def _setting_runs(
    vector: SteeringVector,
    model: Any,
    settings: Sequence[str],
    *,
    tokenizer: Any,
    mu: float | None,
    mu_static: float | None,
    strict: bool,
) -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(setting, model to run, steering spec or None)`` in ``settings`` order, each valid while current."""
    needs_warm = any(s in ("warm", "dynamic") for s in settings) or (
        "static" in settings and bool(vector.adapter_files)
    )
    rec, rec_mu, _ = recommended_setting(vector)
    if "recommended" in settings:
        needs_warm = needs_warm or rec not in ("static", "base") or bool(vector.adapter_files)
    for setting in settings:
        if setting == "base" or (setting == "recommended" and rec == "base"):
            with _plain(model) as plain:
                yield setting, plain, None
    if not needs_warm:
        for setting in settings:
            if setting == "static" or (setting == "recommended" and rec != "base"):  # static steering of the base
                yield setting, model, Steering(vector, "static", mu_static if setting == "static" else rec_mu)
        return
    with _warm_model(vector, model, tokenizer=tokenizer, strict=strict) as warm:
        for setting in settings:
            if setting == "warm":
                yield setting, warm, None
            elif setting == "static":
                yield setting, warm, Steering(vector, "static", mu_static)
            elif setting == "dynamic":
                yield setting, warm, Steering(vector, "dynamic", mu)
            elif setting == "recommended" and rec != "base":
                yield setting, warm, None if rec == "warm" else Steering(vector, rec, rec_mu)


def evaluate_settings(
    vector: SteeringVector,
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    settings: Sequence[str] = SETTINGS,
    mu: float | None = None,
    mu_static: float | None = None,
    batch_size: int = 8,
    strict: bool = True,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Score multiple-choice items in several settings with :func:`steerkit.evaluate_mc`.

    Args:
        vector: The steering vector (its adapter gives the warm model when ``model`` is a plain base model).
        model: The base model, or the warm ``PeftModel`` (then ``base`` disables its adapter).
        items: Multiple-choice items (schema in :mod:`steerkit.evaluate`).
        tokenizer: The model's tokenizer.
        settings: Any of :data:`SETTINGS`, evaluated in the order given.
        mu: Dynamic strength (default the vector's ``mu``).
        mu_static: Static strength (default the vector's ``mu_static``).
        batch_size: Sequences per forward pass.
        strict: Refuse a tokenizer that differs from the vector's.
        progress: Called as ``progress(stage, done, total)``: one stage for all settings when the warm model is
            available (one pass computes the warm and base logits every setting needs), else one per setting.

    Returns:
        ``{setting: evaluate_mc result without "per_item"}``, in ``settings`` order; each has ``n``,
        ``accuracy`` (and ``mc1``/``mc2`` for TruthfulQA items) as ``{"value", "n", "ci_low", "ci_high"}`` and
        ``steering`` ``{"mode", "mu", "filter_masked"}``. When the warm model is available, every setting but
        ``warm`` also has ``delta_vs_warm``: ``{metric: {"difference", "ci_low", "ci_high", "n", "p_le_zero"}}``,
        the paired bootstrap over the same items (:func:`paired_deltas`).

    Raises:
        InvalidOptionError: An unknown setting, or ``max_new_tokens`` that with a prompt exceeds the model's
            context (``config.max_position_embeddings``).
        AdapterError: ``warm``/``dynamic`` asked of a vector without adapter.
        IncompatibleModelError: The vector does not fit the model.

    Example:
        >>> table = evaluate_settings(vector, model, items, tokenizer=tok)       # doctest: +SKIP
        >>> table["dynamic"]["accuracy"]["value"]                               # doctest: +SKIP
        0.95
    """
    chosen = _check_settings(settings)
    results: dict[str, dict[str, Any]] = {}
    if vector.adapter_files or is_peft(model):
        # One pass serves every setting: warm and base logits per batch (the warm scores also give the Δs).
        rec, rec_mu, label = recommended_setting(vector)
        collect = [s for s in chosen if s != "recommended"] + (["warm", rec] if "recommended" in chosen else ["warm"])
        terms = collect_setting_terms(
            model,
            items,
            tokenizer=tokenizer,
            vector=vector,
            settings=list(dict.fromkeys(collect)),
            mu=mu,
            mu_static=mu_static,
            batch_size=batch_size,
            strict=strict,
            progress=None if progress is None else staged(progress, "+".join(chosen)),
        )
        results = {s: terms_result(t, items) for s, t in terms.items()}
        if "recommended" in chosen:
            strength = 0.0 if rec in ("warm", "base") else (terms[rec].mu if rec_mu is None else rec_mu)
            results["recommended"] = terms_result(dataclasses.replace(terms[rec], mu=strength), items)
            results["recommended"]["steering"]["setting"] = label
    else:
        for setting, run_model, steering in _setting_runs(
            vector, model, chosen, tokenizer=tokenizer, mu=mu, mu_static=mu_static, strict=strict
        ):
            callback = None if progress is None else staged(progress, setting)
            results[setting] = evaluate_mc(
                run_model,
                items,
                tokenizer=tokenizer,
                steering=steering,
                batch_size=batch_size,
                progress=callback,
                strict=strict,
            )
    warm = results.get("warm")
    for setting in chosen:
        if warm is not None and setting != "warm":
            results[setting]["delta_vs_warm"] = paired_deltas(results[setting]["per_item"], warm["per_item"])
    for result in results.values():
        result.pop("per_item", None)
    return {s: results[s] for s in chosen}


def paired_deltas(per_item: Mapping[str, Sequence[Any]], reference: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Paired bootstrap ``mean(setting) − mean(reference)`` per metric, over the items both have a value for.

    Returns:
        ``{metric: {"difference", "ci_low", "ci_high", "n", "p_le_zero"}}`` (see
        :func:`steerkit.stats.paired_bootstrap`) for every metric with values.
    """
    out: dict[str, Any] = {}
    for metric in METRICS:
        pairs = [
            (a, b)
            for a, b in zip(per_item.get(metric, []), reference.get(metric, []), strict=True)
            if a is not None and b is not None
        ]
        if pairs:
            out[metric] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs])
    return out


def generate_settings(
    vector: SteeringVector,
    model: Any,
    prompts: Sequence[str | list[dict[str, str]]],
    *,
    tokenizer: Any,
    settings: Sequence[str] = SETTINGS,
    mu: float | None = None,
    mu_static: float | None = None,
    strict: bool = True,
    seed: int = 0,
    first_line: bool = False,
    progress: Progress | None = None,
    batch_size: int = 1,
    **generate_kwargs: Any,
) -> list[dict[str, str]]:
    """Generate a continuation of each prompt in several settings (greedy unless ``do_sample=True``).

    Each generation runs on its own (batch 1) by default, with ``torch.manual_seed(seed)`` before it, so sampled
    outputs are reproducible and do not depend on the other settings. ``batch_size > 1`` (greedy only) runs
    left-padded batches: several times faster, and the same tokens up to float rounding on near-ties.

    Args:
        vector: The steering vector.
        model: The base model, or the warm ``PeftModel``.
        prompts: Prompt texts (used as given: no chat template), or conversations (lists of messages, rendered
            with the tokenizer's chat template and its generation prompt).
        tokenizer: The model's tokenizer.
        settings: Any of :data:`SETTINGS`.
        mu: Dynamic strength (default the vector's).
        mu_static: Static strength (default the vector's).
        strict: Refuse a tokenizer that differs from the vector's.
        seed: Seed set before every generation.
        first_line: Stop at the first newline after some text, and keep that first line (a QA answer).
        progress: Called as ``progress("generate", done, total)``.
        batch_size: Prompts per ``generate`` call (greedy decoding only).
        **generate_kwargs: Passed to ``generate`` (``max_new_tokens``, ``num_beams``, ``do_sample``, ``top_k``,
            ``top_p``, ``temperature``, ...).

    Returns:
        One dict per prompt: ``{"prompt": ..., setting: continuation, ...}`` (only the new text).

    Raises:
        InvalidOptionError: An unknown setting, or ``max_new_tokens`` that with a prompt exceeds the model's
            context (``config.max_position_embeddings``).
        AdapterError: ``warm``/``dynamic`` asked of a vector without adapter.

    Example:
        >>> rows = generate_settings(vector, model, ["Review: Great!\\nSentiment:"], tokenizer=tok,
        ...                          max_new_tokens=5)                                   # doctest: +SKIP
        >>> rows[0]["dynamic"]                                                            # doctest: +SKIP
        ' positive'
    """
    import torch
    from transformers import StoppingCriteriaList

    chosen = _check_settings(settings)
    check_context(model, tokenizer, prompts, generate_kwargs.get("max_new_tokens"))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidOptionError(f"batch_size must be an integer ≥ 1, got {batch_size!r}", got=batch_size)
    if batch_size > 1 and (generate_kwargs.get("do_sample") or (generate_kwargs.get("num_beams") or 1) > 1):
        raise InvalidOptionError(
            "batch_size > 1 is for greedy generation only (sampling and beam search run one prompt at a time)",
            hint="leave batch_size=1 with do_sample or num_beams",
        )
    step = batch_size
    rows: list[dict[str, Any]] = [{"prompt": p} for p in prompts]
    total, done = len(chosen) * len(prompts), 0
    pad = pad_id(tokenizer)
    kwargs = {"pad_token_id": pad, **{k: v for k, v in generate_kwargs.items() if v is not None}}
    for setting, run_model, steering in _setting_runs(
        vector, model, chosen, tokenizer=tokenizer, mu=mu, mu_static=mu_static, strict=strict
    ):
        handle = None
        if steering is not None:
            handle = attach(steering, run_model, tokenizer=tokenizer, strict=strict)
        try:
            for lo in range(0, len(rows), step):
                chunk = rows[lo : lo + step]
                enc = (
                    encoded(tokenizer, chunk[0]["prompt"])
                    if step == 1
                    else encoded_batch(tokenizer, [r["prompt"] for r in chunk], pad)
                )
                n_prompt = enc["input_ids"].shape[1]
                call = dict(kwargs)
                if first_line:
                    call["stopping_criteria"] = StoppingCriteriaList([NewlineStop(tokenizer, n_prompt)])
                torch.manual_seed(seed)
                with torch.no_grad():
                    if handle is not None:
                        ids = handle.generate(**enc, **call)
                    else:
                        ids = run_model.generate(**enc, **call)
                for k, row in enumerate(chunk):
                    text = tokenizer.decode(ids[k, n_prompt:], skip_special_tokens=True)
                    row[setting] = text.lstrip("\n").split("\n")[0] if first_line else text
                done += len(chunk)
                if progress is not None:
                    progress("generate", done, total)
        finally:
            if handle is not None:
                handle.detach()
    return [{"prompt": r["prompt"], **{s: r[s] for s in chosen}} for r in rows]


def staged(progress: Progress, stage: str) -> Callable[[int, int], None]:
    """``progress(step, total)`` for one stage of a ``progress(stage, step, total)`` callback."""

    def update(step: int, total: int) -> None:
        progress(stage, step, total)

    return update
