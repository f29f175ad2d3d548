"""Fuzzing the artifact reader and killing savers (issue 14): small samples of ``benchmarks/fuzz.py``.

The full runs (10,000 artifacts, 200 kills) are ``.venv/bin/python benchmarks/fuzz.py``; these keep the default
suite fast (a few seconds) while exercising the same generator and the same checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fuzz


def test_fuzzed_artifacts_raise_only_steerkit_errors_and_loaded_ones_round_trip(tmp_path: Path) -> None:
    result = fuzz.run_fuzz(400, seed=14, work=tmp_path)
    assert result["failures"] == []
    assert (result["non_steerkit"], result["round_trip_failures"], result["multi_line_messages"]) == (0, 0, 0)
    assert result["loaded"] > 20 and sum(result["refused_by_error"].values()) > 200  # both paths exercised


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork are POSIX")
def test_killed_savers_leave_the_old_or_the_new_artifact(tmp_path: Path) -> None:
    result = fuzz.run_crash(20, seed=14, work=tmp_path)
    assert result["problems"] == [] and result["bad"] == 0
    assert result["old"] + result["new"] + result["absent_restored"] == 20
    assert result["cleaned_by_next_save"] == 20


def test_hostile_hub_cards_never_crash_search_or_reach_the_terminal() -> None:
    import fuzz_cards

    result = fuzz_cards.run_card_fuzz(600, seed=28)
    assert result["failures"] == [] and result["n_failures"] == 0
    assert result["read"] > 400 and result["refused_as_malformed"] > 0  # both paths exercised
    assert {"steerkit.mu", "steerkit.modes", "base_model"} <= set(result["unreadable_fields"])
