"""Multiple-choice evaluation (DESIGN §5): option scores under base, warm, static or dynamic steering, metrics.

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

One code path scores every setting: the warm logits at the option positions (and, in dynamic mode, the base
logits with the adapter disabled) become :class:`~steerkit.svdecode.TokenTerms` with direction δ̂ (dynamic),
``keep ⊙ v`` (static) or zero (no steering); an option's score is the segment sum of ``terms.logprobs(μ)``.
So any μ can be re-scored without a forward pass (:mod:`steerkit.tune` relies on this). No ``−inf`` filter
unless asked: most options contain a token outside the confidence mask.

Metrics: ``accuracy`` (argmax is a correct choice); for items with an MC2 set, TruthfulQA's standard ``mc1``
(argmax of the MC1 choices is the correct one) and ``mc2`` (``Σ_true exp(s) / Σ_all exp(s)`` over the MC2
choices). Each with ``n`` and a percentile-bootstrap 95% interval; per-item values are returned so callers can
compare two settings with :func:`paired_bootstrap`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steerkit.artifact import SteeringVector
from steerkit.data import encode_pair
from steerkit.errors import DataFormatError, EmptyDataError, InvalidOptionError
from steerkit.svdecode import TokenTerms

if TYPE_CHECKING:
    from steerkit.decode import Steered

__all__ = [
    "METRICS",
    "OptionTerms",
    "collect_option_terms",
    "collect_setting_terms",
    "evaluate_mc",
    "item_metrics",
    "paired_bootstrap",
    "score_choices",
    "steering_context",
    "summarize",
    "terms_result",
]

METRICS: tuple[str, ...] = ("accuracy", "mc1", "mc2")


# --- items -----------------------------------------------------------------------------------------------


def _bad(index: int, problem: str) -> DataFormatError:
    return DataFormatError(
        f"item {index}: {problem}",
        hint='items are {"prompt": str, "choices": [str, ...], "label": int} (or "labels": 0/1 per choice)',
        index=index,
    )


def _validate(items: Sequence[Mapping[str, Any]]) -> None:
    if len(items) == 0:
        raise EmptyDataError("no multiple-choice items to evaluate", hint="give at least one item")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _bad(i, f"expected a mapping, got {type(item).__name__}")
        if not isinstance(item.get("prompt"), str):
            raise _bad(i, "'prompt' missing or not a string")
        choices = item.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) == 0:
            raise _bad(i, "'choices' missing or empty")
        if "label" in item:
            label = item["label"]
            if not isinstance(label, int) or not 0 <= label < len(choices):
                raise _bad(i, f"'label' {label!r} is not an index into {len(choices)} choices")
        elif "labels" in item:
            labels = item["labels"]
            if len(labels) != len(choices) or any(x not in (0, 1) for x in labels):
                raise _bad(i, f"'labels' must be 0/1 for each of the {len(choices)} choices")
        else:
            raise _bad(i, "neither 'label' nor 'labels' given")
        if "mc2_choices" in item:
            mc2 = item["mc2_choices"]
            mc2_labels = item.get("mc2_labels")
            if not mc2 or mc2_labels is None or len(mc2_labels) != len(mc2) or any(x not in (0, 1) for x in mc2_labels):
                raise _bad(i, "'mc2_choices' needs 'mc2_labels' with a 0/1 label per choice")


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionTerms:
    """Everything needed to score every option of a set of items at any μ, without a forward pass.

    Attributes:
        terms: :class:`TokenTerms` of every option token, options one after another.
        segment: ``[T]`` the option each token belongs to.
        n_options: Number of distinct (item, choice text) options.
        layout: Per item, the option indices of ``"choices"`` and (when present) ``"mc2_choices"``.
        filter_masked: Whether scores use the ``−inf`` filter (a gold token outside the mask scores ``−inf``).
        mu: The strength of the steering these terms were built for (0.0 for none).
        mode: ``"dynamic"``, ``"static"`` or ``"none"``.
    """

    terms: TokenTerms
    segment: Tensor
    n_options: int
    layout: list[dict[str, list[int]]]
    filter_masked: bool = False
    mu: float = 0.0
    mode: str = "none"

    def option_scores(self, mu: float | None = None) -> Tensor:
        """Summed option log-probabilities ``[n_options]`` (float64) at strength ``mu`` (default ``self.mu``)."""
        m = self.mu if mu is None else float(mu)
        if self.filter_masked:
            # ẑ[~keep] = −inf: the normaliser runs over the kept entries only, a gold token outside scores −inf.
            kept_only = dataclasses.replace(self.terms, rest_lse=torch.full_like(self.terms.rest_lse, float("-inf")))
            lp = kept_only.logprobs(m)
            lp = torch.where(self.terms.gold_kept, lp, torch.full_like(lp, float("-inf")))
        else:
            lp = self.terms.logprobs(m)
        return torch.zeros(self.n_options, dtype=torch.float64).index_add_(0, self.segment, lp)

    def item_scores(self, mu: float | None = None) -> list[dict[str, list[float]]]:
        """Per item, the scores of ``"choices"`` (and ``"mc2_choices"``) at strength ``mu``."""
        scores = self.option_scores(mu).tolist()
        return [{key: [scores[j] for j in idx] for key, idx in entry.items()} for entry in self.layout]


def _encode_options(
    items: Sequence[Mapping[str, Any]], tokenizer: Any
) -> tuple[list[tuple[list[int], int]], list[dict[str, list[int]]]]:
    """Token ids ``(prompt + option, n_prompt)`` of each distinct option, and each item's option indices."""
    sequences: list[tuple[list[int], int]] = []
    layout: list[dict[str, list[int]]] = []
    for i, item in enumerate(items):
        prompt = item["prompt"]
        if not tokenizer(prompt)["input_ids"]:
            raise _bad(i, "the prompt encodes to no tokens, so the first option token has no context")
        known: dict[str, int] = {}
        entry: dict[str, list[int]] = {}
        for key in ("choices", "mc2_choices"):
            if key not in item:
                continue
            idx = []
            for choice in item[key]:
                if choice not in known:
                    ids, start = encode_pair(tokenizer, prompt, choice, max_length=sys.maxsize)
                    if start >= len(ids):
                        raise _bad(i, f"choice {choice!r} adds no tokens after the prompt")
                    known[choice] = len(sequences)
                    sequences.append((ids, start))
                idx.append(known[choice])
            entry[key] = idx
        layout.append(entry)
    return sequences, layout


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device  # type: ignore[no-any-return]
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _option_logits(model: Any, ids: Tensor, mask: Tensor, rows: Tensor, cols: Tensor, role: str = "") -> Tensor:
    """Float32 logits ``[T, V]`` at ``(rows, cols)`` of a right-padded batch (virtual prompt tokens skipped)."""
    out = model(input_ids=ids, attention_mask=mask)
    logits = out.logits[:, -ids.shape[1] :]  # prompt-tuning adapters prepend virtual tokens
    selected: Tensor = logits[rows, cols].float()
    return selected


def _is_prompt_learning(model: Any) -> bool:
    config = getattr(model, "peft_config", None)
    if not isinstance(config, Mapping):
        return False
    active = config.get(getattr(model, "active_adapter", "default"))
    return bool(getattr(active, "is_prompt_learning", False))


def _cache_kwarg(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` under the name ``model`` takes its KV cache (``cache``, ``past_key_values`` before)."""
    from steerkit.decode import _cache_arg

    return {_cache_arg(model): cache}


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward returned (``out.cache``; ``out.past_key_values`` before its rename)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


class _VirtualPrompt:
    """A prompt-tuning or p-tuning ``PeftModel`` called like a plain causal LM that continues a KV cache.

    The first call (no cache) prepends the learned virtual-token embeddings, as the adapter's own forward does,
    and drops their logits; later calls run on the cache, whose first ``num_virtual_tokens`` positions hold the
    virtual tokens, so their positions and attention masks are shifted by that many. The logits are those of the
    adapter's forward on the full sequence up to float rounding.
    """

    def __init__(self, peft_model: Any) -> None:
        from steerkit.decode import _cache_arg

        self.peft_model = peft_model
        self.model = peft_model.get_base_model()
        self.n = int(peft_model.active_peft_config.num_virtual_tokens)
        self.inner_cache_arg = _cache_arg(self.model)

    def forward(
        self,
        *,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        use_cache: bool = True,
    ) -> Any:
        b = input_ids.shape[0]
        first = cache is None
        kwargs: dict[str, Any] = {"use_cache": use_cache}
        if first:
            embeds = self.peft_model.word_embeddings(input_ids)
            prompts = self.peft_model.get_prompt(batch_size=b).to(embeds.dtype)
            kwargs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)
        else:
            kwargs["input_ids"] = input_ids
            kwargs[self.inner_cache_arg] = cache
        if attention_mask is not None:
            ones = torch.ones((b, self.n), dtype=attention_mask.dtype, device=attention_mask.device)
            kwargs["attention_mask"] = torch.cat([ones, attention_mask], dim=1)
        if position_ids is not None:
            shifted = position_ids + self.n
            if first:
                virtual = torch.arange(self.n, device=shifted.device).expand(shifted.shape[0], -1)
                shifted = torch.cat([virtual, shifted], dim=1)
            kwargs["position_ids"] = shifted
        out = self.model(**kwargs)
        if first:
            out.logits = out.logits[:, self.n :]
        return out

    __call__ = forward  # takes its cache as ``cache``, which is what ``_cache_arg`` reads off ``forward``


def _virtual_prompt(model: Any) -> _VirtualPrompt | None:
    """The cached-scoring wrapper of a prompt-tuning / p-tuning adapter (``None`` for other prompt learning)."""
    config = getattr(model, "active_peft_config", None)
    kind = str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1]
    if kind not in ("PROMPT_TUNING", "P_TUNING") or not hasattr(model, "get_prompt"):
        return None
    return _VirtualPrompt(model)


def _length_batches(sequences: Sequence[tuple[list[int], int]], batch_size: int) -> Iterator[list[int]]:
    """Sequence indices in batches of similar lengths."""
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][0]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _prompt_groups(sequences: Sequence[tuple[list[int], int]], batch_size: int) -> Iterator[list[int]]:
    """Runs of consecutive sequences with the same prompt ids, at most ``batch_size`` each."""
    group: list[int] = []
    for k, (ids, start) in enumerate(sequences):
        if group:
            first, first_start = sequences[group[0]]
            if len(group) == batch_size or first_start != start or first[:first_start] != ids[:start]:
                yield group
                group = []
        group.append(k)
    if group:
        yield group


def _padded_batch(
    sequences: Sequence[tuple[list[int], int]], chunk: Sequence[int], pad: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
    """A right-padded batch of whole sequences and the (row, position) of every option-token prediction."""
    width = max(len(sequences[k][0]) for k in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    rows, cols, seg = [], [], []
    for r, k in enumerate(chunk):
        seq, n_prompt = sequences[k]
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        for pos in range(n_prompt - 1, len(seq) - 1):  # position pos predicts token pos + 1
            rows.append(r)
            cols.append(pos)
            seg.append(k)
    r_t, c_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
    return ids.to(device), mask.to(device), r_t, c_t, seg


def _split_group(
    sequences: Sequence[tuple[list[int], int]], chunk: Sequence[int], device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """The shared prompt ids ``[P]`` of a group and each option's own tokens."""
    first, start = sequences[chunk[0]]
    prompt = torch.tensor(first[:start], dtype=torch.long, device=device)
    suffixes = [torch.tensor(sequences[k][0][start:], dtype=torch.long, device=device) for k in chunk]
    return prompt, suffixes


class _CommonPrefix:
    """The token prefix every prompt shares (a few-shot primer): run once per model role, then reused.

    ``option_logits`` runs each prompt on top of a copy of the prefix's KV cache and the options on top of a
    copy of the prompt's; the logits are those of full sequences up to float rounding.
    """

    def __init__(self, sequences: Sequence[tuple[list[int], int]]) -> None:
        prompts = [ids[:start] for ids, start in sequences]
        n = min(len(p) for p in prompts) - 1 if prompts else 0  # leave every prompt at least one token of its own
        first = prompts[0] if prompts else []
        for p in prompts:
            k = 0
            while k < n and p[k] == first[k]:
                k += 1
            n = k
        self.length = n
        self.states: dict[str, Any] = {}

    def _prompt_state(self, model: Any, prompt: Tensor, role: str) -> tuple[Tensor, Any]:
        """Last-position logits ``[1, V]`` and KV cache of ``prompt``."""
        k = self.length
        if k == 0:
            out = model(input_ids=prompt[None], use_cache=True)
            return out.logits[0, -1:].float(), _returned_cache(out)
        if role not in self.states:
            self.states[role] = _returned_cache(model(input_ids=prompt[None, :k], use_cache=True))
        cache = copy.deepcopy(self.states[role])
        positions = torch.arange(k, prompt.numel(), device=prompt.device)[None]
        out = model(input_ids=prompt[None, k:], **_cache_kwarg(model, cache), position_ids=positions, use_cache=True)
        return out.logits[0, -1:].float(), _returned_cache(out)

    def option_logits(self, model: Any, prompt: Tensor, suffixes: Sequence[Tensor], pad: int, role: str) -> Tensor:
        """Float32 logits ``[T, V]`` predicting every option token, options in order.

        The options run on top of copies of the prompt's cache, right-padded, at positions ``P, P + 1, ...``
        (what a full sequence gives them).
        """
        first, prompt_cache = self._prompt_state(model, prompt, role)
        width = max(s.numel() for s in suffixes) - 1
        if width == 0:  # every option is a single token: the prompt's last logits predict all of them
            return first.expand(len(suffixes), -1)
        n, p = len(suffixes), prompt.numel()
        ids = torch.full((n, width), pad, dtype=torch.long, device=prompt.device)
        mask = torch.zeros((n, p + width), dtype=torch.long, device=prompt.device)
        mask[:, :p] = 1
        for r, suffix in enumerate(suffixes):
            ids[r, : suffix.numel() - 1] = suffix[:-1]
            mask[r, p : p + suffix.numel() - 1] = 1
        cache = prompt_cache  # a fresh cache of this call's own
        cache.batch_repeat_interleave(n)
        positions = torch.arange(p, p + width, device=prompt.device).expand(n, -1)
        rest = model(
            input_ids=ids, attention_mask=mask, **_cache_kwarg(model, cache), position_ids=positions, use_cache=True
        )
        logits: Tensor = rest.logits.float()
        return torch.cat([torch.cat([first, logits[r, : s.numel() - 1]]) for r, s in enumerate(suffixes)])


def collect_option_terms(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    steered: Steered | None = None,
    batch_size: int = 8,
    filter_masked: bool = False,
    share_prompts: bool = True,
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OptionTerms:
    """Run the forward passes once and keep, per option token, what the steered score needs.

    Args:
        model: The model to score with when ``steered`` is ``None`` (base model, or a warm ``PeftModel``).
        items: Multiple-choice items (schema in the module docstring).
        tokenizer: The model's tokenizer.
        steered: A :class:`~steerkit.decode.Steered` handle: its model gives the warm logits, its mode the
            direction (dynamic: base logits with the adapter disabled; static: ``keep ⊙ v``).
        batch_size: Sequences (prompt + one option) per forward pass.
        filter_masked: Score with the ``−inf`` filter on masked tokens.
        share_prompts: Run each item's prompt once and its options on top of the prompt's KV cache (the
            same logits as full sequences up to float rounding, several times faster when prompts are long).
            Prompt tuning and p-tuning keep their virtual tokens at the head of the cache; other
            prompt-learning adapters (prefix tuning) always run full sequences.
        show_progress: Show a progress bar (tqdm) over the sequences.
        progress: Called as ``progress(done, total)`` (sequences) after each batch.

    Returns:
        An :class:`OptionTerms`.

    Raises:
        DataFormatError: A malformed item (the message names its index).
        InvalidOptionError: ``batch_size < 1`` or a per-row (tensor) μ.
    """
    mode = steered.mode if steered is not None else "none"
    role = {"none": "warm", "static": "static", "dynamic": "dynamic"}[mode]
    mu = _float_mu(steered)
    terms = _collect(
        model if steered is None else steered.model,
        items,
        tokenizer=tokenizer,
        roles=(role,),
        steered=steered,
        batch_size=batch_size,
        share_prompts=share_prompts,
        show_progress=show_progress,
        progress=progress,
    )[role]
    return dataclasses.replace(terms, filter_masked=filter_masked, mu=mu, mode=mode)


def collect_setting_terms(
    steered: Steered,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    settings: Sequence[str],
    mu_static: float | None = None,
    batch_size: int = 8,
    filter_masked: bool = False,
    share_prompts: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, OptionTerms]:
    """Option terms of several settings from one pass: the warm and base logits of each batch serve them all.

    ``base`` scores the base logits, ``warm`` the warm ones, ``static`` the warm ones with direction ``keep ⊙ v``
    and ``dynamic`` with δ̂ from both: two forwards per batch whatever the settings (scoring each setting on its
    own runs up to five), with the same scores as :func:`collect_option_terms` per setting.

    Args:
        steered: A dynamic-mode :class:`~steerkit.decode.Steered` handle (warm model, base context, μ).
        items: Multiple-choice items.
        tokenizer: The model's tokenizer.
        settings: Any of ``"base"``, ``"warm"``, ``"static"``, ``"dynamic"``.
        mu_static: Static strength (default the vector's ``mu_static``).
        batch_size: Sequences per forward pass.
        filter_masked: Score with the ``−inf`` filter on masked tokens.
        share_prompts: As in :func:`collect_option_terms`.
        progress: Called as ``progress(done, total)`` (sequences).

    Returns:
        ``{setting: OptionTerms}`` in ``settings`` order.

    Raises:
        InvalidOptionError: ``steered`` is not in dynamic mode, or an unknown setting.
    """
    if steered.mode != "dynamic":
        raise InvalidOptionError("collect_setting_terms needs a dynamic-mode handle", got=steered.mode)
    unknown = [s for s in settings if s not in ("base", "warm", "static", "dynamic")]
    if unknown:
        raise InvalidOptionError(f"unknown setting(s) {unknown}", hint="use base, warm, static or dynamic")
    roles = tuple(dict.fromkeys(settings))
    terms = _collect(
        steered.model,
        items,
        tokenizer=tokenizer,
        roles=roles,
        steered=steered,
        batch_size=batch_size,
        share_prompts=share_prompts,
        show_progress=False,
        progress=progress,
    )
    mus = {
        "base": 0.0,
        "warm": 0.0,
        "static": steered.vector.mu_static if mu_static is None else float(mu_static),
        "dynamic": _float_mu(steered),
    }
    modes = {"base": "none", "warm": "none", "static": "static", "dynamic": "dynamic"}
    return {s: dataclasses.replace(terms[s], filter_masked=filter_masked, mu=mus[s], mode=modes[s]) for s in settings}


def _float_mu(steered: Steered | None) -> float:
    if steered is None:
        return 0.0
    if isinstance(steered.mu, Tensor):
        raise InvalidOptionError(
            "option scoring takes one μ, not a per-row tensor", hint="attach with a float mu for evaluation"
        )
    return float(steered.mu)


def _collect(
    warm_model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    roles: Sequence[str],
    steered: Steered | None,
    batch_size: int,
    share_prompts: bool,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> dict[str, OptionTerms]:
    """One pass over the option sequences; per role (``warm``, ``base``, ``static``, ``dynamic``) its terms.

    ``warm`` and ``base`` score the warm or base logits unsteered; ``static`` and ``dynamic`` the warm logits
    with their direction. Base logits (adapter disabled through ``steered``) are computed only when a role
    needs them.
    """
    from steerkit.decode import steering_direction

    _validate(items)
    if batch_size < 1:
        raise InvalidOptionError(f"batch_size must be at least 1, got {batch_size}", got=batch_size)
    sequences, layout = _encode_options(items, tokenizer)
    needs_base = any(r in ("base", "dynamic") for r in roles)
    if needs_base and (steered is None or steered.mode != "dynamic"):
        raise InvalidOptionError("base logits need a dynamic-mode handle")
    alpha = steered.alpha if steered is not None else 0.1
    n_tokens = steered.compat.n_tokens if steered is not None and steered.compat.padded else None
    static_vector = steered.static_vector if "static" in roles and steered is not None else None
    device = _device(warm_model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    virtual = _virtual_prompt(warm_model) if _is_prompt_learning(warm_model) else None
    share = share_prompts and (virtual is not None or not _is_prompt_learning(warm_model))
    warm_caller = virtual if virtual is not None else warm_model
    bar = None
    if show_progress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=len(sequences), desc="scoring options", unit="seq")
    parts: dict[str, list[TokenTerms]] = {r: [] for r in roles}
    segments: list[Tensor] = []
    done = 0

    def both(fn: Callable[..., Tensor], *args: Any) -> tuple[Tensor | None, Tensor | None]:
        """Warm logits (when a role needs them), and the base logits of the same rows when a role needs them."""
        warm = fn(warm_caller if share else warm_model, *args, role="warm") if roles != ("base",) else None
        if not needs_base or steered is None:
            return warm, None
        with steered.base_context() as base_model:
            return warm, fn(base_model, *args, role="base")

    batches = _prompt_groups(sequences, batch_size) if share else _length_batches(sequences, batch_size)
    common = _CommonPrefix(sequences) if share else None
    try:
        for chunk in batches:
            with torch.no_grad():
                if common is not None:
                    prompt, suffixes = _split_group(sequences, chunk, device)
                    warm, base = both(common.option_logits, prompt, suffixes, pad)
                    targets = torch.cat(suffixes)
                    seg = [k for k, suffix in zip(chunk, suffixes, strict=True) for _ in range(suffix.numel())]
                else:
                    ids, mask, r_t, c_t, seg = _padded_batch(sequences, chunk, pad, device)
                    targets = ids[r_t, c_t + 1]
                    warm, base = both(_option_logits, ids, mask, r_t, c_t)  # role is ignored
            for role in roles:
                logits = base if role == "base" else warm
                assert logits is not None
                direction, keep = steering_direction(
                    logits,
                    base_logits=base if role == "dynamic" else None,
                    static_vector=static_vector if role == "static" else None,
                    alpha=alpha,
                    n_tokens=n_tokens,
                )
                parts[role].append(TokenTerms.from_logits(logits.cpu(), direction.cpu(), keep.cpu(), targets.cpu()))
            segments.append(torch.tensor(seg, dtype=torch.long))
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if progress is not None:
                progress(done, len(sequences))
    finally:
        if bar is not None:
            bar.close()
    segment = torch.cat(segments)
    return {
        r: OptionTerms(terms=TokenTerms.cat(parts[r]), segment=segment, n_options=len(sequences), layout=layout)
        for r in roles
    }


@contextlib.contextmanager
def steering_context(model: Any, steering: Any, *, tokenizer: Any, strict: bool = True) -> Iterator[Steered | None]:
    """Resolve a steering spec to a :class:`~steerkit.decode.Steered` handle for the ``with`` block.

    Args:
        model: The model to attach to (for a vector or a mapping spec).
        steering: ``None`` (no steering), a ``Steered`` handle (used as is), a ``SteeringVector`` (attached in
            dynamic mode with its default μ), or a mapping ``{"vector": ..., "mode": ..., "mu": ..., "alpha": ...}``
            (the keyword arguments of :func:`steerkit.decode.attach`). What this attaches is detached on exit.
        tokenizer: Checked against the vector's tokenizer.
        strict: Refuse a tokenizer mismatch.

    Yields:
        The handle, or ``None``.

    Raises:
        InvalidOptionError: Not a steering spec.
    """
    from steerkit.decode import Steered, attach

    if steering is None or isinstance(steering, Steered):
        yield steering
        return
    if isinstance(steering, SteeringVector):
        spec: dict[str, Any] = {"vector": steering}
    elif isinstance(steering, Mapping) and isinstance(steering.get("vector"), SteeringVector):
        spec = dict(steering)
    else:
        raise InvalidOptionError(
            f"cannot steer with a {type(steering).__name__}",
            hint='give None, a Steered handle, a SteeringVector, or {"vector": v, "mode": "static", "mu": -1.0}',
        )
    vector = spec.pop("vector")
    spec.setdefault("tokenizer", tokenizer)
    spec.setdefault("strict", strict)
    handle = attach(vector, model, **spec)
    try:
        yield handle
    finally:
        handle.detach()


def score_choices(
    model: Any,
    prompt: str,
    choices: Sequence[str],
    *,
    tokenizer: Any,
    steering: Any = None,
    batch_size: int = 8,
    filter_masked: bool = False,
) -> list[float]:
    """Score each choice by the summed log-probability of its tokens after ``prompt`` (teacher-forced).

    Args:
        model: Base model or warm ``PeftModel`` (scored as is when ``steering`` is ``None``).
        prompt: The context.
        choices: Option texts (with their leading space, e.g. ``" Paris"``).
        tokenizer: The model's tokenizer.
        steering: ``None``, a ``Steered`` handle, a ``SteeringVector`` or a mapping spec (see
            :func:`steering_context`).
        batch_size: Sequences per forward pass.
        filter_masked: Apply the ``−inf`` filter (off: DESIGN §1, option scoring uses no filter).

    Returns:
        One float per choice.

    Example:
        >>> score_choices(model, "Q: Capital of France?\\nA:", [" Paris", " Rome"], tokenizer=tok)  # doctest: +SKIP
        [-1.2, -7.9]
    """
    item = {"prompt": prompt, "choices": list(choices), "label": 0}
    with steering_context(model, steering, tokenizer=tokenizer) as steered:
        terms = collect_option_terms(
            model, [item], tokenizer=tokenizer, steered=steered, batch_size=batch_size, filter_masked=filter_masked
        )
    return terms.item_scores()[0]["choices"]


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
        ``{"accuracy": [...], "mc1": [...], "mc2": [...]}``: ``accuracy`` for every item; ``mc1``/``mc2``
        ``None`` for items without an MC2 set. Ties go to the first choice.
    """
    out: dict[str, list[Any]] = {"accuracy": [], "mc1": [], "mc2": []}
    for item, s in zip(items, scores, strict=True):
        pred = _argmax(s["choices"])
        correct = pred == item["label"] if "label" in item else item["labels"][pred] == 1
        out["accuracy"].append(float(correct))
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


def summarize(per_item: Mapping[str, Sequence[Any]], *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metric values with bootstrap 95% intervals from per-item values (``None`` entries skipped).

    Returns:
        ``{metric: {"value", "n", "ci_low", "ci_high"}}`` for each metric with at least one value.
    """
    out: dict[str, Any] = {}
    for metric in METRICS:
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
    steering: Any = None,
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
        steering: ``None``, a ``Steered`` handle, a ``SteeringVector`` (dynamic, default μ) or a mapping
            ``{"vector", "mode", "mu", ...}`` passed to :func:`steerkit.decode.attach` (detached afterwards).
        batch_size: Sequences (prompt + one option) per forward pass.
        show_progress: Show a progress bar.
        progress: Called as ``progress(done, total)`` in sequences.
        n_bootstrap: Bootstrap resamples for the 95% intervals (0: no intervals).
        seed: Seed of the bootstrap.
        filter_masked: Score with the ``−inf`` filter on masked tokens (off by default).
        strict: Refuse a tokenizer that differs from the vector's.

    Returns:
        ``{"n", "accuracy": {"value", "n", "ci_low", "ci_high"}, "mc1": {...}, "mc2": {...}, "steering":
        {"mode", "mu", "filter_masked"}, "per_item": {"accuracy", "mc1", "mc2", "scores", "mc2_scores"}}``;
        ``mc1``/``mc2`` only when some item has an MC2 set.

    Raises:
        DataFormatError: A malformed item. IncompatibleModelError: the vector does not fit the model.

    Example:
        >>> res = evaluate_mc(model, items, tokenizer=tok, steering={"vector": v, "mode": "static"})  # doctest: +SKIP
        >>> res["mc2"]["value"], res["mc2"]["ci_low"], res["mc2"]["ci_high"]                          # doctest: +SKIP
    """
    if n_bootstrap < 0:
        raise InvalidOptionError(f"n_bootstrap must be ≥ 0, got {n_bootstrap}", got=n_bootstrap)
    with steering_context(model, steering, tokenizer=tokenizer, strict=strict) as steered:
        terms = collect_option_terms(
            model,
            items,
            tokenizer=tokenizer,
            steered=steered,
            batch_size=batch_size,
            filter_masked=filter_masked,
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
