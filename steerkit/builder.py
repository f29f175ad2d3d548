"""Building a steering vector: calibration over prompt/completion pairs with a base model and its PEFT adapter.

For every gold completion token (teacher-forced; prompt tokens excluded) :func:`build` takes the warm logits
``z_φ`` (adapter on) and the base logits ``z_θ`` (the same weights, adapter disabled) at the same real tokens,
and from them (DESIGN §1, via :mod:`steerkit.svdecode`) the masked direction ``δ̂_t``, the per-token Newton step
``μ*_t`` under both curvatures, the exact NLL minimiser ``fit``, and the static task vector ``v = mean_t δ̂_t``
with its own strengths μ_s.

Cost (DESIGN §6): two decoder passes per batch, one per model. Logits are computed only at completion positions:
the decoder's hidden states are gathered there and the output head is applied to the gathered rows in chunks,
so at most one ``[chunk, V]`` float32 block per model exists at a time, whatever the batch. Prompt-based adapters
(prompt tuning, p-tuning) prepend virtual tokens to the warm pass only; positions are aligned so that the base
model sees exactly the real tokens. Batches are padded on the tokenizer's ``padding_side`` with explicit
``position_ids``, so the result does not depend on batch size or padding side.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from steerkit._hf import pad_id, trim_heap
from steerkit.adapters import adapter_files_of, is_prompt_learning_adapter, peft_type, resolve_adapter
from steerkit.calibration import Totals
from steerkit.chat import template_sha256
from steerkit.checks import check_alpha
from steerkit.config import MuStats, SteerConfig, parse_mu_name
from steerkit.crossval import MIN_UNITS_PER_FOLD, cross_validate_pairs, fit_strengths, group_keys
from steerkit.data import as_pairs, data_sha256, encode_pair
from steerkit.distributed import shard
from steerkit.errors import AdapterError, EmptyDataError, InvalidOptionError
from steerkit.format import adapter_sha256
from steerkit.models import logits_width, tokenizer_fingerprint
from steerkit.readers import load_pairs
from steerkit.svdecode import CURVATURES, mu_star
from steerkit.terms import TokenTerms
from steerkit.vector import SteeringVector

__all__ = ["build"]

#: Levels of the μ* quantiles stored in ``calibration["mu_star_quantiles"]``.
MU_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
#: Elements per ``[chunk, V]`` logits block (chunk = this // V rows, at least 16): 4 MiB of float32.
CHUNK_ELEMENTS = 1 << 20
_PROMPT_METHODS = ("PROMPT_TUNING", "P_TUNING")


def build(
    model: Any,
    adapter: Any,
    data: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    tokenizer: Any,
    alpha: float = 0.1,
    mu_aggregator: str = "trimmed/exact",
    batch_size: int = 8,
    max_length: int = 512,
    folds: int = 5,
    show_progress: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SteeringVector:
    """Calibrate an SVDecode steering vector from a base model and a warm-started PEFT adapter.

    Args:
        model: The base causal LM, or a ``PeftModel`` (then ``adapter`` may be ``None`` and its active adapter
            is used).
        adapter: A ``PeftModel`` (its active adapter), a local adapter directory, or a Hub id. A directory or
            Hub id is loaded onto ``model`` with ``PeftModel.from_pretrained`` and unloaded again afterwards, so
            ``model`` is left as it was.
        data: Prompt/completion pairs, or a path :func:`steerkit.data.load_pairs` reads.
        tokenizer: The model's tokenizer (its ``padding_side`` is respected).
        alpha: Confidence-mask threshold: keep tokens with ``p_φ ≥ α · max p_φ``.
        mu_aggregator: Which strength becomes ``mu.value`` (and ``mu_static.value``): ``"mean"``, ``"median"``,
            ``"trimmed"``, ``"ratio"`` (each optionally ``/paper`` or ``/exact``) or ``"fit"``.
        batch_size: Pairs per forward pass.
        max_length: Most tokens per pair (the prompt is cut from its start past this).
        folds: K of the cross-validation that compares warm alone, static and dynamic on the pairs and records
            the recommended setting in ``config.validation`` (:mod:`steerkit.crossval`; no extra forward pass).
            Skipped (no ``validation``) with ``0`` or fewer than ``2·K`` distinct prompts.
        show_progress: Print one line per batch to stderr.
        progress: Called as ``progress(batch, total_batches)`` after each batch (the CLI renders it).

    Returns:
        The :class:`~steerkit.vector.SteeringVector`, with the adapter's files and calibration statistics.

    Raises:
        InvalidOptionError: A bad ``alpha``, ``mu_aggregator``, ``batch_size`` or ``max_length``.
        AdapterError: No usable adapter (missing, unloadable, or a PEFT method SVDecode cannot run).
        DataFormatError: Malformed data; ``EmptyDataError`` when no completion token is left.

    Example:
        >>> vector = build(model, "my-lora", "calib.jsonl", tokenizer=tok)  # doctest: +SKIP
        >>> vector.save("my-vector")                                          # doctest: +SKIP
    """
    how, curvature = parse_mu_name(mu_aggregator)
    label = "fit" if curvature is None else f"{how}/{curvature}"
    check_alpha(alpha)
    for name, value, least in (("batch_size", batch_size, 1), ("max_length", max_length, 2), ("folds", folds, 0)):
        if not isinstance(value, int) or value < least:
            raise InvalidOptionError(f"{name} must be an integer ≥ {least}, got {value!r}", got=value)
    if folds == 1:
        raise InvalidOptionError("folds must be 0 (no cross-validation) or at least 2, got 1", got=folds)
    pairs = load_pairs(data) if isinstance(data, (str, os.PathLike)) else as_pairs(data)
    peft_model, source, loaded = resolve_adapter(model, adapter)
    try:
        return _build(
            peft_model,
            pairs,
            source=source,
            tokenizer=tokenizer,
            alpha=float(alpha),
            label=label,
            batch_size=batch_size,
            max_length=max_length,
            folds=folds,
            show_progress=show_progress,
            progress=progress,
        )
    finally:
        if loaded and not is_prompt_learning_adapter(peft_model):
            peft_model.unload()  # remove the injected adapter layers: `model` is as the caller gave it


# --- adapters --------------------------------------------------------------------------------------------


# --- forward passes --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Batch:
    input_ids: Tensor  # [B, S]
    attention_mask: Tensor  # [B, S]
    rows: Tensor  # [N] batch row of each predicting position
    positions: Tensor  # [N] position (in the padded real-token sequence) whose logits predict a gold token
    targets: Tensor  # [N] the gold tokens


def _make_batch(encoded: list[tuple[list[int], int]], *, pad_id: int, left: bool) -> _Batch:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    rows, positions, targets = [], [], []
    for row, (ids, first) in enumerate(encoded):
        offset = width - len(ids) if left else 0
        input_ids[row, offset : offset + len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, offset : offset + len(ids)] = 1
        for j in range(first, len(ids)):  # the logits at j - 1 predict token j
            rows.append(row)
            positions.append(offset + j - 1)
            targets.append(ids[j])

    def long(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long)

    return _Batch(input_ids, mask, long(rows), long(positions), long(targets))


def _positions(mask: Tensor) -> Tensor:
    """Position ids that count real tokens only (pads take a harmless clamped value)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _hidden_rows(transformer: Any, batch: _Batch, *, device: torch.device, prompts: Tensor | None = None) -> Tensor:
    """Last hidden states ``[N, H]`` at the batch's predicting positions; ``prompts`` are virtual-token embeddings."""
    decoder = transformer.get_decoder()
    input_ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    shift = 0
    if prompts is None:
        out = decoder(input_ids=input_ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False)
    else:
        embeds = transformer.get_input_embeddings()(input_ids)
        shift = prompts.shape[1]
        embeds = torch.cat([prompts.to(device=device, dtype=embeds.dtype), embeds], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :shift]), mask], dim=1)
        out = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask), use_cache=False)
    hidden: Tensor = out.last_hidden_state
    return hidden[batch.rows.to(device), batch.positions.to(device) + shift]


def _head_logits(transformer: Any, rows: Tensor) -> Tensor:
    """The model's logits for gathered hidden rows: output head plus the logit post-processing some models apply."""
    logits: Tensor = transformer.get_output_embeddings()(rows)
    logits = logits.double() if logits.dtype == torch.float64 else logits.float()
    config = transformer.config
    scale = getattr(transformer, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)):
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(scaling, (int, float)) and scaling:
        logits = logits / scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    if isinstance(cap, (int, float)) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _head_has_adapter(transformer: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    head = transformer.get_output_embeddings()
    return any(isinstance(m, BaseTunerLayer) for m in head.modules())


def _chat_record(pairs: Sequence[Mapping[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """``chat_template_sha256`` when the calibration pairs were rendered with a chat template (else nothing)."""
    if not any(isinstance(p["prompt"], list) for p in pairs):
        return {}
    return {"chat_template_sha256": template_sha256(tokenizer)}


# --- the calibration -------------------------------------------------------------------------------------


@contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _build(
    peft_model: Any,
    pairs: list[dict[str, Any]],
    *,
    source: str | None,
    tokenizer: Any,
    alpha: float,
    label: str,
    batch_size: int,
    max_length: int,
    folds: int,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> SteeringVector:
    method = peft_type(peft_model)
    prompt_learning = is_prompt_learning_adapter(peft_model)
    if prompt_learning and method not in _PROMPT_METHODS:
        raise AdapterError(
            f"PEFT method {method} is not supported by build",
            hint="use LoRA, IA3 (or another weight adapter), prompt tuning or p-tuning",
            got=method,
        )
    transformer = peft_model.get_base_model()
    encoded = [encode_pair(tokenizer, p["prompt"], p["completion"], max_length=max_length) for p in pairs]
    used_index = [i for i, (ids, start) in enumerate(encoded) if len(ids) > max(start, 1)]
    used = [(encoded[i][0], max(encoded[i][1], 1)) for i in used_index]
    if not used:
        raise EmptyDataError(
            "no completion tokens to calibrate on (every completion is empty after tokenization)",
            hint="give pairs with non-empty completions",
        )
    width = logits_width(transformer)
    totals = _calibrate(
        peft_model,
        used,
        tokenizer=tokenizer,
        alpha=alpha,
        batch_size=batch_size,
        prompt_learning=prompt_learning,
        show_progress=show_progress,
        progress=progress,
    )
    task_sum, kl_sum, kept_sum, gold_masked, terms, base_logprob = totals.gathered().merged(width)
    n_tokens = terms.n_tokens
    task_vector = (task_sum / n_tokens).to(torch.float32).cpu()
    mu, quantiles = fit_strengths(terms, label), _quantiles(terms)
    mu_static = fit_strengths(terms.with_direction(task_vector), label)
    keys = group_keys([pairs[i] for i in used_index])
    validation = _validation(terms, used, keys, base_logprob, folds=folds, full=(mu, mu_static))
    files = adapter_files_of(peft_model)
    name = getattr(transformer.config, "_name_or_path", "") or getattr(transformer, "name_or_path", "") or None
    revision = getattr(transformer.config, "_commit_hash", None)
    config = SteerConfig(
        vocab_size=width,
        mu=mu,
        mu_static=mu_static,
        tokenizer=tokenizer_fingerprint(tokenizer),
        base_model={"name_or_path": name, "revision": revision if isinstance(revision, str) else None},
        calibration={
            "n_examples": len(used),
            "n_tokens": n_tokens,
            "data_sha256": data_sha256(pairs),
            "kl_mean": kl_sum / n_tokens,
            "kept_mean": kept_sum / n_tokens,
            "masked_gold_fraction": gold_masked / n_tokens,
            "mu_star_quantiles": quantiles,
            **_chat_record(pairs, tokenizer),
        },
        adapter={"path": source, "peft_type": method, "sha256": adapter_sha256(files)},
        alpha=alpha,
        validation=validation,
    )
    return SteeringVector(task_vector=task_vector, config=config, adapter_files=files)


def _validation(
    terms: TokenTerms,
    used: list[tuple[list[int], int]],
    keys: list[str],
    base_logprob: Tensor,
    *,
    folds: int,
    full: tuple[MuStats, MuStats],
) -> dict[str, Any] | None:
    """The cross-validated comparison of settings (the ``validation`` block), or ``None`` when ``folds`` is 0 or
    the data have too few distinct prompts for ``folds`` folds."""
    if not folds or len(set(keys)) < folds * MIN_UNITS_PER_FOLD:
        return None
    counts = torch.tensor([len(ids) - start for ids, start in used], dtype=torch.long)
    example = torch.repeat_interleave(torch.arange(len(used)), counts)
    return cross_validate_pairs(terms, example, keys, base_logprob=base_logprob, folds=folds, full=full)


def _calibrate(
    peft_model: Any,
    used: list[tuple[list[int], int]],
    *,
    tokenizer: Any,
    alpha: float,
    batch_size: int,
    prompt_learning: bool,
    show_progress: bool,
    progress: Callable[[int, int], None] | None,
) -> Totals:
    """The two forward passes per calibration token (warm, then base), in ``[chunk, V]`` blocks: this process's
    share of the batches, their totals kept per (batch, chunk) so any process count merges to the same bytes."""
    transformer = peft_model.get_base_model()
    device = next(transformer.parameters()).device
    pad = pad_id(tokenizer)
    width = logits_width(transformer)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    chunk = max(16, CHUNK_ELEMENTS // width)
    shared_head = prompt_learning or not _head_has_adapter(transformer)
    n_batches = -(-len(used) // batch_size)
    totals = Totals()
    mine = shard(n_batches)  # all batches without a process group

    def base_context() -> Any:
        return nullcontext() if prompt_learning else peft_model.disable_adapter()

    with torch.no_grad(), _eval_mode(peft_model):
        for done, index in enumerate(mine, start=1):
            batch = _make_batch(used[index * batch_size : (index + 1) * batch_size], pad_id=pad, left=left)
            prompts = peft_model.get_prompt(batch_size=batch.input_ids.shape[0]) if prompt_learning else None
            warm_rows = _hidden_rows(transformer, batch, device=device, prompts=prompts)
            with base_context():
                base_rows = _hidden_rows(transformer, batch, device=device)
            targets = batch.targets.to(device)
            for number, lo in enumerate(range(0, targets.numel(), chunk)):
                warm = _head_logits(transformer, warm_rows[lo : lo + chunk])
                with nullcontext() if shared_head else base_context():
                    base = _head_logits(transformer, base_rows[lo : lo + chunk])
                totals.add(index, number, warm, base, targets[lo : lo + chunk], alpha=alpha)
                del warm, base
                if device.type == "cpu":
                    trim_heap()
            del warm_rows, base_rows
            if show_progress:
                print(f"build: batch {done}/{len(mine)}", file=sys.stderr, flush=True)
            if progress is not None:
                progress(done, len(mine))

    return totals


def _quantiles(terms: TokenTerms) -> dict[str, dict[str, float]]:
    """The μ* quantiles under both curvatures (``calibration["mu_star_quantiles"]``)."""
    levels: dict[str, dict[str, float]] = {}
    for curvature in CURVATURES:
        values = mu_star(*terms.mu_terms(curvature=curvature))  # type: ignore[arg-type]
        q = torch.quantile(values, torch.tensor(MU_QUANTILES, dtype=values.dtype))
        levels[curvature] = {str(level): float(v) for level, v in zip(MU_QUANTILES, q, strict=True)}
    return levels
