"""Choosing μ on multiple-choice calibration items (steerkit.tune) against brute-force evaluation."""

from __future__ import annotations

from typing import Any

import pytest
from test_decode import hand_vector, sharp_pair
from test_evaluate import ITEMS
from tiny import tiny_tokenizer

from steerkit.data import data_sha256
from steerkit.errors import InvalidOptionError
from steerkit.evaluate import evaluate_mc
from steerkit.steering import Steering
from steerkit.tune import default_grid, search_mu, tune_mu

GRID = [-100.0, -30.0, -10.0, -3.0, -1.0, 0.0, 1.0, 3.0, 10.0, 30.0, 100.0]


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


def brute_force(peft: Any, tok: Any, vector: Any, mode: str, metric: str) -> list[tuple[float, float]]:
    """A full evaluate_mc (forward passes included) at every grid point."""
    out = []
    for mu in GRID:
        res = evaluate_mc(peft, ITEMS, tokenizer=tok, steering=Steering(vector, mode=mode, mu=mu), n_bootstrap=0)
        out.append((mu, res[metric]["value"]))
    return out


def best_of(table: list[tuple[float, float]]) -> float:
    top = max(v for _, v in table)
    return min((mu for mu, v in table if v == top), key=lambda m: (abs(m), m))


@pytest.mark.parametrize(("mode", "metric"), [("dynamic", "mc2"), ("static", "mc2"), ("dynamic", "accuracy")])
def test_search_equals_brute_force_over_the_grid(peft: Any, tok: Any, mode: str, metric: str) -> None:
    vector = hand_vector(peft, tok)
    found = search_mu(vector, peft, ITEMS, tokenizer=tok, metric=metric, mode=mode, grid=GRID, refine=False)  # type: ignore[arg-type]
    brute = brute_force(peft, tok, vector, mode, metric)
    assert [mu for mu, _ in found.grid] == GRID
    assert [v for _, v in found.grid] == pytest.approx([v for _, v in brute], abs=1e-9)
    assert found.best == best_of(brute)
    assert found.refined == []
    if metric == "mc2":
        assert len({round(v, 6) for _, v in brute}) > 3  # the metric really varies with μ


def test_refinement_only_improves(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    coarse = search_mu(vector, peft, ITEMS, tokenizer=tok, metric="mc2", grid=GRID, refine=False)
    fine = search_mu(vector, peft, ITEMS, tokenizer=tok, metric="mc2", grid=GRID, refine=True)
    assert fine.grid == coarse.grid and len(fine.refined) > 0
    assert fine.value >= coarse.value
    i = GRID.index(coarse.best)
    lo, hi = GRID[max(i - 1, 0)], GRID[min(i + 1, len(GRID) - 1)]
    assert all(lo <= mu <= hi for mu, _ in fine.refined)
    res = evaluate_mc(peft, ITEMS, tokenizer=tok, steering=Steering(vector, mu=fine.best), n_bootstrap=0)
    assert res["mc2"]["value"] == pytest.approx(fine.value, abs=1e-9)


def test_tune_mu_returns_vector_with_choice(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    found = search_mu(vector, peft, ITEMS, tokenizer=tok, metric="mc2", grid=GRID)
    tuned = tune_mu(vector, peft, ITEMS, tokenizer=tok, metric="mc2", grid=GRID)
    assert tuned.mu == found.best and tuned.mu_static == vector.mu_static
    assert tuned.config.mu.chosen_by == "search:mc2"
    assert tuned.config.mu.chosen_on == data_sha256(ITEMS) == found.data_sha256
    assert tuned.config.mu.paper == vector.config.mu.paper  # the build-time statistics are kept
    static = tune_mu(vector, peft, ITEMS, tokenizer=tok, metric="accuracy", mode="static", grid=GRID)
    assert static.mu == vector.mu and static.config.mu_static.chosen_by == "search:accuracy"


def test_flat_metric_keeps_mu_zero(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    tiny_grid = [-1e-9, 0.0, 1e-9]
    found = search_mu(vector, peft, ITEMS, tokenizer=tok, metric="accuracy", grid=tiny_grid, refine=False)
    assert found.best == 0.0  # ties go to the smallest |μ|


def test_default_grid_and_bad_metric(peft: Any, tok: Any) -> None:
    grid = default_grid()
    assert len(grid) == 35 and grid == sorted(grid) and 0.0 in grid
    assert grid[0] == pytest.approx(-100.0) and grid[-1] == pytest.approx(100.0)
    assert [-g for g in grid] == pytest.approx(grid[::-1]) and min(abs(g) for g in grid if g) == pytest.approx(0.01)
    vector = hand_vector(peft, tok)
    plain = [{"prompt": it["prompt"], "choices": it["choices"], "label": it["label"]} for it in ITEMS]
    with pytest.raises(InvalidOptionError, match="metric 'mc2' needs items with an MC2 set"):
        tune_mu(vector, peft, plain, tokenizer=tok, metric="mc2")
    with pytest.raises(InvalidOptionError, match="unknown metric 'f1'"):
        tune_mu(vector, peft, ITEMS, tokenizer=tok, metric="f1")  # type: ignore[arg-type]
