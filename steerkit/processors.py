"""The logits processors: :class:`StaticSteeringProcessor` and :class:`DynamicSteeringProcessor`.

Both apply the decode rule (docs/concepts.md) to the scores ``generate`` hands them
 (already processed by the processors
before them, e.g. a repetition penalty: those warm scores are ``z_φ``):

- static: ``ẑ = z + μ_s·(keep ⊙ v)``, ``keep`` the confidence mask of the current scores; one mask and one vector
  add per step, no second forward pass, any model with the same vocabulary;
- dynamic (the paper's SVDecode): at every step the base-model logits for the same rows (the PEFT adapter
  disabled, its own KV cache advanced by the new tokens only, rows reordered when beam search reorders them), or
  the base half of a shared forward (:mod:`steerkit.shared_forward`), then ``ẑ = z_φ + μ̄·δ̂`` with the ``−inf``
  filter on masked tokens by default. With the filter on, a step whose mask keeps at most one token in every row
  can skip the base forward (that token is the next one whatever the base says; the base cache catches up in one
  multi-token forward at the next step that needs it): :meth:`DynamicSteeringProcessor.reset` turns it on per
  ``generate`` call, for greedy decoding and sampling only.

Rows past the tokenizer length in a padded vocabulary are never steered (zero direction, outside the mask).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor

from steerkit._hf import AdapterSwitch, all_ids, cache_arg, first_id, new_cache
from steerkit.checks import check_mu
from steerkit.errors import InvalidOptionError
from steerkit.svdecode import (
    DYNAMIC_BOUND,
    compute_dtype,
    confidence_mask,
    static_step,
    steer,
    steering_direction,
)

__all__ = ["DynamicSteeringProcessor", "StaticSteeringProcessor"]

NEG_INF = float("-inf")


def row_mu(mu: float | Tensor, batch: int) -> float | Tensor:
    """μ for ``batch`` rows: a float as is; a ``[b]`` tensor repeated (interleaved) when generate expanded rows."""
    if not isinstance(mu, Tensor):
        return float(mu)
    if mu.dim() == 0:
        return float(mu)
    rows = mu.shape[0]
    if rows == batch:
        return mu
    if rows > 0 and batch % rows == 0:
        return mu.repeat_interleave(batch // rows)
    raise InvalidOptionError(
        f"mu has {rows} per-row strengths but generate is decoding {batch} rows",
        hint="give one μ per prompt (rows are repeated for num_beams / num_return_sequences) or a single float",
        expected=batch,
        got=rows,
    )


class StaticSteeringProcessor(LogitsProcessor):  # type: ignore[misc]
    """``ẑ = z + μ_s·(keep ⊙ v)`` with ``keep`` from the scores it receives (steerkit's static mode).

    Args:
        vector: The task vector ``v`` ``[V]``.
        mu: Strength μ_s: a float, or a ``[batch]`` tensor (one per prompt; repeated for beams/return sequences).
        alpha: Confidence threshold of the mask.
        n_tokens: Real-token rows (the rest is vocabulary padding and is never steered).
        filter_masked: Also set masked tokens to ``−inf`` (off by default: the static rule has no filter).

    Example:
        >>> proc = StaticSteeringProcessor(vector.task_vector, -0.5)           # doctest: +SKIP
        >>> model.generate(**batch, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    """

    def __init__(
        self,
        vector: Tensor,
        mu: float | Tensor,
        *,
        alpha: float = 0.1,
        n_tokens: int | None = None,
        filter_masked: bool = False,
    ) -> None:
        self.vector = vector.detach().to(torch.float32)
        self.mu = check_mu(mu, scale=float(self.vector.abs().max()) if self.vector.numel() else 0.0)
        self.alpha = alpha
        self.n_tokens = n_tokens
        self.filter_masked = filter_masked
        self._scaled: tuple[tuple[Any, ...], Tensor] | None = None

    def _step(self, mu: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``μ·v`` (zero on padding rows): ``[V]`` for a float μ, kept between steps; ``[batch, V]`` per row."""
        if isinstance(mu, Tensor):
            v = self.vector.to(device=device, dtype=dtype)
            return mu.to(device=device, dtype=dtype)[:, None] * v
        key = (mu, dtype, device)
        if self._scaled is None or self._scaled[0] != key:
            step = mu * self.vector.to(device=device, dtype=dtype)
            if self.n_tokens is not None and self.n_tokens < step.shape[-1]:
                step[self.n_tokens :] = 0.0
            self._scaled = (key, step)
        return self._scaled[1]

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Steer one step's scores ``[batch, V]``: :func:`~steerkit.svdecode.static_step` (``μ·v`` computed once)."""
        mu = row_mu(self.mu, scores.shape[0])
        steered = isinstance(mu, Tensor) or mu != 0.0
        scaled = self._step(mu, compute_dtype(scores), scores.device) if steered else None
        return static_step(scores, scaled, alpha=self.alpha, n_tokens=self.n_tokens, filter_masked=self.filter_masked)


class DynamicSteeringProcessor(LogitsProcessor):  # type: ignore[misc]
    """The paper's SVDecode: δ̂ from the warm scores and the base model's logits for the same rows, every step.

    The base logits come from ``peft_model`` with its adapter disabled (``disable_adapter()``), through the
    processor's own KV cache: the first call runs the whole (left-padded) prompt, later calls only the new
    tokens. Before each step the rows ``generate`` hands over are matched with the rows the cache has seen
    (beam search reorders and duplicates rows): matched rows reorder the cache (``reorder_cache``); a row
    whose history no cached row has triggers a full recompute, as does a new prompt.

    The attention mask of the prompt is the one given to :meth:`reset` (repeated for beams and return
    sequences) or, like ``generate``, inferred from pad tokens when the pad token differs from EOS; generated
    tokens are always attended, as in ``generate``. Position ids follow ``generate``: ``cumsum(mask) − 1``.

    Args:
        peft_model: The warm model, a ``PeftModel``; the base model is the same weights with the adapter off.
        mu: Strength μ̄: a float or a ``[batch]`` tensor.
        alpha: Confidence threshold of the mask.
        n_tokens: Real-token rows (the rest is vocabulary padding and is never steered).
        filter_masked: Set masked tokens to ``−inf`` (the paper's λ = −∞; on by default).
        use_cache: Keep a KV cache for the base model (``False`` recomputes the full base forward every step).
        skip_single_token: Skip the base forward at steps where the filter leaves at most one token in every row
            (off by default; :meth:`reset` overrides it per ``generate`` call). Exact for greedy decoding and
            sampling: the kept token is the only one with non-zero probability whatever the base logits are. Not
            for beam search, whose beam scores add the kept token's processed score. At a skipped step the
            processed score of the kept token is its warm score ``z_φ`` instead of ``z_φ + μ̄·δ̂`` (the same
            log-softmax: 0 there, ``−inf`` elsewhere); that is what ``output_scores=True`` returns for the step.
    """

    def __init__(
        self,
        peft_model: Any,
        mu: float | Tensor,
        *,
        alpha: float = 0.1,
        n_tokens: int | None = None,
        filter_masked: bool = True,
        use_cache: bool = True,
        skip_single_token: bool = False,
    ) -> None:
        self.peft_model = peft_model
        self.mu = check_mu(mu, scale=DYNAMIC_BOUND)
        self.alpha = alpha
        self.n_tokens = n_tokens
        self.filter_masked = filter_masked
        self.use_cache = use_cache
        self.skip_single_token = skip_single_token
        base = peft_model.get_base_model()
        self._base = base
        self._switch = AdapterSwitch(peft_model)
        self._keep_arg = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.cache_arg = cache_arg(base)
        gen = getattr(base, "generation_config", None)
        self.pad_token_id = first_id(getattr(gen, "pad_token_id", None))
        self.eos_token_ids = all_ids(getattr(gen, "eos_token_id", None))
        self.calls = 0  # base forwards run (for tests and diagnostics)
        self.recomputes = 0  # full-prompt forwards among them
        self.reorders = 0  # steps at which the cache rows were reordered (beam search)
        self.shared_base: Tensor | None = None  # base logits of this step from a shared forward (SteeredModel.generate)
        self.shared_steps = 0  # steps served by a shared forward instead of a base forward of its own
        self.skipped_steps = 0  # steps whose mask kept one token per row: no base logits needed
        self.reset()

    def reset(
        self,
        attention_mask: Tensor | None = None,
        *,
        skip_single_token: bool | None = None,
        rows_in_order: bool = False,
        base_may_lag: bool = False,
    ) -> None:
        """Forget the cache; the next call runs its whole input.

        Args:
            attention_mask: The prompt's attention mask ``[b, P]`` (as given to ``generate``), used for the
                prompt part of rows; ``None`` infers it from pad tokens.
            skip_single_token: Skip base forwards at single-token steps until the next reset (``None``: the
                constructor's setting). Only for greedy decoding and sampling (see the class docstring).
            rows_in_order: Until the next reset, each call's rows are the cached rows with tokens appended (one
                ``generate`` call, greedy or sampling): the rows are then not matched against the cache, which
                would cost a host sync per step.
            base_may_lag: A shared forward may leave the base half behind at single-token steps (with the skip and
                ``rows_in_order`` only; :meth:`wants_warm_only`): each shared step then checks its mask (a host
                sync).
        """
        self._in_order = rows_in_order
        self._skip = self.skip_single_token if skip_single_token is None else bool(skip_single_token)
        self._may_lag = base_may_lag and self._skip and self.filter_masked and rows_in_order
        self._cache: Any = None
        self._seen: Tensor | None = None
        self._mask: Tensor | None = None
        self._prompt_len: int | None = None
        self._given_mask = attention_mask
        self.shared_base = None
        self._lag_next = False  # the last step kept one token per row: the next forward may leave the base behind
        self._adopted: tuple[Any, int] | None = None  # a lagging base half handed over by a shared forward
        self._first_len: int | None = None  # the prompt length, from the first step

    # -- base logits ------------------------------------------------------------------------------------

    def receive_base(self, logits: Tensor | None) -> None:
        """Take this step's base logits ``[batch, V]`` from a shared forward (``None`` clears them)."""
        self.shared_base = logits

    # -- a lagging base half (steerkit.shared_forward.Lagging) -----------------------------------------------

    def wants_warm_only(self) -> bool:
        """Whether the next shared forward may run the warm rows alone (the last step kept one token per row)."""
        return self._may_lag and self._lag_next

    def take_base(self, cache: Any, length: int) -> None:
        """Keep a shared forward's base half (after ``length`` tokens) as this processor's base cache."""
        self._adopted = (cache, length)

    def give_base(self) -> Any:
        """Hand the base cache, caught up at the last step, back to the shared forward (and forget it)."""
        cache, self._cache, self._seen, self._mask = self._cache, None, None, None
        return cache

    def _adopt(self, input_ids: Tensor) -> None:
        """Make the adopted base half this processor's cache: it has seen the first ``length`` tokens."""
        assert self._adopted is not None
        cache, length = self._adopted
        self._adopted = None
        self._prompt_len = self._first_len
        prefix = input_ids[:, :length]
        self._cache, self._seen, self._mask = cache, prefix, self._full_mask(prefix)

    def _prompt_mask(self, prompt: Tensor) -> Tensor:
        batch, length = prompt.shape
        given = self._given_mask
        if given is not None and given.dim() == 2 and given.shape[1] == length and batch % given.shape[0] == 0:
            return given.to(device=prompt.device, dtype=torch.long).repeat_interleave(batch // given.shape[0], dim=0)
        ones = torch.ones_like(prompt, dtype=torch.long)
        pad = self.pad_token_id
        if pad is None or pad in self.eos_token_ids or not bool((prompt == pad).any()):
            return ones  # what generate infers in this case
        return (prompt != pad).long()

    def _full_mask(self, input_ids: Tensor) -> Tensor:
        if self._prompt_len is None or self._prompt_len > input_ids.shape[1]:
            self._prompt_len = input_ids.shape[1]
        p = self._prompt_len
        prompt_mask = self._prompt_mask(input_ids[:, :p])
        rest = torch.ones_like(input_ids[:, p:], dtype=torch.long)
        return torch.cat([prompt_mask, rest], dim=1)

    def _forward(self, ids: Tensor, mask: Tensor, cache: Any) -> Tensor:
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -ids.shape[1] :]
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": cache is not None,
        }
        if cache is not None:
            kwargs[self.cache_arg] = cache
        if self._keep_arg:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad(), self._switch.off():
            out = self._base(**kwargs)
        self.calls += 1
        logits: Tensor = out.logits[:, -1, :].float()
        return logits

    def _continues_prompt(self, input_ids: Tensor) -> bool:
        """Whether ``input_ids`` continue the prompt the cache saw (a mid-generation recompute)."""
        p = self._prompt_len
        if self._seen is None or p is None or p > input_ids.shape[1]:
            return False
        same = (input_ids[:, None, :p] == self._seen[None, :, :p]).all(dim=-1)
        return bool(same.any(dim=1).all())

    def _match_rows(self, prefix: Tensor) -> tuple[Tensor | None, bool]:
        """For each row of ``prefix``, a cached row with the same history (``None`` if one has none), and whether
        that is every cached row in its own place."""
        assert self._seen is not None
        if self._in_order and self._seen.shape == prefix.shape:
            return None, True  # one generate call that only appends tokens: no check, no host sync
        if self._seen.shape == prefix.shape and torch.equal(self._seen, prefix):
            return None, True
        same = (prefix[:, None, :] == self._seen[None, :, :]).all(dim=-1)  # [new rows, cached rows]
        if not bool(same.any(dim=1).all()):
            return None, False
        order = same.long().argmax(dim=1)
        identity = order.shape[0] == self._seen.shape[0] and bool(
            (order == torch.arange(order.shape[0], device=order.device)).all()
        )
        return order, identity

    def base_logits(self, input_ids: Tensor) -> Tensor:
        """Base-model logits ``[batch, V]`` (float32) for the next token of every row of ``input_ids``.

        Args:
            input_ids: The rows as ``generate`` hands them to processors ``[batch, length]``.

        Returns:
            The last-position base logits, as a full recompute without cache would give them.
        """
        if self.use_cache and self._seen is not None and self._mask is not None:
            seen = self._seen.shape[1]
            if seen < input_ids.shape[1]:
                order, identity = self._match_rows(input_ids[:, :seen])
                if identity or order is not None:
                    mask = self._mask
                    if order is not None and not identity:
                        self._cache.reorder_cache(order)
                        self.reorders += 1
                        mask = mask.index_select(0, order)
                    new = input_ids[:, seen:]
                    mask = torch.cat([mask, torch.ones_like(new, dtype=torch.long)], dim=1)
                    logits = self._forward(new, mask, self._cache)
                    self._seen, self._mask = input_ids.clone(), mask
                    return logits
        if not self._continues_prompt(input_ids):
            # A new prompt (a new generate call): its length is the prompt length; a mask given to reset()
            # belongs to the first prompt after the reset only.
            if self._seen is not None:
                self._given_mask = None
            self._prompt_len = None
        mask = self._full_mask(input_ids)
        cache = new_cache(self._base) if self.use_cache else None
        logits = self._forward(input_ids, mask, cache)
        self.recomputes += 1
        self._cache, self._seen, self._mask = cache, input_ids.clone(), mask
        return logits

    def single_token_scores(self, scores: Tensor) -> Tensor | None:
        """The filtered scores of a step whose mask keeps at most one token in every row, else ``None``.

        The mask is computed exactly as :func:`~steerkit.svdecode.steering_delta` computes it (from the
        log-softmax of the scores), so it is the mask the full step would use. Kept tokens keep their warm score.
        """
        z = scores.to(compute_dtype(scores))
        keep = confidence_mask(torch.log_softmax(z, dim=-1), alpha=self.alpha)
        if self.n_tokens is not None and self.n_tokens < z.shape[-1]:
            keep[..., self.n_tokens :] = False
        if not bool((keep.sum(dim=-1) <= 1).all()):
            return None
        return z.masked_fill(~keep, NEG_INF)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Steer one step's scores ``[batch, V]`` with the dynamic direction."""
        shared, self.shared_base = self.shared_base, None
        if self._first_len is None:
            self._first_len = input_ids.shape[1]
        if shared is not None and shared.shape[0] == scores.shape[0]:
            base = shared.to(scores.device)  # this step's forward already ran the base rows
            self.shared_steps += 1
        else:
            if self._adopted is not None:
                self._adopt(input_ids)
            if self._skip and self.filter_masked and self._seen is not None:  # the prompt step always runs
                single = self.single_token_scores(scores)
                if single is not None:
                    self.skipped_steps += 1
                    return single
            base = self.base_logits(input_ids).to(scores.device)
            self._lag_next = False  # the base cache is level with the warm rows again
        direction, keep = steering_direction(scores, base_logits=base, alpha=self.alpha, n_tokens=self.n_tokens)
        if shared is not None and self._may_lag:
            self._lag_next = bool((keep.sum(dim=-1) <= 1).all())  # a host sync: only when a lag is possible
        return steer(scores, direction, keep, row_mu(self.mu, scores.shape[0]), filter_masked=self.filter_masked)
