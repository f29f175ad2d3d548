"""Tiny random models, tokenizers and vectors for the test suite (no downloads, seconds to build)."""

from __future__ import annotations

import string
from typing import Any

import torch

from steerkit.config import MuStats, SteerConfig
from steerkit.vector import SteeringVector

#: The deadline of every subprocess a test starts: it only catches a hang, never a slow machine (no test may depend
#: on how fast the machine is).
HANG_SECONDS = 3600

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.printable[:95])  # digits, letters, punctuation, space


def tiny_tokenizer(extra: list[str] | None = None) -> Any:
    """A character-level fast tokenizer: 4 specials + 95 printable characters (99 tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS + (extra or []))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(*, vocab_size: int = 99, seed: int = 0, sharpness: float = 6.0, layers: int = 2) -> Any:
    """A random LlamaForCausalLM (hidden 32) whose lm_head is scaled so logits are sharp."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    model.eval()
    return model


def tiny_lora(model: Any, *, seed: int = 1, r: int = 4) -> Any:
    """Wrap ``model`` in a LoRA with non-zero random weights (``init_lora_weights=False``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def mu_stats(value: float = -1.5, *, chosen_by: str = "median/paper") -> MuStats:
    """Plausible μ statistics for vectors made by hand."""
    table = {"mean": value * 1.2, "median": value, "trimmed": value * 1.1, "ratio": value * 0.8}
    return MuStats(
        value=value,
        chosen_by=chosen_by,
        paper=dict(table),
        exact={k: v * 4 for k, v in table.items()},
        fit=value * 2,
    )


def make_vector(
    vocab_size: int = 99,
    *,
    seed: int = 0,
    adapter: dict[str, bytes] | None = None,
    tokenizer: dict[str, Any] | None = None,
) -> SteeringVector:
    """A steering vector with a random task vector and hand-made statistics."""
    g = torch.Generator().manual_seed(seed)
    vector = torch.randn(vocab_size, generator=g, dtype=torch.float32) * 0.01
    config = SteerConfig(
        vocab_size=vocab_size,
        mu=mu_stats(-1.5),
        mu_static=mu_stats(-0.5),
        tokenizer=tokenizer or {"class": "PreTrainedTokenizerFast", "vocab_length": vocab_size, "sha256": "0" * 64},
        base_model={"name_or_path": "tiny-llama", "revision": None},
        calibration={"n_examples": 4, "n_tokens": 40, "data_sha256": "1" * 64},
        adapter=None,
    )
    return SteeringVector(task_vector=vector, config=config, adapter_files=adapter)
