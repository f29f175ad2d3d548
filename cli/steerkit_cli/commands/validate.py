"""``steerkit validate``: the compatibility check of a vector with a model, as a dry run."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import (
    CacheDirOpt,
    DeviceOpt,
    DtypeOpt,
    EndpointOpt,
    JsonOpt,
    ModelOpt,
    ModelRevisionOpt,
    OfflineOpt,
    RevisionOpt,
    StrictOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.resolve import load_vector_and_model

if TYPE_CHECKING:
    from rich.console import Console


@command
def validate(
    vector_spec: VectorArg,
    model_spec: ModelOpt = None,
    strict: StrictOpt = True,
    revision: RevisionOpt = None,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Check that a steering vector fits a model (logits width, tokenizer) without generating anything."""
    vector, model, tokenizer = load_vector_and_model(
        out, vector_spec, model_spec, revision=revision, model_revision=model_revision, token=token,
        cache_dir=cache_dir, endpoint=endpoint, offline=offline, dtype=dtype, device=device,
    )  # fmt: skip
    from steerkit.compatibility import check_compatible

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat = check_compatible(vector, model, tokenizer=tokenizer, strict=strict)
    notes = [str(w.message) for w in caught]
    result = {
        "compatible": True,
        "vocab_size": vector.vocab_size,
        "logits_width": compat.logits_width,
        "n_tokens": compat.n_tokens,
        "padded": compat.padded,
        "warnings": notes,
    }

    out.result(result, lambda console: _render_validate(console, result, err=out.err))


def _render_validate(console: Console, result: dict[str, Any], *, err: Console) -> None:
    console.print(
        f"[green]compatible[/]: logits width {result['logits_width']} = vocab_size {result['vocab_size']}, "
        f"{result['n_tokens']} real tokens" + (" (padded vocabulary)" if result["padded"] else "")
    )
    for note in result["warnings"]:
        err.print(f"[yellow]Warning:[/] {note}")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "validate",
        epilog=examples(
            "steerkit validate my-vector --model HuggingFaceTB/SmolLM2-135M-Instruct",
            "steerkit validate user/my-vector --model ./model-folder --no-strict --json",
        ),
    )(validate)
