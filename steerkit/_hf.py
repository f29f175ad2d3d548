"""Shims over torch, transformers and peft: one home for the small decisions every layer shares.

- :class:`AdapterSwitch`: a PeftModel's adapter off for a ``with`` block, flipping the same private per-layer flag
  peft's ``disable_adapter()`` flips (about 10 ms a step cheaper); ``tests/test_decode.py`` pins it against
  ``disable_adapter()`` so that a peft upgrade renaming the flag fails loudly;
- :func:`cache_arg` / :func:`new_cache`: the name of the KV-cache argument of a model's forward (``cache`` in
  newer transformers, ``past_key_values`` before) and a fresh cache;
- :func:`pad_id`: the one padding rule (pad → eos → 0); :func:`is_peft`, :func:`first_id`, :func:`all_ids`: small
  inspections;
- :func:`trim_heap`: glibc's ``malloc_trim`` through ``ctypes`` (a no-op elsewhere), which :func:`steerkit.build`
  calls between calibration batches so that freed ``[chunk, V]`` blocks go back to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import sys
from collections.abc import Iterator
from typing import Any

from torch import Tensor


class AdapterSwitch:
    """Turns a PeftModel's adapter off for a ``with`` block: the base model θ from the same weights.

    For layer-injecting methods (LoRA, IA3, ...) it flips the same per-layer flag peft's ``disable_adapter()``
    flips (``_disable_adapters`` of every tuner layer and auxiliary wrapper) and restores each layer's previous
    value; peft's context re-scans the whole model and checks its status first, which costs about 10 ms a step
    on SmolLM2. Prompt-learning methods, and layers without that flag, use ``disable_adapter()`` itself.
    """

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model
        self.layers: list[Any] | None = None
        try:
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper
        except ImportError:  # pragma: no cover - peft moved them
            return
        config = peft_model.peft_config[peft_model.active_adapter]
        if getattr(config, "is_prompt_learning", False) or getattr(config, "is_adaption_prompt", False):
            return
        if getattr(config, "bias", "none") != "none":
            return  # peft warns that disabling is not exact there; let it say so
        layers = [m for m in peft_model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
        if layers and all(isinstance(getattr(m, "_disable_adapters", None), bool) for m in layers):
            self.layers = layers

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        """The adapter is disabled inside the block."""
        if self.layers is None:
            with self.peft_model.disable_adapter():
                yield
            return
        before = [m._disable_adapters for m in self.layers]
        try:
            for m in self.layers:
                m._disable_adapters = True
            yield
        finally:
            for m, flag in zip(self.layers, before, strict=True):
                m._disable_adapters = flag


def first_id(value: Any) -> int | None:
    ids = all_ids(value)
    return ids[0] if ids else None


def all_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, Tensor):
        return [int(v) for v in value.flatten().tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache()


def cache_arg(model: Any) -> str:
    """The name ``model.forward`` takes its KV cache under (``cache``; ``past_key_values`` before its rename)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel passes it on
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def pad_id(tokenizer: Any) -> int:
    """The id that pads batches: the tokenizer's pad token, else its end-of-sequence token, else 0.

    Padded positions are always masked out, so the choice never changes a logit; it only has to be one rule.
    """
    return next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)


_LIBC: Any = None


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    On CPU every chunk allocates and frees a few ``[chunk, V]`` temporaries; glibc raises its mmap threshold
    after such frees and then keeps freed blocks in its heap, so without this the resident size can creep far
    above the working set over a long calibration.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
