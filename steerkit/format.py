"""The artifact's files (format 1, docs/artifact-format.md): bytes in, verified parts out.

An artifact is a directory, laid out exactly like a Hub repository::

    steering.safetensors   tensor "task_vector" float32 [V]; metadata "format" and "config" (the JSON below)
    steer_config.json      sorted, indented JSON of :class:`~steerkit.config.SteerConfig`
    adapter/               the PEFT adapter the vector was built from (for dynamic mode)
    README.md              the model card

Two walls are deliberate. The safetensors writer is our own (about fifteen lines) because the safetensors
core keeps ``__metadata__`` in a hash map, so two keys would not serialize in a stable order, and the format wants the
same inputs to give the same bytes. The header reader is our own too, so that :func:`read_config` works on
a damaged or truncated file without reading tensor data. The tensor itself is decoded by safetensors, after
its entry, shape and size are checked. Nothing here ever unpickles, and nothing here knows the value object
(:class:`steerkit.SteeringVector` builds itself from :class:`ArtifactParts`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from steerkit import constants
from steerkit._io import loads_json, recover
from steerkit.config import SteerConfig
from steerkit.errors import (
    ArtifactCorruptError,
    ArtifactFormatError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactValueError,
    ArtifactVersionError,
)

__all__ = ["ArtifactParts", "adapter_sha256", "artifact_files", "read_config", "read_dir", "tensor_sha256"]

_MAX_HEADER = 100 * 1024 * 1024


def tensor_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's float32 little-endian bytes (the ``task_vector_sha256`` of the config).

    Args:
        tensor: Any tensor; it is converted to float32 on the CPU first.

    Returns:
        The hex digest.
    """
    array = tensor.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False)
    return hashlib.sha256(array.tobytes()).hexdigest()


def adapter_sha256(files: Mapping[str, bytes]) -> str:
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


@dataclass(frozen=True)
class ArtifactParts:
    """What one verified read of an artifact folder gives (:func:`read_dir`).

    Attributes:
        task_vector: float32 ``[V]``.
        config: The validated config.
        adapter_files: The adapter's files (relative name → bytes), or ``None`` when the artifact has none.
        directory: The folder read.
    """

    task_vector: Tensor
    config: SteerConfig
    adapter_files: dict[str, bytes] | None
    directory: Path


def artifact_files(
    task_vector: Tensor, config: SteerConfig, card: str, adapter_files: Mapping[str, bytes] | None
) -> dict[str, bytes]:
    """Every file of an artifact, relative name → bytes: the same inputs always give the same bytes."""
    config_json = config.to_json()
    metadata = {"format": constants.FORMAT_TAG, "config": config_json}
    out = {
        constants.STEERING_FILE: _safetensors_bytes(task_vector, metadata),
        constants.CONFIG_FILE: config_json.encode(),
        constants.CARD_FILE: card.encode(),
    }
    for name, content in (adapter_files or {}).items():
        out[f"{constants.ADAPTER_DIR}/{name}"] = content
    return out


def read_dir(directory: str | os.PathLike[str], *, links_into: str | os.PathLike[str] | None = None) -> ArtifactParts:
    """Read and verify an artifact folder once: header, config (both copies), tensor, checksums, adapter files.

    Args:
        directory: A folder written by :meth:`steerkit.SteeringVector.save` (or a Hub snapshot of one).
        links_into: Symbolic links are refused unless they point to a regular file inside this folder (default:
            for a Hub cache snapshot ``…/snapshots/<commit>``, the cache's ``blobs/`` its files link to).

    Returns:
        The verified :class:`ArtifactParts`.

    Raises:
        ArtifactNotFoundError: No ``steering.safetensors`` there.
        ArtifactFormatError: A subclass naming the file and the problem (corrupt, checksum, missing key, bad
            value, newer version, a symlink, a pickle file). Nothing is ever unpickled.
    """
    directory = Path(directory)
    tensor_path = directory / constants.STEERING_FILE
    if not os.path.lexists(tensor_path):
        recover(directory)  # a save killed between its two renames left the old artifact beside it
    if links_into is None and directory.parent.name == "snapshots":  # a Hub cache snapshot: links into blobs/
        links_into = directory.parent.parent / "blobs"
    root = None if links_into is None else Path(links_into).resolve()
    for name in (constants.STEERING_FILE, constants.CONFIG_FILE, constants.ADAPTER_DIR):
        _refuse_link(directory / name, root)
    if not tensor_path.is_file():
        raise ArtifactNotFoundError(
            f"'{directory}' has no {constants.STEERING_FILE}",
            hint="is this a steering artifact? create one with `steerkit build`",
            path=str(tensor_path),
        )
    with tensor_path.open("rb") as handle:
        head, header = _read_header(handle, tensor_path)
        config = _config_from_header(header, tensor_path)
        config_path = directory / constants.CONFIG_FILE
        if config_path.is_file():
            on_disk = loads_json(config_path.read_bytes(), f"'{config_path}'", hint=_REDO)
            if on_disk != config:
                raise ArtifactIntegrityError(
                    f"'{config_path}' differs from the config embedded in '{tensor_path}'",
                    hint="one of the two files was edited; re-download or re-create the artifact",
                    path=str(config_path),
                )
        parsed = SteerConfig.from_dict(config, where=str(tensor_path))
        vector = _read_tensor(handle, head, header, parsed.vocab_size, tensor_path)
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
    return ArtifactParts(
        task_vector=vector, config=parsed, adapter_files=_read_adapter(directory, parsed, root), directory=directory
    )


_REDO = "re-download or re-create the artifact"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


def _refuse_link(path: Path, root: Path | None) -> None:
    """Refuse a symbolic link, unless it points to a regular file inside ``root`` (the Hub cache's blobs)."""
    if not path.is_symlink():
        return
    if root is not None:
        real = path.resolve()
        if real.is_file() and real.is_relative_to(root):
            return
    raise ArtifactCorruptError(
        f"'{path}' is a symbolic link; steerkit never follows links inside an artifact",
        hint="replace the link with the file itself (copy it), or re-create the artifact",
        path=str(path),
    )


def _safetensors_bytes(vector: Tensor, metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding of ``{"task_vector": vector}`` with ``metadata``, byte-for-byte reproducible.

    ``safetensors.torch.save`` orders ``__metadata__`` keys by a randomly seeded hash map, so two saves of
    the same data can differ; the format is simple enough to write with a fixed key order instead: an
    8-byte little-endian header length, the JSON header padded with spaces to a multiple of 8, the data.
    """
    data = vector.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False).tobytes()
    header = {
        "__metadata__": {key: metadata[key] for key in sorted(metadata)},
        constants.TENSOR_NAME: {"dtype": "F32", "shape": [vector.numel()], "data_offsets": [0, len(data)]},
    }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _read_header(handle: BinaryIO, path: Path) -> tuple[bytes, dict[str, Any]]:
    """``(the 8 + N header bytes, the parsed header)`` of an open file, without reading tensor data.

    Anything that is not safetensors is refused by its first bytes; nothing is ever unpickled.
    """
    raw = handle.read(8)
    size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
    if 2 <= size <= _MAX_HEADER:
        raw += handle.read(min(size, 8))
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
    raw += handle.read(8 + size - len(raw))
    if 8 + size > len(raw):
        raise ArtifactCorruptError(
            f"'{path}' is truncated: its header needs {size} bytes but only {len(raw) - 8} follow",
            hint=_REDO,
            path=str(path),
        )
    try:
        header = loads_json(raw[8:], f"'{path}'", hint=_REDO)
    except ArtifactFormatError:
        header = None
    if not isinstance(header, dict):
        raise ArtifactCorruptError(
            f"'{path}' has an unreadable safetensors header (not a JSON object)",
            hint=_REDO,
            path=str(path),
        )
    return raw, header


def _read_tensor(handle: BinaryIO, head: bytes, header: Mapping[str, Any], vocab_size: int, path: Path) -> Tensor:
    """The ``task_vector`` of an open file, after checking its entry against the format and the file's size."""
    entries = sorted(k for k in header if k != "__metadata__")
    if entries != [constants.TENSOR_NAME]:
        raise ArtifactValueError(
            f"'{path}' must hold exactly one tensor '{constants.TENSOR_NAME}', found {entries[:5]}",
            hint="re-create the artifact with `steerkit build`",
            path=str(path),
        )
    info = header[constants.TENSOR_NAME]
    expected = {"dtype": "F32", "shape": [vocab_size], "data_offsets": [0, 4 * vocab_size]}
    got = {key: info.get(key) for key in expected} if isinstance(info, Mapping) else info
    if got != expected:
        raise ArtifactValueError(
            f"'{path}': tensor '{constants.TENSOR_NAME}' is {str(got)[:200]}, expected {expected} "
            "(float32 [vocab_size])",
            hint="re-create the artifact with `steerkit build`",
            path=str(path),
            expected=expected,
            got=got,
        )
    body = os.fstat(handle.fileno()).st_size - len(head)  # checked before any tensor byte is read
    if body != 4 * vocab_size:
        problem = "is truncated" if body < 4 * vocab_size else "has trailing bytes"
        raise ArtifactCorruptError(
            f"'{path}' {problem}: its tensor data is {body} bytes, expected {4 * vocab_size}",
            hint=_REDO,
            path=str(path),
        )
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(head + handle.read(body))[constants.TENSOR_NAME].to(torch.float32)
    except Exception as exc:  # SafetensorError, or anything its parser raises: never a pickle
        raise ArtifactCorruptError(
            f"'{path}' could not be decoded by safetensors ({str(exc)[:200]})",
            hint=_REDO,
            path=str(path),
        ) from None


def _config_from_header(header: Mapping[str, Any], path: Path) -> dict[str, Any]:
    meta = header.get("__metadata__")
    if not isinstance(meta, Mapping):
        meta = {}
    fmt = meta.get("format")
    if fmt != constants.FORMAT_TAG:
        major = fmt.rpartition("/")[2] if isinstance(fmt, str) and fmt.startswith("steerkit/") else None
        if major is not None and major.isdigit() and len(major) < 10 and int(major) > constants.FORMAT_MAJOR:
            raise ArtifactVersionError(
                f"'{path}' is format {fmt}, newer than this steerkit reads ({constants.FORMAT_TAG})",
                hint="upgrade steerkit: pip install -U steerkit",
                path=str(path),
                expected=constants.FORMAT_TAG,
                got=fmt,
            )
        raise ArtifactCorruptError(
            f"'{path}' is not a steerkit artifact (metadata format={str(fmt)[:60]!r}, expected "
            f"{constants.FORMAT_TAG!r})",
            hint="create artifacts with `steerkit build`",
            path=str(path),
        )
    text = meta.get("config")
    if not isinstance(text, str):
        raise ArtifactCorruptError(
            f"'{path}' lacks a readable 'config' string in its metadata", hint="re-create the artifact", path=str(path)
        )
    config = loads_json(text, f"'{path}': the embedded config", hint=_REDO)
    if not isinstance(config, dict):
        raise ArtifactCorruptError(f"'{path}': the embedded config is not a JSON object", path=str(path))
    return config


def _read_adapter(directory: Path, config: SteerConfig, root: Path | None) -> dict[str, bytes] | None:
    """The adapter's regular files (safetensors weights only: no pickle format is accepted, links are refused)."""
    folder = directory / constants.ADAPTER_DIR
    if not folder.is_dir():
        return None
    files: dict[str, bytes] = {}
    for base, dirs, names in os.walk(folder):
        for name in sorted(dirs + names):
            path = Path(base, name)
            _refuse_link(path, root)
            rel = path.relative_to(folder).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise ArtifactCorruptError(
                    f"'{path}': the file name is not UTF-8", hint=_REDO, path=str(path)
                ) from None
            if name in names and name.lower().endswith(_PICKLE_SUFFIXES):
                raise ArtifactCorruptError(
                    f"'{path}' is a pickle-format file; steerkit accepts safetensors adapter weights only",
                    hint="re-save the adapter with safe_serialization=True (adapter_model.safetensors)",
                    path=str(path),
                )
            if name in names:
                if not path.is_file():
                    raise ArtifactCorruptError(f"'{path}' is not a regular file", hint=_REDO, path=str(path))
                files[rel] = path.read_bytes()
    files = dict(sorted(files.items()))
    expected = (config.adapter or {}).get("sha256")
    if expected is not None and adapter_sha256(files) != expected:
        raise ArtifactIntegrityError(
            f"'{folder}': adapter files do not match the config's adapter sha256",
            hint="re-download or re-create the artifact",
            path=str(folder),
        )
    return files or None


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
    file = p / constants.STEERING_FILE if p.is_dir() else p
    if file is not p:
        _refuse_link(file, None)
    if not file.is_file():
        raise ArtifactNotFoundError(
            f"no {constants.STEERING_FILE} at '{p}'", hint="give an artifact directory", path=str(file)
        )
    with file.open("rb") as handle:
        _, header = _read_header(handle, file)
    return SteerConfig.from_dict(_config_from_header(header, file), where=str(file))
