"""Kept-entry maths: :class:`TokenTerms`, the compact per-token data of steered log-probabilities, and
:func:`fit_mu`, the exact minimiser of the summed calibration NLL.

A steering direction is zero outside the confidence mask, so a steered log-probability at any μ needs only the
kept logits and directions, the gold logit and the logsumexp of the other logits: calibration (:mod:`steerkit.builder`)
and option scoring (:mod:`steerkit.scoring`) keep these instead of ``[T, V]`` blocks, and re-score any μ without a
forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from steerkit.svdecode import CURVATURES, Curvature

__all__ = ["OptionTerms", "TokenTerms", "fit_mu"]


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

    def subset(self, tokens: Tensor) -> TokenTerms:
        """The terms of the tokens where the ``[T]`` bool mask ``tokens`` is true, renumbered in order."""
        keep = tokens.to(torch.bool)
        renumber = keep.long().cumsum(0) - 1
        entry = keep[self.token]
        return TokenTerms(
            token=renumber[self.token[entry]],
            index=self.index[entry],
            logits=self.logits[entry],
            delta=self.delta[entry],
            gold=self.gold[keep],
            gold_logit=self.gold_logit[keep],
            gold_kept=self.gold_kept[keep],
            rest_lse=self.rest_lse[keep],
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


@dataclass(frozen=True)
class OptionTerms:
    """Everything needed to score every option of a set of items at any μ, without a forward pass.

    Attributes:
        terms: :class:`TokenTerms` of every option token, options one after another.
        segment: ``[T]`` the option each token belongs to.
        n_options: Number of distinct (item, choice text) options.
        layout: Per item, the option indices of ``"choices"`` and (when present) ``"mc2_choices"``.
        filter_masked: Whether scores use the ``−inf`` filter (a gold token outside the mask scores ``−inf``).
        mu: The strength of the steering these terms were built for (0.0 for none).
        mode: ``"dynamic"``, ``"static"`` or ``"none"``.
    """

    terms: TokenTerms
    segment: Tensor
    n_options: int
    layout: list[dict[str, list[int]]]
    filter_masked: bool = False
    mu: float = 0.0
    mode: str = "none"

    def option_scores(self, mu: float | None = None) -> Tensor:
        """Summed option log-probabilities ``[n_options]`` (float64) at strength ``mu`` (default ``self.mu``)."""
        m = self.mu if mu is None else float(mu)
        if self.filter_masked:
            # ẑ[~keep] = −inf: the normaliser runs over the kept entries only, a gold token outside scores −inf.
            kept_only = dataclasses.replace(self.terms, rest_lse=torch.full_like(self.terms.rest_lse, float("-inf")))
            lp = kept_only.logprobs(m)
            lp = torch.where(self.terms.gold_kept, lp, torch.full_like(lp, float("-inf")))
        else:
            lp = self.terms.logprobs(m)
        return torch.zeros(self.n_options, dtype=torch.float64).index_add_(0, self.segment, lp)

    def item_scores(self, mu: float | None = None) -> list[dict[str, list[float]]]:
        """Per item, the scores of ``"choices"`` (and ``"mc2_choices"``) at strength ``mu``."""
        scores = self.option_scores(mu).tolist()
        return [{key: [scores[j] for j in idx] for key, idx in entry.items()} for entry in self.layout]
