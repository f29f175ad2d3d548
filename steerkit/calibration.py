"""Calibration totals: each chunk's contribution to the static vector, KL and mask counts, and their merge.

:func:`steerkit.build` runs the base and warm models over the calibration batches in chunks of tokens; every chunk
adds a :class:`Chunk` (the non-zero entries of its summed direction, its KL and counts, its kept-entry terms) to
:class:`Totals`. Under torch.distributed each rank holds the chunks of its batches; :meth:`Totals.gathered` brings
every rank's chunks to every rank as tensors, and :meth:`Totals.merged` sums them in the one-process order
(batch, chunk), so the artifact's bytes do not depend on the number of processes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from steerkit._hf import pad_id, trim_heap
from steerkit.distributed import gather_per_rank, shard, world
from steerkit.models import logits_width
from steerkit.svdecode import CHUNK_ELEMENTS, LOGPROB_FLOOR, steering_delta
from steerkit.terms import TokenTerms

__all__ = ["calibrate"]


@dataclasses.dataclass
class Chunk:
    """One chunk's contribution: its place (batch, chunk), the static sum's non-zero entries, counts, terms."""

    batch: int
    number: int
    index: Tensor  # non-zero entries of Σ_t δ̂_t over the chunk's tokens (the direction is masked: few)
    value: Tensor
    kl: float
    kept: float
    gold_masked: int
    terms: TokenTerms
    base_logprob: Tensor  # [tokens] float64: the base model's log-probability of each gold token


@dataclasses.dataclass
class Totals:
    """Per-chunk contributions, merged in the one-process order (batch, chunk) whatever rank computed them."""

    chunks: list[Chunk] = dataclasses.field(default_factory=list)

    def add(self, batch: int, number: int, warm: Tensor, base: Tensor, targets: Tensor, *, alpha: float) -> None:
        """Record chunk ``number`` of calibration batch ``batch``."""
        delta, keep = steering_delta(warm, base, alpha=alpha)
        summed = delta.sum(dim=0, dtype=torch.float64)
        nonzero = summed.nonzero(as_tuple=True)[0]
        lp_w = torch.log_softmax(warm, dim=-1)
        lp_b = torch.log_softmax(base, dim=-1).clamp(min=LOGPROB_FLOOR)
        p_w = lp_w.exp()
        kl = float(torch.where(p_w > 0, p_w * (lp_w - lp_b), torch.zeros_like(lp_w)).sum(dtype=torch.float64))
        del lp_w, lp_b, p_w
        terms = TokenTerms.from_logits(warm, delta, keep, targets)
        # the base log-probabilities of the gold tokens, by the same arithmetic as the warm ones (equal logits give
        # equal values, bit for bit): the warm-vs-base check and the base candidate of the cross-validation
        base_logprob = TokenTerms.from_logits(base, delta, keep, targets).logprobs(0.0).clamp(min=LOGPROB_FLOOR)
        self.chunks.append(
            Chunk(
                batch=batch,
                number=number,
                index=nonzero.cpu(),
                value=summed[nonzero].cpu(),
                kl=kl,
                kept=float(keep.sum()),
                gold_masked=int((~keep.gather(1, targets[:, None])).sum()),
                terms=TokenTerms(**{f.name: getattr(terms, f.name).cpu() for f in dataclasses.fields(terms)}),
                base_logprob=base_logprob.cpu(),
            )
        )

    def gathered(self) -> Totals:
        """Every rank's chunks (an all-gather of tensors, no pickle), for every rank."""
        if world()[1] == 1:
            return self
        names = [f.name for f in dataclasses.fields(TokenTerms)]
        empty = TokenTerms.empty()
        dtypes = [torch.long, torch.float64, torch.long, torch.float64, torch.float64]
        dtypes += [getattr(empty, n).dtype for n in names]
        units = [
            [
                torch.tensor([c.batch, c.number, c.gold_masked], dtype=torch.long),
                torch.tensor([c.kl, c.kept], dtype=torch.float64),
                c.index,
                c.value,
                c.base_logprob,
                *(getattr(c.terms, n) for n in names),
            ]
            for c in self.chunks
        ]
        merged = Totals()
        for rank_units in gather_per_rank(units, dtypes):
            for key, scalars, index, value, base_logprob, *fields in rank_units:
                batch, number, gold = key.tolist()
                kl, kept = scalars.tolist()
                terms = TokenTerms(**dict(zip(names, fields, strict=True)))
                merged.chunks.append(Chunk(batch, number, index, value, kl, kept, gold, terms, base_logprob))
        return merged

    def merged(self, width: int) -> tuple[Tensor, float, float, int, TokenTerms, Tensor]:
        """``(Σ δ̂ [V] float64, Σ KL, Σ kept, Σ masked gold, terms, base gold log-probs)`` in (batch, chunk) order."""
        task_sum = torch.zeros(width, dtype=torch.float64)
        kl, kept, gold = 0.0, 0.0, 0
        ordered = sorted(self.chunks, key=lambda c: (c.batch, c.number))
        for c in ordered:
            task_sum.index_add_(0, c.index, c.value)
            kl += c.kl
            kept += c.kept
            gold += c.gold_masked
        base = torch.cat([c.base_logprob for c in ordered]) if ordered else torch.zeros(0, dtype=torch.float64)
        return task_sum, kl, kept, gold, TokenTerms.cat([c.terms for c in ordered]), base


# --- the forward passes ------------------------------------------------------------------------------


# --- forward passes --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Batch:
    input_ids: Tensor  # [B, S]
    attention_mask: Tensor  # [B, S]
    rows: Tensor  # [N] batch row of each predicting position
    positions: Tensor  # [N] position (in the padded real-token sequence) whose logits predict a gold token
    targets: Tensor  # [N] the gold tokens


def _make_batch(encoded: list[tuple[list[int], int]], *, pad_id: int, left: bool) -> _Batch:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    rows, positions, targets = [], [], []
    for row, (ids, first) in enumerate(encoded):
        offset = width - len(ids) if left else 0
        input_ids[row, offset : offset + len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, offset : offset + len(ids)] = 1
        for j in range(first, len(ids)):  # the logits at j - 1 predict token j
            rows.append(row)
            positions.append(offset + j - 1)
            targets.append(ids[j])

    def long(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long)

    return _Batch(input_ids, mask, long(rows), long(positions), long(targets))


def _positions(mask: Tensor) -> Tensor:
    """Position ids that count real tokens only (pads take a harmless clamped value)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _hidden_rows(transformer: Any, batch: _Batch, *, device: torch.device, prompts: Tensor | None = None) -> Tensor:
    """Last hidden states ``[N, H]`` at the batch's predicting positions; ``prompts`` are virtual-token embeddings."""
    decoder = transformer.get_decoder()
    input_ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    shift = 0
    if prompts is None:
        out = decoder(input_ids=input_ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False)
    else:
        embeds = transformer.get_input_embeddings()(input_ids)
        shift = prompts.shape[1]
        embeds = torch.cat([prompts.to(device=device, dtype=embeds.dtype), embeds], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :shift]), mask], dim=1)
        out = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask), use_cache=False)
    hidden: Tensor = out.last_hidden_state
    return hidden[batch.rows.to(device), batch.positions.to(device) + shift]


def _head_logits(transformer: Any, rows: Tensor) -> Tensor:
    """The model's logits for gathered hidden rows: output head plus the logit post-processing some models apply."""
    logits: Tensor = transformer.get_output_embeddings()(rows)
    logits = logits.double() if logits.dtype == torch.float64 else logits.float()
    config = transformer.config
    scale = getattr(transformer, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)):
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(scaling, (int, float)) and scaling:
        logits = logits / scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    if isinstance(cap, (int, float)) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _head_has_adapter(transformer: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    head = transformer.get_output_embeddings()
    return any(isinstance(m, BaseTunerLayer) for m in head.modules())


@contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def calibrate(
    peft_model: Any,
    used: list[tuple[list[int], int]],
    *,
    tokenizer: Any,
    alpha: float,
    batch_size: int,
    prompt_learning: bool,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> Totals:
    """The two forward passes per calibration token (warm, then base), in ``[chunk, V]`` blocks: this process's
    share of the batches, their totals kept per (batch, chunk) so any process count merges to the same bytes."""
    transformer = peft_model.get_base_model()
    device = next(transformer.parameters()).device
    pad = pad_id(tokenizer)
    width = logits_width(transformer)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    chunk = max(16, CHUNK_ELEMENTS // width)
    shared_head = prompt_learning or not _head_has_adapter(transformer)
    n_batches = -(-len(used) // batch_size)
    totals = Totals()
    mine = shard(n_batches)  # all batches without a process group

    def base_context() -> Any:
        return nullcontext() if prompt_learning else peft_model.disable_adapter()

    with torch.no_grad(), _eval_mode(peft_model):
        for done, index in enumerate(mine, start=1):
            batch = _make_batch(used[index * batch_size : (index + 1) * batch_size], pad_id=pad, left=left)
            prompts = peft_model.get_prompt(batch_size=batch.input_ids.shape[0]) if prompt_learning else None
            warm_rows = _hidden_rows(transformer, batch, device=device, prompts=prompts)
            with base_context():
                base_rows = _hidden_rows(transformer, batch, device=device)
            targets = batch.targets.to(device)
            for number, lo in enumerate(range(0, targets.numel(), chunk)):
                warm = _head_logits(transformer, warm_rows[lo : lo + chunk])
                with nullcontext() if shared_head else base_context():
                    base = _head_logits(transformer, base_rows[lo : lo + chunk])
                totals.add(index, number, warm, base, targets[lo : lo + chunk], alpha=alpha)
                del warm, base
                if device.type == "cpu":
                    trim_heap()
            del warm_rows, base_rows
            if show_progress:
                print(f"build: batch {done}/{len(mine)}", file=sys.stderr, flush=True)
            if progress is not None:
                progress(done, len(mine))

    return totals
