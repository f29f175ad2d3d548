"""Compatibility of a steering vector with a model and tokenizer (docs/concepts.md), checked before attaching.

- The model's logits width must equal the vector's ``vocab_size`` (else :class:`IncompatibleModelError`).
- Where a tokenizer is given, its sha256 fingerprint must equal the vector's (``strict=False`` warns instead).
- Padded vocabularies (logits width larger than the tokenizer length) are handled explicitly, never by silently
  slicing logits: the rows past the tokenizer length are not tokens, so steering leaves them alone (direction zero,
  never in the confidence mask) and a :class:`PaddedVocabularyWarning` says so.
- A different ``base_model`` name is only a warning (:class:`BaseModelMismatchWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from steerkit.chat import template_sha256
from steerkit.errors import IncompatibleModelError
from steerkit.models import logits_width, tokenizer_fingerprint
from steerkit.vector import SteeringVector

__all__ = [
    "BaseModelMismatchWarning",
    "ChatTemplateMismatchWarning",
    "Compatibility",
    "PaddedVocabularyWarning",
    "TokenizerMismatchWarning",
    "check_compatible",
]


class PaddedVocabularyWarning(UserWarning):
    """The logits have rows past the tokenizer's length; steering leaves those rows unchanged."""


class TokenizerMismatchWarning(UserWarning):
    """The tokenizer differs from the vector's and ``strict=False`` let it through."""


class ChatTemplateMismatchWarning(UserWarning):
    """The vector was calibrated on chat-formatted data and the tokenizer's chat template differs."""


class BaseModelMismatchWarning(UserWarning):
    """The model's name differs from the vector's ``base_model`` (allowed: same vocabulary is what matters)."""


@dataclass(frozen=True)
class Compatibility:
    """What the check found, for the decode and evaluation layers.

    Attributes:
        logits_width: The model's logits width ``V`` (equal to the vector's ``vocab_size``).
        n_tokens: How many leading logits rows are real tokens (the tokenizer length, at most ``V``); steering
            directions are zero and the confidence mask is false for rows ``≥ n_tokens``.
    """

    logits_width: int
    n_tokens: int

    @property
    def padded(self) -> bool:
        """Whether the logits have padded (non-token) rows."""
        return self.n_tokens < self.logits_width


def _model_name(model: Any) -> str | None:
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return str(name) if name else None


def _short(name: str) -> str:
    # A local folder and a Hub id of the same model share their last component ("…/SmolLM2-135M-Instruct").
    return name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()


def check_compatible(
    vector: SteeringVector, model: Any, *, tokenizer: Any | None = None, strict: bool = True
) -> Compatibility:
    """Check that ``vector`` can steer ``model`` (docs/concepts.md#compatibility).

    Args:
        vector: The steering vector.
        model: A transformers causal LM or a peft ``PeftModel`` wrapping one.
        tokenizer: The tokenizer the caller will use; its fingerprint must equal the vector's.
        strict: Refuse a tokenizer mismatch (``False``: warn with :class:`TokenizerMismatchWarning`).

    Returns:
        A :class:`Compatibility` with the logits width and the number of real-token rows.

    Raises:
        IncompatibleModelError: Logits width differs from ``vector.vocab_size``, or (strict) the tokenizer's
            sha256 differs. The message names both values and how to fix it.

    Example:
        >>> check_compatible(vector, model, tokenizer=tokenizer)        # doctest: +SKIP
        Compatibility(logits_width=49152, n_tokens=49152)
    """
    width = logits_width(model)
    if width != vector.vocab_size:
        raise IncompatibleModelError(
            f"the model's logits width is {width} but the steering vector was built for vocab_size {vector.vocab_size}",
            hint="attach the vector to a model with the same vocabulary as its base model "
            f"({vector.config.base_model.get('name_or_path')!r}), or build a new vector for this model",
            expected=vector.vocab_size,
            got=width,
        )
    expected_tok = vector.config.tokenizer or {}
    n_tokens = int(expected_tok.get("vocab_length") or width)
    if tokenizer is not None:
        found = tokenizer_fingerprint(tokenizer)
        want = expected_tok.get("sha256")
        if want and found["sha256"] != want:
            message = (
                f"the tokenizer's sha256 is {found['sha256'][:12]}… ({found['class']}, {found['vocab_length']} "
                f"tokens) but the steering vector expects {want[:12]}… ({expected_tok.get('class')}, "
                f"{expected_tok.get('vocab_length')} tokens)"
            )
            hint = "use the tokenizer of the vector's base model, or pass strict=False if you know they encode alike"
            if strict:
                raise IncompatibleModelError(message, hint=hint, expected=want, got=found["sha256"])
            warnings.warn(f"{message}; continuing because strict=False", TokenizerMismatchWarning, stacklevel=2)
        n_tokens = int(found["vocab_length"])
        _check_chat_template(vector, tokenizer)
    n_tokens = min(n_tokens, width)
    if n_tokens < width:
        warnings.warn(
            f"the model's logits have {width} rows but the tokenizer has {n_tokens} tokens: "
            f"rows {n_tokens}..{width - 1} are padding, so steering leaves them unchanged "
            "(zero direction, never kept by the confidence mask)",
            PaddedVocabularyWarning,
            stacklevel=2,
        )
    want_name = (vector.config.base_model or {}).get("name_or_path")
    got_name = _model_name(model)
    if want_name and got_name and _short(str(want_name)) != _short(got_name):
        warnings.warn(
            f"the model is {got_name!r} but the steering vector was built on {want_name!r}; the vocabularies match, "
            "so it attaches, but its strengths were calibrated for the other model",
            BaseModelMismatchWarning,
            stacklevel=2,
        )
    return Compatibility(logits_width=width, n_tokens=n_tokens)


def _check_chat_template(vector: SteeringVector, tokenizer: Any) -> None:
    want = (vector.config.calibration or {}).get("chat_template_sha256")
    got = template_sha256(tokenizer)
    if want and got != want:
        found = f"{got[:12]}…" if got else "none"
        warnings.warn(
            f"the vector was calibrated on chat-formatted data with chat template {str(want)[:12]}…, but the "
            f"tokenizer's chat template is {found}: prompts will not look like the ones it was fitted on",
            ChatTemplateMismatchWarning,
            stacklevel=3,
        )
