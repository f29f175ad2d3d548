"""``steerkit models``: the packaged models (shipped as GGUF files in PyPI packages) and their model folders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import JsonOpt, examples
from steerkit_cli.output import Output

if TYPE_CHECKING:
    from rich.console import Console


@command
def models(
    name: Annotated[
        str | None,
        typer.Argument(help="A packaged model: make its model folder now (if not cached) and print its path."),
    ] = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """List the packaged models and their folders; with a NAME, cache that model's folder and print it."""
    from steerkit.models import model_dir, packaged_models

    rows = packaged_models()
    if name is None:
        out.result(rows, lambda console: _render_models(console, rows))
        return
    if not any(row["name"] == name and row["cached"] for row in rows):
        out.log(f"caching {name} as a model folder (once)")
    folder = str(model_dir(name))
    out.result({"name": name, "folder": folder}, lambda console: console.print(folder, markup=False))


def _render_models(console: Console, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        state = "cached" if row["cached"] else "not cached yet: made on first use"
        console.print(f"[bold]{row['name']}[/] ({state})")
        console.print(f"  {row['folder']}", markup=False, soft_wrap=True)
        console.print(f"  {row['description']}", markup=False)
    console.print(
        "Every steerkit command takes these names as a model. "
        "For a tool that needs the folder (vLLM, lm-eval's hf model), `steerkit models NAME` prints it."
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "models",
        epilog=examples("steerkit models", "steerkit models SmolLM2-135M-Instruct --json"),
    )(models)
