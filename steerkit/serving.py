"""What a steering server serves, and what a request asks of it (docs/serve-vllm.md); no vLLM import here.

- **Fixed vectors**: ``$STEERKIT_VLLM_VECTORS``, comma-separated ``NAME=SOURCE`` entries (an artifact folder or a
  Hub id with ``@revision``), loaded once per process (:func:`served`).
- **A live registry**: ``$STEERKIT_VLLM_REGISTRY`` names a folder; each artifact folder directly inside it is a
  vector named by its folder name (:class:`Registry`). Every admission looks at the folder again: a folder added
  is served from the next request on, a folder removed is refused from then on. A folder is loaded when its files
  change, and served only when it loads whole (every checksum verified), so a half-copied or corrupt folder is
  skipped with one log line and never served. Names starting with ``.`` are ignored (stage a copy as
  ``.NAME.tmp``, then rename it), and so are entries that are links (a link could point outside the folder).
- **A request** names one vector, ``{"vector": NAME, "mu": X}``, or up to :data:`~steerkit.compose.MAX_VECTORS`
  with their own μ, ``{"vectors": [{"vector": NAME, "mu": X}, ...]}``, under ``extra_args["steerkit"]`` (flat over
  the OpenAI server: ``steerkit_vector``/``steerkit_mu``, or ``steerkit_vectors``/``steerkit_mus`` lists).
  :func:`request_steering` checks it and returns ``[(vector, μ)]``; several compose as ``Σᵢ μᵢ·vᵢ``
  (:mod:`steerkit.compose`).
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerkit.checks import check_mu
from steerkit.compose import MAX_VECTORS, composed_parts
from steerkit.errors import InvalidOptionError, SteerkitError
from steerkit.hub import resolve
from steerkit.steering import Steering
from steerkit.vector import SteeringVector

__all__ = [
    "ENV_REGISTRY",
    "ENV_VECTORS",
    "EXTRA_KEY",
    "ServedVector",
    "request_steering",
    "served",
    "serving_table",
    "steer",
]

ENV_VECTORS = "STEERKIT_VLLM_VECTORS"
ENV_REGISTRY = "STEERKIT_VLLM_REGISTRY"
EXTRA_KEY = "steerkit"
FLAT_PREFIX = "steerkit_"  # vllm_xargs of the OpenAI server are flat: {"steerkit_vector": NAME, "steerkit_mu": X}
USAGE = "select vectors with extra_args=steerkit.vllm.steer(NAME, mu=X) or steer({NAME: X, OTHER: Y})"
logger = logging.getLogger("steerkit.vllm")

#: A vector's name: letters, digits and ``_.-`` (never a path).
NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ServedVector:
    """A vector the engine serves: its name, the verified vector, and the folder it was read from.

    Attributes:
        name: The name requests select it by.
        vector: The steering vector.
        directory: The artifact folder (a Hub snapshot for a Hub id); its ``adapter/`` is the LoRA to serve.
        version: What identifies this load of the folder (the registry's file signature; empty for fixed ones).
    """

    name: str
    vector: SteeringVector
    directory: Path
    version: tuple[Any, ...] = ()

    @property
    def lora_int_id(self) -> int:
        """A stable LoRA id for the adapter (from the name, so every process agrees)."""
        return zlib.crc32(self.name.encode()) % (2**31 - 1) + 1

    @property
    def adapter_dir(self) -> Path:
        return self.directory / "adapter"


def parse_spec(spec: str) -> list[tuple[str, str, str | None]]:
    """``"a=path,b=user/repo@v1,path2"`` → ``[(name, source, revision)]``; names must be unique. An existing path
    is a source whole; else ``NAME=`` splits at the first ``=`` (``NAME``: letters, digits, ``_.-``) and ``@REV`` at
    the last ``@`` after a Hub id only (Hub ids hold no ``@``): ``/data/vec@v2`` and ``/data/a=b`` are folders."""
    entries: list[tuple[str, str, str | None]] = []
    for raw in spec.replace("\n", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        name, source, revision = _entry(item)
        if not name or not source:
            raise InvalidOptionError(f"${ENV_VECTORS} entry {item!r} names no artifact", hint="use NAME=FOLDER_OR_REPO")
        if any(name == seen for seen, _, _ in entries):
            raise InvalidOptionError(f"${ENV_VECTORS} names the vector {name!r} twice", hint="give each a NAME=")
        entries.append((name, source, revision))
    return entries


def _entry(item: str) -> tuple[str, str, str | None]:
    """One entry of the spec: ``(name, source, revision)`` (see :func:`parse_spec`)."""
    name, source = "", item
    head, eq, tail = item.partition("=")
    if eq and not Path(item).expanduser().exists() and NAME.fullmatch(head.strip()):
        name, source = head.strip(), tail.strip()
    repo, at, rev = source.rpartition("@")
    hub = at and _HUB_ID.fullmatch(repo) and not Path(source).expanduser().exists()
    source, revision = (repo, rev.strip() or None) if hub else (source, None)
    return name or Path(source.rstrip("/")).name, source, revision


_SERVED: dict[str, dict[str, ServedVector]] = {}


def served(spec: str | None = None) -> dict[str, ServedVector]:
    """The fixed vectors of this process, loaded once per spec (default ``$STEERKIT_VLLM_VECTORS``), verified.

    Raises:
        InvalidOptionError: A malformed spec.
        ArtifactNotFoundError: A source that is neither an artifact folder nor a Hub id (and the other load errors
            of :func:`steerkit.hub.resolve`).
    """
    text = os.environ.get(ENV_VECTORS, "") if spec is None else spec
    if text not in _SERVED:
        table = {}
        for name, source, revision in parse_spec(text):
            parts = resolve(source, revision=revision)
            table[name] = ServedVector(name, SteeringVector.from_parts(parts), Path(parts.directory))
        _SERVED[text] = table
    return _SERVED[text]


def _signature(folder: Path) -> tuple[Any, ...]:
    """Every file under ``folder`` with its size, change time and inode: any copy, write or swap changes it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            stat = os.lstat(path)
            found.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(found)


class Registry:
    """The live registry: each artifact folder directly inside ``folder`` is a vector named by the folder's name.

    :meth:`table` looks at the folder on every call (a listing and a ``stat`` per file) and loads a folder again
    only when its files changed. A folder that does not load whole is left out, with one log line per version.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()
        self._loaded: dict[str, tuple[Any, ServedVector | None]] = {}  # name → (files, load; None: failed)
        self._skipped: set[tuple[str, str]] = set()  # (name, why) already logged

    def _skip(self, name: str, why: str) -> None:
        if (name, why) not in self._skipped:
            self._skipped.add((name, why))
            logger.warning("steerkit: registry entry %r skipped: %s", name, why)

    def table(self) -> dict[str, ServedVector]:
        """The vectors served now: ``{name: ServedVector}``."""
        try:
            entries = sorted(os.scandir(self.folder), key=lambda entry: entry.name)
        except OSError as exc:
            self._skip(str(self.folder), f"cannot list ${ENV_REGISTRY}: {exc}")
            return {}
        table, seen = {}, set()
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not NAME.fullmatch(entry.name):
                self._skip(entry.name, "a vector's name holds only letters, digits and _.-")
            elif entry.is_symlink():
                self._skip(entry.name, "it is a link; registry entries must be folders inside the registry")
            elif entry.is_dir(follow_symlinks=False):
                seen.add(entry.name)
                item = self._load(entry.name, Path(entry.path))
                if item is not None:
                    table[entry.name] = item
        for gone in set(self._loaded) - seen:
            del self._loaded[gone]
        return table

    def _load(self, name: str, folder: Path) -> ServedVector | None:
        version = _signature(folder)
        known = self._loaded.get(name)
        if known is not None and known[0] == version:
            return known[1]
        try:
            vector = SteeringVector.load(folder)
        except (SteerkitError, OSError) as exc:
            self._loaded[name] = (version, None)
            logger.warning("steerkit: registry entry %r skipped: %s", name, str(exc).splitlines()[0])
            return None
        item = ServedVector(name, vector, folder, version)
        self._loaded[name] = (version, item)
        logger.info("steerkit: registry serves %r", name)
        return item


_REGISTRIES: dict[str, Registry] = {}


def serving_table(spec: str | None = None, registry: str | None = None) -> dict[str, ServedVector]:
    """Every vector served now: the fixed ones (:func:`served`) and the live registry's (default
    ``$STEERKIT_VLLM_REGISTRY``); a registry folder named like a fixed vector is left out."""
    table = dict(served(spec))
    folder = os.environ.get(ENV_REGISTRY, "") if registry is None else registry
    if folder:
        live = _REGISTRIES.setdefault(folder, Registry(folder))
        for name, item in live.table().items():
            if name in table:
                live._skip(name, f"${ENV_VECTORS} serves a vector of that name")
            else:
                table[name] = item
    return table


def steer(vector: str | Mapping[str, float | None], *, mu: float | None = None) -> dict[str, Any]:
    """The ``extra_args`` that select ``vector`` (and μ; default the artifact's μ_s) for one request, or several
    vectors composed: ``steer({"truthful": -2.0, "concise": None})`` (``None``: that vector's μ_s).

    Example:
        >>> steer("truthful", mu=-2.0)
        {'steerkit': {'vector': 'truthful', 'mu': -2.0}}
        >>> steer({"truthful": -2.0, "concise": 1.0})
        {'steerkit': {'vectors': [{'vector': 'truthful', 'mu': -2.0}, {'vector': 'concise', 'mu': 1.0}]}}
    """
    if not isinstance(vector, str):
        return {EXTRA_KEY: {"vectors": [_one(name, value) for name, value in vector.items()]}}
    return {EXTRA_KEY: _one(vector, mu)}


def _one(name: str, mu: float | None) -> dict[str, Any]:
    return {"vector": name} if mu is None else {"vector": name, "mu": mu}


def _lookup(name: Any, table: Mapping[str, ServedVector]) -> ServedVector:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidOptionError(
            f"steering vector names are plain names (letters, digits, _.-), got {name!r}",
            hint="name a served vector; request paths are never read",
            got=name,
        )
    if name not in table:
        known = ", ".join(sorted(table)) or f"none: set ${ENV_VECTORS} or ${ENV_REGISTRY}"
        raise InvalidOptionError(
            f"unknown steering vector {name!r} (served: {known})",
            hint=f"name a vector in ${ENV_VECTORS} or a folder in ${ENV_REGISTRY}; request paths are never read",
            got=name,
        )
    return table[name]


def _requested(extra: Mapping[str, Any]) -> list[tuple[Any, Any]] | None:
    """``[(name, μ or None)]`` a request's ``extra_args`` name, unchecked, or ``None`` when it asks for nothing."""
    flat = {key[len(FLAT_PREFIX) :]: value for key, value in extra.items() if key.startswith(FLAT_PREFIX)}
    if EXTRA_KEY not in extra and not flat:
        return None
    if EXTRA_KEY in extra and flat:
        raise InvalidOptionError(f"give extra_args[{EXTRA_KEY!r}] or the flat {FLAT_PREFIX}* keys, not both")
    if flat:
        if set(flat) <= {"vector", "mu"} and "vector" in flat:
            return [(flat["vector"], flat.get("mu"))]
        names, mus = flat.get("vectors"), flat.get("mus", [None] * len(flat.get("vectors") or ()))
        listed = isinstance(names, list) and isinstance(mus, list) and len(mus) == len(names)
        if set(flat) <= {"vectors", "mus"} and listed:
            return list(zip(names, mus, strict=True))  # type: ignore[arg-type]
        raise InvalidOptionError(
            f"flat steering keys must be {FLAT_PREFIX}vector (+ {FLAT_PREFIX}mu), or {FLAT_PREFIX}vectors (+ "
            f"{FLAT_PREFIX}mus, one per vector), got {sorted(FLAT_PREFIX + key for key in flat)}",
            hint=USAGE,
        )
    request = extra[EXTRA_KEY]
    if isinstance(request, dict) and set(request) <= {"vector", "mu"} and "vector" in request:
        return [(request["vector"], request.get("mu"))]
    items = request.get("vectors") if isinstance(request, dict) and set(request) == {"vectors"} else None
    if isinstance(items, list) and all(
        isinstance(i, dict) and "vector" in i and set(i) <= {"vector", "mu"} for i in items
    ):
        return [(i["vector"], i.get("mu")) for i in items]
    raise InvalidOptionError(
        f"extra_args[{EXTRA_KEY!r}] must be {{'vector': NAME, 'mu': NUMBER (optional)}} or {{'vectors': [such "
        f"objects]}}, got {request!r}",
        hint=USAGE,
    )


def request_steering(params: Any, table: Mapping[str, ServedVector]) -> list[tuple[ServedVector, float]] | None:
    """The vectors and μ a request's ``extra_args`` ask for, ``[(vector, μ)]``, or ``None`` when it asks for none.

    Raises:
        InvalidOptionError: A malformed ``"steerkit"`` entry, an unknown name or one that is not a plain name, a
            name given twice, more than :data:`~steerkit.compose.MAX_VECTORS` vectors, a μ that is not a finite
            number or whose step (alone or summed) would overflow float32, or vectors that do not compose.
    """
    extra = getattr(params, "extra_args", None) or {}
    if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
        raise InvalidOptionError(
            f"extra_args must be an object with string keys, got {type(extra).__name__}", hint=USAGE
        )
    asked = _requested(extra)
    if asked is None:
        return None
    if not 1 <= len(asked) <= MAX_VECTORS:
        raise InvalidOptionError(f"a request composes 1 to {MAX_VECTORS} steering vectors, got {len(asked)}")
    names = [name for name, _ in asked]
    twice = sorted({str(name) for name in names if names.count(name) > 1})
    if twice:
        raise InvalidOptionError(f"the request names the steering vector {twice[0]!r} twice", hint="name each once")
    chosen = [(_lookup(name, table), mu) for name, mu in asked]
    out = [(item, _mu(item, item.vector.mu_static if mu is None else mu)) for item, mu in chosen]
    if len(out) > 1:
        composed_parts([Steering(item.vector, "static", mu) for item, mu in out])  # one vocabulary, one α
        total = sum(abs(mu) * item.vector.max_abs for item, mu in out)
        try:
            check_mu(total, per_row=False, scale=1.0)
        except InvalidOptionError:
            raise InvalidOptionError(
                f"the composed steering step Σ|mu|·max|v| = {total:.3g} is too large for float32",
                hint="give smaller strengths",
            ) from None
    return out


def _mu(item: ServedVector, mu: Any) -> float:
    try:  # a μ whose step overflows float32 would put inf/NaN rows into the engine's shared batch: refused here
        return float(check_mu(mu, per_row=False, scale=item.vector.max_abs))
    except InvalidOptionError as exc:  # in the request's own words: the client sent "mu"
        bound = exc.hint if "too large" in exc.message else None  # the bound helps; "give a float" does not
        raise InvalidOptionError("steering strength mu" + exc.message[1:], hint=bound) from None
