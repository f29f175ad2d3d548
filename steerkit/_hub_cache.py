"""Evicting one snapshot from the Hub cache without harming concurrent downloads of the same repo.

huggingface_hub's ``scan_cache_dir().delete_revisions()`` deletes every blob no *complete* snapshot references, so a
pull of one revision that fails verification could delete a blob that a concurrent pull of another revision has
just downloaded (its snapshot link not yet made). :func:`evict_snapshot` deletes only the blobs that no other
snapshot references *and* that no download holds: huggingface_hub downloads a blob under the lock file
``<cache>/.locks/<repo folder>/<blob>.lock``, and a blob whose lock cannot be taken at once is left alone.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

__all__ = ["evict_snapshot"]


def _blobs(snapshot: Path, blobs_dir: Path) -> set[Path]:
    """The blobs of ``blobs_dir`` the files of ``snapshot`` link to."""
    found: set[Path] = set()
    for entry in snapshot.rglob("*"):
        if entry.is_symlink():
            target = entry.resolve()
            if target.parent == blobs_dir.resolve():
                found.add(target)
    return found


def _delete_unless_locked(blob: Path, lock: Path) -> bool:
    """Delete ``blob`` while holding its download lock; leave it when a download holds the lock."""
    from filelock import FileLock, Timeout

    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock), timeout=0):
            blob.unlink(missing_ok=True)
    except Timeout:
        return False
    return True


def evict_snapshot(snapshot: Path) -> bool:
    """Remove a cached snapshot, its unshared and unlocked blobs, the refs pointing at it and its tree listing.

    Returns:
        Whether ``snapshot`` was a Hub-cache snapshot (and was removed).
    """
    if snapshot.parent.name != "snapshots":
        return False
    storage, commit = snapshot.parent.parent, snapshot.name
    blobs_dir = storage / "blobs"
    others = set().union(*(_blobs(s, blobs_dir) for s in snapshot.parent.iterdir() if s.name != commit and s.is_dir()))
    mine = _blobs(snapshot, blobs_dir)
    shutil.rmtree(snapshot, ignore_errors=True)
    locks = storage.parent / ".locks" / storage.name
    for blob in sorted(mine - others):
        _delete_unless_locked(blob, locks / f"{blob.name}.lock")
    refs = storage / "refs"
    for ref in refs.rglob("*") if refs.is_dir() else ():
        with contextlib.suppress(OSError):
            if ref.is_file() and ref.read_text().strip() == commit:
                ref.unlink()
    (storage / "trees" / f"{commit}.json").unlink(missing_ok=True)
    return True
