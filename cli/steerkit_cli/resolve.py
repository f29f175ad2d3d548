"""Resolving a command's inputs: steering vectors, models, tokenizers and data; guarding output folders.

Everything heavy (torch, transformers, steerkit) is imported inside the functions, which only run inside
commands, never for ``--help``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit_cli.errors import CliError
from steerkit_cli.output import Output

if TYPE_CHECKING:
    from steerkit.vector import SteeringVector

__all__ = [
    "check_out",
    "load_data",
    "load_model_for",
    "load_vector",
    "quiet_libraries",
    "token_decoder",
]


def quiet_libraries() -> None:
    """Silence transformers/huggingface_hub progress bars and info logs: the CLI draws its own progress."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_vector(
    spec: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    offline: bool = False,
) -> SteeringVector:
    """A steering vector from a local folder (wins) or a Hub repo id, read and verified once (``steerkit.load``)."""
    from steerkit.vector import load

    return load(spec, revision=revision, token=token, cache_dir=cache_dir, local_files_only=offline, endpoint=endpoint)


def load_model_for(
    out: Output,
    spec: str | None,
    *,
    vector: SteeringVector | None = None,
    revision: str | None = None,
    token: str | None = None,
    offline: bool = False,
    dtype: str = "float32",
    device: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from ``--model``, else from the vector's recorded base model, in ``dtype`` on
    ``device``.

    Raises:
        CliError: Neither ``--model`` nor a base model recorded in the vector.
    """
    from steerkit.models import load_model

    if spec is None and vector is not None:
        spec = (vector.config.base_model or {}).get("name_or_path")
        if not spec:
            raise CliError(
                "the steering vector records no base model, so --model is needed",
                hint="pass --model with a Hub id, a local model folder or a .gguf file",
            )
    quiet_libraries()
    with out.status(f"loading model {spec or 'SmolLM2-135M-Instruct (embedded default)'}"):
        return load_model(spec, revision=revision, token=token, local_files_only=offline, dtype=dtype, device=device)


def load_vector_and_model(
    out: Output,
    vector_spec: str,
    model_spec: str | None,
    *,
    revision: str | None,
    model_revision: str | None,
    token: str | None,
    cache_dir: Path | None,
    endpoint: str | None,
    offline: bool,
    dtype: str,
    device: str | None,
) -> tuple[SteeringVector, Any, Any]:
    """``(vector, model, tokenizer)``: :func:`load_vector`, then :func:`load_model_for` with the vector's base
    model unless ``--model`` names one (what every command that steers a model starts with)."""
    vector = load_vector(
        vector_spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline
    )
    model, tokenizer = load_model_for(
        out, model_spec, vector=vector, revision=model_revision, token=token, offline=offline, dtype=dtype,
        device=device,
    )  # fmt: skip
    return vector, model, tokenizer


def load_data(source: Path, *, items: bool, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Pairs (``items=False``) or multiple-choice items from a data file, cut to ``max_examples``."""
    from steerkit.readers import load_items, load_pairs

    records = load_items(source) if items else load_pairs(source)
    return records[:max_examples] if max_examples else records


def check_out(path: Path, *, force: bool) -> None:
    """Refuse early (before any work) to write into an existing non-empty folder without ``--force``.

    Raises:
        CliError: A parent of ``path`` is a file (not a directory): no ``--force`` can help.
        ArtifactExistsError: ``path`` is a file, or a non-empty folder and ``force`` is false.
    """
    from steerkit.errors import ArtifactExistsError

    blocker = next((p for p in path.absolute().parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise CliError(
            f"cannot write '{path}': its parent '{blocker}' is not a directory",
            hint="choose an --out whose parent folders are directories (or move that file away)",
            code="not_a_directory",
        )
    if path.exists() and not path.is_dir():
        raise ArtifactExistsError(f"'{path}' exists and is not a folder", hint="choose another --out", path=str(path))
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ArtifactExistsError(
            f"'{path}' already exists and is not empty",
            hint="pass --force to replace it, or choose another --out",
            path=str(path),
        )


def token_decoder(out: Output, spec: str | None, *, offline: bool) -> Callable[[int], str]:
    """``id → text`` with the tokenizer of ``spec``; ``<id>`` placeholders when it cannot be loaded."""
    if spec:
        quiet_libraries()
        tok = _auto_tokenizer(out, spec, offline=offline)
        if tok is not None:
            return lambda i: tok.decode([i])
    out.log("no tokenizer available: showing token ids (pass --tokenizer)")
    return lambda i: f"<{i}>"


def _auto_tokenizer(out: Output, spec: str, *, offline: bool) -> Any:
    """The tokenizer of a model folder, ``.gguf`` file or Hub id, or ``None`` (a nicety here: ids still work)."""
    try:
        if spec.endswith(".gguf"):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(Path(spec).parent), gguf_file=Path(spec).name)
        from transformers import AutoTokenizer

        from steerkit.models import packaged_folder

        spec = packaged_folder(spec)  # a packaged model's name, as an artifact records it
        return AutoTokenizer.from_pretrained(spec, local_files_only=offline or Path(spec).is_dir())
    except Exception:  # any failure: fall back to ids
        out.log(f"could not load a tokenizer from {spec!r}")
        return None
