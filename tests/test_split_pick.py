"""Build's default picker, the split rule (``steerkit.gate.split_pick``): static by rank, dynamic by NLL, no steering
where base beats warm; its reasons; and ``benchmarks/distractors.py``'s picks read from stored candidates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import distractors
import torch

from steerkit.gate import recommend, split_pick


def row(setting: str, rank: tuple[float, float, float], nll: tuple[float, float, float]) -> dict[str, Any]:
    """One stored candidate: its rank Δ and NLL Δ vs warm (gains, with the interval), and a test Δ to carry."""
    return {
        "setting": setting,
        "mu": -1.0,
        "delta_vs_warm": rank[0],
        "ci_low": rank[1],
        "ci_high": rank[2],
        "nll_delta": nll[0],
        "nll_ci_low": nll[1],
        "nll_ci_high": nll[2],
        "test_delta": [0.01, 0.0, 0.02],
    }


ZERO = (0.0, 0.0, 0.0)
WORSE = (-0.2, -0.3, -0.1)


def candidates(base_nll: tuple[float, float, float]) -> list[dict[str, Any]]:
    return [
        row("warm", ZERO, ZERO),
        row("base", (-0.02, -0.03, -0.01), base_nll),
        row("static/trimmed/exact", (0.06, 0.02, 0.10), WORSE),  # ranks better, NLL worse
        row("static/ratio/paper", (0.001, -0.001, 0.003), (0.001, -0.001, 0.002)),
        row("dynamic/trimmed/exact", (0.20, 0.10, 0.30), WORSE),  # the base-answer rank favours dynamic
        row("dynamic/fit", (0.004, -0.002, 0.011), (0.04, 0.02, 0.07)),
        row("dynamic/ratio/paper", (0.001, -0.001, 0.003), (0.02, 0.01, 0.03)),
    ]


def test_a_static_candidate_that_ranks_better_wins_over_any_dynamic_one() -> None:
    assert split_pick(candidates(base_nll=WORSE))["setting"] == "static/trimmed/exact"


def test_without_a_static_gain_the_dynamic_candidate_with_the_largest_nll_gain_wins() -> None:
    found = [c for c in candidates(base_nll=WORSE) if c["setting"] != "static/trimmed/exact"]
    assert split_pick(found)["setting"] == "dynamic/fit"
    no_nll_gain = [c for c in found if c["setting"] not in ("dynamic/fit", "dynamic/ratio/paper")]
    assert split_pick(no_nll_gain)["setting"] == "warm"  # dynamic's rank alone never recommends


def test_no_steering_where_the_base_model_has_the_better_held_out_nll() -> None:
    assert split_pick(candidates(base_nll=(0.05, 0.02, 0.07)))["setting"] == "warm"
    ranks_better = [{**c, "delta_vs_warm": 0.01, "ci_low": 0.005} if c["setting"] == "base" else c for c in
                    candidates(base_nll=(0.05, 0.02, 0.07))]  # fmt: skip
    assert split_pick(ranks_better)["setting"] == "base"
    # not significantly better: steering stays allowed
    assert split_pick(candidates(base_nll=(0.01, -0.01, 0.03)))["setting"] == "static/trimmed/exact"


def test_the_derived_picks_are_read_from_the_stored_columns() -> None:
    found = distractors.derived(candidates(base_nll=WORSE))
    assert found["generated_static"]["pick"] == "static/trimmed/exact"
    assert found["generated_static_gated"]["pick"] == "warm"  # its NLL is significantly worse than warm's
    assert found["split"] == {"pick": "static/trimmed/exact", "mu": -1.0, "test_delta": [0.01, 0.0, 0.02]}


def _block(per_unit: dict[str, Any], nll: dict[str, Any]) -> dict[str, Any]:
    meta = {"measure": "rank", "unit": "example", "folds": 5, "seed": 0, "n": 40}
    strengths = {s: -1.0 for s in per_unit if s not in ("warm", "base")}
    return recommend(per_unit, strengths, base=None, meta=meta, columns={"nll": nll}, picker="split")


def test_recommend_with_the_split_picker_says_which_measure_chose_and_why() -> None:
    warm = torch.tensor([0.2, 0.6] * 20, dtype=torch.float64)
    settings = ("warm", "base", "static/fit", "dynamic/fit")
    ranks = dict(zip(settings, (warm, warm, warm + 0.1, warm + 0.3), strict=True))
    nll = dict(zip(settings, (warm, warm - 0.1, warm - 0.1, warm + 0.05), strict=True))
    block = _block(ranks, nll)
    assert block["recommended"]["setting"] == "static/fit"  # not dynamic/fit, whose rank gain is larger
    assert block["reason"] == (
        "static/fit gains +0.1000 [+0.1000, +0.1000] held-out mass on the gold completion over warm alone on 40 "
        "examples, 5-fold: the largest gain whose interval lies above zero among the base model and the static "
        "settings"
    )
    block = _block(ranks | {"static/fit": warm}, nll)
    assert block["recommended"]["setting"] == "dynamic/fit"
    assert block["reason"].startswith(
        "no static setting beats warm alone by rank; dynamic/fit lowers the held-out NLL per token by +0.0500 "
        "[+0.0500, +0.0500] on 40 examples, 5-fold"
    )
    block = _block(ranks | {"static/fit": warm}, nll | {"dynamic/fit": warm})
    assert block["recommended"]["setting"] == "warm"
    assert block["reason"].startswith("steering did not help on this data") and block["reason"].endswith("μ = 0")
    vetoed = _block(ranks, nll | {"base": warm + 0.2})  # base's held-out NLL is better than warm's
    assert vetoed["recommended"]["setting"] == "warm"
    assert vetoed["reason"].startswith(
        "the adapter moved away from this data: the base model (adapter off) lowers the held-out NLL per token by "
        "+0.2000 [+0.2000, +0.2000] against warm alone on 40 examples, 5-fold"
    )
    assert vetoed["reason"].endswith("warm-start again with a lower learning rate or fewer steps; recommending μ = 0")
    base_ranks = _block(ranks | {"base": warm + 0.2}, nll | {"base": warm + 0.2})
    assert base_ranks["recommended"]["setting"] == "base"
    assert base_ranks["reason"].startswith("the adapter hurts on this data: the base model (adapter off) gains")
