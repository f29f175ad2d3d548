"""Fuzzing ``steerkit search`` with hostile Hub metadata (issue 28): one listing entry per case.

Each case is a model-listing entry as a Hub server might send it: a repo id, tags, sha, ``private`` and a card whose
``base_model`` and ``steerkit`` block hold random values (wrong types, NaN and huge numbers, nesting, dates,
control characters, escape sequences, rich markup). It goes through huggingface_hub's own ``ModelInfo`` and
steerkit's reader (``steerkit.search._found``), then out as ``--json`` does (``json.dumps``) and as the human
table does (``steerkit_cli.commands.search._render_search`` into a rich console). Counted failures:

- an exception other than the ones ``search`` turns into a one-line ``HubServerError`` (or a steerkit error);
- JSON output that fails, or human output that raises;
- a control character in the human output (an escape sequence reaching the terminal), or markup that rich
  interpreted (a ``[link=...]`` written in a card that does not appear as text).

Run by ``benchmarks/fuzz.py`` (``--cards``); ``tests/test_fuzz.py`` runs a small sample.
"""

from __future__ import annotations

import datetime
import io
import json
import random
import re
from collections import Counter
from typing import Any

from steerkit.errors import SteerkitError

#: What ``steerkit.search.search`` turns into a one-line ``HubServerError`` when the listing cannot be read.
LISTING_ERRORS = (AttributeError, KeyError, TypeError, ValueError)
HOSTILE_TEXT = [
    "org/m[/x]",
    "evil/[link=https://x.invalid]click[/link]",
    "\x1b]0;pwned\x07title",
    "\x1b[2Jclear",
    "a\rb\x08c",
    "[bold red]loud[/]",
    "ok/fine",
    "\u202eevil",
    "x" * 300,
    "",
]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(13 if depth < 3 else 9)
    if kind == 0:
        return rng.choice(HOSTILE_TEXT)
    if kind == 1:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 3.5, -1943.0])
    if kind == 2:
        return rng.choice([0, 1, -7, 10**30, 2**63])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.choice(["1.5", "abc", "NaN", "1e999"])
    if kind == 5:
        return datetime.date(2020, 1, 2)
    if kind == 6:
        return "".join(rng.choice("ab[]/\x1b\n\t=é") for _ in range(rng.randrange(12)))
    if kind in (7, 8):
        return rng.uniform(-1e4, 1e4)
    if kind in (9, 10):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["mu", "modes", "a", "b", "format"]): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def make_entry(rng: random.Random) -> dict[str, Any]:
    """One listing entry with random, often hostile, fields."""
    steerkit_block: Any = {
        "modes": rng.choice([["static", "dynamic"], [1], "static", [rng.choice(HOSTILE_TEXT)], None, _value(rng)]),
        "mu": _value(rng),
        "mu_static": _value(rng),
        "format": rng.choice(["steerkit/1", _value(rng)]),
    }
    for key in list(steerkit_block):
        if rng.random() < 0.3:
            del steerkit_block[key]
    if rng.random() < 0.1:
        steerkit_block = _value(rng)
    card: Any = {"base_model": rng.choice([rng.choice(HOSTILE_TEXT), _value(rng), None]), "steerkit": steerkit_block}
    if rng.random() < 0.05:
        card = _value(rng)
    entry: dict[str, Any] = {
        "id": rng.choice([f"user/{rng.choice(HOSTILE_TEXT)}", "user/vec", rng.choice(HOSTILE_TEXT)]),
        "tags": rng.choice([["steerkit"], ["steerkit", rng.choice(HOSTILE_TEXT)], [1, None], None]),
        "sha": rng.choice(["0" * 40, None, 5]),
        "private": rng.choice([False, True, None]),
        "cardData": card,
    }
    if rng.random() < 0.03:
        del entry["id"]
    return entry


def run_card_fuzz(cases: int, seed: int = 0) -> dict[str, Any]:
    """Fuzz ``cases`` listing entries; ``{"cases", "read", "refused_as_malformed", "failures", ...}``."""
    from huggingface_hub.hf_api import ModelInfo
    from rich.console import Console

    from steerkit.search import _found
    from steerkit_cli.commands.search import _render_search

    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    unreadable: Counter[str] = Counter()
    failures: list[str] = []
    for i in range(cases):
        entry = make_entry(rng)
        try:
            found = _found(ModelInfo(**entry))
        except SteerkitError:
            outcomes["steerkit_error"] += 1
            continue
        except LISTING_ERRORS:
            outcomes["refused_as_malformed"] += 1  # search(): one-line HubServerError
            continue
        except Exception as exc:
            failures.append(f"case {i}: read: {type(exc).__name__}: {exc}"[:300])
            continue
        outcomes["read"] += 1
        unreadable.update(found.unreadable)
        data = found.to_dict()
        try:
            json.dumps({"data": [data]}, ensure_ascii=False, allow_nan=False)
            buffer = io.StringIO()
            _render_search(Console(file=buffer, width=120, force_terminal=False, color_system=None), [data])
        except Exception as exc:
            failures.append(f"case {i}: output: {type(exc).__name__}: {exc}"[:300])
            continue
        text = buffer.getvalue()
        if CONTROL.search(text):
            failures.append(f"case {i}: a control character reached the terminal: {text[:120]!r}")
        if "[link=" in str(entry.get("id", "")) and "[link=" not in text:
            failures.append(f"case {i}: rich markup in the repo id was interpreted: {text[:120]!r}")
    return {
        "cases": cases,
        "seed": seed,
        **dict(sorted(outcomes.items())),
        "unreadable_fields": dict(unreadable.most_common()),
        "failures": failures[:50],
        "n_failures": len(failures),
    }
