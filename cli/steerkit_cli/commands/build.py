"""``steerkit build``: calibrate a steering vector from a base model, its warm-start adapter and data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.launch import run_on_processes, under_torchrun
from steerkit_cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    MaxExamplesOpt,
    MaxLengthOpt,
    ModelRevisionOpt,
    NprocOpt,
    OfflineOpt,
    OutOpt,
    TokenOpt,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import fmt_float, render_validation, table
from steerkit_cli.resolve import check_out, load_data, load_model_for

if TYPE_CHECKING:
    from rich.console import Console


@command
def build(
    base: Annotated[str, typer.Argument(help="Base model: a Hub id, a local model folder or a .gguf file.")],
    adapter: Annotated[str, typer.Argument(help="The warm-start PEFT adapter: a local folder or a Hub id.")],
    data: Annotated[
        Path,
        typer.Argument(help="Calibration data: .jsonl pairs, preference records or items; BIG-bench or TruthfulQA."),
    ],
    out_dir: OutOpt,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Confidence-mask threshold α.")] = 0.1,
    mu_aggregator: Annotated[
        str,
        typer.Option(help="Default μ: mean, median, trimmed, ratio (each /paper or /exact), or fit."),
    ] = "trimmed/exact",
    batch_size: BatchSizeOpt = 8,
    max_examples: MaxExamplesOpt = None,
    max_length: MaxLengthOpt = 512,
    folds: Annotated[
        int, typer.Option(min=0, help="K of the cross-validation that picks the recommended setting (0: none).")
    ] = 5,
    criterion: Annotated[
        str,
        typer.Option(
            help="How cross-validation compares settings: split (base and static by the gold completion's mass "
            "against the base model's own answer, dynamic by held-out NLL, no steering where base's NLL beats "
            "warm's), rank (every setting by that mass against distractors drawn from the other records) or nll "
            "(the gold tokens' held-out NLL)."
        ),
    ] = "split",
    force: ForceOpt = False,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    nproc: NprocOpt = 1,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Build an SVDecode steering vector (μ statistics, static task vector, adapter) and save it."""
    if nproc > 1 and not under_torchrun():
        raise typer.Exit(run_on_processes("build", nproc))
    check_out(out_dir, force=force)
    pairs = load_data(data, items=False, max_examples=max_examples)
    model, tokenizer = load_model_for(
        out, base, revision=model_revision, token=token, offline=offline, dtype=dtype, device=device
    )
    from steerkit.builder import build as build_vector

    with out.progress() as task:
        vector = build_vector(
            model,
            adapter,
            pairs,
            tokenizer=tokenizer,
            alpha=alpha,
            mu_aggregator=mu_aggregator,
            batch_size=batch_size,
            max_length=max_length,
            folds=folds,
            criterion=criterion,
            progress=task("build"),
        )
    from steerkit.distributed import is_main

    if is_main():  # under torchrun every rank built the same vector; rank 0 writes it
        vector.save(out_dir, overwrite=force)
    config = vector.config
    result = {
        "out": str(out_dir),
        "vocab_size": config.vocab_size,
        "n_examples": config.calibration.get("n_examples"),
        "n_tokens": config.calibration.get("n_tokens"),
        "mu": config.mu.to_dict(),
        "mu_static": config.mu_static.to_dict(),
        "task_vector_sha256": config.task_vector_sha256,
        "validation": config.validation,
    }
    out.result(result, lambda console: _render_build(console, result, config))


def _render_build(console: Console, result: dict[str, Any], config: Any) -> None:
    console.print(
        f"Built a steering vector over {result['n_tokens']} completion tokens of {result['n_examples']} pairs "
        f"(V = {config.vocab_size})"
    )
    t = table("", "μ (dynamic)", "μ_s (static)")
    t.add_row(f"default ({config.mu.chosen_by})", fmt_float(config.mu.value), fmt_float(config.mu_static.value))
    t.add_row("fit", fmt_float(config.mu.fit), fmt_float(config.mu_static.fit))
    console.print(t)
    render_validation(console, config.validation)
    console.print(f"Saved to [bold]{result['out']}[/]")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "build",
        epilog=examples(
            "steerkit build HuggingFaceTB/SmolLM2-135M-Instruct my-lora calib.jsonl --out my-vector",
            "steerkit build ./model-folder my-lora calib.jsonl --out my-vector --mu-aggregator fit --force",
        ),
    )(build)
