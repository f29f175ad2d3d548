"""Data files: JSONL, BIG-bench ``task.json`` and TruthfulQA readers, :func:`load_pairs` and :func:`load_items`.

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

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steerkit.data import Record, is_str_list, nonempty, to_pairs, validate_record
from steerkit.errors import DataFormatError

__all__ = ["load_items", "load_pairs"]


DEFAULT_INPUT_PREFIX = "\nQ: "


DEFAULT_OUTPUT_PREFIX = "\nA: "


DEFAULT_CHOICE_PREFIX = "\n  choice: "


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
        out = [pair for lineno, r in _read_jsonl(path) for pair in to_pairs(r, f"{path}, line {lineno}")]
    elif kind == "bigbench":
        out = _read_bigbench(path, pairs=True)
    else:
        out = _read_truthfulqa(path, pairs=True)
    return nonempty(out, path)


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
    return nonempty(out, path)


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
        out.append((lineno, validate_record(raw, where, path=str(path), line=lineno)))
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
            or not is_str_list(ex["True answers"])
            or not is_str_list(ex["False answers"])
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
