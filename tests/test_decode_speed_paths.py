"""The fast paths of dynamic decoding give exactly the tokens of the reference paths (issue #16).

- LoRA slicing (:func:`steerkit.shared_forward.sliced_lora_forward`): the shared forward adds the LoRA update to
  the warm half by slicing instead of peft's mixed-adapter gather/scatter; same numbers, bit for bit, and peft's
  path wherever slicing would not be what peft computes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_decode import PROMPTS, hand_vector, left_batch, sharp_pair
from tiny import tiny_tokenizer

from steerkit.decode import attach
from steerkit.shared_forward import shared_forward_layers, sliceable


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


def _generate(steered: Any, batch: dict[str, torch.Tensor], **kw: Any) -> Any:
    return steered.generate(**batch, return_dict_in_generate=True, output_scores=True, output_logits=True, **kw)


# --- LoRA slicing in the shared forward -------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beam"])
def test_sliced_shared_forward_equals_peft_mixed_batch_bit_for_bit(peft: Any, tok: Any, kw: dict[str, Any]) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    sliced = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=True)
    mixed = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=True)
    assert mixed._shared is not None and sliced._shared is not None
    mixed._shared.slicing = False
    a = _generate(sliced, batch, max_new_tokens=8, do_sample=False, **kw)
    b = _generate(mixed, batch, max_new_tokens=8, do_sample=False, **kw)
    lora = [m for m in shared_forward_layers(peft) or [] if hasattr(m, "lora_A")]
    assert sliced._shared.sliced_layers == len(lora) > 0 and mixed._shared.sliced_layers == 0
    assert torch.equal(a.sequences, b.sequences)
    for x, y in zip(a.logits + a.scores, b.logits + b.scores, strict=True):
        assert torch.equal(x, y)
    assert all("forward" not in vars(m) for m in lora)  # the per-layer forwards are gone after generate


def test_slicing_steps_aside_where_it_would_not_be_what_peft_computes(peft: Any, tok: Any) -> None:
    layer = next(m for m in shared_forward_layers(peft) or [] if hasattr(m, "lora_A"))
    assert sliceable(layer, "default")
    dropout = torch.nn.Dropout(0.5)
    layer.lora_dropout["default"] = dropout
    dropout.train()
    assert not sliceable(layer, "default")  # random dropout: peft's path
    dropout.eval()
    assert sliceable(layer, "default")
    layer.forward = layer.forward  # someone else's per-instance forward (accelerate hooks do this)
    assert not sliceable(layer, "default")
    del layer.forward
    layer.lora_variant["default"] = object()  # DoRA and the other variants have their own forward
    assert not sliceable(layer, "default")
    del layer.lora_variant["default"]
    assert sliceable(layer, "default")
