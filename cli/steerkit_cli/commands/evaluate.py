"""``steerkit eval``: multiple-choice metrics (n, 95% intervals) in the base, warm, static and dynamic settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from steerkit_cli.common import fmt_ci, fmt_delta, load_data, load_model_for, load_vector, table
from steerkit_cli.options import (
    BatchSizeOpt,
    CacheDirOpt,
    EndpointOpt,
    JsonOpt,
    MaxExamplesOpt,
    ModelOpt,
    ModelRevisionOpt,
    OfflineOpt,
    RevisionOpt,
    StrictOpt,
    TokenOpt,
    VectorArg,
)
from steerkit_cli.output import CliError, MissingDependencyError, Output, command, examples

SETTINGS = ("base", "warm", "static", "dynamic")
METRICS = ("accuracy", "mc1", "mc2")


@command
def evaluate(
    vector_spec: VectorArg,
    data: Annotated[Path, typer.Argument(help="Multiple-choice items: .jsonl, BIG-bench task.json or TruthfulQA.")],
    model_spec: ModelOpt = None,
    modes: Annotated[
        str, typer.Option(help="Comma-separated settings among base, warm, static, dynamic.")
    ] = "base,warm,static,dynamic",
    mu: Annotated[
        float | None, typer.Option(help="Dynamic strength \\[default: the vector's μ].", show_default=False)
    ] = None,
    mu_static: Annotated[
        float | None, typer.Option(help="Static strength \\[default: the vector's μ_s].", show_default=False)
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a PNG bar chart with the intervals (needs matplotlib).", show_default=False),
    ] = None,
    batch_size: BatchSizeOpt = 8,
    max_examples: MaxExamplesOpt = None,
    strict: StrictOpt = True,
    revision: RevisionOpt = None,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Evaluate multiple-choice items: accuracy (MC1/MC2 for TruthfulQA) with n and 95% bootstrap intervals."""
    settings = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in settings if m not in SETTINGS]
    if unknown or not settings:
        raise CliError(
            f"unknown --modes entry {', '.join(map(repr, unknown)) or '(none)'}",
            hint=f"use a comma-separated list of: {', '.join(SETTINGS)}",
        )
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--plot", "matplotlib", extra="plot") from None
    items = load_data(data, items=True, max_examples=max_examples)
    vector = load_vector(
        vector_spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline
    )
    model, tokenizer = load_model_for(
        out, model_spec, vector=vector, revision=model_revision, token=token, offline=offline
    )
    from steerkit.demo import evaluate_settings

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
    metrics = [m for m in METRICS if m in next(iter(results.values()))]
    result: dict[str, Any] = {"n": len(items), "metrics": metrics, "results": results}
    if plot is not None:
        _plot(plot, results, metrics)
        result["plot"] = str(plot)

    def render(console: Any) -> None:
        console.print(render_table(results, metrics, title=f"{data} (n = {len(items)})"))
        if plot is not None:
            console.print(f"Plot written to {plot}")

    out.result(result, render)


def render_table(results: dict[str, dict[str, Any]], metrics: Sequence[str], *, title: str | None = None) -> Any:
    """The evaluation table: one row per setting, ``value [ci_low, ci_high]`` per metric, μ and n; then, when the
    warm model was scored, the paired ``Δ vs warm [95% CI]`` per metric."""
    deltas = any("delta_vs_warm" in res for res in results.values())
    shown = [m for m in metrics if deltas]
    t = table("setting", "μ", *(f"{m} [95% CI]" for m in metrics), *(f"Δ {m} vs warm" for m in shown), "n", title=title)
    for setting, res in results.items():
        steering = res.get("steering") or {}
        mu = "-" if steering.get("mode", "none") == "none" else f"{steering.get('mu'):.4g}"
        delta = res.get("delta_vs_warm") or {}
        t.add_row(
            setting,
            mu,
            *(fmt_ci(res[m]) for m in metrics),
            *(fmt_delta(delta.get(m)) for m in shown),
            str(res[metrics[0]]["n"]),
        )
    return t


def _plot(path: Path, results: dict[str, dict[str, Any]], metrics: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    names = list(results)
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = [results[s][metric]["value"] for s in names]
        low = [
            v - (results[s][metric]["ci_low"] if results[s][metric]["ci_low"] is not None else v)
            for s, v in zip(names, values, strict=True)
        ]
        high = [
            (results[s][metric]["ci_high"] if results[s][metric]["ci_high"] is not None else v) - v
            for s, v in zip(names, values, strict=True)
        ]
        ax.bar(names, values, yerr=[low, high], capsize=4, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(f"{metric} (95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "eval",
        epilog=examples(
            "steerkit eval my-vector test.jsonl",
            "steerkit eval user/my-vector ../data/truthful_qa --modes base,dynamic --plot eval.png",
            "steerkit eval my-vector test.jsonl --modes static --mu-static -0.8 --json",
        ),
    )(evaluate)
