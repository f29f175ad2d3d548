"""Option scoring: log-probabilities of multiple-choice options under a :class:`Steering` value.

Items follow the schema of :mod:`steerkit.evaluate`. An option's score is the sum of the log-probabilities of
its tokens after the prompt, teacher-forced. Tokenisation is the one :func:`steerkit.build` and
:func:`steerkit.warm_start` use (:func:`steerkit.data.encode_pair`): the prompt with the tokenizer's special
tokens (e.g. BOS), the choice without, ids concatenated; the option tokens are exactly the choice's own tokens.
Put the separating space in the choice (``" Paris"``), not at the end of the prompt (the data readers do).
Under torch.distributed the option batches are sharded across ranks and gathered back in order.

One code path scores every setting: the warm logits at the option positions (and, in dynamic mode, the base
logits with the adapter disabled) become :class:`~steerkit.terms.TokenTerms` with direction δ̂ (dynamic),
``keep ⊙ v`` (static) or zero (no steering); an option's score is the segment sum of ``terms.logprobs(μ)``.
So any μ can be re-scored without a forward pass (:mod:`steerkit.tune` relies on this). No ``−inf`` filter
unless asked: most options contain a token outside the confidence mask.

Scoring takes a plain :class:`Steering` value (vector, mode, μ, α), never a live decode handle: base logits come
from the same weights with the adapter switched off (:class:`steerkit._hf.AdapterSwitch`), and prompts (and a
shared few-shot primer) run once, their KV caches reused by every option. Metrics live in :mod:`steerkit.evaluate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit._hf import pad_id, trim_heap
from steerkit.adapters import WarmAndBase, warm_and_base
from steerkit.batching import (
    CommonPrefix,
    encode_options,
    is_prompt_learning,
    length_batches,
    model_device,
    option_logits,
    padded_batch,
    prompt_groups,
    split_group,
    validate_items,
    virtual_prompt,
)
from steerkit.checks import check_mu
from steerkit.distributed import gather_terms, shard
from steerkit.errors import InvalidOptionError
from steerkit.steering import Steering
from steerkit.svdecode import CHUNK_ELEMENTS, steering_direction
from steerkit.terms import OptionTerms, TokenTerms
from steerkit.vector import SteeringVector

__all__ = ["collect_option_terms", "collect_setting_terms"]


def collect_option_terms(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    steering: Steering | None = None,
    batch_size: int = 8,
    filter_masked: bool = False,
    share_prompts: bool = True,
    strict: bool = True,
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OptionTerms:
    """Run the forward passes once and keep, per option token, what the steered score needs.

    Args:
        model: The model to score: the warm ``PeftModel``, or a plain model (steering then loads the vector's
            adapter onto it for the pass and unloads it after; ``Steering(..., adapter=False)`` scores static
            steering of the model as given; no steering scores it as given).
        items: Multiple-choice items (schema in the module docstring).
        tokenizer: The model's tokenizer.
        steering: ``None`` (unsteered) or a :class:`Steering`: dynamic takes the base logits with the adapter
            disabled, static the direction ``keep ⊙ v``.
        batch_size: Sequences (prompt + one option) per forward pass.
        filter_masked: Score with the ``−inf`` filter on masked tokens.
        share_prompts: Run each item's prompt once and its options on top of the prompt's KV cache (the
            same logits as full sequences up to float rounding, several times faster when prompts are long).
            Prompt tuning and p-tuning keep their virtual tokens at the head of the cache; other
            prompt-learning adapters (prefix tuning) always run full sequences.
        strict: Refuse a tokenizer that differs from the vector's.
        show_progress: Show a progress bar (tqdm) over the sequences.
        progress: Called as ``progress(done, total)`` (sequences) after each batch.

    Returns:
        An :class:`OptionTerms`.

    Raises:
        DataFormatError: A malformed item (the message names its index).
        InvalidOptionError: ``batch_size < 1``.
        IncompatibleModelError: The vector does not fit the model.
    """
    if steering is not None:
        check_mu(steering.strength, per_row=False)  # before any forward pass
    mode = steering.mode if steering is not None else "none"
    role = {"none": "warm", "static": "static", "dynamic": "dynamic"}[mode]
    alpha = steering.threshold if steering is not None else 0.1
    vector = steering.vector if steering is not None else None
    with warm_and_base(
        model,
        vector,
        need_base=mode == "dynamic",
        need_warm=steering is not None and steering.adapter,
        tokenizer=tokenizer,
        strict=strict,
        alpha=alpha,
    ) as m:
        terms = _collect(
            m,
            items,
            tokenizer=tokenizer,
            roles=(role,),
            batch_size=batch_size,
            share_prompts=share_prompts,
            show_progress=show_progress,
            progress=progress,
        )[role]
    mu = float(check_mu(steering.strength, per_row=False)) if steering is not None else 0.0
    return dataclasses.replace(terms, filter_masked=filter_masked, mu=mu, mode=mode)


def collect_setting_terms(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    vector: SteeringVector,
    settings: Sequence[str],
    mu: float | None = None,
    mu_static: float | None = None,
    batch_size: int = 8,
    filter_masked: bool = False,
    share_prompts: bool = True,
    strict: bool = True,
    progress: Callable[[int, int], None] | None = None,
    bounded_memory: bool = False,
) -> dict[str, OptionTerms]:
    """Option terms of several settings from one pass: the warm and base logits of each batch serve them all.

    ``base`` scores the base logits, ``warm`` the warm ones, ``static`` the warm ones with direction ``keep ⊙ v``
    and ``dynamic`` with δ̂ from both: two forwards per batch whatever the settings (scoring each setting on its
    own runs up to five), with the same scores as :func:`collect_option_terms` per setting.

    Args:
        model: The warm ``PeftModel``, or a plain model (the vector's adapter is loaded for the pass).
        items: Multiple-choice items.
        tokenizer: The model's tokenizer.
        vector: The steering vector (it must carry its adapter when ``model`` is a plain model).
        settings: Any of ``"base"``, ``"warm"``, ``"static"``, ``"dynamic"``.
        mu: Dynamic strength (default the vector's ``mu``).
        mu_static: Static strength (default the vector's ``mu_static``).
        batch_size: Sequences per forward pass.
        filter_masked: Score with the ``−inf`` filter on masked tokens.
        share_prompts: As in :func:`collect_option_terms`.
        strict: Refuse a tokenizer that differs from the vector's.
        progress: Called as ``progress(done, total)`` (sequences).
        bounded_memory: On CPU, hand the freed logits blocks back to the OS after each block, so the resident
            size stays that of a plain forward (build's ranking pass), at some cost in speed.

    Returns:
        ``{setting: OptionTerms}`` in ``settings`` order.

    Raises:
        InvalidOptionError: An unknown setting or a bad μ.
        AdapterError: ``model`` is a plain model and the vector has no adapter.
    """
    unknown = [s for s in settings if s not in ("base", "warm", "static", "dynamic")]
    if unknown:
        raise InvalidOptionError(f"unknown setting(s) {unknown}", hint="use base, warm, static or dynamic")
    dynamic, static = Steering(vector, "dynamic", mu), Steering(vector, "static", mu_static)
    roles = tuple(dict.fromkeys(settings))
    with warm_and_base(model, vector, need_base=True, tokenizer=tokenizer, strict=strict, alpha=dynamic.threshold) as m:
        terms = _collect(
            m,
            items,
            tokenizer=tokenizer,
            roles=roles,
            batch_size=batch_size,
            share_prompts=share_prompts,
            show_progress=False,
            progress=progress,
            trim=bounded_memory,
        )
    mus = {"base": 0.0, "warm": 0.0, "static": float(static.strength), "dynamic": float(dynamic.strength)}
    modes = {"base": "none", "warm": "none", "static": "static", "dynamic": "dynamic"}
    return {s: dataclasses.replace(terms[s], filter_masked=filter_masked, mu=mus[s], mode=modes[s]) for s in settings}


def _collect(
    models: WarmAndBase,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    roles: Sequence[str],
    batch_size: int,
    share_prompts: bool,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
    trim: bool = False,
) -> dict[str, OptionTerms]:
    """One pass over the option sequences; per role (``warm``, ``base``, ``static``, ``dynamic``) its terms.

    ``warm`` and ``base`` score the warm or base logits unsteered; ``static`` and ``dynamic`` the warm logits
    with their direction. Base logits (adapter disabled) are computed only when a role needs them.
    """
    validate_items(items)
    if batch_size < 1:
        raise InvalidOptionError(f"batch_size must be at least 1, got {batch_size}", got=batch_size)
    sequences, layout = encode_options(items, tokenizer)
    needs_base = any(r in ("base", "dynamic") for r in roles)
    if needs_base and models.base is None:
        raise InvalidOptionError("base logits need a vector with its adapter, or a PeftModel")
    warm_model, alpha, n_tokens = models.warm, models.alpha, models.n_tokens
    static_vector = models.static_vector if "static" in roles else None
    device = model_device(warm_model)
    cpu = device.type == "cpu"
    pad = pad_id(tokenizer)
    virtual = virtual_prompt(warm_model) if is_prompt_learning(warm_model) else None
    share = share_prompts and (virtual is not None or not is_prompt_learning(warm_model))
    warm_caller = virtual if virtual is not None else warm_model
    bar = _progress_bar(len(sequences)) if show_progress else None
    parts: dict[str, list[TokenTerms]] = {r: [] for r in roles}
    segments: list[Tensor] = []
    done = 0

    def both(fn: Callable[..., Tensor], *args: Any) -> tuple[Tensor | None, Tensor | None]:
        """Warm logits (when a role needs them), and the base logits of the same rows when a role needs them."""
        warm = fn(warm_caller if share else warm_model, *args, role="warm") if roles != ("base",) else None
        if not needs_base or models.base is None:
            return warm, None
        with models.base() as base_model:
            return warm, fn(base_model, *args, role="base")

    batches = list(prompt_groups(sequences, batch_size) if share else length_batches(sequences, batch_size))
    common = CommonPrefix(sequences) if share else None  # from every sequence, on every rank: the same prefix
    try:
        for chunk in (batches[i] for i in shard(len(batches))):
            with torch.no_grad():
                if common is not None:
                    prompt, suffixes = split_group(sequences, chunk, device)
                    warm, base = both(common.option_logits, prompt, suffixes, pad)
                    targets = torch.cat(suffixes)
                    seg = [k for k, suffix in zip(chunk, suffixes, strict=True) for _ in range(suffix.numel())]
                else:
                    ids, mask, r_t, c_t, seg = padded_batch(sequences, chunk, pad, device)
                    targets = ids[r_t, c_t + 1]
                    warm, base = both(option_logits, ids, mask, r_t, c_t)  # role is ignored
            for role in roles:
                parts[role] += _role_terms(
                    role, warm, base, targets, static_vector, alpha=alpha, n_tokens=n_tokens, trim=trim and cpu
                )
            segments.append(torch.tensor(seg, dtype=torch.long))
            del warm, base
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if progress is not None:
                progress(done, len(sequences))
    finally:
        if bar is not None:
            bar.close()
    parts, segments = gather_terms(parts, segments, len(batches))
    segment = torch.cat(segments)
    return {
        r: OptionTerms(terms=TokenTerms.cat(parts[r]), segment=segment, n_options=len(sequences), layout=layout)
        for r in roles
    }


def _role_terms(
    role: str,
    warm: Tensor | None,
    base: Tensor | None,
    targets: Tensor,
    static_vector: Tensor | None,
    *,
    alpha: float,
    n_tokens: int | None,
    trim: bool,
) -> list[TokenTerms]:
    """One role's terms of a batch's ``[T, V]`` logits, in ``[chunk, V]`` blocks (the direction, the mask and
    their float64 copies never exceed a block); ``trim``: hand each block's freed memory back to the OS (blocks
    and batches differ in size, and glibc would otherwise keep them)."""
    logits = base if role == "base" else warm
    assert logits is not None
    rows = max(16, CHUNK_ELEMENTS // logits.shape[-1])
    out = []
    for lo in range(0, logits.shape[0], rows):
        block = logits[lo : lo + rows]
        direction, keep = steering_direction(
            block,
            base_logits=base[lo : lo + rows] if role == "dynamic" and base is not None else None,
            static_vector=static_vector if role == "static" else None,
            alpha=alpha,
            n_tokens=n_tokens,
        )
        out.append(TokenTerms.from_logits(block.cpu(), direction.cpu(), keep.cpu(), targets[lo : lo + rows].cpu()))
        del direction, keep
        if trim:
            trim_heap()
    return out


def _progress_bar(total: int) -> Any:
    """A tqdm bar over the option sequences (``show_progress=True``)."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc="scoring options", unit="seq")


def score_choices(
    model: Any,
    prompt: str,
    choices: Sequence[str],
    *,
    tokenizer: Any,
    steering: Steering | None = None,
    batch_size: int = 8,
    filter_masked: bool = False,
    strict: bool = True,
) -> list[float]:
    """Score each choice by the summed log-probability of its tokens after ``prompt`` (teacher-forced).

    Args:
        model: Base model or warm ``PeftModel`` (scored as is when ``steering`` is ``None``).
        prompt: The context.
        choices: Option texts (with their leading space, e.g. ``" Paris"``).
        tokenizer: The model's tokenizer.
        steering: ``None`` or a :class:`Steering`.
        batch_size: Sequences per forward pass.
        filter_masked: Apply the ``−inf`` filter (off: option scoring uses no filter, docs/concepts.md).
        strict: Refuse a tokenizer that differs from the vector's.

    Returns:
        One float per choice.

    Example:
        >>> score_choices(model, "Q: Capital of France?\\nA:", [" Paris", " Rome"], tokenizer=tok)  # doctest: +SKIP
        [-1.2, -7.9]
    """
    item = {"prompt": prompt, "choices": list(choices), "label": 0}
    terms = collect_option_terms(
        model,
        [item],
        tokenizer=tokenizer,
        steering=steering,
        batch_size=batch_size,
        filter_masked=filter_masked,
        strict=strict,
    )
    return terms.item_scores()[0]["choices"]
