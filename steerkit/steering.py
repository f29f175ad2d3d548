"""The one steering spec: :class:`Steering`, a plain value saying how to steer (vector, mode, μ, α).

:func:`steerkit.attach` (decoding), option scoring (:func:`steerkit.evaluate_mc`, ``tune``), the side-by-side
settings of ``steerkit eval`` and the lm-eval model type all take this value, so the choice of mode, μ and α is
made and checked in one place: α by :func:`steerkit.checks.check_alpha`, μ by
:func:`steerkit.checks.check_mu`, both raising :class:`~steerkit.errors.InvalidOptionError`.
:meth:`Steering.recommended` is the one reader of the setting a vector's cross-validation recommends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from steerkit.checks import check_alpha, check_mu
from steerkit.errors import InvalidOptionError
from steerkit.svdecode import DYNAMIC_BOUND
from steerkit.vector import SteeringVector

__all__ = ["MODES", "Steering"]

Mode = Literal["dynamic", "static"]
#: The two steering modes.
MODES: tuple[str, ...] = ("dynamic", "static")


@dataclass(frozen=True)
class Steering:
    """How to steer: a plain, frozen value (no model, no hooks), validated where it is made.

    Attributes:
        vector: The steering vector.
        mode: ``"dynamic"`` (δ̂ from the warm and base logits, the paper's SVDecode) or ``"static"``
            (``keep ⊙ v``, no second forward).
        mu: The strength: a float, a ``[batch]`` tensor (decoding only), or ``None`` for the vector's default
            (``mu`` for dynamic, ``mu_static`` for static).
        alpha: Confidence threshold of the mask (``None``: the vector's).
        adapter: Static mode on a plain model: steer warm + static (the vector's adapter loaded for the run,
            what was calibrated). ``False`` steers the model as given (a transfer to another model with this
            vocabulary). A ``PeftModel`` is always used as given.
        setting: What was chosen, for tables and reprs: the mode, or the recommended setting's name
            (``"warm"``, ``"base"``, ``"static/fit"``, ...).

    Example:
        >>> Steering(vector, mode="static", mu=-1.5).strength           # doctest: +SKIP
        -1.5
        >>> Steering.recommended(vector).setting                        # doctest: +SKIP
        'static/trimmed/exact'
    """

    vector: SteeringVector
    mode: str = "dynamic"
    mu: float | Tensor | None = None
    alpha: float | None = None
    adapter: bool = True
    setting: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidOptionError(
                f"unknown steering mode {self.mode!r}",
                hint="use mode='dynamic', mode='static' or mode=None (the recommended setting)",
                got=self.mode,
            )
        if self.mode == "dynamic" and not self.adapter:
            raise InvalidOptionError(
                "adapter=False is a static-mode option: dynamic steering needs the warm model", got=self.mode
            )
        scale = DYNAMIC_BOUND if self.mode == "dynamic" else self.vector.max_abs
        if self.mu is not None:
            object.__setattr__(self, "mu", check_mu(self.mu, scale=scale))
        else:  # the stored default: a number the artifact checked, but not against float32
            check_mu(self.strength, scale=scale)
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_alpha(self.alpha, hint="the default is the vector's alpha"))
        if self.setting is None:
            object.__setattr__(self, "setting", self.mode)

    @classmethod
    def recommended(cls, vector: SteeringVector, *, mu: float | Tensor | None = None) -> Steering:
        """The setting the vector's cross-validation recommends (its ``validation`` block).

        Warm alone is static steering at μ = 0 (exactly the warm logits, no filter). ``base`` (the adapter hurt on
        the calibration data) is the same with the adapter off: :func:`steerkit.attach` runs the base model. A
        vector built without cross-validation gets dynamic mode at its default μ. A given ``mu`` overrides the
        recommended strength (and with warm alone or base recommended, steers dynamically at that μ).
        """
        found = vector.config.recommendation
        if found is None:
            return cls(vector, "dynamic", mu)
        if found.setting == "base" and mu is None:
            return cls(vector, "static", 0.0, adapter=False, setting="base")
        if found.mode is None:
            return cls(vector, "static", 0.0, setting="warm") if mu is None else cls(vector, "dynamic", mu)
        return cls(vector, found.mode, found.mu if mu is None else mu, setting=found.setting)

    @classmethod
    def of(
        cls,
        vector: SteeringVector,
        *,
        mode: str | None = None,
        mu: float | Tensor | None = None,
        alpha: float | None = None,
        adapter: bool = True,
    ) -> Steering:
        """The spec for keyword arguments as :func:`steerkit.attach` takes them (``mode=None``: recommended)."""
        if mode is None:
            return dataclasses.replace(cls.recommended(vector, mu=mu), alpha=alpha, adapter=adapter)
        return cls(vector, mode, mu, alpha, adapter)

    @property
    def is_warm_alone(self) -> bool:
        """Whether this spec is warm alone (the recommendation when steering did not help)."""
        return self.setting == "warm"

    @property
    def is_base(self) -> bool:
        """Whether this spec is the base model, adapter off (the recommendation when the adapter hurt)."""
        return self.setting == "base"

    @property
    def strength(self) -> float | Tensor:
        """μ as used: the given one or the vector's default for the mode."""
        if self.mu is not None:
            return self.mu
        return self.vector.mu if self.mode == "dynamic" else self.vector.mu_static

    @property
    def threshold(self) -> float:
        """α as used."""
        return float(self.vector.config.alpha if self.alpha is None else self.alpha)
