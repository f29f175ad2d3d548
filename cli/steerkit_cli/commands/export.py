"""``steerkit export``: the static vector as a transformers ``sequence_bias`` or an OpenAI-style ``logit_bias``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import (
    CacheDirOpt,
    EndpointOpt,
    JsonOpt,
    OfflineOpt,
    RevisionOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import fmt_float
from steerkit_cli.resolve import load_vector

if TYPE_CHECKING:
    from rich.console import Console


@command
def export(
    vector_spec: VectorArg,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="sequence-bias (a transformers generation_config.json) or logit-bias (OpenAI-style JSON).",
            show_default=False,
        ),
    ],
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            min=1,
            help="Keep the K entries of largest |μ·v| \\[default: all non-zero; 1024 for logit-bias].",
            show_default=False,
        ),
    ] = None,
    mu: Annotated[
        float | None,
        typer.Option("--mu", help="Strength to scale the task vector by \\[default: its μ_s].", show_default=False),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="File to write (a folder gets generation_config.json or logit_bias.json) \\[default: print only].",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", "-f", help="Export even when the kept entries carry under half the L1 mass; overwrite --out."
        ),
    ] = False,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Export the static vector (scaled by μ_s) as a fixed logit bias; an approximation, labelled as one."""
    vector = load_vector(
        vector_spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline
    )
    from steerkit.errors import ArtifactExistsError
    from steerkit.export import export_bias, export_target

    result = export_bias(vector, format, top_k=top_k, mu=mu, force=force)
    written: Path | None = None
    if out_file is not None:
        target = export_target(out_file, result.file_name)
        if target.exists() and not force:
            hint = "pass --force to replace it, or choose another --out"
            raise ArtifactExistsError(f"'{target}' already exists", hint=hint, path=str(target))
        written = result.write(target)
    data = {**result.to_dict(), "file": None if written is None else str(written)}
    out.result(data, lambda console: _render_export(console, data, err=out.err))


def _render_export(console: Console, data: dict[str, Any], *, err: Console) -> None:
    console.print(
        f"Exported {data['entries']} of {data['nonzero']} non-zero entries as {data['format']} at μ = "
        f"{fmt_float(data['mu'])}: they carry {data['l1_fraction']:.1%} of the vector's L1 mass"
        + (f" ({data['clamped']} clamped to ±100)" if data["clamped"] else "")
    )
    for note in data["notes"]:
        console.print(f"  note: {note}")
    if data["file"]:
        console.print(f"Saved to [bold]{data['file']}[/]")
    else:
        err.print("[yellow]Hint:[/] pass --out FILE to write it (or --json to print it)")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "export",
        epilog=examples(
            "steerkit export my-vector --format sequence-bias --out generation_config.json",
            "steerkit export my-vector --format logit-bias --top-k 256 --out logit_bias.json --json",
            "steerkit export user/my-vector --format logit-bias --mu -20 --force",
        ),
    )(export)
