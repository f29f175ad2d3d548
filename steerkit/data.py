"""Calibration and evaluation data: readers, validation, seeded splits, a canonical hash, and tokenization.

Two record shapes, plain dicts:

- a **pair** ``{"prompt": str, "completion": str}``: what :func:`steerkit.warm_start` trains on and
  :func:`steerkit.build` calibrates on (the completion is the teacher-forced gold text);
- a **multiple-choice item** ``{"prompt": str, "choices": list[str], "label": int}`` (one correct choice) or
  ``{"prompt", "choices", "labels": list[int]}`` (0/1 per choice, several may be true). TruthfulQA items also
  carry ``"mc2_choices"``, ``"mc2_labels"`` (true answers 1, false 0) and ``"category"``; their
  ``choices``/``label`` are the MC1 set. A choice is scored as the continuation of ``prompt + choice``.

Sources, chosen by :func:`load_pairs` / :func:`load_items` from the path:

- **JSONL** (``*.jsonl``): one pair or one item per line; blank lines are skipped, unknown keys dropped.
- **BIG-bench** ``task.json``: each example's ``input`` and ``target_scores`` (or ``target``). The prompt is
  formatted exactly as BIG-bench does it zero-shot: ``task_prefix + example_input_prefix + input +
  example_output_prefix`` (prefix defaults ``"\\nQ: "`` and ``"\\nA: "``); with ``append_choices_to_input``
  (BIG-bench's default) the choices follow the input, each after ``choice_prefix`` (default
  ``"\\n  choice: "``), in sorted order (BIG-bench uses a random permutation of that order). The label is the
  choice with the highest score (``labels`` when several share it); as a pair, the completion is that choice.
- **TruthfulQA** (a ``truthful_qa`` folder or its ``questions.json``, with ``task_mc.json`` beside it for the
  MC1 choices and the QA primer): pair = ``primer + "\\nQ: {question}\\nA:"`` → ``" {best answer}"``; items as
  above, in the same context, so calibration and test see the same prompt.

One convention everywhere: ``prompt + completion`` (or ``prompt + choice``) is exactly BIG-bench's text, but the
output prefix's trailing spaces are moved from the end of the prompt to the start of each completion and choice
(``"...\\nA:"`` + ``" Paris"``), so that tokenizers which merge a leading space into a word see their natural
tokens. :func:`encode_pair` tokenizes prompt and completion separately and concatenates the ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from steerkit.errors import DataFormatError, EmptyDataError, InvalidOptionError

__all__ = [
    "as_items",
    "as_pairs",
    "data_sha256",
    "encode_pair",
    "load_items",
    "load_pairs",
    "split",
]

Record = dict[str, Any]
R = TypeVar("R", bound=Mapping[str, Any])

DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "
_PAIR_KEYS = ("prompt", "completion")
_ITEM_KEYS = ("prompt", "choices", "label", "labels", "mc2_choices", "mc2_labels", "category")


# --- public entry points ---------------------------------------------------------------------------------


def load_pairs(source: str | os.PathLike[str]) -> list[Record]:
    """Read prompt/completion pairs from a JSONL file, a BIG-bench ``task.json`` or TruthfulQA.

    Multiple-choice items become pairs whose completion is the correct choice (the first, where several are).

    Args:
        source: A ``.jsonl`` file, a BIG-bench ``task.json`` (or a folder holding one), a ``truthful_qa`` folder
            or its ``questions.json``.

    Returns:
        A list of ``{"prompt", "completion"}`` dicts, in file order.

    Raises:
        DataFormatError: Missing file or malformed content; the message names the file and line (or example).
        EmptyDataError: The source holds no example.

    Example:
        >>> pairs = load_pairs("data/bigbench/truthful_qa")  # doctest: +SKIP
        >>> pairs[0]["completion"]                              # doctest: +SKIP
        ' The watermelon seeds pass through your digestive system.'
    """
    kind, path = _resolve(source)
    if kind == "jsonl":
        out = [_to_pair(r) for _, r in _read_jsonl(path)]
    elif kind == "bigbench":
        out = _read_bigbench(path, pairs=True)
    else:
        out = _read_truthfulqa(path, pairs=True)
    return _nonempty(out, path)


def load_items(source: str | os.PathLike[str]) -> list[Record]:
    """Read multiple-choice items from a JSONL file, a BIG-bench ``task.json`` or TruthfulQA.

    Args:
        source: As for :func:`load_pairs`.

    Returns:
        A list of ``{"prompt", "choices", "label" | "labels", ...}`` dicts (see the module docstring).

    Raises:
        DataFormatError: Missing file, malformed content, or a line/example that is not a multiple-choice item.
        EmptyDataError: The source holds no item.
    """
    kind, path = _resolve(source)
    if kind == "jsonl":
        out = []
        for lineno, record in _read_jsonl(path):
            if "choices" not in record:
                raise DataFormatError(
                    f"'{path}', line {lineno}: a prompt/completion pair, not a multiple-choice item",
                    hint='multiple-choice lines need "prompt", "choices" and "label" (or "labels")',
                    path=str(path),
                    line=lineno,
                )
            out.append(record)
    elif kind == "bigbench":
        out = _read_bigbench(path, pairs=False)
    else:
        out = _read_truthfulqa(path, pairs=False)
    return _nonempty(out, path)


def as_pairs(records: Iterable[Mapping[str, Any]], *, where: str = "data") -> list[Record]:
    """Validate in-memory records as pairs (multiple-choice items become pairs, as in :func:`load_pairs`).

    Args:
        records: Dicts with ``prompt`` and ``completion`` (or multiple-choice items).
        where: How to name the source in error messages.

    Raises:
        DataFormatError: A record that is neither shape (the message gives its index).
        EmptyDataError: No record.
    """
    out = []
    for i, record in enumerate(records):
        out.append(_to_pair(_validate(record, f"{where}, record {i}", index=i)))
    return _nonempty(out, where)


def as_items(records: Iterable[Mapping[str, Any]], *, where: str = "data") -> list[Record]:
    """Validate in-memory records as multiple-choice items.

    Raises:
        DataFormatError: A record that is not a valid item (the message gives its index).
        EmptyDataError: No record.
    """
    out = []
    for i, record in enumerate(records):
        item = _validate(record, f"{where}, record {i}", index=i)
        if "choices" not in item:
            raise DataFormatError(
                f"{where}, record {i}: a prompt/completion pair, not a multiple-choice item",
                hint='items need "prompt", "choices" and "label" (or "labels")',
            )
        out.append(item)
    return _nonempty(out, where)


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
    payload = json.dumps(
        [dict(r) for r in records], sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def encode_pair(tokenizer: Any, prompt: str, continuation: str, *, max_length: int = 512) -> tuple[list[int], int]:
    """Token ids of ``prompt + continuation`` and where the continuation starts.

    The prompt is tokenized with the tokenizer's special tokens (e.g. a BOS), the continuation without, and the
    ids concatenated. Past ``max_length`` the prompt loses tokens from its start; a continuation longer than
    ``max_length - 1`` is cut at its end (one context token is always kept).

    Args:
        tokenizer: A transformers tokenizer.
        prompt: The context.
        continuation: The completion or choice text.
        max_length: Most tokens in all.

    Returns:
        ``(ids, start)``: ``ids[start:]`` are the continuation's tokens.
    """
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    cont_ids = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    if len(cont_ids) > max_length - 1:
        cont_ids = cont_ids[: max(max_length - 1, 0)]
    room = max_length - len(cont_ids)
    if len(prompt_ids) > room:
        prompt_ids = prompt_ids[len(prompt_ids) - room :]
    return prompt_ids + cont_ids, len(prompt_ids)


# --- validation ------------------------------------------------------------------------------------------


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(record: Any, where: str, **fields: Any) -> Record:
    """Check one record and return it with only the known keys; ``where`` names file and line."""

    def bad(problem: str, hint: str) -> DataFormatError:
        return DataFormatError(f"{where}: {problem}", hint=hint, **fields)

    if not isinstance(record, Mapping):
        raise bad(f"expected a JSON object, got {type(record).__name__}", 'write {"prompt": ..., "completion": ...}')
    if "choices" in record:
        item = {k: record[k] for k in _ITEM_KEYS if k in record}
        if not isinstance(item.get("prompt"), str):
            raise bad('"prompt" must be a string', "give the question text as a string")
        choices = item["choices"]
        if not _is_str_list(choices) or len(choices) < 1:
            raise bad('"choices" must be a non-empty list of strings', "list the answer options as strings")
        if ("label" in item) == ("labels" in item):
            raise bad('give exactly one of "label" (int) and "labels" (0/1 per choice)', "add a label")
        if "label" in item:
            if not _is_int(item["label"]) or not 0 <= item["label"] < len(choices):
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
                not _is_str_list(mc2)
                or not isinstance(mc2_labels, list)
                or len(mc2_labels) != len(mc2)
                or any(v not in (0, 1) for v in mc2_labels)
            ):
                raise bad('"mc2_choices" must be strings and "mc2_labels" 0/1 for each', "fix the MC2 lists")
        if "category" in item and not isinstance(item["category"], str):
            raise bad('"category" must be a string', "give the category as a string")
        return item
    if "prompt" in record and "completion" in record:
        if not isinstance(record["prompt"], str) or not isinstance(record["completion"], str):
            raise bad('"prompt" and "completion" must be strings', "quote both as JSON strings")
        if not record["completion"]:
            raise bad('"completion" is empty', "give the gold answer text; an empty completion calibrates nothing")
        return {k: record[k] for k in _PAIR_KEYS}
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise bad(
        f"neither a prompt/completion pair nor a multiple-choice item (keys: {keys})",
        'use {"prompt", "completion"} or {"prompt", "choices", "label"}',
    )


def _to_pair(record: Record) -> Record:
    if "choices" not in record:
        return {"prompt": record["prompt"], "completion": record["completion"]}
    index = record["label"] if "label" in record else record["labels"].index(1)
    return {"prompt": record["prompt"], "completion": record["choices"][index]}


def _nonempty(records: list[Record], where: str | Path) -> list[Record]:
    if not records:
        raise EmptyDataError(
            f"'{where}' holds no examples" if isinstance(where, Path) else f"{where} holds no examples",
            hint="give a file with at least one example",
            path=str(where),
        )
    return records


# --- sources ---------------------------------------------------------------------------------------------


def _resolve(source: str | os.PathLike[str]) -> tuple[str, Path]:
    """Which reader a path needs: ``("jsonl" | "bigbench" | "truthfulqa", file)``."""
    path = Path(source)
    if path.is_dir():
        for name, kind in (("questions.json", "truthfulqa"), ("task.json", "bigbench")):
            if (path / name).is_file():
                return kind, path / name
        raise DataFormatError(
            f"'{path}' holds neither questions.json (TruthfulQA) nor task.json (BIG-bench)",
            hint="give a .jsonl file, a BIG-bench task.json, or a truthful_qa folder",
            path=str(path),
        )
    if not path.is_file():
        raise DataFormatError(f"no data file at '{path}'", hint="check the path", path=str(path))
    if path.suffix == ".jsonl":
        return "jsonl", path
    if path.suffix == ".json":
        data = _load_json(path)
        examples = data.get("examples") if isinstance(data, dict) else None
        if isinstance(examples, list) and examples and isinstance(examples[0], dict) and "Question" in examples[0]:
            return "truthfulqa", path
        return "bigbench", path
    raise DataFormatError(
        f"'{path}': unknown data format (suffix {path.suffix!r})",
        hint="use a .jsonl file (one pair or item per line) or a BIG-bench .json task",
        path=str(path),
    )


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"'{path}', line {exc.lineno}: not valid JSON ({exc.msg})",
            hint="fix the JSON syntax",
            path=str(path),
            line=exc.lineno,
        ) from None
    except UnicodeDecodeError:
        raise DataFormatError(f"'{path}' is not UTF-8 text", hint="save it as UTF-8", path=str(path)) from None


def _read_jsonl(path: Path) -> list[tuple[int, Record]]:
    """Validated records of a JSONL file with their line numbers (blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFormatError(f"'{path}' is not UTF-8 text", hint="save it as UTF-8", path=str(path)) from None
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"'{path}', line {lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{where}: not valid JSON ({exc.msg})",
                hint="write one JSON object per line",
                path=str(path),
                line=lineno,
            ) from None
        out.append((lineno, _validate(raw, where, path=str(path), line=lineno)))
    return out


def _split_prefix(output_prefix: str) -> tuple[str, str]:
    """``"\\nA: "`` → (``"\\nA:"``, ``" "``): the trailing spaces move to the continuation."""
    stripped = output_prefix.rstrip(" ")
    return stripped, output_prefix[len(stripped) :]


def _task_strings(task: Mapping[str, Any], path: Path) -> tuple[str, str, str, str, str, bool]:
    def text(key: str, default: str) -> str:
        value = task.get(key, default)
        if not isinstance(value, str):
            raise DataFormatError(f"'{path}': {key!r} must be a string", hint="fix the task file", path=str(path))
        return value

    prefix = text("task_prefix", "")
    input_prefix = text("example_input_prefix", DEFAULT_INPUT_PREFIX)
    out_prefix, lead = _split_prefix(text("example_output_prefix", DEFAULT_OUTPUT_PREFIX))
    choice_prefix = text("choice_prefix", DEFAULT_CHOICE_PREFIX)
    append = bool(task.get("append_choices_to_input", True))
    return prefix, input_prefix, out_prefix, lead, choice_prefix, append


def _examples(data: Any, path: Path) -> list[Any]:
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise DataFormatError(f"'{path}' has no 'examples' list", hint="is this a BIG-bench task.json?", path=str(path))
    return examples


def _read_bigbench(path: Path, *, pairs: bool) -> list[Record]:
    task = _load_json(path)
    examples = _examples(task, path)
    prefix, input_prefix, out_prefix, lead, choice_prefix, append = _task_strings(task, path)
    out: list[Record] = []
    for i, ex in enumerate(examples):
        where = f"'{path}', examples[{i}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise DataFormatError(f"{where}: needs a string 'input'", hint="fix the example", path=str(path), index=i)
        scores = ex.get("target_scores")
        if scores is None:
            target = ex.get("target")
            if isinstance(target, list) and target and isinstance(target[0], str):
                target = target[0]
            if not pairs or not isinstance(target, str):
                raise DataFormatError(
                    f"{where}: no 'target_scores'" + ("" if pairs else " (not a multiple-choice example)"),
                    hint="multiple-choice examples need target_scores {choice: score}",
                    path=str(path),
                    index=i,
                )
            out.append({"prompt": prefix + input_prefix + ex["input"] + out_prefix, "completion": lead + target})
            continue
        if (
            not isinstance(scores, dict)
            or not scores
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
        ):
            raise DataFormatError(
                f"{where}: 'target_scores' must map each choice to a number",
                hint="fix the example",
                path=str(path),
                index=i,
            )
        text = ex["input"]
        if append:
            text = text + choice_prefix + choice_prefix.join(sorted(scores))
        prompt = prefix + input_prefix + text + out_prefix
        names = list(scores)
        best = max(scores.values())
        winners = [j for j, name in enumerate(names) if scores[name] == best]
        if pairs:
            out.append({"prompt": prompt, "completion": lead + names[winners[0]]})
            continue
        item: Record = {"prompt": prompt, "choices": [lead + name for name in names]}
        if len(winners) == 1:
            item["label"] = winners[0]
        else:
            item["labels"] = [int(j in winners) for j in range(len(names))]
        out.append(item)
    return out


def _read_truthfulqa(path: Path, *, pairs: bool) -> list[Record]:
    questions = _load_json(path)
    examples = _examples(questions, path)
    mc_path = path.parent / "task_mc.json"
    mc_task: Mapping[str, Any] | None = _load_json(mc_path) if mc_path.is_file() else None
    if mc_task is not None:
        _, input_prefix, out_prefix, lead, _, _ = _task_strings(mc_task, mc_path)
        primer = str(mc_task.get("task_prefix", ""))
        mc1 = {}
        for i, ex in enumerate(_examples(mc_task, mc_path)):
            if not isinstance(ex, dict) or not isinstance(ex.get("target_scores"), dict):
                raise DataFormatError(
                    f"'{mc_path}', examples[{i}]: needs 'input' and 'target_scores'",
                    hint="fix the task file",
                    path=str(mc_path),
                    index=i,
                )
            mc1[ex.get("input")] = ex["target_scores"]
    else:
        if not pairs:
            raise DataFormatError(
                f"'{mc_path}' not found: TruthfulQA multiple-choice items need it beside '{path.name}'",
                hint="copy task_mc.json from BIG-bench's truthful_qa folder",
                path=str(mc_path),
            )
        primer = str(questions.get("prefix", "")).rstrip("\n")
        primer = primer + "\n" if primer else ""
        input_prefix, (out_prefix, lead), mc1 = DEFAULT_INPUT_PREFIX, _split_prefix(DEFAULT_OUTPUT_PREFIX), {}
    out: list[Record] = []
    for i, ex in enumerate(examples):
        where = f"'{path}', examples[{i}]"
        fields = ("Question", "Best answer", "True answers", "False answers")
        if (
            not isinstance(ex, dict)
            or not all(k in ex for k in fields)
            or not isinstance(ex["Question"], str)
            or not isinstance(ex["Best answer"], str)
            or not _is_str_list(ex["True answers"])
            or not _is_str_list(ex["False answers"])
        ):
            raise DataFormatError(
                f"{where}: needs 'Question', 'Best answer', 'True answers' and 'False answers'",
                hint="is this TruthfulQA's questions.json?",
                path=str(path),
                index=i,
            )
        question = ex["Question"]
        prompt = primer + input_prefix + question + out_prefix
        if pairs:
            out.append({"prompt": prompt, "completion": lead + ex["Best answer"]})
            continue
        scores = mc1.get(question)
        if scores is None:
            raise DataFormatError(
                f"{where}: question {question!r} has no MC1 choices in '{mc_path}'",
                hint="use the questions.json and task_mc.json of the same BIG-bench version",
                path=str(path),
                index=i,
            )
        names = list(scores)
        best = max(scores.values())
        true, false = ex["True answers"], ex["False answers"]
        out.append(
            {
                "prompt": prompt,
                "choices": [lead + c for c in names],
                "label": next(j for j, c in enumerate(names) if scores[c] == best),
                "mc2_choices": [lead + c for c in true + false],
                "mc2_labels": [1] * len(true) + [0] * len(false),
                "category": str(ex.get("Category", "")),
            }
        )
    return out
