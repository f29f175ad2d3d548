"""``steerkit demo``: the whole workflow, offline, on the embedded SmolLM2-135M-Instruct and a bundled task."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import CliError, command
from steerkit_cli.options import ForceOpt, JsonOpt, examples
from steerkit_cli.output import Output
from steerkit_cli.render import loss_lines, render_table, table, verdict_lines
from steerkit_cli.resolve import quiet_libraries

if TYPE_CHECKING:
    from rich.console import Console


@command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's steering artifact.")] = Path(
        "steerkit-demo"
    ),
    force: ForceOpt = False,
    task: Annotated[
        str, typer.Option(help="Bundled task: truthfulqa (TruthfulQA MC, the default) or sentiment (a quick toy).")
    ] = "truthfulqa",
    model: Annotated[
        str | None,
        typer.Option(help="Use this model instead of the embedded SmolLM2-135M-Instruct.", show_default=False),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Warm-start epochs.")] = 1,
    lr: Annotated[
        float | None,
        typer.Option(min=0.0, help="Warm-start learning rate \\[default: the task's].", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the warm start and of the data split.")] = 0,
    max_items: Annotated[
        int | None,
        typer.Option(
            min=1, help="Keep only the first N of every split: quicker, with wider intervals.", show_default=False
        ),
    ] = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Run the embedded demo: warm-start, build, save, then generations and the eval table with paired Δ vs warm."""
    quiet_libraries()
    from steerkit.demo import DEMO_TASKS, run_demo

    if task not in DEMO_TASKS:
        raise CliError(f"unknown --task {task!r}", hint=f"choose from: {', '.join(DEMO_TASKS)}")
    out.log(
        f"steerkit demo: SmolLM2-135M-Instruct, bundled {task} task, LoRA warm start "
        f"({'about three minutes' if task == 'truthfulqa' else 'a minute or two'} on two CPU cores)"
    )
    with out.progress() as progress_task:
        res = run_demo(
            out_dir,
            force=force,
            model=model,
            task=task,
            epochs=epochs,
            lr=lr,
            seed=seed,
            max_items=max_items,
            progress=lambda stage, step, total: progress_task(stage)(step, total),
        )
    vector = res.vector
    result = {
        "out": str(res.out),
        "model": res.model,
        "task": res.task,
        "metric": res.metric,
        "n_train": res.n_train,
        "n_calibration": res.n_calibration,
        "loss_first": res.losses[0],
        "loss_last": res.losses[-1],
        "loss": res.loss,
        "mu": vector.mu,
        "mu_static": vector.mu_static,
        "generations": res.generations,
        "evaluation": res.evaluation,
        "seconds": res.seconds,
    }
    out.result(result, lambda console: _render_demo(console, res))


def _render_demo(console: Console, res: Any) -> None:
    from steerkit.schema import criterion_words, recommended_words

    vector = res.vector
    console.print(f"Warm start: LoRA on {res.n_train} {res.task} pairs")
    for line in loss_lines(res.loss):
        console.print(line)
    console.print(
        f"Steering vector from {res.n_calibration} calibration pairs: μ = {vector.mu:.4g} "
        f"({vector.config.mu.chosen_by}), μ_s = {vector.mu_static:.4g}, saved to [bold]{res.out}[/]"
    )
    console.print("[bold]Generations[/] (greedy, first line; static and dynamic are steered)")
    for row in res.generations:
        t = table("", "", title=None)
        t.show_header = False
        t.add_row("[bold]question[/]", row["question"])
        if row.get("label"):
            t.add_row("gold", row["label"])
        for setting in ("base", "warm", "static", "dynamic"):
            if setting in row:
                t.add_row(setting, _first_line(row[setting]))
        console.print(t)
    n = next(iter(res.evaluation.values()))["n"]
    title = f"Held-out {res.task} items (n = {n}; all metrics in --json)"
    console.print(render_table(res.evaluation, [res.metric], title=title))
    validation = vector.config.validation
    if validation:
        console.print(
            f"Recommended by cross-validation on the calibration pairs ({criterion_words(validation)}): "
            f"[bold]{recommended_words(validation['recommended'])}[/]. {validation['reason']}"
        )
    shown = {s: res.evaluation[s] for s in ("static", "dynamic", "recommended") if s in res.evaluation}
    for line in verdict_lines(shown, res.metric):
        console.print(line)
    console.print(f"Done in {res.seconds['total']:.0f} s. Next: steerkit inspect {res.out}")


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip() or repr(text)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "demo",
        epilog=examples(
            "steerkit demo", "steerkit demo --out /tmp/demo --force --json", "steerkit demo --task sentiment"
        ),
    )(demo)
