"""``steerkit push``: upload a local steering artifact to a Hub model repo in one commit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import EndpointOpt, JsonOpt, TokenOpt, VectorArg, examples
from steerkit_cli.output import Output
from steerkit_cli.resolve import load_vector

if TYPE_CHECKING:
    from rich.console import Console


@command
def push(
    vector_spec: VectorArg,
    repo_id: Annotated[str, typer.Argument(help="Hub repo to push to: user/name or org/name.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to commit to (created when new) \\[default: main].", show_default=False)
    ] = None,
    message: Annotated[str | None, typer.Option("--message", help="Commit message.", show_default=False)] = None,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Push a steering artifact (vector, config, adapter, model card) to the Hub."""
    vector = load_vector(vector_spec)
    with out.status(f"pushing to {repo_id}"):
        url = vector.push_to_hub(
            repo_id,
            private=private,
            revision=revision,
            commit_message=message,
            token=token,
            endpoint=endpoint,
        )
    result = {"repo_id": repo_id, "revision": revision or "main", "commit_url": url}
    out.result(result, lambda console: _render_push(console, result))


def _render_push(console: Console, result: dict[str, Any]) -> None:
    console.print(f"Pushed to [bold]{result['repo_id']}[/] ({result['revision']}): {result['commit_url']}")
    console.print(f"Load it with: steerkit pull {result['repo_id']}")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "push",
        epilog=examples(
            "steerkit push my-vector me/sentiment-smollm2",
            'steerkit push my-vector me/sentiment-smollm2 --private --revision v2 --message "retuned mu"',
        ),
    )(push)
