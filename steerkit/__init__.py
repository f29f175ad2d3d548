"""steerkit: build, store, share and apply SVDecode steering vectors.

The heavy pieces (transformers, peft, huggingface_hub) are imported lazily on first use, so
``import steerkit`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from steerkit._version import __version__
from steerkit.artifact import MuStats, SteerConfig, SteeringVector, read_config
from steerkit.errors import SteerkitError

__all__ = [
    "MuStats",
    "SteerConfig",
    "SteeringVector",
    "SteerkitError",
    "__version__",
    "build",
    "evaluate_mc",
    "list_local",
    "read_config",
    "tune_mu",
    "warm_start",
]

_LAZY = {
    "build": "steerkit.builder",
    "warm_start": "steerkit.warmstart",
    "evaluate_mc": "steerkit.evaluate",
    "tune_mu": "steerkit.tune",
    "list_local": "steerkit.hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'steerkit' has no attribute {name!r}")
