"""lm-evaluation-harness integration (docs/integrations.md): the ``steerkit`` model type,
 a subclass of lm-eval's ``HFLM``.

Importing this module registers the model type ``steerkit`` in lm-eval's model registry (lm-eval 0.4.13 reads no
entry points: a model type exists once the module that registers it is imported). So in Python::

    import steerkit.lm_eval  # registers "steerkit"
    lm_eval.simple_evaluate(model="steerkit", model_args="pretrained=MODEL,vector=VECTOR,mode=static", ...)

and on the command line ``python -m steerkit.lm_eval`` is lm-eval's own CLI with the type registered first::

    python -m steerkit.lm_eval run --model steerkit --model_args pretrained=MODEL,vector=VECTOR,mode=dynamic ...

``pretrained`` also takes a packaged model's name (``SmolLM2-135M-Instruct``), as every steerkit command does.

What it computes (``mode``): ``warm`` scores the warm model (the vector's adapter on the base), ``static`` adds
``μ_s · keep ⊙ v`` and ``dynamic`` adds ``μ · δ̂`` (a base forward with the adapter switched off) to the warm
logits at every position: loglikelihood and loglikelihood_rolling see the steered logits *without* the ``−inf``
filter (scoring never filters: docs/concepts.md), so the scores equal :func:`steerkit.scoring.score_choices`'s.
generate_until decodes with the steering processor of :func:`steerkit.attach` (its ``filter_masked`` default: on
in dynamic mode, off in static mode). The model info lists the vector, its revision and commit, and
``task_vector_sha256``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerkit._hf import AdapterSwitch, is_peft
from steerkit._version import __version__
from steerkit.adapters import load_adapter
from steerkit.checks import check_alpha
from steerkit.compatibility import Compatibility, check_compatible
from steerkit.compose import compose
from steerkit.decode import SteeredModel, attach
from steerkit.errors import InvalidOptionError
from steerkit.hub import resolve
from steerkit.models import packaged_folder
from steerkit.steering import Steering
from steerkit.svdecode import steer, steering_direction
from steerkit.vector import SteeringVector

try:
    from lm_eval.api.registry import model_registry
    from lm_eval.models.huggingface import HFLM
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise ImportError(
        "steerkit.lm_eval needs lm-evaluation-harness: pip install 'steerkit[lm-eval]'", name="lm_eval"
    ) from exc

__all__ = ["MODEL_NAME", "MODES", "SteerkitLM", "main", "register"]

MODEL_NAME = "steerkit"
MODES: tuple[str, ...] = ("recommended", "warm", "static", "dynamic")


def register() -> None:
    """Register the ``steerkit`` model type with lm-eval (idempotent; importing this module already does it)."""
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target="steerkit.lm_eval:SteerkitLM")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_bool(value: Any, name: str) -> bool:
    """A model arg that must be true or false: a bool, or one of its spellings (anything else is refused)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidOptionError(f"{name}={value!r} is neither true nor false", hint=f"use {name}=true or {name}=false")


def _as_float(value: Any, name: str) -> float | None:
    """A numeric model arg (``None`` stays ``None``); a string that is no number is refused in one line."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidOptionError(f"{name}={value!r} is not a number", hint=f"give {name}=<number>") from None


def _args(
    vector: Any, mu: Any, alpha: Any, strict: Any, filter_masked: Any, vector_revision: str | None
) -> tuple[float | None, float | None, bool, bool | None]:
    """``(mu, alpha, strict, filter_masked)`` checked before anything loads: no model arg fails open."""
    if vector_revision and not isinstance(vector, SteeringVector) and Path(str(vector)).expanduser().is_dir():
        raise InvalidOptionError(
            f"vector_revision={vector_revision!r} names a Hub revision, but {str(vector)!r} is a local folder",
            hint="drop vector_revision, or give the vector as a Hub id",
        )
    a = _as_float(alpha, "alpha")
    if a is not None:
        check_alpha(a, hint="give alpha=<number in [0, 1]> (the vector's own is the default)")
    fm = None if filter_masked is None else _as_bool(filter_masked, "filter_masked")
    return _as_float(mu, "mu"), a, _as_bool(strict, "strict"), fm


def _composed(spec: str, mu: Any, revision: str | None, mode: str) -> SteeringVector:
    """``vector=A|B`` with ``mu=X|Y`` (or no ``mu``: each vector's μ_s): :func:`steerkit.compose.compose` of them."""
    names = [name.strip() for name in spec.split("|")]
    if mode not in ("static", "recommended"):
        raise InvalidOptionError(
            f"vector={spec!r} composes vectors, which lm-eval steers in static mode only, not mode={mode}",
            hint="drop mode, or give mode=static",
        )
    texts = [None] * len(names) if mu is None else str(mu).split("|")
    if len(texts) != len(names):
        raise InvalidOptionError(
            f"mu={mu!r} gives {len(texts)} strengths for the {len(names)} vectors of vector={spec!r}",
            hint="give mu=X|Y, one per vector (leave one empty, or drop mu, for a vector's own mu_static)",
        )
    mus = [_as_float(text.strip() or None, "mu") if text is not None else None for text in texts]
    vectors = [SteeringVector.from_parts(resolve(name, revision=revision)) for name in names]
    return compose([Steering(v, "static", m) for v, m in zip(vectors, mus, strict=True)])


def _loaded(vector: str | SteeringVector, revision: str | None) -> tuple[SteeringVector, Path | None]:
    """The vector (read and verified once, ``steerkit.load``) and the folder it came from (``None`` if given)."""
    if isinstance(vector, SteeringVector):
        return vector, None
    parts = resolve(vector, revision=revision)
    return SteeringVector.from_parts(parts), parts.directory


def _recommended(vector: SteeringVector, mu: float | None) -> tuple[str, float | None]:
    """``mode=recommended`` as :meth:`steerkit.Steering.recommended` reads the vector: ``(mode, mu)``."""
    spec = Steering.recommended(vector, mu=mu)
    if spec.setting in ("warm", "base"):
        return str(spec.setting), None
    return spec.mode, float(spec.strength)


def _commit(directory: Path | None) -> str | None:
    """The Hub commit of a snapshot folder (``…/snapshots/<sha>``); ``None`` for a plain local folder."""
    if directory is not None and directory.parent.name == "snapshots":
        return directory.name
    return None


class SteerkitLM(HFLM):  # type: ignore[misc]
    """lm-eval's ``HFLM`` with a steerkit vector: steered logits for loglikelihood, the processor for generation.

    Model arguments (``--model_args key=value,...``): everything ``hf`` takes, plus

    Args:
        pretrained: The base model (a Hub id, a local folder, or a loaded ``PreTrainedModel``/``PeftModel``).
        vector: The steering vector: an artifact folder or a Hub repo id (``steerkit.load``), or several joined by
            ``|`` (``vector=A|B``): their composition (:func:`steerkit.compose.compose`), steered in static mode.
            The composition carries the vectors' adapter when they share one; otherwise ``pretrained`` (with
            ``peft=`` if given) is steered as given.
        mode: ``recommended`` (default: the setting the vector's cross-validation picked, as ``steerkit.attach``
            uses it; the base model when it found that the adapter hurts), ``dynamic`` (SVDecode), ``static`` (the
            task vector) or ``warm`` (adapter only, unsteered).
        mu: Strength (default: the vector's ``mu`` in dynamic, ``mu_static`` in static mode; not for ``warm``);
            one per vector for a composition, ``mu=X|Y`` (an empty one: that vector's ``mu_static``).
        vector_revision: Hub revision of the vector.
        alpha: Confidence threshold of the mask (default: the vector's).
        strict: Refuse a tokenizer that differs from the vector's (default true).
        filter_masked: Generation only: set masked tokens to ``−inf`` (default: attach's, on in dynamic mode).
        **kwargs: Passed to ``HFLM`` (``device``, ``batch_size``, ``dtype``, ...). ``peft`` is refused when the
            vector carries its own adapter: that adapter is the warm model.

    Raises:
        InvalidOptionError: An unknown mode, ``mu`` with ``mode=warm``, or ``peft`` next to a vector's adapter.
        IncompatibleModelError: The vector does not fit the model's logits width or tokenizer.
        AdapterError: ``warm``/``dynamic`` with a vector that carries no adapter.
    """

    def __init__(
        self,
        pretrained: Any,
        vector: str | SteeringVector | None = None,
        mode: str = "recommended",
        mu: float | str | None = None,
        vector_revision: str | None = None,
        alpha: float | str | None = None,
        strict: bool | str = True,
        filter_masked: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        if vector is None:
            raise InvalidOptionError(
                "the steerkit model type needs a steering vector",
                hint="add vector=<artifact folder or Hub id> to --model_args",
            )
        mode = str(mode).strip().lower()
        if mode not in MODES:
            raise InvalidOptionError(
                f"unknown steerkit mode {mode!r}", hint=f"use mode={', mode='.join(MODES)}", got=mode
            )
        if mode == "warm" and mu is not None:
            raise InvalidOptionError("mode=warm scores the warm model unsteered: it takes no mu", hint="drop mu")
        vector_id = None if isinstance(vector, SteeringVector) else str(vector)
        if isinstance(vector, str) and "|" in vector:  # a composition: one static vector Σᵢ μᵢ·vᵢ
            vector, mu, mode = _composed(vector, mu, vector_revision, mode), None, "static"
        mu_value, a, strict_on, filter_on = _args(vector, mu, alpha, strict, filter_masked, vector_revision)
        self.steerkit_vector, directory = _loaded(vector, vector_revision)
        self.steerkit_vector_id = vector_id
        if mode == "recommended":
            mode, mu_value = _recommended(self.steerkit_vector, mu_value)
        if kwargs.get("peft") and self.steerkit_vector.adapter_files:
            raise InvalidOptionError(
                "peft= and a vector that carries its adapter: the vector's adapter is the warm model",
                hint="drop peft from --model_args",
            )
        self.steerkit_mode = mode
        self.steerkit_vector_revision = vector_revision
        self.steerkit_vector_commit = _commit(directory)
        self._steerkit_tokenizer: Any = None
        super().__init__(packaged_folder(pretrained), **kwargs)
        v = self.steerkit_vector
        model: Any = self.model
        if mode == "base" and is_peft(model):
            raise InvalidOptionError(
                "the vector recommends the base model (its adapter hurt on the calibration data), and pretrained is "
                "a PeftModel",
                hint="pass the plain base model as pretrained, or mode=warm to score the adapter anyway",
            )
        if not is_peft(model) and mode != "base" and (mode != "static" or v.adapter_files):
            model, _ = load_adapter(v, model)  # the vector's adapter: the warm model (raises when there is none)
            self._model = model
        tokenizer = self._steerkit_tokenizer if self._steerkit_tokenizer is not None else self.tokenizer
        self.steerkit_steered: SteeredModel | None = None
        if mode in ("warm", "base"):
            self.steerkit_compat: Compatibility = check_compatible(v, model, tokenizer=tokenizer, strict=strict_on)
            self.steerkit_alpha = float(v.config.alpha if a is None else a)
            self.steerkit_mu = 0.0
        else:
            steered = attach(
                v,
                model,
                mode="static" if mode == "static" else "dynamic",
                mu=mu_value,
                tokenizer=tokenizer,
                strict=strict_on,
                alpha=a,
                filter_masked=filter_on,
            )
            self.steerkit_steered, self.steerkit_compat = steered, steered.compat
            self.steerkit_alpha, self.steerkit_mu = steered.alpha, float(steered.mu)
        self._steerkit_switch = AdapterSwitch(model) if mode == "dynamic" else None
        self._steerkit_static = (
            self.steerkit_steered.static_vector if mode == "static" and self.steerkit_steered else None
        )

    def _create_tokenizer(self, *args: Any, **kwargs: Any) -> None:
        """lm-eval's tokenizer, kept as loaded for the fingerprint check (lm-eval may set a pad token later)."""
        super()._create_tokenizer(*args, **kwargs)
        if getattr(self.tokenizer, "pad_token", None) is None:
            self._steerkit_tokenizer = copy.deepcopy(self.tokenizer)

    def steered_logits(self, input_ids: Tensor) -> Tensor:
        """Steered float32 logits ``[batch, seq, V]`` at every position (no ``−inf`` filter)."""
        model = self.model
        length = input_ids.shape[1]
        with torch.no_grad():
            warm: Tensor = model(input_ids).logits[:, -length:]  # prompt-learning adapters prepend virtual tokens
            if self.steerkit_mode in ("warm", "base"):  # base: the model was loaded without the adapter
                return warm.float()
            base = None
            if self._steerkit_switch is not None:
                with self._steerkit_switch.off():
                    base = model.get_base_model()(input_ids).logits[:, -length:]
            compat = self.steerkit_compat
            direction, keep = steering_direction(
                warm,
                base_logits=base,
                static_vector=self._steerkit_static,
                alpha=self.steerkit_alpha,
                n_tokens=compat.n_tokens if compat.padded else None,
            )
            return steer(warm, direction, keep, self.steerkit_mu, filter_masked=False)

    def _model_call(self, inps: Tensor, attn_mask: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """The steered logits of :meth:`steered_logits` (loglikelihood, loglikelihood_rolling)."""
        if attn_mask is not None or labels is not None:
            raise InvalidOptionError("the steerkit model type supports causal (decoder-only) models only")
        return self.steered_logits(inps)

    def _model_generate(self, context: Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        """lm-eval's generation with the steering processor appended to any ``logits_processor`` given."""
        if self.steerkit_steered is not None:
            from transformers import LogitsProcessorList

            given = list(generation_kwargs.pop("logits_processor", None) or [])
            steering = self.steerkit_steered.logits_processor()  # a fresh state for this batch
            generation_kwargs["logits_processor"] = LogitsProcessorList([*given, *steering])
        return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def get_model_info(self) -> dict[str, Any]:
        """lm-eval's model info plus the steering: vector id, revision, commit, task_vector_sha256, mode and μ."""
        info: dict[str, Any] = dict(super().get_model_info())
        config = self.steerkit_vector.config
        info.update(
            steerkit_version=__version__,
            steerkit_vector=self.steerkit_vector_id,
            steerkit_vector_revision=self.steerkit_vector_revision,
            steerkit_vector_commit=self.steerkit_vector_commit,
            steerkit_task_vector_sha256=config.task_vector_sha256,
            steerkit_mode=self.steerkit_mode,
            steerkit_mu=self.steerkit_mu,
            steerkit_alpha=self.steerkit_alpha,
            steerkit_adapter=is_peft(self._model),
        )
        return info


register()


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``steerkit`` model type registered (``python -m steerkit.lm_eval ...``)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    main()
