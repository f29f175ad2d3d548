"""Option sequences for scoring: token ids, batches, and prompt / primer KV sharing.

Each distinct (item, choice) becomes ``prompt ids + choice ids`` (:func:`encode_options`, the tokenisation of
:func:`steerkit.data.encode_pair`). :func:`prompt_groups` batches the options of one prompt together;
:class:`CommonPrefix` runs the prefix every prompt shares (a few-shot primer) once per model role, each prompt
once on a copy of its cache, and the options on copies of the prompt's (the logits of full sequences up to float
rounding, several times faster on long prompts). :class:`VirtualPrompt` does the same behind the virtual tokens
of prompt tuning and p-tuning. :func:`length_batches` and :func:`padded_batch` are the plain right-padded path.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerkit._hf import cache_arg
from steerkit.chat import validate_messages
from steerkit.data import encode_pair
from steerkit.errors import DataFormatError, EmptyDataError

__all__ = [
    "CommonPrefix",
    "encode_options",
    "is_prompt_learning",
    "length_batches",
    "model_device",
    "option_logits",
    "padded_batch",
    "prompt_groups",
    "split_group",
    "validate_items",
    "virtual_prompt",
]


def encode_options(
    items: Sequence[Mapping[str, Any]], tokenizer: Any
) -> tuple[list[tuple[list[int], int]], list[dict[str, list[int]]]]:
    """Token ids ``(prompt + option, n_prompt)`` of each distinct option, and each item's option indices."""
    sequences: list[tuple[list[int], int]] = []
    layout: list[dict[str, list[int]]] = []
    for i, item in enumerate(items):
        prompt = item["prompt"]
        if isinstance(prompt, str) and not tokenizer(prompt)["input_ids"]:
            raise bad_item(i, "the prompt encodes to no tokens, so the first option token has no context")
        known: dict[str, int] = {}
        entry: dict[str, list[int]] = {}
        for key in ("choices", "mc2_choices"):
            if key not in item:
                continue
            idx = []
            for choice in item[key]:
                text = choice if isinstance(choice, str) else json.dumps(choice, sort_keys=True)  # messages
                if text not in known:
                    ids, start = encode_pair(tokenizer, prompt, choice, max_length=sys.maxsize)
                    if start >= len(ids):
                        raise bad_item(i, f"choice {choice!r} adds no tokens after the prompt")
                    known[text] = len(sequences)
                    sequences.append((ids, start))
                idx.append(known[text])
            entry[key] = idx
        layout.append(entry)
    return sequences, layout


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device  # type: ignore[no-any-return]
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def option_logits(model: Any, ids: Tensor, mask: Tensor, rows: Tensor, cols: Tensor, role: str = "") -> Tensor:
    """Float32 logits ``[T, V]`` at ``(rows, cols)`` of a right-padded batch (virtual prompt tokens skipped)."""
    out = model(input_ids=ids, attention_mask=mask)
    logits = out.logits[:, -ids.shape[1] :]  # prompt-tuning adapters prepend virtual tokens
    selected: Tensor = logits[rows, cols].float()
    return selected


def is_prompt_learning(model: Any) -> bool:
    config = getattr(model, "peft_config", None)
    if not isinstance(config, Mapping):
        return False
    active = config.get(getattr(model, "active_adapter", "default"))
    return bool(getattr(active, "is_prompt_learning", False))


def _cache_kwarg(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` under the name ``model`` takes its KV cache (``cache``, ``past_key_values`` before)."""
    return {cache_arg(model): cache}


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward returned (``out.cache``; ``out.past_key_values`` before its rename)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


class VirtualPrompt:
    """A prompt-tuning or p-tuning ``PeftModel`` called like a plain causal LM that continues a KV cache.

    The first call (no cache) prepends the learned virtual-token embeddings, as the adapter's own forward does,
    and drops their logits; later calls run on the cache, whose first ``num_virtual_tokens`` positions hold the
    virtual tokens, so their positions and attention masks are shifted by that many. The logits are those of the
    adapter's forward on the full sequence up to float rounding.
    """

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model
        self.model = peft_model.get_base_model()
        self.n = int(peft_model.active_peft_config.num_virtual_tokens)
        self.inner_cache_arg = cache_arg(self.model)

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

    __call__ = forward  # takes its cache as ``cache``, which is what ``cache_arg`` reads off ``forward``


def virtual_prompt(model: Any) -> VirtualPrompt | None:
    """The cached-scoring wrapper of a prompt-tuning / p-tuning adapter (``None`` for other prompt learning)."""
    config = getattr(model, "active_peft_config", None)
    kind = str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1]
    if kind not in ("PROMPT_TUNING", "P_TUNING") or not hasattr(model, "get_prompt"):
        return None
    return VirtualPrompt(model)


def length_batches(sequences: Sequence[tuple[list[int], int]], batch_size: int) -> Iterator[list[int]]:
    """Sequence indices in batches of similar lengths."""
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][0]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def prompt_groups(sequences: Sequence[tuple[list[int], int]], batch_size: int) -> Iterator[list[int]]:
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


def padded_batch(
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


def split_group(
    sequences: Sequence[tuple[list[int], int]], chunk: Sequence[int], device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """The shared prompt ids ``[P]`` of a group and each option's own tokens."""
    first, start = sequences[chunk[0]]
    prompt = torch.tensor(first[:start], dtype=torch.long, device=device)
    suffixes = [torch.tensor(sequences[k][0][start:], dtype=torch.long, device=device) for k in chunk]
    return prompt, suffixes


class CommonPrefix:
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


def bad_item(index: int, problem: str) -> DataFormatError:
    return DataFormatError(
        f"item {index}: {problem}",
        hint='items are {"prompt": str, "choices": [str, ...], "label": int} (or "labels": 0/1 per choice)',
        index=index,
    )


def validate_items(items: Sequence[Mapping[str, Any]]) -> None:
    if len(items) == 0:
        raise EmptyDataError("no multiple-choice items to evaluate", hint="give at least one item")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise bad_item(i, f"expected a mapping, got {type(item).__name__}")
        prompt = item.get("prompt")
        if isinstance(prompt, list):
            validate_messages(prompt, f"item {i}", what="prompt")
        elif not isinstance(prompt, str):
            raise bad_item(i, "'prompt' missing or not a string (or a list of chat messages)")
        choices = item.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) == 0:
            raise bad_item(i, "'choices' missing or empty")
        if "label" in item:
            label = item["label"]
            if not isinstance(label, int) or not 0 <= label < len(choices):
                raise bad_item(i, f"'label' {label!r} is not an index into {len(choices)} choices")
        elif "labels" in item:
            labels = item["labels"]
            if len(labels) != len(choices) or any(x not in (0, 1) for x in labels):
                raise bad_item(i, f"'labels' must be 0/1 for each of the {len(choices)} choices")
        else:
            raise bad_item(i, "neither 'label' nor 'labels' given")
        if "mc2_choices" in item:
            mc2 = item["mc2_choices"]
            mc2_labels = item.get("mc2_labels")
            if not mc2 or mc2_labels is None or len(mc2_labels) != len(mc2) or any(x not in (0, 1) for x in mc2_labels):
                raise bad_item(i, "'mc2_choices' needs 'mc2_labels' with a 0/1 label per choice")
