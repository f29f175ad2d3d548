"""Warm-starting: a short PEFT fine-tune (LoRA, IA3, prompt tuning, p-tuning) on prompt/completion pairs.

The paper's warm start (docs/concepts.md) is a brief adaptation of the base model whose distribution SVDecode then
steers along. This module owns the method presets (the paper's: LoRA r=8, alpha=16, dropout 0.1; peft's IA3
defaults; 20 virtual tokens for prompt/p-tuning) and a plain, seeded AdamW loop: the loss is the mean
cross-entropy over completion tokens only (prompt and padding tokens excluded), batches are right-padded, and
the whole run — adapter initialisation, data order, dropout — is bit-reproducible for a seed.
"""

from __future__ import annotations

import functools
import os
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from steerkit._hf import pad_id
from steerkit._io import atomic_directory, check_replaceable
from steerkit.data import as_pairs, encode_pair
from steerkit.errors import AdapterError, EmptyDataError, InvalidOptionError
from steerkit.readers import load_pairs

__all__ = ["METHODS", "check_adapter_target", "peft_config", "save_adapter", "warm_start"]

#: Warm-start methods and the peft configuration each maps to.
METHODS: tuple[str, ...] = ("lora", "ia3", "prompt_tuning", "p_tuning")
NUM_VIRTUAL_TOKENS = 20
#: Training pairs the before/after loss of :func:`warm_start` is measured on (two forward passes, no gradient).
LOSS_PAIRS = 32


def peft_config(method: str) -> Any:
    """The peft config of a warm-start method (paper defaults; target modules picked by peft per architecture).

    Args:
        method: One of :data:`METHODS`.

    Returns:
        A ``LoraConfig``, ``IA3Config``, ``PromptTuningConfig`` or ``PromptEncoderConfig`` for causal LMs.

    Raises:
        InvalidOptionError: ``method`` is not one of :data:`METHODS`.
    """
    if method not in METHODS:
        raise InvalidOptionError(
            f"unknown warm-start method {method!r}",
            hint=f"use one of: {', '.join(METHODS)}",
            got=method,
            expected=list(METHODS),
        )
    from peft import IA3Config, LoraConfig, PromptEncoderConfig, PromptTuningConfig, TaskType

    if method == "lora":
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.1)
    if method == "ia3":
        return IA3Config(task_type=TaskType.CAUSAL_LM)
    if method == "prompt_tuning":
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NUM_VIRTUAL_TOKENS)
    return PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NUM_VIRTUAL_TOKENS)


def warm_start(
    model: Any,
    data: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    tokenizer: Any,
    method: str = "lora",
    epochs: int = 1,
    lr: float = 5e-5,
    batch_size: int = 1,
    max_length: int = 512,
    seed: int = 0,
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
    loss_pairs: int = LOSS_PAIRS,
) -> Any:
    """Fine-tune a fresh PEFT adapter on ``model`` for a few epochs: the warm-started model φ of SVDecode.

    ``model`` is wrapped with ``peft.get_peft_model`` (LoRA and IA3 inject their layers into it, as peft does).
    The loop is plain AdamW (no weight decay, no schedule) on the mean token cross-entropy of the completions;
    the caller's global RNG state is left untouched. The per-step losses are kept on the returned model as
    ``steerkit_losses`` (a list of floats: each step's batch, so the first and last are different examples), and
    the comparable loss as ``steerkit_loss``: ``{"before", "after", "pairs"}``, the mean cross-entropy per
    completion token of the same ``loss_pairs`` training pairs (drawn with ``seed``) before the first step and after
    the last, in eval mode (two forward passes over them, no gradient).

    Args:
        model: A transformers causal LM (not already a ``PeftModel``).
        data: Prompt/completion pairs, or a data path :func:`steerkit.data.load_pairs` reads.
        tokenizer: The model's tokenizer.
        method: ``"lora"``, ``"ia3"``, ``"prompt_tuning"`` or ``"p_tuning"``.
        epochs: Passes over the data.
        lr: AdamW learning rate (the paper's 5e-5 barely moves a small model; try 1e-3 for a visible change).
        batch_size: Pairs per optimiser step.
        max_length: Most tokens per pair (the prompt is cut from its start past this).
        seed: Seeds the adapter initialisation, the data order and dropout.
        show_progress: Print one line per step to stderr.
        progress: Called as ``progress(step, total_steps)`` after each step (the CLI renders it).
        loss_pairs: How many training pairs the before/after loss is measured on (0: not measured).

    Returns:
        The ``PeftModel``, in eval mode.

    Raises:
        InvalidOptionError: Unknown ``method`` or a non-positive ``epochs``/``batch_size``/``max_length``/``lr``.
        AdapterError: ``model`` already is a ``PeftModel``.
        DataFormatError: Malformed data (``EmptyDataError`` when there is none).

    Example:
        >>> warm = warm_start(model, "train.jsonl", tokenizer=tok, method="lora", lr=1e-3)  # doctest: +SKIP
        >>> warm.steerkit_losses[0] > warm.steerkit_losses[-1]                              # doctest: +SKIP
        True
    """
    config = peft_config(method)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or value < 1 or (name == "max_length" and value < 2):
            raise InvalidOptionError(f"{name} must be a positive integer, got {value!r}", got=value)
    if not lr > 0:
        raise InvalidOptionError(f"lr must be positive, got {lr!r}", got=lr)
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise AdapterError(
            "model is already a PeftModel",
            hint="pass the plain base model; warm_start adds a fresh adapter",
        )
    pairs = load_pairs(data) if isinstance(data, (str, os.PathLike)) else as_pairs(data)
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"], max_length=max_length) for p in pairs]
    encoded = [(ids, start) for ids, start in encoded if len(ids) > max(start, 1)]
    if not encoded:
        raise EmptyDataError(
            "no completion tokens to train on (every completion is empty after tokenization)",
            hint="give pairs with non-empty completions",
        )
    pad = pad_id(tokenizer)
    device = next(model.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    steps_per_epoch = -(-len(encoded) // batch_size)
    total = epochs * steps_per_epoch
    losses: list[float] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        num_virtual = int(getattr(config, "num_virtual_tokens", 0) or 0) if config.is_prompt_learning else 0
        probe = random.Random(seed).sample(encoded, min(loss_pairs, len(encoded)))
        loss_of = functools.partial(_mean_loss, probe, batch_size=batch_size, pad_id=pad, num_virtual=num_virtual)
        before = loss_of(peft_model, device=device)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        order_rng = random.Random(seed)
        peft_model.train()
        step = 0
        for _ in range(epochs):
            order = list(range(len(encoded)))
            order_rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                batch = [encoded[i] for i in order[start : start + batch_size]]
                loss = _batch_loss(peft_model, batch, pad_id=pad, num_virtual=num_virtual, device=device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                if show_progress:
                    print(f"warm_start: step {step}/{total} loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
                if progress is not None:
                    progress(step, total)
    peft_model.eval()
    peft_model.steerkit_losses = losses
    peft_model.steerkit_loss = {"before": before, "after": loss_of(peft_model, device=device), "pairs": len(probe)}
    return peft_model


def _mean_loss(
    probe: list[tuple[list[int], int]],
    peft_model: Any,
    *,
    batch_size: int,
    pad_id: int,
    num_virtual: int,
    device: torch.device,
) -> float | None:
    """Mean cross-entropy per completion token of ``probe`` in eval mode (``None`` for no pairs)."""
    if not probe:
        return None
    was_training = peft_model.training
    peft_model.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for start in range(0, len(probe), batch_size):
            batch = probe[start : start + batch_size]
            n = sum(len(ids) - max(begin, 1) for ids, begin in batch)
            loss = _batch_loss(peft_model, batch, pad_id=pad_id, num_virtual=num_virtual, device=device)
            total, tokens = total + float(loss) * n, tokens + n
    peft_model.train(was_training)
    return total / tokens


def _batch_loss(
    peft_model: Any, batch: list[tuple[list[int], int]], *, pad_id: int, num_virtual: int, device: torch.device
) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of a right-padded batch."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        first = max(start, 1)  # the first token has no context to be predicted from
        targets[row, first : len(ids)] = torch.tensor(ids[first:], dtype=torch.long)
    # Logits are needed only from the position before the earliest completion token on: the head
    # over every prompt position of a few-shot primer costs about a third of each step.
    first = min(max(start, 1) for _, start in batch)
    keep = width - first + 1
    kwargs = {"logits_to_keep": keep} if _takes_logits_to_keep(peft_model) else {}
    out = peft_model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
    # prompt-learning methods prepend their virtual tokens; the last `keep` positions are real ones either way
    logits = out.logits[:, -keep:, :] if kwargs else out.logits[:, num_virtual + first - 1 :, :]
    # logits at position j predict the token at j + 1
    pred = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
    gold = targets[:, first:].reshape(-1).to(device)
    return torch.nn.functional.cross_entropy(pred, gold, ignore_index=-100, reduction="mean")


def _takes_logits_to_keep(peft_model: Any) -> bool:
    """Whether the wrapped model's forward computes logits for the last N positions only (transformers ≥ 4.50)."""
    import inspect

    return "logits_to_keep" in inspect.signature(peft_model.get_base_model().forward).parameters


def check_adapter_target(directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, a folder :func:`save_adapter` may not write to.

    A new or empty folder is fine; an existing adapter folder (``adapter_config.json``) only with ``overwrite``;
    any other non-empty folder never, so that ``--force`` can never delete a user's files.

    Raises:
        ArtifactExistsError: ``directory`` is a file, a non-empty folder without ``overwrite``, or a non-empty
            folder that is not a PEFT adapter.
    """
    target = Path(directory)
    check_replaceable(target, overwrite=overwrite, marker="adapter_config.json", kind="a PEFT adapter")
    return target


def save_adapter(peft_model: Any, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Save a warm start's adapter (``save_pretrained``) atomically: staged beside the target, then swapped in.

    An interrupted save leaves the old adapter or the new one, never neither (:func:`steerkit._io.atomic_directory`).

    Args:
        peft_model: The ``PeftModel`` :func:`warm_start` returned.
        directory: Target folder (see :func:`check_adapter_target` for what may be replaced).
        overwrite: Replace an existing adapter folder.

    Returns:
        The folder.

    Raises:
        ArtifactExistsError: See :func:`check_adapter_target`.

    Example:
        >>> save_adapter(warm_start(model, "train.jsonl", tokenizer=tok), "my-lora")   # doctest: +SKIP
        PosixPath('my-lora')
    """
    target = check_adapter_target(directory, overwrite=overwrite)
    with atomic_directory(target) as staging:
        peft_model.save_pretrained(staging)
    return target
