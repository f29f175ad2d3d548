"""Every error steerkit raises on purpose: one module, one base class, actionable messages.

Each class subclasses :class:`SteerkitError` and the builtin a caller would naturally catch
(``FileNotFoundError``, ``ValueError``, ``PermissionError``, ``ConnectionError``). Each carries the fields it
is about (``path``, ``repo_id``, ``expected``, ``got``) and a ``hint`` saying how to fix the problem; ``str()``
of the error is the one-line message, the hint appended after " — ".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "AdapterError",
    "ArtifactCorruptError",
    "ArtifactExistsError",
    "ArtifactFormatError",
    "ArtifactIntegrityError",
    "ArtifactLockError",
    "ArtifactMissingKeyError",
    "ArtifactNotFoundError",
    "ArtifactValueError",
    "ArtifactVersionError",
    "DataFormatError",
    "EmptyDataError",
    "HubAuthError",
    "HubConnectionError",
    "HubError",
    "HubFileNotFoundError",
    "HubServerError",
    "IncompatibleModelError",
    "InvalidOptionError",
    "ModelLoadError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "SteerkitError",
]


class SteerkitError(Exception):
    """Base class of every error steerkit raises on purpose.

    Args:
        message: What went wrong, naming the thing it is about.
        hint: What to do about it (optional).
        **fields: Structured details (``path``, ``repo_id``, ``expected``, ``got``, ...) kept as attributes.
    """

    code = "steerkit_error"

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


# --- artifacts -------------------------------------------------------------------------------------------


class ArtifactNotFoundError(SteerkitError, FileNotFoundError):
    """No steering artifact (or one of its files) at the given path."""

    code = "artifact_not_found"


class ArtifactExistsError(SteerkitError, FileExistsError):
    """Saving would overwrite an existing artifact without ``overwrite=True`` / ``--force``."""

    code = "artifact_exists"


class ArtifactLockError(SteerkitError, OSError):
    """The folder an artifact is saved into cannot be locked (a file system without ``flock``), so a save there is
    not safe against a concurrent one."""

    code = "artifact_lock"


class ArtifactFormatError(SteerkitError, ValueError):
    """An artifact that cannot be used as it is; the subclasses say why."""

    code = "artifact_format"


class ArtifactCorruptError(ArtifactFormatError):
    """A file that cannot be parsed: truncated, not safetensors (a pickle is never unpickled), bad JSON."""

    code = "artifact_corrupt"


class ArtifactIntegrityError(ArtifactFormatError):
    """A checksum in the config does not match the bytes on disk."""

    code = "artifact_integrity"


class ArtifactMissingKeyError(ArtifactFormatError):
    """The config lacks a key that format 1 requires."""

    code = "artifact_missing_key"


class ArtifactValueError(ArtifactFormatError):
    """A value of the right key but the wrong kind: shape, non-finite numbers, an unknown name."""

    code = "artifact_value"


class ArtifactVersionError(ArtifactFormatError):
    """The artifact was written by a newer major format version than this steerkit reads."""

    code = "artifact_version"


# --- models, data, options -------------------------------------------------------------------------------


class IncompatibleModelError(SteerkitError, ValueError):
    """The model or tokenizer does not match the steering vector (vocabulary width or tokenizer hash)."""

    code = "incompatible_model"


class ModelLoadError(SteerkitError, OSError):
    """A model or tokenizer could not be resolved from a Hub id, a local directory or a GGUF file."""

    code = "model_load"


class AdapterError(SteerkitError, ValueError):
    """A PEFT adapter that cannot be used (missing, unsupported method, wrong base model)."""

    code = "adapter"


class DataFormatError(SteerkitError, ValueError):
    """Calibration or evaluation data that cannot be read: the message names the file and line."""

    code = "data_format"


class EmptyDataError(DataFormatError):
    """A data source that yields no usable example."""

    code = "empty_data"


class InvalidOptionError(SteerkitError, ValueError):
    """An argument outside its legal values; the message lists the legal ones."""

    code = "invalid_option"


# --- the Hub ---------------------------------------------------------------------------------------------


class HubError(SteerkitError):
    """A Hugging Face Hub operation failed; the subclasses say how."""

    code = "hub"


class RepoNotFoundError(HubError, FileNotFoundError):
    """The repository does not exist (or is private and no valid token was given)."""

    code = "repo_not_found"


class RevisionNotFoundError(HubError, FileNotFoundError):
    """The repository exists but the revision (branch, tag or commit) does not."""

    code = "revision_not_found"


class HubFileNotFoundError(HubError, FileNotFoundError):
    """The repository and revision exist but lack a file the artifact needs."""

    code = "hub_file_not_found"


class HubAuthError(HubError, PermissionError):
    """The Hub refused the request (401/403): missing, invalid or insufficient token."""

    code = "hub_auth"


class HubServerError(HubError):
    """The Hub answered with a server error (5xx)."""

    code = "hub_server"


class HubConnectionError(HubError, ConnectionError):
    """The Hub could not be reached (connection refused, DNS, offline mode with nothing cached)."""

    code = "hub_connection"


def show(value: Any) -> str:
    """A value for a one-line message (long ones shortened; an int too long for ``str`` shown by its type)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def describe_path(path: str | Path) -> str:
    """A path as quoted in messages."""
    return f"'{path}'"
