"""Type checks of the JSON values in ``steer_config.json``: the format-1 fields and the additive ``validation`` block.

:mod:`steerkit.config` runs these while it reads a config; every refusal is an
:class:`~steerkit.errors.ArtifactValueError` naming the file, the key and the value. :func:`best_per_mode` is the
``validation`` block's shortest summary (:mod:`steerkit.crossval` writes the block), and :func:`measure_name`,
:func:`criterion_words` and :func:`recommended_words` the words the card and the CLI both use for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steerkit.errors import ArtifactValueError, show
from steerkit.svdecode import CURVATURES

__all__ = [
    "REBUILD",
    "best_per_mode",
    "check_fields",
    "criterion_words",
    "finite",
    "json_object",
    "measure_name",
    "recommended_words",
    "string",
]


def finite(value: Any, what: str) -> float:
    """A finite JSON number (an int or a float, never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArtifactValueError(f"{what} is not a number: {show(value)}", hint="re-create the artifact")
    try:
        number = float(value)
    except OverflowError:
        raise ArtifactValueError(f"{what} is too large for a float", hint="re-create the artifact") from None
    if not math.isfinite(number):
        raise ArtifactValueError(f"{what} is not finite ({number})", hint="re-create the artifact", got=number)
    return number


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ArtifactValueError(f"{what} must be a non-negative integer, got {show(value)}", hint=REBUILD)
    return value


def string(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "a string or null" if optional else "a string"
        raise ArtifactValueError(f"{what} must be {kind}, got {show(value)}", hint=REBUILD)
    return value


def json_object(value: Any, what: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ArtifactValueError(f"{what}: '{key}' must be a JSON object, got {show(value)}", hint=REBUILD, key=key)
    return value


REBUILD = "re-create the artifact with `steerkit build`"
#: Typed fields of the nested objects (absent keys are allowed; extra keys are kept and ignored).
FIELDS: dict[str, dict[str, str]] = {
    "tokenizer": {"class": "str?", "vocab_length": "int?", "sha256": "str?"},
    "base_model": {"name_or_path": "str?", "revision": "str?"},
    "adapter": {"path": "str?", "peft_type": "str?", "sha256": "str?"},
    "calibration": {
        "n_examples": "int",
        "n_tokens": "int",
        "data_sha256": "str?",
        "kl_mean": "num",
        "kept_mean": "num",
        "masked_gold_fraction": "num",
    },
}


def check_fields(data: Mapping[str, Any], where: str) -> None:
    """Type-check the fields format 1 defines inside the nested objects (tolerating extra keys)."""
    for section, fields in FIELDS.items():
        table = data.get(section)
        if table is None and section == "adapter":
            continue
        table = json_object(table, where, section)
        for key, kind in fields.items():
            if key not in table:
                continue
            what, value = f"{where}: {section}.{key}", table[key]
            if kind.startswith("str"):
                string(value, what, optional=kind.endswith("?"))
            elif kind.startswith("int"):
                if value is not None or not kind.endswith("?"):
                    integer(value, what)
            else:
                finite(value, what)
    quantiles = data["calibration"].get("mu_star_quantiles")
    if quantiles is not None:
        quantiles = json_object(quantiles, where, "calibration.mu_star_quantiles")
        for curvature in CURVATURES:
            if curvature in quantiles:
                table = json_object(quantiles[curvature], where, f"calibration.mu_star_quantiles.{curvature}")
                for level, value in table.items():
                    if _is_level(level):
                        finite(value, f"{where}: calibration.mu_star_quantiles.{curvature}.{level}")
    for name, text in json_object(data["versions"], where, "versions").items():
        string(text, f"{where}: versions.{name}")
    for key in ("evaluation", "validation"):
        if data.get(key) is not None:
            json_object(data[key], where, key)
    if data.get("validation") is not None:
        check_validation(data["validation"], where)


def _is_level(key: str) -> bool:
    """Whether a quantile table key is a level such as ``"0.5"`` (other keys are extensions)."""
    try:
        return math.isfinite(float(key))
    except ValueError:
        return False


def check_validation(block: Any, where: str) -> None:
    """Type-check the ``validation`` block: every key every reader uses must be present and typed (the
    recommendation strictly: attach uses it); a block that fails is refused at load, never a ``KeyError`` later."""
    block = json_object(block, where, "validation")
    what = f"{where}: validation"
    string(block.get("measure"), f"{what}.measure")
    string(block.get("unit"), f"{what}.unit")
    for key in ("folds", "n"):
        integer(block.get(key), f"{what}.{key}")
    for key in ("seed", "n_bootstrap"):
        if key in block:
            integer(block[key], f"{what}.{key}")
    string(block.get("criterion"), f"{what}.criterion", optional=True)
    if block.get("distractors") is not None:
        distractors = json_object(block["distractors"], where, "validation.distractors")
        string(distractors.get("source"), f"{what}.distractors.source")
        integer(distractors.get("k"), f"{what}.distractors.k")
    if block.get("warm_vs_base") is not None:
        pair = json_object(block["warm_vs_base"], where, "validation.warm_vs_base")
        for key in ("base_estimate", "delta", "ci_low", "ci_high"):
            finite(pair.get(key), f"{what}.warm_vs_base.{key}")
    rec = json_object(block.get("recommended"), where, "validation.recommended")
    _check_setting(rec, f"{what}.recommended")
    string(block.get("reason"), f"{what}.reason")
    candidates = block.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise ArtifactValueError(f"{what}.candidates must be a non-empty list, got {show(candidates)}", hint=REBUILD)
    for i, entry in enumerate(candidates):
        entry = json_object(entry, where, f"validation.candidates[{i}]")
        _check_setting(entry, f"{what}.candidates[{i}]")
        for key in ("estimate", "delta_vs_warm", "ci_low", "ci_high"):
            finite(entry.get(key), f"{what}.candidates[{i}].{key}")


def _check_setting(entry: Mapping[str, Any], what: str) -> None:
    string(entry.get("setting"), f"{what}.setting")
    if "mode" not in entry or entry["mode"] not in (None, "static", "dynamic"):
        got = show(entry["mode"]) if "mode" in entry else "nothing"
        raise ArtifactValueError(f"{what}.mode must be null, 'static' or 'dynamic', got {got}", hint=REBUILD)
    string(entry.get("rule"), f"{what}.rule", optional=True)
    finite(entry.get("mu"), f"{what}.mu")


def best_per_mode(validation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``validation`` block's warm (and base) candidate and, per mode, the candidate with the largest Δ vs warm
    (the first of equals), in table order: what the card and the CLI show when they do not list every candidate."""
    best: dict[str, Mapping[str, Any]] = {}
    for c in validation["candidates"]:
        mode = c["mode"] or c["setting"]
        if mode not in best or c["delta_vs_warm"] > best[mode]["delta_vs_warm"]:
            best[mode] = c
    return list(best.values())


def measure_name(validation: Mapping[str, Any]) -> str:
    """A column heading for the block's measure: ``NLL/token``, ``gold mass`` (the rank criterion), or the metric."""
    return {"nll": "NLL/token", "rank": "gold mass"}.get(str(validation["measure"]), str(validation["measure"]))


def criterion_words(validation: Mapping[str, Any]) -> str:
    """How the block measured each setting, in words. A block without ``criterion`` (older artifacts) is NLL."""
    criterion = validation.get("criterion") or ("nll" if validation["measure"] == "nll" else "metric")
    if criterion == "nll":
        return "held-out NLL per token of the gold completions"
    if criterion in ("rank", "split"):
        source = validation.get("distractors") or {}
        k = source.get("k", "?")
        kinds = {
            "record": "the records' own wrong completions",
            "base-answer": "the base model's own answer",
            "drawn": f"up to {k} completions drawn from the other records",
        }
        named = [kinds[kind] for kind in str(source.get("source")).split("+") if kind in kinds]
        against = ", else ".join(named) or "wrong completions"
        rank = f"held-out rank of each gold completion against {against}: its softmax mass, scored per token"
        if criterion == "rank":
            return rank
        return (
            f"base and static settings by {rank}; dynamic settings by held-out NLL per token; no steering where the "
            "base model's held-out NLL beats warm alone's"
        )
    return f"held-out {validation['measure']} on the items"


def recommended_words(rec: Mapping[str, Any]) -> str:
    """The recommended setting in words: warm alone, the base model, or the setting with its μ."""
    if rec["setting"] == "base":
        return "the base model, adapter off (μ = 0)"
    if rec["mode"] is None:
        return "warm alone (μ = 0)"
    return f"{rec['setting']} (μ = {float(rec['mu']):.4g})"
