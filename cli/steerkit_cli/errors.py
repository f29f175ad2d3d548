"""The CLI's errors, the one exception → (code, message, hint) table, and the ``command`` decorator.

- Exceptions map to ``(code, message, hint)`` through :data:`ERROR_TABLE`, first match wins; the message is one
  line. A traceback is printed (to stderr, without locals) only when ``STEERKIT_DEBUG=1``.
- Exit codes: 0 success, 1 handled error, 2 usage error (Typer/click's own, raised before a command runs).
- Every command is wrapped in :func:`command`, so every error leaves through the table and :meth:`Output.error`.

The table's rows name their exception types through small functions, not the types themselves: importing
``steerkit.errors`` runs ``steerkit/__init__.py``, which imports torch, and ``steerkit --help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from steerkit_cli.output import Output

__all__ = ["ERROR_TABLE", "CliError", "MissingDependencyError", "command", "describe_error"]

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """An error found by the CLI itself (not by the library): carries its own code and hint.

    Args:
        message: One line naming the problem.
        hint: How to fix it.
        code: Machine-readable error code.
    """

    def __init__(self, message: str, *, hint: str | None = None, code: str = "invalid_option") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class MissingDependencyError(CliError, ImportError):
    """An optional dependency (e.g. matplotlib for ``--plot``) is not installed."""

    def __init__(self, what: str, package: str, extra: str | None = None) -> None:
        install = f"pip install 'steerkit[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what} needs the optional package {package}, which is not installed", hint=install)
        self.code = "missing_dependency"


# --- the exception table ---------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _filename(exc: BaseException) -> str:
    name = getattr(exc, "filename", None)
    return f"'{name}'" if name else _first_line(str(exc)) or "the given path"


def _steerkit_error(exc: BaseException) -> tuple[str, str, str | None]:
    return str(getattr(exc, "code", "steerkit_error")), str(getattr(exc, "message", exc)), getattr(exc, "hint", None)


def _cli_error(exc: BaseException) -> tuple[str, str, str | None]:
    assert isinstance(exc, CliError)
    return exc.code, exc.message, exc.hint


def _import_error(exc: BaseException) -> tuple[str, str, str | None]:
    name = getattr(exc, "name", None) or _first_line(str(exc))
    return "missing_dependency", f"a required package is missing: {name}", f"pip install {name}"


def _json_error(exc: BaseException) -> tuple[str, str, str | None]:
    return "invalid_json", f"not valid JSON: {_first_line(str(exc))}", "check the file's JSON syntax"


def _steerkit_error_types() -> tuple[type[BaseException], ...]:
    try:  # only called for an error: importing steerkit (and torch) then costs nothing that matters
        from steerkit.errors import SteerkitError
    except ImportError:  # pragma: no cover - steerkit is installed with the CLI
        return ()
    return (SteerkitError,)


#: Ordered: the first row whose type matches the exception gives its (code, message, hint).
#: Library errors (SteerkitError) come first: they already carry a code, a one-line message and a hint.
ERROR_TABLE: list[
    tuple[Callable[[], tuple[type[BaseException], ...]], Callable[[BaseException], tuple[str, str, str | None]]]
] = [
    (_steerkit_error_types, _steerkit_error),
    (lambda: (CliError,), _cli_error),
    (lambda: (KeyboardInterrupt,), lambda e: ("interrupted", "interrupted", None)),
    (
        lambda: (FileNotFoundError,),
        lambda e: ("file_not_found", f"no such file or directory: {_filename(e)}", "check the path"),
    ),
    (
        lambda: (FileExistsError,),
        lambda e: (
            "file_exists",
            f"already exists: {_filename(e)}",
            "pass --force to overwrite, or choose another --out",
        ),
    ),
    (
        lambda: (IsADirectoryError, NotADirectoryError),
        lambda e: ("not_a_file", f"wrong kind of path: {_filename(e)}", "give a file where a file is expected"),
    ),
    (
        lambda: (PermissionError,),
        lambda e: ("permission_denied", f"permission denied: {_filename(e)}", "check the path's permissions"),
    ),
    (lambda: (json.JSONDecodeError,), _json_error),
    (lambda: (ImportError,), _import_error),
    (
        lambda: (MemoryError,),
        lambda e: ("out_of_memory", "out of memory", "use a smaller --batch-size or --max-length"),
    ),
    (
        lambda: (ConnectionError, TimeoutError),
        lambda e: ("connection", f"connection failed: {_first_line(str(e))}", "check the network or the endpoint"),
    ),
    (
        lambda: (OSError,),
        lambda e: ("os_error", _first_line(str(e)) or type(e).__name__, "check the path and disk"),
    ),
    (
        lambda: (ValueError, TypeError, KeyError),
        lambda e: ("invalid_value", f"{type(e).__name__}: {_first_line(str(e))}", "check the arguments"),
    ),
    (
        lambda: (Exception,),
        lambda e: (
            "internal_error",
            f"unexpected {type(e).__name__}: {_first_line(str(e))}",
            "rerun with STEERKIT_DEBUG=1 for the traceback, and report it",
        ),
    ),
]


#: Library API arguments named in messages and hints → the CLI flag that sets them.
CLI_FLAGS: dict[str, str] = {
    "strict=False": "--no-strict",
    "local_files_only=True": "--offline",
    "local_files_only=False": "no --offline",
    "cache_dir=FOLDER": "--cache-dir FOLDER",
    "overwrite=True": "--force",
}
_API_WITH_FLAG = re.compile(r"\b[a-z_]+=\S+ \(CLI: (--[a-z][a-z-]*)\)")
_API_ARGUMENT = re.compile(r"\b(?:" + "|".join(map(re.escape, CLI_FLAGS)) + r")\b")


def cli_terms(text: str) -> str:
    """``text`` with the library's API arguments replaced by the CLI's flags (``strict=False`` → ``--no-strict``,
    ``overwrite=True (CLI: --force)`` → ``--force``): what a CLI user can act on."""
    text = _API_WITH_FLAG.sub(lambda m: m.group(1), text)
    return _API_ARGUMENT.sub(lambda m: CLI_FLAGS[m.group(0)], text)


def describe_error(exc: BaseException) -> dict[str, str | None]:
    """The ``{"code", "message", "hint"}`` of an exception, from the first matching row of :data:`ERROR_TABLE`.

    The message is always one line. API arguments in the message and hint are shown as CLI flags
    (:func:`cli_terms`).
    """
    for types, describe in ERROR_TABLE:
        if isinstance(exc, types()):
            code, message, hint = describe(exc)
            shown = cli_terms(_first_line(message)) or type(exc).__name__
            return {"code": code, "message": shown, "hint": None if hint is None else cli_terms(hint)}
    raise exc  # pragma: no cover - the last row matches every Exception


# --- the command decorator -------------------------------------------------------------------------------


def _debug() -> bool:
    return os.environ.get("STEERKIT_DEBUG", "") not in ("", "0", "false", "False")


def command(func: F) -> F:
    """Wrap a command: build its :class:`Output` from ``json_output``, map exceptions to exit code 1.

    The wrapped function receives ``out: Output`` in place of ``json_output``; Typer sees the original
    signature (minus ``out``) through ``functools.wraps``.
    """
    import inspect

    signature = inspect.signature(func, eval_str=True)
    params = [p for name, p in signature.parameters.items() if name != "out"]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(bool(kwargs.get("json_output", False)))
        try:
            with warnings.catch_warnings(), _quiet_loggers(*QUIET_LOGGERS):
                warnings.simplefilter("default")
                for noise in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
                    warnings.simplefilter("ignore", noise)  # library internals, not the user's business
                warnings.filterwarnings("ignore", module=r"huggingface_hub(\.|$)")  # its retries: our error says it
                warnings.showwarning = _warning_to(out)
                return func(*args, out=out, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BaseException as exc:  # every error leaves through the one table
            raise typer.Exit(_report(out, exc)) from None

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


#: Libraries whose own log lines (below ERROR) a CLI run never shows: a failure prints steerkit's one-line error
#: and hint only (huggingface_hub logs every retry of a failing request as a warning).
QUIET_LOGGERS = ("huggingface_hub",)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Any:
    """Raise the named loggers to ERROR for the block (their levels are restored afterwards)."""
    with contextlib.suppress(ImportError):  # huggingface_hub sets its logger's level on import: import it first
        import huggingface_hub.utils.logging  # noqa: F401
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.ERROR))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _report(out: Output, exc: BaseException) -> int:
    """Describe ``exc`` through the table, print its traceback under ``STEERKIT_DEBUG=1``, report it; exit code."""
    info = describe_error(exc)
    if _debug():
        sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return out.error(info)


def _warning_to(out: Output) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        from rich.markup import escape

        out.err.print(f"[yellow]Warning:[/] {escape(cli_terms(_first_line(str(message))))}")

    return show
