"""The steering artifact, format 1 (docs/artifact-format.md): round trips
, stable bytes, atomic writes and every refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from tiny import make_vector

from steerkit import constants as C
from steerkit.config import MuStats, SteerConfig, parse_mu_name
from steerkit.errors import (
    ArtifactCorruptError,
    ArtifactExistsError,
    ArtifactFormatError,
    ArtifactIntegrityError,
    ArtifactMissingKeyError,
    ArtifactNotFoundError,
    ArtifactValueError,
    ArtifactVersionError,
    InvalidOptionError,
    SteerkitError,
)
from steerkit.format import adapter_sha256, read_config, tensor_sha256
from steerkit.vector import SteeringVector

ADAPTER = {"adapter_config.json": b'{"peft_type": "LORA", "r": 4}', "adapter_model.safetensors": b"\x00weights\xff"}


def with_adapter(seed: int = 0) -> SteeringVector:
    plain = make_vector(99, seed=seed)
    adapter = {"path": "adapter", "peft_type": "LORA", "sha256": adapter_sha256(ADAPTER)}
    return SteeringVector(plain.task_vector, dataclasses.replace(plain.config, adapter=adapter), dict(ADAPTER))


@pytest.fixture
def vector() -> SteeringVector:
    return with_adapter()


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``: relative path → bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def rewrite(directory: Path, mutate: Callable[[dict[str, Any]], None] | None = None, tensor: Any = None) -> None:
    """Re-write an artifact's config (both copies) and tensor consistently, as a foreign writer would."""
    config = json.loads((directory / C.CONFIG_FILE).read_text())
    if mutate is not None:
        mutate(config)
    text = json.dumps(config, sort_keys=True, indent=2) + "\n"
    (directory / C.CONFIG_FILE).write_text(text)
    if tensor is None:
        tensor = load_file(directory / C.STEERING_FILE)[C.TENSOR_NAME]
    data = st_save({C.TENSOR_NAME: tensor}, metadata={"format": C.FORMAT_TAG, "config": text})
    (directory / C.STEERING_FILE).write_bytes(data)


def header_size(path: Path) -> int:
    return int(struct.unpack("<Q", path.read_bytes()[:8])[0])


# --- round trips and stable bytes --------------------------------------------------------------------------


def test_save_load_round_trip_is_bit_identical(vector: SteeringVector, tmp_path: Path) -> None:
    out = vector.save(tmp_path / "vec")
    assert out == tmp_path / "vec"
    assert tree(out) == vector.files()
    assert sorted(tree(out)) == [
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "steer_config.json",
        "steering.safetensors",
    ]
    loaded = SteeringVector.load(out)
    assert torch.equal(loaded.task_vector, vector.task_vector) and loaded.task_vector.dtype == torch.float32
    assert loaded.config == vector.config
    assert loaded.adapter_files == vector.adapter_files == ADAPTER
    assert (loaded.mu, loaded.mu_static, loaded.vocab_size) == (-1.5, -0.5, 99)
    assert loaded.files() == vector.files()  # re-saving a loaded vector changes no byte
    assert SteeringVector.load(str(out)).config == vector.config  # str paths too


def test_round_trip_without_adapter(tmp_path: Path) -> None:
    vector = make_vector(17, seed=3)
    loaded = SteeringVector.load(vector.save(tmp_path / "v"))
    assert loaded.adapter_files is None and not (tmp_path / "v" / C.ADAPTER_DIR).exists()
    assert torch.equal(loaded.task_vector, vector.task_vector) and loaded.config == vector.config


def test_same_object_gives_the_same_bytes(vector: SteeringVector, tmp_path: Path) -> None:
    first = tree(vector.save(tmp_path / "a"))
    for i in range(8):  # safetensors' own writer orders metadata keys at random: ours never does
        assert tree(vector.save(tmp_path / f"b{i}")) == first
    rebuilt = with_adapter()  # an equal vector built again from the same inputs
    assert rebuilt.files() == first


def test_header_layout_is_pinned(vector: SteeringVector, tmp_path: Path) -> None:
    path = vector.save(tmp_path / "v") / C.STEERING_FILE
    raw = path.read_bytes()
    config_text = (tmp_path / "v" / C.CONFIG_FILE).read_text()
    header = json.dumps(
        {
            "__metadata__": {"config": config_text, "format": "steerkit/1"},
            "task_vector": {"dtype": "F32", "shape": [99], "data_offsets": [0, 396]},
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    header += b" " * (-len(header) % 8)
    assert raw == struct.pack("<Q", len(header)) + header + vector.task_vector.numpy().astype("<f4").tobytes()
    # The config text: sorted keys, 2-space indent, trailing newline, and exactly the embedded copy.
    assert config_text == json.dumps(vector.config.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert config_text == vector.config.to_json()
    # Standard tools read it.
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"format": "steerkit/1", "config": config_text}
    assert torch.equal(load_file(path)["task_vector"], vector.task_vector)


def test_config_contents(vector: SteeringVector) -> None:
    data = json.loads(vector.config.to_json())
    assert data["format_version"] == "1.0" and data["method"] == "svdecode"
    assert data["projection"] == "softmax-jacobian" and data["kl"] == "forward: KL(warm||base)"
    assert (data["alpha"], data["epsilon"], data["vocab_size"]) == (0.1, 1e-12, 99)
    assert data["task_vector_sha256"] == tensor_sha256(vector.task_vector)
    assert data["task_vector_sha256"] == hashlib.sha256(vector.task_vector.numpy().tobytes()).hexdigest()
    assert set(data["versions"]) == {"torch", "transformers", "peft"} and data["steerkit_version"]
    assert data["mu"] == {
        "value": -1.5,
        "chosen_by": "median/paper",
        "paper": {"mean": -1.5 * 1.2, "median": -1.5, "trimmed": -1.5 * 1.1, "ratio": -1.5 * 0.8},
        "exact": {"mean": -1.5 * 1.2 * 4, "median": -6.0, "trimmed": -1.5 * 1.1 * 4, "ratio": -1.5 * 0.8 * 4},
        "fit": -3.0,
    }
    assert "evaluation" not in data and "chosen_on" not in data["mu"]
    assert SteerConfig.from_dict(data) == vector.config


def test_hashes_are_pinned() -> None:
    assert tensor_sha256(torch.tensor([1.0, -2.0])) == hashlib.sha256(struct.pack("<ff", 1.0, -2.0)).hexdigest()
    assert tensor_sha256(torch.tensor([1.0, -2.0], dtype=torch.float64)) == tensor_sha256(torch.tensor([1.0, -2.0]))
    lines = "".join(f"{n}\0{hashlib.sha256(ADAPTER[n]).hexdigest()}\n" for n in sorted(ADAPTER))
    assert adapter_sha256(ADAPTER) == hashlib.sha256(lines.encode()).hexdigest()
    assert adapter_sha256(dict(reversed(list(ADAPTER.items())))) == adapter_sha256(ADAPTER)


def test_a_header_whose_length_starts_with_a_pickle_byte_still_loads(tmp_path: Path) -> None:
    """0x80 opens a pickle, and is also the first byte of any header 128 (mod 256) bytes long."""
    base = make_vector(8)
    for k in range(300):
        calibration = {**base.config.calibration, "note": "x" * k}
        vector = dataclasses.replace(base, config=dataclasses.replace(base.config, calibration=calibration))
        if vector.files()[C.STEERING_FILE][:1] == b"\x80":
            break
    else:  # pragma: no cover - 8-byte padding makes 0x80 reachable within 32 steps
        pytest.fail("no header of length 128 mod 256 found")
    loaded = SteeringVector.load(vector.save(tmp_path / "v"))
    assert loaded.config == vector.config and read_config(tmp_path / "v") == vector.config


# --- reading the header only -------------------------------------------------------------------------------


def test_read_config_reads_only_the_header(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = vector.save(tmp_path / "v")
    path = directory / C.STEERING_FILE
    raw = path.read_bytes()
    start = 8 + header_size(path)
    # Damage every byte of the tensor data, then drop half of it: the header alone must be enough.
    path.write_bytes(raw[:start] + bytes(b ^ 0xFF for b in raw[start : start + 100]))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("read_config must not load tensors")

    import safetensors
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    assert read_config(directory) == vector.config
    assert read_config(path) == vector.config
    assert read_config(str(path)) == vector.config
    monkeypatch.undo()
    with pytest.raises(ArtifactCorruptError):
        SteeringVector.load(directory)


def test_read_config_refusals(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match=f"no {C.STEERING_FILE} at '{tmp_path}'"):
        read_config(tmp_path)
    (tmp_path / C.STEERING_FILE).write_bytes(b"\x00" * 4)
    with pytest.raises(ArtifactCorruptError, match="is truncated"):
        read_config(tmp_path)


# --- every way an artifact can be bad, each with its own error ---------------------------------------------


def truncated(directory: Path) -> None:
    path = directory / C.STEERING_FILE
    path.write_bytes(path.read_bytes()[:-10])


def flipped(directory: Path) -> None:
    path = directory / C.STEERING_FILE
    raw = bytearray(path.read_bytes())
    raw[8 + header_size(path) + 17] ^= 0x01  # one bit of one float
    path.write_bytes(bytes(raw))


def missing_key(directory: Path) -> None:
    rewrite(directory, lambda c: c.pop("alpha"))


def nan_vector(directory: Path) -> None:
    tensor = load_file(directory / C.STEERING_FILE)[C.TENSOR_NAME].clone()
    tensor[5] = float("nan")
    rewrite(directory, lambda c: c.update(task_vector_sha256=tensor_sha256(tensor)), tensor=tensor)


def newer_version(directory: Path) -> None:
    rewrite(directory, lambda c: c.update(format_version="2.0", something_new={"x": 1}))


CASES = [
    (truncated, ArtifactCorruptError, "is truncated: its tensor data is 386 bytes, expected 396"),
    (flipped, ArtifactIntegrityError, "task_vector sha256 [0-9a-f]{12}… does not match the config's"),
    (missing_key, ArtifactMissingKeyError, "required key 'alpha' missing"),
    (nan_vector, ArtifactValueError, "task_vector has non-finite entries"),
    (newer_version, ArtifactVersionError, r"format_version 2.0 is newer than this steerkit reads \(1.0\)"),
]


@pytest.mark.parametrize(("damage", "error", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_each_damage_raises_its_own_error(
    vector: SteeringVector, tmp_path: Path, damage: Callable[[Path], None], error: type, message: str
) -> None:
    directory = vector.save(tmp_path / "v")
    damage(directory)
    with pytest.raises(error, match=message) as info:
        SteeringVector.load(directory)
    assert type(info.value) is error
    assert str(directory / C.STEERING_FILE) in str(info.value)  # names the file
    assert isinstance(info.value, ArtifactFormatError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, SteerkitError) and info.value.hint


def test_the_five_errors_are_distinct() -> None:
    assert len({c[1] for c in CASES}) == 5
    codes = {c[1].code for c in CASES}  # type: ignore[attr-defined]
    assert codes == {
        "artifact_corrupt",
        "artifact_integrity",
        "artifact_missing_key",
        "artifact_value",
        "artifact_version",
    }


def test_flipped_bit_giving_nan_is_still_an_integrity_error(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    path = directory / C.STEERING_FILE
    raw = bytearray(path.read_bytes())
    offset = 8 + header_size(path) + 4 * 3
    raw[offset : offset + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        SteeringVector.load(directory)


def test_more_damage(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    path = directory / C.STEERING_FILE
    good = path.read_bytes()
    # Truncated inside the header, and below the 8-byte length.
    for cut in (40, 5):
        path.write_bytes(good[:cut])
        with pytest.raises(ArtifactCorruptError, match=f"'{path}' is truncated"):
            SteeringVector.load(directory)
    path.write_bytes(good + b"\x00" * 4)
    with pytest.raises(ArtifactCorruptError, match="has trailing bytes"):
        SteeringVector.load(directory)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ArtifactCorruptError, match="is not a safetensors file"):
        SteeringVector.load(directory)
    path.write_bytes(good)
    # The format tag of a newer major.
    rewrite_tag = good.replace(b'"format":"steerkit/1"', b'"format":"steerkit/2"')
    path.write_bytes(rewrite_tag)
    with pytest.raises(ArtifactVersionError, match="is format steerkit/2, newer than this steerkit reads"):
        SteeringVector.load(directory)
    with pytest.raises(ArtifactVersionError):
        read_config(directory)
    path.write_bytes(good)
    # The two copies of the config disagree; the JSON copy is broken.
    config_path = directory / C.CONFIG_FILE
    config_path.write_text(config_path.read_text().replace('"alpha": 0.1', '"alpha": 0.2'))
    with pytest.raises(ArtifactIntegrityError, match=f"'{config_path}' differs from the config embedded in"):
        SteeringVector.load(directory)
    config_path.write_text("{not json")
    with pytest.raises(ArtifactCorruptError, match=f"'{config_path}' is not valid JSON"):
        SteeringVector.load(directory)
    # A tampered adapter file.
    vector.save(directory, overwrite=True)
    (directory / "adapter" / "adapter_model.safetensors").write_bytes(b"other")
    with pytest.raises(ArtifactIntegrityError, match="adapter files do not match"):
        SteeringVector.load(directory)


def test_bad_values_name_the_file(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    where = str(directory / C.STEERING_FILE)
    for mutate, error, message in [
        (lambda c: c.update(alpha=1.5), ArtifactValueError, r"alpha must be in \[0, 1\], got 1.5"),
        (lambda c: c.update(vocab_size="99"), ArtifactValueError, "vocab_size must be a positive integer, got '99'"),
        (lambda c: c["mu"].update(fit=None), ArtifactValueError, "mu.fit is not a number"),
        (lambda c: c["mu"]["exact"].pop("ratio"), ArtifactMissingKeyError, "μ table 'exact' lacks ratio"),
        (lambda c: c["mu_static"].pop("value"), ArtifactMissingKeyError, "key 'value' missing from the μ"),
        (lambda c: c.update(tokenizer=[]), ArtifactValueError, "'tokenizer' must be a JSON object"),
        (lambda c: c.update(vocab_size=98), ArtifactValueError, r"expected .*'shape': \[98\]"),
    ]:
        vector.save(directory, overwrite=True)
        rewrite(directory, mutate)
        with pytest.raises(error, match=message) as info:
            SteeringVector.load(directory)
        assert where in str(info.value)


def _detonate(marker: str) -> str:
    Path(marker).write_text("unpickled!")
    return "boom"


class Bomb:
    """Unpickling this writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _detonate, (self.marker,)


def test_a_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payloads = {
        "torch.save": None,
        "pickle-4": pickle.dumps({"task_vector": Bomb(marker)}, protocol=4),
        "pickle-2": pickle.dumps({"task_vector": Bomb(marker)}, protocol=2),
        "pickle-0": pickle.dumps({"task_vector": Bomb(marker)}, protocol=0),
    }
    torch.save({"task_vector": Bomb(marker)}, tmp_path / "t.pt")
    payloads["torch.save"] = (tmp_path / "t.pt").read_bytes()
    # The bomb works: unpickling it does write the marker.
    pickle.loads(payloads["pickle-4"])
    assert marker.read_text() == "unpickled!"
    marker.unlink()

    directory = tmp_path / "v"
    make_vector(8).save(directory)
    path = directory / C.STEERING_FILE
    for name, payload in payloads.items():
        assert payload is not None
        path.write_bytes(payload)
        with pytest.raises(ArtifactCorruptError, match=f"'{path}' is ") as info:
            SteeringVector.load(directory)
        if name != "pickle-0":  # protocol 0 has no signature: it is just "not a safetensors file"
            assert "pickle/zip" in str(info.value) and "never unpickles" in str(info.value)
        with pytest.raises(ArtifactCorruptError):
            read_config(directory)
        assert not marker.exists(), name


# --- saving: refusals, overwrite, atomicity ----------------------------------------------------------------


def test_save_refuses_to_overwrite_without_the_flag(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    before = tree(directory)
    other = make_vector(99, seed=7)
    with pytest.raises(ArtifactExistsError, match=f"'{directory}' already exists and is not empty") as info:
        other.save(directory)
    assert "overwrite=True" in str(info.value) and isinstance(info.value, FileExistsError)
    assert tree(directory) == before
    # With overwrite=True the artifact is replaced entirely (the old adapter folder goes too).
    other.save(directory, overwrite=True)
    assert tree(directory) == other.files()
    assert torch.equal(SteeringVector.load(directory).task_vector, other.task_vector)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no temporary directory left


def test_save_targets(vector: SteeringVector, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    vector.save(tmp_path / "empty")  # an empty directory is fine without the flag
    assert tree(tmp_path / "empty") == vector.files()
    vector.save(tmp_path / "deep" / "er" / "v")  # parents are created
    assert tree(tmp_path / "deep" / "er" / "v") == vector.files()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactExistsError, match="exists and is not a directory"):
        vector.save(tmp_path / "file", overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ArtifactExistsError, match="not a steering artifact"):
        vector.save(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "empty", "file", "mine"]


def failing_after(n: int, real: Callable[..., Any], *, once: bool = True) -> Callable[..., Any]:
    """``real``, except that call ``n + 1`` (and, with ``once=False``, every later call) raises."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n + 1 or (calls["n"] > n and not once):
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    ("target", "after"),
    [("write_bytes", 0), ("write_bytes", 2), ("replace", 0), ("replace", 1)],
    ids=["first-write", "mid-write", "first-replace", "second-replace"],
)
def test_interrupted_save_leaves_the_old_artifact_or_nothing(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, after: int
) -> None:
    old = make_vector(99, seed=11)
    old.save(tmp_path / "existing")
    before = tree(tmp_path / "existing")
    if target == "write_bytes":
        monkeypatch.setattr(Path, "write_bytes", failing_after(after, Path.write_bytes))
    else:
        monkeypatch.setattr(os, "replace", failing_after(after, os.replace))
    with pytest.raises(OSError, match="disk full"):
        vector.save(tmp_path / "existing", overwrite=True)
    monkeypatch.undo()
    assert tree(tmp_path / "existing") == before  # the old artifact, byte for byte
    if target == "write_bytes" or after == 0:
        if target == "write_bytes":
            monkeypatch.setattr(Path, "write_bytes", failing_after(after, Path.write_bytes))
        else:
            monkeypatch.setattr(os, "replace", failing_after(after, os.replace))
        with pytest.raises(OSError, match="disk full"):
            vector.save(tmp_path / "new")
        monkeypatch.undo()
        assert not (tmp_path / "new").exists()  # no half artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # and no temporary directory


def test_failed_restore_keeps_the_old_artifact(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving the new artifact in fails and so does moving the old one back: the old one is never deleted."""
    make_vector(99, seed=11).save(tmp_path / "existing")
    before = tree(tmp_path / "existing")
    monkeypatch.setattr(os, "replace", failing_after(1, os.replace, once=False))
    with pytest.raises(OSError, match="disk full"):
        vector.save(tmp_path / "existing", overwrite=True)
    monkeypatch.undo()
    (kept,) = tmp_path.glob(".existing.*.old")
    assert tree(kept / "previous") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]  # the staging directory is gone


# --- config behaviour --------------------------------------------------------------------------------------


def test_unknown_keys_from_a_newer_minor_warn_once(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    key = f"shiny_{os.getpid()}_{id(tmp_path)}"
    rewrite(directory, lambda c: c.update({"format_version": "1.7", key: {"nested": True}}))
    with pytest.warns(UserWarning, match=f"ignoring unknown config keys {key}") as record:
        loaded = SteeringVector.load(directory)
    assert len(record) == 1 and str(directory / C.STEERING_FILE) in str(record[0].message)
    assert loaded.config == dataclasses.replace(vector.config, format_version="1.7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SteeringVector.load(directory)  # the second time: silent
        read_config(directory)


def test_with_mu_by_name_and_by_value(vector: SteeringVector, tmp_path: Path) -> None:
    stats = vector.config.mu
    by_name = vector.with_mu("mean/exact")
    assert by_name.mu == stats.exact["mean"] == -1.5 * 1.2 * 4 and by_name.config.mu.chosen_by == "mean/exact"
    assert vector.with_mu("median").config.mu.chosen_by == "median/paper"
    assert vector.with_mu("ratio/paper").mu == stats.paper["ratio"]
    assert vector.with_mu("fit").mu == stats.fit == -3.0 and vector.with_mu("fit").config.mu.chosen_by == "fit"
    static = vector.with_mu("trimmed", static=True)
    assert static.mu_static == vector.config.mu_static.paper["trimmed"] and static.mu == vector.mu
    by_value = vector.with_mu(-0.7, chosen_by="search:mc2", chosen_on="ab" * 32)
    assert by_value.mu == -0.7 and by_value.config.mu.chosen_by == "search:mc2"
    assert by_value.config.mu.chosen_on == "ab" * 32
    assert vector.with_mu(2).config.mu == dataclasses.replace(stats, value=2.0, chosen_by="manual")
    # Alternatives are kept; the original is unchanged; the choice survives a round trip.
    assert by_value.config.mu.paper == stats.paper and vector.mu == -1.5 and vector.config.mu == stats
    assert torch.equal(by_value.task_vector, vector.task_vector)
    assert SteeringVector.load(by_value.save(tmp_path / "v")).config == by_value.config
    with pytest.raises(InvalidOptionError, match="unknown μ aggregator 'max'") as info:
        vector.with_mu("max")
    assert "mean/paper" in str(info.value) and "fit" in str(info.value)
    with pytest.raises(InvalidOptionError, match="μ must be a finite number"):
        vector.with_mu(float("nan"))


def test_parse_mu_name_and_select() -> None:
    assert parse_mu_name("median") == ("median", "paper")
    assert parse_mu_name("mean/exact") == ("mean", "exact")
    assert parse_mu_name("fit") == ("fit", None)
    for bad in ("median/gauss", "fit/exact", "", "mean/"):
        if bad == "mean/":
            assert parse_mu_name(bad) == ("mean", "paper")
            continue
        with pytest.raises(InvalidOptionError):
            parse_mu_name(bad)
    stats = MuStats(
        value=1.0,
        chosen_by="x",
        paper=dict.fromkeys(("mean", "median", "trimmed", "ratio"), 2.0),
        exact={"mean": 3.0, "median": 4.0, "trimmed": 5.0, "ratio": 6.0},
        fit=7.0,
    )
    assert [stats.select(n) for n in ("median", "ratio/exact", "trimmed/exact", "fit")] == [2.0, 6.0, 5.0, 7.0]


def test_vector_validation() -> None:
    good = make_vector(10)
    with pytest.raises(ArtifactValueError, match=r"task_vector must be a float32 tensor of shape \[V\], got "):
        dataclasses.replace(good, task_vector=good.task_vector.double())
    with pytest.raises(ArtifactValueError, match="task_vector has 9 entries but vocab_size is 10"):
        SteeringVector(good.task_vector[:9], dataclasses.replace(good.config, task_vector_sha256=""))
    bad = good.task_vector.clone()
    bad[0] = float("inf")
    with pytest.raises(ArtifactValueError, match="non-finite"):
        SteeringVector(bad, dataclasses.replace(good.config, task_vector_sha256=""))
    with pytest.raises(ArtifactIntegrityError, match="does not match the config's"):
        SteeringVector(good.task_vector * 2, good.config)
    with pytest.raises(ArtifactIntegrityError, match="adapter files do not match"):
        SteeringVector(good.task_vector, dataclasses.replace(good.config, adapter={"sha256": "0" * 64}), ADAPTER)
    with pytest.raises(ArtifactValueError, match="vocab_size must be a positive integer"):
        dataclasses.replace(good.config, vocab_size=0)
    stamped = SteeringVector(good.task_vector, dataclasses.replace(good.config, task_vector_sha256=""))
    assert stamped.config.task_vector_sha256 == tensor_sha256(good.task_vector)


def test_load_not_found(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match=f"'{tmp_path}' has no {C.STEERING_FILE}") as info:
        SteeringVector.load(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    for missing in (str(tmp_path / "nope"), "./relative/nope", "a/b/c"):
        with pytest.raises(ArtifactNotFoundError, match="no steering artifact at"):
            SteeringVector.load(missing)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ArtifactNotFoundError):
        SteeringVector.load(tmp_path / "file.txt")


def test_errors_are_typed_actionable_and_catchable_as_builtins() -> None:
    from steerkit import errors

    error = ArtifactIntegrityError("'x' is damaged", hint="re-download it", path="x", expected="a", got="b")
    assert str(error) == "'x' is damaged — re-download it" and error.message == "'x' is damaged"
    assert (error.path, error.expected, error.got) == ("x", "a", "b")  # type: ignore[attr-defined]
    assert error.fields == {"path": "x", "expected": "a", "got": "b"}
    assert str(SteerkitError("plain")) == "plain"
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(c, SteerkitError) for c in classes)
    assert len({c.code for c in classes}) == len(classes)  # one code per class
    assert issubclass(ArtifactNotFoundError, FileNotFoundError) and issubclass(ArtifactExistsError, FileExistsError)
    assert issubclass(errors.IncompatibleModelError, ValueError) and issubclass(InvalidOptionError, ValueError)
    assert issubclass(errors.HubAuthError, PermissionError) and issubclass(errors.HubConnectionError, ConnectionError)


def test_optional_evaluation_round_trips(tmp_path: Path) -> None:
    plain = make_vector(12)
    evaluation = {"mc2": {"base": 0.41, "steered": 0.47, "n": 100}}
    vector = dataclasses.replace(plain, config=dataclasses.replace(plain.config, evaluation=evaluation))
    assert json.loads(vector.config.to_json())["evaluation"] == evaluation
    assert SteeringVector.load(vector.save(tmp_path / "v")).config == vector.config


# --- reliability (issue 14): every refusal is typed, links and pickles are refused, saves heal ------------


def raw_file(header: bytes, data: bytes) -> bytes:
    """A safetensors file from raw header JSON bytes (padded) and data bytes."""
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def with_metadata(directory: Path, metadata_json: bytes) -> None:
    """Rewrite the tensor file with ``metadata_json`` (raw JSON text) as its ``__metadata__``."""
    path = directory / C.STEERING_FILE
    data = load_file(path)[C.TENSOR_NAME].numpy().astype("<f4").tobytes()
    entry = json.dumps({"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [0, len(data)]}).encode()
    path.write_bytes(raw_file(b'{"__metadata__":' + metadata_json + b',"task_vector":' + entry + b"}", data))


def embed(config_text: str) -> bytes:
    return json.dumps({"format": C.FORMAT_TAG, "config": config_text}).encode()


def replace_value(directory: Path, path: list[str], raw: str) -> None:
    """Set the config value at ``path`` to the raw JSON text ``raw`` in both copies (so they agree)."""
    config = json.loads((directory / C.CONFIG_FILE).read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "@@RAW@@"
    text = json.dumps(config, sort_keys=True, indent=2).replace('"@@RAW@@"', raw) + "\n"
    (directory / C.CONFIG_FILE).write_text(text, errors="surrogatepass")
    with_metadata(directory, embed(text))


UNTYPED = [
    ("metadata-string", lambda d: with_metadata(d, b'"a JSON string"'), ArtifactCorruptError),
    ("metadata-list", lambda d: with_metadata(d, b"[1, 2]"), ArtifactCorruptError),
    ("config-not-a-string", lambda d: with_metadata(d, b'{"format": "steerkit/1", "config": {"a": 1}}'), None),
    ("deep-nesting", lambda d: replace_value(d, ["calibration", "x"], "[" * 100_000 + "]" * 100_000), None),
    ("huge-int", lambda d: replace_value(d, ["calibration", "n_tokens"], "9" * 5000), ArtifactCorruptError),
    ("400-digit-float", lambda d: replace_value(d, ["alpha"], "9" * 400), ArtifactValueError),
    ("1e400", lambda d: replace_value(d, ["mu", "fit"], "1e400"), ArtifactValueError),
    ("nan", lambda d: replace_value(d, ["mu", "value"], "NaN"), ArtifactValueError),
    ("nan-free-form", lambda d: replace_value(d, ["evaluation"], '{"x": Infinity}'), ArtifactValueError),
    ("adapter-a-string", lambda d: replace_value(d, ["adapter"], '"LORA"'), ArtifactValueError),
    ("adapter-sha-a-number", lambda d: replace_value(d, ["adapter", "sha256"], "12"), ArtifactValueError),
    ("vector-sha-a-list", lambda d: replace_value(d, ["task_vector_sha256"], '["a"]'), ArtifactValueError),
    ("data-sha-an-object", lambda d: replace_value(d, ["calibration", "data_sha256"], "{}"), ArtifactValueError),
    ("alpha-a-string", lambda d: replace_value(d, ["alpha"], '"0.1"'), ArtifactValueError),
    ("mu-a-string", lambda d: replace_value(d, ["mu", "paper", "mean"], '"-1.8"'), ArtifactValueError),
    ("mu-a-bool", lambda d: replace_value(d, ["mu_static", "fit"], "true"), ArtifactValueError),
    ("n_examples-a-float", lambda d: replace_value(d, ["calibration", "n_examples"], "4.5"), ArtifactValueError),
    ("format-version-a-number", lambda d: replace_value(d, ["format_version"], "1.0"), ArtifactValueError),
    ("chosen-by-a-dict", lambda d: replace_value(d, ["mu", "chosen_by"], '{"a": 1}'), ArtifactValueError),
    ("versions-a-number", lambda d: replace_value(d, ["versions", "torch"], "2"), ArtifactValueError),
    ("lone-surrogate", lambda d: replace_value(d, ["base_model", "name_or_path"], '"\\ud800"'), ArtifactCorruptError),
    ("surrogate-key", lambda d: replace_value(d, ["calibration", "note"], '{"\\udfff": 1}'), ArtifactCorruptError),
    ("unknown-key", lambda d: replace_value(d, ["calibration", "q"], "[0, {}]"), None),
]


@pytest.mark.parametrize(("damage", "error"), [c[1:] for c in UNTYPED], ids=[c[0] for c in UNTYPED])
def test_malformed_configs_raise_only_steerkit_errors(
    vector: SteeringVector, tmp_path: Path, damage: Callable[[Path], None], error: type | None
) -> None:
    directory = vector.save(tmp_path / "v")
    dataclasses.replace(vector, config=dataclasses.replace(vector.config, evaluation={"x": 1})).save(
        directory, overwrite=True
    )
    damage(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for read in (SteeringVector.load, read_config):
            try:
                read(directory)
            except SteerkitError as exc:
                assert isinstance(exc, ArtifactFormatError) and "\n" not in str(exc)
                assert error is None or isinstance(exc, error), repr(exc)
            else:
                assert error is None, "loaded"


def test_from_dict_raises_only_steerkit_errors(vector: SteeringVector) -> None:
    good = vector.config.to_dict()
    for bad in (
        {**good, "evaluation": {"x": float("nan")}},
        {**good, "calibration": {**good["calibration"], "n": 10**5000}},
        {**good, "tokenizer": {**good["tokenizer"], "sha256": b"bytes"}},
        {**good, "alpha": 10**400},
        {**good, "mu": {**good["mu"], "value": "1.5"}},
        {**good, "base_model": {"name_or_path": "\udc80"}},
    ):
        with pytest.raises(ArtifactFormatError):
            SteerConfig.from_dict(bad)
    for bad_mu in (None, 3, {**good["mu"], "fit": float("inf")}, {**good["mu"], "paper": {"mean": 10**400}}):
        with pytest.raises(ArtifactFormatError):
            MuStats.from_dict(bad_mu, where="x")  # type: ignore[arg-type]


def test_unknown_nested_keys_are_tolerated_and_every_loaded_vector_round_trips(
    vector: SteeringVector, tmp_path: Path
) -> None:
    quantiles = {"paper": {"0.5": -1.0, "0.9": 2.0, "note": "x"}, "exact": {"0.5": -3.0}, "gauss": "soon", "z": 1}
    calibration = {**vector.config.calibration, "mu_star_quantiles": quantiles, "extra": {"deep": [1, {"a": None}]}}
    rich = dataclasses.replace(vector, config=dataclasses.replace(vector.config, calibration=calibration))
    directory = rich.save(tmp_path / "v")
    replace_value(directory, ["tokenizer", "future"], '{"k": [1, 2.5, "s"]}')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = SteeringVector.load(directory)
        again = SteeringVector.load(loaded.save(tmp_path / "w"))
    assert loaded.files() == again.files() and loaded.config.tokenizer["future"] == {"k": [1, 2.5, "s"]}
    card = loaded.files()[C.CARD_FILE].decode()
    assert "| 0.5 | -3 | -1 |" in card and "note" not in card


def test_symlinks_are_refused_and_never_followed(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"outside")
    for name in (C.STEERING_FILE, C.CONFIG_FILE, "adapter/adapter_model.safetensors", "adapter/extra", "adapter"):
        vector.save(directory, overwrite=True)
        path = directory / name
        real = tmp_path / f"real-{name.replace('/', '-')}"
        if path.exists():
            os.replace(path, real)
        path.symlink_to(real if name != "adapter/extra" else secret)
        with pytest.raises(ArtifactCorruptError, match=f"'{path}' is a symbolic link") as info:
            SteeringVector.load(directory)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["adapter_model.bin", "weights.pt", "x.pth", "sub/model.pkl", "m.CKPT"])
def test_pickle_adapter_files_are_refused(vector: SteeringVector, tmp_path: Path, name: str) -> None:
    directory = vector.save(tmp_path / "v")
    path = directory / "adapter" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ArtifactCorruptError, match="pickle-format file; steerkit accepts safetensors adapter weights"):
        SteeringVector.load(directory)


def test_load_adapter_refuses_pickle_and_escaping_names() -> None:
    from steerkit.adapters import load_adapter
    from steerkit.errors import AdapterError

    plain = make_vector(99)
    for files in (
        {"adapter_config.json": b"{}", "adapter_model.bin": b"x"},
        {"adapter_config.json": b"{}", "../x": b""},
    ):
        vector = SteeringVector(plain.task_vector, plain.config, files)
        with pytest.raises(AdapterError):
            load_adapter(vector, object())


def test_tensor_size_is_checked_before_the_file_is_read(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = vector.save(tmp_path / "v")
    path = directory / C.STEERING_FILE
    with path.open("r+b") as handle:
        handle.truncate(8 * 1024**3)  # 8 GiB, sparse: never read
    real = Path.read_bytes

    def guarded(self: Path) -> bytes:
        assert self.name != C.STEERING_FILE, "the whole tensor file was read"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    with pytest.raises(ArtifactCorruptError, match="has trailing bytes"):
        SteeringVector.load(directory)


def test_a_tampered_readme_is_ignored_and_rewritten(vector: SteeringVector, tmp_path: Path) -> None:
    directory = vector.save(tmp_path / "v")
    (directory / C.CARD_FILE).write_text("pwned")
    loaded = SteeringVector.load(directory)
    assert loaded.files() == vector.files()
    loaded.save(tmp_path / "w")
    assert (tmp_path / "w" / C.CARD_FILE).read_bytes() == vector.files()[C.CARD_FILE]


def killed_between_renames(target: Path, stale: bool = True) -> Path:
    """Leave ``target`` as a save killed between its two renames does: absent, the old one in ``.old``."""
    old = target.parent / f".{target.name}.abcd_123.old"
    old.mkdir()
    os.replace(target, old / "previous")
    if stale:
        staging = target.parent / f".{target.name}.zz99yy88.tmp"
        staging.mkdir()
        (staging / C.STEERING_FILE).write_bytes(b"half")
    return old


def test_a_killed_save_is_restored_by_the_next_load(vector: SteeringVector, tmp_path: Path) -> None:
    target = vector.save(tmp_path / "v")
    (tmp_path / "v.x").mkdir()  # a sibling whose name starts alike is never touched
    killed_between_renames(target)
    assert not target.exists()
    assert SteeringVector.load(target).files() == vector.files()
    assert tree(target) == vector.files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v", "v.x"]
    killed_between_renames(target)
    assert SteeringVector.load(str(target)).config == vector.config  # through resolve() too


def test_a_killed_save_is_cleaned_up_by_the_next_save(vector: SteeringVector, tmp_path: Path) -> None:
    target = vector.save(tmp_path / "v")
    killed_between_renames(target)
    with pytest.raises(ArtifactExistsError):
        make_vector(99, seed=5).save(target)  # the old artifact is back, so a plain save refuses
    assert tree(target) == vector.files()
    killed_between_renames(target)
    other = make_vector(99, seed=5)
    other.save(target, overwrite=True)
    assert tree(target) == other.files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]
    (tmp_path / ".v.qq11ww22.tmp").mkdir()  # a stale staging folder beside a complete target
    vector.save(target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_two_concurrent_saves_to_a_new_folder_cannot_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import steerkit.vector as vector_module

    real = vector_module.write_files

    def slow(folder: Any, files: Any) -> None:
        time.sleep(0.05)  # both savers are past their "target does not exist" check
        real(folder, files)

    monkeypatch.setattr(vector_module, "write_files", slow)
    vectors = [make_vector(99, seed=s) for s in (1, 2)]
    for trial in range(5):
        target = tmp_path / f"v{trial}"
        results: list[Any] = [None, None]

        def save(i: int, target: Path = target, results: list[Any] = results) -> None:
            try:
                results[i] = vectors[i].save(target)
            except ArtifactExistsError as exc:
                results[i] = exc

        threads = [threading.Thread(target=save, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i in (0, 1) if isinstance(results[i], Path)]
        assert len(winners) == 1, results
        assert tree(target) == vectors[winners[0]].files()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{t}" for t in range(5)]


def test_save_into_a_bad_place_is_a_typed_one_line_error(vector: SteeringVector, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactExistsError, match="cannot save to") as info:
        vector.save(tmp_path / "file" / "v")
    assert "\n" not in str(info.value)


def test_save_into_a_read_only_place_is_a_typed_error(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied")  # what a read-only folder answers (root ignores modes)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(ArtifactExistsError, match="permission denied") as info:
        vector.save(tmp_path / "v")
    assert "\n" not in str(info.value) and not (tmp_path / "v").exists()


def test_a_folder_that_cannot_be_locked_is_a_clear_error_never_an_unlocked_save(
    vector: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 28, defect 15: a failing flock (NFS without locks) used to be ignored, so two saves could race."""
    import errno
    import fcntl

    from steerkit.errors import ArtifactLockError

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ArtifactLockError, match=r"cannot lock '.*' to save into it \(No locks available\)") as err:
        vector.save(tmp_path / "vec")
    assert "local file system" in str(err.value.hint) and err.value.code == "artifact_lock"
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left
