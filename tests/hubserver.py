"""A small Hugging Face Hub-compatible HTTP server for tests: the real ``huggingface_hub`` client talks to it.

It listens on 127.0.0.1 only (stdlib ``ThreadingHTTPServer``, HTTP/1.0 so no connection outlives a request) and
implements the routes that ``create_repo``, ``upload_folder``, ``create_branch``, ``list_repo_refs``,
``model_info``, ``list_repo_tree``, ``hf_hub_download`` and ``snapshot_download`` use:

    GET  /api/whoami-v2                                  who the token belongs to
    POST /api/repos/create, /api/repos/delete            409 (with ``url``) when the repo exists
    POST /api/validate-yaml                              parses the README front matter
    GET  /api/models?filter=..&search=..&cardData=1      model listing: every ``filter`` tag must match (tags from
                                                         the README front matter, plus ``base_model:<id>``), the
                                                         ``search`` text must occur in the repo id
    GET  /api/models/{repo}[/revision/{rev}]             model info (``sha``, ``siblings``)
    GET  /api/models/{repo}/tree/{rev}[/{path}]          file listing (``?recursive=true``)
    GET  /api/models/{repo}/refs                         branches and tags
    POST /api/models/{repo}/preupload/{rev}              always "regular" (no LFS, no Xet)
    POST /api/models/{repo}/commit/{rev}                 NDJSON commit (file / deletedFile / deletedFolder)
    POST /api/models/{repo}/branch/{branch}              409 when the branch exists
    HEAD/GET /{repo}/resolve/{rev}/{path}                ``X-Repo-Commit``, ``ETag``, ``Content-Length``

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` headers. Two tokens exist: :attr:`HubServer.token` (write) and :attr:`HubServer.read_token`
(read-only: writes get 403); an unknown token gets 401 "Invalid credentials in Authorization header" on every
route, an anonymous write gets 401, and a private repo is invisible (404) without a token.

Example::

    with HubServer() as hub:
        HfApi(endpoint=hub.endpoint, token=hub.token).create_repo("user/vec")
        hub.tamper("user/vec", "README.md", b"changed")     # bytes change, commit and ETag do not
        with hub.failing(500, path="/api/models/"):        # force an error on matching requests
            ...
        with hub.failing(200, path="/api/models/", delay=5):  # answer matching requests normally, 5 s late
            ...
    # the server thread has stopped here
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Commit", "Fault", "HubServer", "Repo", "RequestRecord", "git_blob_id"]

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the Hub returns as ``oid`` / ``ETag`` for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit: the full file tree at that point.

    Attributes:
        oid: 40-hex commit id.
        parent: The parent commit id (``None`` for the first).
        message: Commit summary.
        files: Path → bytes served for that path (``tamper`` changes these, not ``blob_ids``).
        blob_ids: Path → git blob id recorded when the commit was made.
    """

    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    blob_ids: dict[str, str]


@dataclass
class Repo:
    """A model repository: commits, branches and tags.

    Attributes:
        repo_id: ``"namespace/name"``.
        private: Visible only with a valid token.
        commits: Commit id → :class:`Commit`.
        history: Commit ids in creation order (all branches).
        branches: Branch name → commit id.
        tags: Tag name → commit id.
    """

    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag, ``refs/heads/x`` or full commit id points to (``None`` if unknown)."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = self.branches.get(name) or self.tags.get(name)
        if oid is None and _COMMIT_SHA.fullmatch(revision):
            oid = revision
        return self.commits.get(oid) if oid else None

    def head(self, branch: str = "main") -> Commit:
        """The commit at the tip of ``branch``."""
        return self.commits[self.branches[branch]]


@dataclass
class Fault:
    """A forced error: requests matching ``method`` and ``path`` (a regex searched in the URL path) get ``status``.

    Attributes:
        status: HTTP status to answer.
        path: Regex searched in the request path (``None``: every path).
        method: ``"GET"``, ``"HEAD"``, ``"POST"`` (``None``: every method).
        error_code: Sent as ``X-Error-Code`` (e.g. ``"EntryNotFound"``).
        message: Sent as ``X-Error-Message`` and as the JSON ``error``.
        times: How many requests to fail (``None``: until cleared).
        hits: How many requests it has failed so far.
        delay: When set, matching requests are not failed but answered normally this many seconds late
            (``status`` is then ignored): a slow or stalled Hub.
        late: How many delayed requests have waited out their delay so far.
        trickle: When set, matching requests are answered normally but their body is sent 1 KiB at a time, this
            many seconds apart (``status`` is then ignored): a Hub that trickles.
        sent: Body bytes sent to trickled requests so far.
        hung_up: How many trickled requests the client closed before their body was complete.
    """

    status: int
    path: str | None = None
    method: str | None = None
    error_code: str | None = None
    message: str = "forced error"
    times: int | None = None
    hits: int = 0
    delay: float | None = None
    late: int = 0
    trickle: float | None = None
    sent: int = 0
    hung_up: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (the token itself is never recorded).

    Attributes:
        method: HTTP method.
        path: URL path with its query string.
        user: Owner of the bearer token, or ``None`` when anonymous or invalid.
        authorized: Whether an ``Authorization`` header was sent at all.
    """

    method: str
    path: str
    user: str | None
    authorized: bool


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


class HubServer:
    """A Hub-compatible server on ``127.0.0.1`` (an ephemeral port); see the module docstring for its routes.

    Args:
        user: The account both tokens belong to.
        token: The write token (random when ``None``).
        read_token: A read-only token of the same user (random when ``None``).

    Attributes:
        repos: Repo id → :class:`Repo` (inspect or change freely; guarded by :attr:`lock` while serving).
        requests: Every request received, in order.
        faults: Active forced errors (see :meth:`fail`).
        lock: Held while a request reads or changes state.
    """

    def __init__(self, *, user: str = "steerkit-tester", token: str | None = None, read_token: str | None = None):
        self.user = user
        self.token = token or "hf_write_" + secrets.token_hex(12)
        self.read_token = read_token or "hf_read_" + secrets.token_hex(12)
        self.repos: dict[str, Repo] = {}
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._counter = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Bind to 127.0.0.1 on a free port and serve in a daemon thread (idempotent)."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self._port or 0), _Handler)
        server.daemon_threads = True
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hubserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; the port then refuses connections (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port (kept after :meth:`stop`, so clients then get "connection refused")."""
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: pass it as ``endpoint=`` to huggingface_hub / steerkit."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server-side state changes (no HTTP) ------------------------------------------------------------

    def create_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        """Create a repo with an initial ``.gitattributes`` commit on ``main`` (as the Hub does)."""
        with self.lock:
            if repo_id in self.repos:
                raise ValueError(f"repo {repo_id} exists")
            repo = Repo(repo_id=repo_id, private=private)
            self.repos[repo_id] = repo
            self._new_commit(repo, None, "initial commit", {".gitattributes": b"*.safetensors filter=lfs\n"})
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | None = None,
        *,
        delete: Iterable[str] = (),
        revision: str = "main",
        message: str = "server-side commit",
    ) -> str:
        """Commit on ``revision`` (a branch) server-side: add/replace ``files``, remove paths or folders in ``delete``.

        Returns:
            The new commit id.
        """
        with self.lock:
            repo = self.repos[repo_id]
            head = repo.head(revision)
            tree = dict(head.files)
            for path in delete:
                for name in [n for n in tree if n == path or n.startswith(path.rstrip("/") + "/")]:
                    del tree[name]
            tree.update(files or {})
            commit = self._new_commit(repo, head.oid, message, tree)
            repo.branches[revision] = commit.oid
            return commit.oid

    def tamper(self, repo_id: str, path: str, data: bytes, *, revision: str = "main") -> None:
        """Change the bytes served for ``path`` at ``revision`` without a new commit (same commit id and ETag)."""
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            if commit is None or path not in commit.files:
                raise KeyError(f"{repo_id}@{revision}: no file {path}")
            commit.files[path] = data

    def file(self, repo_id: str, path: str, *, revision: str = "main") -> bytes:
        """The bytes served for ``path`` at ``revision``."""
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id}: no revision {revision}")
            return commit.files[path]

    def fail(
        self,
        status: int,
        *,
        path: str | None = None,
        method: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
        times: int | None = None,
        delay: float | None = None,
        trickle: float | None = None,
    ) -> Fault:
        """Answer ``status`` to matching requests until :meth:`clear_faults` (or ``times`` hits).

        Args:
            status: HTTP status (401, 403, 404, 500, ...).
            path: Regex searched in the request path, e.g. ``"/api/models/"`` or ``"/resolve/.*steering"``.
            method: Only this method.
            error_code: ``X-Error-Code`` to send (``"EntryNotFound"``, ``"RevisionNotFound"``, ``"RepoNotFound"``).
            message: ``X-Error-Message`` to send.
            times: Fail only this many requests.
            delay: Instead of failing, answer matching requests normally after this many seconds.
            trickle: Instead of failing, send matching bodies 1 KiB at a time, this many seconds apart.
        """
        message = message or f"forced error {status}"
        fault = Fault(status, path, method, error_code, message, times, delay=delay, trickle=trickle)
        with self.lock:
            self.faults.append(fault)
        return fault

    @contextlib.contextmanager
    def failing(self, status: int, **kwargs: Any) -> Iterator[Fault]:
        """:meth:`fail` for the duration of a ``with`` block."""
        fault = self.fail(status, **kwargs)
        try:
            yield fault
        finally:
            with self.lock:
                if fault in self.faults:
                    self.faults.remove(fault)

    def clear_faults(self) -> None:
        """Remove every forced error."""
        with self.lock:
            self.faults.clear()

    # --- internals --------------------------------------------------------------------------------------

    def _new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes]) -> Commit:
        blob_ids = {path: git_blob_id(data) for path, data in files.items()}
        seed = json.dumps([repo.repo_id, parent, message, sorted(blob_ids.items()), next(self._counter)])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, message, dict(files), blob_ids)
        repo.commits[commit.oid] = commit
        repo.history.append(commit.oid)
        if parent is None:
            repo.branches["main"] = commit.oid
        return commit

    def _user_for(self, token: str | None) -> tuple[str | None, bool]:
        """(user, can_write) for a token; raises 401 for an unknown one."""
        if token is None:
            return None, False
        if secrets.compare_digest(token, self.token):
            return self.user, True
        if secrets.compare_digest(token, self.read_token):
            return self.user, False
        raise _HttpError(401, "Invalid credentials in Authorization header")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    timeout = 10  # a stuck client cannot hold a handler thread forever
    server_version = "hubserver/1"

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing ---------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        header = self.headers.get("Authorization")
        token = header.split(" ", 1)[1].strip() if header and " " in header else None
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hub = self.hub
        with hub.lock:
            slow = next((f for f in hub.faults if f.delay is not None and f.matches(method, split.path)), None)
            if slow is not None:
                slow.hits += 1
            trickle = next((f for f in hub.faults if f.trickle is not None and f.matches(method, split.path)), None)
            if trickle is not None:
                trickle.hits += 1
        if slow is not None and slow.delay:
            time.sleep(slow.delay)  # outside the lock: other requests are served meanwhile
            with hub.lock:
                slow.late += 1
        try:
            with hub.lock:
                try:
                    user, can_write = hub._user_for(token)
                finally:
                    known = token is not None and token in (hub.token, hub.read_token)
                    hub.requests.append(
                        RequestRecord(method, self.path, hub.user if known else None, header is not None)
                    )
                for fault in hub.faults:
                    if fault.delay is None and fault.trickle is None and fault.matches(method, split.path):
                        fault.hits += 1
                        raise _HttpError(fault.status, fault.message, code=fault.error_code)
                status, headers, payload = self._route(method, split.path, parse_qs(split.query), body, user, can_write)
        except _HttpError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            status, payload = err.status, {"error": err.message}
        except Exception as err:  # a bug in the fake server: answer 500 rather than hang the client
            status, headers, payload = 500, {}, {"error": f"hubserver: {type(err).__name__}: {err}"}
        self._send(method, status, headers, payload, trickle=trickle)

    def _send(
        self, method: str, status: int, headers: Mapping[str, str], payload: Any, *, trickle: Fault | None = None
    ) -> None:
        if isinstance(payload, bytes):
            data, kind = payload, "application/octet-stream"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method == "HEAD":
            return
        if trickle is None or trickle.trickle is None:
            self.wfile.write(data)
            return
        for start in range(0, len(data), 1024):  # a Hub that trickles: 1 KiB, then a pause
            try:
                self.wfile.write(data[start : start + 1024])
                self.wfile.flush()
            except OSError:  # the client hung up
                with self.hub.lock:
                    trickle.hung_up += 1
                return
            with self.hub.lock:
                trickle.sent += len(data[start : start + 1024])
            time.sleep(trickle.trickle)

    # --- routes -----------------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, user: str | None, can_write: bool
    ) -> tuple[int, dict[str, str], Any]:
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/api/whoami-v2":
            if user is None:
                raise _HttpError(401, "Invalid username or password.")
            role = "write" if can_write else "read"
            return (
                200,
                {},
                {"type": "user", "name": user, "auth": {"type": "access_token", "accessToken": {"role": role}}},
            )
        if method == "POST" and path in ("/api/repos/create", "/api/repos/delete"):
            self._require_write(user, can_write)
            data = json.loads(body or b"{}")
            repo_id = f"{data.get('organization') or user}/{data['name']}"
            if data.get("type") not in (None, "model"):
                raise _HttpError(400, "hubserver only serves model repos")
            return self._create_or_delete(repo_id, data, delete=path.endswith("delete"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body or b"{}"))
        if method == "GET" and path.rstrip("/") == "/api/models":
            return 200, {}, self._listing(query, user)
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo = self._repo(f"{parts[2]}/{parts[3]}", user)
            rest = [unquote(p) for p in parts[4:]]
            if method == "GET" and not rest:
                return 200, {}, self._info(repo, repo.head())
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return 200, {}, self._info(repo, self._resolve(repo, rest[1]))
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return 200, {}, self._tree(self._resolve(repo, rest[1]), "/".join(rest[2:]), recursive)
            if method == "GET" and rest == ["refs"]:
                return 200, {}, self._refs(repo)
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                self._require_write(user, can_write)
                return 200, {}, self._preupload(repo, rest[1], json.loads(body or b"{}"))
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                self._require_write(user, can_write)
                if query.get("create_pr"):
                    raise _HttpError(400, "hubserver does not support pull requests")
                return 200, {}, self._commit(repo, rest[1], body)
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                self._require_write(user, can_write)
                return 200, {}, self._branch(repo, rest[1], json.loads(body or b"{}"))
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo(f"{parts[0]}/{parts[1]}", user)
            commit = self._resolve(repo, unquote(parts[3]))
            filename = unquote("/".join(parts[4:]))
            if filename not in commit.files:
                raise _HttpError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{commit.blob_ids[filename]}"', "Accept-Ranges": "none"}
            return 200, headers, commit.files[filename]
        raise _HttpError(404, f"hubserver: no route for {method} {path}")

    def _require_write(self, user: str | None, can_write: bool) -> None:
        if user is None:
            raise _HttpError(401, "You must be authenticated to write to the Hub")
        if not can_write:
            raise _HttpError(403, "You don't have the rights to write with this token (read-only)")

    def _repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise _HttpError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def _create_or_delete(
        self, repo_id: str, data: Mapping[str, Any], *, delete: bool
    ) -> tuple[int, dict[str, str], Any]:
        hub = self.hub
        url = f"{hub.endpoint}/{repo_id}"
        if delete:
            if hub.repos.pop(repo_id, None) is None:
                raise _HttpError(404, "Repository not found", code="RepoNotFound")
            return 200, {}, {}
        if repo_id in hub.repos:
            return (
                409,
                {"X-Error-Message": "You already created this model repo"},
                {
                    "error": "You already created this model repo",
                    "url": url,
                },
            )
        private = data.get("visibility") == "private" or bool(data.get("private"))
        hub.create_repo(repo_id, private=private)
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def _validate_yaml(self, data: Mapping[str, Any]) -> tuple[int, dict[str, str], Any]:
        import yaml

        content = str(data.get("content", ""))
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.DOTALL)
        if match is None:
            return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return 400, {}, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}
        if not isinstance(meta, dict):
            return 400, {}, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def _card_data(self, commit: Commit) -> dict[str, Any]:
        """The README front matter of a commit, as the Hub parses it (``{}`` when there is none)."""
        import yaml

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", commit.files.get("README.md", b"").decode(errors="replace"), re.S)
        meta = yaml.safe_load(match.group(1)) if match else None
        return meta if isinstance(meta, dict) else {}

    def _listing(self, query: dict[str, list[str]], user: str | None) -> list[dict[str, Any]]:
        """``GET /api/models``: what ``HfApi.list_models`` reads, for the public repos (and the user's own)."""
        wanted = set(query.get("filter", []))
        search = query.get("search", [""])[0].lower()
        out = []
        for repo_id, repo in sorted(self.hub.repos.items()):
            if repo.private and (user is None or not repo_id.startswith(f"{user}/")):
                continue
            if "main" not in repo.branches:
                continue
            commit = repo.head()
            card = self._card_data(commit)
            tags = [str(t) for t in card.get("tags") or []]
            if card.get("library_name"):
                tags.append(str(card["library_name"]))
            if card.get("base_model"):
                tags.append(f"base_model:{card['base_model']}")
            if not wanted <= set(tags) or search not in repo_id.lower():
                continue
            entry = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "tags": sorted(set(tags)),
                "library_name": card.get("library_name"),
            }
            if query.get("cardData") or query.get("full"):
                entry["cardData"] = card
            out.append(entry)
        return out

    def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(commit.files)],
        }

    def _tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        files: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name in sorted(commit.files):
            if not name.startswith(base):
                continue
            rest = name[len(base) :].split("/")
            for depth in range(1, len(rest)):
                if depth == 1 or recursive:
                    folders.add(base + "/".join(rest[:depth]))
            if len(rest) == 1 or recursive:
                size = len(commit.files[name])
                files.append({"type": "file", "path": name, "size": size, "oid": commit.blob_ids[name]})
        if base and not files and not folders:
            raise _HttpError(404, f"{prefix} does not exist", code="EntryNotFound")
        tree_oid = hashlib.sha1(commit.oid.encode()).hexdigest()
        return [{"type": "directory", "path": p, "oid": tree_oid} for p in sorted(folders)] + files

    def _refs(self, repo: Repo) -> dict[str, Any]:
        def refs(kind: str, table: Mapping[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(table.items())]

        return {
            "branches": refs("heads", repo.branches),
            "tags": refs("tags", repo.tags),
            "converts": [],
            "pullRequests": [],
        }

    def _preupload(self, repo: Repo, revision: str, data: Mapping[str, Any]) -> dict[str, Any]:
        commit = repo.resolve(revision) or repo.head()  # a new branch starts from main
        out = []
        for item in data.get("files", []):
            path = item["path"]
            out.append({"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": commit.blob_ids.get(path)})
        return {"files": out, "commitOid": commit.oid}

    def _commit(self, repo: Repo, revision: str, body: bytes) -> dict[str, Any]:
        branch = revision.removeprefix("refs/heads/")
        if branch not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        head = repo.head(branch)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not head.oid.startswith(parent):
            raise _HttpError(412, f"parent commit {parent} is not the head of {branch}")
        tree = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, "hubserver only accepts base64 file content")
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                tree = {k: v for k, v in tree.items() if not k.startswith(folder)}
            else:
                raise _HttpError(400, f"hubserver does not support commit operation {key!r} (no LFS)")
        summary = str(header.get("summary") or "").strip()
        if not summary:
            raise _HttpError(400, "commit summary is empty")
        commit = self.hub._new_commit(repo, head.oid, summary, tree)
        repo.branches[branch] = commit.oid
        url = f"{self.hub.endpoint}/{repo.repo_id}/commit/{commit.oid}"
        return {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}

    def _branch(self, repo: Repo, branch: str, data: Mapping[str, Any]) -> dict[str, Any]:
        if branch in repo.branches:
            raise _HttpError(409, f"Reference refs/heads/{branch} already exists")
        start = self._resolve(repo, data.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return {}
