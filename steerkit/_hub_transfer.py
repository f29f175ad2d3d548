"""Hub transfers under a deadline: the worker thread, stopping a download abandoned at its deadline, progress bars.

:func:`within` runs a download in a daemon worker and waits at most :func:`deadline` seconds
(``$STEERKIT_HUB_DEADLINE``); at the deadline it sets the download's stop event, and :func:`stoppable_tqdm` (the
progress class the download updates for every chunk) raises in whichever thread reads the next chunk, so the
abandoned download ends there and never lands in the cache. :func:`stop_checks_per_chunk` makes those chunks
small. The CLI ends the process at once when a worker is still running (:data:`ABANDONED`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from steerkit._hub_errors import Context
from steerkit.errors import HubConnectionError, InvalidOptionError

__all__ = ["deadline", "progress_bars", "stop_checks_per_chunk", "stoppable_tqdm", "within"]

#: Environment variable: the overall deadline of one Hub download, in seconds (default 600).
DEADLINE_ENV = "STEERKIT_HUB_DEADLINE"
DEFAULT_DEADLINE = 600.0


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
