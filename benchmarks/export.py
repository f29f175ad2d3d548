"""How good an approximation of static steering is the exported bias? TruthfulQA MC2 on SmolLM2, offline.

SmolLM2-135M-Instruct, TruthfulQA split by question as ``benchmarks/reproduce.py`` does (train / calibration /
test = 50 / 15 / 35 %, seed 0, BIG-bench's few-shot QA primer in every prompt). To keep the run to a few minutes
on two CPU cores, one epoch of :func:`steerkit.warm_start` (LoRA, lr 3e-4, batch 4) sees only the first
``--train-pairs`` (default 64) train pairs (recorded in the result); :func:`steerkit.build` runs on the
calibration pairs.
On the test items, MC2 of three settings, all on the warm model φ:

- ``warm``: φ unsteered;
- ``static``: steerkit's static mode, ``Steering(vector, mode="static")``: ``z_φ + μ_s · (keep ⊙ v)``, the
  per-position confidence mask ``keep`` (α of the vector) applied;
- ``export``: the exported ``sequence_bias`` (:func:`steerkit.export.export_bias`, top-k ``TOP_K`` = 1024 entries
  of ``|μ_s · v|``) as what a server applies: the same fixed bias ``b`` added to φ's logits at every position,
  no mask. It is scored by steerkit's own option scoring (:func:`steerkit.scoring.collect_option_terms`, the
  same tokenisation, shared prompt caches and option layout as the other two settings) with a vector-like
  additive bias: a copy of the vector whose task vector is the dense ``b`` (zero off the exported entries),
  steered in static mode with μ = 1, and, for this pass only, the confidence mask replaced by the support of
  ``b`` (:func:`exported_bias_mask` patches ``steerkit.scoring.steering_direction``). So the direction is ``b``
  itself at every position, and an option's score is the summed ``log_softmax(z_φ + b)`` of its tokens, exactly
  what ``SequenceBiasLogitsProcessor`` with single-token sequences does to each step's logits. (α = 0 would keep
  every token too, but the option terms would then hold all 49 152 entries per token: tens of GB.)

A composition (issue 31) is measured the same way: two vectors built on the two halves of the calibration pairs
(the same adapter, ``folds=0``), each at half its μ_s, composed by :func:`steerkit.compose.compose` into one
static vector (``z_φ + keep ⊙ Σᵢ μᵢ·vᵢ``, the rule of the composed processor in ``attach`` and vLLM), against the
bias exported from that composition (``composed``: MC2 of warm, the composed processor and the composed export,
the paired Δ of export vs processor).

``warm`` and ``static`` come from one forward pass (the option terms rescore μ = 0 and μ = μ_s); ``export`` takes
another. Writes ``benchmarks/results/export.json``: ``n``, each setting's MC2 with a bootstrap 95% interval, the
paired Δ of ``export`` vs ``static`` and vs ``warm`` with intervals, the export's kept L1 mass, ``top_k`` and
timings.

``--train-pairs``, ``--cal-pairs`` and ``--test-items`` take the first N of each split (recorded under
``setup``); the stored result was run with ``--train-pairs 32 --cal-pairs 24 --test-items 50`` to fit a few minutes
on two shared CPU cores.

Usage::

    .venv/bin/python benchmarks/export.py [--train-pairs 64] [--cal-pairs N] [--test-items N]
        [--out benchmarks/results/export.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = ROOT / "steerkit" / "resources" / "bigbench" / "truthful_qa"

PARTS = [0.50, 0.15, 0.35]
SEED = 0
LR = 3e-4
BATCH_SIZE = 4  # warm-start examples per optimiser step
TRAIN_PAIRS = 64  # the first 64 train pairs: a short warm start on two CPU cores
TOP_K = 1024
N_BOOTSTRAP = 2000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interval(values: Sequence[float]) -> dict[str, Any]:
    from steerkit.stats import summarize

    s = summarize({"mc2": list(values)}, n_bootstrap=N_BOOTSTRAP, seed=0)["mc2"]
    return {"n": s["n"], "value": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def mc2(terms: Any, items: Sequence[Mapping[str, Any]], mu: float) -> list[float]:
    from steerkit.stats import item_metrics

    return [float(v) for v in item_metrics(items, terms.item_scores(mu))["mc2"]]


def bias_vector(vector: Any, bias: Mapping[int, float]) -> Any:
    """A copy of ``vector`` whose task vector is the dense exported bias (zero off its entries)."""
    dense = torch.zeros_like(vector.task_vector)
    if bias:
        dense[torch.tensor(list(bias), dtype=torch.long)] = torch.tensor(list(bias.values()), dtype=torch.float32)
    config = dataclasses.replace(vector.config, task_vector_sha256="")  # recomputed for the new task vector
    return dataclasses.replace(vector, task_vector=dense, config=config)


@contextlib.contextmanager
def exported_bias_mask() -> Iterator[None]:
    """For the ``with`` block, static scoring keeps the support of the static vector instead of the confidence mask.

    With the dense exported bias as the static vector, the direction is then the bias itself at every position
    (a fixed bias has no mask) and the option terms stay as sparse as the export (``top_k`` entries per token).
    """
    from unittest import mock

    import steerkit.scoring
    from steerkit.svdecode import steering_direction

    def support(
        warm_logits: torch.Tensor,
        *,
        base_logits: torch.Tensor | None = None,
        static_vector: torch.Tensor | None = None,
        alpha: float = 0.1,
        n_tokens: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if static_vector is None:
            return steering_direction(
                warm_logits, base_logits=base_logits, static_vector=None, alpha=alpha, n_tokens=n_tokens
            )
        dtype = torch.float64 if warm_logits.dtype == torch.float64 else torch.float32
        v = static_vector.to(device=warm_logits.device, dtype=dtype)
        keep = (v != 0).expand(warm_logits.shape)
        return v.expand(warm_logits.shape), keep

    with mock.patch.object(steerkit.scoring, "steering_direction", support):
        yield


def composed(warm: Any, tokenizer: Any, cal_p: Sequence[Any], test_i: Sequence[Any]) -> dict[str, Any]:
    """The composed processor against the bias exported from the same composition, on the test items."""
    from steerkit import build
    from steerkit.compose import compose
    from steerkit.export import export_bias
    from steerkit.scoring import collect_option_terms
    from steerkit.stats import paired_bootstrap
    from steerkit.steering import Steering

    half = len(cal_p) // 2
    parts = [
        build(warm, None, chunk, tokenizer=tokenizer, batch_size=8, folds=0) for chunk in (cal_p[:half], cal_p[half:])
    ]
    mus = [float(v.mu_static) / 2 for v in parts]
    vector = compose([Steering(v, "static", mu=mu) for v, mu in zip(parts, mus, strict=True)])
    export = export_bias(vector, "sequence-bias", top_k=TOP_K, force=True)
    terms = collect_option_terms(
        warm, test_i, tokenizer=tokenizer, steering=Steering(vector, mode="static"), batch_size=16
    )
    exported = Steering(bias_vector(vector, export.bias), mode="static", mu=1.0)
    with exported_bias_mask():
        export_terms = collect_option_terms(warm, test_i, tokenizer=tokenizer, steering=exported, batch_size=16)
    values = {
        "warm": mc2(terms, test_i, 0.0),
        "processor": mc2(terms, test_i, 1.0),
        "export": mc2(export_terms, test_i, 1.0),
    }

    def delta(a: str, b: str) -> dict[str, Any]:
        d = paired_bootstrap(values[a], values[b], n_bootstrap=N_BOOTSTRAP, seed=0)
        return {k: d[k] for k in ("difference", "ci_low", "ci_high", "n", "p_le_zero")}

    return {
        "vectors": 2,
        "parts": f"two vectors built on the two halves of the calibration pairs ({half} and {len(cal_p) - half})",
        "mus": mus,
        "settings": {name: interval(v) for name, v in values.items()},
        "delta_export_vs_processor": delta("export", "processor"),
        "delta_processor_vs_warm": delta("processor", "warm"),
        "delta_export_vs_warm": delta("export", "warm"),
        "export": {"entries": len(export.bias), "kept_l1_mass": export.l1_fraction},
    }


def run(train_pairs: int = TRAIN_PAIRS, cal_pairs: int | None = None, test_items: int | None = None) -> dict[str, Any]:
    from steerkit import build, warm_start
    from steerkit.data import split
    from steerkit.export import export_bias
    from steerkit.models import default_model_dir, load_model
    from steerkit.readers import load_items, load_pairs
    from steerkit.scoring import collect_option_terms
    from steerkit.stats import paired_bootstrap
    from steerkit.steering import Steering

    timings: dict[str, float] = {}
    pairs, items = load_pairs(SOURCE), load_items(SOURCE)
    train_p, cal_p, _ = split(pairs, PARTS, seed=SEED)
    _, _, test_i = split(items, PARTS, seed=SEED)
    train_used = train_p[:train_pairs]
    cal_p = cal_p[:cal_pairs]
    test_i = test_i[:test_items]
    log(f"train pairs {len(train_p)} (using {len(train_used)}), calibration {len(cal_p)}, test items {len(test_i)}")

    torch.manual_seed(0)
    model, tokenizer = load_model(default_model_dir())
    t0 = time.perf_counter()
    warm = warm_start(
        model, train_used, tokenizer=tokenizer, method="lora", lr=LR, epochs=1, batch_size=BATCH_SIZE, seed=SEED
    )
    warm.eval()
    timings["warm_start_s"] = time.perf_counter() - t0
    log(f"warm start: {timings['warm_start_s']:.0f} s")

    t0 = time.perf_counter()
    vector = build(warm, None, cal_p, tokenizer=tokenizer, batch_size=8)
    timings["build_s"] = time.perf_counter() - t0
    mu_s = float(vector.mu_static)
    log(f"build: {timings['build_s']:.0f} s, μ_s {mu_s:.4f}")

    t0 = time.perf_counter()
    export = export_bias(vector, "sequence-bias", top_k=TOP_K, force=True)
    timings["export_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    static_terms = collect_option_terms(
        warm, test_i, tokenizer=tokenizer, steering=Steering(vector, mode="static"), batch_size=16
    )
    timings["score_warm_static_s"] = time.perf_counter() - t0
    log(f"warm + static scored: {timings['score_warm_static_s']:.0f} s")

    t0 = time.perf_counter()
    exported = Steering(bias_vector(vector, export.bias), mode="static", mu=1.0)
    with exported_bias_mask():
        export_terms = collect_option_terms(warm, test_i, tokenizer=tokenizer, steering=exported, batch_size=16)
    timings["score_export_s"] = time.perf_counter() - t0
    log(f"export scored: {timings['score_export_s']:.0f} s")

    t0 = time.perf_counter()
    composition = composed(warm, tokenizer, cal_p, test_i)
    timings["composed_s"] = time.perf_counter() - t0
    log(f"composed: {timings['composed_s']:.0f} s")

    values = {
        "warm": mc2(static_terms, test_i, 0.0),
        "static": mc2(static_terms, test_i, mu_s),
        "export": mc2(export_terms, test_i, 1.0),
    }

    def delta(a: str, b: str) -> dict[str, Any]:
        d = paired_bootstrap(values[a], values[b], n_bootstrap=N_BOOTSTRAP, seed=0)
        return {k: d[k] for k in ("difference", "ci_low", "ci_high", "n", "p_le_zero")}

    return {
        "task": "truthfulqa",
        "metric": "mc2",
        "n": len(test_i),
        "settings": {name: interval(v) for name, v in values.items()},
        "delta_export_vs_static": delta("export", "static"),
        "delta_export_vs_warm": delta("export", "warm"),
        "delta_static_vs_warm": delta("static", "warm"),
        "composed": composition,
        "export": {
            "format": export.format,
            "top_k": TOP_K,
            "entries": len(export.bias),
            "nonzero": export.nonzero,
            "kept_l1_mass": export.l1_fraction,
            "mu_static": mu_s,
        },
        "setup": {
            "model": "SmolLM2-135M-Instruct",
            "split": {"parts": PARTS, "seed": SEED},
            "sizes": {
                "train_pairs": len(train_p),
                "calibration_pairs_used": len(cal_p),
                "test_items_used": len(test_i),
            },
            "warm_start": {
                "method": "lora",
                "lr": LR,
                "epochs": 1,
                "batch_size": BATCH_SIZE,
                "train_pairs_used": len(train_used),
                "note": f"the first {len(train_used)} train pairs only, to keep the run short on CPU",
            },
            "alpha": float(vector.config.alpha),
            "export_scoring": "warm logits + the exported bias at every position, no mask",
            "n_bootstrap": N_BOOTSTRAP,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "timings": timings,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "export.json")
    parser.add_argument("--train-pairs", type=int, default=TRAIN_PAIRS, help="the first N train pairs")
    parser.add_argument("--cal-pairs", type=int, default=None, help="the first N calibration pairs (default all)")
    parser.add_argument("--test-items", type=int, default=None, help="the first N test items (default all)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.train_pairs, args.cal_pairs, args.test_items)
    result["timings"]["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    s = result["settings"]
    log(
        "MC2 (n={n}): warm {w:.4f}, static {st:.4f}, export {e:.4f}; Δ export−static {d:+.4f}".format(
            n=result["n"],
            w=s["warm"]["value"],
            st=s["static"]["value"],
            e=s["export"]["value"],
            d=result["delta_export_vs_static"]["difference"],
        )
    )
    log(f"wrote {args.out} in {result['timings']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
