"""Base and warm rows in one forward (PEFT mixed-adapter batches): the paired KV cache and the forward wrapper.

With an unmerged LoRA adapter, dynamic decoding can run each row twice in one batch, ``[warm rows; base rows]``,
with peft's ``adapter_names`` giving the first half the adapter and the second ``__base__``. :class:`SharedForward`
wraps the model's forward for one ``generate`` call: it doubles the batch, returns the warm half to ``generate``
and hands the base half's last logits to the dynamic processor. The paired cache moves each row together with its
base copy, so beam search and ``num_return_sequences`` work.

With :attr:`SharedForward.lagging` on (off by default), greedy decoding and sampling also take the processor's
single-token skip (a *lagging* base half): after a step whose confidence mask kept one token in every row, the next
forward runs the warm rows alone and the processor keeps the base half as its own cache (:func:`split_rows`, views,
no copy). While steps keep one token the base half waits; at the first step that needs base logits the processor
catches it up in one multi-token forward, and the next forward puts it back as the second half (:func:`join_rows`)
and runs shared again. It is off by default because it did not pay where measured (``benchmarks/speed.py``): a
step keeps one token about as often after a single-token step as after any other, so the bet on the next step
loses more than half the time, and each loss costs a forward of the base rows alone, where the shared forward's
base half was nearly free.

Because the two halves are contiguous, a plain LoRA ``Linear`` needs none of peft's per-adapter gather and
scatter: :func:`sliced_lora_forward` adds the low-rank update to the warm half by slicing (the same operations on
the same rows, so the same numbers). Layers where that is not what peft computes (DoRA and other variants, dropout
in training mode, a forward already wrapped by someone else, other layer types) keep peft's mixed-adapter batch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from steerkit._hf import cache_arg
from steerkit.errors import InvalidOptionError


@functools.cache
def paired_cache_class() -> type:
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


def paired_cache(model: Any) -> Any:
    cls = paired_cache_class()
    try:
        return cls(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return cls()


class Lagging(Protocol):
    """What a processor offers a shared forward that may let the base half lag (the dynamic processor)."""

    def wants_warm_only(self) -> bool:
        """Whether the next forward may run the warm rows alone (the last step kept one token in every row)."""
        ...  # pragma: no cover

    def take_base(self, cache: Any, length: int) -> None:
        """Keep ``cache``, the base half after ``length`` tokens, as the processor's own base cache."""
        ...  # pragma: no cover

    def give_base(self) -> Any:
        """The processor's base cache, caught up with the warm rows, handed back (the processor drops it)."""
        ...  # pragma: no cover


def split_rows(cache: Any, rows: int) -> tuple[Any, list[list[str]]]:
    """Cut a paired cache of ``2·rows`` rows in two: ``cache`` keeps the warm half, the base half is returned as a
    plain ``DynamicCache`` (views of the same tensors, no copy), with the per-layer names of the cut tensors."""
    from transformers import DynamicCache

    base = DynamicCache.__new__(DynamicCache)
    vars(base).update(vars(cache))
    base.layers, names = [], []
    for layer in cache.layers:
        twin, cut = copy.copy(layer), []
        for name, value in list(vars(layer).items()):
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == 2 * rows:
                setattr(layer, name, value[:rows])
                setattr(twin, name, value[rows:])
                cut.append(name)
        base.layers.append(twin)
        names.append(cut)
    return base, names


def join_rows(cache: Any, base: Any, names: list[list[str]]) -> None:
    """Undo :func:`split_rows` once both halves have seen the same tokens: ``cache`` holds ``[warm; base]`` again."""
    for layer, twin, cut in zip(cache.layers, base.layers, names, strict=True):
        if layer.get_seq_length() != twin.get_seq_length():  # pragma: no cover - the processor catches up first
            raise RuntimeError("the base half of a shared forward did not catch up with the warm half")
        for name in cut:
            setattr(layer, name, torch.cat([getattr(layer, name), getattr(twin, name)]))


def shared_forward_layers(peft_model: Any) -> list[Any] | None:
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


def sliceable(layer: Any, adapter: str) -> bool:
    """Whether ``layer`` is a plain LoRA ``Linear`` whose mixed-batch update :func:`sliced_lora_forward` reproduces.

    That is peft's own ``lora.Linear.forward`` (not a quantised or custom subclass, no forward wrapped on the
    instance), the adapter without a variant (DoRA, aLoRA, ...), and dropout that is off (eval mode or ``p = 0``).
    """
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # pragma: no cover - peft moved it
        return False
    if type(layer).forward is not Linear.forward or "forward" in vars(layer):
        return False
    if adapter not in layer.lora_A:
        return True  # the layer does not carry this adapter: base output for every row, as peft gives
    if adapter in layer.lora_variant or layer.use_dora.get(adapter, False):
        return False
    dropout = layer.lora_dropout[adapter]
    return not (dropout.training and float(getattr(dropout, "p", 0.0)) > 0.0)


def sliced_lora_forward(layer: Any, adapter: str, rows: list[int]) -> Callable[..., Tensor]:
    """A forward for one LoRA ``Linear`` that adds the update of ``adapter`` to the first ``rows[0]`` rows only.

    For a batch ``[warm rows; base rows]`` this is exactly peft's ``_mixed_batch_forward`` with ``adapter_names =
    [adapter]·n + ["__base__"]·n``, without building index lists and gathering and scattering rows: the base layer
    on every row, then ``result[:n] += lora_B(lora_A(dropout(x[:n]))) · scaling`` in the same dtypes. Any other call
    (``rows[0] == 0``, adapters disabled, extra keyword arguments, another batch size) runs peft's own forward.
    """
    from peft.tuners.lora.layer import Linear

    def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        n = rows[0]
        if not n or kwargs or layer.disable_adapters or x.shape[0] != 2 * n or adapter not in layer.lora_A:
            if n:  # peft's mixed batch (which refuses a batch of another size, as it did before slicing)
                kwargs["adapter_names"] = [adapter] * n + ["__base__"] * n
            return Linear.forward(layer, x, *args, **kwargs)  # type: ignore[no-any-return]
        result: Tensor = layer.base_layer(x, *args)
        lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
        warm = x[:n].to(lora_a.weight.dtype)
        update = lora_b(lora_a(layer.lora_dropout[adapter](warm))) * layer.scaling[adapter]
        result[:n] += update.to(result.dtype)
        return result

    return forward


_BATCH_ARGS = ("input_ids", "attention_mask", "position_ids", "inputs_embeds", "token_type_ids")


class SharedForward:
    """During ``generate``, every forward of the warm rows also runs their base twins in the same batch.

    The model's ``forward`` is wrapped for the duration of the call: batch inputs are doubled to
    ``[warm rows; base rows]``, peft's mixed-adapter batch gives the first half the adapter and the second half
    none, the warm half's logits go back to ``generate`` and the base half's last-position logits to the
    processor, which then needs no forward of its own. The KV cache holds both halves (:func:`paired_cache_class`).
    """

    def __init__(self, peft_model: Any, layers: list[Any], *, slicing: bool = True) -> None:
        self.peft_model = peft_model
        self.model = peft_model.get_base_model()
        self.layers = layers
        self.adapter = peft_model.active_adapter
        self.cache_arg = cache_arg(self.model)
        self.slicing = slicing  # plain LoRA Linear layers add their update by slicing (False: peft's gather/scatter)
        self.lagging = False  # let the base half lag at single-token steps (see the module docstring): measured slower
        self.forwards = 0  # shared forwards run (for tests and diagnostics)
        self.warm_only_forwards = 0  # forwards of the warm rows alone while the base half lagged
        self.sliced_layers = 0  # layers that sliced in the last shared generate (for tests and diagnostics)

    def usable(self, kwargs: dict[str, Any]) -> bool:
        """Whether a ``generate`` call with these arguments can run shared (else the processor's own forward)."""
        if any(kwargs.get(k) is not None for k in ("cache", "past_key_values", "assistant_model")):
            return False
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        if kwargs.get("cache_implementation") or getattr(config, "cache_implementation", None):
            return False
        return not self.peft_model.training

    def _warm_only(self, lag: Lagging, cache: Any, rows: int, cut: list[list[list[str]] | None]) -> bool:
        """Whether this forward runs the warm rows alone: splits the paired cache when the processor asks for it
        and joins it again when the processor has caught the base half up."""
        if cache.get_seq_length() == 0:
            return False  # the prompt's forward always runs both halves
        wanted = lag.wants_warm_only()
        if cut[0] is None and wanted:
            base, cut[0] = split_rows(cache, rows)
            lag.take_base(base, cache.get_seq_length())
        elif cut[0] is not None and not wanted:
            join_rows(cache, lag.give_base(), cut[0])
            cut[0] = None
        return cut[0] is not None

    @contextlib.contextmanager
    def active(
        self, receive_base: Callable[[Tensor | None], None], *, use_cache: bool, lag: Lagging | None = None
    ) -> Iterator[dict[str, Any]]:
        """Wraps the forward and yields the extra ``generate`` kwargs (the paired cache when ``use_cache``).

        Each forward hands the base half's last-position logits to ``receive_base`` (the dynamic processor's
        :meth:`~steerkit.processors.DynamicSteeringProcessor.receive_base`); ``None`` on exit. With ``lag`` (a
        processor skipping single-token steps, for one greedy or sampling ``generate`` call that only appends
        tokens; :class:`~steerkit.decode.SteeredModel` gives it when :attr:`lagging` is on), the base half may lag
        behind the warm rows (see the module docstring).
        """
        names: list[list[str]] = [[]]
        rows_now = [0]
        cut: list[list[list[str]] | None] = [None]  # the tensors split_rows cut while the base half lags
        paired = paired_cache(self.model) if use_cache else None
        sliced = [m for m in self.layers if self.slicing and sliceable(m, self.adapter)]
        mixed = [m for m in self.layers if not any(m is t for t in sliced)]
        self.sliced_layers = len(sliced)

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
            cache = kwargs.get(self.cache_arg)
            if cache is not None and cache is not paired:
                return original(*args, **kwargs)  # another cache's forward: the processor catching the base up
            if lag is not None and paired is not None and self._warm_only(lag, paired, rows, cut):
                self.warm_only_forwards += 1
                return original(*args, **kwargs)  # the warm rows alone: no adapter names, no base logits
            for key in _BATCH_ARGS:
                value = kwargs.get(key)
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows:
                    kwargs[key] = torch.cat([value, value])
            names[0] = [self.adapter] * rows + ["__base__"] * rows
            rows_now[0] = rows
            try:
                out = original(*args, **kwargs)
            finally:
                names[0], rows_now[0] = [], 0
            self.forwards += 1
            receive_base(out.logits[rows:, -1, :].float())
            out.logits = out.logits[:rows]
            for key in ("hidden_states", "attentions"):
                value = getattr(out, key, None)
                if isinstance(value, tuple):
                    setattr(out, key, tuple(t[:rows] if isinstance(t, Tensor) else t for t in value))
            return out

        forward.__wrapped__ = original  # type: ignore[attr-defined]  # generate inspects the signature
        handles = [m.register_forward_pre_hook(inject, with_kwargs=True) for m in mixed]
        for m in sliced:
            m.forward = sliced_lora_forward(m, self.adapter, rows_now)
        self.model.forward = forward
        try:
            yield {} if paired is None else {self.cache_arg: paired}
        finally:
            for handle in handles:
                handle.remove()
            for m in sliced:
                vars(m).pop("forward", None)
            if had_own:
                self.model.forward = original
            else:
                vars(self.model).pop("forward", None)
            receive_base(None)
