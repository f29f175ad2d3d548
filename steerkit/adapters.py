"""The PEFT adapter of an artifact on a model: load it onto a plain model, and snapshot / restore that model.

:func:`load_adapter` writes the artifact's adapter files to a temporary folder, loads them with
``PeftModel.from_pretrained`` and returns the PeftModel with an ``undo`` that unloads the adapter and restores the
model exactly (:class:`Snapshot`: attributes, ``requires_grad`` and training flags). :func:`warm_and_base` gives
option scoring its warm model and a base context (the adapter switched off) for one pass. :func:`resolve_adapter` is the
build side: a ``PeftModel``, or an adapter folder (peft's rule: a directory wins) or Hub id loaded onto the base
model; :func:`adapter_files_of` the adapter's files as bytes, :func:`peft_type` its method.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerkit import constants as C
from steerkit._hf import AdapterSwitch, is_peft
from steerkit._io import recover
from steerkit.compatibility import check_compatible
from steerkit.errors import AdapterError
from steerkit.vector import SteeringVector


class Snapshot:
    """What loading an adapter may change on a plain model, to put back exactly on detach."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.attrs = dict(vars(model))
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.training = {name: m.training for name, m in model.named_modules()}

    def restore(self) -> None:
        model = self.model
        current = vars(model)
        for key in [k for k in current if k not in self.attrs]:
            del current[key]
        for key, value in self.attrs.items():
            if current.get(key) is not value:
                current[key] = value
        for name, p in model.named_parameters():
            if name in self.requires_grad:
                p.requires_grad_(self.requires_grad[name])
        for name, m in model.named_modules():
            if name in self.training:
                m.training = self.training[name]


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


def load_adapter(vector: SteeringVector, model: Any) -> tuple[Any, Callable[[], None]]:
    """Load the vector's adapter (safetensors weights only, never a pickle) onto ``model``; return it and undo."""
    from peft import PeftModel

    files = vector.adapter_files
    if not files:
        raise AdapterError(
            "this steering vector has no adapter, and dynamic mode needs one to compute the warm/base logits",
            hint='attach with mode="static", or pass the PeftModel the vector was built from',
        )
    if "adapter_config.json" not in files:
        raise AdapterError(
            f"the vector's adapter files lack adapter_config.json (found {', '.join(sorted(files))})",
            hint='re-create the artifact with its adapter, or attach with mode="static"',
        )
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts:
            raise AdapterError(f"the vector's adapter file name {name!r} leaves the adapter folder")
        if name.lower().endswith(_PICKLE_SUFFIXES):
            raise AdapterError(
                f"the vector's adapter holds '{name}', a pickle-format file; only safetensors weights are loaded",
                hint="re-save the adapter with safe_serialization=True (adapter_model.safetensors)",
            )
    snapshot = Snapshot(model)
    with tempfile.TemporaryDirectory(prefix="steerkit-adapter-") as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            peft_model = PeftModel.from_pretrained(model, tmp, is_trainable=False)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            snapshot.restore()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(
                f"cannot load the vector's adapter onto this model: {first}",
                hint='check that the model is the vector\'s base model, or attach with mode="static"',
            ) from None
    peft_model.eval()

    def undo() -> None:
        tuner = peft_model.base_model
        unload: Callable[[], Any] | None = getattr(tuner, "unload", None)
        if unload is not None and tuner is not model:
            unload()  # removes the injected adapter layers, giving the original modules back
        snapshot.restore()

    return peft_model, undo


def resolve_adapter(model: Any, adapter: Any) -> tuple[Any, str | None, bool]:
    """``(peft_model, adapter source path or Hub id, whether we loaded it)``."""
    from peft import PeftModel

    if adapter is None:
        if isinstance(model, PeftModel):
            return model, None, False
        raise AdapterError(
            "no adapter given and the model is not a PeftModel",
            hint="pass a PeftModel, an adapter directory or a Hub id (warm-start one with steerkit.warm_start)",
        )
    if isinstance(adapter, PeftModel):
        return adapter, None, False
    if not isinstance(adapter, (str, os.PathLike)):
        raise AdapterError(
            f"adapter must be a PeftModel, an adapter directory or a Hub id, got {type(adapter).__name__}",
            hint="pass the PeftModel returned by steerkit.warm_start, or a folder with adapter_config.json",
        )
    if isinstance(model, PeftModel):
        raise AdapterError(
            "model is already a PeftModel; cannot load a second adapter onto it",
            hint="pass adapter=None to use the model's own adapter, or pass the plain base model",
        )
    text = str(adapter)
    path = Path(text)
    if not path.exists():
        recover(path)  # a warm start killed between its two renames left the old adapter beside it
    if path.is_dir():
        if not (path / C.ADAPTER_FILES[0]).is_file():
            raise AdapterError(
                f"'{path}' has no {C.ADAPTER_FILES[0]}",
                hint="give the folder written by PeftModel.save_pretrained",
                path=text,
            )
    elif path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise AdapterError(
            f"no adapter at '{text}'",
            hint="give an adapter directory (with adapter_config.json) or a Hub id like 'user/name'",
            path=text,
        )
    try:
        peft_model = PeftModel.from_pretrained(model, text)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(
            f"cannot load the adapter '{text}' onto the model: {first}",
            hint="check that the adapter was trained on this base model",
            path=text,
        ) from None
    return peft_model, text, True


def peft_type(peft_model: Any) -> str:
    kind = peft_model.peft_config[peft_model.active_adapter].peft_type
    return str(getattr(kind, "value", kind))


def is_prompt_learning_adapter(peft_model: Any) -> bool:
    return bool(peft_model.peft_config[peft_model.active_adapter].is_prompt_learning)


def adapter_files_of(peft_model: Any) -> dict[str, bytes]:
    """The active adapter as ``save_pretrained`` writes it (config + safetensors), as bytes."""
    name = peft_model.active_adapter
    with tempfile.TemporaryDirectory(prefix="steerkit-adapter-") as tmp:
        # save_embedding_layers=False: never probe the Hub for the base model's config while saving
        peft_model.save_pretrained(tmp, selected_adapters=[name], save_embedding_layers=False)
        folder = Path(tmp) if name == "default" else Path(tmp) / name
        files = {f: (folder / f).read_bytes() for f in C.ADAPTER_FILES if (folder / f).is_file()}
    if "adapter_config.json" in files:
        files["adapter_config.json"] = _stable_config(files["adapter_config.json"])
    return files


def _stable_config(raw: bytes) -> bytes:
    """peft's ``adapter_config.json`` with set-valued fields (``target_modules``, ...) sorted.

    peft writes those sets in Python's hash order, which differs between processes (``PYTHONHASHSEED``), so the
    same adapter would give different bytes, and a different ``adapter.sha256``, from run to run.
    """
    import json

    config = json.loads(raw)
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


@dataclass
class WarmAndBase:
    """The models one scoring pass runs: the warm model, how to get base logits, and the vector's facts."""

    warm: Any
    base: Callable[[], contextlib.AbstractContextManager[Any]] | None
    alpha: float
    n_tokens: int | None
    static_vector: Tensor | None


@contextlib.contextmanager
def warm_and_base(
    model: Any,
    vector: SteeringVector | None,
    *,
    need_base: bool,
    tokenizer: Any,
    strict: bool,
    alpha: float,
    need_warm: bool = False,
) -> Iterator[WarmAndBase]:
    """The warm model (the vector's adapter loaded onto a plain model when base logits are needed, or when
    ``need_warm`` and the vector carries an adapter; unloaded on exit) and the base context (the adapter switched
    off), after the compatibility check."""
    if vector is None:
        yield WarmAndBase(model, None, alpha, None, None)
        return
    compat = check_compatible(vector, model, tokenizer=tokenizer, strict=strict)
    n_tokens = compat.n_tokens if compat.padded else None
    v = vector.task_vector.detach().to(torch.float32).clone()
    if compat.padded:
        v[compat.n_tokens :] = 0.0
    warm, undo = model, None
    if (need_base or (need_warm and vector.adapter_files)) and not is_peft(model):
        warm, undo = load_adapter(vector, model)
    try:
        base = None
        if need_base:
            switch = AdapterSwitch(warm)

            @contextlib.contextmanager
            def base_context() -> Iterator[Any]:
                with switch.off():
                    yield warm.get_base_model()

            base = base_context
        yield WarmAndBase(warm, base, alpha, n_tokens, v)
    finally:
        if undo is not None:
            undo()
