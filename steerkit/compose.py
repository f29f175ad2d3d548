"""Several steering vectors at once (docs/concepts.md#composition): the sum of their scaled static vectors.

Composition is static mode's rule with one direction: ``ẑ = z + keep ⊙ Σᵢ μᵢ·vᵢ``, ``keep`` the confidence mask
of the row's own logits, so composed steering costs one fused add, as one vector does. :func:`compose` makes that
direction a :class:`~steerkit.vector.SteeringVector` of its own (μ_s = 1), so every consumer of a vector takes a
composition as it is: :func:`steerkit.attach`, :func:`steerkit.export.export_bias`, the lm-eval model type and
the vLLM plugin all use this one rule.

Only vectors for one vocabulary compose: the same ``vocab_size``, tokenizer fingerprint and base model name, and
one confidence threshold α (the mask is computed once). At most :data:`MAX_VECTORS` take part. Dynamic mode
composes only vectors that share one adapter: its direction δ̂ comes from the warm and base logits alone, so
vectors with one adapter steer along the same δ̂ and compose to ``Σᵢ μᵢ``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import PurePath

import torch

from steerkit.checks import check_mu
from steerkit.errors import InvalidOptionError
from steerkit.steering import Steering
from steerkit.vector import SteeringVector

__all__ = ["MAX_VECTORS", "compose", "compose_dynamic"]

#: The most vectors one composition (one request, one attach, one export) may hold.
MAX_VECTORS = 8

Part = SteeringVector | Steering


def composed_parts(items: Sequence[Part], *, mode: str = "static") -> list[tuple[SteeringVector, float, float]]:
    """``[(vector, μ, α)]`` of ``items`` (a vector at its default μ for ``mode``, or a ``Steering`` of that mode),
    checked to compose: 1 to :data:`MAX_VECTORS` of them, one vocabulary and one α.

    Raises:
        InvalidOptionError: No items, too many, a per-row μ tensor, a ``Steering`` of the other mode, or vectors
            that differ in vocabulary, tokenizer, base model or α.
    """
    if isinstance(items, (SteeringVector, Steering)) or not 1 <= len(items) <= MAX_VECTORS:
        count = 1 if isinstance(items, (SteeringVector, Steering)) else len(items)
        raise InvalidOptionError(
            f"a composition takes 1 to {MAX_VECTORS} steering vectors, got {count}",
            hint="give a list of vectors or Steering values",
            got=count,
        )
    parts = []
    for i, item in enumerate(items):
        spec = item if isinstance(item, Steering) else Steering(item, mode)
        if spec.mode != mode:
            raise InvalidOptionError(
                f"item {i} of the composition is a {spec.mode}-mode Steering, the composition is {mode}",
                hint=f"give Steering(vector, {mode!r}, mu=...) values, or the vectors themselves",
            )
        if not isinstance(spec.strength, (int, float)):
            raise InvalidOptionError(
                f"item {i} of the composition has a per-row μ tensor", hint="give each vector one float μ"
            )
        parts.append((spec.vector, float(spec.strength), spec.threshold))
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        _check_pair(first, part, i)
    return parts


def _check_pair(first: tuple[SteeringVector, float, float], other: tuple[SteeringVector, float, float], i: int) -> None:
    """Refuse item ``i`` when it cannot compose with item 0: another vocabulary, tokenizer, base model or α."""
    a, b = first[0].config, other[0].config
    name_a, name_b = (a.base_model or {}).get("name_or_path"), (b.base_model or {}).get("name_or_path")
    sha_a, sha_b = (a.tokenizer or {}).get("sha256"), (b.tokenizer or {}).get("sha256")
    reason = None
    if a.vocab_size != b.vocab_size:
        reason = f"vocab_size {b.vocab_size}, item 0 has {a.vocab_size}"
    elif sha_a and sha_b and sha_a != sha_b:
        reason = f"tokenizer sha256 {sha_b[:12]}…, item 0 has {sha_a[:12]}…"
    elif name_a and name_b and PurePath(name_a).name != PurePath(name_b).name:
        reason = f"base model {name_b!r}, item 0 has {name_a!r}"
    elif first[2] != other[2]:
        reason = f"alpha {other[2]}, item 0 has {first[2]} (the mask is computed once, with one α)"
    if reason is not None:
        raise InvalidOptionError(
            f"steering vector {i} of the composition does not compose with vector 0: {reason}",
            hint="compose only vectors built for one base model and tokenizer, with one alpha",
        )


def _adapter_key(vector: SteeringVector) -> str | None:
    return None if vector.config.adapter is None else vector.config.adapter.get("sha256")


def compose(items: Sequence[Part]) -> SteeringVector:
    """One static steering vector ``Σᵢ μᵢ·vᵢ`` with μ_s = 1: ``items`` are vectors (at their ``mu_static``) or
    static ``Steering`` values (at their μ).

    The result carries the first vector's config (vocabulary, tokenizer, base model, α; no validation block: no
    composition was cross-validated) and its adapter when every item carries that same adapter (else none: steer
    a model you give with ``adapter=False`` or as a ``PeftModel``).

    Raises:
        InvalidOptionError: The items do not compose (:func:`composed_parts`), or the summed step overflows float32.

    Example:
        >>> both = compose([Steering(truthful, "static", -2.0), Steering(concise, "static", 1.0)])  # doctest: +SKIP
        >>> steerkit.attach(both, model, mode="static", adapter=False)                            # doctest: +SKIP
    """
    parts = composed_parts(items)
    total = torch.zeros_like(parts[0][0].task_vector, dtype=torch.float64)
    for vector, mu, _alpha in parts:
        total += mu * vector.task_vector.to(torch.float64)
    summed = total.to(torch.float32)
    check_mu(1.0, per_row=False, scale=float(summed.abs().max()))  # Σ μᵢ·vᵢ itself must stay far from overflow
    first = parts[0][0]
    shared = len({_adapter_key(v) for v, _, _ in parts}) == 1 and _adapter_key(first) is not None
    config = dataclasses.replace(
        first.config,
        task_vector_sha256="",
        alpha=parts[0][2],
        validation=None,
        evaluation=None,
        adapter=first.config.adapter if shared else None,
        mu_static=dataclasses.replace(first.config.mu_static, value=1.0, chosen_by="composed"),
    )
    return SteeringVector(summed, config, first.adapter_files if shared else None)


def compose_dynamic(items: Sequence[Part]) -> Steering:
    """Dynamic steering by several vectors: allowed only when they share one adapter, where it is one dynamic
    spec at ``μ = Σᵢ μᵢ`` (δ̂ depends on the warm and base logits only, so one adapter gives one δ̂).

    Raises:
        InvalidOptionError: The items do not compose, or they carry different adapters (or none).
    """
    parts = composed_parts(items, mode="dynamic")
    keys = {_adapter_key(v) for v, _, _ in parts}
    if len(keys) != 1 or None in keys:
        raise InvalidOptionError(
            "dynamic mode composes only vectors that share one adapter: its direction comes from that adapter's "
            "warm logits, and these vectors carry different adapters (or none)",
            hint="compose them in static mode (mode='static'), the sum of their scaled task vectors",
        )
    return Steering(parts[0][0], "dynamic", sum(mu for _, mu, _ in parts), parts[0][2])


def composition_spec(items: Sequence[Part], *, mode: str | None, alpha: float | None, adapter: bool) -> Steering:
    """The :class:`Steering` spec :func:`steerkit.attach` runs for a list of vectors: static (``mode`` ``None`` or
    ``"static"``) steers by :func:`compose`, dynamic by :func:`compose_dynamic`. ``alpha`` overrides the items'.

    Raises:
        InvalidOptionError: The items do not compose; static mode with ``adapter=True`` and items that carry
            different adapters (the warm model would be ambiguous).
    """
    if mode == "dynamic":
        return dataclasses.replace(compose_dynamic(items), alpha=alpha, setting="composed")
    if mode not in (None, "static"):
        raise InvalidOptionError(f"unknown steering mode {mode!r}", hint="use mode='static' or mode='dynamic'")
    vector = compose(items)
    keys = {_adapter_key(item.vector if isinstance(item, Steering) else item) for item in items}
    if adapter and vector.adapter_files is None and keys != {None}:
        raise InvalidOptionError(
            "these steering vectors carry different adapters, so the warm model to steer is ambiguous",
            hint="pass adapter=False to steer the model as given (or give a PeftModel), or compose vectors of one "
            "adapter",
        )
    return Steering(vector, "static", alpha=alpha, adapter=adapter, setting="composed")
