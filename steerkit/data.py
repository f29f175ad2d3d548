"""Records: validation, seeded splits, a canonical hash, and tokenization (no torch, no files).

Two record shapes, plain dicts:

- a **pair** ``{"prompt": str, "completion": str}``: what :func:`steerkit.warm_start` trains on and
  :func:`steerkit.build` calibrates on (the completion is the teacher-forced gold text). A pair may carry
  ``"distractors"``, wrong completions of the same prompt that build's ranking criterion scores against the gold
  one; a **preference record** (TRL's ``{"prompt", "chosen", "rejected"}``, text or messages) is the pair
  ``chosen`` with the distractor ``rejected``, and a multiple-choice item is the pair of its correct choice with
  its other choices as distractors;
- a **multiple-choice item** ``{"prompt": str, "choices": list[str], "label": int}`` (one correct choice) or
  ``{"prompt", "choices", "labels": list[int]}`` (0/1 per choice, several may be true). TruthfulQA items also
  carry ``"mc2_choices"``, ``"mc2_labels"`` (true answers 1, false 0) and ``"category"`` (any item may carry
  ``"true_answers"`` and ``"false_answers"``, reference lists for open-ended scoring); their
  ``choices``/``label`` are the MC1 set. A choice is scored as the continuation of ``prompt + choice``.

:func:`as_pairs` / :func:`as_items` validate records from any iterable; the file readers (JSONL, BIG-bench,
TruthfulQA) are :mod:`steerkit.readers`. :func:`encode_pair` tokenizes prompt and completion separately and
concatenates the ids: put the separating space at the start of the completion (``"...\\nA:"`` + ``" Paris"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from steerkit.chat import encode_chat, fit_length, is_conversation, turns, validate_messages
from steerkit.errors import DataFormatError, EmptyDataError, InvalidOptionError

__all__ = ["as_pairs", "data_sha256", "encode_pair", "split", "to_pairs", "validate_record"]

Record = dict[str, Any]
R = TypeVar("R", bound=Mapping[str, Any])

PAIR_KEYS = ("prompt", "completion")
PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
ITEM_KEYS = (
    "prompt", "choices", "label", "labels", "mc2_choices", "mc2_labels", "category", "true_answers", "false_answers",
)  # fmt: skip


# --- public entry points ---------------------------------------------------------------------------------


def as_pairs(records: Iterable[Mapping[str, Any]], *, where: str = "data") -> list[Record]:
    """Validate in-memory records as pairs (multiple-choice items become pairs, as in :func:`load_pairs`).

    Args:
        records: Dicts with ``prompt`` and ``completion`` (text, or lists of messages), ``{"messages": [...]}``
            conversations (one pair per assistant turn, :mod:`steerkit.chat`), or multiple-choice items; any
            iterable of dicts, so a ``datasets.Dataset`` works as it is.
        where: How to name the source in error messages.

    Raises:
        DataFormatError: A record that is neither shape (the message gives its index).
        EmptyDataError: No record.
    """
    out = []
    for i, record in enumerate(records):
        out.extend(to_pairs(validate_record(record, f"{where}, record {i}", index=i), f"{where}, record {i}"))
    return nonempty(out, where)


def as_items(records: Iterable[Mapping[str, Any]], *, where: str = "data") -> list[Record]:
    """Validate in-memory records as multiple-choice items.

    Raises:
        DataFormatError: A record that is not a valid item (the message gives its index).
        EmptyDataError: No record.
    """
    out = []
    for i, record in enumerate(records):
        item = validate_record(record, f"{where}, record {i}", index=i)
        if "choices" not in item:
            raise DataFormatError(
                f"{where}, record {i}: a prompt/completion pair, not a multiple-choice item",
                hint='items need "prompt", "choices" and "label" (or "labels")',
            )
        out.append(item)
    return nonempty(out, where)


def split(
    records: Sequence[R],
    parts: Sequence[float] | Sequence[int],
    *,
    seed: int = 0,
    key: Callable[[R], str] | None = None,
) -> list[list[R]]:
    """Deterministic seeded split into parts of given fractions or sizes.

    Records sharing a key (by default the prompt) always land in the same part, so TruthfulQA splits by
    question. The assignment depends only on the seed and the set of keys, not on the record order or shape:
    the pairs and the items of one source split into the same questions.

    Args:
        records: Pairs or items.
        parts: Fractions (floats summing to at most 1; any remainder is dropped) or sizes (ints summing to at
            most the number of distinct keys), counted in distinct keys.
        seed: The split's seed.
        key: Grouping key of a record (default ``record["prompt"]``).

    Returns:
        One list per part, each in the records' original order.

    Raises:
        InvalidOptionError: Negative parts, fractions summing past 1, or sizes past the number of keys.

    Example:
        >>> recs = [{"prompt": str(i), "completion": "x"} for i in range(10)]
        >>> [len(p) for p in split(recs, [0.5, 0.3, 0.2], seed=1)]
        [5, 3, 2]
    """
    key_fn = key or (lambda r: str(r["prompt"]))
    keys = [key_fn(r) for r in records]
    groups = sorted(set(keys), key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    n = len(groups)
    if any(p < 0 for p in parts):
        raise InvalidOptionError(f"split parts must be non-negative, got {list(parts)}", got=list(parts))
    if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        sizes = [int(p) for p in parts]
        if sum(sizes) > n:
            raise InvalidOptionError(
                f"split sizes {sizes} add up to {sum(sizes)}, more than the {n} distinct examples",
                hint="ask for fewer, or give fractions",
                got=sizes,
            )
        bounds, total = [], 0
        for s in sizes:
            total += s
            bounds.append(total)
    else:
        fractions = [float(p) for p in parts]
        if sum(fractions) > 1.0 + 1e-9:
            raise InvalidOptionError(
                f"split fractions {fractions} add up to {sum(fractions):g} > 1",
                hint="give fractions summing to at most 1, or sizes as ints",
                got=fractions,
            )
        bounds, cumulative = [], 0.0
        for f in fractions:
            cumulative += f
            bounds.append(min(n, round(cumulative * n)))
    part_of: dict[str, int] = {}
    start = 0
    for index, end in enumerate(bounds):
        for k in groups[start:end]:
            part_of[k] = index
        start = end
    out: list[list[R]] = [[] for _ in parts]
    for record, k in zip(records, keys, strict=True):
        if k in part_of:
            out[part_of[k]].append(record)
    return out


def data_sha256(records: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the records' canonical JSON (sorted keys, compact, UTF-8): the same data gives the same hash.

    Order matters (it is a list); dict key order does not.
    """
    digest = hashlib.sha256(b"[")
    for k, record in enumerate(records):  # one record at a time: the bytes of json.dumps(list), never all at once
        text = json.dumps(dict(record), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        digest.update((b"," if k else b"") + text.encode("utf-8"))
    digest.update(b"]")
    return digest.hexdigest()


def encode_pair(
    tokenizer: Any, prompt: str | list[Any], continuation: str | list[Any], *, max_length: int = 512
) -> tuple[list[int], int]:
    """Token ids of ``prompt + continuation`` and where the continuation starts.

    The prompt is tokenized with the tokenizer's special tokens (e.g. a BOS), the continuation without, and the
    ids concatenated. Past ``max_length`` the prompt loses tokens from its start; a continuation longer than
    ``max_length - 1`` is cut at its end (one context token is always kept).

    A conversational prompt (a list of messages) is rendered with the tokenizer's chat template instead
    (:func:`steerkit.chat.encode_chat`); a text continuation is then the assistant's reply.

    Args:
        tokenizer: A transformers tokenizer.
        prompt: The context, as text or as messages.
        continuation: The completion or choice, as text or (after a conversational prompt) as messages.
        max_length: Most tokens in all.

    Returns:
        ``(ids, start)``: ``ids[start:]`` are the continuation's tokens.
    """
    if isinstance(prompt, list):
        reply = continuation if isinstance(continuation, list) else [{"role": "assistant", "content": continuation}]
        return encode_chat(tokenizer, prompt, reply, max_length=max_length)
    assert isinstance(continuation, str), "a text prompt takes a text continuation"
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    cont_ids = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return fit_length(prompt_ids, cont_ids, max_length)


# --- validation ------------------------------------------------------------------------------------------


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_unicode(value: Any, path: str) -> str | None:
    """The path of the first string in ``value`` (nested lists and objects too) that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "the text"
        return None
    children = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _not_unicode(key, path) if isinstance(key, str) else None
        found = found or _not_unicode(child, f"{path}[{key!r}]" if path else str(key))
        if found is not None:
            return found
    return None


def validate_record(record: Any, where: str, **fields: Any) -> Record:
    """Check one record and return it with only the known keys; ``where`` names file and line."""

    def bad(problem: str, hint: str) -> DataFormatError:
        return DataFormatError(f"{where}: {problem}", hint=hint, **fields)

    if not isinstance(record, Mapping):
        raise bad(f"expected a JSON object, got {type(record).__name__}", 'write {"prompt": ..., "completion": ...}')
    broken = _not_unicode(record, "")
    if broken is not None:
        raise bad(
            f"{broken} is not valid Unicode text (a lone surrogate such as \\ud800)",
            "fix the text's encoding: a JSON \\ud83d escape must be followed by its low surrogate",
        )
    if "choices" in record:
        item = {k: record[k] for k in ITEM_KEYS if k in record}
        if is_conversation(item.get("prompt")):
            item["prompt"] = validate_messages(item["prompt"], where, what="prompt")
        elif not isinstance(item.get("prompt"), str):
            raise bad('"prompt" must be a string', "give the question text as a string")
        choices = item["choices"]
        if not is_str_list(choices) or len(choices) < 1:
            raise bad('"choices" must be a non-empty list of strings', "list the answer options as strings")
        if ("label" in item) == ("labels" in item):
            raise bad('give exactly one of "label" (int) and "labels" (0/1 per choice)', "add a label")
        if "label" in item:
            if not is_int(item["label"]) or not 0 <= item["label"] < len(choices):
                raise bad(f'"label" must be an int in [0, {len(choices)})', "index the correct choice from 0")
        else:
            labels = item["labels"]
            if not isinstance(labels, list) or len(labels) != len(choices) or any(v not in (0, 1) for v in labels):
                raise bad('"labels" must list 0 or 1 for each choice', "one 0/1 entry per choice")
            if not any(labels):
                raise bad('"labels" marks no choice as correct', "mark at least one choice with 1")
            item["labels"] = [int(v) for v in labels]
        if ("mc2_choices" in item) != ("mc2_labels" in item):
            raise bad('"mc2_choices" and "mc2_labels" come together', "give both or neither")
        if "mc2_choices" in item:
            mc2, mc2_labels = item["mc2_choices"], item["mc2_labels"]
            if (
                not is_str_list(mc2)
                or not isinstance(mc2_labels, list)
                or len(mc2_labels) != len(mc2)
                or any(v not in (0, 1) for v in mc2_labels)
            ):
                raise bad('"mc2_choices" must be strings and "mc2_labels" 0/1 for each', "fix the MC2 lists")
        if "category" in item and not isinstance(item["category"], str):
            raise bad('"category" must be a string', "give the category as a string")
        for key in ("true_answers", "false_answers"):  # references for open-ended scoring (steerkit.openended)
            if key in item and not is_str_list(item[key]):
                raise bad(f'"{key}" must be a list of strings', "give the reference answers as strings")
        return item
    if "messages" in record:
        return {"messages": validate_messages(record["messages"], where)}
    if "chosen" in record or "rejected" in record:
        return _preference(record, where, bad)
    if "prompt" in record and "completion" in record and is_conversation(record["prompt"]):
        if not is_conversation(record["completion"]):
            raise bad('a conversational "prompt" needs a "completion" list of messages too', "give both as messages")
        prompt = validate_messages(record["prompt"], where, what="prompt")
        completion = validate_messages(record["completion"], where, what="completion")
        if any(m["role"] != "assistant" for m in completion):
            raise bad('"completion" messages must all have role "assistant"', "put the other turns in the prompt")
        return _with_distractors({"prompt": prompt, "completion": completion}, record, bad)
    if "prompt" in record and "completion" in record:
        if not isinstance(record["prompt"], str) or not isinstance(record["completion"], str):
            raise bad('"prompt" and "completion" must be strings', "quote both as JSON strings")
        if not record["completion"]:
            raise bad('"completion" is empty', "give the gold answer text; an empty completion calibrates nothing")
        return _with_distractors({k: record[k] for k in PAIR_KEYS}, record, bad)
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise bad(
        f"neither a prompt/completion pair nor a multiple-choice item (keys: {keys})",
        'use {"prompt", "completion"}, {"prompt", "chosen", "rejected"}, {"messages": [...]} or '
        '{"prompt", "choices", "label"}',
    )


def _preference(record: Mapping[str, Any], where: str, bad: Callable[[str, str], DataFormatError]) -> Record:
    """A preference record (``prompt``, ``chosen``, ``rejected``): the pair ``chosen``, distractor ``rejected``."""
    missing = [k for k in PREFERENCE_KEYS if k not in record]
    if missing:
        raise bad(f"a preference record needs {', '.join(PREFERENCE_KEYS)}; missing {', '.join(missing)}",
                  'give {"prompt", "chosen", "rejected"}')  # fmt: skip
    prompt, chosen, rejected = (record[k] for k in PREFERENCE_KEYS)
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if value in ("", []):
            raise bad(f'"{key}" is empty', f"give the {key} completion's text")
    if chosen == rejected:
        raise bad('"rejected" equals "chosen"', "a preference record needs a rejected completion that differs")
    pair = validate_record({"prompt": prompt, "completion": chosen}, where)
    return _with_distractors(pair, {"distractors": [rejected]}, bad)


def _with_distractors(pair: Record, record: Mapping[str, Any], bad: Callable[[str, str], DataFormatError]) -> Record:
    """``pair`` with the record's ``distractors`` (wrong completions, each the completion's type), checked."""
    if "distractors" not in record:
        return pair
    found = record["distractors"]
    conversational = isinstance(pair["completion"], list)
    if not isinstance(found, list) or not found:
        raise bad('"distractors" must be a non-empty list of completions', "list wrong completions, or leave it out")
    checked = []
    for d in found:
        if conversational:
            if not is_conversation(d):
                raise bad("a distractor of a conversational completion must be a list of messages", "give messages")
            d = validate_messages(d, "distractor", what="completion")
        elif not isinstance(d, str) or not d:
            raise bad("each distractor must be a non-empty string", "give the wrong completions as text")
        if d == pair["completion"]:
            raise bad("a distractor equals the completion", "drop it: a distractor is a wrong completion")
        checked.append(d)
    return {**pair, "distractors": checked}


def to_pairs(record: Record, where: str = "data") -> list[Record]:
    """The pairs a validated record gives: one, or one per assistant turn of a ``messages`` conversation."""
    if "messages" in record:
        return [{"prompt": p, "completion": c} for p, c in turns(record["messages"], where)]
    if "choices" not in record:
        return [{k: record[k] for k in (*PAIR_KEYS, "distractors") if k in record}]
    index = record["label"] if "label" in record else record["labels"].index(1)
    gold = record["choices"][index]
    labels = record.get("labels") or [int(i == index) for i in range(len(record["choices"]))]
    wrong = [c for c, correct in zip(record["choices"], labels, strict=True) if not correct and c != gold]
    pair = {"prompt": record["prompt"], "completion": gold}
    return [pair | {"distractors": list(dict.fromkeys(wrong))} if wrong else pair]


def nonempty(records: list[Record], where: str | Path) -> list[Record]:
    if not records:
        raise EmptyDataError(
            f"'{where}' holds no examples" if isinstance(where, Path) else f"{where} holds no examples",
            hint="give a file with at least one example",
            path=str(where),
        )
    return records


# --- sources ---------------------------------------------------------------------------------------------
