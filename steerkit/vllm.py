"""vLLM integration (docs/serve-vllm.md): static steering as a logits-processor plugin, behind ``steerkit[vllm]``.

:class:`SteeringLogitsProcessor` applies steerkit's static rule ``ẑ = z + μ_s·(keep ⊙ v)`` to the rows of the
requests that ask for it, ``keep`` the confidence mask of the row's own logits: the one pure
:func:`steerkit.svdecode.static_step` that the transformers processor applies too (float32, no ``−inf`` filter).
It implements both logits-processor interfaces of vLLM 0.32: Model Runner V2 (the default;
``add_request(slot, params)`` with recycled slots and ``apply(logits, ctx)``) and the V1 runner
(``update_state(batch_update)`` and ``apply(logits)``, used with ``VLLM_USE_V2_MODEL_RUNNER=0``).

- **Vectors** (:mod:`steerkit.serving`): fixed ones from ``$STEERKIT_VLLM_VECTORS`` (comma-separated
  ``NAME=SOURCE``, an artifact folder or a Hub id with ``@revision``), loaded once per process, and the live
  registry ``$STEERKIT_VLLM_REGISTRY``: each artifact folder in it is a vector named by its folder, noticed when it
  is added or removed without a restart, served only once it loads whole. Paths in requests are never read. The
  engine refuses to start when a fixed vector's ``vocab_size`` or tokenizer differs from the served model's; a
  registry vector that differs is skipped with a log line when first loaded, and its requests are not steered.
- **A request** selects one with ``SamplingParams(extra_args=steer("NAME", mu=X))``, i.e.
  ``extra_args={"steerkit": {"vector": NAME, "mu": X}}``, or composes up to 8 static vectors with
  ``steer({"truthful": -2.0, "concise": 1.0})`` (the sum ``Σᵢ μᵢ·vᵢ``, one fused add). Over the
  OpenAI-compatible server ``vllm_xargs`` are flat: ``{"steerkit_vector": NAME, "steerkit_mu": X}`` or
  ``{"steerkit_vectors": [A, B], "steerkit_mus": [X, Y]}``. μ defaults to the artifact's μ_s. Requests without
  either are left alone. An unknown name, a bad μ, an unknown key, a name given twice, too many vectors or vectors
  that do not compose fail the request at admission (``validate_params``, a ``VLLMValidationError``/HTTP 400);
  the engine keeps serving.
- **The warm model** is the vector's adapter, served with vLLM's LoRA support (``enable_lora=True``) and the
  request's ``lora_request=lora_request("NAME")``: the artifact's ``adapter/`` folder loads as it is (vLLM loads
  a LoRA on first use, so a registry vector's adapter needs no restart either).

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
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerkit.compose import MAX_VECTORS
from steerkit.errors import IncompatibleModelError, InvalidOptionError
from steerkit.serving import (
    ENV_REGISTRY,
    ENV_VECTORS,
    EXTRA_KEY,
    ServedVector,
    _lookup,
    request_steering,
    served,
    serving_table,
    steer,
)
from steerkit.svdecode import static_step

try:
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise ImportError("steerkit.vllm needs vLLM: pip install 'steerkit[vllm]'", name="vllm") from exc

__all__ = [
    "ENV_REGISTRY",
    "ENV_VECTORS",
    "EXTRA_KEY",
    "ServedVector",
    "SteeringLogitsProcessor",
    "lora_request",
    "served",
    "steer",
]

logger = logging.getLogger("steerkit.vllm")

# id(vllm_config) → the processor that steers for that engine. vLLM 0.32 builds every class of the entry-point group
# plus every class named in ``logits_processors`` with the same config object, without deduplicating: a second
# instance for the same config would steer each request again. Each instance keeps its config alive, so an id here
# cannot be reused by another engine's config while its processor lives.
_STEERING: dict[int, weakref.ref[SteeringLogitsProcessor]] = {}


def lora_request(vector: str, *, spec: str | None = None) -> Any:
    """The ``LoRARequest`` that serves ``vector``'s adapter, its warm model (pass it with the steered request).

    Raises:
        InvalidOptionError: ``vector`` is not served (fixed or in the registry), or its artifact has no adapter.
    """
    from vllm.lora.request import LoRARequest

    item = _lookup(vector, serving_table(spec))
    if not (item.adapter_dir / "adapter_config.json").is_file():
        raise InvalidOptionError(
            f"steering vector {vector!r} has no adapter/ folder", hint="rebuild it with its adapter (the default)"
        )
    return LoRARequest(lora_name=vector, lora_int_id=item.lora_int_id, lora_path=str(item.adapter_dir))


#: A step's steered rows: their index in the batch (``None``: every row), ``μ·v`` per row, and α per row.
_Plan = tuple[Tensor | None, Tensor, np.ndarray]


class SteeringLogitsProcessor(V2LogitsProcessor, V1LogitsProcessor):  # type: ignore[misc]
    """Static steering for vLLM: ``ẑ = z + keep ⊙ Σᵢ μᵢ·vᵢ`` on the rows of the requests that select vectors.

    Constructed by vLLM once per engine: ``(vllm_config, req_states)`` under Model Runner V2,
    ``(vllm_config, device, is_pin_memory)`` under the V1 runner. It checks the fixed vectors against the served
    model at start, and each registry vector when first loaded; it keeps one ``[K, V]`` table of the task vectors
    in use on the device, and per request slot up to 8 ``(row, μ)`` pairs and α. Rows of unsteered requests are
    never touched.

    Only the first instance built for an engine (its ``vllm_config``) steers: a second one, from naming the class
    in ``logits_processors`` on top of the entry point, is inert (``duplicate`` is true) so no request is steered
    twice.

    Raises:
        IncompatibleModelError: At engine start, a fixed vector whose ``vocab_size`` differs from the model's
            logits width, or whose tokenizer fingerprint differs from the served tokenizer's.
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
        self.width = width
        # (name, version) of a vector, or ("+", ((name, version, μ), …)) of a composition → row of self.vectors
        self.rows: dict[tuple[Any, ...], int] = {}
        self.unfit: set[tuple[str, tuple[Any, ...]]] = set()  # registry vectors that do not fit the served model
        self.vectors = torch.zeros(0, width, device=device)
        if self.duplicate:
            logger.warning(
                "steerkit: SteeringLogitsProcessor is loaded more than once into this engine (the "
                "vllm.logits_processors entry point and logits_processors=[...]?); only the first instance steers. "
                "Drop it from logits_processors: the entry point loads it."
            )
            slots = 0
        self.vec = np.full(slots, -1, dtype=np.int64)  # per slot: its row of the table, -1 = none
        self.mu = np.zeros(slots, dtype=np.float64)
        self.alpha = np.zeros(slots, dtype=np.float64)
        # the last step's slots and plan (_plan), dropped on any change of the steering state
        self._planned: tuple[np.ndarray, _Plan | None] | None = None
        if not self.duplicate:
            _STEERING[id(vllm_config)] = weakref.ref(self)
            for item in served().values():  # the fixed vectors: a mismatch stops the engine at start
                _check_model(item, vllm_config.model_config, width)
                self._row(item)
            if self.rows:
                logger.info("steerkit: serving steering vectors %s", ", ".join(name for name, _ in self.rows))

    def _row(self, item: ServedVector) -> int | None:
        """The table row of ``item`` (loaded on first use, checked against the model), ``None`` if it does not fit."""
        key = (item.name, item.version)
        if key in self.rows or key in self.unfit:
            return self.rows.get(key)
        if item.version:  # a registry vector: a mismatch skips it, never stops the engine
            try:
                _check_model(item, self._vllm_config.model_config, self.width)
            except IncompatibleModelError as exc:
                logger.error("steerkit: registry vector %r not served: %s", item.name, exc.message)
                self.unfit.add(key)
                return None
        v = item.vector.task_vector.detach().to(torch.float32).clone()
        n_tokens = int((item.vector.config.tokenizer or {}).get("vocab_length") or self.width)
        v[n_tokens:] = 0.0  # padded vocabulary rows are never steered
        self.vectors = torch.cat([self.vectors, v[None].to(self.vectors.device)])
        self.rows[key] = self.vectors.shape[0] - 1
        return self.rows[key]

    def _compact(self) -> None:
        """Drop table rows no request uses when the table has grown past twice what is in use (vectors removed
        from, or replaced in, the registry), renumbering the slots' rows."""
        used = np.unique(self.vec[self.vec >= 0])
        if len(self.rows) < 2 * (used.size + MAX_VECTORS):
            return
        keep = sorted(int(r) for r in used)
        renumber = np.full(max(len(self.rows), 1), -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        self.vectors = self.vectors[torch.tensor(keep, dtype=torch.long, device=self.vectors.device)]
        self.rows = {key: int(renumber[row]) for key, row in self.rows.items() if renumber[row] >= 0}
        self.vec = np.where(self.vec >= 0, renumber[np.maximum(self.vec, 0)], -1)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse a malformed steering request at admission (a ``ValueError``; vLLM answers HTTP 400)."""
        request_steering(sampling_params, serving_table())

    def is_argmax_invariant(self) -> bool:
        return False

    # --- per-slot state -------------------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        """(Re)initialise slot ``req_idx`` for a new request; whether it is steered (V2 interface)."""
        if self.duplicate:
            return False
        self._planned = None
        self.vec[req_idx], self.mu[req_idx], self.alpha[req_idx] = -1, 0.0, 0.0
        self._compact()
        try:
            choice = request_steering(sampling_params, serving_table())
        except InvalidOptionError as exc:  # validate_params refused it already; never crash the engine
            logger.error("steerkit: request not steered: %s", exc)
            return False
        if choice is None:
            return False
        rows = [self._row(item) for item, _ in choice]
        if any(row is None for row in rows):
            return False  # a registry vector that does not fit the served model (logged when it was loaded)
        if len(choice) == 1:
            self.vec[req_idx], self.mu[req_idx] = rows[0], choice[0][1]
        else:
            self.vec[req_idx], self.mu[req_idx] = self._composed(choice, rows), 1.0  # type: ignore[arg-type]
        self.alpha[req_idx] = float(choice[0][0].vector.config.alpha)
        return True

    def _composed(self, choice: list[tuple[ServedVector, float]], rows: list[int]) -> int:
        """The table row of a composition ``Σⱼ μⱼ·vⱼ``, made once when a request first names it: one float64
        product of the strengths and the vectors' rows, rounded once. Its slots steer with μ = 1, so a composed
        step costs what a one-vector step does."""
        key = ("+", tuple((item.name, item.version, float(mu)) for item, mu in choice))
        if key not in self.rows:
            weights = torch.tensor([mu for _, mu in choice], dtype=torch.float64, device=self.vectors.device)
            index = torch.tensor(rows, dtype=torch.long, device=self.vectors.device)
            summed = (weights @ self.vectors.index_select(0, index).to(torch.float64)).to(torch.float32)
            self.vectors = torch.cat([self.vectors, summed[None]])
            self.rows[key] = self.vectors.shape[0] - 1
        return self.rows[key]

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the V1 runner's persistent batch: removed, then added, then moved rows."""
        if batch_update is None or self.duplicate:
            return
        self._planned = None
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
        plan = self._plan(slots, logits.device)
        if plan is None:
            return logits
        index, step, alphas = plan
        every = index is None
        z = logits if index is None else logits.index_select(0, index)
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

    def _plan(self, slots: np.ndarray, device: torch.device) -> _Plan | None:
        """The steered rows' ``(index, μ·v, α)`` for ``slots`` (``index`` ``None``: every row), ``None`` when no row
        is steered. Made on the device when the batch's steering changes and kept between steps, so a decoding
        step copies nothing from the host and never waits for the device."""
        if self._planned is not None and np.array_equal(self._planned[0], slots):
            return self._planned[1]
        vec = self.vec[slots]
        rows = np.flatnonzero(vec >= 0)
        plan: _Plan | None = None
        if rows.size:
            index = None if rows.size == slots.size else torch.from_numpy(rows).to(device)
            # μ·v per row in float32 (what transformers' static mode computes); a composition's row is its sum, μ = 1
            mu = torch.from_numpy(self.mu[slots[rows]].astype(np.float32)).to(device)
            step = mu[:, None] * self.vectors.index_select(0, torch.from_numpy(vec[rows]).to(device))
            plan = (index, step, self.alpha[slots[rows]])
        self._planned = (slots.copy(), plan)
        return plan


def _check_model(item: ServedVector, model_config: Any, width: int) -> None:
    """Refuse (at engine start) a vector built for another vocabulary than the served model's."""
    vector = item.vector
    if vector.vocab_size != width:
        raise IncompatibleModelError(
            f"steering vector {item.name!r} was built for vocab_size {vector.vocab_size} but the served model's "
            f"logits are {width} wide",
            hint=f"serve the vector's base model ({vector.config.base_model.get('name_or_path')!r}) or remove "
            f"{item.name!r} from ${ENV_VECTORS} or ${ENV_REGISTRY}",
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
            hint=f"serve the vector's base model or remove {item.name!r} from ${ENV_VECTORS} or ${ENV_REGISTRY}",
            expected=want,
            got=found,
        )
