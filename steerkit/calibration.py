"""Calibration totals: each chunk's contribution to the static vector, KL and mask counts, and their merge.

:func:`steerkit.build` runs the base and warm models over the calibration batches in chunks of tokens; every chunk
adds a :class:`Chunk` (the non-zero entries of its summed direction, its KL and counts, its kept-entry terms) to
:class:`Totals`. Under torch.distributed each rank holds the chunks of its batches; :meth:`Totals.gathered` brings
every rank's chunks to every rank as tensors, and :meth:`Totals.merged` sums them in the one-process order
(batch, chunk), so the artifact's bytes do not depend on the number of processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from steerkit.distributed import gather_rows, world
from steerkit.svdecode import LOGPROB_FLOOR, steering_delta
from steerkit.terms import TokenTerms

__all__ = ["Chunk", "Totals"]


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


@dataclasses.dataclass
class Totals:
    """Per-chunk contributions, merged in the one-process order (batch, chunk) whatever rank computed them."""

    chunks: list[Chunk] = dataclasses.field(default_factory=list)

    def add(self, batch: int, warm: Tensor, base: Tensor, targets: Tensor, *, alpha: float) -> None:
        delta, keep = steering_delta(warm, base, alpha=alpha)
        summed = delta.sum(dim=0, dtype=torch.float64)
        nonzero = summed.nonzero(as_tuple=True)[0]
        lp_w = torch.log_softmax(warm, dim=-1)
        lp_b = torch.log_softmax(base, dim=-1).clamp(min=LOGPROB_FLOOR)
        p_w = lp_w.exp()
        kl = float(torch.where(p_w > 0, p_w * (lp_w - lp_b), torch.zeros_like(lp_w)).sum(dtype=torch.float64))
        del lp_w, lp_b, p_w
        terms = TokenTerms.from_logits(warm, delta, keep, targets)
        number = sum(1 for c in self.chunks if c.batch == batch)
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
            )
        )

    def gathered(self) -> Totals:
        """Every rank's chunks (an all-gather of tensors, no pickle), for every rank."""
        if world()[1] == 1:
            return self
        empty = TokenTerms.empty()
        fields = [f.name for f in dataclasses.fields(TokenTerms)]

        def cat(get: Callable[[Chunk], Tensor], like: Tensor) -> list[Tensor]:
            return gather_rows(torch.cat([get(c) for c in self.chunks]) if self.chunks else like)

        rows = [
            [c.batch, c.number, c.terms.n_tokens, int(c.terms.token.numel()), int(c.index.numel()), c.gold_masked]
            for c in self.chunks
        ]
        metas = gather_rows(torch.tensor(rows, dtype=torch.long).reshape(-1, 6))
        scalars = gather_rows(torch.tensor([[c.kl, c.kept] for c in self.chunks], dtype=torch.float64).reshape(-1, 2))
        idx = cat(lambda c: c.index, torch.zeros(0, dtype=torch.long))
        val = cat(lambda c: c.value, torch.zeros(0, dtype=torch.float64))
        parts = {n: cat(lambda c, n=n: getattr(c.terms, n), getattr(empty, n)) for n in fields}  # type: ignore[misc]
        per_kept = ("token", "index", "logits", "delta")  # one entry per kept (token, vocabulary) pair
        merged = Totals()
        for r in range(len(metas)):
            at_sparse = at_kept = at_tok = 0
            for (batch, number, n_tok, n_kept, n_sparse, gold), (kl, kept) in zip(
                metas[r].tolist(), scalars[r].tolist(), strict=True
            ):
                kept_rows, tok_rows = slice(at_kept, at_kept + n_kept), slice(at_tok, at_tok + n_tok)
                terms = TokenTerms(**{n: parts[n][r][kept_rows if n in per_kept else tok_rows] for n in fields})
                sparse = slice(at_sparse, at_sparse + n_sparse)
                merged.chunks.append(Chunk(batch, number, idx[r][sparse], val[r][sparse], kl, kept, gold, terms))
                at_sparse, at_kept, at_tok = at_sparse + n_sparse, at_kept + n_kept, at_tok + n_tok
        return merged

    def merged(self, width: int) -> tuple[Tensor, float, float, int, TokenTerms]:
        """``(Σ δ̂ [V] float64, Σ KL, Σ kept, Σ masked gold, terms)``, summed in (batch, chunk) order."""
        task_sum = torch.zeros(width, dtype=torch.float64)
        kl, kept, gold = 0.0, 0.0, 0
        ordered = sorted(self.chunks, key=lambda c: (c.batch, c.number))
        for c in ordered:
            task_sum.index_add_(0, c.index, c.value)
            kl += c.kl
            kept += c.kept
            gold += c.gold_masked
        return task_sum, kl, kept, gold, TokenTerms.cat([c.terms for c in ordered])
