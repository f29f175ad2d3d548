"""Shared fixtures: tiny random models and tokenizers, and the real SmolLM2 model folder for `slow` tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def base_model() -> Any:
    from tiny import tiny_llama

    return tiny_llama()


@pytest.fixture
def lora_model() -> Any:
    """A tiny Llama wrapped in a non-trivial LoRA (a fresh one per test: tests may mutate it)."""
    from tiny import tiny_llama, tiny_lora

    return tiny_lora(tiny_llama())


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a model folder (cached under $STEERKIT_HOME, dequantised once)."""
    from steerkit.models import default_model_dir

    try:
        return default_model_dir()
    except Exception as exc:  # the package is installed by the Makefile; say so if it is missing
        pytest.fail(f"SmolLM2 model unavailable: {exc}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The BIG-bench data (TruthfulQA, Social-IQa) bundled in ``steerkit/resources`` (``data_dir / "bigbench"``)."""
    from steerkit.demo import RESOURCES

    assert (RESOURCES / "bigbench" / "truthful_qa" / "questions.json").is_file()
    return RESOURCES
