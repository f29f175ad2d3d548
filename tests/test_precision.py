"""bfloat16 models: build, decode and eval keep the maths in float32 (docs/concepts.md) and agree with float32."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import tiny_llama, tiny_lora, tiny_tokenizer

import steerkit
from steerkit.builder import build
from steerkit.compare import evaluate_settings

WORDS = ["abc", "dog", "cat", "sun", "moon", "tree", "fish", "bird"]
PAIRS = [{"prompt": f"{w}=", "completion": w[::-1] * 2} for w in WORDS]
ITEMS = [{"prompt": f"Q: {w}=", "choices": [w[::-1], w, w[:2]], "label": 0} for w in WORDS]


def run(dtype: torch.dtype) -> dict[str, Any]:
    tok = tiny_tokenizer()
    model = tiny_lora(tiny_llama(sharpness=60)).to(dtype)  # sharp logits: bf16 rounding flips no argmax
    vector = build(model, None, PAIRS, tokenizer=tok)
    ids = tok("abc=", return_tensors="pt")
    out = {}
    for mode in ("static", "dynamic"):
        with steerkit.attach(vector, model, mode=mode, tokenizer=tok) as steered:
            out[mode] = steered.generate(**ids, max_new_tokens=8, do_sample=False)
    scores = evaluate_settings(vector, model, ITEMS, tokenizer=tok)
    return {"vector": vector, "tokens": out, "scores": scores}


def test_bfloat16_agrees_with_float32() -> None:
    full, half = run(torch.float32), run(torch.bfloat16)
    assert half["vector"].task_vector.dtype == torch.float32  # the maths stays in float32
    for mode in ("static", "dynamic"):
        assert torch.equal(full["tokens"][mode], half["tokens"][mode]), mode
    for curvature in ("paper", "exact"):
        for how, value in getattr(full["vector"].config.mu, curvature).items():
            got = getattr(half["vector"].config.mu, curvature)[how]
            assert got == pytest.approx(value, rel=0.1, abs=0.05), (curvature, how)  # stated: 10% relative
    a, b = full["vector"].task_vector, half["vector"].task_vector
    assert float((a - b).norm() / a.norm()) < 0.1  # stated: the static vectors within 10% (L2, relative)
    for setting, result in full["scores"].items():
        assert half["scores"][setting]["accuracy"]["value"] == result["accuracy"]["value"], setting


# --- placement: --dtype and --device (issue 29) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("precision")
    tiny_llama(sharpness=60).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    return root


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_load_model_takes_a_dtype_and_a_device(folder: Any, dtype: Any, expected: torch.dtype) -> None:
    from steerkit.models import load_model

    model, _ = load_model(folder / "model", dtype=dtype, device="cpu")
    assert next(model.parameters()).dtype == expected and next(model.parameters()).device.type == "cpu"
    auto, _ = load_model(folder / "model", dtype="auto", device="auto")  # the checkpoint's own: saved in float32
    assert next(auto.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float16"}, "float16 on the CPU is refused"),
        ({"dtype": "half"}, "unknown dtype 'half'"),
        ({"dtype": torch.int8}, "unsupported dtype torch.int8"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cpu", "device_map": "auto"}, "give device or device_map, not both"),
    ],
)
def test_bad_placement_is_refused_before_anything_loads(kwargs: dict[str, Any], message: str) -> None:
    from steerkit.errors import InvalidOptionError
    from steerkit.models import load_model

    with pytest.raises(InvalidOptionError, match=message):
        load_model("/nonexistent/model", **kwargs)  # refused before the path is even looked at


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    from steerkit.errors import InvalidOptionError
    from steerkit.models import load_model

    with pytest.raises(InvalidOptionError, match="device 'cuda', but CUDA is not available here"):
        load_model("/nonexistent/model", device="cuda")


def test_the_cli_builds_from_a_bfloat16_model_a_float32_artifact(folder: Any, tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from steerkit.vector import SteeringVector
    from steerkit_cli.app import app

    tiny_lora(tiny_llama(sharpness=60)).save_pretrained(tmp_path / "adapter")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    built = {}
    for dtype in ("float32", "bfloat16"):
        args = [str(folder / "model"), str(tmp_path / "adapter"), str(tmp_path / "pairs.jsonl")]
        result = CliRunner().invoke(
            app, ["build", *args, "--out", str(tmp_path / dtype), "--dtype", dtype, "--device", "cpu"]
        )
        assert result.exit_code == 0, result.stderr
        built[dtype] = SteeringVector.load(tmp_path / dtype)
    assert built["bfloat16"].task_vector.dtype == torch.float32  # float32 on disk whatever the model's dtype
    assert built["bfloat16"].mu == pytest.approx(built["float32"].mu, rel=0.1)  # the tolerance of the test above
    refused = CliRunner().invoke(app, ["build", *args, "--out", str(tmp_path / "x"), "--dtype", "float16"])
    assert refused.exit_code == 1 and "float16 on the CPU is refused" in refused.stderr


#: Where steerkit names a device itself, and why: results leave the model's device for the host (terms summed on
#: the CPU, files written), or a fallback for a model without parameters. Nothing else creates a tensor on a fixed
#: device: every other tensor follows the model's logits.
HOST_DEVICE_LINES = {
    "batching.py": 1,  # model_device(): a model without parameters
    "builder.py": 1,  # the task vector, to be saved
    "calibration.py": 4,  # summed contributions gathered on the host
    "distributed.py": 4,  # gloo gathers on the CPU; nccl on the current CUDA device
    "format.py": 2,  # tensor bytes for the file
    "scoring.py": 1,  # option terms kept on the host
    "shared_forward.py": 1,  # an empty cache
    "vllm.py": 1,  # vLLM's own index mapping, read on the host
    "warmstart.py": 1,  # which CUDA RNG to fork
}


def test_no_tensor_is_created_on_a_hard_coded_device() -> None:
    import re
    from pathlib import Path

    pattern = re.compile(r'device="cpu"|torch\.device\("c(pu|uda)"|\.cuda\(\)|\.cpu\(\)|== "cuda"')
    found = {}
    for path in sorted((Path(steerkit.__file__).parent).glob("*.py")):
        if path.name == "models.py":  # --device itself
            continue
        hits = sum(bool(pattern.search(line)) for line in path.read_text().splitlines())
        if hits:
            found[path.name] = hits
    assert found == HOST_DEVICE_LINES
