"""``steerkit search``: steering vectors on the Hub, by base model, words and tags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import EndpointOpt, JsonOpt, TokenOpt, examples
from steerkit_cli.output import Output

if TYPE_CHECKING:
    from rich.console import Console


@command
def search(
    base_model: Annotated[
        str | None, typer.Option(help="Only vectors built on this base model (a Hub id).", show_default=False)
    ] = None,
    task: Annotated[str | None, typer.Option(help="Words that must occur in the repo id.", show_default=False)] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag every result must carry; repeat for several.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most results (at most 1000).")] = 50,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Find steering vectors on the Hub (repos whose card says library_name: steerkit); `list` shows the cache."""
    from steerkit.search import search as search_hub

    with out.status("searching the Hub"):
        found = [
            f.to_dict()
            for f in search_hub(base_model=base_model, task=task, tags=tag, limit=limit, token=token, endpoint=endpoint)
        ]
    out.result(found, lambda console: _render_search(console, found))


def _render_search(console: Console, found: list[dict[str, Any]]) -> None:
    from steerkit_cli.render import remote

    if not found:
        console.print("No steering vectors found. Share one with: steerkit push my-vector user/name")
        return
    for f in found:
        s = f["summary"]
        mu, mu_static = s.get("mu"), s.get("mu_static")
        modes = ", ".join(remote(m) for m in s.get("modes") or []) or "-"
        facts = [f"base model {remote(f['base_model'] or '-')}", f"modes {modes}"]
        if mu is not None:
            facts.append(f"μ {mu:.4g}")
        if mu_static is not None:
            facts.append(f"μ_s {mu_static:.4g}")
        if f.get("unreadable"):
            facts.append("unreadable card fields: " + ", ".join(remote(u) for u in f["unreadable"]))
        console.print(f"[bold]{remote(f['repo_id'])}[/]  " + "; ".join(facts), soft_wrap=True)
    console.print("Load one with: steerkit pull REPO")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "search",
        epilog=examples(
            "steerkit search",
            "steerkit search --base-model HuggingFaceTB/SmolLM2-135M-Instruct --json",
            "steerkit search --task truthfulqa --tag svdecode",
        ),
    )(search)
