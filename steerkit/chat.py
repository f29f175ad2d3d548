"""Conversational records (TRL's formats) and their rendering with the tokenizer's chat template.

A record may be conversational in the two shapes TRL's ``SFTTrainer`` accepts:

- ``{"messages": [{"role", "content"}, ...]}``: every assistant turn becomes one pair in turn, its prompt the
  conversation before it (so a conversation with two assistant turns gives two pairs);
- ``{"prompt": [messages], "completion": [messages]}``: a conversational prompt/completion.

Multiple-choice items may also give their ``prompt`` as messages; each choice is then an assistant reply.

Rendering (:func:`encode_chat`): the prompt tokens are the chat template applied to the prompt messages with
``add_generation_prompt=True``; the completion tokens are what the template adds for the completion messages
(the assistant text and its end-of-turn marker). The warm start's loss and the calibration tokens of
:func:`steerkit.build` are exactly those completion tokens. Roles are ``system``, ``user``, ``assistant`` and
``tool``; a tokenizer without a chat template cannot render conversational records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from steerkit.errors import DataFormatError

__all__ = [
    "encode_chat",
    "fit_length",
    "is_conversation",
    "prompt_ids",
    "template_sha256",
    "turns",
    "validate_messages",
]

ROLES = ("system", "user", "assistant", "tool")
#: A message is cut to ``max_length × CHARS_PER_TOKEN`` characters before it is tokenized (:func:`bounded`): far
#: more characters than ``max_length`` tokens of any real vocabulary span, so the tokens kept do not change.
CHARS_PER_TOKEN = 64
Message = dict[str, str]


def is_conversation(value: Any) -> bool:
    """Whether a prompt or completion is given as a list of messages (not as text)."""
    return isinstance(value, list)


def validate_messages(value: Any, where: str, *, what: str = "messages") -> list[Message]:
    """Check a list of ``{"role", "content"}`` messages and return it with only those keys.

    Raises:
        DataFormatError: Not a non-empty list of messages, an unknown role, or content that is not text.
    """
    if not isinstance(value, list) or not value:
        raise DataFormatError(
            f"{where}: {what!r} must be a non-empty list of messages",
            hint='give [{"role": "user", "content": "..."}, ...]',
        )
    out: list[Message] = []
    for k, message in enumerate(value):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise DataFormatError(
                f"{where}: {what}[{k}] must be an object with a string 'content'",
                hint='each message is {"role": "user" | "assistant" | "system", "content": "text"}',
            )
        role = message.get("role")
        if role not in ROLES:
            raise DataFormatError(
                f"{where}: {what}[{k}] has unknown role {role!r}",
                hint=f"use one of: {', '.join(ROLES)}",
            )
        out.append({"role": str(role), "content": str(message["content"])})
    return out


def turns(messages: Sequence[Message], where: str) -> list[tuple[list[Message], list[Message]]]:
    """``(prompt messages, [assistant message])`` for every assistant turn after some context, in order.

    Raises:
        DataFormatError: The conversation has no assistant turn with a message before it.
    """
    out = [(list(messages[:k]), [dict(m)]) for k, m in enumerate(messages) if m["role"] == "assistant" and k > 0]
    if not out:
        raise DataFormatError(
            f"{where}: the conversation has no assistant turn after a user or system message",
            hint="add the assistant's reply as a message with role 'assistant': it is what the warm start learns",
        )
    return out


def template_sha256(tokenizer: Any) -> str | None:
    """sha256 of the tokenizer's chat template text, or ``None`` when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    text = template if isinstance(template, str) else repr(sorted(dict(template).items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _render(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise DataFormatError(
            f"the tokenizer ({type(tokenizer).__name__}) has no chat template, so conversational records cannot "
            "be rendered",
            hint="use a chat model's tokenizer, or give the records as prompt/completion text",
        )
    rendered = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return [int(i) for i in rendered["input_ids"]]


def prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of a conversation rendered for generation (``add_generation_prompt=True``)."""
    return _render(tokenizer, messages, add_generation_prompt=True)


def encode_chat(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message], *, max_length: int = 512
) -> tuple[list[int], int]:
    """Token ids of a rendered conversation and where its completion starts (as :func:`steerkit.data.encode_pair`).

    Past ``max_length`` the prompt loses tokens from its start; a completion longer than ``max_length - 1`` is cut
    at its end. The work is bounded by ``max_length``, not by the record (see :func:`bounded`).

    Raises:
        DataFormatError: No chat template, or a template that renders the prompt differently once the completion
            follows it (then prompt and completion tokens cannot be told apart).
    """
    prompt, completion = bounded(tokenizer, prompt, completion, max_length)
    head = prompt_ids(tokenizer, prompt)
    full = _render(tokenizer, [*prompt, *completion], add_generation_prompt=False)
    if full[: len(head)] != head or len(full) == len(head):
        raise DataFormatError(
            "the chat template renders the prompt differently when the completion follows it, so the completion "
            "tokens cannot be isolated",
            hint="use a template whose generation prompt is a prefix of the rendered conversation (most are)",
        )
    return fit_length(head, full[len(head) :], max_length)


def bounded(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message], max_length: int
) -> tuple[list[Message], list[Message]]:
    """The part of a conversation that can reach the kept tokens, so one record's work is bounded by ``max_length``.

    - Each message's text is cut to ``max_length × CHARS_PER_TOKEN`` characters before it is tokenized: a prompt
      message keeps its end, a completion message its start.
    - The prompt keeps its last messages once their texts hold ``max_length`` tokens (counted one message at a
      time, from the end), starting at a user or system message so that templates that check the turn order still
      render; what is dropped lies before the tokens ``max_length`` keeps.

    So a conversation of N turns costs O(N · max_length) to encode, not O(N²), and a 16 MiB message costs what
    ``max_length × CHARS_PER_TOKEN`` characters cost.
    """
    limit = max_length * CHARS_PER_TOKEN
    kept: list[Message] = []
    tokens = 0
    for message in reversed(prompt):
        text = message["content"][-limit:]
        kept.append({**message, "content": text})
        tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokens >= max_length and message["role"] in ("user", "system"):
            break
    return kept[::-1], [{**m, "content": m["content"][:limit]} for m in completion]


def fit_length(prompt: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """``(prompt + continuation, start)`` within ``max_length``: the prompt loses tokens from its start, a
    continuation longer than ``max_length - 1`` is cut at its end (one context token is always kept)."""
    if len(continuation) > max_length - 1:
        continuation = continuation[: max(max_length - 1, 0)]
    room = max_length - len(continuation)
    if len(prompt) > room:
        prompt = prompt[len(prompt) - room :]
    return prompt + continuation, len(prompt)
