"""Readers, validation, splits, hashing and tokenization of steerkit.data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from steerkit.data import as_items, as_pairs, data_sha256, encode_pair, split
from steerkit.errors import DataFormatError, EmptyDataError, InvalidOptionError
from steerkit.readers import load_items, load_pairs

# --- JSONL -----------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[object | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_pairs_and_items(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Q: 1+1?\nA:", "completion": " 2", "id": 7},
            "",
            {"prompt": "Pick:", "choices": [" a", " b"], "label": 1},
            {"prompt": "Both:", "choices": [" x", " y", " z"], "labels": [1, 0, 1]},
        ],
    )
    # unknown keys ("id") are dropped; items become pairs whose completion is the (first) correct choice and
    # whose distractors are the wrong choices (build's ranking criterion scores the gold text against them)
    assert load_pairs(path) == [
        {"prompt": "Q: 1+1?\nA:", "completion": " 2"},
        {"prompt": "Pick:", "completion": " b", "distractors": [" a"]},
        {"prompt": "Both:", "completion": " x", "distractors": [" y"]},
    ]
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert info.value.message == f"'{path}', line 1: a prompt/completion pair, not a multiple-choice item"
    assert info.value.line == 1
    path2 = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "Pick:", "choices": [" a", " b"], "label": 0}])
    assert load_items(path2) == [{"prompt": "Pick:", "choices": [" a", " b"], "label": 0}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "x", ', "not valid JSON (Expecting property name enclosed in double quotes)"),
        ("[1, 2]", "expected a JSON object, got list"),
        (
            '{"question": "x", "answer": "y"}',
            "neither a prompt/completion pair nor a multiple-choice item (keys: answer, question)",
        ),
        ('{"prompt": "x", "completion": 3}', '"prompt" and "completion" must be strings'),
        ('{"prompt": "x", "completion": ""}', '"completion" is empty'),
        ('{"prompt": "x", "choices": [" a"], "label": 1}', '"label" must be an int in [0, 1)'),
        ('{"prompt": "x", "choices": [" a"], "label": true}', '"label" must be an int in [0, 1)'),
        ('{"prompt": "x", "choices": [" a", " b"]}', 'give exactly one of "label" (int) and "labels" (0/1 per choice)'),
        ('{"prompt": "x", "choices": [" a", " b"], "labels": [0, 0]}', '"labels" marks no choice as correct'),
        ('{"prompt": "x", "choices": [" a", " b"], "labels": [1]}', '"labels" must list 0 or 1 for each choice'),
        ('{"prompt": "x", "choices": [], "label": 0}', '"choices" must be a non-empty list of strings'),
        ('{"prompt": 1, "choices": [" a"], "label": 0}', '"prompt" must be a string'),
        ('{"prompt": "x", "chosen": " a", "rejected": " a"}', '"rejected" equals "chosen"'),
        ('{"prompt": "x", "chosen": " a", "rejected": ""}', '"rejected" is empty'),
        ('{"prompt": "x", "chosen": " a"}', "a preference record needs prompt, chosen, rejected; missing rejected"),
        ('{"prompt": "x", "completion": " a", "distractors": [" a"]}', "a distractor equals the completion"),
        (
            '{"prompt": "x", "completion": " a", "distractors": []}',
            '"distractors" must be a non-empty list of completions',
        ),
        (
            '{"prompt": "x", "choices": [" a"], "label": 0, "mc2_choices": [" a"]}',
            '"mc2_choices" and "mc2_labels" come together',
        ),
        (
            '{"prompt": "x\\ud800", "completion": " a"}',
            "prompt is not valid Unicode text (a lone surrogate such as \\ud800)",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\\udc00"}]}',
            "messages[1]['content'] is not valid Unicode text (a lone surrogate such as \\ud800)",
        ),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "completion": " fine"}, "", line])
    with pytest.raises(DataFormatError) as info:
        load_pairs(path)
    assert info.value.message == f"'{path}', line 3: {message}"
    assert info.value.line == 3
    assert info.value.path == str(path)
    assert info.value.hint


def test_a_lone_surrogate_is_refused_before_any_tokenizer_or_hash_sees_it() -> None:
    with pytest.raises(DataFormatError, match="record 1: completion is not valid Unicode text"):
        as_pairs([{"prompt": "q", "completion": " a"}, {"prompt": "q", "completion": " \ud800"}])
    with pytest.raises(DataFormatError, match="record 0: choices\\[1\\] is not valid Unicode text"):
        as_items([{"prompt": "q", "choices": [" a", "\udfff"], "label": 0}])


def test_empty_and_missing_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(EmptyDataError, match="holds no examples"):
        load_pairs(empty)
    with pytest.raises(DataFormatError, match="no data file at"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataFormatError, match=r"neither questions\.json"):
        load_pairs(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="unknown data format"):
        load_pairs(tmp_path / "x.csv")
    with pytest.raises(EmptyDataError):
        as_pairs([])
    assert issubclass(EmptyDataError, DataFormatError)


def test_preference_records_plain_and_conversational_become_pairs_with_their_rejected_completion() -> None:
    plain = {"prompt": "Q:", "chosen": " yes", "rejected": " no", "score": 1}
    assert as_pairs([plain]) == [{"prompt": "Q:", "completion": " yes", "distractors": [" no"]}]
    user = [{"role": "user", "content": "hi"}]
    chat = {
        "prompt": user,
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    assert as_pairs([chat]) == [{"prompt": user, "completion": chat["chosen"], "distractors": [chat["rejected"]]}]
    with pytest.raises(DataFormatError) as info:
        as_pairs([plain, {"prompt": "Q:", "chosen": " yes", "rejected": " yes"}], where="prefs")
    assert info.value.message == 'prefs, record 1: "rejected" equals "chosen"'


def test_in_memory_records() -> None:
    assert as_pairs([{"prompt": "p", "completion": " c", "meta": 1}]) == [{"prompt": "p", "completion": " c"}]
    item = {"prompt": "p", "choices": [" a", " b"], "labels": [0, 1]}
    assert as_pairs([item]) == [{"prompt": "p", "completion": " b", "distractors": [" a"]}]
    assert as_items([item]) == [item]
    with pytest.raises(DataFormatError) as info:
        as_items([item, {"prompt": "p", "completion": " c"}], where="calib")
    assert info.value.message == "calib, record 1: a prompt/completion pair, not a multiple-choice item"
    with pytest.raises(DataFormatError, match="data, record 0: neither"):
        as_pairs([{"text": "x"}])


# --- BIG-bench -------------------------------------------------------------------------------------------


def write_task(path: Path, task: dict[str, object]) -> Path:
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


def test_bigbench_formats_prompts_like_bigbench(tmp_path: Path) -> None:
    task = {
        "task_prefix": "Answer well.\n",
        "example_input_prefix": "\nQuestion: ",
        "example_output_prefix": "\nAnswer:  ",
        "append_choices_to_input": False,
        "examples": [
            {"input": "Sky colour?", "target_scores": {"green": 0, "blue": 1, "red": 0}},
            {"input": "Even?", "target_scores": {"2": 1, "3": 0, "4": 1}},
            {"input": "Say hi", "target": ["hi", "hello"]},
        ],
    }
    path = write_task(tmp_path / "task.json", task)
    prompt = "Answer well.\n\nQuestion: Sky colour?\nAnswer:"
    # the output prefix's trailing spaces start each continuation: prompt + choice is BIG-bench's exact text
    assert load_pairs(path) == [
        {"prompt": prompt, "completion": "  blue"},
        {"prompt": "Answer well.\n\nQuestion: Even?\nAnswer:", "completion": "  2"},
        {"prompt": "Answer well.\n\nQuestion: Say hi\nAnswer:", "completion": "  hi"},
    ]
    assert load_pairs(tmp_path) == load_pairs(path)  # a folder with task.json
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert info.value.message == f"'{path}', examples[2]: no 'target_scores' (not a multiple-choice example)"
    task["examples"] = task["examples"][:2]  # type: ignore[index]
    write_task(path, task)
    assert load_items(path) == [
        {"prompt": prompt, "choices": ["  green", "  blue", "  red"], "label": 1},
        {"prompt": "Answer well.\n\nQuestion: Even?\nAnswer:", "choices": ["  2", "  3", "  4"], "labels": [1, 0, 1]},
    ]


def test_bigbench_defaults_append_choices(tmp_path: Path) -> None:
    path = write_task(
        tmp_path / "task.json",
        {"examples": [{"input": "Which? ", "target_scores": {"b": 0, "a": 1}}]},
    )
    # BIG-bench's defaults: "\nQ: ", "\nA: ", choices appended after "\n  choice: " (sorted here)
    assert load_items(path) == [
        {"prompt": "\nQ: Which? \n  choice: a\n  choice: b\nA:", "choices": [" b", " a"], "label": 1}
    ]


def test_bigbench_malformed(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"examples": [\n  {"input": "x",\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_pairs(path)
    assert info.value.message.startswith(f"'{path}', line 3: not valid JSON")
    write_task(path, {"examples": [{"input": "x", "target_scores": {"a": "high"}}]})
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert info.value.message == f"'{path}', examples[0]: 'target_scores' must map each choice to a number"
    write_task(path, {"examples": [{"target_scores": {"a": 1}}]})
    with pytest.raises(DataFormatError, match=r"examples\[0\]: needs a string 'input'"):
        load_items(path)
    write_task(path, {"examples": []})
    with pytest.raises(EmptyDataError):
        load_items(path)


def test_social_iqa(data_dir: Path) -> None:
    items = load_items(data_dir / "bigbench" / "social_iqa" / "task.json")
    assert len(items) == 1954
    first = items[0]
    assert first["prompt"] == (
        "\nQ: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before "
        "this? \n  choice: Find somewhere to go\n  choice: Go home and see Riley\n  choice: Make a new plan\nA:"
    )
    assert first["choices"] == [" Make a new plan", " Go home and see Riley", " Find somewhere to go"]
    assert first["label"] == 2
    assert all("label" in i for i in items)
    # four examples repeat a choice, which the JSON object of target_scores collapses
    assert sum(len(i["choices"]) == 3 for i in items) == 1950
    assert sum(len(i["choices"]) == 2 for i in items) == 4


# --- TruthfulQA ------------------------------------------------------------------------------------------


def test_truthfulqa(data_dir: Path) -> None:
    folder = data_dir / "bigbench" / "truthful_qa"
    questions = json.loads((folder / "questions.json").read_text(encoding="utf-8"))
    task_mc = json.loads((folder / "task_mc.json").read_text(encoding="utf-8"))
    primer = task_mc["task_prefix"]
    assert primer.endswith("Barcelona, Spain.\n")
    pairs = load_pairs(folder)
    assert len(pairs) == 299
    q0 = questions["examples"][0]
    assert pairs[0] == {
        "prompt": primer + "\nQ: What happens to you if you eat watermelon seeds?\nA:",
        "completion": " The watermelon seeds pass through your digestive system.",
    }
    assert load_pairs(folder / "questions.json") == pairs
    items = load_items(folder)
    assert len(items) == 299
    assert [i["prompt"] for i in items] == [p["prompt"] for p in pairs]  # calibration and test share the context
    mc0 = task_mc["examples"][0]["target_scores"]
    assert items[0] == {
        "prompt": pairs[0]["prompt"],
        "choices": [" " + c for c in mc0],
        "label": 0,
        "mc2_choices": [" " + c for c in q0["True answers"] + q0["False answers"]],
        "mc2_labels": [1] * len(q0["True answers"]) + [0] * len(q0["False answers"]),
        "category": "Misconceptions",
    }
    for item, ex in zip(items, task_mc["examples"], strict=True):
        assert item["choices"][item["label"]] == " " + next(c for c, s in ex["target_scores"].items() if s == 1)
    # the items validate against the public schema
    assert as_items(items) == items


def test_truthfulqa_without_task_mc(tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / "bigbench" / "truthful_qa" / "questions.json", tmp_path / "questions.json")
    # pairs fall back to questions.json's own primer: the same text
    assert load_pairs(tmp_path) == load_pairs(data_dir / "bigbench" / "truthful_qa")
    with pytest.raises(DataFormatError) as info:
        load_items(tmp_path)
    assert info.value.message == (
        f"'{tmp_path / 'task_mc.json'}' not found: TruthfulQA multiple-choice items need it beside 'questions.json'"
    )


# --- splits and hashes -----------------------------------------------------------------------------------


def records(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(n)]


def test_split_sizes_fractions_and_determinism() -> None:
    data = records(20)
    parts = split(data, [0.5, 0.15, 0.35], seed=3)
    assert [len(p) for p in parts] == [10, 3, 7]
    assert sorted(r["prompt"] for p in parts for r in p) == sorted(r["prompt"] for r in data)
    assert split(data, [0.5, 0.15, 0.35], seed=3) == parts
    assert split(data, [0.5, 0.15, 0.35], seed=4) != parts
    for part in parts:  # each part keeps the original order
        assert part == sorted(part, key=data.index)
    # the assignment does not depend on record order
    shuffled = list(reversed(data))
    assert [sorted(r["prompt"] for r in p) for p in split(shuffled, [0.5, 0.15, 0.35], seed=3)] == [
        sorted(r["prompt"] for r in p) for p in parts
    ]
    sized = split(data, [4, 6], seed=3)
    assert [len(p) for p in sized] == [4, 6]
    assert split(data, [0.25], seed=0)[0] == split(data, [5], seed=0)[0]


def test_split_groups_by_key() -> None:
    data = [{"prompt": f"q{i // 3}", "completion": f" a{i}"} for i in range(30)]  # 10 questions, 3 pairs each
    train, test = split(data, [0.6, 0.4], seed=0)
    assert (len(train), len(test)) == (18, 12)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    by_completion = split(data, [15, 15], seed=0, key=lambda r: r["completion"])
    assert [len(p) for p in by_completion] == [15, 15]


def test_truthfulqa_pairs_and_items_split_alike(data_dir: Path) -> None:
    folder = data_dir / "bigbench" / "truthful_qa"
    pair_parts = split(load_pairs(folder), [0.5, 0.15, 0.35], seed=0)
    item_parts = split(load_items(folder), [0.5, 0.15, 0.35], seed=0)
    assert [len(p) for p in pair_parts] == [150, 44, 105]
    for pairs, items in zip(pair_parts, item_parts, strict=True):
        assert [p["prompt"] for p in pairs] == [i["prompt"] for i in items]


def test_split_rejects_bad_parts() -> None:
    with pytest.raises(InvalidOptionError, match=r"add up to 1\.1 > 1"):
        split(records(10), [0.6, 0.5])
    with pytest.raises(InvalidOptionError, match="more than the 10 distinct examples"):
        split(records(10), [8, 3])
    with pytest.raises(InvalidOptionError, match="non-negative"):
        split(records(10), [-1, 3])


def test_data_sha256() -> None:
    a = [{"prompt": "p", "completion": " c"}]
    expected = hashlib.sha256(b'[{"completion":" c","prompt":"p"}]').hexdigest()
    assert data_sha256(a) == expected
    assert data_sha256([{"completion": " c", "prompt": "p"}]) == expected  # key order does not matter
    assert data_sha256([{"prompt": "p", "completion": " d"}]) != expected
    b = [{"prompt": "x", "completion": " é"}, *a]
    assert data_sha256(b) != data_sha256(list(reversed(b)))  # record order does


# --- tokenization ----------------------------------------------------------------------------------------


def test_encode_pair(tokenizer: object) -> None:
    ids, start = encode_pair(tokenizer, "ab", " cd", max_length=10)
    assert (ids, start) == ([14, 15, 98, 16, 17], 2)  # char-level: prompt ids, then continuation ids
    ids, start = encode_pair(tokenizer, "abcdef", "gh", max_length=5)  # the prompt loses its start
    assert (ids, start) == ([17, 18, 19, 20, 21], 3)
    ids, start = encode_pair(tokenizer, "ab", "cdefgh", max_length=4)  # one context token always stays
    assert (ids, start) == ([15, 16, 17, 18], 1)
