"""Helpers of :func:`steerkit.compare.generate_settings`: prompt encoding (one prompt, or a left-padded batch), the
newline stop of first-line answers, and the context-length check made before any generation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerkit.chat import prompt_ids
from steerkit.errors import InvalidOptionError

__all__ = ["NewlineStop", "check_context", "encoded", "encoded_batch", "left_padded"]


def check_context(model: Any, tokenizer: Any, prompts: Sequence[Any], max_new_tokens: Any) -> None:
    """Refuse ``max_new_tokens`` that with the longest prompt exceeds the model's context, before any generation."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    context = getattr(getattr(inner, "config", None), "max_position_embeddings", None)
    if not isinstance(max_new_tokens, int) or not isinstance(context, int) or not prompts:
        return
    longest = max(int(encoded(tokenizer, p)["input_ids"].shape[1]) for p in prompts)
    # a prompt already past the context is the caller's (rotary models extrapolate): only new tokens are refused
    if longest + max_new_tokens > context and (longest <= context or max_new_tokens > context):
        raise InvalidOptionError(
            f"max_new_tokens={max_new_tokens} with a prompt of {longest} tokens exceeds the model's context of "
            f"{context} tokens",
            hint=f"pass max_new_tokens of at most {max(context - longest, 0)} (CLI: --max-new-tokens), or a shorter "
            "prompt",
            got=max_new_tokens,
        )


def encoded(tokenizer: Any, prompt: str | list[dict[str, str]]) -> dict[str, Any]:
    """``input_ids`` / ``attention_mask`` of a text prompt, or of messages through the chat template."""
    import torch

    if isinstance(prompt, str):
        return dict(tokenizer(prompt, return_tensors="pt"))
    ids = torch.tensor([prompt_ids(tokenizer, prompt)])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class NewlineStop:
    """Stops each row of a generation once its new text (after ``n_prompt`` tokens) holds a newline after some
    non-blank text; the batch stops when every row has."""

    def __init__(self, tokenizer: Any, n_prompt: int) -> None:
        self.tokenizer, self.n_prompt = tokenizer, n_prompt

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids:
            text = self.tokenizer.decode(row[self.n_prompt :], skip_special_tokens=True).lstrip("\n")
            done.append("\n" in text)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def encoded_batch(tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]], pad: int) -> dict[str, Any]:
    """Prompts encoded one by one as :func:`encoded` does, then left-padded with ``pad`` into one batch."""
    return left_padded([encoded(tokenizer, p)["input_ids"][0] for p in prompts], pad)


def left_padded(rows: Sequence[Any], pad: int) -> dict[str, Any]:
    """``input_ids`` / ``attention_mask`` of token-id rows (1-D tensors), left-padded with ``pad`` into one batch."""
    import torch

    width = max(int(r.numel()) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.numel() :] = r
        mask[i, width - r.numel() :] = 1
    return {"input_ids": ids, "attention_mask": mask}
