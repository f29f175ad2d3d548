"""How results look: rich tables, number formats, the evaluation table and the ``--plot`` PNG charts.

Shared by the commands (a command never imports another command). rich and matplotlib are imported inside the
functions, which only run inside commands, never for ``steerkit --help``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerkit_cli.errors import MissingDependencyError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "fmt_ci",
    "fmt_delta",
    "fmt_float",
    "plot_eval",
    "plot_vector",
    "render_table",
    "render_validation",
    "require_matplotlib",
    "table",
]


def table(*columns: str, title: str | None = None) -> Table:
    """A plain rich table with the given column headers."""
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold")
    return t


def fmt_float(value: float | None, digits: int = 4) -> str:
    """A float for tables (``-`` for ``None``)."""
    return "-" if value is None else f"{value:.{digits}g}"


def fmt_ci(metric: dict[str, Any]) -> str:
    """``0.725 [0.575, 0.850]`` from ``{"value", "ci_low", "ci_high"}``."""
    text = f"{metric['value']:.3f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"
    return text


def fmt_delta(delta: dict[str, Any] | None) -> str:
    """``+0.058 [+0.020, +0.102]`` from ``{"difference", "ci_low", "ci_high"}`` (``-`` for ``None``)."""
    if delta is None:
        return "-"
    return f"{delta['difference']:+.3f} [{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}]"


def verdict_lines(results: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """One line per setting with a paired Δ vs warm on ``metric``: the Δ, its interval, and whether it is better,
    worse or no clear difference; the ``recommended`` line names its setting (and says so when it is the base
    model, adapter off: the adapter hurt on the calibration data)."""
    from steerkit.demo import verdict

    lines = []
    for setting, res in results.items():
        delta = (res.get("delta_vs_warm") or {}).get(metric)
        if delta is None:
            continue
        said = verdict(delta)
        name = setting
        chosen = (res.get("steering") or {}).get("setting")
        if setting == "recommended" and chosen:
            name = f"recommended ({chosen})"
        line = (
            f"{name}: {metric} {delta['difference']:+.3f} vs warm, 95% CI [{delta['ci_low']:+.3f}, "
            f"{delta['ci_high']:+.3f}] (paired bootstrap, n = {delta['n']}): "
        )
        if said == "no clear difference":
            line += "no clear difference: the interval includes 0, so this run does not show an effect"
        else:
            line += f"{said} than warm alone"
        if setting == "recommended" and chosen == "base":
            line += "; the recommendation is the base model, adapter off: the adapter hurt on the calibration data"
        lines.append(line)
    return lines


def render_validation(console: Any, validation: dict[str, Any] | None, *, full: bool = False) -> None:
    """The cross-validated comparison of a ``validation`` block: a table (the best candidate per mode, or every
    candidate with ``full``), then the recommendation and why, in plain words."""
    if not validation:
        console.print("Not cross-validated (too few calibration prompts): steering is unchecked on this data.")
        return
    from steerkit.schema import best_per_mode, criterion_words, measure_name, recommended_words

    measure = measure_name(validation)
    title = f"Cross-validation: {validation['folds']}-fold, {validation['n']} {validation['unit']}s, held-out {measure}"
    t = table("setting", "μ", measure, "Δ vs warm [95% CI]", title=title)
    t.caption = f"Criterion: {remote(criterion_words(validation))}."
    candidates = validation["candidates"]
    shown = candidates
    if not full:
        best = best_per_mode(validation)
        chosen = validation["recommended"]["setting"]
        shown = [c for c in candidates if c in best or c["setting"] == chosen]
    for c in shown:
        warm = c["setting"] == "warm"
        delta = "-" if warm else f"{c['delta_vs_warm']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
        t.add_row(remote(c["setting"]), fmt_float(c["mu"]), f"{c['estimate']:.4f}", delta)
    console.print(t)
    rec = validation["recommended"]  # a pulled artifact's strings are remote: escaped
    console.print(f"[bold]Recommended: {remote(recommended_words(rec))}.[/] {remote(validation['reason'])}")


def render_table(results: dict[str, dict[str, Any]], metrics: Sequence[str], *, title: str | None = None) -> Table:
    """The evaluation table: one row per setting, ``value [ci_low, ci_high]`` per metric, μ and n; then, when the
    warm model was scored, the paired ``Δ vs warm [95% CI]`` per metric."""
    deltas = any("delta_vs_warm" in res for res in results.values())
    shown = [m for m in metrics if deltas]
    t = table("setting", "μ", *(f"{m} [95% CI]" for m in metrics), *(f"Δ {m} vs warm" for m in shown), "n", title=title)
    for setting, res in results.items():
        steering = res.get("steering") or {}
        mu = "-" if steering.get("mode", "none") == "none" else f"{steering.get('mu'):.4g}"
        delta = res.get("delta_vs_warm") or {}
        if steering.get("setting"):
            t.caption = f"{setting} = {steering['setting']}, cross-validated on the vector's calibration data"
        t.add_row(
            setting,
            mu,
            *(fmt_ci(res[m]) for m in metrics),
            *(fmt_delta(delta.get(m)) for m in shown),
            str(res[metrics[0]]["n"]),
        )
    return t


# --- --plot charts ---------------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Fail early (before any work) when ``--plot`` is given without matplotlib installed.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError("--plot", "matplotlib", extra="plot") from None


@contextlib.contextmanager
def _plot(path: Path, ncols: int, *, figsize: tuple[float, float]) -> Iterator[list[Any]]:
    """One row of ``ncols`` matplotlib axes (headless backend) to draw on; saved as a PNG at ``path`` on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
    try:
        yield list(axes[0])
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_eval(path: Path, results: dict[str, dict[str, Any]], metrics: Sequence[str]) -> None:
    """``steerkit eval --plot``: one bar chart per metric, a bar per setting with its 95% interval."""
    with _plot(path, len(metrics), figsize=(4 * len(metrics), 3.5)) as axes:
        names = list(results)
        for ax, metric in zip(axes, metrics, strict=True):
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


def plot_vector(path: Path, quantiles: dict[str, dict[str, float]], result: dict[str, Any]) -> None:
    """``steerkit inspect --plot``: the μ* quantiles per curvature, and the top promoted / suppressed tokens."""
    with _plot(path, 2, figsize=(11, 4.5)) as (left, right):
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


def remote(text: object) -> str:
    """A string from elsewhere (Hub metadata), safe to print with rich: control characters (escape sequences
    that set the title or clear the screen) dropped, rich markup escaped."""
    import unicodedata

    from rich.markup import escape

    plain = "".join(c for c in str(text) if unicodedata.category(c) not in ("Cc", "Cf") or c == " ")
    return escape(plain)


def loss_lines(loss: Mapping[str, Any]) -> list[str]:
    """The warm start's loss, comparable: the same training pairs before and after, and a warning when it rose."""
    if loss.get("before") is None:
        return []
    before, after = loss["before"], loss["after"]
    lines = [f"Loss on the same {loss['pairs']} training pairs (mean per completion token): {before:.4f} → {after:.4f}"]
    if after > before:
        lines.append(
            "[yellow]Warning:[/] the warm start raised the loss on its own training pairs (the adapter fits them "
            "worse than no adapter): try a lower --lr or fewer --epochs."
        )
    return lines
