"""The artifact's configuration (docs/artifact-format.md):
:class:`MuStats`, :class:`SteerConfig` and μ aggregator names.

Plain frozen dataclasses that validate themselves, round-trip through JSON (``to_dict``/``from_dict``) and stamp
their provenance (steerkit, torch, transformers and peft versions) automatically. ``from_dict`` checks the format
version first, then the required keys and values, and warns once about keys a newer steerkit wrote. Nothing here
touches files: :mod:`steerkit.format` reads and writes them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import torch

from steerkit import constants
from steerkit._io import check_json
from steerkit._version import __version__
from steerkit.checks import check_alpha
from steerkit.errors import (
    ArtifactCorruptError,
    ArtifactMissingKeyError,
    ArtifactValueError,
    ArtifactVersionError,
    InvalidOptionError,
    show,
)
from steerkit.schema import REBUILD, check_fields, finite, json_object, string
from steerkit.svdecode import AGGREGATORS, CURVATURES, EPSILON

__all__ = ["MuStats", "Recommendation", "SteerConfig", "canonical_mu_name", "parse_mu_name"]

_warned_keys: set[str] = set()


def _library_versions() -> dict[str, str]:
    out = {"torch": torch.__version__.split("+")[0]}
    for name in ("transformers", "peft"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:  # pragma: no cover - both are dependencies
            out[name] = "unknown"
    return out


def parse_mu_name(name: str) -> tuple[str, str | None]:
    """Split an aggregator name: ``"median"`` → ``("median", "paper")``, ``"mean/exact"``, ``"fit"``.

    Args:
        name: ``AGGREGATOR[/CURVATURE]`` or ``"fit"``.

    Returns:
        ``(aggregator, curvature)``; the curvature is ``None`` for ``"fit"``.

    Raises:
        InvalidOptionError: An unknown name; the message lists the legal ones.
    """
    if name == "fit":
        return "fit", None
    how, _, curvature = name.partition("/")
    curvature = curvature or "paper"
    if how not in AGGREGATORS or curvature not in CURVATURES:
        legal = [*(f"{a}/{c}" for c in CURVATURES for a in AGGREGATORS), "fit"]
        raise InvalidOptionError(
            f"unknown μ aggregator {name!r}",
            hint=f"use one of: {', '.join(legal)} (a bare name means '/paper')",
            got=name,
        )
    return how, curvature


def canonical_mu_name(name: str) -> str:
    """The canonical form of an aggregator name: ``"median"`` → ``"median/paper"``, ``"fit"`` → ``"fit"``."""
    how, curvature = parse_mu_name(name)
    return "fit" if curvature is None else f"{how}/{curvature}"


@dataclass(frozen=True)
class MuStats:
    """Strength statistics: the value used by default and every alternative computed at build time.

    Attributes:
        value: The μ used when none is given (one of the alternatives, or a searched value).
        chosen_by: How ``value`` was chosen: ``"median/paper"``, ``"fit"``, ``"search:mc2"``, ``"manual"``.
        paper: The four aggregates (mean, median, trimmed, ratio) with curvature ``‖δ̂‖²``.
        exact: The four aggregates with the exact curvature ``Var_{p_φ}(δ̂)``.
        fit: The exact minimiser of the summed calibration NLL.
        chosen_on: For searched values: the metric's data sha256.
    """

    value: float
    chosen_by: str
    paper: dict[str, float]
    exact: dict[str, float]
    fit: float
    chosen_on: str | None = None

    def select(self, name: str) -> float:
        """The alternative called ``name`` (``"median"``, ``"mean/exact"``, ``"fit"``, ...)."""
        how, curvature = parse_mu_name(name)
        if curvature is None:
            return self.fit
        return self.paper[how] if curvature == "paper" else self.exact[how]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = dataclasses.asdict(self)
        if out["chosen_on"] is None:
            del out["chosen_on"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> MuStats:
        """Validate and build from the JSON form; ``where`` names the file in errors."""
        if not isinstance(data, Mapping):
            raise ArtifactValueError(
                f"{where}: the μ statistics must be a JSON object, got {show(data)}", hint=REBUILD, path=where
            )
        for key in ("value", "chosen_by", "paper", "exact", "fit"):
            if key not in data:
                raise ArtifactMissingKeyError(
                    f"{where}: key '{key}' missing from the μ statistics", path=where, key=key
                )
        tables = {}
        for curvature in CURVATURES:
            table = data[curvature]
            if not isinstance(table, Mapping):
                raise ArtifactValueError(
                    f"{where}: μ table '{curvature}' must be a JSON object", hint=REBUILD, path=where
                )
            missing = [a for a in AGGREGATORS if a not in table]
            if missing:
                raise ArtifactMissingKeyError(
                    f"{where}: μ table '{curvature}' lacks {', '.join(missing)}",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                    key=missing[0],
                )
            tables[curvature] = {a: finite(table[a], f"{where}: mu.{curvature}.{a}") for a in AGGREGATORS}
        return cls(
            value=finite(data["value"], f"{where}: mu.value"),
            chosen_by=str(string(data["chosen_by"], f"{where}: mu.chosen_by")),
            paper=tables["paper"],
            exact=tables["exact"],
            fit=finite(data["fit"], f"{where}: mu.fit"),
            chosen_on=string(data.get("chosen_on"), f"{where}: mu.chosen_on", optional=True),
        )


_REQUIRED = (
    "format_version",
    "method",
    "alpha",
    "epsilon",
    "projection",
    "kl",
    "mu",
    "mu_static",
    "vocab_size",
    "tokenizer",
    "base_model",
    "adapter",
    "calibration",
    "task_vector_sha256",
    "steerkit_version",
    "versions",
)


@dataclass(frozen=True)
class Recommendation:
    """The setting a config's ``validation`` block recommends: the block's one typed reader
    (:meth:`steerkit.Steering.recommended` turns it into a steering spec).

    Attributes:
        setting: ``"warm"`` (warm alone), ``"static/fit"``, ``"dynamic/ratio/exact"``, ...
        mode: ``"static"``, ``"dynamic"``, or ``None`` for warm alone (μ = 0).
        mu: The recommended strength (0 for warm alone).
        reason: Why, in one sentence.
    """

    setting: str
    mode: str | None
    mu: float
    reason: str

    @classmethod
    def from_validation(cls, block: Mapping[str, Any] | None) -> Recommendation | None:
        """The recommendation of a ``validation`` block (type-checked when the config was read), or ``None``."""
        if not block:
            return None
        rec = block["recommended"]
        return cls(str(rec["setting"]), rec["mode"], float(rec["mu"]), str(block.get("reason", "")))


@dataclass(frozen=True)
class SteerConfig:
    """Everything ``steer_config.json`` holds ; see the artifact-format page for each key.

    Provenance (steerkit, torch, transformers and peft versions) is stamped automatically.
    """

    vocab_size: int
    mu: MuStats
    mu_static: MuStats
    tokenizer: dict[str, Any]
    base_model: dict[str, Any]
    calibration: dict[str, Any]
    adapter: dict[str, Any] | None = None
    alpha: float = 0.1
    epsilon: float = EPSILON
    task_vector_sha256: str = ""
    method: str = constants.METHOD
    projection: str = constants.PROJECTION
    kl: str = constants.KL_DIRECTION
    format_version: str = constants.FORMAT_VERSION
    steerkit_version: str = __version__
    versions: dict[str, str] = field(default_factory=_library_versions)
    evaluation: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size <= 0:
            raise ArtifactValueError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        try:
            check_alpha(self.alpha)
        except InvalidOptionError as exc:  # a stored value: the artifact is at fault, not an argument
            raise ArtifactValueError(exc.message, hint=REBUILD) from None

    @property
    def recommendation(self) -> Recommendation | None:
        """What the ``validation`` block recommends, typed; ``None`` for a vector built without cross-validation."""
        return Recommendation.from_validation(self.validation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``evaluation`` and ``validation`` only when present)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MuStats):
                value = value.to_dict()
            out[f.name] = value
        for key in ("evaluation", "validation"):
            if out[key] is None:
                del out[key]
        return out

    def to_json(self) -> str:
        """The exact text of ``steer_config.json`` (sorted keys, 2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = constants.CONFIG_FILE) -> SteerConfig:
        """Validate the JSON form: version first, then required keys and values; unknown keys warn once.

        Args:
            data: The parsed ``steer_config.json``.
            where: The file it came from, named in every error and warning.

        Returns:
            The config.

        Raises:
            ArtifactVersionError: A newer major ``format_version``.
            ArtifactMissingKeyError: A required key is missing.
            ArtifactValueError: A value of the wrong kind (not finite, not an object, out of range).
            ArtifactCorruptError: ``data`` is not a JSON object.
        """
        if not isinstance(data, Mapping):
            raise ArtifactCorruptError(f"{where}: the config is not a JSON object", hint="re-create the artifact")
        check_json(data, where, hint=REBUILD)
        if "format_version" not in data:
            raise ArtifactMissingKeyError(
                f"{where}: key 'format_version' missing",
                hint="re-create the artifact",
                path=where,
                key="format_version",
            )
        version = data["format_version"]
        if not (isinstance(version, str) and _VERSION.fullmatch(version)):
            raise ArtifactValueError(f"{where}: format_version {show(version)} is not MAJOR.MINOR", path=where)
        if int(version.split(".")[0]) > constants.FORMAT_MAJOR:
            raise ArtifactVersionError(
                f"{where}: format_version {version} is newer than this steerkit reads ({constants.FORMAT_VERSION})",
                hint="upgrade steerkit: pip install -U steerkit",
                path=where,
                expected=constants.FORMAT_VERSION,
                got=version,
            )
        for key in _REQUIRED:
            if key not in data:
                raise ArtifactMissingKeyError(
                    f"{where}: required key '{key}' missing",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                    key=key,
                )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        fresh = [k for k in unknown if k not in _warned_keys]
        if fresh:
            _warned_keys.update(fresh)
            warnings.warn(
                f"{where}: ignoring unknown config keys {', '.join(fresh)} (written by a newer steerkit?)",
                stacklevel=3,
            )
        try:
            values = {k: data[k] for k in known if k in data}
            values["mu"] = MuStats.from_dict(data["mu"], where=where)
            values["mu_static"] = MuStats.from_dict(data["mu_static"], where=where)
            values["alpha"] = finite(data["alpha"], f"{where}: alpha")
            values["epsilon"] = finite(data["epsilon"], f"{where}: epsilon")
            for key in ("tokenizer", "base_model", "calibration", "versions"):
                json_object(data[key], where, key)
            for key in ("method", "projection", "kl", "task_vector_sha256", "steerkit_version"):
                string(data[key], f"{where}: {key}")
            check_fields(data, where)
            size = data["vocab_size"]
            if isinstance(size, int) and not isinstance(size, bool) and size > _MAX_VOCAB:
                raise ArtifactValueError(f"vocab_size {show(size)} is larger than {_MAX_VOCAB}")
            return cls(**values)
        except ArtifactValueError as exc:  # name the file in every message
            message = exc.message if exc.message.startswith(where) else f"{where}: {exc.message}"
            raise ArtifactValueError(message, hint=REBUILD, **{**exc.fields, "path": where}) from None


_VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}")
_MAX_VOCAB = 2**32
