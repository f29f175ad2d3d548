"""``steerkit export``: the static vector as a transformers ``sequence_bias`` or an OpenAI-style ``logit_bias``.

Several vectors export as one bias: their composition ``Σᵢ μᵢ·vᵢ`` (``steerkit.compose``), one ``--mu`` per vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli import render
from steerkit_cli.errors import command
from steerkit_cli.options import (
    CacheDirOpt,
    EndpointOpt,
    JsonOpt,
    OfflineOpt,
    RevisionOpt,
    TokenOpt,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import fmt_float
from steerkit_cli.resolve import load_vector

if TYPE_CHECKING:
    from rich.console import Console


@command
def export(
    vector_specs: Annotated[
        list[str],
        typer.Argument(
            help="Steering vector: a local artifact folder or a Hub repo id (user/name); several: export their sum "
            "Σ μᵢ·vᵢ as one bias.",
            show_default=False,
        ),
    ],
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
        list[float] | None,
        typer.Option(
            "--mu",
            help="Strength to scale the task vector by \\[default: its μ_s]; several vectors: one --mu each, in order.",
            show_default=False,
        ),
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
    from steerkit.errors import ArtifactExistsError
    from steerkit.export import export_target

    vectors = [
        load_vector(spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline)
        for spec in vector_specs
    ]
    result, parts = _exported(vectors, vector_specs, list(mu or []), format=format, top_k=top_k, force=force)
    written: Path | None = None
    if out_file is not None:
        target = export_target(out_file, result.file_name)
        if target.exists() and not force:
            hint = "pass --force to replace it, or choose another --out"
            raise ArtifactExistsError(f"'{target}' already exists", hint=hint, path=str(target))
        written = result.write(target)
    data = {**result.to_dict(), "file": None if written is None else str(written)}
    if parts is not None:
        data["composed_of"] = parts
    out.result(data, lambda console: _render_export(console, data, err=out.err))


def _exported(
    vectors: list[Any], specs: list[str], mus: list[float], *, format: str, top_k: int | None, force: bool
) -> tuple[Any, list[dict[str, Any]] | None]:
    """``(BiasExport, composed_of)``: one vector's export at its ``--mu``, or the composition of several (one ``--mu``
    each, or none), with what it was composed of."""
    from steerkit.errors import InvalidOptionError
    from steerkit.export import export_bias

    if mus and len(mus) != len(vectors):
        raise InvalidOptionError(
            f"{len(mus)} --mu for {len(vectors)} vectors",
            hint="give one --mu per vector, in order (or none: each vector's μ_s)",
        )
    if len(vectors) == 1:
        return export_bias(vectors[0], format, top_k=top_k, mu=mus[0] if mus else None, force=force), None
    from steerkit.compose import compose
    from steerkit.steering import Steering

    steerings = [Steering(v, "static", mus[i] if mus else None) for i, v in enumerate(vectors)]
    parts = [{"vector": spec, "mu": s.strength} for spec, s in zip(specs, steerings, strict=True)]
    return export_bias(compose(steerings), format, top_k=top_k, force=force), parts


def _render_export(console: Console, data: dict[str, Any], *, err: Console) -> None:
    composed = data.get("composed_of")
    of = " + ".join(f"{fmt_float(p['mu'])}·{render.remote(p['vector'])}" for p in composed) if composed else None
    strength = f"the sum {of}" if of else f"μ = {fmt_float(data['mu'])}"
    console.print(
        f"Exported {data['entries']} of {data['nonzero']} non-zero entries as {data['format']} at {strength}: "
        f"they carry {data['l1_fraction']:.1%} of the vector's L1 mass"
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
            "steerkit export truthful concise --mu -2 --mu 1 --format logit-bias --out logit_bias.json",
        ),
    )(export)
