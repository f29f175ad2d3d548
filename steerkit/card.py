"""The model card (README.md) of an artifact: YAML front matter for the Hub, then usage, strength and calibration.

The card is a pure function of the config, whether the adapter is included, and the repo id it is pushed to:
no timestamps, no machine paths beyond the recorded base model, never a token. The front matter
(``huggingface_hub.ModelCardData``) carries ``library_name: steerkit``, ``base_model`` (only when the recorded
base model is a Hub id, since the Hub rejects anything else) and the tags ``steerkit``, ``steering-vector``,
``svdecode``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from steerkit import constants as C
from steerkit.config import SteerConfig
from steerkit.schema import best_per_mode, criterion_words, measure_name, recommended_words

__all__ = ["CARD_TAGS", "render_card"]

#: Tags every card carries.
CARD_TAGS = ("steerkit", "steering-vector", "svdecode")

#: Local folders whose Hub id is known (the embedded default model is cached as a plain folder).
_KNOWN_FOLDERS = {"SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_AGGREGATES = ("mean", "median", "trimmed", "ratio")


def hub_model_id(name_or_path: str | None) -> str | None:
    """The Hub id of a recorded base model, or ``None`` when it is a local path the Hub would not know.

    Args:
        name_or_path: ``config.base_model["name_or_path"]``.

    Returns:
        ``"org/name"`` (or a bare legacy id such as ``"gpt2"``), or ``None``.

    Example:
        >>> hub_model_id("HuggingFaceTB/SmolLM2-135M-Instruct"), hub_model_id("/tmp/my-model")
        ('HuggingFaceTB/SmolLM2-135M-Instruct', None)
    """
    if not name_or_path:
        return None
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:  # a local path
        return _KNOWN_FOLDERS.get(PurePath(name.replace("\\", "/")).name)
    if name in _KNOWN_FOLDERS:
        return _KNOWN_FOLDERS[name]
    if "--" in name or ".." in name:
        return None
    return name if _HUB_ID.fullmatch(name) else None


def _yaml_scalar(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a Python literal for the usage snippet


def _front_matter(base_id: str | None, summary: dict[str, Any]) -> list[str]:
    """The YAML front matter, written by huggingface_hub's ``ModelCardData`` (keys in insertion order).

    Besides ``library_name``, ``base_model`` and the tags, a ``steerkit`` block carries what ``steerkit search``
    shows without downloading anything: the modes the artifact supports and its default strengths.
    """
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="steerkit", base_model=base_id, tags=list(CARD_TAGS), steerkit=summary)
    return ["---", *data.to_yaml().splitlines(), "---", ""]


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.6g}" if math.isfinite(x) else str(x)
    return str(x)


def _short(digest: Any) -> str:
    text = str(digest or "")
    return f"`{text[:12]}…`" if len(text) > 12 else f"`{text}`" if text else "unknown"


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def render_card(config: SteerConfig, *, has_adapter: bool, repo_id: str | None = None) -> str:
    """Render the card of an artifact; deterministic (no timestamps), never contains a token.

    Args:
        config: The artifact's config.
        has_adapter: Whether the artifact includes its adapter (``adapter/``), so dynamic mode works.
        repo_id: Where it lives on the Hub, for the usage snippets (a placeholder when ``None``).

    Returns:
        The text of ``README.md``, YAML front matter first.

    Example:
        >>> print(render_card(vector.config, has_adapter=True, repo_id="me/tqa").splitlines()[1])  # doctest: +SKIP
        library_name: steerkit
    """
    cfg = config
    base = str(cfg.base_model.get("name_or_path") or "unknown")
    base_id = hub_model_id(base)
    shown = base_id or base
    where = repo_id or "path/to/this-vector"
    dynamic = has_adapter
    summary = {
        "modes": ["static", "dynamic"] if dynamic else ["static"],
        "mu": cfg.mu.value,
        "mu_static": cfg.mu_static.value,
        "format": C.FORMAT_TAG,
    }
    lines = _front_matter(base_id, summary) + _intro_lines(cfg, base, shown, dynamic)
    lines += _usage_lines(cfg, where, shown, dynamic) + _strength_lines(cfg)
    lines += _calibration_lines(cfg.calibration)
    if cfg.validation:
        lines += _validation_lines(cfg.validation)
    if cfg.evaluation:
        lines += _evaluation_lines(cfg.evaluation)
    lines += _provenance_lines(cfg)
    return "\n".join(lines)


def _intro_lines(cfg: SteerConfig, base: str, shown: str, dynamic: bool) -> list[str]:
    """The title, what the vector is, and the table of its base model, tokenizer, adapter and files."""
    tok = cfg.tokenizer
    lines = [
        f"# SVDecode steering vector for `{shown}`",
        "",
        f"A task steering vector in the [steerkit](https://pypi.org/project/steerkit/) format (`{C.FORMAT_TAG}`), "
        "built with SVDecode (Hu et al., *Distribution-Aligned Decoding for Efficient LLM Task Adaptation*, "
        "[arXiv 2509.15888](https://arxiv.org/abs/2509.15888)): the gradient of KL(warm ‖ base) between a "
        "warm-started PEFT model and its base, projected through the softmax Jacobian and masked to the tokens the "
        f"warm model is confident about (α = {_fmt(cfg.alpha)}). At decode time the logits are steered as "
        "`z + μ·δ̂`.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}`"
        + (f" (revision `{cfg.base_model['revision']}`)" if cfg.base_model.get("revision") else "")
        + " |",
        f"| vocabulary width V | {cfg.vocab_size} |",
        f"| tokenizer | {_cell(tok.get('class', 'unknown'))}, {_cell(tok.get('vocab_length', '?'))} entries, "
        f"sha256 {_short(tok.get('sha256'))} |",
    ]
    if cfg.adapter:
        lines.append(
            f"| adapter | {_cell(cfg.adapter.get('peft_type', 'unknown'))}"
            + (" (included under `adapter/`)" if dynamic else " (not included)")
            + f", sha256 {_short(cfg.adapter.get('sha256'))} |"
        )
    lines += [
        f"| files | `{C.STEERING_FILE}` (task vector + config), `{C.CONFIG_FILE}`"
        + (f", `{C.ADAPTER_DIR}/`" if dynamic else "")
        + " |",
    ]
    return lines


def _usage_lines(cfg: SteerConfig, where: str, shown: str, dynamic: bool) -> list[str]:
    """Python and command-line usage, with the attach line that fits the artifact."""
    lines = [
        "",
        "## Usage",
        "",
        "Python (`pip install steerkit`):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        "import steerkit",
        "",
        f"vector = steerkit.load({_yaml_scalar(where)})  # downloaded once, checksums verified, then cached",
        f"tokenizer = AutoTokenizer.from_pretrained({_yaml_scalar(shown)})",
        f"model = AutoModelForCausalLM.from_pretrained({_yaml_scalar(shown)})",
    ]
    if dynamic and cfg.validation:
        lines.append("steered = steerkit.attach(vector, model, tokenizer=tokenizer)  # the recommended setting (below)")
        lines.append('# or mode="dynamic" (SVDecode, adapter in adapter/) / mode="static" (one add per step)')
    elif dynamic:
        lines.append(
            "steered = steerkit.attach(vector, model, tokenizer=tokenizer)  # dynamic SVDecode, adapter in adapter/"
        )
        lines.append('# or: steerkit.attach(vector, model, tokenizer=tokenizer, mode="static")  # one add per step')
    else:
        lines.append('steered = steerkit.attach(vector, model, tokenizer=tokenizer, mode="static")  # one add per step')
    lines += [
        'inputs = tokenizer("Q: ...", return_tensors="pt")',
        "output = steered.generate(**inputs, max_new_tokens=64)",
        "print(tokenizer.decode(output[0], skip_special_tokens=True))",
        "steered.detach()",
        "```",
        "",
        "Command line:",
        "",
        "```bash",
        f"steerkit pull {where}",
        f'steerkit generate {where} --model {shown} --prompt "Q: ..." --mode compare',
        f"steerkit eval {where} items.jsonl --model {shown}",
        "```",
    ]
    return lines


def _strength_lines(cfg: SteerConfig) -> list[str]:
    """The default strengths and every alternative computed at build time."""
    lines = [
        "",
        "## Strength μ",
        "",
        f"- dynamic μ̄ = **{_fmt(cfg.mu.value)}** (chosen by `{cfg.mu.chosen_by}`"
        + (f" on data sha256 {_short(cfg.mu.chosen_on)}" if cfg.mu.chosen_on else "")
        + ")",
        f"- static μ_s = **{_fmt(cfg.mu_static.value)}** (chosen by `{cfg.mu_static.chosen_by}`"
        + (f" on data sha256 {_short(cfg.mu_static.chosen_on)}" if cfg.mu_static.chosen_on else "")
        + ")",
        "",
        'Every alternative computed at build time (pick one with `vector.with_mu("median/exact")`): `paper` uses '
        "the curvature ‖δ̂‖² of the paper, `exact` the true second derivative of the token NLL; `fit` is the exact "
        "minimiser of the calibration NLL.",
        "",
        "| aggregate | μ̄ (paper) | μ̄ (exact) | μ_s (paper) | μ_s (exact) |",
        "|---|---|---|---|---|",
    ]
    for how in _AGGREGATES:
        lines.append(
            f"| {how} | {_fmt(cfg.mu.paper[how])} | {_fmt(cfg.mu.exact[how])} | "
            f"{_fmt(cfg.mu_static.paper[how])} | {_fmt(cfg.mu_static.exact[how])} |"
        )
    lines.append(f"| fit | {_fmt(cfg.mu.fit)} | | {_fmt(cfg.mu_static.fit)} | |")
    return lines


def _provenance_lines(cfg: SteerConfig) -> list[str]:
    """Method, checksums and the library versions that built the vector."""
    return [
        "",
        "## Provenance",
        "",
        f"- method `{cfg.method}`, projection `{cfg.projection}`, KL `{cfg.kl}`, α = {_fmt(cfg.alpha)}, "
        f"ε = {_fmt(cfg.epsilon)}",
        f"- task vector sha256 {_short(cfg.task_vector_sha256)}; format version {cfg.format_version}",
        f"- steerkit {cfg.steerkit_version}; " + ", ".join(f"{k} {v}" for k, v in sorted(cfg.versions.items())),
        "",
    ]


def _calibration_lines(cal: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Calibration", ""]
    labels = {
        "n_examples": "examples",
        "n_tokens": "gold completion tokens",
        "data_sha256": "data sha256",
        "kl_mean": "mean KL(warm ‖ base) per token (nats)",
        "kept_mean": "mean tokens kept by the confidence mask",
        "masked_gold_fraction": "fraction of gold tokens outside the mask",
    }
    for key, label in labels.items():
        if key in cal:
            value = _short(cal[key]) if key == "data_sha256" else _fmt(cal[key])
            lines.append(f"- {label}: {value}")
    for key in sorted(set(cal) - set(labels) - {"mu_star_quantiles"}):
        if not isinstance(cal[key], (Mapping, list)):
            lines.append(f"- {key}: {_fmt(cal[key])}")
    quantiles = cal.get("mu_star_quantiles")
    tables = {c: t for c, t in quantiles.items() if isinstance(t, Mapping)} if isinstance(quantiles, Mapping) else {}
    if tables:  # levels are the keys that read as numbers; other keys (a newer writer's) are left out
        quantiles, curvatures = tables, sorted(tables)
        levels = sorted({level for table in tables.values() for level in table if _level(level)}, key=float)
        lines += ["", "Per-token μ* quantiles:", "", "| quantile | " + " | ".join(curvatures) + " |"]
        lines.append("|---" * (len(curvatures) + 1) + "|")
        for level in levels:
            cells = [_fmt(quantiles[c].get(level, "")) for c in curvatures]
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def _level(key: str) -> bool:
    try:
        return math.isfinite(float(key))
    except ValueError:
        return False


def _validation_lines(validation: Mapping[str, Any]) -> list[str]:
    """The cross-validated comparison: the recommendation and why, and warm plus the best candidate per mode."""
    rec = validation["recommended"]
    measure = measure_name(validation)
    lines = ["", "## Recommended setting", "", f"**{recommended_words(rec)}**: {_cell(validation['reason'])}.", ""]
    lines.append(
        f"{validation['folds']}-fold cross-validation on {validation['n']} calibration {validation['unit']}s by the "
        f"{criterion_words(validation)}; Δ is the gain over warm alone with its paired 95% bootstrap interval."
    )
    lines += ["", f"| setting | μ | {measure} | Δ vs warm | 95% interval |", "|---|---|---|---|---|"]
    for c in best_per_mode(validation):
        interval = "" if c["setting"] == "warm" else f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
        lines.append(
            f"| {_cell(c['setting'])} | {_fmt(c['mu'])} | {_fmt(c['estimate'])} | {_fmt(c['delta_vs_warm'])} "
            f"| {interval} |"
        )
    return lines


def _evaluation_lines(evaluation: Mapping[str, Any]) -> list[str]:
    """Metrics (``{"value", "n", "ci_low", "ci_high"}`` leaves) as a table; other scalars as a list."""
    rows: list[tuple[str, Mapping[str, Any]]] = []
    facts: list[tuple[str, Any]] = []

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key in sorted(node):
            value, name = node[key], f"{prefix}{key}"
            if key == "per_item":
                continue  # per-item scores do not belong in a card
            if isinstance(value, Mapping) and isinstance(value.get("value"), (int, float)):
                rows.append((name, value))
            elif isinstance(value, Mapping):
                walk(f"{name} / ", value)
            elif not isinstance(value, list):
                facts.append((name, value))

    walk("", evaluation)
    lines = ["", "## Evaluation", ""]
    lines += [f"- {name}: {_cell(value)}" for name, value in facts]
    if rows:
        if facts:
            lines.append("")
        lines += ["| metric | value | 95% interval | n |", "|---|---|---|---|"]
        for name, leaf in rows:
            low, high = leaf.get("ci_low"), leaf.get("ci_high")
            interval = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else ""
            lines.append(f"| {_cell(name)} | {_fmt(leaf['value'])} | {interval} | {_cell(leaf.get('n', ''))} |")
    return lines
