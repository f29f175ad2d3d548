"""steerkit: build, store, share and apply SVDecode steering vectors.

The verbs::

    vector = steerkit.build(warm_model, None, pairs, tokenizer=tok)     # calibrate (steerkit.builder)
    vector = steerkit.load("me/truthfulqa-smollm2")                     # a folder or a Hub repo id
    with steerkit.attach(vector, model, tokenizer=tok) as steered:      # decode (steerkit.decode)
        steered.generate(**inputs)

plus ``warm_start``, ``evaluate_mc``, ``tune_mu`` and ``push_to_hub``. Every name is imported lazily on first
use, so ``import steerkit`` (and ``import steerkit.errors``) stays cheap; the rest of the library is importable
from its own module.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from steerkit._version import __version__

if TYPE_CHECKING:
    from steerkit.builder import build
    from steerkit.config import MuStats, SteerConfig
    from steerkit.decode import SteeredModel, attach
    from steerkit.errors import SteerkitError
    from steerkit.evaluate import evaluate_mc
    from steerkit.format import read_config
    from steerkit.hub import list_local
    from steerkit.steering import Steering
    from steerkit.tune import tune_mu
    from steerkit.vector import SteeringVector, load, push_to_hub
    from steerkit.warmstart import warm_start

__all__ = [
    "MuStats",
    "SteerConfig",
    "SteeredModel",
    "Steering",
    "SteeringVector",
    "SteerkitError",
    "__version__",
    "attach",
    "build",
    "evaluate_mc",
    "list_local",
    "load",
    "push_to_hub",
    "read_config",
    "tune_mu",
    "warm_start",
]

_LAZY = {
    "MuStats": "steerkit.config",
    "SteerConfig": "steerkit.config",
    "SteeredModel": "steerkit.decode",
    "SteerkitError": "steerkit.errors",
    "Steering": "steerkit.steering",
    "SteeringVector": "steerkit.vector",
    "attach": "steerkit.decode",
    "build": "steerkit.builder",
    "evaluate_mc": "steerkit.evaluate",
    "list_local": "steerkit.hub",
    "load": "steerkit.vector",
    "push_to_hub": "steerkit.vector",
    "read_config": "steerkit.format",
    "tune_mu": "steerkit.tune",
    "warm_start": "steerkit.warmstart",
}


def __getattr__(name: str) -> Any:
    if name == "Steered":  # the handle's old name: one release of grace
        warnings.warn(
            "steerkit.Steered is deprecated: it is now steerkit.SteeredModel", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module("steerkit.decode").SteeredModel
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'steerkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
