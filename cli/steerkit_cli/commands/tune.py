"""``steerkit tune``: choose μ for a task metric on multiple-choice calibration items; save the tuned artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import CliError, command
from steerkit_cli.options import (
    BatchSizeOpt,
    CacheDirOpt,
    DeviceOpt,
    DtypeOpt,
    EndpointOpt,
    ForceOpt,
    JsonOpt,
    MaxExamplesOpt,
    ModelOpt,
    ModelRevisionOpt,
    OfflineOpt,
    OutOpt,
    RevisionOpt,
    StrictOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import render_validation
from steerkit_cli.resolve import check_out, load_data, load_vector_and_model

if TYPE_CHECKING:
    from rich.console import Console


@command
def tune(
    vector_spec: VectorArg,
    data: Annotated[Path, typer.Argument(help="Multiple-choice calibration items (never the test set).")],
    out_dir: OutOpt,
    metric: Annotated[
        str | None,
        typer.Option(
            help="mc2, mc1, accuracy or acc_norm \\[default: mc2 for TruthfulQA items, acc_norm when the choices "
            "differ in length, else accuracy].",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="Which strength to tune: dynamic (μ) or static (μ_s).")] = "dynamic",
    model_spec: ModelOpt = None,
    folds: Annotated[
        int, typer.Option(min=0, help="K of the cross-validation that picks the recommended setting (0: none).")
    ] = 5,
    batch_size: BatchSizeOpt = 8,
    max_examples: MaxExamplesOpt = None,
    force: ForceOpt = False,
    strict: StrictOpt = True,
    revision: RevisionOpt = None,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Choose the steering strength that maximises a metric on calibration items, and save the tuned vector."""
    if mode not in ("dynamic", "static"):
        raise CliError(f"unknown --mode {mode!r}", hint="use dynamic or static")
    check_out(out_dir, force=force)
    items = load_data(data, items=True, max_examples=max_examples)
    from steerkit.stats import headline_metric

    chosen_metric, why = (metric, "--metric") if metric else headline_metric(items)
    vector, model, tokenizer = load_vector_and_model(
        out, vector_spec, model_spec, revision=revision, model_revision=model_revision, token=token,
        cache_dir=cache_dir, endpoint=endpoint, offline=offline, dtype=dtype, device=device,
    )  # fmt: skip
    from steerkit.tune import tune_and_validate

    out.log(f"scoring {len(items)} items, searching μ and cross-validating for {chosen_metric}")
    with out.progress() as task:
        found, tuned = tune_and_validate(
            vector,
            model,
            items,
            tokenizer=tokenizer,
            metric=chosen_metric,  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
            folds=folds,
            batch_size=batch_size,
            strict=strict,
            progress=task("tune"),
        )
    tuned.save(out_dir, overwrite=force)
    result = _tune_result(out_dir, mode, chosen_metric, why, found, vector, tuned, len(items))
    out.result(result, lambda console: _render_tune(console, result))


def _tune_result(
    out_dir: Path, mode: str, metric: str, why: str, found: Any, vector: Any, tuned: Any, n: int
) -> dict[str, Any]:
    return {
        "out": str(out_dir),
        "mode": mode,
        "metric": metric,
        "metric_because": why,
        "mu": found.best,
        "value": found.value,
        "value_at_zero": dict(found.grid).get(0.0),
        "previous_mu": vector.mu_static if mode == "static" else vector.mu,
        "chosen_by": f"search:{metric}",
        "chosen_on": found.data_sha256,
        "n": n,
        "validation": tuned.config.validation,
    }


def _render_tune(console: Console, result: dict[str, Any]) -> None:
    name = "μ_s" if result["mode"] == "static" else "μ"
    console.print(
        f"{name} = {result['mu']:.4g} maximises {result['metric']} on {result['n']} calibration items: "
        f"{result['value']:.3f} (at {name} = 0: {result['value_at_zero']:.3f}; "
        f"previous {name} = {result['previous_mu']:.4g})"
    )
    if result["metric_because"] != "--metric":
        console.print(f"Metric: {result['metric']}, because {result['metric_because']} (--metric chooses another).")
    render_validation(console, result["validation"])
    console.print(f"Saved the tuned vector to [bold]{result['out']}[/]")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "tune",
        epilog=examples(
            "steerkit tune my-vector calib.jsonl --out my-vector-tuned",
            "steerkit tune my-vector ../data/truthful_qa --metric mc2 --mode static --out tuned --force",
        ),
    )(tune)
