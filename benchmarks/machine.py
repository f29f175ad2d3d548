"""What machine a benchmark ran on: every speed result records it, since the same code's ratios move with the CPU."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

#: The CPU features that change how fast the matrix products of a decoder step run.
FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve")


def machine() -> dict[str, Any]:
    """CPU model, its relevant feature flags, core count and platform (``/proc/cpuinfo`` where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
            if model and flags:
                break
    return {
        "cpu_model": model,
        "cpu_flags": [f for f in FLAGS if f in flags],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
