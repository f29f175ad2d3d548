"""steerkit.serving (no vLLM needed): the live registry of named vectors and what a request may ask of it.

The registry is a folder the tests change between calls, as an operator would: add, replace, corrupt, half-copy,
link and remove. Requests are checked as the vLLM plugin checks them at admission (``tests_vllm`` runs the same
through a real engine).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tiny import make_vector

from steerkit import serving
from steerkit.compose import MAX_VECTORS
from steerkit.errors import InvalidOptionError
from steerkit.serving import ENV_REGISTRY, ENV_VECTORS, Registry, request_steering, serving_table, steer
from steerkit.vector import SteeringVector


def _params(extra: Any) -> SimpleNamespace:
    return SimpleNamespace(extra_args=extra)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir()
    monkeypatch.setenv(ENV_REGISTRY, str(folder))
    monkeypatch.setenv(ENV_VECTORS, "")
    monkeypatch.setattr(serving, "_REGISTRIES", {})
    return folder


def test_folders_added_and_removed_are_served_and_refused_without_a_restart(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert serving_table() == {}
    make_vector(seed=1).save(registry / "truthful")
    loads = []
    real = SteeringVector.load
    monkeypatch.setattr(SteeringVector, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = serving_table()["truthful"]
    assert first.directory == registry / "truthful" and loads == [(registry / "truthful",)]
    assert serving_table()["truthful"] is first and len(loads) == 1  # unchanged files: not loaded again
    assert request_steering(_params(steer("truthful", mu=-2.0)), serving_table()) == [(first, -2.0)]
    shutil.rmtree(registry / "truthful")
    with pytest.raises(InvalidOptionError, match=r"unknown steering vector 'truthful' \(served: none"):
        request_steering(_params(steer("truthful")), serving_table())
    make_vector(seed=2).save(registry / "truthful")  # another vector under the same name
    again = serving_table()["truthful"]
    assert again.version != first.version and not again.vector.task_vector.equal(first.vector.task_vector)


def test_a_half_copied_folder_is_never_served_and_is_served_once_complete(
    registry: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_vector(seed=3).save(tmp_path / "source")
    target = registry / "concise"
    target.mkdir()
    files = sorted(p for p in source.rglob("*") if p.is_file())
    shutil.copy2(files[0], target / files[0].name)  # the copy is under way
    with caplog.at_level(logging.WARNING, logger="steerkit.vllm"):
        assert serving_table() == {}
        assert serving_table() == {}
    skipped = [r.getMessage() for r in caplog.records if "'concise' skipped" in r.getMessage()]
    assert len(skipped) == 1 and "\n" not in skipped[0]  # one line, once per version of the folder
    shutil.rmtree(target)
    shutil.copytree(source, target)
    assert serving_table()["concise"].vector.task_vector.equal(SteeringVector.load(source).task_vector)


def test_a_corrupt_folder_a_link_and_odd_names_are_skipped_and_the_rest_served(
    registry: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_vector(seed=4).save(registry / "good")
    bad = make_vector(seed=5).save(registry / "bad")
    tensors = next(p for p in bad.iterdir() if p.suffix == ".safetensors")
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    outside = make_vector(seed=6).save(tmp_path / "outside")
    (registry / "linked").symlink_to(outside, target_is_directory=True)
    make_vector(seed=7).save(registry / ".staged.tmp")
    make_vector(seed=8).save(registry / "two words")
    with caplog.at_level(logging.WARNING, logger="steerkit.vllm"):
        assert sorted(serving_table()) == ["good"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "'bad' skipped" in text and "'linked' skipped: it is a link" in text and "'two words' skipped" in text
    assert ".staged.tmp" not in text


def test_a_fixed_vector_wins_over_a_registry_folder_of_its_name(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = make_vector(seed=9).save(tmp_path / "fixed")
    make_vector(seed=10).save(registry / "tqa")
    make_vector(seed=11).save(registry / "other")
    monkeypatch.setenv(ENV_VECTORS, f"tqa={fixed}")
    table = serving_table()
    assert sorted(table) == ["other", "tqa"] and table["tqa"].directory == fixed and table["tqa"].version == ()


def test_a_registry_that_is_gone_serves_nothing_and_never_raises(tmp_path: Path) -> None:
    assert Registry(tmp_path / "missing").table() == {}


def test_requests_name_one_or_several_vectors_nested_or_flat(registry: Path) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        make_vector(seed=20 + i).save(registry / name)
    table = serving_table()
    a, b = table["a"], table["b"]
    assert request_steering(_params({}), table) is None and request_steering(_params(None), table) is None
    assert request_steering(_params(steer("a")), table) == [(a, a.vector.mu_static)]
    assert request_steering(_params(steer({"a": -2.0, "b": None})), table) == [(a, -2.0), (b, b.vector.mu_static)]
    flat = {"steerkit_vectors": ["a", "b"], "steerkit_mus": [-2, 1]}
    assert request_steering(_params(flat), table) == [(a, -2.0), (b, 1.0)]
    assert request_steering(_params({"steerkit_vectors": ["b"]}), table) == [(b, b.vector.mu_static)]


def test_bad_requests_are_refused_in_one_line(registry: Path, tmp_path: Path) -> None:
    make_vector(seed=30).save(registry / "a")
    base = make_vector(seed=31)
    tokenizer = {**base.config.tokenizer, "sha256": "e" * 64}
    config = dataclasses.replace(base.config, tokenizer=tokenizer, task_vector_sha256="")
    dataclasses.replace(base, config=config).save(registry / "othertok")
    big = make_vector(seed=32)
    for i in range(MAX_VECTORS):
        big.save(registry / f"v{i}")
    loud = dataclasses.replace(
        big, task_vector=big.task_vector * 1000, config=dataclasses.replace(big.config, task_vector_sha256="")
    )
    loud.save(registry / "loud")  # max|v| > 1: a μ whose step alone is accepted
    loud.save(registry / "loud2")
    table = serving_table()
    mu = 0.9e30 / table["loud"].vector.max_abs
    cases = {
        "names the steering vector 'a' twice": steer({"a": 1.0}) | {"steerkit": {"vectors": [{"vector": "a"}] * 2}},
        f"composes 1 to {MAX_VECTORS} steering vectors, got {MAX_VECTORS + 1}": steer(
            {"a": None, **{f"v{i}": None for i in range(MAX_VECTORS)}}
        ),
        "plain names (letters, digits, _.-), got '../a'": steer("../a"),
        "plain names (letters, digits, _.-), got 'x/y'": steer({"a": 1.0, "x/y": 1.0}),
        "does not compose with vector 0: tokenizer sha256": steer({"a": 1.0, "othertok": 1.0}),
        "the composed steering step": steer({"loud": mu, "loud2": mu}),
        "steering strength mu must be a finite number": steer({"a": float("nan")}),
        "steerkit_mus, one per vector": {"steerkit_vectors": ["a", "v0"], "steerkit_mus": [1.0]},
        "must be {'vector': NAME": {"steerkit": {"vectors": [{"vector": "a", "path": "/etc"}]}},
    }
    for message, extra in cases.items():
        with pytest.raises(InvalidOptionError) as info:
            request_steering(_params(extra), table)
        assert message in str(info.value) and "\n" not in str(info.value), (message, str(info.value))
