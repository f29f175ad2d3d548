"""A griffe extension for the API reference: a Google ``Example:`` section renders as code, like ``Examples:``.

steerkit's docstrings follow STYLE.md's "a runnable example" with the singular ``Example:`` header, which
Napoleon and Google's guide accept. Griffe parses only the plural ``Examples:`` as an examples section
(``>>>`` lines become highlighted code); the singular becomes an admonition whose ``>>>`` lines are read as
Markdown, so ``x["a"]`` turns into a broken link. This extension renames the header before griffe parses the
docstring; nothing else in the docstring changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``Example:`` alone on its line (any indentation), as Google-style docstrings write a section header.
_SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", flags=re.MULTILINE)


def pluralize_example_headers(text: str) -> str:
    """``Example:`` section headers → ``Examples:``; everything else unchanged.

    Args:
        text: A docstring.

    Returns:
        The docstring with every ``Example:`` header line renamed.
    """
    return _SINGULAR.sub(r"\g<indent>Examples:", text)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` headers to ``Examples:`` in every docstring griffe loads."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring (the tree is complete here; docstrings are parsed lazily later)."""
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = pluralize_example_headers(docstring.value)
