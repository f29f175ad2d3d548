"""steerkit on a GPU at the shapes users run: random-initialised bf16 models of real architectures, paired ratios.

Needs no download and no weights: each model is built from a config written below (LLaMA-3-8B's shape, V = 128,256;
Qwen2.5-1.5B's, V = 151,936) with random weights in bfloat16, on the device itself, plus a random LoRA (r 8 on
q_proj and v_proj) and a word-level tokenizer of the same vocabulary. **Speed does not depend on the weights'
values**, so the timings are those of the real models; the steering itself is meaningless here.

Measured per shape, each as a median over paired repetitions in one run (greedy, ``--new-tokens`` new tokens):

- plain PEFT decode tokens/s at batch 1;
- static and dynamic (steerkit's default path) over plain, at each ``--batches`` size;
- build's calibration tokens/s over the two-forward bound (the same batches through the decoder twice);
- peak GPU memory of build over a plain forward of the same batches (CUDA only);
- host syncs per dynamic and static decode step, counted with ``torch.cuda.set_sync_debug_mode`` (CUDA only).

The vLLM plugin is not measured here (the lent GPU machine has no vLLM); ``benchmarks/vllm_speed.py`` is its
benchmark. Writes ``--out`` (default ``benchmarks/results/gpu.json``); ``benchmarks/report.py`` reports it.

Usage::

    python benchmarks/gpu.py                         # one GPU: both shapes, under 8 minutes on an H100/H200
    python benchmarks/gpu.py --device cpu --tiny     # the same code on tiny shapes in seconds (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from machine import machine

HERE = Path(__file__).resolve().parent
#: The real shapes (from the models' published configs) and tiny ones of the same architectures.
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {
        "arch": "llama", "vocab_size": 128_256, "hidden_size": 4096, "intermediate_size": 14_336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500_000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": False,
    },
    "qwen2.5-1.5b": {
        "arch": "qwen2", "vocab_size": 151_936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "rope_theta": 1_000_000.0,
        "max_position_embeddings": 32_768, "tie_word_embeddings": True,
    },
}  # fmt: skip
TINY_VOCAB = {"llama3-8b": 1024, "qwen2.5-1.5b": 1536}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def make_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """A random ``PeftModel`` (LoRA r 8 on q_proj, v_proj) of ``shape`` on ``device``, and a matching tokenizer."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    fields = {k: v for k, v in shape.items() if k != "arch"}
    config = AutoConfig.for_model(shape["arch"], **fields)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: an 8B model never passes through host memory
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    warm = get_peft_model(model, lora).eval()
    vocab = {"<pad>": 0, "</s>": 1, **{f"t{i}": i for i in range(2, shape["vocab_size"])}}  # one word, one id
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<pad>"
    )
    return warm, tokenizer


def texts(rng: torch.Generator, vocab: int, n: int, length: int) -> list[str]:
    ids = torch.randint(2, vocab, (n, length), generator=rng)
    return [" ".join(f"t{i}" for i in row.tolist()) for row in ids]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_decode(warm: Any, tok: Any, vector: Any, *, batch: int, reps: int, new_tokens: int, device: str) -> dict:
    """Static and dynamic over plain PEFT decoding at one batch size, paired per repetition."""
    import steerkit

    prompts = texts(torch.Generator().manual_seed(batch), tok.vocab_size, batch, 32)
    enc = tok(prompts, return_tensors="pt").to(device)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    handles = {mode: steerkit.attach(vector, warm, mode=mode, tokenizer=tok) for mode in ("static", "dynamic")}
    # the shared forward with the lagging base half: whether skipping single-token steps pays for its host sync
    # per step on this device (off by default: it did not on the CPUs measured)
    handles["dynamic_lag"] = steerkit.attach(vector, warm, mode="dynamic", tokenizer=tok)
    shared: Any = handles["dynamic_lag"]._shared
    if shared is not None:
        shared.lagging = True
    outputs: dict[str, torch.Tensor] = {}

    def run(name: str) -> None:
        with torch.no_grad():
            model = warm if name == "plain" else handles[name]
            outputs[name] = model.generate(**enc, **kwargs)

    run("plain")  # warm-up (kernels, caches)
    times: dict[str, list[float]] = {name: [] for name in ("plain", *handles)}
    for _ in range(reps):
        for name in times:
            times[name].append(timed(lambda name=name: run(name), device))
    out: dict[str, Any] = {"batch": batch, "new_tokens": new_tokens, "reps": reps}
    out["plain_tokens_per_s"] = batch * new_tokens / statistics.median(times["plain"])
    for name in handles:
        ratios = [a / b for a, b in zip(times[name], times["plain"], strict=True)]
        out[f"{name}_over_plain"], out[f"{name}_over_plain_runs"] = statistics.median(ratios), ratios
    out["sync_per_step"] = {name: count_syncs(handles[name], enc, device) for name in handles}
    out["dynamic_tokens_equal_lag"] = bool(torch.equal(outputs["dynamic"], outputs["dynamic_lag"]))
    for handle in handles.values():
        handle.detach()
    return out


def count_syncs(handle: Any, enc: Any, device: str, steps: int = 8) -> float | None:
    """Host syncs per decode step that ``torch.cuda.set_sync_debug_mode`` reports (CUDA only)."""
    if not device.startswith("cuda"):
        return None
    kwargs = {"max_new_tokens": steps, "min_new_tokens": steps, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        handle.generate(**enc, **{**kwargs, "max_new_tokens": 1, "min_new_tokens": 1})  # set-up syncs: not counted
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                handle.generate(**enc, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def bench_build(warm: Any, tok: Any, *, n_pairs: int, reps: int, device: str) -> tuple[dict[str, Any], Any]:
    """build() over the two-forward bound on the same batches, and its peak memory over a plain forward."""
    from steerkit import build

    rng = torch.Generator().manual_seed(1)
    prompts, completions = texts(rng, tok.vocab_size, n_pairs, 48), texts(rng, tok.vocab_size, n_pairs, 16)
    pairs = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)]
    batch_size = 8
    enc = [tok(p["prompt"] + " " + p["completion"], return_tensors="pt").to(device) for p in pairs]
    body, head = warm.get_base_model().model, warm.get_output_embeddings()

    def bound() -> None:  # the two decoder passes build needs, the head at the completion positions only
        with torch.no_grad():
            for i in range(0, n_pairs, batch_size):
                ids = torch.cat([e["input_ids"] for e in enc[i : i + batch_size]])
                for on in (True, False):
                    if on:
                        head(body(input_ids=ids).last_hidden_state[:, -17:-1]).float()
                    else:
                        with warm.disable_adapter():
                            head(body(input_ids=ids).last_hidden_state[:, -17:-1]).float()

    vector = build(warm, None, pairs, tokenizer=tok, batch_size=batch_size, folds=0)  # warm-up, and the vector
    t_build, t_bound = [], []
    for _ in range(reps):
        t_bound.append(timed(bound, device))
        t_build.append(timed(lambda: build(warm, None, pairs, tokenizer=tok, batch_size=batch_size, folds=0), device))
    n_tokens = vector.config.calibration["n_tokens"]
    out: dict[str, Any] = {
        "n_pairs": n_pairs,
        "n_calibration_tokens": n_tokens,
        "build_tokens_per_s": n_tokens / statistics.median(t_build),
        "build_over_bound": statistics.median([b / a for a, b in zip(t_build, t_bound, strict=True)]),
    }
    if device.startswith("cuda"):
        peaks = []
        for fn in (bound, lambda: build(warm, None, pairs, tokenizer=tok, batch_size=batch_size, folds=0)):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            peaks.append(torch.cuda.max_memory_allocated() - base)
        out["peak_build_over_forward"] = peaks[1] / peaks[0]
    return out, vector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes of the same architectures (seconds)")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: CUDA is not available here; run it on a GPU, or with --device cpu --tiny", file=sys.stderr)
        return 1
    dtype = torch.bfloat16
    started = time.perf_counter()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "machine": machine(),
        "dtype": str(dtype),
        "tiny": args.tiny,
        "torch": torch.__version__,
        "weights": "random (speed does not depend on their values)",
        "vllm": "not measured here (benchmarks/vllm_speed.py)",
        "shapes": {},
    }
    for name in args.shapes.split(","):
        shape = {**SHAPES[name], **(TINY | {"vocab_size": TINY_VOCAB[name]} if args.tiny else {})}
        warm, tok = make_model(shape, args.device, dtype)
        build_row, vector = bench_build(warm, tok, n_pairs=args.pairs, reps=args.reps, device=args.device)
        decode = [
            bench_decode(
                warm, tok, vector, batch=int(b), reps=args.reps, new_tokens=args.new_tokens, device=args.device
            )
            for b in args.batches.split(",")
        ]
        result["shapes"][name] = {"config": shape, "build": build_row, "decode": decode}
        print(json.dumps({name: result["shapes"][name]}, indent=1), flush=True)
        del warm, vector
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
