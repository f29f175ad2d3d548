"""`steerkit demo --task sentiment` end to end on the real SmolLM2-135M-Instruct (slow): its printed eval table.

The default TruthfulQA demo takes minutes; its wall time is a figure of ``benchmarks/speed.py`` (``--only demo``),
not a timed test, and its whole path runs on a tiny model in ``test_cli.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import HANG_SECONDS

from steerkit.vector import SteeringVector

pytestmark = pytest.mark.slow

CI = r"([\d.]+) \[([\d.]+), ([\d.]+)\]"
DELTA = r"(-|[+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\])"
ROW = re.compile(rf"^\s*(base|warm|static|dynamic)\s+(-|-?[\d.e+-]+)\s+{CI}\s+{DELTA}\s+(\d+)\s*$", re.MULTILINE)


def test_sentiment_demo_prints_the_eval_table_with_paired_deltas(tmp_path: Path, smollm2_dir: Path) -> None:
    script = Path(sys.executable).with_name("steerkit")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [str(script), "demo", "--task", "sentiment", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        cwd=tmp_path,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    rows = {m[0]: m for m in ROW.findall(proc.stdout)}
    assert list(rows) == ["base", "warm", "static", "dynamic"]
    vector = SteeringVector.load(out)
    assert rows["base"][1] == "-" and rows["warm"][1] == "-"
    assert float(rows["static"][1]) == pytest.approx(vector.mu_static, rel=1e-3)
    assert float(rows["dynamic"][1]) == pytest.approx(vector.mu, rel=1e-3)
    for name, (_, _, value, low, high, delta, n) in rows.items():
        assert int(n) == 40, name
        assert 0.0 <= float(low) <= float(value) <= float(high) <= 1.0, name
        assert (delta == "-") == (name == "warm"), name
    # the warm start learned the task: at least 80% on held-out reviews
    assert float(rows["warm"][2]) >= 0.8
    assert "Generations" in proc.stdout
    assert re.search(r"^static: accuracy [+-][\d.]+ vs warm, 95% CI", proc.stdout, re.MULTILINE)
    # running again without --force is refused, naming the folder
    again = subprocess.run(
        [str(script), "demo", "--out", str(out)], capture_output=True, text=True, timeout=HANG_SECONDS
    )
    assert again.returncode == 1
    assert f"'{out}' already exists and is not empty" in again.stderr
