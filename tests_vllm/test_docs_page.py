"""The Python example of docs/serve-vllm.md runs as written, on the test artifact and the local SmolLM2 folder.

It names no logits processor: steerkit's ``vllm.logits_processors`` entry point is what loads it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: A subprocess deadline that only catches a hang, never a slow machine.
HANG_SECONDS = 3600

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "serve-vllm.md"
HUB_ID = '"HuggingFaceTB/SmolLM2-135M-Instruct"'


def test_the_serve_page_python_example_runs(artifacts: tuple[Path, Path], tmp_path: Path) -> None:
    from steerkit.models import default_model_dir

    page = PAGE.read_text(encoding="utf-8")
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "LLM(" in block]
    assert code.count(HUB_ID) == 1
    # the entry point loads the processor: naming it as well would build it twice (vLLM does not deduplicate)
    commands = "".join(re.findall(r"```(?:python|bash)\n(.*?)```", page, flags=re.S))
    assert "logits_processors=" not in commands and "--logits-processors" not in commands
    script = tmp_path / "serve_example.py"
    script.write_text(code.replace(HUB_ID, repr(str(default_model_dir()))), encoding="utf-8")
    shutil.copytree(artifacts[0], tmp_path / "my-vector")
    env = {k: v for k, v in os.environ.items() if k not in ("STEERKIT_VLLM_VECTORS", "STEERKIT_VLLM_REGISTRY")}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_SECONDS
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    steered, plain = [line for line in proc.stdout.splitlines() if line.startswith("'")]
    assert steered != plain  # the steered request decoded differently from the same warm model unsteered
