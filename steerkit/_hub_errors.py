"""huggingface_hub and network errors → steerkit Hub errors, and the quiet progress bars of Hub transfers.

:func:`translated` wraps a Hub call; :func:`translate` maps one exception (by HTTP status, huggingface_hub's
error types, and the network errors huggingface_hub re-exports) to a :class:`~steerkit.errors.HubError` subclass
whose message names the repo id, the revision and the endpoint, and says what to do. A token is redacted
from every message.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from steerkit.errors import (
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

__all__ = [
    "DEFAULT_BRANCH",
    "Context",
    "deadline",
    "progress_bars",
    "stop_checks_per_chunk",
    "stoppable_tqdm",
    "translated",
    "within",
]

DEFAULT_BRANCH = "main"

#: Environment variable: the overall deadline of one Hub download, in seconds (default 600).
DEADLINE_ENV = "STEERKIT_HUB_DEADLINE"
DEFAULT_DEADLINE = 600.0


@dataclass(frozen=True)
class Context:
    """What an operation was about, for messages (the token is kept only to redact it)."""

    repo_id: str
    revision: str | None
    endpoint: str | None
    action: str
    token: str | bool | None = None
    offline: bool = False

    @property
    def shown_revision(self) -> str:
        return self.revision or DEFAULT_BRANCH

    @property
    def shown_endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        from huggingface_hub import constants

        return str(constants.ENDPOINT)

    def redact(self, text: str) -> str:
        """``text`` without the explicit token nor the implicit ones (``$HF_TOKEN``, huggingface_hub's)."""
        for token in self._tokens():
            text = text.replace(token, "***")
        return text

    def _tokens(self) -> list[str]:
        found: list[str | None] = [self.token if isinstance(self.token, str) else None]
        found += [os.environ.get(name) for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
        try:
            from huggingface_hub import get_token

            found.append(get_token())
        except Exception:  # reading the saved token must never hide the error being reported
            pass
        return sorted({t for t in found if isinstance(t, str) and len(t.strip()) >= 4}, key=len, reverse=True)


def deadline() -> float:
    """The overall deadline of a Hub download in seconds (``$STEERKIT_HUB_DEADLINE``, default 600).

    Raises:
        InvalidOptionError: The variable is set but not a positive number.
    """
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return DEFAULT_DEADLINE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InvalidOptionError(
            f"{DEADLINE_ENV}={text!r} is not a positive number of seconds",
            hint=f"set {DEADLINE_ENV} to the seconds a download may take (default {DEFAULT_DEADLINE:g}), or unset it",
            got=text,
        )
    return value


#: Download workers abandoned at their deadline: a process that ends with some still running ends at once
#: (``steerkit``'s CLI calls ``os._exit``) instead of waiting for huggingface_hub's own threads to finish.
ABANDONED: list[threading.Thread] = []


def within(seconds: float, ctx: Context, call: Callable[[], str], *, stop: threading.Event | None = None) -> str:
    """``call()`` in a daemon worker thread, waited for at most ``seconds`` (a stalled transfer cannot hang us).

    At the deadline ``stop`` is set: a download that watches it (:func:`stoppable_tqdm`) ends at its next chunk.

    Raises:
        HubConnectionError: ``call`` did not finish in time (the worker is abandoned and told to stop).
        BaseException: Whatever ``call`` raised, re-raised here.
    """
    result: list[str] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="steerkit-hub-download", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        if stop is not None:
            stop.set()
        ABANDONED[:] = [w for w in ABANDONED if w.is_alive()]  # a long-lived process keeps only the running ones
        ABANDONED.append(worker)
        raise HubConnectionError(
            f"could not {ctx.action} '{ctx.repo_id}' (revision '{ctx.shown_revision}') from {ctx.shown_endpoint} "
            f"within the {seconds:g} s deadline",
            hint=f"the Hub is slow or stalled; retry later, or allow more seconds with {DEADLINE_ENV}",
            repo_id=ctx.repo_id,
            revision=ctx.shown_revision,
            endpoint=ctx.shown_endpoint,
        )
    if failure:
        raise failure[0]
    return result[0]


@contextlib.contextmanager
def translated(ctx: Context) -> Iterator[None]:
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


_LOGIN = "pass token=... (CLI: --token) or run `hf auth login`"


def _translate(exc: BaseException, ctx: Context) -> HubError | None:
    """The steerkit error for a huggingface_hub or network error: the first translator of the ordered table that
    knows the exception wins (``None``: not a Hub error)."""
    for translator in (_repo_error, _http_error, _offline_error):
        found = translator(exc, ctx)
        if found is not None:
            return found
    return None


def _fields(ctx: Context) -> dict[str, Any]:
    return {"repo_id": ctx.repo_id, "revision": ctx.shown_revision, "endpoint": ctx.shown_endpoint}


def _repo_error(exc: BaseException, ctx: Context) -> HubError | None:
    """Token, revision, gated repo, missing repo, missing file."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError

    repo, rev, where, fields, login = ctx.repo_id, ctx.shown_revision, ctx.shown_endpoint, _fields(ctx), _LOGIN
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
    return None


def _http_error(exc: BaseException, ctx: Context) -> HubError | None:
    """Any other HTTP status: 401, 403, 5xx, the rest."""
    from huggingface_hub.errors import HfHubHTTPError

    repo, where, fields, login = ctx.repo_id, ctx.shown_endpoint, _fields(ctx), _LOGIN
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
    return None


def _offline_error(exc: BaseException, ctx: Context) -> HubError | None:
    """Nothing cached and no way to download: offline mode, an unreachable Hub, a transport error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, rev, where, fields = ctx.repo_id, ctx.shown_revision, ctx.shown_endpoint, _fields(ctx)
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
                "cache_dir=FOLDER it was pulled into",
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


#: Bytes per chunk a download reads while steerkit waits on it (huggingface_hub's own is 10 MiB): the stop check
#: of :func:`stoppable_tqdm` runs once per chunk, so an abandoned download ends within this many bytes.
STOP_CHUNK = 64 * 1024
_CHUNK_LOCK = threading.Lock()
_chunk_users = 0  # blocks inside stop_checks_per_chunk, in every thread
_chunk_saved = 0  # huggingface_hub's chunk size, put back when the last one ends


@contextlib.contextmanager
def stop_checks_per_chunk() -> Iterator[None]:
    """huggingface_hub's download chunk set to :data:`STOP_CHUNK` for the block (restored when the last user ends).

    A download reads its response in chunks and updates its progress once per chunk; smaller chunks let a download
    abandoned at its deadline stop soon after it, however slowly its server sends.
    """
    global _chunk_users, _chunk_saved
    from huggingface_hub import constants

    with _CHUNK_LOCK:
        if _chunk_users == 0:
            _chunk_saved = constants.DOWNLOAD_CHUNK_SIZE
            constants.DOWNLOAD_CHUNK_SIZE = min(_chunk_saved, STOP_CHUNK)
        _chunk_users += 1
    try:
        yield
    finally:
        with _CHUNK_LOCK:
            _chunk_users -= 1
            if _chunk_users == 0:
                constants.DOWNLOAD_CHUNK_SIZE = _chunk_saved


class DownloadAbandoned(Exception):
    """Raised inside huggingface_hub's download threads once their download passed its deadline."""


def stoppable_tqdm(stop: threading.Event, *, show: bool = False) -> type[Any]:
    """A huggingface_hub tqdm class (drawn only when ``show``) whose every update raises once ``stop`` is set.

    ``snapshot_download`` updates it for each chunk every file download writes, in whichever thread: so a download
    abandoned at its deadline stops at its next chunk. A server that sends nothing more ends it at huggingface_hub's
    own read timeout (``HF_HUB_DOWNLOAD_TIMEOUT``).
    """
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class StoppableTqdm(hf_tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            if stop.is_set():
                raise DownloadAbandoned("the download passed its deadline")
            return super().update(n)  # type: ignore[no-any-return]

    return StoppableTqdm


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
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
