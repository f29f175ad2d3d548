"""Token-level criteria for build's cross-validation, from pairs alone (issue 27): do they find static's gain?

For each SmolLM2 configuration of ``benchmarks/results/reproduce.json``: the warm start (from ``--adapter-cache``,
as ``reproduce.py`` left it), ``build(criterion="nll")`` with its cross-validation inputs captured (the calibration
terms, token units and keys), then the same 5-fold picker under three held-out measures per token:

- ``nll``: the gold token's log-probability (build's criterion before; a check: its picks equal reproduce's);
- ``acc``: whether the gold token is the steered argmax (teacher-forced greedy accuracy);
- ``margin``: the gold logit's margin over the best other token, clipped to ±5.

The test Δ of each pick is looked up in ``reproduce.json``, where every setting was scored on the test split; no
test item is read by any choice. Writes ``benchmarks/results/criteria.json``. Usage::

    .venv/bin/python benchmarks/criteria.py    # about 7 minutes with the adapters cached
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, "benchmarks")
import reproduce as r
import torch

import steerkit.builder as bd
import steerkit.crossval as cv
from steerkit import build
from steerkit.gate import recommend

torch.set_num_threads(2)
RESULTS = Path(__file__).resolve().parent / "results"
res = json.loads((RESULTS / "reproduce.json").read_text())
rows = [x for x in res["rows"] if x.get("model", "SmolLM2").startswith("SmolLM2")]
HEAD = {"truthfulqa": "mc2", "social_iqa": "accuracy"}
captured = {}
orig = cv.cross_validate_pairs


def spy(terms, token_unit, keys, **kw):
    captured.update(terms=terms, token_unit=token_unit, keys=keys, base=kw.get("base_logprob"))
    return orig(terms, token_unit, keys, **kw)


bd.cross_validate_pairs = spy


def steered_max(t, mu):
    s = t.logits + mu * t.delta
    top = torch.full((t.n_tokens,), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, t.token, s, reduce="amax", include_self=True
    )
    return top


def measures(t, mu):
    lp = t.logprobs(mu)
    gold = t.gold_logit + mu * t._gold_delta()
    top = steered_max(t, mu)
    acc = (t.gold_kept & (gold >= top - 1e-12)).double()
    # margin of gold over best other kept entry
    s = t.logits + mu * t.delta
    other = s.masked_fill(t.index == t.gold[t.token], float("-inf"))
    best_other = torch.full((t.n_tokens,), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, t.token, other, reduce="amax", include_self=True
    )
    best_other = torch.maximum(best_other, t.rest_lse - 0.0)  # crude: rest as one competitor
    margin = (gold - best_other).clamp(-5, 5)
    return {"nll": lp, "acc": acc, "margin": margin}


def per_unit(v, unit, n):
    return cv._per_unit(v, unit, n)


def picks(terms, unit, keys, folds=5):
    n = len(keys)
    width = int(terms.index.max()) + 1
    fold = torch.tensor(cv.folds_of(keys, folds, seed=0))
    tf = fold[unit]
    vals = {}
    for k in range(folds):
        tr, held = terms.subset(tf != k), tf == k
        te = terms.subset(held)
        dyn = cv.fit_strengths(tr)
        v = cv._mean_direction(tr, width)
        sta = cv.fit_strengths(tr.with_direction(v))
        cands = {"warm": (te, 0.0)}
        for mode, stats, ht in (("static", sta, te.with_direction(v)), ("dynamic", dyn, te)):
            for rule in cv.RULES:
                cands[f"{mode}/{rule}"] = (ht, stats.select(rule))
        for name, (ht, mu) in cands.items():
            for m, x in measures(ht, mu).items():
                vals.setdefault(m, {}).setdefault(name, torch.zeros(terms.n_tokens, dtype=torch.float64))[held] = x
    mu, mus = cv.fit_strengths(terms), cv._static_strengths(terms)
    strengths = {f"static/{r_}": mus.select(r_) for r_ in cv.RULES} | {
        f"dynamic/{r_}": mu.select(r_) for r_ in cv.RULES
    }
    out = {}
    for m, d in vals.items():
        pu = {name: per_unit(x, unit, n) for name, x in d.items()}
        rec = recommend(
            pu, strengths, base=None, meta={"measure": m, "unit": "example", "folds": folds, "seed": 0, "n": n}
        )
        out[m] = rec["recommended"]["setting"]
    return out


def test_delta(task, method, label, setting):
    if setting == "warm":
        return (0.0, 0.0, 0.0)
    mode, _, agg = setting.partition("/")
    row = next(
        (
            x
            for x in rows
            if x["task"] == task
            and x["peft_method"] == method
            and x["lr_label"] == label
            and x["metric"] == HEAD[task]
            and x["mode"] == mode
            and x["aggregator"] == agg
        ),
        None,
    )
    return None if row is None else (row["delta_vs_warm"], row["delta_ci_low"], row["delta_ci_high"])


out = {}
for task in ("truthfulqa", "social_iqa"):
    data = r.load_task(task)
    cfgs = sorted({(x["peft_method"], x["lr_label"], x["lr"]) for x in rows if x["task"] == task})
    for method, label, lr in cfgs:
        t0 = time.time()
        warm, tok, _ = r.train(method, lr, data, cache=Path(".cache/adapters"))
        build(warm, None, data["cal_pairs"], tokenizer=tok, criterion="nll")
        p = picks(captured["terms"], captured["token_unit"], captured["keys"])
        res_ = {m: (s, test_delta(task, method, label, s)) for m, s in p.items()}
        out[f"{task}/{method}/{label}"] = res_
        print(
            task,
            method,
            label,
            round(time.time() - t0),
            {m: (s, d and [round(100 * z, 1) for z in d]) for m, (s, d) in res_.items()},
            flush=True,
        )
        (RESULTS / "criteria.json").write_text(json.dumps(out, indent=1))
