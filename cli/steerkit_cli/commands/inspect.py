"""``steerkit inspect``: a vector's config, μ table and the tokens its static vector promotes and suppresses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from steerkit_cli.common import fmt_float, load_vector, quiet_libraries, table
from steerkit_cli.options import CacheDirOpt, EndpointOpt, JsonOpt, OfflineOpt, RevisionOpt, TokenOpt, VectorArg
from steerkit_cli.output import MissingDependencyError, Output, command, examples


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
        _require_matplotlib()
    vector = load_vector(
        vector_spec, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint, offline=offline
    )
    import torch

    config = vector.config
    decode = _decoder(out, tokenizer_spec or (config.base_model or {}).get("name_or_path"), offline=offline)
    k = min(top, vector.vocab_size)
    values = vector.task_vector
    promoted = torch.topk(values, k)
    suppressed = torch.topk(-values, k)

    def rows(ids: torch.Tensor, sign: float) -> list[dict[str, Any]]:
        # only entries that really move the logits that way (the mask leaves most of the vector at zero)
        return [
            {"id": int(i), "token": decode(int(i)), "value": float(values[int(i)])}
            for i in ids.tolist()
            if float(values[int(i)]) * sign > 0
        ]

    result: dict[str, Any] = {
        "path": vector_spec,
        "config": config.to_dict(),
        "top_promoted": rows(promoted.indices, 1.0),
        "top_suppressed": rows(suppressed.indices, -1.0),
    }
    if plot is not None:
        _plot(plot, config.calibration.get("mu_star_quantiles") or {}, result)
        result["plot"] = str(plot)

    def render(console: Any) -> None:
        base = config.base_model or {}
        calib = config.calibration or {}
        console.print(f"[bold]{vector_spec}[/]  steerkit format {config.format_version}, method {config.method}")
        facts = table("", "")
        facts.show_header = False
        facts.add_row("base model", f"{base.get('name_or_path')} (revision {base.get('revision')})")
        facts.add_row("vocab size", str(config.vocab_size))
        facts.add_row(
            "tokenizer", f"{config.tokenizer.get('class')}, sha256 {str(config.tokenizer.get('sha256'))[:12]}…"
        )
        adapter = config.adapter or {}
        facts.add_row(
            "adapter", f"{adapter.get('peft_type', 'none')}" + (" (included)" if vector.adapter_files else "")
        )
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
        tokens = table(
            "promoted", "v", "suppressed", "v", title=f"Top {k} tokens of the static vector (non-zero entries)"
        )
        ups, downs = result["top_promoted"], result["top_suppressed"]
        for j in range(max(len(ups), len(downs))):
            cells = [
                (repr(side[j]["token"]), f"{side[j]['value']:+.3g}") if j < len(side) else ("", "")
                for side in (ups, downs)
            ]
            tokens.add_row(*cells[0], *cells[1])
        console.print(tokens)
        if plot is not None:
            console.print(f"Plot written to {plot}")

    out.result(result, render)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError("--plot", "matplotlib", extra="plot") from None


def _decoder(out: Output, spec: str | None, *, offline: bool) -> Any:
    """``id → text`` with the tokenizer of ``spec``; ``<id>`` placeholders when it cannot be loaded."""
    if spec:
        quiet_libraries()
        tok = _auto_tokenizer(out, spec, offline=offline)
        if tok is not None:
            return lambda i: tok.decode([i])
    out.log("no tokenizer available: showing token ids (pass --tokenizer)")
    return lambda i: f"<{i}>"


def _auto_tokenizer(out: Output, spec: str, *, offline: bool) -> Any:
    """The tokenizer of a model folder, ``.gguf`` file or Hub id, or ``None`` (a nicety here: ids still work)."""
    try:
        if spec.endswith(".gguf"):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(Path(spec).parent), gguf_file=Path(spec).name)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec, local_files_only=offline or Path(spec).is_dir())
    except Exception:  # any failure: fall back to ids
        out.log(f"could not load a tokenizer from {spec!r}")
        return None


def _plot(path: Path, quantiles: dict[str, dict[str, float]], result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for curvature, levels in sorted(quantiles.items()):
        xs = [float(q) for q in levels]
        left.plot(xs, list(levels.values()), marker="o", label=f"{curvature} curvature")
    left.axhline(0.0, color="grey", linewidth=0.8)
    left.set_xlabel("quantile")
    left.set_ylabel("per-token μ*")
    left.set_title("Distribution of μ* over calibration tokens")
    if quantiles:
        left.legend()
    bars = result["top_promoted"][::-1] + result["top_suppressed"]
    right.barh(
        [repr(b["token"]) for b in bars],
        [b["value"] for b in bars],
        color=["tab:green" if b["value"] > 0 else "tab:red" for b in bars],
    )
    right.set_title("Top promoted / suppressed tokens (static vector)")
    right.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
