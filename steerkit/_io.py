"""File and JSON helpers with one home: strict JSON in, ``{name: bytes}`` out, and the atomic folder swap.

:func:`loads_json` / :func:`check_json` accept only JSON that round-trips exactly (finite numbers, UTF-8 strings,
bounded nesting and integers) and raise steerkit errors for anything else. :func:`atomic_directory` is the careful
swap the artifact format promises (docs/artifact-format.md): the new content is staged in ``.NAME.XXXXXXXX.tmp``
beside the target, the old target (if any) is moved to ``.NAME.XXXXXXXX.old/previous``, the new one moved in with
``os.replace``, and the old one put back if that fails. A process killed between the two renames leaves the target
absent and the old folder in ``.old/previous``: :func:`recover` (run by the next save, and by a load of that target)
puts it back and removes stale staging folders. The swap holds an ``flock`` on the parent folder, so two savers
never interleave, and a save that must not replace anything fails when a target appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from steerkit.errors import ArtifactCorruptError, ArtifactExistsError, ArtifactValueError

__all__ = ["atomic_directory", "check_json", "loads_json", "recover", "write_files"]

_MAX_DEPTH = 64


def write_files(folder: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write relative name → bytes into ``folder`` (sub-folders created)."""
    for name, content in files.items():
        path = Path(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


# --- strict JSON ---------------------------------------------------------------------------------------------


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NonFinite(text[:20])
    return number


def loads_json(raw: str | bytes, where: str, *, hint: str) -> Any:
    """``json.loads`` that raises only steerkit errors, then :func:`check_json` of the result.

    ``where`` names the text in messages, quoted as it should appear (``"'steer_config.json'"``).

    Raises:
        ArtifactValueError: ``NaN``, ``Infinity`` or a number that overflows a float.
        ArtifactCorruptError: Not UTF-8 JSON, too deep, an integer over 4,300 digits, a lone surrogate.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise ArtifactValueError(f"{where}: JSON holds a non-finite number ({exc})", hint=hint, path=where) from None
    except (ValueError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ArtifactCorruptError(f"{where} is not valid JSON ({first})", hint=hint, path=where) from None
    check_json(value, where, hint=hint)
    return value


def check_json(value: Any, where: str, *, hint: str) -> None:
    """Refuse what JSON cannot round-trip: non-finite floats, lone surrogates, huge ints, deep nesting, other types.

    Raises:
        ArtifactValueError: A non-finite number. ArtifactCorruptError: anything else.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ArtifactCorruptError(f"{where}: JSON nested deeper than {_MAX_DEPTH} levels", hint=hint, path=where)
        if isinstance(node, str):
            _text(node, where, hint)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ArtifactValueError(f"{where}: a number is not finite ({node})", hint=hint, path=where)
        elif isinstance(node, int) and not isinstance(node, bool):
            if node.bit_length() > 14000:
                raise ArtifactCorruptError(f"{where}: an integer has over 4,000 digits", hint=hint, path=where)
        elif isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise ArtifactCorruptError(f"{where}: a JSON object key is not a string", hint=hint, path=where)
                _text(key, where, hint)
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif node is not None and not isinstance(node, bool):
            raise ArtifactCorruptError(f"{where}: {type(node).__name__} is not a JSON value", hint=hint, path=where)


def _text(text: str, where: str, hint: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ArtifactCorruptError(f"{where}: a string holds a lone surrogate", hint=hint, path=where) from None


# --- the atomic swap -----------------------------------------------------------------------------------------


def _leftovers(target: Path, suffix: str) -> list[Path]:
    """``.NAME.XXXXXXXX<suffix>`` folders beside ``target`` (exactly what :func:`tempfile.mkdtemp` names)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return sorted(target.parent / n for n in names if pattern.fullmatch(n))


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file is left behind).

    Two savers into one folder are serialised by it; a file system that refuses ``flock`` (some network mounts) is
    an :class:`~steerkit.errors.ArtifactLockError`, never a silent save without the lock. Without ``fcntl`` (not a
    POSIX system) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            from steerkit.errors import ArtifactLockError

            raise ArtifactLockError(
                f"cannot lock '{parent}' to save into it ({exc.strerror or exc}): a concurrent save could "
                "delete this one's files",
                hint="save to a folder on a local file system (one that supports flock), then copy it",
                path=str(parent),
            ) from exc
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _heal(target: Path) -> bool:
    """Put back an old folder a killed swap left in ``.old/previous``, then drop leftovers; with the lock held."""
    restored = False
    olds = [p for p in _leftovers(target, ".old") if (p / "previous").is_dir()]
    if olds and not os.path.lexists(target):
        newest = max(olds, key=lambda p: (p / "previous").stat().st_mtime_ns)
        os.replace(newest / "previous", target)
        restored = True
    if os.path.isdir(target):  # only once the target is complete may a backup go
        for path in _leftovers(target, ".old"):
            shutil.rmtree(path, ignore_errors=True)
    for path in _leftovers(target, ".tmp"):
        shutil.rmtree(path, ignore_errors=True)
    return restored


def recover(target: str | os.PathLike[str]) -> bool:
    """Restore ``target`` if a killed save left it absent with its old folder beside it, and clean leftovers.

    Returns:
        Whether an old folder was put back.
    """
    target = Path(target)
    if not (_leftovers(target, ".old") or _leftovers(target, ".tmp")):
        return False
    with _parent_lock(target.parent):
        return _heal(target)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on a clean exit it replaces ``target`` atomically.

    The caller decides beforehand whether ``target`` may be replaced; with ``replace=False`` only a missing or
    empty ``target`` is, in the same ``rename`` (so of two concurrent savers only one succeeds). On an exception
    the staging folder is removed and ``target`` is left as it was.

    Raises:
        ArtifactExistsError: ``replace=False`` and ``target`` is (or became) a non-empty folder.

    Example:
        >>> with atomic_directory("out") as staging:                   # doctest: +SKIP
        ...     write_files(staging, {"a.txt": b"hello"})
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _parent_lock(target.parent):
        _heal(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        old: Path | None = None
        try:
            yield staging
            os.chmod(staging, 0o755)  # mkdtemp makes it 0o700
            if replace and target.is_dir() and any(target.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.replace(target, old / "previous")
                try:
                    os.replace(staging, target)
                except BaseException:
                    os.replace(old / "previous", target)  # put the old folder back
                    raise
            else:
                try:
                    os.replace(staging, target)  # rename(2): refuses a non-empty target directory
                except OSError as exc:
                    if not (target.is_dir() and any(target.iterdir())):
                        raise
                    raise ArtifactExistsError(
                        f"'{target}' already exists and is not empty",
                        hint="another process saved there first; pass overwrite=True to replace it",
                        path=str(target),
                    ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            # The old folder is deleted only once the target holds a complete one (new or restored).
            if old is not None and (target.is_dir() or not (old / "previous").exists()):
                shutil.rmtree(old, ignore_errors=True)


def check_replaceable(target: Path, *, overwrite: bool, marker: str, kind: str) -> None:
    """Refuse a target folder that may not be written: a file, a non-empty folder without ``overwrite``, or a
    non-empty folder without ``marker`` (so that ``overwrite`` never replaces a folder of the user's own).

    Raises:
        ArtifactExistsError: One line naming the path, and how to fix it.
    """
    from steerkit.errors import ArtifactExistsError

    if target.exists() and not target.is_dir():
        raise ArtifactExistsError(
            f"'{target}' exists and is not a directory", hint="choose another output path", path=str(target)
        )
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ArtifactExistsError(
                f"'{target}' already exists and is not empty",
                hint="pass overwrite=True (CLI: --force) to replace it, or choose another path",
                path=str(target),
            )
        if not (target / marker).is_file():
            raise ArtifactExistsError(
                f"'{target}' is a non-empty directory but not {kind} (no {marker}); "
                "refusing to replace it even with overwrite=True",
                hint="choose a new or empty directory",
                path=str(target),
            )
