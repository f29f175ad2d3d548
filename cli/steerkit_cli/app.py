"""The ``steerkit`` command line: wires the command modules into one Typer app.

Only Typer and the command modules (which import nothing heavy at module level) are loaded here, so
``steerkit --help`` answers in well under a second; torch, transformers, peft and steerkit are imported inside
the commands.
"""

from __future__ import annotations

import os
import sys

import typer

from steerkit_cli.commands import (
    build,
    demo,
    generate,
    inspect,
    listing,
    models,
    pull,
    push,
    search,
    tune,
    validate,
    warmstart,
)
from steerkit_cli.commands import evaluate as evaluate_cmd
from steerkit_cli.commands import export as export_cmd

__all__ = ["app", "main"]

app = typer.Typer(
    name="steerkit",
    help="Build, inspect, share and apply SVDecode steering vectors (arXiv 2509.15888).",
    epilog="Start with:  steerkit demo\n\nDocs: README.md. Set STEERKIT_DEBUG=1 for tracebacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (
    warmstart,
    build,
    inspect,
    validate,
    generate,
    evaluate_cmd,
    tune,
    push,
    pull,
    listing,
    search,
    models,
    demo,
):
    module.register(app)
export_cmd.register(app)


def version_callback(value: bool) -> None:
    """Print the version and exit."""
    if value:
        from importlib.metadata import version

        typer.echo(f"steerkit {version('steerkit')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Build, inspect, share and apply SVDecode steering vectors."""


def main() -> None:
    """Entry point of the ``steerkit`` script (and of ``torchrun ... $(which steerkit)`` / ``-m steerkit_cli``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: join its process group
        from steerkit.distributed import init_from_env, is_main

        init_from_env()
        if not is_main():  # rank 0 prints the result and writes the files; the others only compute
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    try:
        app()
    except SystemExit as done:
        _exit_now_if_a_download_was_abandoned(done.code)
        raise


def _exit_now_if_a_download_was_abandoned(code: object) -> None:
    """After a Hub download hit its deadline, end the process at once: huggingface_hub's download threads are
    joined at interpreter exit, so a stalled server would otherwise keep the CLI running past its message."""
    hub = sys.modules.get("steerkit._hub_transfer")
    if hub is None or not any(worker.is_alive() for worker in getattr(hub, "ABANDONED", [])):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
