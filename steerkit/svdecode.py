"""The SVDecode maths (docs/concepts.md): pure tensor functions, no models, no I/O.

Every function takes logits shaped ``[..., V]`` (any leading dimensions) and computes in float32 whatever
the input dtype (float64 stays float64, for tests). Notation: φ is the warm-started model (adapter on),
θ the base model (adapter off), ``p_φ = softmax(z_φ)``.

- :func:`steering_delta`: the masked softmax-Jacobian projection ``δ̂ = keep ⊙ (−p_φ ⊙ (l − KL))`` with
  ``l = log p_φ − log p_θ``;
- :func:`mu_terms` / :func:`aggregate_mu`: the per-token Newton step ``μ*_t = ⟨e_y − p_φ, δ̂⟩ / c_t`` and its
  aggregates over a calibration set;
- :func:`steering_direction`: the dynamic, static or zero direction (and mask) for some logits, shared by
  decoding and option scoring; the kept-entry maths (:class:`~steerkit.terms.TokenTerms`, ``fit_mu``) lives in
  :mod:`steerkit.terms`;
- :func:`steer`: the decode rule ``ẑ = z + μ·δ̂`` with the optional ``−inf`` filter on masked tokens;
- :func:`static_step`: one step of static mode, ``ẑ = z + keep ⊙ μ·v``, the one rule the transformers processor,
  the vLLM processor and the lm-eval model type apply;
- :data:`DYNAMIC_BOUND`: a bound on ``max|δ̂|`` for any logits, which the μ check of dynamic mode uses (the one α
  and μ checks live in :mod:`steerkit.checks`).

Which one do I call? :func:`steering_delta` is the dynamic direction δ̂ as pure maths; :func:`steering_direction`
picks the dynamic, static or zero direction for some logits (option scoring); :func:`steer` and
:func:`static_step` apply one to logits. To decode with a vector, call :func:`steerkit.attach`.

``−inf`` entries (padded vocabulary rows, earlier filters) never produce NaN: a token the warm model gives
zero probability contributes nothing, and a base log-probability of ``−inf`` where the warm model has mass
is clamped to :data:`LOGPROB_FLOOR` nats.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from steerkit.checks import check_alpha

__all__ = [
    "AGGREGATORS",
    "CURVATURES",
    "DYNAMIC_BOUND",
    "EPSILON",
    "LOGPROB_FLOOR",
    "aggregate_mu",
    "compute_dtype",
    "confidence_mask",
    "mu_star",
    "mu_terms",
    "static_step",
    "steer",
    "steering_delta",
    "steering_direction",
]

Curvature = Literal["paper", "exact"]
Aggregator = Literal["mean", "median", "trimmed", "ratio"]

CURVATURES: tuple[str, ...] = ("paper", "exact")
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed", "ratio")
EPSILON = 1e-12
LOGPROB_FLOOR = -1e4
#: Elements per ``[chunk, V]`` logits block (chunk = this // V rows, at least 16): 4 MiB of float32.
CHUNK_ELEMENTS = 1 << 20
TRIM_FRACTION = 0.1  # "trimmed" drops this fraction of μ* at each end (mean of the central 80%)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the steering maths runs in for ``x``: float32 whatever the model's dtype (float64 stays float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


#: A bound on ``max|δ̂|`` for any logits: ``|p_φ·(l − KL)| ≤ p_φ|log p_φ| + 2·|LOGPROB_FLOOR|`` with base
#: log-probabilities floored at ``LOGPROB_FLOOR`` (the μ bound of dynamic mode; real directions are far smaller).
DYNAMIC_BOUND = 2.0 * abs(LOGPROB_FLOOR) + 1.0
#: The largest steering step ``|μ|·max|direction|`` (and ``|μ|``) accepted: far below float32's 3.4e38, so the
#: steered logits, and what later processors (temperature, penalties) and the softmax make of them, stay finite.
MAX_STEP = 1e30


def _mask_from_logprobs(lp: Tensor, alpha: float) -> Tensor:
    """``lp ≥ log α + max lp`` on finite entries; ``lp`` may be log-probabilities or logits (a per-row shift)."""
    finite = torch.isfinite(lp)
    if alpha == 0.0:  # alpha = 0 keeps every token with a finite log-probability
        return finite
    # In log space: log p ≥ log α + log max p (exact for every α in (0, 1], no underflow of small p).
    top = lp.max(dim=-1, keepdim=True).values
    return (lp >= top + math.log(alpha)) & finite


def confidence_mask(warm_logits: Tensor, *, alpha: float = 0.1) -> Tensor:
    """Tokens the warm model is confident about: ``p_φ ≥ α · max p_φ`` (a bool tensor shaped like the input).

    Args:
        warm_logits: Warm-model logits ``[..., V]``.
        alpha: Relative confidence threshold in ``[0, 1]``.

    Returns:
        A bool tensor ``[..., V]``; it always contains the argmax of a row with a finite entry and is never
        true where the logit is ``−inf``.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``.

    Example:
        >>> confidence_mask(torch.tensor([0.0, -1.0, -5.0, float("-inf")]), alpha=0.1).tolist()
        [True, True, False, False]
    """
    check_alpha(alpha)
    # log p = z − logsumexp(z) shifts every entry of a row alike, so the logits give the same comparison.
    return _mask_from_logprobs(warm_logits.to(compute_dtype(warm_logits)), alpha)


def steering_delta(warm_logits: Tensor, base_logits: Tensor, *, alpha: float = 0.1) -> tuple[Tensor, Tensor]:
    """The masked steering direction δ̂ of docs/concepts.md and its confidence mask.

    ``δz = −p_φ ⊙ (l − Σ p_φ l)`` with ``l = log p_φ − log p_θ`` equals ``J(p_φ)·(−∇ KL(p_φ‖p_θ))`` with
    ``J = diag(p_φ) − p_φ p_φᵀ`` (never built). ``δ̂ = keep ⊙ δz``.

    Args:
        warm_logits: Logits of the warm-started model ``[..., V]``.
        base_logits: Logits of the base model at the same contexts ``[..., V]``.
        alpha: Confidence threshold of the mask (``p_φ ≥ α max p_φ``).

    Returns:
        ``(delta_hat, keep)``: float32 (float64 for float64 input) ``[..., V]`` and bool ``[..., V]``.

    Raises:
        ValueError: The two logits differ in shape, or ``alpha`` is outside ``[0, 1]``.

    Example:
        >>> z = torch.tensor([2.0, 1.0, -1.0])
        >>> delta, keep = steering_delta(z, torch.zeros(3))
        >>> keep.tolist(), float(delta[2])
        ([True, True, False], 0.0)
        >>> unmasked, _ = steering_delta(z, torch.zeros(3), alpha=0.0)  # δz sums to zero
        >>> abs(float(unmasked.sum())) < 1e-7
        True
    """
    if warm_logits.shape != base_logits.shape:
        raise ValueError(
            f"warm and base logits differ in shape: {tuple(warm_logits.shape)} vs {tuple(base_logits.shape)}"
        )
    check_alpha(alpha)
    dtype = compute_dtype(warm_logits)
    lp_w = torch.log_softmax(warm_logits.to(dtype), dim=-1)
    # A base log-probability of −inf (or NaN, for a row that is −inf everywhere) is floored: no inf − inf.
    lp_b = torch.log_softmax(base_logits.to(dtype), dim=-1).nan_to_num(nan=LOGPROB_FLOOR).clamp(min=LOGPROB_FLOOR)
    p_w = lp_w.exp()
    alive = p_w > 0  # false where p_φ underflows to 0, and for NaN (a warm row that is −inf everywhere)
    zero = torch.zeros((), dtype=dtype, device=lp_w.device)
    p_w = torch.where(alive, p_w, zero)
    ratio = torch.where(alive, lp_w - lp_b, zero)
    kl = (p_w * ratio).sum(dim=-1, keepdim=True)
    keep = _mask_from_logprobs(lp_w, alpha)
    return torch.where(keep & alive, -p_w * (ratio - kl), zero), keep


def mu_terms(
    warm_logits: Tensor, delta_hat: Tensor, target_ids: Tensor, *, curvature: Curvature = "paper"
) -> tuple[Tensor, Tensor]:
    """Numerator and curvature of the per-token optimal strength ``μ*_t = num_t / (den_t + ε)``.

    Args:
        warm_logits: Warm logits ``[..., V]`` at the teacher-forced positions.
        delta_hat: The masked direction ``[..., V]`` from :func:`steering_delta`.
        target_ids: Gold next-token ids ``[...]``.
        curvature: ``"paper"`` (``‖δ̂‖²``, the paper's Gauss–Newton term) or ``"exact"`` (``Var_{p_φ}(δ̂)``,
            the true second derivative of the token NLL along δ̂).

    Returns:
        ``(numerator, denominator)``, each shaped ``[...]``: ``⟨e_y − p_φ, δ̂⟩`` and the curvature.

    Raises:
        ValueError: An unknown ``curvature``.

    Example:
        >>> z = torch.tensor([[0.0, 0.0]]); d = torch.tensor([[0.5, -0.5]])
        >>> [t.tolist() for t in mu_terms(z, d, torch.tensor([0]), curvature="exact")]
        [[0.5], [0.25]]
    """
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}; got {curvature!r}")
    dtype = compute_dtype(warm_logits)
    p = torch.softmax(warm_logits.to(dtype), dim=-1)
    d = delta_hat.to(dtype)
    pd = torch.where(p > 0, p * d, torch.zeros_like(d)).sum(dim=-1)
    gold = d.gather(-1, target_ids.long().unsqueeze(-1)).squeeze(-1)
    numerator = gold - pd
    if curvature == "paper":
        denominator = (d * d).sum(dim=-1)
    else:
        pd2 = torch.where(p > 0, p * d * d, torch.zeros_like(d)).sum(dim=-1)
        denominator = (pd2 - pd * pd).clamp(min=0.0)
    return numerator, denominator


def mu_star(numerator: Tensor, denominator: Tensor, *, eps: float = EPSILON) -> Tensor:
    """Per-token optimal strengths ``μ*_t = num_t / (den_t + ε)``.

    Args:
        numerator: Per-token ``⟨e_y − p_φ, δ̂⟩``.
        denominator: Per-token curvature.
        eps: Added to each curvature.

    Returns:
        float64 tensor shaped like the inputs.
    """
    return numerator.double() / (denominator.double() + eps)


def aggregate_mu(numerator: Tensor, denominator: Tensor, *, how: Aggregator = "mean", eps: float = EPSILON) -> float:
    """Aggregate per-token Newton steps into one strength μ̄.

    Args:
        numerator: Per-token ``⟨e_y − p_φ, δ̂⟩``, any shape (flattened).
        denominator: Per-token curvature, same shape.
        how: ``mean`` (the paper), ``median``, ``trimmed`` (mean of the central 80% of μ*) or ``ratio``
            (``Σ num / Σ den``: the optimum of the summed quadratic model).
        eps: Added to each curvature (to the summed one for ``ratio``).

    Returns:
        The aggregate as a Python float (0.0 for an empty input).

    Raises:
        ValueError: An unknown ``how``.

    Example:
        >>> num, den = torch.tensor([1.0, 2.0, 30.0]), torch.tensor([1.0, 1.0, 2.0])  # μ* = 1, 2, 15
        >>> [aggregate_mu(num, den, how=h, eps=0.0) for h in ("mean", "median", "ratio")]
        [6.0, 2.0, 8.25]
    """
    if how not in AGGREGATORS:
        raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}; got {how!r}")
    num = numerator.double().flatten()
    den = denominator.double().flatten()
    if num.numel() == 0:
        return 0.0
    if how == "ratio":
        return float(num.sum() / (den.sum() + eps))
    mu = mu_star(num, den, eps=eps)
    if how == "mean":
        return float(mu.mean())
    values = mu.sort().values
    n = values.numel()
    if how == "median":  # the midpoint of the two central values for an even count, as torch.quantile(·, 0.5)
        return float(torch.lerp(values[(n - 1) // 2], values[n // 2], 0.5))
    cut = int(TRIM_FRACTION * n)  # drop ⌊n/10⌋ values at each end; fewer than 10 values: the plain mean
    return float(values[cut : n - cut].mean())


def steer(
    logits: Tensor, delta_hat: Tensor, keep: Tensor, mu: float | Tensor, *, filter_masked: bool = False
) -> Tensor:
    """Apply the decode rule ``ẑ = z + μ·δ̂``, optionally with ``ẑ[~keep] = −inf``.

    Args:
        logits: Logits ``[..., V]`` to steer (the warm model's, in the paper).
        delta_hat: Direction ``[..., V]`` (zero outside ``keep``).
        keep: Confidence mask ``[..., V]``.
        mu: Strength: a float, or a tensor ``[batch]`` for one strength per leading row.
        filter_masked: Set masked tokens to ``−inf`` (the paper's λ = −∞), independent of the sign of μ.

    Returns:
        New float32 logits (float64 for float64 input). With ``mu == 0`` and no filter they equal the input
        upcast, bit for bit.

    Example:
        >>> z = torch.tensor([[1.0, 0.0, -3.0]]); d = torch.tensor([[0.5, -0.5, 0.0]])
        >>> keep = torch.tensor([[True, True, False]])
        >>> steer(z, d, keep, -2.0, filter_masked=True).tolist()
        [[0.0, 1.0, -inf]]
    """
    dtype = compute_dtype(logits)
    z = logits.to(dtype)
    if isinstance(mu, Tensor):
        m = mu.to(device=z.device, dtype=dtype).reshape(mu.shape + (1,) * (z.dim() - mu.dim()))
        out = z + m * delta_hat.to(dtype)
    elif mu == 0.0:
        out = z.clone()
    else:
        out = z + float(mu) * delta_hat.to(dtype)
    if filter_masked:
        out = out.masked_fill(~keep, float("-inf"))
    return out


def static_step(
    logits: Tensor, scaled: Tensor | None, *, alpha: float, n_tokens: int | None = None, filter_masked: bool = False
) -> Tensor:
    """One step of static mode (docs/concepts.md): ``ẑ = z + keep ⊙ (μ·v)``, ``keep`` the confidence mask of ``logits``.

    Args:
        logits: Scores ``[rows, V]`` of the step (any float dtype; the result is float32, float64 for float64).
        scaled: ``μ·v``: ``[V]`` for one strength, ``[rows, V]`` for one per row, or ``None`` for μ = 0 (the
            input upcast, bit for bit).
        alpha: Confidence threshold of the mask.
        n_tokens: Rows ``≥ n_tokens`` are vocabulary padding: never kept, never steered.
        filter_masked: Also set masked tokens to ``−inf`` (off in the static rule of docs/concepts.md).

    Returns:
        The steered scores.

    Example:
        >>> static_step(torch.tensor([[2.0, 1.0, -3.0]]), torch.tensor([1.0, 1.0, 1.0]), alpha=0.1).tolist()
        [[3.0, 2.0, -3.0]]
    """
    keep = _keep(logits, alpha, n_tokens)
    z = logits.to(compute_dtype(logits))
    if scaled is None:
        out = z.clone()
    else:
        out = z + torch.where(keep, scaled.to(device=z.device, dtype=z.dtype), torch.zeros((), dtype=z.dtype))
    if filter_masked:
        out.masked_fill_(~keep, float("-inf"))
    return out


def _keep(logits: Tensor, alpha: float, n_tokens: int | None) -> Tensor:
    """The confidence mask of ``logits`` with vocabulary padding (rows ``≥ n_tokens``) left out."""
    keep = confidence_mask(logits, alpha=alpha)
    if n_tokens is not None and n_tokens < logits.shape[-1]:
        keep[..., n_tokens:] = False
    return keep


def steering_direction(
    warm_logits: Tensor,
    *,
    base_logits: Tensor | None = None,
    static_vector: Tensor | None = None,
    alpha: float = 0.1,
    n_tokens: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The steering direction and confidence mask at some contexts: dynamic, static, or none.

    Args:
        warm_logits: Warm logits ``z_φ`` ``[..., V]``.
        base_logits: Base logits ``z_θ`` at the same contexts: the dynamic direction δ̂ (docs/concepts.md).
        static_vector: A task vector ``v`` ``[V]``: the static direction ``keep ⊙ v``.
        alpha: Confidence threshold of the mask.
        n_tokens: Rows ``≥ n_tokens`` are vocabulary padding: zero direction, outside the mask.

    Returns:
        ``(direction, keep)``: float32 (float64 for float64 logits) and bool, both ``[..., V]``; the direction is
        zero when neither ``base_logits`` nor ``static_vector`` is given.

    Raises:
        ValueError: Both ``base_logits`` and ``static_vector`` given.
    """
    if base_logits is not None and static_vector is not None:
        raise ValueError("give base_logits (dynamic) or static_vector (static), not both")
    if base_logits is not None:
        direction, keep = steering_delta(warm_logits, base_logits, alpha=alpha)
    else:
        keep = confidence_mask(warm_logits, alpha=alpha)
        dtype = compute_dtype(warm_logits)
        if static_vector is None:
            direction = torch.zeros(warm_logits.shape, dtype=dtype, device=warm_logits.device)
        else:
            v = static_vector.to(device=warm_logits.device, dtype=dtype)
            direction = torch.where(keep, v, torch.zeros((), dtype=dtype, device=v.device))
    width = warm_logits.shape[-1]
    if n_tokens is not None and n_tokens < width:
        keep = keep.clone()
        keep[..., n_tokens:] = False
        direction = direction.clone()
        direction[..., n_tokens:] = 0.0
    return direction, keep
