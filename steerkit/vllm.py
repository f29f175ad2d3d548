"""vLLM integration (docs/serve-vllm.md): static steering as a logits-processor plugin, behind ``steerkit[vllm]``.

:class:`SteeringLogitsProcessor` applies steerkit's static rule ``ẑ = z + μ_s·(keep ⊙ v)`` to the rows of the
requests that ask for it, ``keep`` the confidence mask of the row's own logits: the one pure
:func:`steerkit.svdecode.static_step` that the transformers processor applies too (float32, no ``−inf`` filter).
It implements both logits-processor interfaces of vLLM 0.32: Model Runner V2 (the default;
``add_request(slot, params)`` with recycled slots and ``apply(logits, ctx)``) and the V1 runner
(``update_state(batch_update)`` and ``apply(logits)``, used with ``VLLM_USE_V2_MODEL_RUNNER=0``).

- **Vectors** are loaded once per process from ``$STEERKIT_VLLM_VECTORS``: comma-separated entries
  ``NAME=SOURCE`` (or a bare ``SOURCE``, named by its last path part), ``SOURCE`` an artifact folder or a Hub id
  with an optional ``@revision`` (a Hub id only: ``/data/vec@v2`` is a folder). Paths in requests are never read.
  The engine refuses to start when a vector's ``vocab_size`` or tokenizer differs from the served model's.
- **A request** selects one with ``SamplingParams(extra_args=steer("NAME", mu=X))``, i.e.
  ``extra_args={"steerkit": {"vector": NAME, "mu": X}}`` (over the OpenAI-compatible server, whose ``vllm_xargs``
  are flat: ``{"steerkit_vector": NAME, "steerkit_mu": X}``); μ defaults to the artifact's μ_s. Requests without
  either are left alone. An unknown name, a bad μ or an unknown key fails the request at admission
  (``validate_params``, a ``VLLMValidationError``/HTTP 400); the engine keeps serving.
- **The warm model** is the vector's adapter, served with vLLM's LoRA support (``enable_lora=True``) and the
  request's ``lora_request=lora_request("NAME")``: the artifact's ``adapter/`` folder loads as it is.

Dynamic mode cannot be a vLLM logits processor: it needs the base model's logits at every step, which no logits
processor receives.

**Loading.** Installing steerkit registers the processor in the ``vllm.logits_processors`` entry-point group, which
vLLM loads into every engine of the environment, with no option to pass. Do not also name it in
``logits_processors=[...]``/``--logits-processors``: vLLM 0.32 loads both without deduplicating. Should that happen
(or the name be passed where steerkit's metadata is missing), only the first instance built for an engine steers;
the others are inert and log a warning.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerkit.checks import check_mu
from steerkit.errors import IncompatibleModelError, InvalidOptionError
from steerkit.hub import resolve
from steerkit.svdecode import static_step
from steerkit.vector import SteeringVector

try:
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise ImportError("steerkit.vllm needs vLLM: pip install 'steerkit[vllm]'", name="vllm") from exc

__all__ = ["ENV_VECTORS", "EXTRA_KEY", "ServedVector", "SteeringLogitsProcessor", "lora_request", "served", "steer"]

ENV_VECTORS = "STEERKIT_VLLM_VECTORS"
EXTRA_KEY = "steerkit"
REQUEST_KEYS = ("vector", "mu")
FLAT_PREFIX = "steerkit_"  # vllm_xargs of the OpenAI server are flat: {"steerkit_vector": NAME, "steerkit_mu": X}
logger = logging.getLogger("steerkit.vllm")


@dataclass(frozen=True)
class ServedVector:
    """A vector the engine serves: its name, the verified vector, and the folder it was read from.

    Attributes:
        name: The name requests select it by.
        vector: The steering vector.
        directory: The artifact folder (a Hub snapshot for a Hub id); its ``adapter/`` is the LoRA to serve.
        lora_int_id: A stable LoRA id for :func:`lora_request` (from the name, so every process agrees).
    """

    name: str
    vector: SteeringVector
    directory: Path

    @property
    def lora_int_id(self) -> int:
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


_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def _entry(item: str) -> tuple[str, str, str | None]:
    """One entry of the spec: ``(name, source, revision)`` (see :func:`parse_spec`)."""
    name, source = "", item
    head, eq, tail = item.partition("=")
    if eq and not Path(item).expanduser().exists() and _NAME.fullmatch(head.strip()):
        name, source = head.strip(), tail.strip()
    repo, at, rev = source.rpartition("@")
    hub = at and _HUB_ID.fullmatch(repo) and not Path(source).expanduser().exists()
    source, revision = (repo, rev.strip() or None) if hub else (source, None)
    return name or Path(source.rstrip("/")).name, source, revision


_SERVED: dict[str, dict[str, ServedVector]] = {}

# id(vllm_config) → the processor that steers for that engine. vLLM 0.32 builds every class of the entry-point group
# plus every class named in ``logits_processors`` with the same config object, without deduplicating: a second
# instance for the same config would steer each request again. Each instance keeps its config alive, so an id here
# cannot be reused by another engine's config while its processor lives.
_STEERING: dict[int, weakref.ref[SteeringLogitsProcessor]] = {}


def served(spec: str | None = None) -> dict[str, ServedVector]:
    """The vectors this process serves, loaded once per spec (default ``$STEERKIT_VLLM_VECTORS``), verified.

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


def steer(vector: str, *, mu: float | None = None) -> dict[str, Any]:
    """The ``extra_args`` that select ``vector`` (and μ; default the artifact's μ_s) for one request.

    Example:
        >>> steer("truthful", mu=-2.0)
        {'steerkit': {'vector': 'truthful', 'mu': -2.0}}
    """
    request: dict[str, Any] = {"vector": vector}
    if mu is not None:
        request["mu"] = mu
    return {EXTRA_KEY: request}


def lora_request(vector: str, *, spec: str | None = None) -> Any:
    """The ``LoRARequest`` that serves ``vector``'s adapter, its warm model (pass it with the steered request).

    Raises:
        InvalidOptionError: ``vector`` is not served, or its artifact has no adapter.
    """
    from vllm.lora.request import LoRARequest

    item = _lookup(vector, served(spec))
    if not (item.adapter_dir / "adapter_config.json").is_file():
        raise InvalidOptionError(
            f"steering vector {vector!r} has no adapter/ folder", hint="rebuild it with its adapter (the default)"
        )
    return LoRARequest(lora_name=vector, lora_int_id=item.lora_int_id, lora_path=str(item.adapter_dir))


def _lookup(name: Any, table: dict[str, ServedVector]) -> ServedVector:
    if not isinstance(name, str) or name not in table:
        known = ", ".join(sorted(table)) or f"none: set ${ENV_VECTORS} before starting the engine"
        raise InvalidOptionError(
            f"unknown steering vector {name!r} (served: {known})",
            hint=f"name one of the vectors in ${ENV_VECTORS}; request paths are never read",
            got=name,
        )
    return table[name]


def request_steering(params: Any, table: dict[str, ServedVector]) -> tuple[ServedVector, float] | None:
    """The vector and μ a request's ``extra_args`` ask for, or ``None`` when it asks for no steering.

    Raises:
        InvalidOptionError: A malformed ``"steerkit"`` entry, an unknown vector, or a μ that is not a finite number.
    """
    extra = getattr(params, "extra_args", None) or {}
    if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
        raise InvalidOptionError(
            f"extra_args must be an object with string keys, got {type(extra).__name__}",
            hint="select a vector with extra_args=steerkit.vllm.steer(NAME, mu=X)",
        )
    flat = {key[len(FLAT_PREFIX) :]: value for key, value in extra.items() if key.startswith(FLAT_PREFIX)}
    if EXTRA_KEY not in extra and not flat:
        return None
    if EXTRA_KEY in extra and flat:
        raise InvalidOptionError(
            f"give extra_args[{EXTRA_KEY!r}] or the flat {FLAT_PREFIX}* keys, not both", got=sorted(extra)
        )
    request = extra.get(EXTRA_KEY, flat)
    if not isinstance(request, dict) or set(request) - set(REQUEST_KEYS) or "vector" not in request:
        raise InvalidOptionError(
            f"extra_args[{EXTRA_KEY!r}] must be {{'vector': NAME, 'mu': NUMBER (optional)}}, got {request!r}",
            hint="select a vector with extra_args=steerkit.vllm.steer(NAME, mu=X)",
        )
    item = _lookup(request["vector"], table)
    mu = request.get("mu", item.vector.mu_static)
    try:  # a μ whose step overflows float32 would put inf/NaN rows into the engine's shared batch: refused here
        return item, float(check_mu(mu, per_row=False, scale=item.vector.max_abs))
    except InvalidOptionError as exc:  # in the request's own words: the client sent "mu"
        bound = exc.hint if "too large" in exc.message else None  # the bound helps; "give a float" does not
        raise InvalidOptionError("steering strength mu" + exc.message[1:], hint=bound) from None


class SteeringLogitsProcessor(V2LogitsProcessor, V1LogitsProcessor):  # type: ignore[misc]
    """Static steering for vLLM: ``ẑ = z + μ·(keep ⊙ v)`` on the rows of the requests that select a vector.

    Constructed by vLLM once per engine: ``(vllm_config, req_states)`` under Model Runner V2,
    ``(vllm_config, device, is_pin_memory)`` under the V1 runner. It loads :func:`served` vectors, checks them
    against the served model and keeps one ``[K, V]`` table of task vectors on the device; per request slot it
    keeps the vector index, μ and α. Rows of unsteered requests are never touched.

    Only the first instance built for an engine (its ``vllm_config``) steers: a second one, from naming the class
    in ``logits_processors`` on top of the entry point, is inert (``duplicate`` is true) so no request is steered
    twice.

    Raises:
        IncompatibleModelError: At engine start, a vector whose ``vocab_size`` differs from the model's logits
            width, or whose tokenizer fingerprint differs from the served tokenizer's.
    """

    def __init__(self, vllm_config: Any, *args: Any) -> None:
        if len(args) == 1:  # Model Runner V2: (vllm_config, req_states)
            device, slots, width = args[0].device, args[0].max_num_reqs, int(args[0].vocab_size)
        else:  # V1: (vllm_config, device, is_pin_memory)
            device, slots = args[0], vllm_config.scheduler_config.max_num_seqs
            width = int(vllm_config.model_config.get_vocab_size())
        self._vllm_config = vllm_config  # keeps id(vllm_config) unique in _STEERING while this instance lives
        for key in [key for key, ref in _STEERING.items() if ref() is None]:
            del _STEERING[key]
        first = _STEERING.get(id(vllm_config))
        self.duplicate = first is not None and first() is not None
        if self.duplicate:
            logger.warning(
                "steerkit: SteeringLogitsProcessor is loaded more than once into this engine (the "
                "vllm.logits_processors entry point and logits_processors=[...]?); only the first instance steers. "
                "Drop it from logits_processors: the entry point loads it."
            )
            slots, self.table = 0, {}
        else:
            _STEERING[id(vllm_config)] = weakref.ref(self)
            self.table = served()
        self.names = list(self.table)
        for item in self.table.values():
            _check_model(item, vllm_config.model_config, width)
        vectors = [self._padded(item.vector, width) for item in self.table.values()]
        self.vectors = torch.stack(vectors).to(device) if vectors else torch.zeros(0, width, device=device)
        self.vec = np.full(slots, -1, dtype=np.int64)  # per slot: index into the table, -1 = not steered
        self.mu = np.zeros(slots, dtype=np.float32)
        self.alpha = np.zeros(slots, dtype=np.float64)
        if self.table:
            logger.info("steerkit: serving steering vectors %s", ", ".join(self.names))

    @staticmethod
    def _padded(vector: SteeringVector, width: int) -> Tensor:
        v = vector.task_vector.detach().to(torch.float32).clone()
        n_tokens = int((vector.config.tokenizer or {}).get("vocab_length") or width)
        v[n_tokens:] = 0.0  # padded vocabulary rows are never steered
        return v

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse a malformed steering request at admission (a ``ValueError``; vLLM answers HTTP 400)."""
        request_steering(sampling_params, served())

    def is_argmax_invariant(self) -> bool:
        return False

    # --- per-slot state -------------------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        """(Re)initialise slot ``req_idx`` for a new request; whether it is steered (V2 interface)."""
        if self.duplicate:
            return False
        self.vec[req_idx], self.mu[req_idx], self.alpha[req_idx] = -1, 0.0, 0.0
        try:
            choice = request_steering(sampling_params, self.table)
        except InvalidOptionError as exc:  # validate_params refused it already; never crash the engine
            logger.error("steerkit: request not steered: %s", exc)
            return False
        if choice is None:
            return False
        item, mu = choice
        self.vec[req_idx] = self.names.index(item.name)
        self.mu[req_idx] = mu
        self.alpha[req_idx] = float(item.vector.config.alpha)
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the V1 runner's persistent batch: removed, then added, then moved rows."""
        if batch_update is None or self.duplicate:
            return
        for index in batch_update.removed:
            self.vec[index] = -1
        for index, params, _prompt, _output in batch_update.added:
            self.add_request(index, params)
        for a, b, direction in batch_update.moved:
            state = (self.vec, self.mu, self.alpha)
            if direction == MoveDirectionality.SWAP:
                for arr in state:
                    arr[[a, b]] = arr[[b, a]]
            else:
                for arr in state:
                    arr[b] = arr[a]
                self.vec[a] = -1

    # --- the rule --------------------------------------------------------------------------------------

    def apply(self, logits: Tensor, ctx: Any = None) -> Tensor:
        """Steer the rows of steered requests in ``logits`` ``[rows, V]`` float32; other rows are left alone."""
        if self.duplicate:
            return logits
        if ctx is None:  # V1: row i is persistent batch index i
            slots = np.arange(logits.shape[0])
        elif logits.shape[0] == len(ctx.idx_mapping_np):
            slots = ctx.idx_mapping_np
        else:  # several rows per request (speculative decoding)
            slots = ctx.expanded_idx_mapping.cpu().numpy()
        vec = self.vec[slots]
        rows = np.flatnonzero(vec >= 0)
        if rows.size == 0:
            return logits
        every = rows.size == logits.shape[0]
        index = torch.from_numpy(rows).to(logits.device)
        z = logits if every else logits.index_select(0, index)
        mu = torch.from_numpy(self.mu[slots[rows]]).to(device=z.device)
        step = mu[:, None] * self.vectors.index_select(0, torch.from_numpy(vec[rows]).to(z.device))
        alphas = self.alpha[slots[rows]]
        groups = np.unique(alphas)
        if groups.size == 1:  # the usual case: one α, one static step over the rows
            out = static_step(z, step, alpha=float(groups[0]))
        else:  # one static step per α: the exact mask static mode uses
            out = torch.empty_like(z)
            for alpha in groups:
                group = torch.from_numpy(np.flatnonzero(alphas == alpha)).to(z.device)
                out[group] = static_step(z.index_select(0, group), step.index_select(0, group), alpha=float(alpha))
        out = torch.where(torch.isnan(out), z, out)  # never a NaN row in the shared batch, whatever got through
        if every:
            return out
        logits[index] = out
        return logits


def _check_model(item: ServedVector, model_config: Any, width: int) -> None:
    """Refuse (at engine start) a vector built for another vocabulary than the served model's."""
    vector = item.vector
    if vector.vocab_size != width:
        raise IncompatibleModelError(
            f"steering vector {item.name!r} was built for vocab_size {vector.vocab_size} but the served model's "
            f"logits are {width} wide",
            hint=f"serve the vector's base model ({vector.config.base_model.get('name_or_path')!r}) or remove "
            f"{item.name!r} from ${ENV_VECTORS}",
            expected=vector.vocab_size,
            got=width,
        )
    want = (vector.config.tokenizer or {}).get("sha256")
    if not want:
        return
    from transformers import AutoTokenizer

    from steerkit.models import tokenizer_fingerprint

    name = getattr(model_config, "tokenizer", None) or model_config.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=getattr(model_config, "tokenizer_revision", None))
    except Exception as exc:  # a tokenizer transformers cannot load: the width check above still holds
        logger.warning("steerkit: cannot load tokenizer %r to check vector %r: %s", name, item.name, exc)
        return
    found = tokenizer_fingerprint(tokenizer)["sha256"]
    if found != want:
        raise IncompatibleModelError(
            f"steering vector {item.name!r} expects tokenizer sha256 {want[:12]}… but the served model's is "
            f"{found[:12]}…",
            hint=f"serve the vector's base model or remove {item.name!r} from ${ENV_VECTORS}",
            expected=want,
            got=found,
        )
