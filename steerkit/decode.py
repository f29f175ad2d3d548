"""Steered decoding: the static and dynamic (SVDecode) logits processors, and :func:`attach` / :class:`Steered`.

Both processors apply DESIGN §1's decode rule to the scores ``generate`` hands them (already processed by the
processors before them, e.g. a repetition penalty: those warm scores are ``z_φ``):

- :class:`StaticSteeringProcessor`: ``ẑ = z + μ_s·(keep ⊙ v)``, ``keep`` the confidence mask of the current scores;
  one mask and one vector add per step, no second forward pass, any model with the same vocabulary.
- :class:`DynamicSteeringProcessor`: the paper's SVDecode. At every step it computes the base-model logits for the
  same rows (the PEFT adapter disabled, its own KV cache advanced by the new tokens only, rows reordered when
  beam search reorders them), then ``ẑ = z_φ + μ̄·δ̂`` with the ``−inf`` filter on masked tokens by default.

:func:`attach` checks compatibility (:mod:`steerkit.compat`), loads the artifact's adapter when dynamic mode needs
it, and returns a :class:`Steered` handle whose :meth:`Steered.detach` leaves the model exactly as it was.

Rows past the tokenizer length in a padded vocabulary are never steered (zero direction, outside the mask).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList

from steerkit.artifact import SteeringVector
from steerkit.compat import Compatibility, check_compatible
from steerkit.errors import AdapterError, InvalidOptionError, SteerkitError
from steerkit.svdecode import confidence_mask, steer, steering_delta

__all__ = [
    "DynamicSteeringProcessor",
    "StaticSteeringProcessor",
    "Steered",
    "attach",
    "steering_direction",
]

Mode = Literal["dynamic", "static"]
MODES: tuple[str, ...] = ("dynamic", "static")


# --- the direction, shared by decoding and option scoring ------------------------------------------------


def steering_direction(
    warm_logits: Tensor,
    *,
    base_logits: Tensor | None = None,
    static_vector: Tensor | None = None,
    alpha: float = 0.1,
    n_tokens: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The steering direction and confidence mask at some contexts: dynamic, static, or none.

    Args:
        warm_logits: Warm logits ``z_φ`` ``[..., V]``.
        base_logits: Base logits ``z_θ`` at the same contexts: the dynamic direction δ̂ (DESIGN §1).
        static_vector: A task vector ``v`` ``[V]``: the static direction ``keep ⊙ v``.
        alpha: Confidence threshold of the mask.
        n_tokens: Rows ``≥ n_tokens`` are vocabulary padding: zero direction, outside the mask.

    Returns:
        ``(direction, keep)``: float32 (float64 for float64 logits) and bool, both ``[..., V]``; the direction is
        zero when neither ``base_logits`` nor ``static_vector`` is given.

    Raises:
        ValueError: Both ``base_logits`` and ``static_vector`` given.
    """
    if base_logits is not None and static_vector is not None:
        raise ValueError("give base_logits (dynamic) or static_vector (static), not both")
    if base_logits is not None:
        direction, keep = steering_delta(warm_logits, base_logits, alpha=alpha)
    else:
        keep = confidence_mask(warm_logits, alpha=alpha)
        dtype = torch.float64 if warm_logits.dtype == torch.float64 else torch.float32
        if static_vector is None:
            direction = torch.zeros(warm_logits.shape, dtype=dtype, device=warm_logits.device)
        else:
            v = static_vector.to(device=warm_logits.device, dtype=dtype)
            direction = torch.where(keep, v, torch.zeros((), dtype=dtype, device=v.device))
    width = warm_logits.shape[-1]
    if n_tokens is not None and n_tokens < width:
        keep = keep.clone()
        keep[..., n_tokens:] = False
        direction = direction.clone()
        direction[..., n_tokens:] = 0.0
    return direction, keep


def _row_mu(mu: float | Tensor, batch: int) -> float | Tensor:
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


def _check_mu(mu: float | Tensor) -> float | Tensor:
    if isinstance(mu, Tensor):
        if mu.dim() > 1:
            raise InvalidOptionError(f"mu must be a float or a 1-D [batch] tensor, got shape {tuple(mu.shape)}")
        if not bool(torch.isfinite(mu).all()):
            raise InvalidOptionError("mu has non-finite entries", hint="give finite strengths")
        return mu.detach().to(torch.float32)
    value = float(mu)
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidOptionError(f"mu must be finite, got {mu!r}", hint="give a finite strength")
    return value


# --- logits processors -----------------------------------------------------------------------------------


class StaticSteeringProcessor(LogitsProcessor):  # type: ignore[misc]
    """``ẑ = z + μ_s·(keep ⊙ v)`` with ``keep`` from the scores it receives (steerkit's static mode).

    Args:
        vector: The task vector ``v`` ``[V]``.
        mu: Strength μ_s: a float, or a ``[batch]`` tensor (one per prompt; repeated for beams/return sequences).
        alpha: Confidence threshold of the mask.
        n_tokens: Real-token rows (the rest is vocabulary padding and is never steered).
        filter_masked: Also set masked tokens to ``−inf`` (off by default: DESIGN §1's static rule has no filter).

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
        self.mu = _check_mu(mu)
        self.alpha = alpha
        self.n_tokens = n_tokens
        self.filter_masked = filter_masked
        self._scaled: tuple[tuple[Any, ...], Tensor] | None = None

    def _step(self, mu: float | Tensor, like: Tensor) -> Tensor:
        """``μ·v`` (zero on padding rows): ``[V]`` for a float μ, kept between steps; ``[batch, V]`` per row."""
        if isinstance(mu, Tensor):
            v = self.vector.to(device=like.device, dtype=like.dtype)
            return mu.to(device=like.device, dtype=like.dtype)[:, None] * v
        key = (mu, like.dtype, like.device)
        if self._scaled is None or self._scaled[0] != key:
            step = mu * self.vector.to(device=like.device, dtype=like.dtype)
            if self.n_tokens is not None and self.n_tokens < step.shape[-1]:
                step[self.n_tokens :] = 0.0
            self._scaled = (key, step)
        return self._scaled[1]

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Steer one step's scores ``[batch, V]``: one mask and one masked add (``μ·v`` is computed once)."""
        keep = confidence_mask(scores, alpha=self.alpha)
        if self.n_tokens is not None and self.n_tokens < scores.shape[-1]:
            keep[..., self.n_tokens :] = False
        z = scores.to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
        mu = _row_mu(self.mu, scores.shape[0])
        if isinstance(mu, Tensor) or mu != 0.0:
            out = z + torch.where(keep, self._step(mu, z), torch.zeros((), dtype=z.dtype, device=z.device))
        else:
            out = z.clone()
        if self.filter_masked:
            out.masked_fill_(~keep, float("-inf"))
        return out


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
    ) -> None:
        self.peft_model = peft_model
        self.mu = _check_mu(mu)
        self.alpha = alpha
        self.n_tokens = n_tokens
        self.filter_masked = filter_masked
        self.use_cache = use_cache
        base = peft_model.get_base_model()
        self._base = base
        self._switch = _AdapterSwitch(peft_model)
        self._keep_arg = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._cache_arg = _cache_arg(base)
        gen = getattr(base, "generation_config", None)
        self.pad_token_id = _first_id(getattr(gen, "pad_token_id", None))
        self.eos_token_ids = _all_ids(getattr(gen, "eos_token_id", None))
        self.calls = 0  # base forwards run (for tests and diagnostics)
        self.recomputes = 0  # full-prompt forwards among them
        self.reorders = 0  # steps at which the cache rows were reordered (beam search)
        self.shared_base: Tensor | None = None  # base logits of this step from a shared forward (Steered.generate)
        self.shared_steps = 0  # steps served by a shared forward instead of a base forward of its own
        self.reset()

    def reset(self, attention_mask: Tensor | None = None) -> None:
        """Forget the cache; the next call runs its whole input.

        Args:
            attention_mask: The prompt's attention mask ``[b, P]`` (as given to ``generate``), used for the
                prompt part of rows; ``None`` infers it from pad tokens.
        """
        self._cache: Any = None
        self._seen: Tensor | None = None
        self._mask: Tensor | None = None
        self._prompt_len: int | None = None
        self._given_mask = attention_mask
        self.shared_base = None

    # -- base logits ------------------------------------------------------------------------------------

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
            kwargs[self._cache_arg] = cache
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

    def _match_rows(self, prefix: Tensor) -> Tensor | None:
        """For each row of ``prefix``, a cached row with the same history (``None`` if one has none)."""
        assert self._seen is not None
        if self._seen.shape == prefix.shape and torch.equal(self._seen, prefix):
            return torch.arange(prefix.shape[0], device=prefix.device)
        same = (prefix[:, None, :] == self._seen[None, :, :]).all(dim=-1)  # [new rows, cached rows]
        if not bool(same.any(dim=1).all()):
            return None
        return same.long().argmax(dim=1)

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
                order = self._match_rows(input_ids[:, :seen])
                if order is not None:
                    identity = order.shape[0] == self._seen.shape[0] and bool(
                        (order == torch.arange(order.shape[0], device=order.device)).all()
                    )
                    mask = self._mask
                    if not identity:
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
        cache = _new_cache(self._base) if self.use_cache else None
        logits = self._forward(input_ids, mask, cache)
        self.recomputes += 1
        self._cache, self._seen, self._mask = cache, input_ids.clone(), mask
        return logits

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Steer one step's scores ``[batch, V]`` with the dynamic direction."""
        shared, self.shared_base = self.shared_base, None
        if shared is not None and shared.shape[0] == scores.shape[0]:
            base = shared.to(scores.device)  # this step's forward already ran the base rows
            self.shared_steps += 1
        else:
            base = self.base_logits(input_ids).to(scores.device)
        direction, keep = steering_direction(scores, base_logits=base, alpha=self.alpha, n_tokens=self.n_tokens)
        return steer(scores, direction, keep, _row_mu(self.mu, scores.shape[0]), filter_masked=self.filter_masked)


class _AdapterSwitch:
    """Turns a PeftModel's adapter off for a ``with`` block: the base model θ from the same weights.

    For layer-injecting methods (LoRA, IA3, ...) it flips the same per-layer flag peft's ``disable_adapter()``
    flips (``_disable_adapters`` of every tuner layer and auxiliary wrapper) and restores each layer's previous
    value; peft's context re-scans the whole model and checks its status first, which costs about 10 ms a step
    on SmolLM2. Prompt-learning methods, and layers without that flag, use ``disable_adapter()`` itself.
    """

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model
        self.layers: list[Any] | None = None
        try:
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper
        except ImportError:  # pragma: no cover - peft moved them
            return
        config = peft_model.peft_config[peft_model.active_adapter]
        if getattr(config, "is_prompt_learning", False) or getattr(config, "is_adaption_prompt", False):
            return
        if getattr(config, "bias", "none") != "none":
            return  # peft warns that disabling is not exact there; let it say so
        layers = [m for m in peft_model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
        if layers and all(isinstance(getattr(m, "_disable_adapters", None), bool) for m in layers):
            self.layers = layers

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        """The adapter is disabled inside the block."""
        if self.layers is None:
            with self.peft_model.disable_adapter():
                yield
            return
        before = [m._disable_adapters for m in self.layers]
        try:
            for m in self.layers:
                m._disable_adapters = True
            yield
        finally:
            for m, flag in zip(self.layers, before, strict=True):
                m._disable_adapters = flag


def _first_id(value: Any) -> int | None:
    ids = _all_ids(value)
    return ids[0] if ids else None


def _all_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, Tensor):
        return [int(v) for v in value.flatten().tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache()


# --- base and warm rows in one forward (PEFT mixed-adapter batches) ---------------------------------------


def _cache_arg(model: Any) -> str:
    """The name ``model.forward`` takes its KV cache under (``cache``; ``past_key_values`` before its rename)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel passes it on
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@functools.cache
def _paired_cache_class() -> type:
    """A ``DynamicCache`` whose rows are ``[warm rows; base rows]`` while ``generate`` sees the warm half only.

    ``generate`` reorders (beam search), repeats and selects cache rows by indices of its own ``n`` rows; each
    index ``i`` is applied to row ``i`` and to its base twin ``n + i``.
    """
    from transformers import DynamicCache

    class PairedCache(DynamicCache):  # type: ignore[misc]
        def _half(self) -> tuple[int, torch.device]:
            for layer in self.layers:
                keys = getattr(layer, "keys", None)
                if isinstance(keys, Tensor) and keys.dim() > 0:
                    return int(keys.shape[0]) // 2, keys.device
            return 0, torch.device("cpu")

        @staticmethod
        def _both(index: Tensor, rows: int) -> Any:
            index = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
            return torch.cat([index, index + rows])

        def reorder_cache(self, beam_idx: Tensor) -> None:
            super().reorder_cache(self._both(beam_idx, beam_idx.shape[0]))

        def batch_select_indices(self, indices: Tensor) -> None:
            super().batch_select_indices(self._both(indices, self._half()[0]))

        def batch_repeat_interleave(self, repeats: int) -> None:
            rows, device = self._half()
            index = torch.arange(rows, device=device).repeat_interleave(repeats)
            super().batch_select_indices(self._both(index, rows))

    return PairedCache


def _paired_cache(model: Any) -> Any:
    cls = _paired_cache_class()
    try:
        return cls(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return cls()


def _shared_forward_layers(peft_model: Any) -> list[Any] | None:
    """The layers that take peft's ``adapter_names`` when the adapter can share a forward with the base, else None.

    Only LoRA (unmerged, without DoRA) runs mixed-adapter batches: each layer adds its low-rank update to the rows
    named after the adapter and nothing to the ``"__base__"`` rows.
    """
    try:
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # pragma: no cover - peft moved them
        return None
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    if str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1] != "LORA" or getattr(config, "use_dora", False):
        return None
    layers = [m for m in peft_model.modules() if isinstance(m, (LoraLayer, AuxiliaryTrainingWrapper))]
    lora = [m for m in layers if isinstance(m, LoraLayer)]
    if not lora or any(getattr(m, "merged", False) for m in lora):
        return None
    if any(type(m).__name__ == "MultiheadAttention" for m in lora):
        return None  # peft refuses mixed batches there
    return layers


_BATCH_ARGS = ("input_ids", "attention_mask", "position_ids", "inputs_embeds", "token_type_ids")


class _SharedForward:
    """During ``generate``, every forward of the warm rows also runs their base twins in the same batch.

    The model's ``forward`` is wrapped for the duration of the call: batch inputs are doubled to
    ``[warm rows; base rows]``, peft's mixed-adapter batch gives the first half the adapter and the second half
    none, the warm half's logits go back to ``generate`` and the base half's last-position logits to the
    processor, which then needs no forward of its own. The KV cache holds both halves (:func:`_paired_cache_class`).
    """

    def __init__(self, peft_model: Any, layers: list[Any]) -> None:
        self.peft_model = peft_model
        self.model = peft_model.get_base_model()
        self.layers = layers
        self.adapter = peft_model.active_adapter
        self.cache_arg = _cache_arg(self.model)
        self.forwards = 0  # shared forwards run (for tests and diagnostics)

    def usable(self, kwargs: dict[str, Any]) -> bool:
        """Whether a ``generate`` call with these arguments can run shared (else the processor's own forward)."""
        if any(kwargs.get(k) is not None for k in ("cache", "past_key_values", "assistant_model")):
            return False
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        if kwargs.get("cache_implementation") or getattr(config, "cache_implementation", None):
            return False
        return not self.peft_model.training

    @contextlib.contextmanager
    def active(self, processor: DynamicSteeringProcessor, *, use_cache: bool) -> Iterator[dict[str, Any]]:
        """Wraps the forward and yields the extra ``generate`` kwargs (the paired cache when ``use_cache``)."""
        names: list[list[str]] = [[]]

        def inject(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            if names[0]:
                kwargs["adapter_names"] = names[0]
            return args, kwargs

        original = self.model.forward
        had_own = "forward" in vars(self.model)

        def forward(*args: Any, **kwargs: Any) -> Any:
            if args:
                kwargs["input_ids"], args = args[0], args[1:]
            first = kwargs.get("input_ids")
            if first is None:
                first = kwargs.get("inputs_embeds")
            if not isinstance(first, Tensor):
                raise InvalidOptionError(
                    "a shared forward needs input_ids or inputs_embeds", hint="attach with shared_forward=False"
                )
            rows = int(first.shape[0])
            for key in _BATCH_ARGS:
                value = kwargs.get(key)
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows:
                    kwargs[key] = torch.cat([value, value])
            names[0] = [self.adapter] * rows + ["__base__"] * rows
            try:
                out = original(*args, **kwargs)
            finally:
                names[0] = []
            self.forwards += 1
            processor.shared_base = out.logits[rows:, -1, :].float()
            out.logits = out.logits[:rows]
            for key in ("hidden_states", "attentions"):
                value = getattr(out, key, None)
                if isinstance(value, tuple):
                    setattr(out, key, tuple(t[:rows] if isinstance(t, Tensor) else t for t in value))
            return out

        forward.__wrapped__ = original  # type: ignore[attr-defined]  # generate inspects the signature
        handles = [m.register_forward_pre_hook(inject, with_kwargs=True) for m in self.layers]
        self.model.forward = forward
        try:
            yield {self.cache_arg: _paired_cache(self.model)} if use_cache else {}
        finally:
            for handle in handles:
                handle.remove()
            if had_own:
                self.model.forward = original
            else:
                vars(self.model).pop("forward", None)
            processor.shared_base = None


# --- attach / detach -------------------------------------------------------------------------------------


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


class _Snapshot:
    """What loading an adapter may change on a plain model, to put back exactly on detach."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.attrs = dict(vars(model))
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.training = {name: m.training for name, m in model.named_modules()}

    def restore(self) -> None:
        model = self.model
        current = vars(model)
        for key in [k for k in current if k not in self.attrs]:
            del current[key]
        for key, value in self.attrs.items():
            if current.get(key) is not value:
                current[key] = value
        for name, p in model.named_parameters():
            if name in self.requires_grad:
                p.requires_grad_(self.requires_grad[name])
        for name, m in model.named_modules():
            if name in self.training:
                m.training = self.training[name]


def _load_adapter(vector: SteeringVector, model: Any) -> tuple[Any, Callable[[], None]]:
    from peft import PeftModel

    files = vector.adapter_files
    if not files:
        raise AdapterError(
            "this steering vector has no adapter, and dynamic mode needs one to compute the warm/base logits",
            hint='attach with mode="static", or pass the PeftModel the vector was built from',
        )
    if "adapter_config.json" not in files:
        raise AdapterError(
            f"the vector's adapter files lack adapter_config.json (found {', '.join(sorted(files))})",
            hint='re-create the artifact with its adapter, or attach with mode="static"',
        )
    snapshot = _Snapshot(model)
    with tempfile.TemporaryDirectory(prefix="steerkit-adapter-") as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            peft_model = PeftModel.from_pretrained(model, tmp, is_trainable=False)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            snapshot.restore()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(
                f"cannot load the vector's adapter onto this model: {first}",
                hint='check that the model is the vector\'s base model, or attach with mode="static"',
            ) from None
    peft_model.eval()

    def undo() -> None:
        tuner = peft_model.base_model
        unload: Callable[[], Any] | None = getattr(tuner, "unload", None)
        if unload is not None and tuner is not model:
            unload()  # removes the injected adapter layers, giving the original modules back
        snapshot.restore()

    return peft_model, undo


class Steered:
    """A model with a steering vector attached: generate with it, hand its processor to a pipeline, detach.

    Created by :func:`attach` (or ``vector.attach(model, ...)``). Also a context manager: leaving the ``with``
    block detaches.

    Attributes:
        vector: The steering vector.
        model: The model ``generate`` runs on (in dynamic mode the ``PeftModel``, possibly the one loaded here).
        mode: ``"dynamic"`` or ``"static"``.
        mu: The strength used (a float or a ``[batch]`` tensor).
        alpha: Confidence threshold of the mask.
        filter_masked: Whether decoding sets masked tokens to ``−inf``.
        compat: What the compatibility check found (logits width, real-token rows).
        processor: The logits processor.
        shared_forward: Dynamic mode runs the base rows in the warm forward's batch (LoRA adapters): one
            forward per step instead of two. :meth:`generate` does this; the bare :meth:`logits_processor`
            (pipelines, your own ``generate``) always runs its own base forward.

    Example:
        >>> with vector.attach(model, tokenizer=tokenizer) as steered:            # doctest: +SKIP
        ...     out = steered.generate(**tokenizer("Q: ...", return_tensors="pt"), max_new_tokens=20)
    """

    def __init__(
        self,
        vector: SteeringVector,
        model: Any,
        *,
        mode: Mode,
        mu: float | Tensor,
        alpha: float,
        filter_masked: bool,
        compat: Compatibility,
        undo: Callable[[], None] | None = None,
        shared_forward: bool | None = None,
    ) -> None:
        self.vector = vector
        self.model = model
        self.mode = mode
        self.mu = mu
        self.alpha = alpha
        self.filter_masked = filter_masked
        self.compat = compat
        self._undo = undo
        self.detached = False
        n_tokens = compat.n_tokens if compat.padded else None
        self.processor: StaticSteeringProcessor | DynamicSteeringProcessor
        if mode == "static":
            self.processor = StaticSteeringProcessor(
                self.static_vector, mu, alpha=alpha, n_tokens=n_tokens, filter_masked=filter_masked
            )
        else:
            self.processor = DynamicSteeringProcessor(
                model, mu, alpha=alpha, n_tokens=n_tokens, filter_masked=filter_masked
            )
        self._shared: _SharedForward | None = None
        if mode == "dynamic" and shared_forward is not False:
            layers = _shared_forward_layers(model)
            if layers is not None:
                self._shared = _SharedForward(model, layers)
            elif shared_forward:
                raise InvalidOptionError(
                    "shared_forward needs a LoRA adapter (unmerged, without DoRA): only LoRA runs base and warm "
                    "rows in one batch",
                    hint="leave shared_forward unset (None) to use it where the adapter allows",
                    got=type(model.peft_config[model.active_adapter]).__name__,
                )
        elif mode == "static" and shared_forward:
            raise InvalidOptionError(
                "shared_forward is a dynamic-mode option: static mode runs no base forward", got=mode
            )

    @property
    def shared_forward(self) -> bool:
        """Whether :meth:`generate` runs base and warm rows in one forward (dynamic mode, LoRA adapter)."""
        return self._shared is not None

    @property
    def static_vector(self) -> Tensor:
        """The task vector ``v`` float32 ``[V]``, zero on padded vocabulary rows."""
        v = self.vector.task_vector.detach().to(torch.float32).clone()
        if self.compat.padded:
            v[self.compat.n_tokens :] = 0.0
        return v

    def _check_attached(self) -> None:
        if self.detached:
            raise SteerkitError(
                "this steering handle was detached", hint="attach the vector again: vector.attach(model, ...)"
            )

    @contextlib.contextmanager
    def base_context(self) -> Iterator[Any]:
        """A context in which ``self.model`` computes base logits (adapter disabled); yields the model to call."""
        self._check_attached()
        if self.mode != "dynamic":
            raise InvalidOptionError("base logits are only needed in dynamic mode", got=self.mode)
        switch = self.processor._switch if isinstance(self.processor, DynamicSteeringProcessor) else None
        with switch.off() if switch is not None else self.model.disable_adapter():
            yield self.model.get_base_model()

    def logits_processor(self) -> LogitsProcessorList:
        """The steering processor in a fresh ``LogitsProcessorList`` for your own ``generate`` or pipeline.

        Its state is reset: one processor serves one ``generate`` call at a time. Pass the prompt's
        ``attention_mask`` to ``generate`` as usual; the dynamic processor infers the prompt mask from pad tokens.
        """
        self._check_attached()
        if isinstance(self.processor, DynamicSteeringProcessor):
            self.processor.reset()
        return LogitsProcessorList([self.processor])

    def generate(self, inputs: Tensor | None = None, **kwargs: Any) -> Any:
        """``model.generate`` with the steering processor appended to any ``logits_processor`` you pass.

        Args:
            inputs: Passed to ``generate`` as its first argument (usually ``input_ids``).
            **kwargs: Everything ``generate`` takes (``input_ids``, ``attention_mask``, ``max_new_tokens``,
                ``num_beams``, ``do_sample``, ``logits_processor``, ...).

        Returns:
            Whatever ``model.generate`` returns.
        """
        self._check_attached()
        processors = LogitsProcessorList(list(kwargs.pop("logits_processor", None) or []))
        processors.append(self.processor)
        args = () if inputs is None else (inputs,)
        if not isinstance(self.processor, DynamicSteeringProcessor):
            return self.model.generate(*args, logits_processor=processors, **kwargs)
        self.processor.reset(attention_mask=kwargs.get("attention_mask"))
        if self._shared is None or not self._shared.usable(kwargs):
            return self.model.generate(*args, logits_processor=processors, **kwargs)
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        use_cache = kwargs.get("use_cache", getattr(config, "use_cache", True)) is not False
        with self._shared.active(self.processor, use_cache=use_cache) as extra:
            return self.model.generate(*args, logits_processor=processors, **kwargs, **extra)

    def detach(self) -> None:
        """Leave the model exactly as before :func:`attach` (unloads an adapter that attach loaded). Idempotent."""
        if self.detached:
            return
        self.detached = True
        if isinstance(self.processor, DynamicSteeringProcessor):
            self.processor.reset()
        if self._undo is not None:
            self._undo()
            self._undo = None

    def __enter__(self) -> Steered:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        mu = self.mu if isinstance(self.mu, float) else f"tensor{tuple(self.mu.shape)}"
        state = ", detached" if self.detached else ""
        return f"Steered(mode={self.mode!r}, mu={mu}, alpha={self.alpha}, filter_masked={self.filter_masked}{state})"


def attach(
    vector: SteeringVector,
    model: Any,
    *,
    mode: Mode = "dynamic",
    mu: float | Tensor | None = None,
    tokenizer: Any | None = None,
    strict: bool = True,
    alpha: float | None = None,
    filter_masked: bool | None = None,
    shared_forward: bool | None = None,
) -> Steered:
    """Attach a steering vector to a model for steered ``generate`` (also ``vector.attach(model, ...)``).

    Args:
        vector: The steering vector.
        model: A transformers causal LM, or a ``PeftModel``. Dynamic mode uses a ``PeftModel`` as given, and
            loads the vector's adapter onto a plain model (undone by :meth:`Steered.detach`).
        mode: ``"dynamic"`` (the paper's SVDecode: a base forward per step) or ``"static"`` (the stored task
            vector: no second forward, any model with this vocabulary).
        mu: Strength: a float or a ``[batch]`` tensor; default ``vector.mu`` (dynamic) / ``vector.mu_static``.
        tokenizer: Checked against the vector's tokenizer fingerprint.
        strict: Refuse a tokenizer mismatch (``False`` warns).
        alpha: Confidence threshold; default the vector's ``alpha``.
        filter_masked: Set masked tokens to ``−inf``; default on in dynamic mode (the paper's λ = −∞) and off in
            static mode (DESIGN §1's static rule).
        shared_forward: Dynamic mode only: run the base rows in the same forward as the warm rows (peft's
            mixed-adapter batch) inside :meth:`Steered.generate`. ``None`` (default) does so when the adapter
            allows it (LoRA, unmerged, without DoRA) and ``generate`` gets no cache of its own; ``False`` always
            runs a second forward; ``True`` raises when the adapter does not allow it.

    Returns:
        A :class:`Steered` handle.

    Raises:
        InvalidOptionError: Unknown ``mode``, a bad ``mu``, or ``shared_forward=True`` with an adapter that cannot
            share a forward with the base.
        IncompatibleModelError: Logits width or tokenizer differ (see :func:`steerkit.compat.check_compatible`).
        AdapterError: Dynamic mode on a plain model with a vector that has no adapter.

    Example:
        >>> steered = vector.attach(model, mode="static", tokenizer=tokenizer)    # doctest: +SKIP
        >>> steered.generate(input_ids=ids, max_new_tokens=20)                    # doctest: +SKIP
        >>> steered.detach()                                                      # doctest: +SKIP
    """
    if mode not in MODES:
        raise InvalidOptionError(
            f"unknown steering mode {mode!r}", hint="use mode='dynamic' or mode='static'", got=mode
        )
    compat = check_compatible(vector, model, tokenizer=tokenizer, strict=strict)
    strength = _check_mu(mu if mu is not None else (vector.mu if mode == "dynamic" else vector.mu_static))
    a = float(vector.config.alpha if alpha is None else alpha)
    if not 0.0 <= a <= 1.0:
        raise InvalidOptionError(f"alpha must be in [0, 1], got {a!r}", hint="the default is the vector's alpha")
    fm = (mode == "dynamic") if filter_masked is None else bool(filter_masked)
    undo = None
    target = model
    if mode == "dynamic" and not _is_peft(model):
        target, undo = _load_adapter(vector, model)
    try:
        return Steered(
            vector,
            target,
            mode=mode,
            mu=strength,
            alpha=a,
            filter_masked=fm,
            compat=compat,
            undo=undo,
            shared_forward=shared_forward,
        )
    except SteerkitError:
        if undo is not None:
            undo()
        raise
