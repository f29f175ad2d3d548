"""The processor against vLLM's own interface classes, without an engine: V2 slots and V1 batch updates.

This vLLM CPU build runs the V1 model runner (Model Runner V2 needs triton-cpu, which it lacks), so the V2 path
is pinned here with vLLM's real ``LogitsProcRequestState``/``LogitsContext``: recycled slots, reordered rows.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality, build_logitsprocs
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    LogitsProcRequestState,
    build_custom_logits_processors,
)

from steerkit import serving
from steerkit.compose import MAX_VECTORS, compose
from steerkit.errors import IncompatibleModelError, InvalidOptionError
from steerkit.models import default_model_dir
from steerkit.processors import StaticSteeringProcessor
from steerkit.serving import parse_spec, request_steering, serving_table
from steerkit.steering import Steering
from steerkit.svdecode import static_step
from steerkit.vector import SteeringVector
from steerkit.vllm import ENV_REGISTRY, ENV_VECTORS, SteeringLogitsProcessor, lora_request, steer

NAMED = "steerkit.vllm:SteeringLogitsProcessor"

V = 49152


@pytest.fixture
def vectors(artifacts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, SteeringVector]:
    monkeypatch.setenv(ENV_VECTORS, f"tqa={artifacts[0]}, flip={artifacts[1]}")
    return {"tqa": SteeringVector.load(artifacts[0]), "flip": SteeringVector.load(artifacts[1])}


def _config(width: int = V) -> Any:
    model = SimpleNamespace(
        tokenizer=str(default_model_dir()), tokenizer_revision=None, model=None, get_vocab_size=lambda: width
    )
    return SimpleNamespace(
        model_config=model, scheduler_config=SimpleNamespace(max_num_seqs=4), speculative_config=None
    )


def _v2(width: int = V) -> SteeringLogitsProcessor:
    state = LogitsProcRequestState(torch.device("cpu"), 4, width, None, None, None, None)  # type: ignore[arg-type]
    return SteeringLogitsProcessor(_config(width), state)


def _ctx(slots: list[int]) -> LogitsContext:
    mapping = torch.tensor(slots, dtype=torch.int32)
    empty = torch.zeros(len(slots), dtype=torch.int64)
    return LogitsContext(mapping, mapping, np.array(slots, dtype=np.int32), empty, empty, empty, np.array(slots))


def _logits(vector: SteeringVector, rows: int, seed: int) -> torch.Tensor:
    """Random logits whose most likely tokens are where ``v`` is non-zero (so the confidence mask meets ``v``)."""
    logits = torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 4
    top = vector.task_vector.abs().topk(4).indices
    logits[:, top] += 30.0
    return logits


def _rule(vector: SteeringVector, mu: float, logits: torch.Tensor) -> torch.Tensor:
    proc = StaticSteeringProcessor(vector.task_vector, mu, alpha=vector.config.alpha)
    return proc(torch.zeros(1, 1, dtype=torch.long), logits[None])[0]


def test_v2_slots_rows_and_recycling(vectors: dict[str, SteeringVector]) -> None:
    proc = _v2()
    assert proc.add_request(2, SamplingParams(extra_args=steer("tqa", mu=-3.0))) is True
    assert proc.add_request(0, SamplingParams()) is False
    logits = _logits(vectors["tqa"], 3, 0)
    rows = [2, 0, 1]  # row → slot, reordered; slot 1 was never filled
    out = proc.apply(logits.clone(), _ctx(rows))
    assert torch.equal(out[0], _rule(vectors["tqa"], -3.0, logits[0]))
    assert not torch.equal(out[0], logits[0])
    assert torch.equal(out[1:], logits[1:])
    # slot 2 recycled: the new occupant is not steered, then steered by the other vector at its default μ_s
    assert proc.add_request(2, SamplingParams(max_tokens=3)) is False
    assert torch.equal(proc.apply(logits.clone(), _ctx(rows)), logits)
    proc.add_request(2, SamplingParams(extra_args=steer("flip")))
    out = proc.apply(logits.clone(), _ctx(rows))
    assert torch.equal(out[0], _rule(vectors["flip"], vectors["flip"].mu_static, logits[0]))


def test_v2_every_row_steered_and_mu_zero(vectors: dict[str, SteeringVector]) -> None:
    proc = _v2()
    proc.add_request(0, SamplingParams(extra_args=steer("tqa")))
    proc.add_request(1, SamplingParams(extra_args={"steerkit_vector": "tqa", "steerkit_mu": 0.0}))
    logits = _logits(vectors["tqa"], 2, 1)
    out = proc.apply(logits.clone(), _ctx([0, 1]))
    assert torch.equal(out[0], _rule(vectors["tqa"], vectors["tqa"].mu_static, logits[0]))
    assert not torch.equal(out[0], logits[0]) and torch.equal(out[1], logits[1])


def test_v1_batch_updates_add_swap_move_remove(vectors: dict[str, SteeringVector]) -> None:
    proc = SteeringLogitsProcessor(_config(), torch.device("cpu"), False)
    assert proc.is_argmax_invariant() is False
    steered, plain = SamplingParams(extra_args=steer("tqa", mu=-2.0)), SamplingParams()
    proc.update_state(BatchUpdate(2, removed=[], added=[(0, steered, None, []), (1, plain, None, [])], moved=[]))
    logits = _logits(vectors["tqa"], 2, 2)
    expected = _rule(vectors["tqa"], -2.0, logits[0])
    assert not torch.equal(expected, logits[0])
    out = proc.apply(logits.clone())
    assert torch.equal(out[0], expected) and torch.equal(out[1], logits[1])
    proc.update_state(BatchUpdate(2, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)]))
    out = proc.apply(logits.clone())
    assert torch.equal(out[0], logits[0]) and torch.equal(out[1], _rule(vectors["tqa"], -2.0, logits[1]))
    proc.update_state(BatchUpdate(1, removed=[], added=[], moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    out = proc.apply(logits[:1].clone())
    assert torch.equal(out[0], expected)
    proc.update_state(BatchUpdate(0, removed=[0], added=[], moved=[]))
    assert torch.equal(proc.apply(logits.clone()), logits)
    proc.update_state(None)


def test_a_vocabulary_mismatch_refuses_to_start(vectors: dict[str, SteeringVector]) -> None:
    with pytest.raises(IncompatibleModelError, match=r"vocab_size 49152 but the served model's logits are 49216"):
        _v2(V + 64)


def test_validate_params_and_spec(
    vectors: dict[str, SteeringVector], artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    SteeringLogitsProcessor.validate_params(SamplingParams())
    SteeringLogitsProcessor.validate_params(SamplingParams(extra_args={"other": 1, **steer("flip", mu=2)}))
    SteeringLogitsProcessor.validate_params(SamplingParams(extra_args={"steerkit_vector": "tqa", "steerkit_mu": -1}))
    for bad in (
        {"steerkit": "tqa"},
        {"steerkit": {"mu": 1.0}},
        steer("tqa", mu=True),
        steer("x"),
        {"steerkit_mu": 1.0},
        {"steerkit_vector": "tqa", **steer("tqa")},
    ):  # type: ignore[arg-type]
        with pytest.raises(InvalidOptionError):
            SteeringLogitsProcessor.validate_params(SamplingParams(extra_args=bad))
    assert parse_spec(" a=/x/y , user/q@v2,\nuser/repo") == [
        ("a", "/x/y", None),
        ("q", "user/q", "v2"),
        ("repo", "user/repo", None),
    ]
    # a folder's name is never split: "@" and "=" in a path stay in it (an existing path is taken whole)
    assert parse_spec("/data/vec@v2, v=/data/a=b") == [("vec@v2", "/data/vec@v2", None), ("v", "/data/a=b", None)]
    odd = tmp_path / "x=y@v1"
    odd.mkdir()
    assert parse_spec(str(odd)) == [("x=y@v1", str(odd), None)]
    with pytest.raises(InvalidOptionError, match="twice"):
        parse_spec("a=x,a=y")
    request = lora_request("tqa")
    assert request.lora_name == "tqa" and Path(request.lora_path) == artifacts[0] / "adapter"
    assert lora_request("tqa").lora_int_id == request.lora_int_id != lora_request("flip").lora_int_id


# --- loading: the vllm.logits_processors entry point, through vLLM's own builders ---------------------------------


def test_the_entry_point_is_installed_and_is_what_vllm_loads() -> None:
    from importlib.metadata import entry_points

    from vllm.v1.sample.logits_processor import _load_logitsprocs_plugins
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_plugins

    ours = [e for e in entry_points(group="vllm.logits_processors") if e.value == NAMED]
    assert [(e.name, e.dist.name if e.dist else None) for e in ours] == [("steerkit", "steerkit")]
    assert _load_logitsprocs_plugins().count(SteeringLogitsProcessor) == 1  # V1 runner
    assert _load_v2_logitsprocs_plugins().count(SteeringLogitsProcessor) == 1  # Model Runner V2


def _v1_built(config: Any, named: list[str]) -> list[SteeringLogitsProcessor]:
    procs = build_logitsprocs(config, torch.device("cpu"), False, False, named)
    return [p for p in procs.all if isinstance(p, SteeringLogitsProcessor)]


def _v2_built(config: Any, named: list[str]) -> list[SteeringLogitsProcessor]:
    state = SimpleNamespace(
        device=torch.device("cpu"), max_num_reqs=4, vocab_size=V, all_token_ids=None, prompt_len=None,
        prefill_len=None, total_len=None,
    )  # fmt: skip
    procs = build_custom_logits_processors(config, state, False, named)
    return [p for p in procs if isinstance(p, SteeringLogitsProcessor)]


@pytest.mark.parametrize("runner", ["v1", "v2"])
def test_vllm_builds_it_from_the_entry_point_and_never_steers_twice(
    vectors: dict[str, SteeringVector], runner: str
) -> None:
    logits = _logits(vectors["tqa"], 2, 3)
    once = _rule(vectors["tqa"], -2.0, logits[0])
    twice = _rule(vectors["tqa"], -2.0, once)
    assert not torch.equal(once, twice)  # applying the rule twice is visible

    def run(procs: list[SteeringLogitsProcessor]) -> torch.Tensor:
        steered, plain = SamplingParams(extra_args=steer("tqa", mu=-2.0)), SamplingParams()
        out = logits.clone()
        for proc in procs:  # vLLM applies every processor in turn
            if runner == "v1":
                proc.update_state(
                    BatchUpdate(2, removed=[], added=[(0, steered, None, []), (1, plain, None, [])], moved=[])
                )
                out = proc.apply(out)
            else:
                proc.add_request(0, steered)
                proc.add_request(1, plain)
                out = proc.apply(out, _ctx([0, 1]))
        return out

    build = _v1_built if runner == "v1" else _v2_built
    config = _config()
    (alone,) = build(config, [])  # the entry point alone: one processor, no name passed
    out = run([alone])
    assert torch.equal(out[0], once) and torch.equal(out[1], logits[1])
    # the entry point and the class named too: vLLM builds two; the second one for the same engine is inert
    other = _config()
    first, second = build(other, [NAMED])
    out = run([first, second])
    assert torch.equal(out[0], once) and torch.equal(out[1], logits[1])
    assert (first.duplicate, second.duplicate) == (False, True)
    # another engine in the same process still steers, and so does a rebuilt one once the old is gone
    assert alone.duplicate is False and not build(_config(), [])[0].duplicate
    del first, second
    (rebuilt,) = build(other, [])
    assert rebuilt.duplicate is False and torch.equal(run([rebuilt])[0], once)


def test_a_mu_vllm_would_let_through_is_refused_by_the_plugin_and_never_raises_in_the_batch(
    vectors: dict[str, SteeringVector],
) -> None:
    # issue 28: 10**400 raised OverflowError, and 1e39 overflowed float32 into inf/NaN rows of the shared batch
    proc = _v2()
    for mu, message in ((10**400, "is too large for a float"), (1e39, r"= 1e\+39 is too large")):
        params = SimpleNamespace(extra_args={"steerkit": {"vector": "tqa", "mu": mu}})
        with pytest.raises(InvalidOptionError, match=f"steering strength mu {message}"):
            request_steering(params, serving_table())
        assert proc.add_request(0, params) is False  # logged, not steered, no exception in the engine
    logits = _logits(vectors["tqa"], 1, 3)
    assert torch.equal(proc.apply(logits.clone(), _ctx([0])), logits)


def test_extra_args_that_are_no_object_or_have_non_string_keys_are_refused_never_raised_in_the_batch(
    vectors: dict[str, SteeringVector],
) -> None:
    # issue 28: these raised AttributeError from request_steering, inside the engine's batch update
    proc = _v2()
    for extra in (["steerkit"], "steerkit", {1: "x", "steerkit": {"vector": "tqa"}}):
        params = SimpleNamespace(extra_args=extra)
        with pytest.raises(InvalidOptionError, match="extra_args must be an object with string keys"):
            request_steering(params, serving_table())
        assert proc.add_request(0, params) is False


# --- issue 31: several vectors per request, and the live registry -------------------------------------------------


def _shuffled(vector: SteeringVector, seed: int) -> SteeringVector:
    """``vector`` with its entries permuted: another direction of the same vocabulary, tokenizer and α."""
    order = torch.randperm(V, generator=torch.Generator().manual_seed(seed))
    config = dataclasses.replace(vector.config, task_vector_sha256="")
    return dataclasses.replace(vector, task_vector=vector.task_vector[order].contiguous(), config=config)


@pytest.fixture
def live(vectors: dict[str, SteeringVector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry folder holding ``other`` (a permuted ``tqa``) beside the fixed ``tqa`` and ``flip``."""
    folder = tmp_path / "registry"
    folder.mkdir()
    _shuffled(vectors["tqa"], 0).save(folder / "other")
    monkeypatch.setenv(ENV_REGISTRY, str(folder))
    monkeypatch.setattr(serving, "_REGISTRIES", {})
    return folder


def test_a_composed_request_adds_the_sum_on_one_tensor_as_transformers_does(
    vectors: dict[str, SteeringVector], live: Path
) -> None:
    proc = _v2()
    tqa, other = vectors["tqa"], SteeringVector.load(live / "other")
    assert proc.add_request(1, SamplingParams(extra_args=steer({"tqa": -3.0, "other": 2.0}))) is True
    assert proc.add_request(0, SamplingParams(extra_args={"steerkit_vectors": ["other"], "steerkit_mus": [2.0]}))
    logits = _logits(tqa, 3, 4)
    logits[:, other.task_vector.abs().topk(4).indices] += 30.0  # the mask meets both vectors
    out = proc.apply(logits.clone(), _ctx([1, 0, 2]))
    summed = (-3.0 * tqa.task_vector.double() + 2.0 * other.task_vector.double()).float()
    assert torch.equal(out[0], static_step(logits[:1], summed, alpha=tqa.config.alpha)[0])
    assert torch.equal(out[1], _rule(other, 2.0, logits[1])) and torch.equal(out[2], logits[2])
    # the same composition in transformers: steerkit.attach's rule with steerkit.compose's vector
    both = compose([Steering(tqa, "static", mu=-3.0), Steering(other, "static", mu=2.0)])
    assert torch.equal(out[0], _rule(both, 1.0, logits[0]))


def test_a_composition_is_summed_once_and_shared_by_its_requests(
    vectors: dict[str, SteeringVector], live: Path
) -> None:
    proc = _v2()
    fixed = proc.vectors.shape[0]  # tqa and flip, loaded at start
    both = steer({"tqa": -3.0, "other": 2.0})
    for slot in (0, 1):
        assert proc.add_request(slot, SamplingParams(extra_args=both)) is True
    assert proc.vectors.shape[0] == fixed + 2  # other, and the sum: one row for both requests
    assert proc.vec[0] == proc.vec[1] == fixed + 1 and proc.mu[0] == proc.mu[1] == 1.0
    assert proc.add_request(2, SamplingParams(extra_args=steer({"tqa": -3.0, "other": 1.0}))) is True
    assert proc.vectors.shape[0] == fixed + 3  # another μ is another sum


def test_a_step_reuses_the_batch_plan_until_the_steering_changes(vectors: dict[str, SteeringVector]) -> None:
    proc = _v2()
    tqa, flip = vectors["tqa"], vectors["flip"]
    assert proc.add_request(0, SamplingParams(extra_args=steer("tqa", mu=-2.0)))
    logits = _logits(tqa, 2, 7)
    first = proc.apply(logits.clone(), _ctx([0, 1]))
    plan = proc._planned
    assert torch.equal(proc.apply(logits.clone(), _ctx([0, 1])), first) and proc._planned is plan  # kept
    assert torch.equal(first[0], _rule(tqa, -2.0, logits[0])) and torch.equal(first[1], logits[1])
    assert proc.add_request(1, SamplingParams(extra_args=steer("flip", mu=1.5)))  # the batch changed: a new plan
    second = proc.apply(logits.clone(), _ctx([0, 1]))
    assert torch.equal(second[0], first[0]) and torch.equal(second[1], _rule(flip, 1.5, logits[1]))
    assert torch.equal(proc.apply(logits.clone(), _ctx([1, 0]))[0], _rule(flip, 1.5, logits[0]))  # another plan


def test_registry_vectors_are_served_then_refused_once_removed(
    vectors: dict[str, SteeringVector], live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = _v2()
    params = SamplingParams(extra_args=steer("other", mu=-1.0))
    SteeringLogitsProcessor.validate_params(params)
    assert proc.add_request(0, params) is True
    logits = _logits(vectors["tqa"], 1, 5)
    steered = proc.apply(logits.clone(), _ctx([0]))
    shutil.rmtree(live / "other")
    with pytest.raises(InvalidOptionError, match="unknown steering vector 'other' \\(served: flip, tqa\\)"):
        SteeringLogitsProcessor.validate_params(params)
    assert torch.equal(proc.apply(logits.clone(), _ctx([0])), steered)  # a request under way keeps its vector
    with caplog.at_level(logging.ERROR, logger="steerkit.vllm"):
        assert proc.add_request(0, params) is False  # admitted before the removal: logged, not steered
    assert torch.equal(proc.apply(logits.clone(), _ctx([0])), logits)


def test_a_registry_vector_for_another_vocabulary_is_skipped_never_fatal(
    vectors: dict[str, SteeringVector], live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = _v2()
    wide = vectors["tqa"]
    config = dataclasses.replace(wide.config, vocab_size=V + 64, task_vector_sha256="")
    dataclasses.replace(wide, task_vector=torch.cat([wide.task_vector, torch.zeros(64)]), config=config).save(
        live / "wide"
    )
    with caplog.at_level(logging.ERROR, logger="steerkit.vllm"):
        assert proc.add_request(0, SamplingParams(extra_args=steer("wide"))) is False
        assert proc.add_request(1, SamplingParams(extra_args=steer("wide"))) is False
    lines = [r.getMessage() for r in caplog.records if "'wide' not served" in r.getMessage()]
    assert len(lines) == 1 and "vocab_size 49216" in lines[0]
    assert proc.add_request(2, SamplingParams(extra_args=steer("other"))) is True  # the engine serves on


def test_the_table_drops_rows_no_request_uses_once_it_has_grown(vectors: dict[str, SteeringVector], live: Path) -> None:
    proc = _v2()
    tqa = vectors["tqa"]
    for version in range(2 * MAX_VECTORS + 4):  # the operator replaces "other" again and again
        shutil.rmtree(live / "other")
        _shuffled(tqa, version).save(live / "other")
        assert proc.add_request(0, SamplingParams(extra_args=steer({"other": 1.0, "tqa": -1.0})))
    assert proc.vectors.shape[0] <= 2 * (2 + MAX_VECTORS) + 1
    logits = _logits(tqa, 1, 6)
    summed = (1.0 * _shuffled(tqa, version).task_vector.double() - tqa.task_vector.double()).float()
    assert torch.equal(proc.apply(logits.clone(), _ctx([0]))[0], static_step(logits, summed, alpha=0.1)[0])
