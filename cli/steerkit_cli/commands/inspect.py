"""``steerkit inspect``: a vector's config, μ table and the tokens its static vector promotes and suppresses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import command
from steerkit_cli.options import (
    CacheDirOpt,
    EndpointOpt,
    JsonOpt,
    OfflineOpt,
    RevisionOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import fmt_float, plot_vector, render_validation, require_matplotlib, table
from steerkit_cli.resolve import load_vector, token_decoder

if TYPE_CHECKING:
    from rich.console import Console


@command
def inspect(
    vector_spec: VectorArg,
    top: Annotated[int, typer.Option("--top", min=1, help="How many promoted and suppressed tokens to list.")] = 20,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write a PNG: μ* quantiles and top-token bars (needs matplotlib).", show_default=False
        ),
    ] = None,
    tokenizer_spec: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Tokenizer to decode token ids with \\[default: the vector's base model].",
            show_default=False,
        ),
    ] = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Show a steering vector: config, μ statistics, and its top promoted and suppressed tokens."""
    if plot is not None:
        require_matplotlib()
    vector = load_vector(
        vector_spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline
    )
    config = vector.config
    decode = token_decoder(out, tokenizer_spec or (config.base_model or {}).get("name_or_path"), offline=offline)
    k, values = min(top, vector.vocab_size), vector.task_vector
    result: dict[str, Any] = {
        "path": vector_spec,
        "config": config.to_dict(),
        "top_promoted": _top_tokens(values, k, 1.0, decode),
        "top_suppressed": _top_tokens(values, k, -1.0, decode),
    }
    if plot is not None:
        plot_vector(plot, config.calibration.get("mu_star_quantiles") or {}, result)
        result["plot"] = str(plot)
    out.result(result, lambda console: _render_inspect(console, result, vector, k=k, plot=plot))


def _top_tokens(values: Any, k: int, sign: float, decode: Callable[[int], str]) -> list[dict[str, Any]]:
    """The ``k`` entries of ``values`` that move the logits most towards ``sign``, keeping only those that really
    move them that way (the mask leaves most of the vector at zero)."""
    import torch

    ids = torch.topk(values if sign > 0 else -values, k).indices
    return [
        {"id": int(i), "token": decode(int(i)), "value": float(values[int(i)])}
        for i in ids.tolist()
        if float(values[int(i)]) * sign > 0
    ]


def _render_inspect(console: Console, result: dict[str, Any], vector: Any, *, k: int, plot: Path | None) -> None:
    config = vector.config
    base = config.base_model or {}
    calib = config.calibration or {}
    console.print(f"[bold]{result['path']}[/]  steerkit format {config.format_version}, method {config.method}")
    facts = table("", "")
    facts.show_header = False
    revision = f" at revision {base['revision']}" if base.get("revision") else ""
    facts.add_row("base model", f"{base.get('name_or_path')}{revision}")
    facts.add_row("vocab size", str(config.vocab_size))
    facts.add_row("tokenizer", f"{config.tokenizer.get('class')}, sha256 {str(config.tokenizer.get('sha256'))[:12]}…")
    adapter = config.adapter or {}
    facts.add_row("adapter", f"{adapter.get('peft_type', 'none')}" + (" (included)" if vector.adapter_files else ""))
    facts.add_row("alpha", fmt_float(config.alpha))
    facts.add_row("calibration", f"{calib.get('n_examples')} examples, {calib.get('n_tokens')} tokens")
    console.print(facts)
    mu = table("μ", "dynamic (paper)", "dynamic (exact)", "static (paper)", "static (exact)", title="Strengths")
    for how in ("mean", "median", "trimmed", "ratio"):
        mu.add_row(
            how,
            fmt_float(config.mu.paper.get(how)),
            fmt_float(config.mu.exact.get(how)),
            fmt_float(config.mu_static.paper.get(how)),
            fmt_float(config.mu_static.exact.get(how)),
        )
    mu.add_row("fit", fmt_float(config.mu.fit), "", fmt_float(config.mu_static.fit), "")
    console.print(mu)
    console.print(
        f"default μ = {fmt_float(config.mu.value)} ({config.mu.chosen_by}), "
        f"μ_s = {fmt_float(config.mu_static.value)} ({config.mu_static.chosen_by})"
    )
    render_validation(console, config.validation, full=True)
    _render_shifts(console, result, config.mu_static.value, k=k)
    if plot is not None:
        console.print(f"Plot written to {plot}")


def _render_shifts(console: Console, result: dict[str, Any], mu_static: float, *, k: int) -> None:
    """The tokens static steering moves most at the default μ_s, by how much their logits move (μ_s·v)."""
    entries = sorted(result["top_promoted"] + result["top_suppressed"], key=lambda e: abs(e["value"]), reverse=True)[:k]
    if not entries:
        console.print("The static vector is zero: static steering changes nothing.")
        return
    title = f"Static steering at μ_s = {fmt_float(mu_static)}: the {len(entries)} largest logit shifts μ_s·v"
    shifts = table("token", "v", "logit shift", "", title=title)
    for entry in entries:
        shift = mu_static * entry["value"]
        shifts.add_row(
            repr(entry["token"]), f"{entry['value']:+.3g}", f"{shift:+.3g}", "raised" if shift > 0 else "lowered"
        )
    console.print(shifts)
    console.print(
        "A token is moved only while the model finds it plausible (the confidence mask); a shift s multiplies its "
        "odds against unmoved tokens by e^s (+2.3: 10×)."
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "inspect",
        epilog=examples(
            "steerkit inspect my-vector",
            "steerkit inspect user/my-vector --top 10 --plot vector.png",
            "steerkit inspect my-vector --json",
        ),
    )(inspect)
