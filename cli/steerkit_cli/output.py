"""The one output contract of every command: where results, errors, progress and status lines go.

- ``--json``: stdout carries exactly one JSON document, ``{"data": ...}`` on success or
  ``{"error": {"code", "message", "hint"}}`` on a handled error. Nothing else is written to stdout.
- Otherwise results are rendered with rich to stdout; progress, logs, warnings and hints go to stderr.

Which exception becomes which error, and the exit codes, are :mod:`steerkit_cli.errors`'s business.
Heavy libraries are never imported here at module level: ``steerkit --help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["Output"]

#: Seconds between two progress lines when stderr is not a terminal (``$STEERKIT_PROGRESS_INTERVAL`` overrides).
PROGRESS_INTERVAL = 10.0


def _progress_interval() -> float:
    raw = os.environ.get("STEERKIT_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else PROGRESS_INTERVAL
    except ValueError:
        return PROGRESS_INTERVAL
    return value if value >= 0 else PROGRESS_INTERVAL


class _ProgressLines:
    """Progress as plain lines (a log file, CI): ``build: step 12/40, elapsed 31 s, ETA 72 s``.

    A stage's first step, its last, and otherwise at most one line every ``interval`` seconds.
    """

    def __init__(self, log: Callable[[str], None], *, interval: float) -> None:
        self.log = log
        self.interval = interval
        self.started: dict[str, float] = {}
        self.last = -float("inf")

    def update(self, stage: str, step: int, total: int) -> None:
        now = time.perf_counter()
        first, done = stage not in self.started, step >= total
        start = self.started.setdefault(stage, now)
        if not (first or done or now - self.last >= self.interval):
            return
        self.last = now
        elapsed = now - start
        line = f"{stage}: step {step}/{total}, elapsed {_seconds(elapsed)}"
        if 0 < step < total:
            line += f", ETA {_seconds(elapsed / step * (total - step))}"
        self.log(line)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


class Output:
    """Where a command writes: results to stdout (JSON or rich), everything else to stderr.

    Args:
        json_mode: ``--json`` was given.
    """

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.quiet = os.environ.get("RANK", "0") != "0"  # torchrun: only rank 0 logs and draws progress
        self._stdout: Console | None = None
        self._stderr: Console | None = None
        self.started = time.perf_counter()

    @property
    def console(self) -> Console:
        """Rich console on stdout (human output only)."""
        if self._stdout is None:
            from rich.console import Console

            self._stdout = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        return self._stdout

    @property
    def err(self) -> Console:
        """Rich console on stderr: progress, logs, hints."""
        if self._stderr is None:
            from rich.console import Console

            self._stderr = Console(file=sys.stderr, highlight=False)
        return self._stderr

    def log(self, message: str) -> None:
        """A status line on stderr (shown in both modes; by rank 0 only under torchrun)."""
        if not self.quiet:
            self.err.print(message, style="dim")

    def result(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """Emit the command's result: ``{"data": data}`` under ``--json``, else ``render(console)``.

        Args:
            data: JSON-serialisable result.
            render: Draws the human view on the stdout console (default: pretty-printed JSON).
        """
        if self.json_mode:
            sys.stdout.write(json.dumps({"data": data}, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.console)
        else:
            from rich.pretty import Pretty

            self.console.print(Pretty(data))

    def error(self, info: Mapping[str, str | None]) -> int:
        """Report a handled error, ``{"code", "message", "hint"}`` (see ``describe_error``); return exit code 1."""
        if self.json_mode:
            sys.stdout.write(json.dumps({"error": info}, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            from rich.markup import escape

            self.err.print(f"[bold red]Error:[/] {escape(str(info['message']))}", soft_wrap=True)
            if info["hint"]:
                self.err.print(f"[yellow]Hint:[/] {escape(str(info['hint']))}", soft_wrap=True)
        return 1

    @contextlib.contextmanager
    def progress(self) -> Iterator[Callable[..., Callable[[int, int], None]]]:
        """A rich progress display on stderr; yields ``task(description)`` → a ``(step, total)`` callback.

        Example:
            >>> with out.progress() as task:                      # doctest: +SKIP
            ...     warm_start(..., progress=task("warm-start"))
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar: Progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=False,
            disable=self.quiet or not self.err.is_terminal,
        )
        tasks: dict[str, Any] = {}
        lines = _ProgressLines(self.log, interval=_progress_interval())

        def task(description: str) -> Callable[[int, int], None]:
            def update(step: int, total: int) -> None:
                if description not in tasks:
                    tasks[description] = bar.add_task(description, total=total)
                bar.update(tasks[description], completed=step, total=total)
                if bar.disable:
                    lines.update(description, step, total)

            return update

        with bar:
            yield task

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner on stderr while something without steps runs (e.g. loading a model)."""
        if self.err.is_terminal:
            with self.err.status(message):
                yield
        else:
            self.log(message)
            yield
