"""huggingface_hub and network errors → steerkit Hub errors (the transfers themselves: :mod:`steerkit._hub_transfer`).

:func:`translated` wraps a Hub call; :func:`translate` maps one exception (by HTTP status, huggingface_hub's
error types, and the network errors huggingface_hub re-exports) to a :class:`~steerkit.errors.HubError` subclass
whose message names the repo id, the revision and the endpoint, and says what to do. A token is redacted
from every message.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from steerkit.errors import (
    HubAuthError,
    HubConnectionError,
    HubError,
    HubFileNotFoundError,
    HubServerError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SteerkitError,
)

__all__ = ["DEFAULT_BRANCH", "Context", "translated"]

DEFAULT_BRANCH = "main"


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
