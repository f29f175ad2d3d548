"""Compatibility checks before attaching (steerkit.compatibility): logits width, tokenizer, padded
vocabularies, base-model name."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
import torch
from test_decode import PROMPTS, hand_vector, left_batch, sharp_pair
from tiny import tiny_llama, tiny_lora, tiny_tokenizer

from steerkit.compatibility import (
    BaseModelMismatchWarning,
    PaddedVocabularyWarning,
    TokenizerMismatchWarning,
    check_compatible,
)
from steerkit.decode import attach
from steerkit.errors import IncompatibleModelError
from steerkit.models import tokenizer_fingerprint
from steerkit.svdecode import steering_direction


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


def test_matching_model_passes_quietly(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat = check_compatible(vector, peft, tokenizer=tok)
    assert compat.logits_width == 99 and compat.n_tokens == 99 and not compat.padded


def test_other_base_model_name_only_warns(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    renamed = dataclasses.replace(
        vector, config=dataclasses.replace(vector.config, base_model={"name_or_path": "org/other-model"})
    )
    peft.config.name_or_path = "/models/tiny-llama"
    with pytest.warns(BaseModelMismatchWarning, match="'org/other-model'"):
        check_compatible(renamed, peft, tokenizer=tok)
    same = dataclasses.replace(
        vector, config=dataclasses.replace(vector.config, base_model={"name_or_path": "someone/tiny-llama"})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a local folder and a Hub id of the same model: no warning
        check_compatible(same, peft, tokenizer=tok)


def test_other_logits_width_is_refused_naming_both(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    other = tiny_llama(vocab_size=120)
    with pytest.raises(IncompatibleModelError) as err:
        attach(vector, other, mode="static")
    assert "logits width is 120" in str(err.value) and "vocab_size 99" in str(err.value)
    assert err.value.expected == 99 and err.value.got == 120 and err.value.hint


def test_other_tokenizer_strict_raises_and_lenient_warns(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    other = tiny_tokenizer(extra=["<x>"])
    want = vector.config.tokenizer["sha256"]
    got = tokenizer_fingerprint(other)["sha256"]
    with pytest.raises(IncompatibleModelError) as err:
        attach(vector, peft, mode="static", tokenizer=other)
    assert want[:12] in str(err.value) and got[:12] in str(err.value) and "strict=False" in str(err.value)
    with pytest.warns(TokenizerMismatchWarning, match=got[:12]):
        steered = attach(vector, peft, mode="static", tokenizer=other, strict=False)
    assert steered.mode == "static"


def test_padded_vocabulary_rows_are_never_steered(tok: Any) -> None:
    peft_model = tiny_lora(tiny_llama(vocab_size=104, sharpness=20))
    vector = hand_vector(peft_model, tok)  # tokenizer has 99 tokens, logits 104 wide
    assert vector.vocab_size == 104 and vector.config.tokenizer["vocab_length"] == 99
    with pytest.warns(PaddedVocabularyWarning, match="rows 99..103 are padding"):
        compat = check_compatible(vector, peft_model, tokenizer=tok)
    assert compat.n_tokens == 99 and compat.padded
    with pytest.warns(PaddedVocabularyWarning):
        steered = attach(vector, peft_model, mode="static", mu=-5.0, tokenizer=tok)
    assert torch.equal(steered.static_vector[99:], torch.zeros(5))
    scores = torch.randn(2, 104)
    scores[:, 100] = 30.0  # a padded row the model likes: must be left exactly as it is
    out = steered.processor(torch.zeros(2, 1, dtype=torch.long), scores)
    assert torch.equal(out[:, 99:], scores[:, 99:])
    direction, keep = steering_direction(scores, base_logits=torch.randn(2, 104), n_tokens=99)
    assert not bool(keep[:, 99:].any()) and bool((direction[:, 99:] == 0).all())
    with pytest.warns(PaddedVocabularyWarning):
        dyn = attach(vector, peft_model, mode="dynamic", mu=-5.0, tokenizer=tok)
    batch = left_batch(tok, PROMPTS)
    out = dyn.generate(**batch, max_new_tokens=5, do_sample=False)
    assert bool((out < 99).all())  # padded rows are filtered (never kept), so never generated
