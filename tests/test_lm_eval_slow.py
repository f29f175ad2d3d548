"""The lm-eval model type on the real thing: SmolLM2-135M-Instruct, a briefly warm-started LoRA, the sentiment task.

A vector is built on the bundled sentiment train pairs and saved; the sentiment test items become a local lm-eval
multiple-choice task whose context and continuations are exactly steerkit's prompt and choice texts. lm-eval's
``acc`` with the ``steerkit`` model type (the base model folder as ``pretrained``, the vector folder as
``vector``) must equal steerkit's own accuracy of the same setting (:func:`steerkit.compare.evaluate_settings`),
for ``mode=static`` and ``mode=warm``, and its loglikelihoods steerkit's option scores
(:func:`steerkit.scoring.collect_setting_terms`) up to float rounding. Offline; about a minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")

from steerkit import build, warm_start
from steerkit.compare import evaluate_settings
from steerkit.demo import RESOURCES
from steerkit.models import load_model
from steerkit.readers import load_items, load_pairs
from steerkit.scoring import collect_setting_terms

pytestmark = pytest.mark.slow

SENTIMENT = RESOURCES / "sentiment"
TASK = "steerkit_sentiment"


def task_yaml(data_file: Path) -> str:
    """A local multiple-choice task: context ``prompt``, continuations ``choices`` as they are (no delimiter)."""
    return "\n".join(
        [
            f"task: {TASK}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {json.dumps(str(data_file))}",
            "test_split: test",
            "output_type: multiple_choice",
            'doc_to_text: "{{prompt}}"',
            'doc_to_choice: "{{choices}}"',
            'doc_to_target: "{{label}}"',
            'target_delimiter: ""',
            "metric_list:",
            "  - metric: acc",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
            "",
        ]
    )


@pytest.fixture(scope="module")
def setup(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The vector folder, the task folder, and steerkit's own warm and static accuracies on the test items."""
    root = tmp_path_factory.mktemp("lm-eval-slow")
    model, tokenizer = load_model(smollm2_dir)
    pairs = load_pairs(SENTIMENT / "train.jsonl")
    warm = warm_start(model, pairs, tokenizer=tokenizer, lr=1e-3, batch_size=4, epochs=1, seed=0)
    warm.eval()
    vector = build(warm, None, pairs, tokenizer=tokenizer)
    vector.save(root / "vector")
    items = load_items(SENTIMENT / "test.jsonl")
    table = evaluate_settings(vector, warm, items, tokenizer=tokenizer, settings=["warm", "static"])
    terms = collect_setting_terms(warm, items, tokenizer=tokenizer, vector=vector, settings=["warm", "static"])
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(task_yaml(SENTIMENT / "test.jsonl"), encoding="utf-8")
    return {
        "root": root,
        "model": smollm2_dir,
        "vector": root / "vector",
        "tasks": tasks,
        "n": len(items),
        "accuracy": {s: table[s]["accuracy"]["value"] for s in ("warm", "static")},
        "scores": {s: [row["choices"] for row in t.item_scores()] for s, t in terms.items()},
    }


@pytest.fixture
def offline(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, and datasets' cache in the module's temporary folder."""
    import datasets.config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", setup["root"] / "datasets")


@pytest.mark.parametrize("mode", ["static", "warm"])
def test_lm_eval_accuracy_equals_steerkit(setup: dict[str, Any], offline: None, mode: str) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import steerkit.lm_eval  # noqa: F401  (registers the "steerkit" model type)

    out = lm_eval.simple_evaluate(
        model="steerkit",
        model_args=f"pretrained={setup['model']},vector={setup['vector']},mode={mode},dtype=float32",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(setup["tasks"]), include_defaults=False),
        device="cpu",
        batch_size=8,
        log_samples=True,
    )
    assert out is not None
    assert len(out["samples"][TASK]) == setup["n"]
    acc = out["results"][TASK]["acc,none"]
    expected = setup["accuracy"][mode]
    print(f"\nsentiment test ({setup['n']} items), mode={mode}: lm-eval acc {acc:.4f}, steerkit {expected:.4f}")
    assert acc == pytest.approx(expected, abs=1e-12)
    # the accuracy saturates on this easy task: the loglikelihoods themselves are steerkit's option scores
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    scores = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    for got, want in zip(scores, setup["scores"][mode], strict=True):
        assert got == pytest.approx(want, abs=1e-3)
