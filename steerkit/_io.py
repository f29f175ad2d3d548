"""File helpers with one home: write a ``{name: bytes}`` mapping into a folder, and replace a folder atomically.

:func:`atomic_directory` is the careful swap of DESIGN §2: the new content is staged in a temporary folder beside
the target, the old target (if any) is moved aside, the new one moved in with ``os.replace``, and the old one is
put back if that fails. An interrupted write leaves the old folder or the new one, never a mixture, and no
temporary folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["atomic_directory", "write_files"]


def write_files(folder: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write relative name → bytes into ``folder`` (sub-folders created)."""
    for name, content in files.items():
        path = Path(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on a clean exit it replaces ``target`` atomically.

    The caller decides beforehand whether ``target`` may be replaced. On an exception the staging folder is
    removed and ``target`` is left as it was.

    Example:
        >>> with atomic_directory("out") as staging:                   # doctest: +SKIP
        ...     write_files(staging, {"a.txt": b"hello"})
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old: Path | None = None
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it 0o700
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "previous")
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old / "previous", target)  # put the old folder back
                raise
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        # The old folder is deleted only once the target holds a complete one (new or restored).
        if old is not None and (target.is_dir() or not (old / "previous").exists()):
            shutil.rmtree(old, ignore_errors=True)
