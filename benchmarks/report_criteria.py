"""The docs' section on the other build criteria tried from pairs alone (``criteria.json``, ``distractors.json``):
each criterion's picks on the test split, and how well each distractor source orders the candidates."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from report_sections import HEADLINE, _hindsight, signed

#: Criteria tried from pairs alone and not adopted: (file, key in each configuration, label).
TRIED = (
    ("criteria", "nll", "held-out NLL of the gold tokens (`benchmarks/criteria.py`)"),
    ("criteria", "acc", "greedy token accuracy: the gold token is the steered argmax (`benchmarks/criteria.py`)"),
    ("criteria", "margin", "gold token's margin over the best other token, clipped ±5 (`benchmarks/criteria.py`)"),
    ("distractors", "drawn", "rank, distractors drawn from other pairs (build's default; `benchmarks/distractors.py`)"),
    ("distractors", "generated", "rank, distractor = the base model's own greedy answer (`benchmarks/distractors.py`)"),
    ("distractors", "generated_static", "the same, without the dynamic candidates (`benchmarks/distractors.py`)"),
    ("distractors", "generated_static_gated", "the same, behind build's NLL gate (`benchmarks/distractors.py`)"),
)


def _tried_row(rows: Sequence[Mapping[str, Any]], results: Mapping[str, Any], key: str, label: str) -> str:
    """One criterion's line: configurations, significant gains and losses, summed Δ of the hindsight gain."""
    n = wins = losses = 0
    total = best = 0.0
    for config, result in results.items():
        task, method, lr_label = config.split("/")
        entry = result.get(key)
        delta = entry[1] if isinstance(entry, list) else (entry or {}).get("test_delta")
        if delta is None:
            continue
        n, wins, losses, total = n + 1, wins + (delta[1] > 0), losses + (delta[2] < 0), total + delta[0]
        where = {"task": task, "peft_method": method, "lr_label": lr_label, "metric": HEADLINE[task]}
        best += _hindsight(rows, where)
    share = f"{100 * total / best:.0f}%" if best > 0 else "–"
    return f"| {label} | {n} | {wins} | {losses} | {signed(total)} of {signed(best)} ({share}) |"


def criteria_tried_section(rows: Sequence[Mapping[str, Any]], found: Mapping[str, Any]) -> list[str]:
    """Other pairs-only criteria, each through build's 5-fold picker: how its picks did on the test split."""
    lines = [_tried_row(rows, found[name], key, label) for name, key, label in TRIED if found.get(name)]
    if not lines:
        return []
    return [
        "### Other criteria tried from pairs alone {#criteria-tried}",
        "",
        "Each picks among the same candidates by the same 5-fold cross-validation on the calibration pairs; its",
        "pick's test Δ of the headline metric vs warm (points) is read from the table above (no test item is read by",
        "any choice). Build's default is the rank against drawn distractors:",
        "",
        "| held-out measure | configurations | significantly better | significantly worse | summed Δ (share of "
        "the gain in hindsight) |",
        "|---|---|---|---|---|",
        *lines,
        "",
        *_correlation_lines(found.get("distractors") or {}),
    ]


def _correlation_lines(results: Mapping[str, Any]) -> list[str]:
    """How well each distractor source orders the candidates: Spearman ρ of cross-validated Δ with test Δ."""
    found = {
        (source, group): sorted(r[source]["spearman"][group] for r in results.values())
        for source in ("drawn", "generated")
        for group in ("static", "all")
        if all(r.get(source, {}).get("spearman", {}).get(group) is not None for r in results.values())
    }
    if not results or len(found) < 4:
        return []

    def cell(source: str, group: str) -> str:
        values = found[source, group]
        return f"{statistics.median(values):+.2f} ({values[0]:+.2f} to {values[-1]:+.2f})"

    return [
        "How well the cross-validated Δ orders the candidates as the test split does (Spearman ρ per",
        f"configuration, median and range over {len(results)}): drawn distractors, static candidates",
        f"{cell('drawn', 'static')}, all {cell('drawn', 'all')}; the base model's own answer, static",
        f"{cell('generated', 'static')}, all {cell('generated', 'all')}. Dynamic mode's δ̂ pushes the warm model",
        "away from the base model's next token, so a distractor that is the base model's answer favours dynamic",
        "by construction.",
        "",
    ]
