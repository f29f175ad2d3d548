"""``steerkit eval``: multiple-choice metrics (n, 95% intervals) in the base, warm, static and dynamic settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import CliError, command
from steerkit_cli.launch import run_on_processes, under_torchrun
from steerkit_cli.options import (
    BatchSizeOpt,
    CacheDirOpt,
    DeviceOpt,
    DtypeOpt,
    EndpointOpt,
    JsonOpt,
    MaxExamplesOpt,
    ModelOpt,
    ModelRevisionOpt,
    NprocOpt,
    OfflineOpt,
    RevisionOpt,
    StrictOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import plot_eval, render_table, require_matplotlib, verdict_lines
from steerkit_cli.resolve import load_data, load_vector_and_model

if TYPE_CHECKING:
    from rich.console import Console

SETTINGS = ("base", "warm", "static", "dynamic")
METRICS = ("accuracy", "acc_norm", "mc1", "mc2")


ModesOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated settings among base, warm, static, dynamic, recommended \\[default: all four, "
        "and recommended when the vector was cross-validated].",
        show_default=False,
    ),
]
MuOpt = Annotated[float | None, typer.Option(help="Dynamic strength \\[default: the vector's μ].", show_default=False)]
MuStaticOpt = Annotated[
    float | None, typer.Option(help="Static strength \\[default: the vector's μ_s].", show_default=False)
]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", help="Write a PNG bar chart with the intervals (needs matplotlib).", show_default=False),
]
GenerateOpt = Annotated[
    bool,
    typer.Option(
        "--generate",
        help="Open-ended: generate an answer per item (greedy, first line) and score it with TruthfulQA's "
        "BLEU-acc and ROUGE-L-acc against the item's true and false references (needs sacrebleu, rouge-score).",
    ),
]


@command
def evaluate(
    vector_spec: VectorArg,
    data: Annotated[Path, typer.Argument(help="Multiple-choice items: .jsonl, BIG-bench task.json or TruthfulQA.")],
    model_spec: ModelOpt = None,
    modes: ModesOpt = None,
    mu: MuOpt = None,
    mu_static: MuStaticOpt = None,
    plot: PlotOpt = None,
    generate: GenerateOpt = False,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="With --generate: most new tokens per answer.")] = 50,
    batch_size: BatchSizeOpt = 8,
    max_examples: MaxExamplesOpt = None,
    strict: StrictOpt = True,
    revision: RevisionOpt = None,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    nproc: NprocOpt = 1,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Evaluate multiple-choice items: accuracy (MC1/MC2 for TruthfulQA) with n and 95% bootstrap intervals."""
    if nproc > 1 and not under_torchrun():
        raise typer.Exit(run_on_processes("eval", nproc))
    settings = _parse_modes(modes or ",".join(SETTINGS))
    if plot is not None:
        require_matplotlib()
    items = load_data(data, items=True, max_examples=max_examples)
    vector, model, tokenizer = load_vector_and_model(
        out, vector_spec, model_spec, revision=revision, model_revision=model_revision, token=token,
        cache_dir=cache_dir, endpoint=endpoint, offline=offline, dtype=dtype, device=device,
    )  # fmt: skip
    from steerkit.compare import evaluate_settings

    if modes is None and vector.config.validation:
        settings.append("recommended")
    if generate:
        _evaluate_generation(out, vector, model, items, tokenizer, settings, data=data, plot=plot,
                             max_new_tokens=max_new_tokens, mu=mu, mu_static=mu_static, strict=strict)  # fmt: skip
        return

    with out.progress() as task:
        results = evaluate_settings(
            vector,
            model,
            items,
            tokenizer=tokenizer,
            settings=settings,
            mu=mu,
            mu_static=mu_static,
            batch_size=batch_size,
            strict=strict,
            progress=lambda stage, step, total: task(f"eval {stage}")(step, total),
        )
    result = _eval_result(items, results)
    metrics = result["metrics"]
    if plot is not None:
        plot_eval(plot, results, metrics)
        result["plot"] = str(plot)
    title = f"{data} (n = {len(items)})"
    out.result(result, lambda console: _render_eval(console, results, metrics, title=title, plot=plot, facts=result))


def _eval_result(items: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    """The JSON result of a multiple-choice eval: n, the metrics shown, the headline metric and why, chance."""
    from steerkit.stats import chance, headline_metric

    headline, why = headline_metric(items)
    metrics = [m for m in METRICS if m in next(iter(results.values())) and (m != "acc_norm" or headline != "accuracy")]
    return {
        "n": len(items),
        "metrics": metrics,
        "headline": {"metric": headline, "because": why},
        "chance": chance(items),
        "results": results,
    }


def _evaluate_generation(
    out: Output,
    vector: Any,
    model: Any,
    items: list[dict[str, Any]],
    tokenizer: Any,
    settings: list[str],
    *,
    data: Path,
    plot: Path | None,
    **options: Any,
) -> None:
    """``eval --generate``: answers in every setting, BLEU-acc and ROUGE-L-acc with intervals and paired Δs."""
    from steerkit.openended import GENERATION_METRICS, evaluate_generation, references

    for i, item in enumerate(items):
        references(item, i)  # refuse items without references before loading anything else
    with out.progress() as task:
        found = evaluate_generation(
            vector, model, items, tokenizer=tokenizer, settings=settings,
            progress=lambda stage, step, total: task(stage)(step, total), **options,
        )  # fmt: skip
    metrics = list(GENERATION_METRICS)
    result: dict[str, Any] = {"n": len(items), "metrics": metrics, "results": found["results"],
                              "answers": found["answers"]}  # fmt: skip
    if plot is not None:
        plot_eval(plot, found["results"], metrics)
        result["plot"] = str(plot)
    title = f"{data}: open-ended answers (n = {len(items)})"
    out.result(result, lambda console: _render_eval(console, found["results"], metrics, title=title, plot=plot))


def _parse_modes(modes: str) -> list[str]:
    """The settings of ``--modes``, in the order given.

    Raises:
        CliError: An entry is not a setting, or there is none.
    """
    settings = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in settings if m not in (*SETTINGS, "recommended")]
    if unknown or not settings:
        raise CliError(
            f"unknown --modes entry {', '.join(map(repr, unknown)) or '(none)'}",
            hint=f"use a comma-separated list of: {', '.join(SETTINGS)}, recommended",
        )
    return settings


def _render_eval(
    console: Console,
    results: dict[str, dict[str, Any]],
    metrics: Sequence[str],
    *,
    title: str,
    plot: Path | None,
    facts: dict[str, Any] | None = None,
) -> None:
    console.print(render_table(results, metrics, title=title))
    if facts is not None:
        headline = facts["headline"]["metric"]
        console.print(f"Headline metric: {headline}, because {facts['headline']['because']}.")
        for line in verdict_lines(results, headline):
            console.print(line)
        for setting, res in results.items():
            if res["accuracy"]["value"] < facts["chance"]:
                console.print(
                    f"[bold]{setting}: accuracy {res['accuracy']['value']:.3f} is below chance "
                    f"({facts['chance']:.3f}) on these items[/]; acc_norm {res['acc_norm']['value']:.3f}"
                )
    if plot is not None:
        console.print(f"Plot written to {plot}")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "eval",
        epilog=examples(
            "steerkit eval my-vector test.jsonl",
            "steerkit eval user/my-vector ../data/truthful_qa --modes base,dynamic --plot eval.png",
            "steerkit eval my-vector test.jsonl --modes static --mu-static -0.8 --json",
            "steerkit eval my-vector steerkit/resources/bigbench/truthful_qa --generate --max-examples 20",
        ),
    )(evaluate)
