"""The no-regression gate: the ``validation`` block from held-out per-unit values of every candidate setting.

:mod:`steerkit.crossval` measures each candidate (base, warm alone, static and dynamic under every strength rule)
on held-out calibration units; :func:`recommend` compares each with warm alone by a paired bootstrap and picks the
largest gain whose 95% interval lies above zero, else warm alone (μ = 0), and says why in one sentence.

Build's default criterion picks by :func:`split_pick` instead, which judges each mode by the measure that does not
favour it by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from steerkit.stats import paired_bootstrap

__all__ = ["recommend"]

#: Bootstrap resamples of every interval in a ``validation`` block.
N_BOOTSTRAP = 2000


def recommend(
    per_unit: Mapping[str, Tensor],
    strengths: Mapping[str, float],
    *,
    base: Tensor | None,
    meta: Mapping[str, Any],
    seed: int = 0,
    columns: Mapping[str, Mapping[str, Tensor]] | None = None,
    gate: str | None = None,
    picker: str = "largest",
) -> dict[str, Any]:
    """The ``validation`` block from held-out per-unit values (higher is better) of every candidate.

    Args:
        per_unit: ``{setting: [units]}``, ``"warm"`` first; a ``"base"`` entry is a candidate like the others.
        strengths: μ of every steered setting.
        base: The base model's per-unit values, for the warm-vs-base note (when ``"base"`` is no candidate).
        meta: ``measure``, ``unit``, ``folds``, ``seed``, ``n`` and any other keys to record.
        seed: Seed of the bootstrap.
        columns: Reported beside the measure: ``{name: {setting: [units]}}`` (higher is better), each
            candidate's paired Δ vs warm and interval stored as ``<name>_delta``, ``<name>_ci_low``,
            ``<name>_ci_high``.
        gate: A column name: a candidate qualifies only if that column is not significantly worse than warm
            (its interval's upper end is not below zero).
        picker: ``"largest"`` (:func:`pick`) or ``"split"`` (:func:`split_pick`; needs an ``nll`` column).

    Returns:
        ``{"measure", "unit", "folds", "seed", "n", "n_bootstrap", "candidates": [{"setting", "mode", "rule",
        "mu", "estimate", "delta_vs_warm", "ci_low", "ci_high"}, ...], "warm_vs_base": {...} | None,
        "recommended": {"setting", "mode", "rule", "mu"}, "reason"}``. For ``nll`` the estimate is the held-out
        NLL per token (lower is better); ``delta_vs_warm`` is always the gain over warm alone.
    """
    warm = per_unit["warm"]
    sign = -1.0 if meta["measure"] == "nll" else 1.0
    candidates = [_candidate(s, v, warm, strengths, sign, seed, columns or {}) for s, v in per_unit.items()]
    warm_vs_base = None
    if base is not None and "base" not in per_unit:
        d = paired_bootstrap(warm, base, n_bootstrap=N_BOOTSTRAP, seed=seed)
        warm_vs_base = {
            "base_estimate": sign * float(base.mean()),
            "delta": d["difference"],
            "ci_low": d["ci_low"],
            "ci_high": d["ci_high"],
        }
    if picker == "split":
        best, why = _split(candidates)
        reason = _split_reason(best, why, candidates, meta)
    else:
        best = pick(candidates, gate)
        reason = _reason(best, [c for c in candidates if c["setting"] != "warm"], meta, gate)
    base_entry = next((c for c in candidates if c["setting"] == "base"), None)
    if base_entry is not None and base_entry["ci_low"] > 0.0 and best is not base_entry:
        reason += f"; the base model (adapter off) beats warm alone too ({_interval(base_entry)})"
    if warm_vs_base is not None and warm_vs_base["ci_high"] < 0.0:
        reason += (
            f"; the warm model is worse than base on this data ({_signed(warm_vs_base['delta'])} "
            f"[{_signed(warm_vs_base['ci_low'])}, {_signed(warm_vs_base['ci_high'])}])"
        )
    return {
        **meta,
        "n_bootstrap": N_BOOTSTRAP,
        "candidates": candidates,
        "warm_vs_base": warm_vs_base,
        "recommended": {k: best[k] for k in ("setting", "mode", "rule", "mu")},
        "reason": reason,
    }


def pick(candidates: Sequence[Mapping[str, Any]], gate: str | None = None) -> Mapping[str, Any]:
    """The rule that recommends: the largest ``delta_vs_warm`` among the candidates whose interval lies above zero
    (and, with ``gate``, whose ``<gate>_ci_high`` is not below zero), else the first candidate, warm alone."""
    helping = [
        c
        for c in candidates
        if c["setting"] != "warm" and c["ci_low"] > 0.0 and (gate is None or c[f"{gate}_ci_high"] >= 0.0)
    ]
    return max(helping, key=lambda c: c["delta_vs_warm"]) if helping else candidates[0]  # first of equals


def split_pick(candidates: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Each mode judged by the measure that does not favour it by construction, steering only where the adapter
    helped (build's default criterion, ``"split"``). The candidates carry the ``nll_*`` columns.

    - Steering extrapolates the fine-tune away from the base model (δ̂ points back toward the base model, and the
      useful μ is usually negative), so no steered candidate qualifies when the base model's held-out gold-token
      NLL is significantly better than warm alone's: the adapter moved away from the data, and its direction is no
      task direction.
    - Otherwise :func:`pick` over warm alone, base and the static candidates, by the measure (the rank against the
      base model's own answer: a static vector knows nothing of that answer).
    - If that keeps warm alone: the dynamic candidate with the largest held-out NLL gain whose interval lies above
      zero (dynamic δ̂ pushes away from the base model's next token, so the rank against the base model's answer
      would favour it by construction; the NLL does not).
    """
    return _split(candidates)[0]


def _split(candidates: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], str]:
    """:func:`split_pick`'s pick and which branch chose it: ``veto``, ``rank``, ``nll`` or ``none`` (read from the
    settings' names, so stored candidates without ``mode`` work too)."""
    base = next((c for c in candidates if c["setting"] == "base"), None)
    steer = base is None or base["nll_ci_low"] <= 0.0
    kept = [c for c in candidates if c["setting"] in ("warm", "base") or (steer and c["setting"].startswith("static/"))]
    best = pick(kept)
    if not steer:
        return best, "veto"
    if best["setting"] != "warm":
        return best, "rank"
    dynamic = [c for c in candidates if c["setting"].startswith("dynamic/") and c["nll_ci_low"] > 0.0]
    return (max(dynamic, key=lambda c: c["nll_delta"]), "nll") if dynamic else (best, "none")


def _split_reason(
    best: Mapping[str, Any], why: str, candidates: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> str:
    """Why :func:`split_pick` chose ``best``, in one sentence."""
    on = f"on {meta['n']} examples, {meta['folds']}-fold"
    if best["setting"] == "base":
        return _reason(best, [], meta, None)
    if why == "veto":
        base = next(c for c in candidates if c["setting"] == "base")
        return (
            f"the adapter moved away from this data: the base model (adapter off) lowers the held-out NLL per token "
            f"by {_interval(base, 'nll_')} against warm alone {on}, so its direction is no task direction and no "
            "steering is recommended; warm-start again with a lower learning rate or fewer steps; recommending μ = 0"
        )
    if why == "rank":
        return (
            f"{best['setting']} gains {_interval(best)} held-out mass on the gold completion over warm alone {on}: "
            "the largest gain whose interval lies above zero among the base model and the static settings"
        )
    if why == "nll":
        return (
            f"no static setting beats warm alone by rank; {best['setting']} lowers the held-out NLL per token by "
            f"{_interval(best, 'nll_')} {on}: the largest NLL gain whose interval lies above zero among the dynamic "
            "settings (dynamic mode is judged by NLL, since its direction pushes away from the base model's answer)"
        )
    return (
        "steering did not help on this data: no base or static setting beats warm alone by rank, and no dynamic "
        "setting by NLL, with an interval above zero; recommending μ = 0"
    )


def _candidate(
    setting: str,
    values: Tensor,
    warm: Tensor,
    strengths: Mapping[str, float],
    sign: float,
    seed: int,
    columns: Mapping[str, Mapping[str, Tensor]],
) -> dict[str, Any]:
    """One row of the candidates table: the estimate, and the paired Δ vs warm of the measure and each column."""
    steered = setting not in ("warm", "base")
    mode, _, rule = setting.partition("/")
    entry: dict[str, Any] = {
        "setting": setting,
        "mode": mode if steered else None,
        "rule": rule or None,
        "mu": float(strengths[setting]) if steered else 0.0,
        "estimate": sign * float(values.mean()),
        "delta_vs_warm": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
    }
    if setting != "warm":
        d = paired_bootstrap(values, warm, n_bootstrap=N_BOOTSTRAP, seed=seed)
        entry.update(delta_vs_warm=d["difference"], ci_low=d["ci_low"], ci_high=d["ci_high"])
    for name, table in columns.items():
        d = paired_bootstrap(table[setting], table["warm"], n_bootstrap=N_BOOTSTRAP, seed=seed)
        entry.update({f"{name}_delta": d["difference"], f"{name}_ci_low": d["ci_low"], f"{name}_ci_high": d["ci_high"]})
    return entry


def _reason(
    best: Mapping[str, Any], others: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], gate: str | None
) -> str:
    """Why ``best`` is recommended, in one sentence."""
    unit = "examples" if meta["unit"] == "example" else "items"
    what = {"nll": "held-out NLL per token", "rank": "held-out mass on the gold completion"}.get(
        meta["measure"], f"held-out {meta['measure']}"
    )
    gated = f" (and {gate} not significantly worse)" if gate else ""
    if best["setting"] == "base":
        return (
            f"the adapter hurts on this data: the base model (adapter off) gains {_interval(best)} {what} over warm "
            f"alone on {meta['n']} {unit}, {meta['folds']}-fold; use the base model, or warm-start again with a "
            "lower learning rate or fewer steps"
        )
    if best["setting"] != "warm":
        return (
            f"{best['setting']} gains {_interval(best)} {what} over warm alone on {meta['n']} {unit}, "
            f"{meta['folds']}-fold: the largest gain whose interval lies above zero{gated}"
        )
    reason = f"steering did not help on this data: no candidate beats warm alone with an interval above zero{gated}"
    if others:
        top = max(others, key=lambda c: c["delta_vs_warm"])
        reason += f" (best: {top['setting']}, {_interval(top)})"
    return reason + "; recommending μ = 0"


def _interval(c: Mapping[str, Any], column: str = "") -> str:
    """``Δ [low, high]`` of the measure, or of a reported column (``column="nll_"``)."""
    delta = c["delta_vs_warm"] if not column else c[f"{column}delta"]
    return f"{_signed(delta)} [{_signed(c[f'{column}ci_low'])}, {_signed(c[f'{column}ci_high'])}]"


def _signed(x: float) -> str:
    return f"{x:+.4f}"
