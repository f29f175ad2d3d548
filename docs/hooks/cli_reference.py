"""MkDocs hook: the CLI reference page, generated from the Typer app at build time so it cannot drift.

``docs/cli.md`` holds the line ``<!-- cli-reference -->``; :func:`on_page_markdown` replaces it with one section
per command that ``typer.main.get_command(steerkit_cli.app.app)`` registers, in registration order: the
command's help, its usage line, a table of arguments, a table of options (every spelling, type, default,
environment variable, help) and the examples of its ``--help`` epilog. ``tests/test_docs.py`` checks the built
page lists exactly the app's commands and every option.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"

__all__ = [
    "MARKER",
    "PAGE",
    "command_markdown",
    "examples",
    "on_page_markdown",
    "plain",
    "reference_markdown",
    "root_command",
]


def root_command() -> Any:
    """The click group behind the ``steerkit`` Typer app (imported lazily: mkdocs loads hooks at startup).

    Typer ships its own copy of click, so parameters are told apart by ``param_type_name`` rather than by
    ``isinstance`` against the ``click`` package.

    Returns:
        The root click group.
    """
    import typer.main

    from steerkit_cli.app import app

    group = typer.main.get_command(app)
    if not hasattr(group, "commands"):
        raise TypeError("steerkit_cli.app:app must be a Typer app with several commands")
    return group


def plain(text: str | None) -> str:
    """Rich markup → plain text (``\\[default: x]`` → ``[default: x]``, ``[bold]`` tags removed).

    Args:
        text: Help text written for Typer's ``rich_markup_mode="rich"``.

    Returns:
        The text a terminal would show, without styles.
    """
    if not text:
        return ""
    from rich.errors import MarkupError
    from rich.markup import render

    try:
        return render(text).plain
    except MarkupError:
        return text


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


_EXTRAS = re.compile(r"(.*?)(?:\s{2}\[([^\]]*)\])?", flags=re.DOTALL)


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _row(param: Any, ctx: Any) -> tuple[str, str, str]:
    """``(spellings, type, description)`` of a parameter, from the record ``--help`` prints.

    ``get_help_record`` gives e.g. ``("-o, --out <path>", "Folder to write.  [required]")``: the same
    spellings, type, default, range and requirement the terminal shows.
    """
    record = param.get_help_record(ctx)
    names, help_ = record if record is not None else (param.name, "")
    spelling, _, kind = names.partition(" <")
    many = not _is_option(param) and spelling.endswith("...")
    if not _is_option(param):
        spelling = spelling.upper().removesuffix("...")  # arguments read as in the usage line: BASE, VECTOR_SPEC
    spellings = ", ".join(f"`{s.strip()}`" for s in re.split(r",|/", spelling) if s.strip())
    if _is_option(param) and getattr(param, "secondary_opts", None):
        spellings = " / ".join(f"`{s.strip()}`" for s in spelling.split("/"))
    kind = kind.rstrip(">").strip() or ("flag" if _is_option(param) else "")
    if many:
        kind = f"{kind}, one or more".lstrip(", ")
    # Typer appends "  [default: ...; range; required]" unescaped; the text before it is rich markup.
    text, extras = _EXTRAS.fullmatch(help_).groups()  # type: ignore[union-attr]
    described = _cell(plain(text))
    if extras:
        described += f" ({_cell(extras)})"
    return spellings, kind, described


def _usage(command: Any, ctx: Any) -> str:
    """``steerkit NAME [OPTIONS] ARG ...`` with argument names upper-cased as the terminal help shows them."""
    text = command.get_usage(ctx).removeprefix("Usage:").strip()
    return re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), text)


def examples(epilog: str | None) -> list[str]:
    """The ``$ steerkit ...`` lines of a command's epilog."""
    return [m.group(1).strip() for m in re.finditer(r"^\s*\$ (steerkit\b.*)$", plain(epilog), flags=re.MULTILINE)]


def command_markdown(name: str, command: Any, parent: Any) -> str:
    """The reference section of one command.

    Args:
        name: The command's name under ``steerkit``.
        command: The click command.
        parent: The root command's context.

    Returns:
        Markdown: a ``##`` heading, help, usage, argument and option tables, examples.
    """
    ctx = command.context_class(command, info_name=name, parent=parent)
    lines = [f"## `steerkit {name}`", ""]
    help_text = plain(command.help).strip()
    if help_text:
        lines += [help_text, ""]
    lines += ["```text", _usage(command, ctx), "```", ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if _is_option(p)]
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        options.append(help_option)
    if arguments:
        lines += ["| Argument | Type | Description |", "| --- | --- | --- |"]
        lines += ["| {} | {} | {} |".format(*_row(arg, ctx)) for arg in arguments]
        lines.append("")
    if options:
        lines += ["| Option | Type | Description |", "| --- | --- | --- |"]
        lines += ["| {} | {} | {} |".format(*_row(opt, ctx)) for opt in options]
        lines.append("")
    lines_of_examples = examples(command.epilog)
    if lines_of_examples:
        lines += [
            "Examples:",
            "",
            "<!-- illustrative: the examples of `--help`; tests/test_docs.py checks each parses as this command -->",
            "```bash",
            *lines_of_examples,
            "```",
            "",
        ]
    return "\n".join(lines)


def reference_markdown() -> str:
    """The whole generated reference: the root command's help and options, then every command.

    Returns:
        Markdown for the CLI reference page.
    """
    group = root_command()
    ctx = group.context_class(group, info_name="steerkit")
    parts = [plain(group.help).strip(), "", "```text", _usage(group, ctx), "```", ""]
    root_options = [p for p in group.params if _is_option(p)]
    help_option = group.get_help_option(ctx)
    if help_option is not None:
        root_options.append(help_option)
    parts += ["| Option | Type | Description |", "| --- | --- | --- |"]
    parts += ["| {} | {} | {} |".format(*_row(p, ctx)) for p in root_options]
    parts += ["", "Commands: " + ", ".join(f"[`{n}`](#steerkit-{n})" for n in group.commands), ""]
    for name, command in group.commands.items():
        parts.append(command_markdown(name, command, ctx))
    return "\n".join(parts)


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    """MkDocs event: fill the CLI reference page; every other page passes through unchanged."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} must contain the line {MARKER} where the generated reference goes")
    return markdown.replace(MARKER, reference_markdown())
