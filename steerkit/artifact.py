"""The steering artifact (format 1, DESIGN §2): the :class:`SteeringVector` value object, save and load.

An artifact is a directory, laid out exactly like a Hub repository::

    steering.safetensors   tensor "task_vector" float32 [V]; metadata "format" and "config" (the JSON below)
    steer_config.json      sorted, indented JSON of :class:`SteerConfig`
    adapter/               the PEFT adapter the vector was built from (for dynamic mode)
    README.md              the model card

Writes are atomic (a temporary directory beside the target, then ``os.replace``); the same object always
gives the same bytes. Loading checks the format version, required keys, shape, finiteness and checksums, and
never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steerkit import constants as C
from steerkit._version import __version__
from steerkit.errors import (
    ArtifactCorruptError,
    ArtifactExistsError,
    ArtifactIntegrityError,
    ArtifactMissingKeyError,
    ArtifactNotFoundError,
    ArtifactValueError,
    ArtifactVersionError,
    InvalidOptionError,
)
from steerkit.svdecode import AGGREGATORS, CURVATURES, EPSILON

if TYPE_CHECKING:
    from steerkit.decode import Steered

__all__ = ["MuStats", "SteerConfig", "SteeringVector", "hash_files", "read_config", "tensor_sha256"]

_MAX_HEADER = 100 * 1024 * 1024
_warned_keys: set[str] = set()


def tensor_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's float32 little-endian bytes (the ``task_vector_sha256`` of the config).

    Args:
        tensor: Any tensor; it is converted to float32 on the CPU first.

    Returns:
        The hex digest.
    """
    array = tensor.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False)
    return hashlib.sha256(array.tobytes()).hexdigest()


def hash_files(files: Mapping[str, bytes]) -> str:
    """sha256 over ``name\\0sha256(content)\\n`` lines of a file set, sorted by name (the adapter's hash).

    Args:
        files: Relative file name → content.

    Returns:
        The hex digest; independent of the mapping's order.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return digest.hexdigest()


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
                f"{where}: the μ statistics must be a JSON object, got {data!r}",
                hint="re-create the artifact with `steerkit build`",
                path=where,
            )
        for key in ("value", "chosen_by", "paper", "exact", "fit"):
            if key not in data:
                raise ArtifactMissingKeyError(
                    f"{where}: key '{key}' missing from the μ statistics",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                    key=key,
                )
        tables = {}
        for curvature in CURVATURES:
            table = data[curvature]
            if not isinstance(table, Mapping):
                raise ArtifactValueError(
                    f"{where}: μ table '{curvature}' must be a JSON object, got {table!r}",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                )
            missing = [a for a in AGGREGATORS if a not in table]
            if missing:
                raise ArtifactMissingKeyError(
                    f"{where}: μ table '{curvature}' lacks {', '.join(missing)}",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                    key=missing[0],
                )
            tables[curvature] = {a: _finite(table[a], f"{where}: mu.{curvature}.{a}") for a in AGGREGATORS}
        return cls(
            value=_finite(data["value"], f"{where}: mu.value"),
            chosen_by=str(data["chosen_by"]),
            paper=tables["paper"],
            exact=tables["exact"],
            fit=_finite(data["fit"], f"{where}: mu.fit"),
            chosen_on=data.get("chosen_on"),
        )


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArtifactValueError(f"{what} is not a number: {value!r}", hint="re-create the artifact") from None
    if not math.isfinite(number):
        raise ArtifactValueError(f"{what} is not finite ({number})", hint="re-create the artifact", got=number)
    return number


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
class SteerConfig:
    """Everything ``steer_config.json`` holds (DESIGN §2); see the artifact-format page for each key.

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
    method: str = C.METHOD
    projection: str = C.PROJECTION
    kl: str = C.KL_DIRECTION
    format_version: str = C.FORMAT_VERSION
    steerkit_version: str = __version__
    versions: dict[str, str] = field(default_factory=_library_versions)
    evaluation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size <= 0:
            raise ArtifactValueError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ArtifactValueError(f"alpha must be in [0, 1], got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``evaluation`` only when present)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MuStats):
                value = value.to_dict()
            out[f.name] = value
        if out["evaluation"] is None:
            del out["evaluation"]
        return out

    def to_json(self) -> str:
        """The exact text of ``steer_config.json`` (sorted keys, 2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = C.CONFIG_FILE) -> SteerConfig:
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
        if "format_version" not in data:
            raise ArtifactMissingKeyError(
                f"{where}: key 'format_version' missing",
                hint="re-create the artifact",
                path=where,
                key="format_version",
            )
        version = str(data["format_version"])
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise ArtifactValueError(f"{where}: format_version {version!r} is not MAJOR.MINOR") from None
        if major > C.FORMAT_MAJOR:
            raise ArtifactVersionError(
                f"{where}: format_version {version} is newer than this steerkit reads ({C.FORMAT_VERSION})",
                hint="upgrade steerkit: pip install -U steerkit",
                path=where,
                expected=C.FORMAT_VERSION,
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
        values = {k: data[k] for k in known if k in data}
        values["mu"] = MuStats.from_dict(data["mu"], where=where)
        values["mu_static"] = MuStats.from_dict(data["mu_static"], where=where)
        values["alpha"] = _finite(data["alpha"], f"{where}: alpha")
        values["epsilon"] = _finite(data["epsilon"], f"{where}: epsilon")
        for key in ("tokenizer", "base_model", "calibration", "versions"):
            if not isinstance(data[key], Mapping):
                raise ArtifactValueError(
                    f"{where}: '{key}' must be a JSON object, got {data[key]!r}",
                    hint="re-create the artifact with `steerkit build`",
                    path=where,
                    key=key,
                )
        try:
            return cls(**values)
        except ArtifactValueError as exc:  # __post_init__ does not know the file: name it
            raise ArtifactValueError(
                f"{where}: {exc.message}", hint="re-create the artifact with `steerkit build`", path=where
            ) from None


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A steering vector: the static task vector, its config, and (optionally) the adapter it came from.

    A value object: methods that change something return a new vector. Build one with
    :func:`steerkit.build`, load one with :meth:`load`.

    Attributes:
        task_vector: float32 ``[V]``, the mean masked direction over the calibration tokens.
        config: Every setting and statistic (:class:`SteerConfig`).
        adapter_files: The PEFT adapter's files (relative name → bytes), or ``None``.

    Example:
        >>> vector = SteeringVector.load("my-vector")          # doctest: +SKIP
        >>> vector.mu, vector.mu_static                        # doctest: +SKIP
        (-2.31, -0.87)
    """

    task_vector: Tensor
    config: SteerConfig
    adapter_files: Mapping[str, bytes] | None = None

    def __post_init__(self) -> None:
        v = self.task_vector
        if not isinstance(v, Tensor) or v.dim() != 1 or v.dtype != torch.float32:
            got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
            raise ArtifactValueError(f"task_vector must be a float32 tensor of shape [V], got {got}")
        if v.numel() != self.config.vocab_size:
            raise ArtifactValueError(
                f"task_vector has {v.numel()} entries but vocab_size is {self.config.vocab_size}",
                expected=self.config.vocab_size,
                got=v.numel(),
            )
        if not bool(torch.isfinite(v).all()):
            raise ArtifactValueError("task_vector has non-finite entries (NaN or inf)", hint="re-create the artifact")
        digest = tensor_sha256(v)
        if not self.config.task_vector_sha256:
            object.__setattr__(self, "config", dataclasses.replace(self.config, task_vector_sha256=digest))
        elif self.config.task_vector_sha256 != digest:
            raise ArtifactIntegrityError(
                f"task_vector sha256 {digest[:12]}… does not match the config's {self.config.task_vector_sha256[:12]}…",
                hint="the tensor was changed after the config was written; re-download or re-create the artifact",
                expected=self.config.task_vector_sha256,
                got=digest,
            )
        if self.adapter_files is not None:
            files = dict(sorted(self.adapter_files.items()))
            object.__setattr__(self, "adapter_files", files)
            if self.config.adapter is not None and self.config.adapter.get("sha256") not in (
                None,
                hash_files(files),
            ):
                raise ArtifactIntegrityError(
                    "adapter files do not match the config's adapter sha256",
                    hint="re-download or re-create the artifact",
                )

    # --- the selected strengths ------------------------------------------------------------------------

    @property
    def mu(self) -> float:
        """The default dynamic-mode strength μ̄ (``config.mu.value``)."""
        return self.config.mu.value

    @property
    def mu_static(self) -> float:
        """The default static-mode strength μ_s (``config.mu_static.value``)."""
        return self.config.mu_static.value

    @property
    def vocab_size(self) -> int:
        """Logits width V the vector applies to."""
        return self.config.vocab_size

    def with_mu(
        self,
        value: float | str,
        *,
        static: bool = False,
        chosen_by: str | None = None,
        chosen_on: str | None = None,
    ) -> SteeringVector:
        """A copy whose default μ (or μ_s with ``static=True``) is ``value``.

        Args:
            value: A number, or the name of a stored alternative (``"median"``, ``"mean/exact"``, ``"fit"``).
            static: Change ``mu_static`` instead of ``mu``.
            chosen_by: Recorded in ``chosen_by`` (defaults to the name, or ``"manual"`` for a number).
            chosen_on: sha256 of the data ``value`` was chosen on, if any.

        Returns:
            A new vector; this one is unchanged.

        Raises:
            InvalidOptionError: An unknown aggregator name, or a number that is not finite.

        Example:
            >>> vector.with_mu("fit").config.mu.chosen_by                 # doctest: +SKIP
            'fit'
        """
        stats = self.config.mu_static if static else self.config.mu
        if isinstance(value, str):
            number, label = stats.select(value), chosen_by or _canonical_name(value)
        else:
            number, label = float(value), chosen_by or "manual"
            if not math.isfinite(number):
                raise InvalidOptionError(
                    f"μ must be a finite number, got {value!r}", hint="give a float such as -1.5", got=value
                )
        new = dataclasses.replace(stats, value=number, chosen_by=label, chosen_on=chosen_on)
        if static:
            config = dataclasses.replace(self.config, mu_static=new)
        else:
            config = dataclasses.replace(self.config, mu=new)
        return dataclasses.replace(self, config=config)

    # --- persistence -----------------------------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        """Every file of the artifact, relative name → bytes, exactly as :meth:`save` writes them.

        The same vector always gives the same bytes (no timestamps, a fixed key order in every header).
        """
        from steerkit.card import render_card

        config_json = self.config.to_json()
        out = {
            C.STEERING_FILE: _safetensors_bytes(self.task_vector, {"format": C.FORMAT_TAG, "config": config_json}),
            C.CONFIG_FILE: config_json.encode(),
            C.CARD_FILE: render_card(self).encode(),
        }
        for name, content in (self.adapter_files or {}).items():
            out[f"{C.ADAPTER_DIR}/{name}"] = content
        return out

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the artifact to ``directory`` atomically.

        Every file is written into a temporary directory beside the target, which then replaces the target
        in one ``os.replace``: an interrupted save leaves either the old artifact or the new one, never a
        mixture, and no temporary directory behind.

        Args:
            directory: Target directory (its parents are created). It may be new, empty, or (with
                ``overwrite``) an existing artifact.
            overwrite: Replace an existing artifact. A non-empty directory that is not a steering artifact
                (no ``steering.safetensors``) is never replaced.

        Returns:
            The directory path.

        Raises:
            ArtifactExistsError: ``directory`` is a file, a non-empty directory and ``overwrite`` is false, or
                a non-empty directory that is not an artifact.

        Example:
            >>> vector.save("my-vector", overwrite=True)                # doctest: +SKIP
            PosixPath('my-vector')
        """
        target = Path(directory)
        if target.exists() and not target.is_dir():
            raise ArtifactExistsError(
                f"'{target}' exists and is not a directory",
                hint="choose another output path",
                path=str(target),
            )
        if target.is_dir() and any(target.iterdir()):
            if not overwrite:
                raise ArtifactExistsError(
                    f"'{target}' already exists and is not empty",
                    hint="pass overwrite=True (CLI: --force) to replace it, or choose another path",
                    path=str(target),
                )
            if not (target / C.STEERING_FILE).is_file():
                raise ArtifactExistsError(
                    f"'{target}' is a non-empty directory but not a steering artifact (no {C.STEERING_FILE}); "
                    "refusing to replace it even with overwrite=True",
                    hint="choose a new or empty directory",
                    path=str(target),
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        files = self.files()
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        old: Path | None = None
        try:
            for name, content in files.items():
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0o700
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.replace(target, old / "previous")
                try:
                    os.replace(staging, target)
                except BaseException:
                    os.replace(old / "previous", target)  # put the old artifact back
                    raise
            else:
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            # The old artifact is deleted only once the target holds a complete one (new or restored).
            if old is not None and (target.is_dir() or not (old / "previous").exists()):
                shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def load(
        cls,
        path_or_repo_id: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        endpoint: str | None = None,
    ) -> SteeringVector:
        """Load an artifact from a local directory or a Hub repository (a local directory wins).

        Args:
            path_or_repo_id: A directory written by :meth:`save`, or a Hub repo id ``"user/name"``.
            revision: Hub branch, tag or commit sha.
            token: Hub token (never printed or stored).
            cache_dir: Hub cache directory.
            local_files_only: Use only the Hub cache, never the network.
            endpoint: Hub endpoint URL (defaults to huggingface_hub's).

        Raises:
            ArtifactNotFoundError: No artifact there.
            ArtifactFormatError: A subclass naming the file and the problem (corrupt, checksum, missing key,
                bad value, newer version).
        """
        local = Path(path_or_repo_id)
        if local.is_dir():
            return cls._load_dir(local)
        text = str(path_or_repo_id)
        if (
            local.exists()
            or text.startswith((".", "/", "~"))
            or text.count("/") != 1
            or os.sep in text.replace("/", "")
        ):
            raise ArtifactNotFoundError(
                f"no steering artifact at '{text}'",
                hint="give a directory written by `steerkit build`/`save()` or a Hub repo id like 'user/name'",
                path=text,
            )
        from steerkit.hub import download_artifact

        directory = download_artifact(
            text,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            endpoint=endpoint,
        )
        return cls._load_dir(directory)

    @classmethod
    def _load_dir(cls, directory: Path) -> SteeringVector:
        tensor_path = directory / C.STEERING_FILE
        if not tensor_path.is_file():
            raise ArtifactNotFoundError(
                f"'{directory}' has no {C.STEERING_FILE}",
                hint="is this a steering artifact? create one with `steerkit build`",
                path=str(tensor_path),
            )
        raw = tensor_path.read_bytes()
        header = _read_header(raw, tensor_path)
        config = _config_from_header(header, tensor_path)
        config_path = directory / C.CONFIG_FILE
        if config_path.is_file():
            try:
                on_disk = json.loads(config_path.read_bytes())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ArtifactCorruptError(
                    f"'{config_path}' is not valid JSON ({exc})",
                    hint="re-download or re-create the artifact",
                    path=str(config_path),
                ) from None
            if on_disk != config:
                raise ArtifactIntegrityError(
                    f"'{config_path}' differs from the config embedded in '{tensor_path}'",
                    hint="one of the two files was edited; re-download or re-create the artifact",
                    path=str(config_path),
                )
        parsed = SteerConfig.from_dict(config, where=str(tensor_path))
        vector = _read_tensor(raw, header, parsed.vocab_size, tensor_path)
        digest = tensor_sha256(vector)
        if digest != parsed.task_vector_sha256:
            raise ArtifactIntegrityError(
                f"'{tensor_path}': task_vector sha256 {digest[:12]}… does not match the config's "
                f"{parsed.task_vector_sha256[:12]}…",
                hint="the file was damaged or changed; re-download or re-create the artifact",
                path=str(tensor_path),
                expected=parsed.task_vector_sha256,
                got=digest,
            )
        if not bool(torch.isfinite(vector).all()):  # after the checksum: damaged bytes are an integrity error
            raise ArtifactValueError(
                f"'{tensor_path}': task_vector has non-finite entries (NaN or inf)",
                hint="re-create the artifact",
                path=str(tensor_path),
            )
        adapter_files = _read_adapter(directory, parsed)
        return cls(task_vector=vector, config=parsed, adapter_files=adapter_files)

    # --- delegations to the decode and Hub layers ------------------------------------------------------

    def attach(self, model: Any, **kwargs: Any) -> Steered:
        """Attach to a model for steered decoding; see :func:`steerkit.decode.attach`."""
        from steerkit.decode import attach

        return attach(self, model, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload to the Hub in one commit; see :func:`steerkit.hub.push_to_hub`."""
        from steerkit.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _safetensors_bytes(vector: Tensor, metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding of ``{"task_vector": vector}`` with ``metadata``, byte-for-byte reproducible.

    ``safetensors.torch.save`` orders ``__metadata__`` keys by a randomly seeded hash map, so two saves of
    the same data can differ; the format is simple enough to write with a fixed key order instead: an
    8-byte little-endian header length, the JSON header padded with spaces to a multiple of 8, the data.
    """
    data = vector.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False).tobytes()
    header = {
        "__metadata__": {key: metadata[key] for key in sorted(metadata)},
        C.TENSOR_NAME: {"dtype": "F32", "shape": [vector.numel()], "data_offsets": [0, len(data)]},
    }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _canonical_name(name: str) -> str:
    how, curvature = parse_mu_name(name)
    return "fit" if curvature is None else f"{how}/{curvature}"


def _read_header(raw: bytes, path: Path) -> dict[str, Any]:
    """Parse the safetensors header of ``raw`` (at least the header bytes) without touching tensor data.

    Anything that is not safetensors is refused by its first bytes; nothing is ever unpickled.
    """
    size = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else 0
    if not (2 <= size <= _MAX_HEADER and raw[8:9] == b"{"):
        if raw[:1] == b"\x80" or raw[:2] == b"PK":
            problem = "is a pickle/zip file (e.g. from torch.save), not safetensors; steerkit never unpickles"
        elif len(raw) < 8:
            problem = f"is truncated ({len(raw)} bytes, shorter than a safetensors header)"
        else:
            problem = "is not a safetensors file (no JSON header after the 8-byte length)"
        raise ArtifactCorruptError(
            f"'{path}' {problem}",
            hint="re-download the artifact, or re-create it with `steerkit build`",
            path=str(path),
        )
    if 8 + size > len(raw):
        raise ArtifactCorruptError(
            f"'{path}' is truncated: its header needs {size} bytes but only {len(raw) - 8} follow",
            hint="re-download or re-create the artifact",
            path=str(path),
        )
    try:
        header = json.loads(raw[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ArtifactCorruptError(
            f"'{path}' has an unreadable safetensors header (not a JSON object)",
            hint="re-download or re-create the artifact",
            path=str(path),
        )
    return header


def _read_tensor(raw: bytes, header: Mapping[str, Any], vocab_size: int, path: Path) -> Tensor:
    """The ``task_vector`` of a parsed file, after checking its entry against the format and the file size."""
    entries = sorted(k for k in header if k != "__metadata__")
    if entries != [C.TENSOR_NAME]:
        raise ArtifactValueError(
            f"'{path}' must hold exactly one tensor '{C.TENSOR_NAME}', found {entries}",
            hint="re-create the artifact with `steerkit build`",
            path=str(path),
        )
    info = header[C.TENSOR_NAME]
    expected = {"dtype": "F32", "shape": [vocab_size], "data_offsets": [0, 4 * vocab_size]}
    got = {key: info.get(key) for key in expected} if isinstance(info, Mapping) else info
    if got != expected:
        raise ArtifactValueError(
            f"'{path}': tensor '{C.TENSOR_NAME}' is {got}, expected {expected} (float32 [vocab_size])",
            hint="re-create the artifact with `steerkit build`",
            path=str(path),
            expected=expected,
            got=got,
        )
    start = len(raw) - 4 * vocab_size
    body = len(raw) - 8 - struct.unpack("<Q", raw[:8])[0]
    if body != 4 * vocab_size:
        problem = "is truncated" if body < 4 * vocab_size else "has trailing bytes"
        raise ArtifactCorruptError(
            f"'{path}' {problem}: its tensor data is {body} bytes, expected {4 * vocab_size}",
            hint="re-download or re-create the artifact",
            path=str(path),
        )
    import numpy as np

    array = np.frombuffer(raw, dtype="<f4", count=vocab_size, offset=start).astype(np.float32)
    return torch.from_numpy(array)


def _config_from_header(header: Mapping[str, Any], path: Path) -> dict[str, Any]:
    meta = header.get("__metadata__") or {}
    if meta.get("format") != C.FORMAT_TAG:
        fmt = meta.get("format")
        major = str(fmt).rpartition("/")[2] if isinstance(fmt, str) and fmt.startswith("steerkit/") else None
        if major is not None and major.isdigit() and int(major) > C.FORMAT_MAJOR:
            raise ArtifactVersionError(
                f"'{path}' is format {fmt}, newer than this steerkit reads ({C.FORMAT_TAG})",
                hint="upgrade steerkit: pip install -U steerkit",
                path=str(path),
                expected=C.FORMAT_TAG,
                got=fmt,
            )
        raise ArtifactCorruptError(
            f"'{path}' is not a steerkit artifact (metadata format={fmt!r}, expected {C.FORMAT_TAG!r})",
            hint="create artifacts with `steerkit build`",
            path=str(path),
        )
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        raise ArtifactCorruptError(
            f"'{path}' lacks a readable 'config' in its metadata",
            hint="re-create the artifact",
            path=str(path),
        ) from None
    if not isinstance(config, dict):
        raise ArtifactCorruptError(f"'{path}': the embedded config is not a JSON object", path=str(path))
    return config


def _read_adapter(directory: Path, config: SteerConfig) -> dict[str, bytes] | None:
    folder = directory / C.ADAPTER_DIR
    if not folder.is_dir():
        return None
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    expected = (config.adapter or {}).get("sha256")
    if expected and hash_files(files) != expected:
        raise ArtifactIntegrityError(
            f"'{folder}': adapter files do not match the config's adapter sha256",
            hint="re-download or re-create the artifact",
            path=str(folder),
        )
    return files


def read_config(path: str | os.PathLike[str]) -> SteerConfig:
    """Read an artifact's config from the safetensors header alone (no tensor data is loaded).

    Args:
        path: The artifact directory or its ``steering.safetensors``.

    Returns:
        The validated config (the tensor data is neither read nor checked: use :meth:`SteeringVector.load`).

    Raises:
        ArtifactNotFoundError: No such file.
        ArtifactFormatError: The header is unreadable, of a newer version, or incomplete.

    Example:
        >>> read_config("my-vector").vocab_size                     # doctest: +SKIP
        49152
    """
    p = Path(path)
    file = p / C.STEERING_FILE if p.is_dir() else p
    if not file.is_file():
        raise ArtifactNotFoundError(f"no {C.STEERING_FILE} at '{p}'", hint="give an artifact directory", path=str(file))
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) == 8:
            (size,) = struct.unpack("<Q", head)
            head += handle.read(min(size, _MAX_HEADER))
    header = _read_header(head, file)
    return SteerConfig.from_dict(_config_from_header(header, file), where=str(file))
