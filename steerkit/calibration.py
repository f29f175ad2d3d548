"""Calibration totals: each chunk's contribution to the static vector, KL and mask counts, and their merge.

:func:`steerkit.build` runs the base and warm models over the calibration batches in chunks of tokens; every chunk
adds a :class:`Chunk` (the non-zero entries of its summed direction, its KL and counts, its kept-entry terms) to
:class:`Totals`. Under torch.distributed each rank holds the chunks of its batches; :meth:`Totals.gathered` brings
every rank's chunks to every rank as tensors, and :meth:`Totals.merged` sums them in the one-process order
(batch, chunk), so the artifact's bytes do not depend on the number of processes.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from steerkit.distributed import gather_per_rank, world
from steerkit.svdecode import LOGPROB_FLOOR, steering_delta
from steerkit.terms import TokenTerms

__all__ = ["Totals"]


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
        base_logprob = lp_b.gather(1, targets[:, None]).squeeze(1).double()  # for the warm-vs-base check
        del lp_w, lp_b, p_w
        terms = TokenTerms.from_logits(warm, delta, keep, targets)
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
