"""Finding steering vectors on the Hub (steerkit.search, `steerkit search`) against the in-suite Hub server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import huggingface_hub
import pytest
from hubserver import HubServer
from test_hub import make_vector
from typer.testing import CliRunner

from steerkit.search import search
from steerkit_cli.app import app


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Any:
    with HubServer() as server:
        yield server


def publish(hub: HubServer, repo: str, base: str) -> None:
    plain = make_vector()
    config = dataclasses.replace(plain.config, base_model={"name_or_path": base, "revision": None})
    vector = dataclasses.replace(plain, config=config)
    vector.push_to_hub(repo, endpoint=hub.endpoint, token=hub.token)


def test_search_finds_pushed_vectors_by_base_model_words_and_tag(hub: HubServer) -> None:
    publish(hub, f"{hub.user}/truthfulqa-smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
    publish(hub, f"{hub.user}/sentiment-smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
    publish(hub, f"{hub.user}/sentiment-gpt2", "gpt2")
    hub.create_repo(f"{hub.user}/not-a-vector")  # no steerkit card: never listed
    kw: dict[str, Any] = {"endpoint": hub.endpoint, "token": hub.token}
    every = [f.repo_id for f in search(**kw)]
    assert every == sorted(f"{hub.user}/{n}" for n in ("truthfulqa-smollm2", "sentiment-smollm2", "sentiment-gpt2"))
    smol = search(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", **kw)
    assert [f.repo_id for f in smol] == [f"{hub.user}/sentiment-smollm2", f"{hub.user}/truthfulqa-smollm2"]
    assert all(f.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" for f in smol)
    assert {"steerkit", "steering-vector", "svdecode"} <= set(smol[0].tags)
    vector = make_vector()
    assert smol[0].summary == {
        "modes": ["static"],  # make_vector carries no adapter: static mode only
        "mu": vector.mu,
        "mu_static": vector.mu_static,
        "format": "steerkit/1",
    }
    assert [f.repo_id for f in search(task="sentiment", base_model="gpt2", **kw)] == [f"{hub.user}/sentiment-gpt2"]
    assert search(tags=["no-such-tag"], **kw) == []


def test_cli_search_json_equals_library(hub: HubServer) -> None:
    publish(hub, f"{hub.user}/truthfulqa-smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
    args = ["search", "--base-model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--endpoint", hub.endpoint]
    result = CliRunner().invoke(app, [*args, "--token", hub.token, "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    expected = search(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", endpoint=hub.endpoint, token=hub.token)
    assert data == [f.to_dict() for f in expected] and len(data) == 1
    human = CliRunner().invoke(app, [*args, "--token", hub.token])
    assert human.exit_code == 0 and "truthfulqa" in human.stdout and "Load one with: steerkit pull" in human.stdout
    empty = CliRunner().invoke(app, ["search", "--base-model", "nobody/none", "--endpoint", hub.endpoint])
    assert "No steering vectors found" in empty.stdout


def test_a_hostile_card_is_listed_as_unreadable_never_fatal_and_never_reaches_the_terminal_raw(hub: HubServer) -> None:
    publish(hub, f"{hub.user}/good-smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
    hostile = f"{hub.user}/hostile"
    hub.create_repo(hostile)
    card = (
        "---\n"
        "library_name: steerkit\n"
        "tags: [steerkit]\n"
        'base_model: "org/m[/x]\\e]0;pwned\\a\\e[2J[link=https://evil]click[/link]"\n'
        "steerkit: {mu: abc, mu_static: 1.0e+400, modes: [1, static]}\n"
        "---\n"
    )
    hub.commit(hostile, {"README.md": card.encode()})
    kw: dict[str, Any] = {"endpoint": hub.endpoint, "token": hub.token}
    found = {f.repo_id: f for f in search(**kw)}
    bad = found[hostile]
    assert bad.summary == {} and bad.unreadable == ["steerkit.mu", "steerkit.mu_static", "steerkit.modes"]
    assert bad.base_model is not None and "\x1b" in bad.base_model  # the library keeps the data as it is
    assert found[f"{hub.user}/good-smollm2"].unreadable == []
    human = CliRunner().invoke(app, ["search", "--endpoint", hub.endpoint, "--token", hub.token])
    assert human.exit_code == 0, human.stderr
    out = human.stdout
    assert "good-smollm2" in out and "hostile" in out  # one bad card breaks nothing
    assert "\x1b" not in out and "\x07" not in out  # no escape sequence reaches the terminal
    assert "org/m[/x]" in out and "[link=https://evil]click[/link]" in out  # markup shown as text, not run
    assert "unreadable card fields: steerkit.mu, steerkit.mu_static, steerkit.modes" in " ".join(out.split())


def test_search_bounds_the_listing_and_a_malformed_one_is_a_hub_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerkit.errors import HubServerError, InvalidOptionError
    from steerkit.search import MAX_RESULTS

    asked: list[Any] = []

    def listing(self: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["limit"])
        yield from ()

    monkeypatch.setattr(huggingface_hub.HfApi, "list_models", listing)
    assert search(limit=None) == [] and asked == [MAX_RESULTS]  # "all" is bounded: a Link chain ends there
    for bad in (0, MAX_RESULTS + 1, 10**6, True, "5"):
        with pytest.raises(InvalidOptionError, match=f"limit must be an integer from 1 to {MAX_RESULTS}"):
            search(limit=bad)  # type: ignore[arg-type]

    def malformed(self: Any, **kwargs: Any) -> Any:
        yield huggingface_hub.ModelInfo(**{"id": "ok/one", "tags": ["steerkit"]})
        raise KeyError("id")  # what huggingface_hub raises for an entry without an id

    monkeypatch.setattr(huggingface_hub.HfApi, "list_models", malformed)
    with pytest.raises(HubServerError, match=r"the Hub's model listing is malformed \(KeyError"):
        search()
    result = CliRunner().invoke(app, ["search", "--limit", "1000000"])
    assert result.exit_code == 2 and "1000" in result.stderr


def test_mixed_type_tags_and_a_card_that_is_no_object_are_read_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    entry = SimpleNamespace(id="x/y", tags=["b", 1, None], sha=5, private=0, card_data=["not", "an", "object"])
    monkeypatch.setattr(huggingface_hub.HfApi, "list_models", lambda self, **kw: iter([entry]))
    (found,) = search()
    assert (found.repo_id, found.tags, found.sha, found.private) == ("x/y", ["1", "None", "b"], None, False)
    assert found.summary == {} and found.unreadable == ["cardData"]
