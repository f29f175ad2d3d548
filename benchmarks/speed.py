"""Speed of steerkit against its targets (docs/results.md#speed), measured side by side
 in one run on the same inputs.

- build: calibration tokens/s of :func:`steerkit.build` (``criterion="nll"``: the calibration pass and a
  cross-validation with no forward pass) vs the two-forward bound (the same batches through the base and the warm
  model, logits at completion positions only, no steering maths);
- decode: tokens/s of plain warm ``generate`` vs static vs dynamic steering, greedy, batch 1 and 8, 64 new
  tokens (``min_new_tokens`` = ``max_new_tokens`` so every mode generates the same number of tokens); dynamic
  is measured both ways ``SteeredModel.generate`` runs it: a second forward of the base model per step (its own KV
  cache, ``shared_forward=False``, skipping the base forward at single-token steps) and base and warm rows in one
  forward (``shared_forward=True``, the default for LoRA, the LoRA update added to the warm half by slicing);
  and, to show what each lever buys, the second forward that never skips and the shared forward through peft's
  own mixed-adapter gather/scatter; all four must generate the same tokens;
- skips: the fraction of steps whose mask keeps one token in every row (the base forwards the second-forward path
  skips) on TruthfulQA questions and the demo task's prompts, batch 1 and 8, with the tokens-equal flag against
  the path that never skips;
- memory: peak RSS of ``build`` vs a plain forward over the same batches (separate processes);
- the artifact's size and load time, and ``steerkit --help`` wall time;
- ``steerkit demo``: wall time of a user's run (fresh process, cached model folder), against its budget
  (about 3 minutes after the install); ``--only demo`` measures just that;
- build's cross-validation criteria (``--only criteria``, not part of a full run): ``split`` (the default),
  ``rank`` and ``nll`` on the demo's 44 calibration pairs, interleaved, with the median ratios of their times.

Every ratio is the median over paired repetitions (each repetition runs all variants back to back).
Writes ``benchmarks/results/speed.json``.

Usage::

    .venv/bin/python benchmarks/speed.py [--reps 5] [--threads 2] [--out benchmarks/results/speed.json]
    .venv/bin/python benchmarks/speed.py --only decode   # decode and skips only, the rest of --out kept
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "steerkit" / "resources" / "bigbench" / "truthful_qa"


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _prompts(tokenizer: Any, n: int) -> list[str]:
    from steerkit.readers import load_items

    items = load_items(DATA)
    return [f"Q: {it['prompt'].rsplit('Q:', 1)[-1].split(chr(10))[0].strip()}\nA:" for it in items[:n]]


#: Free-form prompts (no question, no answer format): the decode ratios are measured on these as well.
FREE_FORM = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "The history of the printing press began",
    "Here are some tips for keeping a vegetable garden healthy through a dry summer:",
    "Dear hiring manager, I am writing to apply for",
    "Explain to a ten-year-old why the sky is blue.",
    "My favourite recipe for a rainy afternoon is",
    "The city council met on Tuesday to discuss",
    "Describe the sound of a forest at night.",
]


def _setup(seed: int = 0) -> tuple[Any, Any, Any, Any, list[dict[str, str]]]:
    """The real model, a LoRA warm-started briefly (so the vector is real), and calibration pairs."""
    from steerkit import build, warm_start
    from steerkit.data import split
    from steerkit.models import default_model_dir, load_model
    from steerkit.readers import load_pairs

    model, tokenizer = load_model(default_model_dir())
    pairs = load_pairs(DATA)
    train, calib = split(pairs, [16, 32], seed=seed)
    warm = warm_start(model, train, tokenizer=tokenizer, method="lora", lr=1e-3, epochs=1, seed=seed)
    vector = build(warm, None, calib[:8], tokenizer=tokenizer)
    return model, warm, tokenizer, vector, calib


def bench_build(warm: Any, tokenizer: Any, pairs: list[dict[str, str]], reps: int) -> dict[str, Any]:
    """build() vs the two-forward bound on the same batches: the calibration pass, with the NLL criterion's
    cross-validation (no forward pass of its own); the ranking criteria's extra passes are ``bench_criteria``'s."""
    from steerkit import build
    from steerkit.data import encode_pair

    batch_size = 8
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"]) for p in pairs]
    n_tokens = sum(len(ids) - start for ids, start in encoded)
    head = warm.get_output_embeddings()
    body = warm.get_base_model().model

    def bound() -> None:
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0)
            mask = torch.zeros_like(ids)
            rows, cols = [], []
            for r, (seq, start) in enumerate(chunk):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
                rows += [r] * (len(seq) - start)
                cols += list(range(start - 1, len(seq) - 1))
            with torch.no_grad():
                for adapter_on in (True, False):
                    if adapter_on:
                        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                    else:
                        with warm.disable_adapter():
                            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                    head(hidden[rows, cols]).float()

    times_build, times_bound = [], []
    for _ in range(reps):
        t = time.perf_counter()
        bound()
        times_bound.append(time.perf_counter() - t)
        t = time.perf_counter()
        build(warm, None, pairs, tokenizer=tokenizer, batch_size=batch_size, criterion="nll")
        times_build.append(time.perf_counter() - t)
    ratios = [b / a for a, b in zip(times_build, times_bound, strict=True)]
    return {
        "n_pairs": len(pairs),
        "n_calibration_tokens": n_tokens,
        "batch_size": batch_size,
        "build_tokens_per_s": n_tokens / _median(times_build),
        "bound_tokens_per_s": n_tokens / _median(times_bound),
        "build_over_bound": _median(ratios),
        "build_over_bound_runs": ratios,
    }


def _no_skip(steered: Any, warm: Any, enc: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    """The dynamic processor's own base forward at every step (the reference path: it never skips)."""
    from transformers import LogitsProcessorList

    proc = steered.processor
    proc.reset(attention_mask=enc["attention_mask"], skip_single_token=False)
    with torch.no_grad():
        out: torch.Tensor = warm.generate(**enc, **kwargs, logits_processor=LogitsProcessorList([proc]))
    return out


def bench_decode(
    warm: Any,
    tokenizer: Any,
    vector: Any,
    batch: int,
    reps: int,
    new_tokens: int,
    *,
    levers: bool = True,
    prompts: list[str] | None = None,
) -> dict[str, Any]:
    """Paired decode times; ``levers`` adds the two paths without a lever (no skipping, peft's gather/scatter).

    ``prompts``: the first ``batch`` of these (default: TruthfulQA questions)."""
    label = "TruthfulQA questions" if prompts is None else "free-form"
    prompts = (prompts or _prompts(tokenizer, batch))[:batch]
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    import steerkit

    static = steerkit.attach(vector, warm, mode="static", tokenizer=tokenizer)
    second = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer, shared_forward=False)
    shared = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer, shared_forward=True)
    mixed = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer, shared_forward=True)
    mixed_forward: Any = mixed._shared
    mixed_forward.slicing = False  # peft's own mixed-adapter batch: what the slicing replaces
    lagging = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer, shared_forward=True)
    lagging_forward: Any = lagging._shared
    lagging_forward.lagging = True  # the shared forward that lets the base half lag at single-token steps
    second_proc: Any = second.processor
    default = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer)
    outputs: dict[str, torch.Tensor] = {}

    def plain() -> None:
        with torch.no_grad():
            warm.generate(**enc, **kwargs)

    def run_static() -> None:
        with torch.no_grad():
            static.generate(**enc, **kwargs)

    def run_second() -> None:
        with torch.no_grad():
            outputs["second"] = second.generate(**enc, **kwargs)

    def run_shared() -> None:
        with torch.no_grad():
            outputs["shared"] = shared.generate(**enc, **kwargs)

    def run_lag() -> None:
        with torch.no_grad():
            outputs["lag"] = lagging.generate(**enc, **kwargs)

    def run_no_skip() -> None:
        outputs["no_skip"] = _no_skip(second, warm, enc, kwargs)

    def run_mixed() -> None:
        with torch.no_grad():
            outputs["mixed"] = mixed.generate(**enc, **kwargs)

    variants = {
        "plain": plain,
        "static": run_static,
        "dynamic_second_forward": run_second,
        "dynamic_shared_forward": run_shared,
        "dynamic_shared_forward_lag": run_lag,
    }
    if levers:
        variants |= {"dynamic_second_forward_no_skip": run_no_skip, "dynamic_shared_forward_peft_mixed": run_mixed}
    plain()  # warm-up
    lagging_proc: Any = lagging.processor
    skipped, lagged, lag_skipped = (
        second_proc.skipped_steps,
        lagging_forward.warm_only_forwards,
        lagging_proc.skipped_steps,
    )
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    reference = outputs["no_skip"] if levers else _no_skip(second, warm, enc, kwargs)
    if not levers:
        run_mixed()
    equal = {
        f"{k}_tokens_equal": bool(torch.equal(outputs[k], reference)) for k in ("second", "shared", "lag", "mixed")
    }
    out: dict[str, Any] = {
        "batch": batch,
        "new_tokens": new_tokens,
        "reps": reps,
        "dynamic_default": "shared_forward" if default.shared_forward else "second_forward",
        "dynamic_outputs_equal": all(equal.values()),  # every dynamic path gave the no-skip path's tokens
        **equal,
        "second_forward_skipped_fraction": (second_proc.skipped_steps - skipped) / (reps * new_tokens),
        "shared_forward_sliced_layers": getattr(shared._shared, "sliced_layers", 0),
        # with the lag: forwards of the warm rows alone, and steps that needed no base logits at all
        "shared_forward_warm_only_fraction": (lagging_forward.warm_only_forwards - lagged) / (reps * new_tokens),
        "shared_forward_skipped_fraction": (lagging_proc.skipped_steps - lag_skipped) / (reps * new_tokens),
        "prompts": label,
    }
    for handle in (static, second, shared, lagging, mixed, default):
        handle.detach()
    for name, ts in times.items():
        out[f"{name}_tokens_per_s"] = batch * new_tokens / _median(ts)
        if name != "plain":
            ratios = [a / b for a, b in zip(ts, times["plain"], strict=True)]
            out[f"{name}_over_plain"] = _median(ratios)
            out[f"{name}_over_plain_runs"] = ratios
    out["dynamic_over_plain"] = out[f"dynamic_{out['dynamic_default']}_over_plain"]
    return out


def bench_skips(warm: Any, tokenizer: Any, vector: Any, new_tokens: int) -> dict[str, Any]:
    """How often the mask keeps one token in every row (the base forwards the second-forward path skips)."""
    import steerkit
    from steerkit.demo import DEMO_TASKS, _demo_data

    _, _, items = _demo_data(DEMO_TASKS["truthfulqa"], 0)
    sets = {"truthfulqa_questions": _prompts(tokenizer, 16), "demo_prompts": [it["prompt"] for it in items[:16]]}
    kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    second = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tokenizer, shared_forward=False)
    tokenizer.padding_side = "left"
    out: dict[str, Any] = {"new_tokens": new_tokens, "alpha": second.alpha}
    for name, prompts in sets.items():
        for batch, n in ((1, 8), (8, 16)):
            proc: Any = second.processor
            before, steps, equal = proc.skipped_steps, 0, True
            for i in range(0, n, batch):
                enc = tokenizer(prompts[i : i + batch], return_tensors="pt", padding=True)
                with torch.no_grad():
                    got = second.generate(**enc, **kwargs)
                equal &= bool(torch.equal(got, _no_skip(second, warm, enc, kwargs)))
                steps += new_tokens
            out[f"{name}_batch{batch}"] = {
                "prompts": n,
                "skipped_fraction": (proc.skipped_steps - before) / steps,
                "tokens_equal": equal,
            }
    second.detach()
    return out


_MEMORY_CHILD = r"""
import json, sys, torch


def hwm_mib():  # this process's own high-water RSS (ru_maxrss would include the parent's, inherited at exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


from steerkit import build
from steerkit.models import load_model
from steerkit.readers import load_pairs
from steerkit.data import encode_pair
from peft import LoraConfig, get_peft_model
what, model_dir, data, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, tok = load_model(model_dir)
pairs = load_pairs(data)[:n]
torch.manual_seed(0)
warm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False))
warm.eval()
before = hwm_mib()
tokens = 0
if what == "build":
    build(warm, None, pairs, tokenizer=tok, batch_size=8)
else:
    for i in range(0, len(pairs), 8):
        enc = [encode_pair(tok, p["prompt"], p["completion"]) for p in pairs[i:i + 8]]
        width = max(len(s) for s, _ in enc)
        ids = torch.zeros((len(enc), width), dtype=torch.long); mask = torch.zeros_like(ids)
        for r, (s, _) in enumerate(enc):
            ids[r, :len(s)] = torch.tensor(s); mask[r, :len(s)] = 1
        with torch.no_grad():
            warm(input_ids=ids, attention_mask=mask)
for p in pairs:
    ids, start = encode_pair(tok, p["prompt"], p["completion"]); tokens += len(ids) - start
print(json.dumps({"peak_rss_mib": hwm_mib(), "rss_before_mib": before, "calibration_tokens": tokens}))
"""


def bench_memory(model_dir: Path, n_pairs: int) -> dict[str, Any]:
    out = {}
    for what in ("forward", "build"):
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, what, str(model_dir), str(DATA), str(n_pairs)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[what] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "n_pairs": n_pairs,
        "calibration_tokens": out["build"]["calibration_tokens"],
        "forward_peak_rss_mib": out["forward"]["peak_rss_mib"],
        "build_peak_rss_mib": out["build"]["peak_rss_mib"],
        "build_over_forward_rss": out["build"]["peak_rss_mib"] / out["forward"]["peak_rss_mib"],
        "forward_rss_increase_mib": out["forward"]["peak_rss_mib"] - out["forward"]["rss_before_mib"],
        "build_rss_increase_mib": out["build"]["peak_rss_mib"] - out["build"]["rss_before_mib"],
    }


def bench_artifact(vector: Any, reps: int) -> dict[str, Any]:
    from steerkit import SteeringVector

    with tempfile.TemporaryDirectory() as tmp:
        path = vector.save(Path(tmp) / "vector")
        sizes = {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            SteeringVector.load(path)
            times.append(time.perf_counter() - t)
    return {"artifact_bytes": sum(sizes.values()), "artifact_files": sizes, "load_seconds": _median(times)}


def bench_help(reps: int) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "steerkit"
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return {"help_seconds": _median(times), "help_seconds_runs": times}


def bench_criteria(reps: int) -> dict[str, Any]:
    """Build's time per cross-validation criterion on the demo's 44 TruthfulQA calibration pairs, after the demo's
    own warm start (LoRA, 150 pairs, seed 0): the three criteria interleaved ``reps`` times in one process, and
    each one's median ratio to the NLL criterion (which adds no forward pass to the calibration pass) and to the
    rank criterion (build's default before ``split``)."""
    from steerkit import build, warm_start
    from steerkit.demo import DEMO_TASKS, _demo_data
    from steerkit.models import default_model_dir, load_model

    task = DEMO_TASKS["truthfulqa"]
    train, calibration, _ = _demo_data(task, 0)
    model, tokenizer = load_model(default_model_dir())
    warm = warm_start(model, train, tokenizer=tokenizer, method="lora", lr=task.lr, seed=0)
    times: dict[str, list[float]] = {"nll": [], "rank": [], "split": []}
    picks: dict[str, str] = {}
    for _ in range(reps):
        for criterion, runs in times.items():
            t = time.perf_counter()
            vector = build(warm, None, calibration, tokenizer=tokenizer, criterion=criterion)
            runs.append(time.perf_counter() - t)
            picks[criterion] = vector.config.validation["recommended"]["setting"]
    ratios = {
        f"{a}_over_{b}": _median([x / y for x, y in zip(times[a], times[b], strict=True)])
        for a, b in (("split", "nll"), ("split", "rank"), ("rank", "nll"))
    }
    return {"n_pairs": len(calibration), "reps": reps, "seconds": times, "picks": picks, **ratios, "target": 2.5}


def bench_demo() -> dict[str, Any]:
    """``steerkit demo --json`` as a user runs it (a fresh process, the cached model folder): wall time, stages.

    Also writes ``benchmarks/results/demo.json``: the demo's ``--json`` data (its metrics and paired Δs).
    """
    exe = Path(sys.executable).parent / "steerkit"
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = subprocess.run(
            [str(exe), "demo", "--out", f"{tmp}/demo", "--json"], capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - t
    demo = json.loads(run.stdout)["data"]
    (HERE / "results" / "demo.json").write_text(json.dumps(demo, indent=1, sort_keys=True) + "\n")
    return {"wall_seconds": seconds, "stages": demo["seconds"], "budget_seconds": 180, "task": demo["task"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--memory-pairs", type=int, default=48)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    parser.add_argument(
        "--only", choices=["demo", "decode", "criteria"], help="measure only this, keep the rest of --out"
    )
    parser.add_argument("--reps-batch8", type=int, default=None, help="repetitions at batch 8 (default --reps)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-tokens", type=int, default=48, help="new tokens per prompt for the skip fractions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only in ("demo", "criteria"):
        kept = json.loads(args.out.read_text()) if args.out.is_file() else {}
        kept[args.only] = bench_demo() if args.only == "demo" else bench_criteria(args.reps)
        args.out.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
        print(json.dumps(kept[args.only], indent=2))
        return
    torch.manual_seed(0)
    from steerkit.models import default_model_dir

    started = time.time()
    _model, warm, tokenizer, vector, calib = _setup()
    if args.only == "decode":
        kept = json.loads(args.out.read_text()) if args.out.is_file() else {}
        kept["decode"] = _decode(warm, tokenizer, vector, args)
        kept["decode_free_form"] = _decode(warm, tokenizer, vector, args, FREE_FORM)
        kept["skips"] = bench_skips(warm, tokenizer, vector, args.skip_tokens)
        kept["decode_command"] = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
        kept["decode_torch_threads"] = torch.get_num_threads()
        kept["decode_machine"] = machine()  # the decode ratios move with the CPU: say which one gave them
        _summarise(kept)
        args.out.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
        print(json.dumps({k: kept[k] for k in _SUMMARY}, indent=2))
        return
    result: dict[str, Any] = {
        "machine": {
            **machine(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "model": "SmolLM2-135M-Instruct (float32, CPU)",
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
    }
    result["build"] = bench_build(warm, tokenizer, calib, args.reps)
    result["decode"] = _decode(warm, tokenizer, vector, args)
    result["decode_free_form"] = _decode(warm, tokenizer, vector, args, FREE_FORM)
    result["skips"] = bench_skips(warm, tokenizer, vector, args.skip_tokens)
    result["memory"] = bench_memory(default_model_dir(), args.memory_pairs)
    result["artifact"] = bench_artifact(vector, args.reps)
    result["cli"] = bench_help(args.reps)
    result["demo"] = bench_demo()
    result["build_over_bound"] = result["build"]["build_over_bound"]
    _summarise(result)
    result["seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: result[k] for k in ("build_over_bound", *_SUMMARY)}, indent=2))


def _decode(
    warm: Any, tokenizer: Any, vector: Any, args: argparse.Namespace, prompts: list[str] | None = None
) -> list[dict[str, Any]]:
    """Batch 1 with every path on TruthfulQA questions; batch 8, and ``prompts`` (free-form) at both, with the paths
    users run (the lever-less ones take long)."""
    reps8 = args.reps_batch8 or args.reps
    return [
        bench_decode(warm, tokenizer, vector, 1, args.reps, args.new_tokens, levers=prompts is None, prompts=prompts),
        bench_decode(warm, tokenizer, vector, 8, reps8, args.new_tokens, levers=False, prompts=prompts),
    ]


_SUMMARY = (
    "static_over_plain",
    "dynamic_over_plain",
    "dynamic_over_plain_batch8",
    "dynamic_second_forward_over_plain",
    "dynamic_shared_forward_over_plain",
)


def _summarise(result: dict[str, Any]) -> None:
    """The headline ratios (batch 1, and the default path at batch 8) at the top level, with the targets."""
    b1, b8 = result["decode"][0], result["decode"][1]
    result["static_over_plain"] = b1["static_over_plain"]
    result["dynamic_over_plain"] = b1["dynamic_over_plain"]  # what attach(mode="dynamic") does by default
    result["dynamic_over_plain_batch8"] = b8["dynamic_over_plain"]
    result["dynamic_default"] = b1["dynamic_default"]
    result["dynamic_second_forward_over_plain"] = b1["dynamic_second_forward_over_plain"]
    result["dynamic_shared_forward_over_plain"] = b1["dynamic_shared_forward_over_plain"]
    result["targets"] = {
        "build_over_bound": ">= 0.9",
        "static_over_plain": "<= 1.02",
        "dynamic_over_plain": "<= 1.3",
        "dynamic_over_plain_batch8": "<= 1.15",
    }


if __name__ == "__main__":
    main()
