"""Sharing on the Hugging Face Hub: resolve a folder or a Hub id to a verified artifact, push a folder in one
commit, list the cache.

Follows huggingface_hub's own conventions (``ModelHubMixin``): a local directory wins, else a ``snapshot_download``
of exactly the files format 1 verifies (:data:`FETCH_PATTERNS`: no ``adapter/*``, no card) into the standard Hub
cache, so ``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``HF_HUB_OFFLINE`` and
``endpoint`` behave as they do for models. A download is read and verified once (:func:`steerkit.format.read_dir`)
before it is returned, and a snapshot that fails verification is removed from the cache
(:func:`steerkit._hub_cache.evict_snapshot`: only blobs no other snapshot uses and no download holds) so that it
can never be loaded offline later. A push is
``create_repo(exist_ok=True)`` and one ``upload_folder`` commit of a folder the value object wrote.

Errors from huggingface_hub and the network are translated (:mod:`steerkit._hub_errors`) into
:class:`steerkit.errors.HubError` subclasses whose message names the repo id and says what to do. A token is
never printed, logged, stored in an error or written into the card or config.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from steerkit import constants as C
from steerkit._hub_cache import evict_snapshot
from steerkit._hub_errors import DEFAULT_BRANCH, Context, translated
from steerkit._hub_transfer import deadline, progress_bars, stop_checks_per_chunk, stoppable_tqdm, within
from steerkit._io import recover
from steerkit.errors import (
    ArtifactCorruptError,
    ArtifactFormatError,
    ArtifactNotFoundError,
    HubFileNotFoundError,
    InvalidOptionError,
)
from steerkit.format import ArtifactParts, read_config, read_dir

__all__ = ["check_push_revision", "list_local", "push_folder", "resolve"]

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")

#: Exactly the files format 1 verifies (never ``adapter/*``: a pickle ``adapter/*.bin`` is not even downloaded).
#: The model card is not among them: no checksum covers it, so it never enters the cache; a copy saved from a
#: download (``pull --to``, ``save``) gets a card rendered from the verified config.
FETCH_PATTERNS = tuple(p for p in C.ARTIFACT_PATTERNS if p != C.CARD_FILE)


# --- push -------------------------------------------------------------------------------------------------


def check_push_revision(revision: str | None) -> None:
    """Refuse a revision one cannot push to (a commit sha or a ``refs/...`` ref), before any work is done.

    Raises:
        InvalidOptionError: ``revision`` is a commit sha or a pull-request ref.
    """
    if revision is not None and (_COMMIT_SHA.fullmatch(revision) or revision.startswith("refs/")):
        raise InvalidOptionError(
            f"cannot push to revision {revision!r}: pushes go to a branch",
            hint="pass a branch name (created when new) or leave revision unset for 'main'",
            got=revision,
        )


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    commit_message: str,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    show_progress: bool = False,
) -> str:
    """Upload an artifact folder to a Hub model repo in one commit (the repo and the branch are created if needed).

    Stale adapter files from an earlier push are removed in the same commit. Uploading files identical to the
    branch's makes no commit and returns the head's URL. :meth:`steerkit.SteeringVector.push_to_hub` writes the
    folder (with the card rendered for ``repo_id``) and calls this.

    Args:
        folder: The artifact folder.
        repo_id: ``"user/name"`` or ``"org/name"``.
        commit_message: Summary of the commit.
        private: Create the repo private (an existing repo keeps its visibility).
        revision: Branch to commit to (created from ``main`` when new); default ``main``.
        token: Hub token with write access (default: the logged-in token); never printed or stored.
        endpoint: Hub URL (default: huggingface_hub's, i.e. ``HF_ENDPOINT`` or https://huggingface.co).
        show_progress: Show huggingface_hub's upload display.

    Returns:
        The URL of the commit.

    Raises:
        InvalidOptionError: ``revision`` is a commit sha or a pull-request ref (one can only push to a branch).
        HubAuthError: No token, an invalid one (401), or one without write access to ``repo_id`` (403).
        HubServerError: The Hub answered 5xx. HubConnectionError: The Hub cannot be reached, or offline mode.
        HubError: Any other refusal by the Hub.
    """
    from huggingface_hub import HfApi

    check_push_revision(revision)
    ctx = Context(repo_id=repo_id, revision=revision, endpoint=endpoint, action="push to", token=token)
    api = HfApi(endpoint=endpoint, token=token)
    with translated(ctx), progress_bars(show_progress):
        _ensure_repo(api, repo_id, private=private)
        if revision is not None and revision != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            delete_patterns=[f"{C.ADAPTER_DIR}/*"],
        )
    return str(info.commit_url)


def _ensure_repo(api: Any, repo_id: str, *, private: bool) -> None:
    """``create_repo(exist_ok=True)``, tolerating a huggingface_hub bug on custom endpoints.

    When the token may not create the repo (401/402/403) but the repo exists, huggingface_hub 2.x confirms it
    with ``repo_info`` and then builds the returned ``RepoUrl`` without the custom ``endpoint``, which raises
    ``HfUriError``. The repo exists, which is all a push needs; the upload then reports any missing permission.
    """
    from huggingface_hub import errors as hf_errors

    uri_error: Any = getattr(hf_errors, "HfUriError", ())
    with contextlib.suppress(uri_error):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")


# --- resolve ----------------------------------------------------------------------------------------------


def resolve(
    path_or_repo_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
    show_progress: bool = False,
) -> ArtifactParts:
    """The one resolver: a local artifact folder wins, else a verified snapshot of a Hub repo; read once.

    Only the artifact's files are fetched. Offline (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) or when
    the Hub cannot be reached, the cached snapshot of ``revision`` is used. A snapshot that fails verification is
    deleted from the cache before the error is raised.

    Args:
        path_or_repo_id: A folder written by :meth:`steerkit.SteeringVector.save`, or a Hub repo id ``"user/name"``.
        revision: Branch, tag or commit sha (default ``main``).
        token: Hub token for private repos (default: the logged-in token); never printed or stored.
        cache_dir: Hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
        local_files_only: Never use the network.
        endpoint: Hub URL (default: huggingface_hub's).
        show_progress: Show download progress bars.

    Returns:
        The verified :class:`~steerkit.format.ArtifactParts` (``directory`` is the folder or the snapshot).

    Raises:
        ArtifactNotFoundError: Neither an artifact folder nor a valid Hub repo id.
        RepoNotFoundError: No such repo (or it is private and the token cannot read it).
        RevisionNotFoundError: The repo has no such branch, tag or commit.
        HubFileNotFoundError: The repo is not a steerkit artifact (no ``steering.safetensors``).
        HubAuthError: The token is invalid (401) or lacks access (403), or the repo is gated.
        HubServerError: The Hub answered 5xx and nothing is cached.
        HubConnectionError: The Hub cannot be reached (or offline mode) and nothing is cached, or the download
            took longer than ``$STEERKIT_HUB_DEADLINE`` seconds (default 600).
        InvalidOptionError: ``$STEERKIT_HUB_DEADLINE`` is not a positive number.
        ArtifactFormatError: The files fail verification (a subclass says how); a snapshot is evicted.

    Example:
        >>> resolve("me/truthfulqa-smollm2", revision="v1").config.vocab_size     # doctest: +SKIP
        49152
    """
    if not isinstance(path_or_repo_id, (str, os.PathLike)):
        raise InvalidOptionError(
            f"a steering vector is named by a folder or a Hub repo id, got {type(path_or_repo_id).__name__}",
            hint="give a path (str or pathlib.Path) or 'user/name'",
        )
    local = Path(path_or_repo_id)
    if not local.exists():
        recover(local)  # a save killed between its two renames left the old artifact beside it
    if local.is_dir():
        return read_dir(local)
    text = str(path_or_repo_id)
    if local.exists() or not _is_repo_id(text):
        raise ArtifactNotFoundError(
            f"no steering artifact at '{text}'",
            hint="give a directory written by `steerkit build`/`save()` or a Hub repo id like 'user/name'",
            path=text,
        )
    return _fetch_verified(
        text,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        endpoint=endpoint,
        show_progress=show_progress,
    )


def _is_repo_id(text: str) -> bool:
    """Whether ``text`` is a ``namespace/name`` Hub repo id (huggingface_hub's own validation)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _fetch_verified(
    repo_id: str,
    *,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    endpoint: str | None,
    show_progress: bool,
) -> ArtifactParts:
    from huggingface_hub import constants, snapshot_download

    ctx = Context(
        repo_id=repo_id, revision=revision, endpoint=endpoint, action="download", token=token, offline=local_files_only
    )
    download = cast("Callable[..., str]", snapshot_download)  # one overload: dry_run is never set
    limit = deadline()
    stop = threading.Event()  # set at the deadline: the abandoned download stops at its next chunk
    with translated(ctx), stop_checks_per_chunk():
        folder = Path(
            within(
                limit,
                ctx,
                lambda: download(
                    repo_id,
                    repo_type="model",
                    revision=revision,
                    cache_dir=None if cache_dir is None else Path(cache_dir),
                    local_files_only=local_files_only,
                    token=token,
                    endpoint=endpoint,
                    allow_patterns=list(FETCH_PATTERNS),
                    tqdm_class=stoppable_tqdm(stop, show=show_progress),
                    library_name="steerkit",
                    etag_timeout=min(float(constants.HF_HUB_ETAG_TIMEOUT), limit),  # per request
                ),
                stop=stop,
            )
        )
    if not (folder / C.STEERING_FILE).is_file():
        raise HubFileNotFoundError(
            f"Hub repo '{repo_id}' (revision '{ctx.shown_revision}', commit {folder.name[:12]}) has no "
            f"{C.STEERING_FILE}: it is not a steerkit artifact",
            hint="check the repo id and revision; artifacts are uploaded with vector.push_to_hub() / `steerkit push`",
            repo_id=repo_id,
            revision=ctx.shown_revision,
            filename=C.STEERING_FILE,
        )
    try:
        return read_dir(folder)
    except Exception as exc:  # whatever verification raised, a damaged download never stays in the cache
        err = exc if isinstance(exc, ArtifactFormatError) else _unexpected(exc, folder)
        evicted = evict_snapshot(folder)
        raise type(err)(
            f"Hub repo '{repo_id}' (revision '{ctx.shown_revision}', commit {folder.name[:12]}) failed verification: "
            f"{err.message}",
            hint="the files on the Hub are damaged or were changed after they were written"
            + ("; the download was removed from the cache" if evicted else "")
            + " — ask the owner to push the artifact again",
            **{**err.fields, "repo_id": repo_id, "revision": ctx.shown_revision},
        ) from None


def _unexpected(exc: Exception, folder: Path) -> ArtifactFormatError:
    """A typed error for a failure verification did not foresee (the snapshot is damaged in an unknown way)."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return ArtifactCorruptError(
        f"'{folder}' could not be read ({type(exc).__name__}{': ' + first if first else ''})",
        path=str(folder),
    )


# --- the local cache --------------------------------------------------------------------------------------


def list_local(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Steering artifacts in the local Hub cache: one entry per cached revision holding ``steering.safetensors``.

    Args:
        cache_dir: Hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).

    Returns:
        Dicts sorted by repo id then commit, with keys ``repo_id``, ``revision`` (the commit sha), ``refs``
        (branches/tags pointing at it, sorted), ``path`` (the snapshot folder), ``size`` (bytes on disk),
        ``base_model`` and ``vocab_size`` (from the safetensors header; ``None`` when it cannot be read).
        An empty list when the cache does not exist.

    Example:
        >>> [(a["repo_id"], a["refs"]) for a in list_local()]        # doctest: +SKIP
        [('me/truthfulqa-smollm2', ['main'])]
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise InvalidOptionError(
            f"the Hub cache '{cache_dir}' is a file, not a folder", hint="give the cache folder (HF_HUB_CACHE)"
        )
    try:
        info = scan_cache_dir(None if cache_dir is None else Path(cache_dir))
    except CacheNotFound:
        return []
    out: list[dict[str, Any]] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            tensor = rev.snapshot_path / C.STEERING_FILE
            if not tensor.is_file():
                continue
            try:
                config = read_config(tensor)
                base, width = config.base_model.get("name_or_path"), config.vocab_size
            except Exception:  # a damaged cached entry is listed, never fatal
                base, width = None, None
            out.append(
                {
                    "repo_id": repo.repo_id,
                    "revision": rev.commit_hash,
                    "refs": sorted(rev.refs),
                    "path": str(rev.snapshot_path),
                    "size": rev.size_on_disk,
                    "base_model": base,
                    "vocab_size": width,
                }
            )
    return sorted(out, key=lambda entry: (entry["repo_id"], entry["revision"]))
