"""The SVDecode maths (DESIGN §1): pure tensor functions, no models, no I/O.

Every function takes logits shaped ``[..., V]`` (any leading dimensions) and computes in float32 whatever
the input dtype (float64 stays float64, for tests). Notation: φ is the warm-started model (adapter on),
θ the base model (adapter off), ``p_φ = softmax(z_φ)``.

- :func:`steering_delta`: the masked softmax-Jacobian projection ``δ̂ = keep ⊙ (−p_φ ⊙ (l − KL))`` with
  ``l = log p_φ − log p_θ``;
- :func:`mu_terms` / :func:`aggregate_mu`: the per-token Newton step ``μ*_t = ⟨e_y − p_φ, δ̂⟩ / c_t`` and its
  aggregates over a calibration set;
- :class:`TokenTerms` / :func:`fit_mu`: the compact per-token data (kept entries only) from which the
  exact minimiser of the summed calibration NLL, the static strength and steered option scores follow
  without another forward pass;
- :func:`steer`: the decode rule ``ẑ = z + μ·δ̂`` with the optional ``−inf`` filter on masked tokens.

``−inf`` entries (padded vocabulary rows, earlier filters) never produce NaN: a token the warm model gives
zero probability contributes nothing, and a base log-probability of ``−inf`` where the warm model has mass
is clamped to :data:`LOGPROB_FLOOR` nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AGGREGATORS",
    "CURVATURES",
    "EPSILON",
    "LOGPROB_FLOOR",
    "TokenTerms",
    "aggregate_mu",
    "confidence_mask",
    "fit_mu",
    "mu_star",
    "mu_terms",
    "steer",
    "steering_delta",
]

Curvature = Literal["paper", "exact"]
Aggregator = Literal["mean", "median", "trimmed", "ratio"]

CURVATURES: tuple[str, ...] = ("paper", "exact")
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed", "ratio")
EPSILON = 1e-12
LOGPROB_FLOOR = -1e4
TRIM_FRACTION = 0.1  # "trimmed" drops this fraction of μ* at each end (mean of the central 80%)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}: it is the confidence threshold relative to max p")


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
    _check_alpha(alpha)
    # log p = z − logsumexp(z) shifts every entry of a row alike, so the logits give the same comparison.
    return _mask_from_logprobs(warm_logits.to(_compute_dtype(warm_logits)), alpha)


def steering_delta(warm_logits: Tensor, base_logits: Tensor, *, alpha: float = 0.1) -> tuple[Tensor, Tensor]:
    """The masked steering direction δ̂ of DESIGN §1 and its confidence mask.

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
    _check_alpha(alpha)
    dtype = _compute_dtype(warm_logits)
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
    dtype = _compute_dtype(warm_logits)
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
    dtype = _compute_dtype(logits)
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


@dataclass(frozen=True)
class TokenTerms:
    """Compact per-token data for steered log-probabilities ``log softmax(z + μ·d)[y]`` at any μ.

    A steering direction ``d`` is zero outside the kept entries, so the steered log-probability of the gold
    token ``y`` at token ``t`` needs only the kept logits and directions, the gold logit, and the logsumexp of
    the logits outside the mask::

        log p_μ(y) = z_y + μ d_y − logsumexp(z_K + μ d_K, lse_rest)

    All tensors are float64 (long for indices). ``T`` tokens, ``N`` kept entries in all.

    Attributes:
        token: ``[N]`` which token each kept entry belongs to (``0..T-1``, non-decreasing).
        index: ``[N]`` vocabulary id of each kept entry.
        logits: ``[N]`` warm logit ``z`` at each kept entry.
        delta: ``[N]`` direction ``d`` at each kept entry.
        gold: ``[T]`` gold token id.
        gold_logit: ``[T]`` ``z_y``.
        gold_kept: ``[T]`` whether the gold token is inside the mask.
        rest_lse: ``[T]`` logsumexp of the logits outside the mask (``−inf`` if none).
    """

    token: Tensor
    index: Tensor
    logits: Tensor
    delta: Tensor
    gold: Tensor
    gold_logit: Tensor
    gold_kept: Tensor
    rest_lse: Tensor

    @property
    def n_tokens(self) -> int:
        """Number of tokens ``T``."""
        return int(self.gold.numel())

    @classmethod
    def from_logits(cls, warm_logits: Tensor, direction: Tensor, keep: Tensor, target_ids: Tensor) -> TokenTerms:
        """Compress full ``[T, V]`` logits, a direction zero outside ``keep``, and gold ids ``[T]``."""
        z = warm_logits.reshape(-1, warm_logits.shape[-1]).double()
        k = keep.reshape(z.shape)
        d = direction.reshape(z.shape).double()
        gold = target_ids.reshape(-1).long()
        token, index = k.nonzero(as_tuple=True)
        rest = torch.logsumexp(z.masked_fill(k, float("-inf")), dim=-1)
        gold_kept = k.gather(1, gold[:, None]).squeeze(1)
        return cls(
            token=token,
            index=index,
            logits=z[token, index],
            delta=d[token, index],
            gold=gold,
            gold_logit=z.gather(1, gold[:, None]).squeeze(1),
            gold_kept=gold_kept,
            rest_lse=rest,
        )

    @classmethod
    def empty(cls) -> TokenTerms:
        """Terms for zero tokens (the neutral element of :meth:`cat`)."""
        f = torch.zeros(0, dtype=torch.float64)
        i = torch.zeros(0, dtype=torch.long)
        return cls(i, i, f, f, i, f, torch.zeros(0, dtype=torch.bool), f)

    @classmethod
    def cat(cls, parts: Sequence[TokenTerms]) -> TokenTerms:
        """Concatenate terms of consecutive token ranges."""
        parts = [p for p in parts if p.n_tokens]
        if not parts:
            return cls.empty()
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += p.n_tokens
        return cls(
            token=torch.cat([p.token + o for p, o in zip(parts, offsets, strict=True)]),
            index=torch.cat([p.index for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
            delta=torch.cat([p.delta for p in parts]),
            gold=torch.cat([p.gold for p in parts]),
            gold_logit=torch.cat([p.gold_logit for p in parts]),
            gold_kept=torch.cat([p.gold_kept for p in parts]),
            rest_lse=torch.cat([p.rest_lse for p in parts]),
        )

    def with_direction(self, vector: Tensor) -> TokenTerms:
        """The same tokens and masks with direction ``keep_t ⊙ vector`` (the static task vector)."""
        v = vector.double().to(self.index.device)
        return TokenTerms(
            token=self.token,
            index=self.index,
            logits=self.logits,
            delta=v[self.index],
            gold=self.gold,
            gold_logit=self.gold_logit,
            gold_kept=self.gold_kept,
            rest_lse=self.rest_lse,
        )

    def _gold_delta(self) -> Tensor:
        out = torch.zeros(self.n_tokens, dtype=torch.float64, device=self.gold.device)
        hit = self.index == self.gold[self.token]
        return out.index_add_(0, self.token[hit], self.delta[hit])

    def _segment_sum(self, values: Tensor) -> Tensor:
        return torch.zeros(self.n_tokens, dtype=values.dtype, device=values.device).index_add_(0, self.token, values)

    def _segment_logsumexp(self, values: Tensor) -> Tensor:
        top = torch.full((self.n_tokens,), float("-inf"), dtype=torch.float64, device=values.device)
        top = top.scatter_reduce(0, self.token, values, reduce="amax", include_self=True)
        top = torch.maximum(top, self.rest_lse)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        total = self._segment_sum((values - top[self.token]).exp()) + (self.rest_lse - top).exp()
        return top + total.log()

    def probs(self) -> Tensor:
        """``p_φ`` at each kept entry ``[N]`` (unsteered)."""
        return (self.logits - self._segment_logsumexp(self.logits)[self.token]).exp()

    def mu_terms(self, *, curvature: Curvature = "paper") -> tuple[Tensor, Tensor]:
        """Per-token ``(numerator, denominator)`` exactly as :func:`mu_terms` on the full logits."""
        if curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}; got {curvature!r}")
        p = self.probs()
        pd = self._segment_sum(p * self.delta)
        numerator = self._gold_delta() - pd
        if curvature == "paper":
            return numerator, self._segment_sum(self.delta * self.delta)
        return numerator, (self._segment_sum(p * self.delta * self.delta) - pd * pd).clamp(min=0.0)

    def logprobs(self, mu: float) -> Tensor:
        """Steered gold log-probabilities ``[T]`` at strength ``mu`` (no ``−inf`` filter).

        A gold token whose logit is ``−inf`` gets ``−inf`` (never NaN).
        """
        steered = self.logits + mu * self.delta
        gold = self.gold_logit + mu * self._gold_delta()
        out = gold - self._segment_logsumexp(steered)
        return torch.where(torch.isneginf(self.gold_logit), self.gold_logit, out)

    def _nll_parts(self, mu: float) -> tuple[Tensor, Tensor, Tensor]:
        steered = self.logits + mu * self.delta
        lse = self._segment_logsumexp(steered)
        q = (steered - lse[self.token]).exp()
        mean_d = self._segment_sum(q * self.delta)
        var_d = (self._segment_sum(q * self.delta * self.delta) - mean_d * mean_d).clamp(min=0.0)
        gold_delta = self._gold_delta()
        # A gold token with logit −inf has NLL +inf at every μ: a constant, with zero derivatives.
        lost = torch.isneginf(self.gold_logit)
        nll = torch.where(lost, float("inf"), lse - self.gold_logit - mu * gold_delta)
        return nll, torch.where(lost, 0.0, mean_d - gold_delta), torch.where(lost, 0.0, var_d)

    def nll_derivatives(self, mu: float) -> tuple[float, float, float]:
        """Summed NLL ``Σ −log p_μ(y_t)`` and its first and second derivatives in μ.

        A token whose gold logit is ``−inf`` adds ``+inf`` to the NLL and nothing to the derivatives.
        """
        nll, grad, curv = self._nll_parts(mu)
        return float(nll.sum()), float(grad.sum()), float(curv.sum())


def fit_mu(terms: TokenTerms, *, max_iter: int = 100, tol: float = 1e-10, max_abs: float = 1e4) -> float:
    """The exact minimiser over μ of the summed token NLL ``Σ_t CE(y_t, softmax(z_t + μ d_t))``.

    The objective is convex in μ, so its derivative is non-decreasing: the minimiser is bracketed by
    expanding steps from 0, then found by safeguarded Newton steps (exact curvature; a bisection whenever a
    step would leave the bracket or does not halve the derivative). Sharp distributions make the curvature
    vanish away from the optimum, where plain Newton steps would overshoot by orders of magnitude.

    Args:
        terms: Compact per-token data (see :class:`TokenTerms`).
        max_iter: Newton or bisection steps at most, after bracketing.
        tol: Stop when the bracket is narrower than ``tol · max(1, |μ|)``.
        max_abs: Search bound. Without a finite minimiser (every gold token ends up dominant as μ grows) the
            result is where the derivative underflows to 0 in float64, or ``±max_abs`` if it never does.

    Returns:
        The fitted μ as a float; 0.0 for no tokens or a flat objective (every ``d`` zero).

    Example:
        Two tokens with ``p = (3/4, 1/4)``, gold 0 then gold 1, direction ``(1, −1)``: the NLL is lowest where
        the steered distribution is ``(1/2, 1/2)``, at ``μ = −log(3)/2``.

        >>> z = torch.tensor([[math.log(3), 0.0], [math.log(3), 0.0]], dtype=torch.float64)
        >>> d = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
        >>> terms = TokenTerms.from_logits(z, d, torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, 1]))
        >>> round(fit_mu(terms), 9) == round(-math.log(3) / 2, 9)
        True
    """
    if terms.n_tokens == 0:
        return 0.0

    def derivatives(mu: float) -> tuple[float, float]:
        _, grad, curv = terms._nll_parts(mu)  # tokens with a −inf gold logit are constant: zero derivatives
        return float(grad.sum()), float(curv.sum())

    g, h = derivatives(0.0)
    if g == 0.0:
        return 0.0
    # Bracket the root of the (non-decreasing) derivative: lo has g < 0, hi has g > 0.
    direction = 1.0 if g < 0 else -1.0
    inner, outer = (0.0, g, h), min(max(abs(g) / h if h > 0 else 1.0, 1e-6), max_abs)  # first try: a Newton step
    while True:
        g_out, h_out = derivatives(direction * outer)
        if g_out == 0.0:
            return direction * outer
        if (g_out > 0) == (direction > 0) or outer >= max_abs:  # the sign of g changed, or no finite minimiser
            break
        inner, outer = (outer, g_out, h_out), min(outer * 4.0, max_abs)
    if (g_out < 0) == (direction > 0):  # still descending at the bound
        return direction * outer
    lo, hi = sorted((direction * inner[0], direction * outer))
    # Newton from whichever end of the bracket is closer to the root (the smaller derivative).
    mu, g, h = (
        (direction * inner[0], inner[1], inner[2]) if abs(inner[1]) < abs(g_out) else (direction * outer, g_out, h_out)
    )
    previous = math.inf
    for _ in range(max_iter):
        step = mu - g / h if h > 0 else math.nan
        if not lo < step < hi or abs(g) > 0.5 * previous:
            step = 0.5 * (lo + hi)
        previous, moved = abs(g), abs(step - mu)
        mu = step
        g, h = derivatives(mu)
        if g == 0.0:
            break
        if g < 0:
            lo = mu
        else:
            hi = mu
        if min(hi - lo, moved) <= tol * max(1.0, abs(mu)):
            break
    return float(mu)
