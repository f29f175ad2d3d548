"""Steered decoding: :func:`attach` and the :class:`SteeredModel` handle it returns.

:func:`attach` turns its arguments into one :class:`~steerkit.steering.Steering` spec (or takes one), checks
compatibility (:mod:`steerkit.compatibility`), loads the artifact's adapter onto a plain model
(:mod:`steerkit.adapters`), builds the logits processor (:mod:`steerkit.processors`) and, for a LoRA adapter, the
shared forward that runs base and warm rows in one batch (:mod:`steerkit.shared_forward`).
:meth:`SteeredModel.detach` leaves the model exactly as it was. ``Steered`` is the handle's old name, kept as a
deprecated alias for one release.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor
from transformers import LogitsProcessorList

from steerkit._hf import is_peft
from steerkit.adapters import load_adapter
from steerkit.chat import prompt_ids, validate_messages
from steerkit.compatibility import Compatibility, check_compatible
from steerkit.compose import composition_spec
from steerkit.errors import InvalidOptionError, SteerkitError
from steerkit.processors import DynamicSteeringProcessor, StaticSteeringProcessor
from steerkit.shared_forward import SharedForward, shared_forward_layers
from steerkit.steering import Steering
from steerkit.vector import SteeringVector

__all__ = ["SteeredModel", "attach"]

Mode = Literal["dynamic", "static"]


class SteeredModel:
    """A model with a steering vector attached: generate with it, hand its processor to a pipeline, detach.

    Created by :func:`attach` (``steerkit.attach(vector, model, ...)``). Also a context manager: leaving the ``with``
    block detaches.

    Attributes:
        steering: The :class:`~steerkit.steering.Steering` spec it applies.
        vector: The steering vector.
        model: The model ``generate`` runs on (in dynamic mode the ``PeftModel``, possibly the one loaded here).
        mode: ``"dynamic"`` or ``"static"``.
        setting: What was chosen: the mode, or with ``mode=None`` the recommended setting (``"warm"``,
            ``"base"``, ``"static/fit"``, ...).
        mu: The strength used (a float or a ``[batch]`` tensor).
        alpha: Confidence threshold of the mask.
        filter_masked: Whether decoding sets masked tokens to ``−inf``.
        compat: What the compatibility check found (logits width, real-token rows).
        processor: The logits processor.
        shared_forward: Dynamic mode runs the base rows in the warm forward's batch (LoRA adapters): one
            forward per step instead of two. :meth:`generate` does this; the bare :meth:`logits_processor`
            (pipelines, your own ``generate``) always runs its own base forward.

    Example:
        >>> with steerkit.attach(vector, model, tokenizer=tokenizer) as steered:            # doctest: +SKIP
        ...     out = steered.generate(**tokenizer("Q: ...", return_tensors="pt"), max_new_tokens=20)
    """

    def __init__(
        self,
        steering: Steering,
        model: Any,
        *,
        filter_masked: bool,
        compat: Compatibility,
        undo: Callable[[], None] | None = None,
        shared_forward: bool | None = None,
        tokenizer: Any | None = None,
    ) -> None:
        self.steering = steering
        self.tokenizer = tokenizer
        self.setting: str = steering.setting or steering.mode
        self.vector = steering.vector
        self.model = model
        self.mode: Mode = "static" if steering.mode == "static" else "dynamic"
        self.mu: float | Tensor = steering.strength
        self.alpha = steering.threshold
        mode, mu, alpha = self.mode, self.mu, self.alpha
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
        self._shared: SharedForward | None = None
        if mode == "dynamic" and shared_forward is not False:
            layers = shared_forward_layers(model)
            if layers is not None:
                self._shared = SharedForward(model, layers)
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
                "this steering handle was detached", hint="attach the vector again: steerkit.attach(vector, model, ...)"
            )

    def logits_processor(self) -> LogitsProcessorList:
        """The steering processor in a fresh ``LogitsProcessorList`` for your own ``generate`` or pipeline.

        Its state is reset: one processor serves one ``generate`` call at a time. Pass the prompt's
        ``attention_mask`` to ``generate`` as usual; the dynamic processor infers the prompt mask from pad tokens.
        """
        self._check_attached()
        if isinstance(self.processor, DynamicSteeringProcessor):
            self.processor.reset()
        return LogitsProcessorList([self.processor])

    def generate(
        self, inputs: Tensor | None = None, *, messages: list[dict[str, str]] | None = None, **kwargs: Any
    ) -> Any:
        """``model.generate`` with the steering processor appended to any ``logits_processor`` you pass.

        Args:
            inputs: Passed to ``generate`` as its first argument (usually ``input_ids``).
            messages: A conversation instead of ``input_ids``: rendered with the chat template of the tokenizer
                given to :func:`attach`, with its generation prompt (:func:`steerkit.chat.prompt_ids`).
            **kwargs: Everything ``generate`` takes (``input_ids``, ``attention_mask``, ``max_new_tokens``,
                ``num_beams``, ``do_sample``, ``logits_processor``, ...).

        Returns:
            Whatever ``model.generate`` returns.

        Raises:
            InvalidOptionError: ``messages`` without a tokenizer, or together with ``input_ids``.
        """
        self._check_attached()
        if messages is not None:
            if self.tokenizer is None or inputs is not None or "input_ids" in kwargs:
                raise InvalidOptionError(
                    "generate(messages=...) needs the tokenizer given to attach, and no input_ids",
                    hint="attach with tokenizer=... and pass either messages or input_ids",
                )
            ids = torch.tensor([prompt_ids(self.tokenizer, validate_messages(messages, "messages"))])
            kwargs |= {
                "input_ids": ids.to(self.model.device),
                "attention_mask": torch.ones_like(ids).to(self.model.device),
            }
        processors = LogitsProcessorList(list(kwargs.pop("logits_processor", None) or []))
        processors.append(self.processor)
        args = () if inputs is None else (inputs,)
        if self.steering.is_base and is_peft(self.model):  # the recommendation: the base model, adapter off
            with self.model.disable_adapter():
                return self.model.generate(*args, logits_processor=processors, **kwargs)
        if not isinstance(self.processor, DynamicSteeringProcessor):
            return self.model.generate(*args, logits_processor=processors, **kwargs)
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        # One kept token is the next token whatever the base says, for greedy decoding and sampling (not beams).
        beams = kwargs.get("num_beams", getattr(config, "num_beams", 1)) or 1
        search = ("penalty_alpha", "assistant_model", "prompt_lookup_num_tokens")
        single = beams == 1 and not any(kwargs.get(k) or getattr(config, k, None) for k in search)
        shared = self._shared if self._shared is not None and self._shared.usable(kwargs) else None
        use_cache = kwargs.get("use_cache", getattr(config, "use_cache", True)) is not False
        lag = shared is not None and shared.lagging and single and use_cache
        self.processor.reset(
            attention_mask=kwargs.get("attention_mask"),
            skip_single_token=single,
            rows_in_order=single,
            base_may_lag=lag,
        )
        if shared is None:
            return self.model.generate(*args, logits_processor=processors, **kwargs)
        with shared.active(
            self.processor.receive_base, use_cache=use_cache, lag=self.processor if lag else None
        ) as extra:
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

    def __enter__(self) -> SteeredModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        mu = self.mu if isinstance(self.mu, float) else f"tensor{tuple(self.mu.shape)}"
        state = ", detached" if self.detached else ""
        fm = self.filter_masked
        return f"SteeredModel(mode={self.mode!r}, mu={mu}, alpha={self.alpha}, filter_masked={fm}{state})"


def attach(
    vector: SteeringVector | Steering | Sequence[SteeringVector | Steering],
    model: Any,
    *,
    mode: Mode | None = None,
    mu: float | Tensor | None = None,
    tokenizer: Any | None = None,
    strict: bool = True,
    alpha: float | None = None,
    filter_masked: bool | None = None,
    shared_forward: bool | None = None,
    adapter: bool = True,
) -> SteeredModel:
    """Attach a steering vector to a model for steered ``generate`` (``steerkit.attach``).

    Args:
        vector: The steering vector, or a :class:`~steerkit.steering.Steering` spec (then ``mode``, ``mu``,
            ``alpha`` and ``adapter`` are the spec's and must not be given again), or a list of up to 8 of them: a
            composition (:func:`steerkit.compose.compose`), steered in static mode by ``Σᵢ μᵢ·vᵢ`` (each at its
            Steering's μ, or a vector's ``mu_static``); ``mode="dynamic"`` composes only vectors that share one
            adapter.
        model: A transformers causal LM, or a ``PeftModel``. A ``PeftModel`` is used as given; onto a plain model
            the vector's adapter is loaded (undone by :meth:`SteeredModel.detach`): both modes steer the warm
            model, which is what was calibrated and measured.
        mode: ``"dynamic"`` (the paper's SVDecode: a base forward per step), ``"static"`` (the stored task
            vector: no second forward), or ``None``: the setting the vector's cross-validation recommends
            (:meth:`Steering.recommended <steerkit.steering.Steering.recommended>`; when steering did not help
            there, warm alone: static at μ = 0, no filter; when the adapter hurt, the base model with the adapter
            off), and dynamic for a vector without one.
        mu: Strength: a float or a ``[batch]`` tensor; default the recommended μ (``mode=None``), else
            ``vector.mu`` (dynamic) / ``vector.mu_static`` (static).
        tokenizer: Checked against the vector's tokenizer fingerprint.
        strict: Refuse a tokenizer mismatch (``False`` warns).
        alpha: Confidence threshold; default the vector's ``alpha``.
        filter_masked: Set masked tokens to ``−inf``; default on in dynamic mode (the paper's λ = −∞) and off in
            static mode (static mode's rule has no filter).
        shared_forward: Dynamic mode only: run the base rows in the same forward as the warm rows (peft's
            mixed-adapter batch) inside :meth:`SteeredModel.generate`. ``None`` (default) does so when the
            adapter allows it (LoRA, unmerged, without DoRA) and ``generate`` gets no cache of its own; ``False``
            always runs a second forward; ``True`` raises when the adapter does not allow it.
        adapter: ``False`` (static mode only): steer ``model`` as given, without loading the vector's adapter
            (base + static, a transfer to other models with this vocabulary).

    Returns:
        A :class:`SteeredModel` handle.

    Raises:
        InvalidOptionError: Unknown ``mode``, a bad ``mu`` or ``alpha``, or ``shared_forward=True`` with an
            adapter that cannot share a forward with the base.
        IncompatibleModelError: Logits width or tokenizer differ (see :func:`steerkit.compatibility.check_compatible`).
        AdapterError: Dynamic mode on a plain model with a vector that has no adapter.

    Example:
        >>> steered = steerkit.attach(vector, model, mode="static", tokenizer=tokenizer)    # doctest: +SKIP
        >>> steered.generate(input_ids=ids, max_new_tokens=20)                    # doctest: +SKIP
        >>> steered.detach()                                                      # doctest: +SKIP
    """
    if isinstance(vector, (list, tuple)):
        if mu is not None:
            raise InvalidOptionError(
                "attach([...]) takes each vector's μ from its Steering value, not mu=",
                hint="give Steering(vector, 'static', mu=X) items, or the vectors at their own mu_static",
            )
        spec = composition_spec(vector, mode=mode, alpha=alpha, adapter=adapter)
    elif isinstance(vector, Steering):
        if mode is not None or mu is not None or alpha is not None or not adapter:
            raise InvalidOptionError(
                "attach(Steering(...)) takes mode, mu, alpha and adapter from the spec",
                hint="give them to Steering(...), or pass the vector itself with keyword arguments",
            )
        spec = vector
    else:
        spec = Steering.of(cast(SteeringVector, vector), mode=mode, mu=mu, alpha=alpha, adapter=adapter)
    compat = check_compatible(spec.vector, model, tokenizer=tokenizer, strict=strict)
    fm = (spec.mode == "dynamic") if filter_masked is None else bool(filter_masked)
    undo = None
    target = model
    if not is_peft(model) and (spec.mode == "dynamic" or (spec.adapter and spec.vector.adapter_files)):
        target, undo = load_adapter(spec.vector, model)
    try:
        return SteeredModel(
            spec,
            target,
            filter_masked=fm,
            compat=compat,
            undo=undo,
            shared_forward=shared_forward,
            tokenizer=tokenizer,
        )
    except SteerkitError:
        if undo is not None:
            undo()
        raise


def __getattr__(name: str) -> Any:
    if name == "Steered":  # the handle's old name: one release of grace
        warnings.warn("steerkit.decode.Steered is deprecated: it is now SteeredModel", DeprecationWarning, stacklevel=2)
        return SteeredModel
    raise AttributeError(f"module 'steerkit.decode' has no attribute {name!r}")
