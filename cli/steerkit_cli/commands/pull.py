"""``steerkit pull``: download a steering artifact from the Hub into the cache (verified), optionally copy it out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import CacheDirOpt, EndpointOpt, ForceOpt, JsonOpt, OfflineOpt, TokenOpt, examples
from steerkit_cli.output import Output
from steerkit_cli.resolve import check_out

if TYPE_CHECKING:
    from rich.console import Console


@command
def pull(
    repo_id: Annotated[str, typer.Argument(help="Hub repo: user/name.")],
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit \\[default: main].", show_default=False)
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="Also save the artifact to this folder.", show_default=False)
    ] = None,
    force: ForceOpt = False,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Download a steering artifact from the Hub (only its files), verify it, and report where it is."""
    if to is not None:
        check_out(to, force=force)
    from steerkit.vector import pull as pull_vector

    with out.status(f"pulling {repo_id}"):
        vector, folder = pull_vector(
            repo_id,
            to=to,
            overwrite=force,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=offline,
            endpoint=endpoint,
        )
    result = {
        "repo_id": repo_id,
        "revision": revision or "main",
        "commit": folder.name,
        "path": str(to if to is not None else folder),
        "cache_path": str(folder),
        "base_model": (vector.config.base_model or {}).get("name_or_path"),
        "vocab_size": vector.vocab_size,
        "mu": vector.mu,
        "mu_static": vector.mu_static,
    }
    out.result(result, lambda console: _render_pull(console, result))


def _render_pull(console: Console, result: dict[str, Any]) -> None:
    console.print(
        f"Pulled [bold]{result['repo_id']}[/] ({result['revision']}, commit {result['commit'][:12]}) "
        f"to {result['path']}"
    )
    console.print(
        f"base model {result['base_model']}, V = {result['vocab_size']}, μ = {result['mu']:.4g}, "
        f"μ_s = {result['mu_static']:.4g}"
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "pull",
        epilog=examples(
            "steerkit pull me/sentiment-smollm2",
            "steerkit pull me/sentiment-smollm2 --revision v2 --to ./vector --force",
            "steerkit pull me/sentiment-smollm2 --offline   # from the cache only",
        ),
    )(pull)
