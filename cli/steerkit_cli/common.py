"""Helpers the commands share: resolving vectors, models and data, guarding output folders, small renderers.

Everything heavy (torch, transformers, steerkit) is imported inside the functions, which only run inside
commands, never for ``--help``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit_cli.output import CliError, Output

if TYPE_CHECKING:
    from rich.table import Table

    from steerkit.artifact import SteeringVector

__all__ = [
    "check_out",
    "fmt_ci",
    "fmt_float",
    "load_data",
    "load_model_for",
    "load_vector",
    "quiet_libraries",
    "table",
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
    """A steering vector from a local folder (wins) or a Hub repo id, verified."""
    from steerkit.artifact import SteeringVector
    from steerkit.errors import ArtifactNotFoundError

    path = Path(spec)
    if not path.is_dir() and (path.exists() or spec.count("/") != 1 or spec.startswith((".", "/", "~"))):
        raise ArtifactNotFoundError(
            f"no steering artifact at '{spec}'",
            hint="give an artifact folder (from `steerkit build`) or a Hub repo id like user/name",
            path=spec,
        )
    return SteeringVector.load(
        spec, revision=revision, token=token, cache_dir=cache_dir, local_files_only=offline, endpoint=endpoint
    )


def load_model_for(
    out: Output,
    spec: str | None,
    *,
    vector: SteeringVector | None = None,
    revision: str | None = None,
    token: str | None = None,
    offline: bool = False,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from ``--model``, else from the vector's recorded base model.

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
        return load_model(spec, revision=revision, token=token, local_files_only=offline)


def load_data(source: Path, *, items: bool, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Pairs (``items=False``) or multiple-choice items from a data file, cut to ``max_examples``."""
    from steerkit.data import load_items, load_pairs

    records = load_items(source) if items else load_pairs(source)
    return records[:max_examples] if max_examples else records


def check_out(path: Path, *, force: bool) -> None:
    """Refuse early (before any work) to write into an existing non-empty folder without ``--force``.

    Raises:
        ArtifactExistsError: ``path`` is a file, or a non-empty folder and ``force`` is false.
    """
    from steerkit.errors import ArtifactExistsError

    if path.exists() and not path.is_dir():
        raise ArtifactExistsError(f"'{path}' exists and is not a folder", hint="choose another --out", path=str(path))
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ArtifactExistsError(
            f"'{path}' already exists and is not empty",
            hint="pass --force to replace it, or choose another --out",
            path=str(path),
        )


def fmt_float(value: float | None, digits: int = 4) -> str:
    """A float for tables (``-`` for ``None``)."""
    return "-" if value is None else f"{value:.{digits}g}"


def fmt_ci(metric: dict[str, Any]) -> str:
    """``0.725 [0.575, 0.850]`` from ``{"value", "ci_low", "ci_high"}``."""
    text = f"{metric['value']:.3f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"
    return text


def fmt_delta(delta: dict[str, Any] | None) -> str:
    """``+0.058 [+0.020, +0.102]`` from ``{"difference", "ci_low", "ci_high"}`` (``-`` for ``None``)."""
    if delta is None:
        return "-"
    return f"{delta['difference']:+.3f} [{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}]"


def table(*columns: str, title: str | None = None) -> Table:
    """A plain rich table with the given column headers."""
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold")
    return t
