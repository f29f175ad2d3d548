"""``benchmarks/report_criteria.py``: the docs' rows of the criteria tried from pairs alone, per task and model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import report_criteria


def reproduce_row(task: str, setting: str, delta: float) -> dict[str, Any]:
    """A row of ``reproduce.json``: one setting's test Δ of the task's headline metric vs warm."""
    mode, _, aggregator = setting.partition("/")
    metric = {"truthfulqa": "mc2", "social_iqa": "accuracy"}[task]
    keys = {"task": task, "peft_method": "lora", "lr_label": "chosen", "metric": metric}
    return {**keys, "mode": mode, "aggregator": aggregator, "delta_vs_warm": delta}


ROWS = [reproduce_row("truthfulqa", "static/fit", 0.06), reproduce_row("social_iqa", "dynamic/fit", 0.02)]


def found(split: dict[str, list[float]]) -> dict[str, Any]:
    """``distractors.json`` with the split rule's test Δ per configuration (and no Spearman columns)."""
    return {"distractors": {f"{task}/lora/chosen": {"split": {"test_delta": d}} for task, d in split.items()}}


def test_the_split_rule_gets_a_row_over_all_tasks_and_one_over_its_check_alone() -> None:
    lines = report_criteria.criteria_tried_section(
        ROWS, found({"truthfulqa": [0.05, 0.01, 0.09], "social_iqa": [-0.01, -0.03, 0.01]})
    )
    assert lines[0] == "### Criteria tried from pairs alone {#criteria-tried}"
    split, siqa = (line for line in lines if line.startswith(("| split", "| the same on Social-IQa")))
    assert split.endswith("| 2 | 1 | 0 | +4.0 of +8.0 (50%) |")
    assert siqa.endswith("| 1 | 0 | 0 | -1.0 of +2.0 (-50%) |")


def test_a_task_no_configuration_has_gets_no_row_and_the_heading_and_note_are_the_callers() -> None:
    lines = report_criteria.criteria_tried_section(
        ROWS, found({"truthfulqa": [-0.02, -0.04, -0.01]}), heading="### m: other criteria", note=["checked here", ""]
    )
    assert lines[:4] == ["### m: other criteria", "", "checked here", ""]
    table = [line for line in lines if line.startswith("| ") and " of +" in line]
    assert len(table) == 1  # only the split rule's row: the other criteria are absent from these results
    assert table[0].endswith("| 1 | 0 | 1 | -2.0 of +6.0 (-33%) |")
    assert not any("Social-IQa alone" in line for line in lines)


def test_nothing_found_is_no_section() -> None:
    assert report_criteria.criteria_tried_section(ROWS, {}) == []


def with_candidates(delta: float) -> dict[str, Any]:
    """``distractors.json`` whose base-answer pass recorded one candidate's test Δ."""
    candidates = [{"setting": "static/fit", "test_delta": [delta, delta - 0.01, delta + 0.01]}]
    split = {"test_delta": [delta, delta - 0.01, delta + 0.01]}
    generated = {"candidates": candidates, "spearman": {"static": None, "all": None}}
    return {"distractors": {"truthfulqa/lora/chosen": {"split": split, "generated": generated}}}


def test_stored_deltas_that_no_longer_match_the_rows_are_said_to_be_from_other_adapters() -> None:
    moved = report_criteria.criteria_tried_section(ROWS, with_candidates(0.064))
    note = [line for line in moved if "retrained" in line or "up to" in line]
    assert note[-1] == "since, which moved a candidate's test Δ by up to 0.4 points, so a share can pass 100%."
    same = report_criteria.criteria_tried_section(ROWS, with_candidates(0.06))
    assert not any("retrained" in line for line in same)
