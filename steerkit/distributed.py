"""torch.distributed for build and eval: the process group torchrun sets up, deterministic shards, gathers.

``torchrun --nproc-per-node N $(which steerkit) build ...`` starts N processes with ``RANK``/``WORLD_SIZE`` set;
:func:`init_from_env` joins their process group (gloo on CPU, nccl with CUDA). Work is sharded by a fixed rule
(unit ``i`` goes to rank ``i % N``) and every rank's results are gathered to every rank (:func:`gather_rows`),
then put back in the one-process order before anything is summed: so the artifact and the metrics are
byte-identical to a one-process run whatever N is. Only tensors cross processes, never pickled objects.
Without a process group everything here is the identity (rank 0 of 1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from datetime import timedelta

import torch
from torch import Tensor

from steerkit.terms import TokenTerms

__all__ = ["gather_per_rank", "gather_terms", "init_from_env", "is_main", "shard", "world"]

#: How long a collective waits for a rank that failed or hangs before the whole job fails.
TIMEOUT = timedelta(seconds=int(os.environ.get("STEERKIT_DIST_TIMEOUT", "300")))


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return world()[0] == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns whether one is active."""
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)
    return True


def shard(n: int) -> range:
    """The units ``0..n-1`` this rank handles: every ``size``-th one, starting at its rank."""
    rank, size = world()
    return range(rank, n, size)


def gather_rows(tensor: Tensor) -> list[Tensor]:
    """Every rank's ``tensor`` (same trailing shape, any number of rows), on the CPU, in rank order.

    Bool tensors travel as uint8 (gloo has no bool), and come back as bool.
    """
    import torch.distributed as dist

    size = world()[1]
    if size == 1:
        return [tensor.cpu()]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    is_bool = tensor.dtype == torch.bool
    local = (tensor.to(torch.uint8) if is_bool else tensor).to(device)
    count = torch.tensor([local.shape[0]], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    rows = max(int(c) for c in counts)
    padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    out = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(out, padded)
    got = [o[: int(c)].cpu() for o, c in zip(out, counts, strict=True)]
    return [g.bool() for g in got] if is_bool else got


def gather_per_rank(units: Sequence[Sequence[Tensor]], dtypes: Sequence[torch.dtype]) -> list[list[list[Tensor]]]:
    """Every rank's units, each a fixed list of 1-D tensors (its fields): ``[rank][unit][field]``, on the CPU.

    Args:
        units: This rank's units; field ``k`` of every unit has dtype ``dtypes[k]`` and any length.
        dtypes: The dtype of each field (so that a rank with no unit still sends well-typed empties).
    """
    if world()[1] == 1:
        return [[[t.cpu() for t in unit] for unit in units]]
    counts = gather_rows(torch.tensor([len(units)], dtype=torch.long))
    per_rank: list[list[list[Tensor]]] = [[[] for _ in range(int(c[0]))] for c in counts]
    for k, dtype in enumerate(dtypes):
        lengths = torch.tensor([unit[k].shape[0] for unit in units], dtype=torch.long)
        data = torch.cat([unit[k].to(dtype) for unit in units]) if units else torch.zeros(0, dtype=dtype)
        for r, (rank_lengths, rank_data) in enumerate(zip(gather_rows(lengths), gather_rows(data), strict=True)):
            for j, piece in enumerate(torch.split(rank_data, rank_lengths.tolist())):
                per_rank[r][j].append(piece)
    return per_rank


def gather_units(units: Sequence[Sequence[Tensor]], n_units: int, dtypes: Sequence[torch.dtype]) -> list[list[Tensor]]:
    """All ranks' units in the one-process order: unit ``i`` is the one rank ``i % size`` computed (:func:`shard`).

    Args:
        units: This rank's units, in the order of :func:`shard` (see :func:`gather_per_rank`).
        n_units: The number of units over all ranks.
        dtypes: The dtype of each field.

    Returns:
        Every unit's fields, units ``0..n_units-1`` in order (on the CPU).
    """
    per_rank = gather_per_rank(units, dtypes)
    return [list(unit) for unit in in_rank_order(range(n_units), per_rank)]  # type: ignore[call-overload]


def in_rank_order(keys: Sequence[int], per_rank: Sequence[Sequence[object]]) -> list[object]:
    """Interleave per-rank lists back into the order of the units (unit ``i`` came from rank ``i % size``)."""
    size = len(per_rank)
    cursors = [0] * size
    out = []
    for i in keys:
        r = i % size
        out.append(per_rank[r][cursors[r]])
        cursors[r] += 1
    return out


def gather_terms(
    parts: dict[str, list[TokenTerms]], segments: list[Tensor], n_batches: int
) -> tuple[dict[str, list[TokenTerms]], list[Tensor]]:
    """Option-scoring parts of this rank's batches → every batch's, in the one-process order (identity alone)."""
    if world()[1] == 1:
        return parts, segments
    names = [f.name for f in dataclasses.fields(TokenTerms)]
    empty = TokenTerms.empty()
    dtypes = [torch.long, *(getattr(empty, n).dtype for r in parts for n in names)]
    units = [[segments[j], *(getattr(parts[r][j], n) for r in parts for n in names)] for j in range(len(segments))]
    merged = gather_units(units, n_batches, dtypes)
    out: dict[str, list[TokenTerms]] = {r: [] for r in parts}
    for unit in merged:
        fields = iter(unit[1:])
        for r in parts:
            out[r].append(TokenTerms(**{n: next(fields) for n in names}))
    return out, [unit[0] for unit in merged]
