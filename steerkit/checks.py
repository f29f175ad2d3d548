"""The one check of each of steering's two knobs: the confidence threshold α and the strength μ.

Every entry point runs these (build, the config, the :class:`~steerkit.steering.Steering` spec, the processors,
the vLLM plugin, export, the maths of :mod:`steerkit.svdecode`), and each refusal is one
:class:`~steerkit.errors.InvalidOptionError` (a ``ValueError``) that names the value and the fix. A μ is checked
against float32 too: with the largest entry of the direction it multiplies (``scale``), a step past
:data:`MAX_STEP` is refused, so no μ a caller or a client sends can put inf or NaN into steered logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from steerkit.errors import InvalidOptionError, show

__all__ = ["MAX_STEP", "check_alpha", "check_mu"]

#: The largest steering step ``|μ|·max|direction|`` (and ``|μ|``) accepted: far below float32's 3.4e38, so the
#: steered logits, and what later processors (temperature, penalties) and the softmax make of them, stay finite.
MAX_STEP = 1e30


def check_alpha(alpha: object, *, hint: str = "the default is 0.1") -> float:
    """The confidence threshold α as a float, or :class:`~steerkit.errors.InvalidOptionError` (a ``ValueError``).

    Every entry point (build, attach, scoring, the config, the maths below) runs this one check.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InvalidOptionError(
            f"alpha must be in [0, 1], got {alpha!r}: it is the confidence threshold relative to max p",
            hint=hint,
            got=alpha,
        )
    return float(alpha)


def check_mu(mu: object, *, per_row: bool = True, scale: float | None = None) -> float | Tensor:
    """The strength μ as a float (or a float32 ``[batch]`` tensor when ``per_row``), or
    :class:`~steerkit.errors.InvalidOptionError`: not a number, not finite, too large for a float, a tensor of more
    than one dimension, or, with ``scale`` (the largest ``|direction|`` entry μ multiplies: ``max|v|`` for static
    mode, :data:`steerkit.svdecode.DYNAMIC_BOUND` for dynamic mode), a step ``|μ|·scale`` past :data:`MAX_STEP`
    (so it cannot overflow float32, the dtype the steered logits are computed in).
    """
    if isinstance(mu, Tensor):
        if not per_row:
            raise InvalidOptionError(
                "option scoring takes one μ, not a per-row tensor", hint="give a float mu for evaluation"
            )
        if mu.dim() > 1:
            raise InvalidOptionError(
                f"mu must be a float or a 1-D [batch] tensor, got shape {tuple(mu.shape)}",
                hint="give one μ per prompt, or a single float",
            )
        if not bool(torch.isfinite(mu).all()):
            raise InvalidOptionError("mu has non-finite entries", hint="give finite strengths")
        _check_step(float(mu.detach().abs().max()) if mu.numel() else 0.0, scale)
        return mu.detach().to(torch.float32)
    if isinstance(mu, bool) or not isinstance(mu, (int, float)):
        raise InvalidOptionError(f"μ must be a finite number, got {show(mu)}", hint="give a float such as -1.5", got=mu)
    try:
        value = float(mu)
    except OverflowError:  # an int beyond float64
        raise InvalidOptionError(
            f"μ is too large for a float: {show(mu)}", hint="give a float such as -1.5", got=None
        ) from None
    if not math.isfinite(value):
        raise InvalidOptionError(f"μ must be a finite number, got {mu!r}", hint="give a float such as -1.5", got=mu)
    _check_step(abs(value), scale)
    return value


def _check_step(size: float, scale: float | None) -> None:
    """Refuse a μ, or a step ``|μ|·scale``, past :data:`MAX_STEP`: in float32 the steered logits would overflow
    (no ``scale``: nothing to check here)."""
    if scale is None:
        return
    if size > MAX_STEP:
        raise InvalidOptionError(
            f"μ = {size:.3g} is too large: steered logits are computed in float32",
            hint=f"give |μ| at most {MAX_STEP:.0e}",
            got=size,
        )
    if size * scale > MAX_STEP:
        raise InvalidOptionError(
            f"μ = {size:.3g} is too large: μ times the direction's largest entry ({scale:.3g}) overflows float32",
            hint=f"give |μ| at most {MAX_STEP / scale:.3g}",
            got=size,
        )
