"""The model card (README.md) of an artifact: YAML front matter for the Hub, then usage and statistics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from steerkit import constants as C

if TYPE_CHECKING:
    from steerkit.artifact import SteeringVector

__all__ = ["render_card"]


def _yaml_scalar(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def render_card(vector: SteeringVector, *, repo_id: str | None = None) -> str:
    """Render the card of ``vector``; deterministic (no timestamps), never contains a token.

    Args:
        vector: The steering vector.
        repo_id: Where it lives on the Hub, for the usage snippets (a placeholder when ``None``).
    """
    cfg = vector.config
    base = str(cfg.base_model.get("name_or_path") or "unknown")
    where = repo_id or "path/to/this-vector"
    lines = [
        "---",
        "library_name: steerkit",
        f"base_model: {_yaml_scalar(base)}",
        "tags:",
        "- steerkit",
        "- steering-vector",
        "- svdecode",
        "---",
        "",
        f"# SVDecode steering vector for `{base}`",
        "",
        "A task steering vector in the [steerkit](https://pypi.org/project/steerkit/) format "
        f"(`{C.FORMAT_TAG}`), built with SVDecode (Hu et al., arXiv 2509.15888): the KL gradient between a "
        "warm-started PEFT model and its base, projected through the softmax Jacobian and masked to confident "
        f"tokens (α = {_fmt(cfg.alpha)}).",
        "",
        "## Usage",
        "",
        "```python",
        "from steerkit import SteeringVector",
        "",
        f"vector = SteeringVector.load({where!r})",
        'steered = vector.attach(model, tokenizer=tokenizer)  # dynamic SVDecode; mode="static" for the cheap mode',
        'output = steered.generate(**tokenizer("Q: ...", return_tensors="pt"), max_new_tokens=64)',
        "```",
        "",
        "```bash",
        f'steerkit generate {where} --model {base} --prompt "Q: ..." --mode compare',
        "```",
        "",
        "## Strength μ",
        "",
        f"- dynamic μ̄ = {_fmt(cfg.mu.value)} (chosen by `{cfg.mu.chosen_by}`)",
        f"- static μ_s = {_fmt(cfg.mu_static.value)} (chosen by `{cfg.mu_static.chosen_by}`)",
        "",
        "| aggregate | μ̄ paper curvature | μ̄ exact curvature | μ_s paper | μ_s exact |",
        "|---|---|---|---|---|",
    ]
    for how in ("mean", "median", "trimmed", "ratio"):
        lines.append(
            f"| {how} | {_fmt(cfg.mu.paper[how])} | {_fmt(cfg.mu.exact[how])} | "
            f"{_fmt(cfg.mu_static.paper[how])} | {_fmt(cfg.mu_static.exact[how])} |"
        )
    lines.append(f"| fit (exact NLL minimiser) | {_fmt(cfg.mu.fit)} | | {_fmt(cfg.mu_static.fit)} | |")
    cal = cfg.calibration
    lines += ["", "## Calibration", ""]
    for key in ("n_examples", "n_tokens", "data_sha256", "kl_mean", "kept_mean"):
        if key in cal:
            lines.append(f"- {key}: {_fmt(cal[key])}")
    lines.append(f"- vocabulary width: {cfg.vocab_size}")
    if cfg.adapter:
        lines.append(f"- adapter: {cfg.adapter.get('peft_type', 'unknown')} (included under `adapter/`)")
    if cfg.evaluation:
        lines += [
            "",
            "## Evaluation",
            "",
            "```json",
            json.dumps(cfg.evaluation, indent=2, sort_keys=True),
            "```",
        ]
    lines += [
        "",
        "## Provenance",
        "",
        f"steerkit {cfg.steerkit_version}; " + ", ".join(f"{k} {v}" for k, v in sorted(cfg.versions.items())),
        "",
    ]
    return "\n".join(lines)
