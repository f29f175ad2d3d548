"""Exports of the static vector for servers that take a fixed bias (docs/integrations.md):
``sequence_bias`` and ``logit_bias``.

The export is the static task vector scaled by its strength, ``b = μ_s · v`` (or a given μ), cut to the ``top_k``
entries of largest ``|b|``, and written as plain data:

- ``sequence-bias``: a transformers ``generation_config.json`` whose ``sequence_bias`` is a list of
  ``[[token_id], bias]`` pairs (``GenerationConfig.from_pretrained(folder)`` reads it and ``generate`` applies it
  through ``SequenceBiasLogitsProcessor``);
- ``logit-bias``: an OpenAI-compatible ``logit_bias`` object, token id string → bias, at most 1024 entries,
  each clamped to ±100.

Both are **approximations** of steerkit's static mode: a fixed bias cannot apply the per-step confidence mask
(``keep ⊙ v``: every step adds every kept entry), and dynamic mode (which needs base logits at every step) cannot be
exported at all. The bias steers the *warm* model: serve the vector's adapter alongside it. :func:`export_bias`
reports how much of the vector's L1 mass (``Σ|b|``) the exported entries carry and refuses an export that keeps
less than ``min_mass`` of it, unless forced.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerkit.checks import check_mu
from steerkit.errors import InvalidOptionError
from steerkit.vector import SteeringVector

__all__ = [
    "FORMATS",
    "LOGIT_BIAS_LIMIT",
    "LOGIT_BIAS_MAX_ENTRIES",
    "MIN_MASS",
    "BiasExport",
    "export_bias",
    "export_target",
]

FORMATS: tuple[str, ...] = ("sequence-bias", "logit-bias")
LOGIT_BIAS_MAX_ENTRIES = 1024  # OpenAI's limit on logit_bias entries
LOGIT_BIAS_LIMIT = 100.0  # OpenAI clamps each bias to [-100, 100]
MIN_MASS = 0.5  # refuse an export that keeps less than this fraction of Σ|μ·v|, unless forced
FILE_NAMES = {"sequence-bias": "generation_config.json", "logit-bias": "logit_bias.json"}
NOTES = (
    "approximation of static steering: no per-step confidence mask (every step adds every exported entry)",
    "dynamic mode cannot be exported: it needs the base model's logits at every step",
    "the bias steers the warm model: serve the vector's adapter alongside it",
)


@dataclass(frozen=True)
class BiasExport:
    """A static vector as a fixed logit bias, with what the export keeps and drops.

    Attributes:
        format: ``"sequence-bias"`` or ``"logit-bias"``.
        mu: The strength the task vector was scaled by.
        bias: Token id → bias, in order of decreasing ``|bias|`` (after clamping for ``logit-bias``).
        top_k: The most entries asked for.
        nonzero: Non-zero entries of ``μ·v`` (what an exact export would need).
        l1_fraction: ``Σ|exported bias| / Σ|μ·v|``: the share of the vector's L1 mass the export carries.
        clamped: How many entries were clamped to ±100 (``logit-bias``).
        notes: What the export drops (the per-step mask, dynamic mode) and what it needs (the adapter).
    """

    format: str
    mu: float
    bias: dict[int, float]
    top_k: int | None
    nonzero: int
    l1_fraction: float
    clamped: int = 0
    notes: tuple[str, ...] = field(default=NOTES)

    @property
    def file_name(self) -> str:
        """The conventional file name: ``generation_config.json`` or ``logit_bias.json``."""
        return FILE_NAMES[self.format]

    def payload(self) -> dict[str, Any]:
        """The file's content: ``{"sequence_bias": [[[id], bias], ...]}`` or ``{"id": bias, ...}``."""
        if self.format == "sequence-bias":
            return {"sequence_bias": [[[token], value] for token, value in self.bias.items()]}
        return {str(token): value for token, value in self.bias.items()}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`payload` as JSON to ``path`` (a folder gets :attr:`file_name` inside); return the file.

        Into an existing ``generation_config.json`` the ``sequence_bias`` is merged: every other key (``eos_token_id``,
        the sampling defaults) is kept. The file is replaced atomically (a temporary file beside it, then a rename),
        and a link at the target is refused, as is a target that is a folder or lies under a file.

        Raises:
            InvalidOptionError: A link, a folder or a file in the way, or an existing file that is no JSON object.
        """
        target = export_target(path, self.file_name)
        payload = self.payload()
        if self.format == "sequence-bias" and target.exists():
            try:
                current = json.loads(target.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InvalidOptionError(
                    f"cannot merge into {str(target)!r}: it is not readable JSON ({type(exc).__name__})",
                    hint="choose another --out, or remove the file",
                ) from None
            if not isinstance(current, dict):
                raise InvalidOptionError(
                    f"cannot merge into {str(target)!r}: it is not a JSON object", hint="choose another --out"
                )
            payload = {**current, **payload}
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what the CLI prints under ``--json``), the payload included."""
        return {
            "format": self.format,
            "mu": self.mu,
            "top_k": self.top_k,
            "entries": len(self.bias),
            "nonzero": self.nonzero,
            "l1_fraction": self.l1_fraction,
            "clamped": self.clamped,
            "file_name": self.file_name,
            "notes": list(self.notes),
            "payload": self.payload(),
        }


def export_target(path: str | os.PathLike[str], file_name: str) -> Path:
    """Where an export to ``path`` goes (a folder gets ``file_name`` inside), refusing what would write elsewhere:
    a link at the target, a target that is a folder, and a parent that is a file."""
    target = Path(path)
    if target.is_dir() and not target.is_symlink():
        target = target / file_name
    for parent in target.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise InvalidOptionError(f"cannot write under {str(parent)!r}: it is a file, not a folder")
            break
    if target.is_symlink():
        raise InvalidOptionError(
            f"{str(target)!r} is a link: an export never writes through one", hint="give the real path in --out"
        )
    if target.is_dir():
        raise InvalidOptionError(f"{str(target)!r} is a folder", hint="give a file path, or another folder")
    return target


def export_bias(
    vector: SteeringVector,
    format: str = "sequence-bias",
    *,
    top_k: int | None = None,
    mu: float | None = None,
    min_mass: float = MIN_MASS,
    force: bool = False,
) -> BiasExport:
    """The static vector ``μ·v`` as a fixed bias for ``sequence_bias`` or an OpenAI-style ``logit_bias``.

    Args:
        vector: The steering vector.
        format: ``"sequence-bias"`` or ``"logit-bias"``.
        top_k: Keep the ``top_k`` entries of largest ``|μ·v|`` (default: all non-zero entries for
            ``sequence-bias``, 1024 for ``logit-bias``, which allows at most 1024).
        mu: Strength (default: the vector's ``mu_static``).
        min_mass: Refuse when the exported entries carry less than this fraction of ``Σ|μ·v|``.
        force: Export even below ``min_mass``.

    Returns:
        A :class:`BiasExport` (:meth:`BiasExport.write` writes the file).

    Raises:
        InvalidOptionError: An unknown format, a bad ``top_k`` or ``mu``, a zero vector, or (unless ``force``)
            exported entries that carry less than ``min_mass`` of the L1 mass.

    Example:
        >>> export = export_bias(vector, "logit-bias", top_k=256)        # doctest: +SKIP
        >>> export.write("logit_bias.json"); export.l1_fraction           # doctest: +SKIP
        0.93
    """
    if format not in FORMATS:
        raise InvalidOptionError(
            f"unknown export format {format!r}", hint=f"use one of {', '.join(FORMATS)}", got=format
        )
    limit = LOGIT_BIAS_MAX_ENTRIES if format == "logit-bias" else None
    if top_k is not None and (top_k < 1 or (limit is not None and top_k > limit)):
        raise InvalidOptionError(
            f"top_k must be between 1 and {limit or 'the vocabulary size'}, got {top_k}",
            hint="logit_bias takes at most 1024 entries" if limit else "give a positive --top-k",
            got=top_k,
        )
    strength = float(check_mu(vector.mu_static if mu is None else mu, per_row=False, scale=vector.max_abs))
    scaled = vector.task_vector.detach().to(torch.float32) * strength
    magnitude = scaled.abs()
    total = float(magnitude.double().sum())
    nonzero = int((magnitude > 0).sum())
    if total == 0.0:
        raise InvalidOptionError(
            "μ·v is zero everywhere: there is no bias to export", hint="give a non-zero --mu", got=strength
        )
    k = min(top_k or limit or nonzero, nonzero)
    order = torch.argsort(magnitude, descending=True, stable=True)[:k]
    values = scaled[order]
    clamped = 0
    if format == "logit-bias":
        clamped = int((values.abs() > LOGIT_BIAS_LIMIT).sum())
        values = values.clamp(-LOGIT_BIAS_LIMIT, LOGIT_BIAS_LIMIT)
    fraction = float(values.double().abs().sum()) / total
    if fraction < min_mass and not force:
        squeezed = f", {clamped} of them clamped to ±100" if clamped else ""
        raise InvalidOptionError(
            f"the top {k} of {nonzero} entries carry {fraction:.1%} of the vector's L1 mass{squeezed}, below the "
            f"{min_mass:.0%} threshold: the {format} export would drop most of the steering",
            hint="raise --top-k (logit-bias allows at most 1024), or pass --force to export it anyway",
            got=fraction,
        )
    bias = {int(t): float(b) for t, b in zip(order.tolist(), values.tolist(), strict=True)}
    return BiasExport(
        format=format, mu=strength, bias=bias, top_k=top_k, nonzero=nonzero, l1_fraction=fraction, clamped=clamped
    )
