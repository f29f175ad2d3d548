"""``steerkit warmstart``: a short PEFT fine-tune of a base model (the warm start φ), saved as an adapter folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    MaxExamplesOpt,
    MaxLengthOpt,
    ModelRevisionOpt,
    OfflineOpt,
    OutOpt,
    TokenOpt,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import loss_lines
from steerkit_cli.resolve import check_out, load_data, load_model_for

if TYPE_CHECKING:
    from rich.console import Console

METHODS = ("lora", "ia3", "prompt_tuning", "p_tuning")


@command
def warmstart(
    base: Annotated[str, typer.Argument(help="Base model: a Hub id, a local model folder or a .gguf file.")],
    data: Annotated[Path, typer.Argument(help="Training pairs: .jsonl, BIG-bench task.json or TruthfulQA folder.")],
    out_dir: OutOpt,
    method: Annotated[str, typer.Option(help=f"PEFT method: {', '.join(METHODS)}.")] = "lora",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the data.")] = 1,
    lr: Annotated[
        float, typer.Option(min=0.0, help="Learning rate (the paper's 5e-5 barely moves small models).")
    ] = 1e-3,
    batch_size: BatchSizeOpt = 4,
    max_examples: MaxExamplesOpt = None,
    max_length: MaxLengthOpt = 512,
    seed: Annotated[int, typer.Option(help="Seed of the adapter init, data order and dropout.")] = 0,
    force: ForceOpt = False,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Warm-start a PEFT adapter on prompt/completion pairs (loss on the completion tokens only)."""
    from steerkit.warmstart import check_adapter_target, save_adapter, warm_start

    check_out(out_dir, force=force)
    check_adapter_target(out_dir, overwrite=force)  # never replaces a folder that is not an adapter
    pairs = load_data(data, items=False, max_examples=max_examples)
    model, tokenizer = load_model_for(
        out, base, revision=model_revision, token=token, offline=offline, dtype=dtype, device=device
    )
    with out.progress() as task:
        peft_model = warm_start(
            model,
            pairs,
            tokenizer=tokenizer,
            method=method,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            progress=task("warm-start"),
        )
    save_adapter(peft_model, out_dir, overwrite=force)
    losses = list(peft_model.steerkit_losses)
    result = {
        "out": str(out_dir),
        "method": method,
        "examples": len(pairs),
        "epochs": epochs,
        "steps": len(losses),
        "lr": lr,
        "seed": seed,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss": peft_model.steerkit_loss,
    }

    out.result(result, lambda console: _render_warmstart(console, result, base=base, data=data))


def _render_warmstart(console: Console, result: dict[str, Any], *, base: str, data: Path) -> None:
    console.print(
        f"Warm-started a [bold]{result['method']}[/] adapter on {result['examples']} pairs: {result['steps']} steps"
    )
    for line in loss_lines(result["loss"]):
        console.print(line)
    console.print(f"Saved the adapter to [bold]{result['out']}[/]")
    console.print(f"Next: steerkit build {base} {result['out']} {data} --out my-vector")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "warmstart",
        epilog=examples(
            "steerkit warmstart HuggingFaceTB/SmolLM2-135M-Instruct train.jsonl --out my-lora",
            "steerkit warmstart ./model-folder train.jsonl --out my-lora --epochs 2 --lr 1e-3 --method ia3",
        ),
    )(warmstart)
