"""`steerkit demo` end to end on the real SmolLM2-135M-Instruct (slow): wall time, and its printed eval table."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steerkit.artifact import SteeringVector

pytestmark = pytest.mark.slow

ROW = re.compile(
    r"^\s*(base|warm|static|dynamic)\s+(-|-?[\d.e+-]+)\s+([\d.]+) \[([\d.]+), ([\d.]+)\]\s+(\d+)\s*$", re.MULTILINE
)


def test_demo_runs_under_five_minutes_and_prints_the_eval_table(tmp_path: Path, smollm2_dir: Path) -> None:
    script = Path(sys.executable).with_name("steerkit")
    out = tmp_path / "demo"
    start = time.perf_counter()
    proc = subprocess.run(
        [str(script), "demo", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    seconds = time.perf_counter() - start
    print(f"\nsteerkit demo wall time: {seconds:.1f} s")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert seconds < 300
    rows = {m[0]: m for m in ROW.findall(proc.stdout)}
    assert list(rows) == ["base", "warm", "static", "dynamic"]
    vector = SteeringVector.load(out)
    assert rows["base"][1] == "-" and rows["warm"][1] == "-"
    assert float(rows["static"][1]) == pytest.approx(vector.mu_static, rel=1e-3)
    assert float(rows["dynamic"][1]) == pytest.approx(vector.mu, rel=1e-3)
    for name, (_, _, value, low, high, n) in rows.items():
        assert int(n) == 40, name
        assert 0.0 <= float(low) <= float(value) <= float(high) <= 1.0, name
    # the warm start learned the task: better than the base model's bias, at least 80% on held-out reviews
    assert float(rows["warm"][2]) >= 0.8
    assert "Generations" in proc.stdout
    # running again without --force is refused, naming the folder
    again = subprocess.run([str(script), "demo", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert f"'{out}' already exists and is not empty" in again.stderr
