"""Sharing on the Hugging Face Hub: push an artifact in one commit, pull it verified into the cache, list the cache.

Follows huggingface_hub's own conventions (``ModelHubMixin``): ``create_repo(exist_ok=True)``, the artifact saved
into a temporary directory and uploaded with one ``upload_folder`` commit; downloads are ``snapshot_download`` of
exactly the artifact's files (:data:`steerkit.constants.ARTIFACT_PATTERNS`) into the standard Hub cache, so
``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``HF_HUB_OFFLINE`` and ``endpoint`` behave as they
do for models. Every download is verified (format, checksums) before it is returned, and a snapshot that fails
verification is removed from the cache so that it can never be loaded offline later.

Errors from huggingface_hub and the network are translated into :class:`steerkit.errors.HubError` subclasses
whose message names the repo id and says what to do. A token is never printed, logged, stored in an error or
written into the card or config.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from steerkit import constants as C
from steerkit.errors import (
    ArtifactFormatError,
    HubAuthError,
    HubConnectionError,
    HubError,
    HubFileNotFoundError,
    HubServerError,
    InvalidOptionError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SteerkitError,
)

if TYPE_CHECKING:
    from steerkit.artifact import SteeringVector

__all__ = ["download_artifact", "list_local", "load_from_hub", "push_to_hub"]

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_DEFAULT_BRANCH = "main"


# --- push -------------------------------------------------------------------------------------------------


def push_to_hub(
    vector: SteeringVector,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    show_progress: bool = False,
) -> str:
    """Upload ``vector`` to a Hub model repo in one commit (the repo, and the branch, are created if needed).

    The commit holds ``steering.safetensors``, ``steer_config.json``, ``adapter/`` (when the vector carries its
    adapter; stale adapter files from an earlier push are removed) and ``README.md``, the model card rendered for
    ``repo_id``. Pushing a vector identical to the one on the branch makes no commit and returns the head's URL.

    Args:
        vector: The steering vector.
        repo_id: ``"user/name"`` or ``"org/name"``.
        private: Create the repo private (an existing repo keeps its visibility).
        revision: Branch to commit to (created from ``main`` when new); default ``main``.
        commit_message: Summary of the commit (a default names the base model and μ).
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

    Example:
        >>> url = vector.push_to_hub("me/truthfulqa-smollm2", private=True)          # doctest: +SKIP
        >>> SteeringVector.load("me/truthfulqa-smollm2", revision=url.rsplit("/", 1)[1])  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    from steerkit.card import render_card

    if revision is not None and (_COMMIT_SHA.fullmatch(revision) or revision.startswith("refs/")):
        raise InvalidOptionError(
            f"cannot push to revision {revision!r}: pushes go to a branch",
            hint="pass a branch name (created when new) or leave revision unset for 'main'",
            got=revision,
        )
    ctx = _Context(repo_id=repo_id, revision=revision, endpoint=endpoint, action="push to", token=token)
    api = HfApi(endpoint=endpoint, token=token)
    files = vector.files()
    files[C.CARD_FILE] = render_card(vector, repo_id=repo_id).encode()
    message = commit_message or (
        f"Upload SVDecode steering vector ({vector.config.base_model.get('name_or_path') or 'unknown base'}, "
        f"μ̄={vector.mu:.4g}, μ_s={vector.mu_static:.4g})"
    )
    with _translated(ctx), _progress_bars(show_progress), tempfile.TemporaryDirectory(prefix="steerkit-push-") as tmp:
        for name, content in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        _ensure_repo(api, repo_id, private=private)
        if revision is not None and revision != _DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type="model",
            revision=revision,
            commit_message=message,
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


# --- pull -------------------------------------------------------------------------------------------------


def download_artifact(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
    show_progress: bool = False,
) -> Path:
    """Download (or find in the cache) the artifact files of a Hub repo, verified, and return their folder.

    Only the artifact's files are fetched. Offline (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) or when
    the Hub cannot be reached, the cached snapshot of ``revision`` is used. The folder is verified as
    :meth:`SteeringVector.load` would; a snapshot that fails is deleted from the cache before the error is raised.

    Args:
        repo_id: ``"user/name"``.
        revision: Branch, tag or commit sha (default ``main``).
        token: Hub token for private repos (default: the logged-in token); never printed or stored.
        cache_dir: Hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
        local_files_only: Never use the network.
        endpoint: Hub URL (default: huggingface_hub's).
        show_progress: Show download progress bars.

    Returns:
        The snapshot folder inside the cache.

    Raises:
        HubError: A subclass (``RepoNotFoundError``, ``RevisionNotFoundError``, ``HubFileNotFoundError``,
            ``HubAuthError``, ``HubServerError``, ``HubConnectionError``); see :func:`load_from_hub`.
        ArtifactFormatError: The downloaded files fail verification (a subclass says how).
    """
    return _fetch_verified(
        repo_id,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        endpoint=endpoint,
        show_progress=show_progress,
    )[0]


def load_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
    show_progress: bool = False,
) -> SteeringVector:
    """Download, verify and load a steering vector from the Hub (``SteeringVector.load`` for repo ids).

    Args:
        repo_id: ``"user/name"``.
        revision: Branch, tag or commit sha (default ``main``).
        token: Hub token for private repos (default: the logged-in token); never printed or stored.
        cache_dir: Hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
        local_files_only: Never use the network: load the cached snapshot of ``revision``.
        endpoint: Hub URL (default: huggingface_hub's).
        show_progress: Show download progress bars.

    Returns:
        The verified :class:`SteeringVector`.

    Raises:
        RepoNotFoundError: No such repo (or it is private and the token cannot read it).
        RevisionNotFoundError: The repo has no such branch, tag or commit.
        HubFileNotFoundError: The repo is not a steerkit artifact (no ``steering.safetensors``).
        HubAuthError: The token is invalid (401) or lacks access (403), or the repo is gated.
        HubServerError: The Hub answered 5xx and nothing is cached.
        HubConnectionError: The Hub cannot be reached (or offline mode) and nothing is cached.
        ArtifactFormatError: The files fail verification; the snapshot was removed from the cache.

    Example:
        >>> vector = load_from_hub("me/truthfulqa-smollm2", revision="v1")     # doctest: +SKIP
    """
    return _fetch_verified(
        repo_id,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        endpoint=endpoint,
        show_progress=show_progress,
    )[1]


def _fetch_verified(
    repo_id: str,
    *,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    endpoint: str | None,
    show_progress: bool,
) -> tuple[Path, SteeringVector]:
    from huggingface_hub import snapshot_download

    from steerkit.artifact import SteeringVector

    ctx = _Context(
        repo_id=repo_id, revision=revision, endpoint=endpoint, action="download", token=token, offline=local_files_only
    )
    download = cast("Callable[..., str]", snapshot_download)  # one overload: dry_run is never set
    with _translated(ctx):
        folder = Path(
            download(
                repo_id,
                repo_type="model",
                revision=revision,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                local_files_only=local_files_only,
                token=token,
                endpoint=endpoint,
                allow_patterns=list(C.ARTIFACT_PATTERNS),
                tqdm_class=None if show_progress else _quiet_tqdm(),
                library_name="steerkit",
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
        vector = SteeringVector._load_dir(folder)
    except ArtifactFormatError as err:
        evicted = _evict_snapshot(folder)
        raise type(err)(
            f"Hub repo '{repo_id}' (revision '{ctx.shown_revision}', commit {folder.name[:12]}) failed verification: "
            f"{err.message}",
            hint="the files on the Hub are damaged or were changed after they were written"
            + ("; the download was removed from the cache" if evicted else "")
            + " — ask the owner to push the artifact again",
            **{**err.fields, "repo_id": repo_id, "revision": ctx.shown_revision},
        ) from None
    return folder, vector


def _evict_snapshot(snapshot: Path) -> bool:
    """Remove a cached snapshot, the blobs only it uses, the refs pointing at it and its tree listing.

    Returns:
        Whether ``snapshot`` was a Hub-cache snapshot (and was removed).
    """
    if snapshot.parent.name != "snapshots":
        return False
    storage, commit = snapshot.parent.parent, snapshot.name

    def blobs_of(folder: Path) -> set[Path]:
        # First symlink hop only, as huggingface_hub's cache scan does: that is the repo's own blob entry.
        return {Path(os.path.abspath(p.parent / os.readlink(p))) for p in folder.rglob("*") if p.is_symlink()}

    mine = blobs_of(snapshot)
    others: set[Path] = set()
    for other in (storage / "snapshots").iterdir():
        if other != snapshot and other.is_dir():
            others |= blobs_of(other)
    shutil.rmtree(snapshot, ignore_errors=True)
    blob_dir = Path(os.path.abspath(storage / "blobs"))
    for blob in mine - others:
        if blob.parent == blob_dir:
            blob.unlink(missing_ok=True)
    refs = storage / "refs"
    if refs.is_dir():
        for ref in refs.rglob("*"):
            if ref.is_file() and ref.read_text().strip() == commit:
                ref.unlink()
    (storage / "trees" / f"{commit}.json").unlink(missing_ok=True)
    return True


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

    from steerkit.artifact import read_config

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
            except SteerkitError:
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


# --- error translation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What an operation was about, for messages (the token is kept only to redact it)."""

    repo_id: str
    revision: str | None
    endpoint: str | None
    action: str
    token: str | bool | None = None
    offline: bool = False

    @property
    def shown_revision(self) -> str:
        return self.revision or _DEFAULT_BRANCH

    @property
    def shown_endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        from huggingface_hub import constants

        return str(constants.ENDPOINT)

    def redact(self, text: str) -> str:
        if isinstance(self.token, str) and self.token:
            text = text.replace(self.token, "***")
        return text


@contextlib.contextmanager
def _translated(ctx: _Context) -> Iterator[None]:
    """Re-raise huggingface_hub / network errors as steerkit Hub errors (without chaining the request)."""
    try:
        yield
    except SteerkitError:
        raise
    except Exception as exc:
        error = _translate(exc, ctx)
        if error is None:
            raise
        raise error from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP clients' transport errors (httpx2 for huggingface_hub 2.x, httpx for 1.x)."""
    types: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        types.append(module.TransportError)
    return tuple(types)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _translate(exc: BaseException, ctx: _Context) -> HubError | None:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError

    repo, rev, where = ctx.repo_id, ctx.shown_revision, ctx.shown_endpoint
    fields: dict[str, Any] = {"repo_id": repo, "revision": rev, "endpoint": where}
    login = "pass token=... (CLI: --token) or run `hf auth login`"
    if isinstance(exc, LocalTokenNotFoundError):
        return HubAuthError(
            f"no Hub token found to {ctx.action} '{repo}'",
            hint=f"{login} (token=True reads the saved token, which does not exist)",
            **fields,
        )
    if isinstance(exc, HfRevisionNotFoundError):
        return RevisionNotFoundError(
            f"Hub repo '{repo}' has no revision '{rev}'",
            hint=f"check the branch, tag or commit sha (list them with HfApi().list_repo_refs('{repo}'))",
            **fields,
        )
    if isinstance(exc, GatedRepoError):
        return HubAuthError(
            f"Hub repo '{repo}' is gated and this token has no access",
            hint=f"accept the repo's conditions on {where}/{repo}, then {login}",
            status=_status(exc),
            **fields,
        )
    if isinstance(exc, RepositoryNotFoundError):
        return RepoNotFoundError(
            f"Hub repo '{repo}' not found at {where}",
            hint=f"check the repo id; if it is private, {login} with a token that can read it",
            status=_status(exc),
            **fields,
        )
    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        name = _filename_from(exc) or "an artifact file"
        return HubFileNotFoundError(
            f"Hub repo '{repo}' (revision '{rev}') has no file '{name}'",
            hint="check the repo id and revision; artifacts are uploaded with vector.push_to_hub() / `steerkit push`",
            filename=name,
            **fields,
        )
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        detail = ctx.redact(str(exc.server_message or "").strip().rstrip("."))
        said = f": {detail}" if detail else ""
        if status == 401:
            return HubAuthError(
                f"the Hub at {where} refused the token (401) to {ctx.action} '{repo}'{said}",
                hint=f"the token is missing or invalid; {login}",
                status=status,
                **fields,
            )
        if status == 403:
            need = "write access to the repo or its namespace" if ctx.action == "push to" else "read access"
            return HubAuthError(
                f"the token may not {ctx.action} '{repo}' (403){said}",
                hint=f"use a token with {need} (fine-grained tokens need the repo in their scope); {login}",
                status=status,
                **fields,
            )
        if status is not None and status >= 500:
            return HubServerError(
                f"the Hub at {where} failed with {status} while trying to {ctx.action} '{repo}'{said}",
                hint="the Hub is having trouble; retry later (artifacts already pulled still load offline with "
                "local_files_only=True)",
                status=status,
                **fields,
            )
        return HubError(
            f"the Hub at {where} answered {status} while trying to {ctx.action} '{repo}'{said}",
            hint="check the repo id, revision and token",
            status=status,
            **fields,
        )
    if isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
            translated = _translate(cause, ctx)
            if translated is not None:
                return translated
        if ctx.offline or isinstance(cause, OfflineModeIsEnabled) or constants.is_offline_mode():
            why = "local_files_only=True" if ctx.offline else "HF_HUB_OFFLINE=1"
            return HubConnectionError(
                f"Hub repo '{repo}' (revision '{rev}') is not in the local cache and downloads are off ({why})",
                hint="pull it once with network access (local_files_only=False, HF_HUB_OFFLINE unset), or pass the "
                "cache_dir it was pulled into",
                **fields,
            )
        return HubConnectionError(
            f"cannot reach the Hub at {where} to {ctx.action} '{repo}', and no complete copy of revision '{rev}' is "
            "cached",
            hint="check the network and the endpoint (HF_ENDPOINT), then retry",
            **fields,
        )
    if isinstance(exc, OfflineModeIsEnabled):
        return HubConnectionError(
            f"cannot {ctx.action} '{repo}': huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)",
            hint="unset HF_HUB_OFFLINE to use the network",
            **fields,
        )
    if isinstance(exc, _transport_errors()):
        reason = ctx.redact(str(exc).strip()) or type(exc).__name__
        return HubConnectionError(
            f"cannot reach the Hub at {where} to {ctx.action} '{repo}' ({reason})",
            hint="check the network and the endpoint (HF_ENDPOINT); artifacts already pulled load offline with "
            "local_files_only=True",
            **fields,
        )
    return None


def _filename_from(exc: BaseException) -> str | None:
    """The file name of a ``/resolve/<revision>/<file>`` URL in an error's response."""
    from urllib.parse import unquote, urlsplit

    response = getattr(exc, "response", None)
    url = str(getattr(response, "url", "") or "")
    _, found, rest = urlsplit(url).path.partition("/resolve/")
    if not found or "/" not in rest:
        return None
    return unquote(rest.split("/", 1)[1])


# --- progress bars ----------------------------------------------------------------------------------------


def _quiet_tqdm() -> type[Any]:
    """A huggingface_hub tqdm class that never draws (library progress is off unless asked)."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class QuietTqdm(hf_tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return QuietTqdm


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """Turn huggingface_hub's progress display off for the block unless ``show`` (restored afterwards)."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
