"""Build the real steering artifact the vLLM tests serve: SmolLM2-135M-Instruct, a LoRA warm start, TruthfulQA.

``python tests_vllm/artifact.py OUT`` writes the artifact to ``OUT`` (about a minute on two CPU cores): a LoRA
warm start on 16 TruthfulQA pairs at lr 1e-3 (enough to move the model), calibrated on 8 other pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "steerkit" / "resources" / "bigbench" / "truthful_qa"


def make_artifact(out: Path) -> Path:
    """Warm-start, build and save the vector to ``out``; returns ``out``."""
    import torch

    from steerkit import build, warm_start
    from steerkit.data import split
    from steerkit.models import default_model_dir, load_model
    from steerkit.readers import load_pairs

    torch.manual_seed(0)
    model, tokenizer = load_model(default_model_dir())
    train, calibration = split(load_pairs(DATA), [16, 8], seed=0)
    warm = warm_start(model, train, tokenizer=tokenizer, lr=1e-3, batch_size=4, max_length=64, seed=0)
    vector = build(warm, warm, calibration, tokenizer=tokenizer, batch_size=8)
    vector.save(out)
    return out


if __name__ == "__main__":
    make_artifact(Path(sys.argv[1]))
