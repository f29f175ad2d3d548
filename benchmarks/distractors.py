"""Where build's ranking criterion gets its distractors: drawn from other pairs, or the base model's own answer?

Issue 27's ranking criterion scores each held-out calibration prompt's gold completion against distractors. With
pairs alone they are drawn from the other pairs' completions (answers to other questions: easy to tell apart).
The alternative tried here is the wrong answer a pairs-only user can still get: the *base model's own greedy
completion* of the prompt (adapter off, 2 to the gold's length + 4 new tokens, its first non-empty line), kept
when it differs from the gold text, else the drawn ones. At least 2 tokens: on Social-IQa's prompts the base
model's first greedy token ends its turn, and an empty answer is no distractor.

For each TruthfulQA and Social-IQa configuration of ``benchmarks/reproduce.py`` (SmolLM2-135M-Instruct, or
``--model``'s; the same split, learning rate, warm start and calibration pairs; adapters from ``--adapter-cache``,
trained there when missing), build's 5-fold cross-validation runs with each distractor source (``drawn``:
``criterion="rank"``; ``generated``: ``criterion="split"``, which generates the base model's answers itself; they
are generated once more here to count and show them), and every candidate's test Δ is looked up in
``reproduce.json``, where every setting was scored on the test split; no test item is read by any choice. Writes
``benchmarks/results/distractors.json``: per configuration and source, the pick, its test Δ (the task's headline
metric: MC2 for TruthfulQA, accuracy for Social-IQa; a fraction, paired 95% interval), every candidate's
cross-validated estimate beside its test Δ, the generation's seconds and how many generated answers equalled the
gold. It also records, per source, the rank correlation (Spearman) of the candidates' cross-validated Δ with their
test Δ, and the pick of the generated source among build's candidates without the dynamic ones
(``generated_static``: warm, base and static): dynamic mode's δ̂ pushes the warm model away from the base model's
own next token, so a distractor that *is* the base model's greedy answer favours dynamic by construction, whatever
the test says. ``generated_static_gated`` is the same pick behind build's NLL gate (``gate="nll"``: a candidate
qualifies only if its held-out gold-token NLL is not significantly worse than warm's). ``split`` judges each mode by
the measure that does not favour it by construction (``steerkit.gate.split_pick``, build's default criterion
``"split"`` since issue 27); it was written after the TruthfulQA results above were known (SmolLM2's), so the
Social-IQa configurations and another model's are its check. A
configuration rerun with fewer ``--sources`` keeps its other sources' earlier results; ``--repick`` recomputes the
three picks from the stored candidates without running a model. Usage::

    .venv/bin/python benchmarks/distractors.py [--configs truthfulqa:lora:chosen,...] [--sources generated] [--repick]
        [--model gemma-3-270m]  # another model's configurations of reproduce.json, in distractors-MODEL.json
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce as r
import torch

from steerkit import build
from steerkit.data import encode_pair
from steerkit.gate import pick, split_pick
from steerkit.ranking import base_answers

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = ",".join(
    f"{task}:{method}:{label}"
    for task in ("truthfulqa", "social_iqa")
    for method, label in [
        ("lora", "chosen"),
        ("ia3", "chosen"),
        ("lora", "paper"),
        ("ia3", "paper"),
        ("prompt_tuning", "chosen"),
        ("prompt_tuning", "paper"),
    ]
)
#: A configuration: model, task, PEFT method and learning-rate label, as in ``reproduce.json``.
Config = tuple[str, str, str, str]
#: Every column of a candidate kept in the result file (the measure, and accuracy and NLL reported beside it).
KEPT = (
    *("setting", "mu", "delta_vs_warm", "ci_low", "ci_high"),
    *("accuracy_delta", "nll_delta", "nll_ci_low", "nll_ci_high"),
)


def test_delta(rows: list[dict[str, Any]], config: Config, setting: str) -> list[float] | None:
    """The setting's test Δ of the task's headline metric vs warm in ``reproduce.json`` (a fraction, 95% interval)."""
    if setting == "warm":
        return [0.0, 0.0, 0.0]
    model, task, method, label = config
    for row in rows:
        name = "base" if row["mode"] == "base" else f"{row['mode']}/{row['aggregator']}"
        found = (r.model_of(row), row["task"], row["peft_method"], row["lr_label"], row["metric"], name)
        if found == (model, task, method, label, r.TASKS[task]["select"], setting):
            return [row[k] for k in ("delta_vs_warm", "delta_ci_low", "delta_ci_high")]
    return None


def lr_of(rows: list[dict[str, Any]], config: Config) -> float:
    """The learning rate ``reproduce.py`` used for this configuration."""
    return next(
        float(row["lr"])
        for row in rows
        if (r.model_of(row), row["task"], row["peft_method"], row["lr_label"]) == config
    )


def one(config: Config, rows: list[dict[str, Any]], cache: Path, sources: list[str]) -> dict[str, Any]:
    model, task, method, label = config
    data = r.load_task(task)
    warm, tokenizer, _ = r.train(method, lr_of(rows, config), data, model, cache=cache)
    pairs = data["cal_pairs"]
    started = time.perf_counter()
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in pairs]
    answers = base_answers(warm, tokenizer, pairs, encoded, batch_size=8)  # what build(criterion="split") ranks against
    result: dict[str, Any] = {"generation_s": time.perf_counter() - started, "n": len(pairs)}
    usable = [a is not None for a in answers]
    result["generated_equal_to_gold_or_empty"] = usable.count(False)
    result["examples"] = [[p["completion"], a or ""] for p, a in zip(pairs[:5], answers[:5], strict=True)]
    for source in sources:
        started = time.perf_counter()
        criterion = "rank" if source == "drawn" else "split"  # split ranks against the answers above, else drawn
        validation = build(warm, warm, pairs, tokenizer=tokenizer, batch_size=8, criterion=criterion).config.validation
        chosen = validation["recommended"]
        if source == "generated":  # build's own pick is the split rule's, read from its candidates
            assert chosen["setting"] == split_pick(validation["candidates"])["setting"]
        result[source] = {
            "pick": chosen["setting"],
            "mu": chosen["mu"],
            "test_delta": test_delta(rows, config, chosen["setting"]),
            "build_s": time.perf_counter() - started,
            "candidates": [
                {k: c.get(k) for k in KEPT} | {"test_delta": test_delta(rows, config, c["setting"])}
                for c in validation["candidates"]
            ],
        }
        result[source]["spearman"] = {
            "all": spearman([c for c in result[source]["candidates"] if c["setting"] != "warm"]),
            "static": spearman([c for c in result[source]["candidates"] if c["setting"].startswith("static")]),
        }
        r.log(f"{model} {task} {method} {label} {source}: {chosen['setting']} test Δ {result[source]['test_delta']}")
    if "generated" in result:
        result |= derived(result["generated"]["candidates"])
    return result


def derived(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Picks of build's own rule (``steerkit.gate.pick``) over the generated source's candidates, read from their
    stored columns (no model runs): over warm alone, base and the static candidates without and with the NLL
    gate (a candidate qualifies only if its held-out gold-token NLL is not significantly worse than warm's), and
    :func:`split_pick`."""
    kept = [c for c in candidates if not c["setting"].startswith("dynamic")]
    picks = {
        "generated_static": pick(kept),
        "generated_static_gated": pick(kept, "nll"),
        "split": split_pick(candidates),
    }
    return {
        key: {"pick": best["setting"], "mu": best["mu"], "test_delta": best["test_delta"]}
        for key, best in picks.items()
    }


def spearman(candidates: list[dict[str, Any]]) -> float | None:
    """Rank correlation of the candidates' cross-validated Δ with their test Δ (ties broken by order)."""
    found = [(c["delta_vs_warm"], c["test_delta"][0]) for c in candidates if c["test_delta"] is not None]
    if len(found) < 3:
        return None
    ranks = [torch.tensor(values).argsort().argsort().double() for values in zip(*found, strict=True)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def out_name(model: str) -> str:
    """The result file of a model's configurations: ``distractors.json`` for SmolLM2, else one of its own."""
    return "distractors.json" if model == r.DEFAULT_MODEL else f"distractors-{model}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=CONFIGS, help="task:method:label, comma-separated")
    parser.add_argument("--sources", default="drawn,generated", help="distractor sources, comma-separated")
    parser.add_argument("--adapter-cache", type=Path, default=Path(".cache/adapters"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=r.DEFAULT_MODEL, help="a model of reproduce.json (--model there)")
    parser.add_argument("--out", type=Path, help="default: results/distractors.json, or distractors-MODEL.json")
    parser.add_argument("--repick", action="store_true", help="only recompute the picks from stored candidates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = json.loads((RESULTS / "reproduce.json").read_text())["rows"]
    args.out = args.out or RESULTS / out_name(args.model)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.repick:
        for found in result.values():
            found |= derived(found["generated"]["candidates"]) if "generated" in found else {}
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        return
    for spec in args.configs.split(","):
        task, method, label = spec.split(":")
        earlier = result.get(f"{task}/{method}/{label}", {})
        found = one((args.model, task, method, label), rows, args.adapter_cache, args.sources.split(","))
        result[f"{task}/{method}/{label}"] = {**earlier, **found}  # a source not rerun keeps its earlier result
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
