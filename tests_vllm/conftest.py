"""vLLM tests (``make test-vllm``): run in ``.venv-vllm`` (vLLM pins transformers), skipped where vLLM is missing.

One session builds a real artifact (SmolLM2-135M-Instruct, LoRA warm start, TruthfulQA; about a minute) and a
second one with the task vector negated, then runs one vLLM engine over both in a subprocess
(``tests_vllm/engine.py``: vLLM spawns its engine, so the engine lives under ``__main__``). Set
``STEERKIT_VLLM_TEST_ARTIFACT`` to an artifact folder to skip the build while iterating.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: A subprocess deadline that only catches a hang, never a slow machine.
HANG_SECONDS = 3600

pytest.importorskip("vllm")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(tqa, flip)``: the built artifact and a copy whose task vector is ``−v`` (same adapter, same μ_s)."""
    from artifact import make_artifact

    from steerkit.vector import SteeringVector

    root = tmp_path_factory.mktemp("vllm-artifacts")
    given = os.environ.get("STEERKIT_VLLM_TEST_ARTIFACT")
    tqa = Path(given) if given else make_artifact(root / "tqa")
    vector = SteeringVector.load(tqa)
    config = dataclasses.replace(vector.config, task_vector_sha256="")
    dataclasses.replace(vector, task_vector=-vector.task_vector, config=config).save(root / "flip")
    return tqa, root / "flip"


@pytest.fixture(scope="session")
def engine(artifacts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What one vLLM engine run produced (see ``engine.py``)."""
    out = tmp_path_factory.mktemp("vllm-run") / "engine.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run(
        [sys.executable, str(HERE / "engine.py"), str(artifacts[0]), str(artifacts[1]), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result
