"""``steerkit push``: upload a local steering artifact to a Hub model repo in one commit."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from steerkit_cli.common import load_vector
from steerkit_cli.options import EndpointOpt, JsonOpt, TokenOpt, VectorArg
from steerkit_cli.output import Output, command, examples


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
    from steerkit.hub import push_to_hub

    with out.status(f"pushing to {repo_id}"):
        url = push_to_hub(
            vector,
            repo_id,
            private=private,
            revision=revision,
            commit_message=message,
            token=token,
            endpoint=endpoint,
        )
    result = {"repo_id": repo_id, "revision": revision or "main", "commit_url": url}

    def render(console: Any) -> None:
        console.print(f"Pushed to [bold]{repo_id}[/] ({result['revision']}): {url}")
        console.print(f"Load it with: steerkit pull {repo_id}")

    out.result(result, render)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "push",
        epilog=examples(
            "steerkit push my-vector me/sentiment-smollm2",
            'steerkit push my-vector me/sentiment-smollm2 --private --revision v2 --message "retuned mu"',
        ),
    )(push)
