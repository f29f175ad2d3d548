"""``steerkit demo``: the whole workflow, offline, on the embedded SmolLM2-135M-Instruct and a bundled task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from steerkit_cli.common import quiet_libraries, table
from steerkit_cli.options import ForceOpt, JsonOpt
from steerkit_cli.output import Output, command, examples


@command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's steering artifact.")] = Path(
        "steerkit-demo"
    ),
    force: ForceOpt = False,
    model: Annotated[
        str | None,
        typer.Option(help="Use this model instead of the embedded SmolLM2-135M-Instruct.", show_default=False),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Warm-start epochs.")] = 1,
    lr: Annotated[float, typer.Option(min=0.0, help="Warm-start learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Warm-start seed.")] = 0,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Run the embedded demo: warm-start, build, save, then base / warm / steered outputs and the eval table."""
    quiet_libraries()
    from steerkit.demo import run_demo

    out.log("steerkit demo: SmolLM2-135M-Instruct, bundled sentiment task, LoRA warm start (a minute or two on a CPU)")
    with out.progress() as task:
        res = run_demo(
            out_dir,
            force=force,
            model=model,
            epochs=epochs,
            lr=lr,
            seed=seed,
            progress=lambda stage, step, total: task(stage)(step, total),
        )
    vector = res.vector
    metrics = [m for m in ("accuracy", "mc1", "mc2") if m in next(iter(res.evaluation.values()))]
    result = {
        "out": str(res.out),
        "model": res.model,
        "task": res.task,
        "n_train": res.n_train,
        "loss_first": res.losses[0],
        "loss_last": res.losses[-1],
        "mu": vector.mu,
        "mu_static": vector.mu_static,
        "generations": res.generations,
        "evaluation": res.evaluation,
        "seconds": res.seconds,
    }

    def render(console: Any) -> None:
        from steerkit_cli.commands.evaluate import render_table

        console.print(
            f"Warm start: LoRA on {res.n_train} {res.task} pairs, loss {res.losses[0]:.3f} → {res.losses[-1]:.3f}"
        )
        console.print(
            f"Steering vector: μ = {vector.mu:.4g} ({vector.config.mu.chosen_by}), μ_s = {vector.mu_static:.4g}, "
            f"saved to [bold]{res.out}[/]"
        )
        t = table("review", "gold", "base", "warm", "steered", title="Generations (greedy; steered = dynamic SVDecode)")
        for column in t.columns:
            column.no_wrap, column.min_width = True, 8
        for column in (t.columns[0], t.columns[2]):
            column.overflow, column.max_width = "ellipsis", 22
        for row in res.generations:
            text = row["prompt"].split("\n")[0].removeprefix("Review: ")
            t.add_row(text, row["label"], *(_first_line(row[s]) for s in ("base", "warm", "dynamic")))
        console.print(t)
        n = next(iter(res.evaluation.values()))["n"]
        console.print(render_table(res.evaluation, metrics, title=f"Held-out {res.task} items (n = {n})"))
        console.print(f"Done in {res.seconds['total']:.0f} s. Next: steerkit inspect {res.out}")

    out.result(result, render)


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip() or repr(text)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "demo",
        epilog=examples("steerkit demo", "steerkit demo --out /tmp/demo --force --json"),
    )(demo)
