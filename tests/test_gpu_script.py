"""``benchmarks/gpu.py`` on the CPU at tiny shapes: the prepared GPU benchmark runs as written, so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu


def test_the_gpu_benchmark_runs_on_the_cpu_at_tiny_shapes(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--tiny", "--reps", "1", "--new-tokens", "4", "--pairs", "16", "--batches", "1,2"]
    assert gpu.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tiny"] is True and result["dtype"] == "torch.bfloat16" and set(result["shapes"]) == set(gpu.SHAPES)
    for name, row in result["shapes"].items():
        assert row["config"]["vocab_size"] == gpu.TINY_VOCAB[name]
        assert row["build"]["n_calibration_tokens"] == 16 * 16 and row["build"]["build_over_bound"] > 0
        assert [d["batch"] for d in row["decode"]] == [1, 2]
        for decode in row["decode"]:
            assert decode["static_over_plain"] > 0 and decode["dynamic_over_plain"] > 0
            assert decode["dynamic_lag_over_plain"] > 0 and decode["dynamic_tokens_equal_lag"] is True
            assert decode["sync_per_step"] == {"static": None, "dynamic": None, "dynamic_lag": None}  # CUDA only


def test_the_real_shapes_are_the_published_configs() -> None:
    llama, qwen = gpu.SHAPES["llama3-8b"], gpu.SHAPES["qwen2.5-1.5b"]
    assert (llama["vocab_size"], llama["hidden_size"], llama["num_hidden_layers"]) == (128_256, 4096, 32)
    assert (qwen["vocab_size"], qwen["hidden_size"], qwen["num_hidden_layers"]) == (151_936, 1536, 28)
