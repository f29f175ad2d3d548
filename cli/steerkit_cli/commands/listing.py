"""``steerkit list``: the steering artifacts in the local Hub cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import CacheDirOpt, JsonOpt, examples
from steerkit_cli.output import Output
from steerkit_cli.render import table

if TYPE_CHECKING:
    from rich.console import Console


@command
def list_artifacts(
    cache_dir: CacheDirOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """List the steering artifacts pulled into the local Hub cache (repo, revision, refs, size)."""
    from steerkit.hub import list_local

    entries = list_local(cache_dir)
    out.result(entries, lambda console: _render_list(console, entries))


def _render_list(console: Console, entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("No steering artifacts in the cache. Get one with: steerkit pull user/name")
        return
    t = table("repo", "commit", "refs", "base model", "V", "size")
    for e in entries:
        t.add_row(
            e["repo_id"],
            e["revision"][:12],
            ", ".join(e["refs"]) or "-",
            str(e["base_model"]),
            str(e["vocab_size"]),
            f"{e['size'] / 1e6:.1f} MB",
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "list",
        epilog=examples("steerkit list", "steerkit list --cache-dir /tmp/hf-cache --json"),
    )(list_artifacts)
