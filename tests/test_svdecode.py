"""The SVDecode maths of docs/concepts.md, pinned against explicit formulas, finite differences and brute force."""

from __future__ import annotations

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit import svdecode
from steerkit.svdecode import aggregate_mu, confidence_mask, mu_star, mu_terms, steer, steering_delta
from steerkit.terms import TokenTerms, fit_mu

NEG_INF = float("-inf")


def logits(*shape: int, seed: int = 0, scale: float = 3.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def explicit_delta(warm: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``J(p_φ) · g_P`` with ``J = diag(p) − p pᵀ`` and ``g_P = −∇_p KL(p_φ‖p_θ)`` built explicitly, per row."""
    rows = []
    for zw, zb in zip(warm.reshape(-1, warm.shape[-1]), base.reshape(-1, base.shape[-1]), strict=True):
        p = torch.softmax(zw, -1)
        grad_kl = torch.log_softmax(zw, -1) - torch.log_softmax(zb, -1) + 1.0  # ∂/∂p Σ p (log p − log q)
        jacobian = torch.diag(p) - torch.outer(p, p)
        rows.append(jacobian @ (-grad_kl))
    return torch.stack(rows).reshape(warm.shape)


def steered_logprobs(z: torch.Tensor, delta: torch.Tensor, mu: float) -> torch.Tensor:
    return torch.log_softmax(z + mu * delta, dim=-1)


# --- the direction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2,), (3, 7), (2, 3, 64)])
def test_delta_equals_explicit_jacobian_times_kl_gradient(shape: tuple[int, ...]) -> None:
    warm, base = logits(*shape, seed=1), logits(*shape, seed=2)
    delta, keep = steering_delta(warm, base, alpha=0.0)
    assert delta.dtype == torch.float64 and keep.dtype == torch.bool and delta.shape == shape
    assert bool(keep.all())  # alpha = 0 masks nothing
    expected = explicit_delta(warm, base)
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-13)
    # J·1 = 0: the "+1" of the gradient does not matter and δz sums to zero at every position.
    torch.testing.assert_close(delta.sum(-1), torch.zeros(shape[:-1], dtype=torch.float64), rtol=0, atol=1e-14)


def test_masked_delta_is_keep_times_unmasked() -> None:
    warm, base = logits(4, 32, seed=3), logits(4, 32, seed=4)
    full, _ = steering_delta(warm, base, alpha=0.0)
    delta, keep = steering_delta(warm, base, alpha=0.1)
    p = torch.softmax(warm, -1)
    assert torch.equal(keep, p >= 0.1 * p.max(-1, keepdim=True).values)
    assert torch.equal(keep, confidence_mask(warm, alpha=0.1))
    assert not bool(keep.all()) and bool(keep.any(-1).all())
    assert torch.equal(delta, torch.where(keep, full, torch.zeros_like(full)))


def test_delta_is_zero_when_warm_equals_base() -> None:
    z = logits(3, 10, seed=5)
    delta, _ = steering_delta(z, z.clone(), alpha=0.0)
    assert torch.equal(delta, torch.zeros_like(delta))


def test_delta_float32_matches_float64() -> None:
    warm, base = logits(5, 40, seed=6), logits(5, 40, seed=7)
    d32, k32 = steering_delta(warm.float(), base.float())
    d64, k64 = steering_delta(warm.float().double(), base.float().double())
    assert d32.dtype == torch.float32
    assert torch.equal(k32, k64)
    torch.testing.assert_close(d32.double(), d64, rtol=1e-5, atol=1e-7)


def test_theorem_2_kl_derivative_by_finite_differences() -> None:
    """d/dμ KL(q ‖ softmax(z_φ + μ δ̂)) at μ = 0 equals ⟨p_φ − q, δ̂⟩, for q = p_θ and any other q."""
    warm, base = logits(6, 16, seed=8), logits(6, 16, seed=9)
    delta, _ = steering_delta(warm, base, alpha=0.1)
    p_warm = torch.softmax(warm, -1)
    h = 1e-5
    for q in (torch.softmax(base, -1), torch.softmax(logits(6, 16, seed=10), -1)):

        def kl(mu: float, q: torch.Tensor = q) -> torch.Tensor:
            return (q * (q.log() - steered_logprobs(warm, delta, mu))).sum(-1)

        numeric = (kl(h) - kl(-h)) / (2 * h)
        analytic = ((p_warm - q) * delta).sum(-1)
        assert int((analytic.abs() > 1e-2).sum()) >= 4  # a non-trivial check
        torch.testing.assert_close(numeric, analytic, rtol=1e-6, atol=1e-9)


# --- the strength ------------------------------------------------------------------------------------------


def test_mu_terms_formulas_and_finite_differences() -> None:
    warm, base = logits(8, 20, seed=11), logits(8, 20, seed=12)
    target = torch.randint(0, 20, (8,), generator=torch.Generator().manual_seed(0))
    delta, _ = steering_delta(warm, base, alpha=0.05)
    p = torch.softmax(warm, -1)
    num_p, den_p = mu_terms(warm, delta, target, curvature="paper")
    num_e, den_e = mu_terms(warm, delta, target, curvature="exact")
    gold = torch.nn.functional.one_hot(target, 20).double()
    torch.testing.assert_close(num_p, ((gold - p) * delta).sum(-1), rtol=0, atol=1e-15)
    assert torch.equal(num_p, num_e)
    torch.testing.assert_close(den_p, (delta**2).sum(-1), rtol=0, atol=1e-15)
    torch.testing.assert_close(den_e, (p * delta**2).sum(-1) - (p * delta).sum(-1) ** 2, rtol=0, atol=1e-15)

    # The token NLL along δ̂: its first derivative is −numerator and its second the exact curvature.
    def nll(mu: float) -> torch.Tensor:
        return -steered_logprobs(warm, delta, mu).gather(-1, target[:, None]).squeeze(-1)

    h = 1e-4
    torch.testing.assert_close((nll(h) - nll(-h)) / (2 * h), -num_e, rtol=1e-6, atol=1e-9)
    second = (nll(h) - 2 * nll(0.0) + nll(-h)) / h**2
    torch.testing.assert_close(second, den_e, rtol=1e-4, atol=1e-7)
    assert bool((den_e <= den_p).all())  # Var_p(δ̂) ≤ Σ p δ̂² ≤ ‖δ̂‖²


@pytest.mark.parametrize("curvature", ["paper", "exact"])
def test_mu_star_minimises_the_quadratic_model(curvature: str) -> None:
    warm, base = logits(10, 12, seed=13), logits(10, 12, seed=14)
    target = torch.randint(0, 12, (10,), generator=torch.Generator().manual_seed(1))
    delta, _ = steering_delta(warm, base)
    num, den = mu_terms(warm, delta, target, curvature=curvature)  # type: ignore[arg-type]
    mu = mu_star(num, den)
    torch.testing.assert_close(mu, num / (den + 1e-12), rtol=0, atol=0)
    p = torch.softmax(warm, -1)
    gold = torch.nn.functional.one_hot(target, 12).double()

    def model(m: torch.Tensor) -> torch.Tensor:  # ⟨p_φ − e_y, μ δ̂⟩ + ½ μ² c
        return m * ((p - gold) * delta).sum(-1) + 0.5 * m**2 * den

    best = model(mu)
    for offset in (-1.0, -0.1, -1e-3, 1e-3, 0.1, 1.0):
        assert bool((best < model(mu + offset * mu.abs().clamp(min=1.0))).all())


def test_aggregate_mu_against_hand_computations() -> None:
    # μ* = num / den = [-40, 1, 2, 3, 4, 6, 7, 8, 20, 100]
    num = torch.tensor([-80.0, 1, 2, 3, 4, 6, 7, 8, 20, 50])
    den = torch.tensor([2.0, 1, 1, 1, 1, 1, 1, 1, 1, 0.5])
    assert aggregate_mu(num, den, how="mean", eps=0.0) == 111 / 10
    assert aggregate_mu(num, den, how="median", eps=0.0) == (4 + 6) / 2
    assert aggregate_mu(num, den, how="trimmed", eps=0.0) == (1 + 2 + 3 + 4 + 6 + 7 + 8 + 20) / 8
    assert aggregate_mu(num, den, how="ratio", eps=0.0) == 21 / 10.5
    # Order does not matter; any shape is flattened.
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for how in ("mean", "median", "trimmed", "ratio"):
        assert aggregate_mu(num[perm].reshape(2, 5), den[perm].reshape(2, 5), how=how, eps=0.0) == pytest.approx(
            aggregate_mu(num, den, how=how, eps=0.0), rel=1e-15
        )
    # Odd count: the middle value; fewer than 10 values: nothing is trimmed.
    num5, den5 = torch.tensor([2.0, -3, 10, 1, 4]), torch.tensor([1.0, 1, 2, 0.5, 4])  # μ* = 2, -3, 5, 2, 1
    assert aggregate_mu(num5, den5, how="median", eps=0.0) == 2.0
    assert aggregate_mu(num5, den5, how="trimmed", eps=0.0) == aggregate_mu(num5, den5, how="mean", eps=0.0) == 7 / 5
    # 20 values: two dropped at each end.
    mu20 = torch.arange(20, dtype=torch.float64) ** 2
    assert aggregate_mu(mu20, torch.ones(20), how="trimmed", eps=0.0) == float((torch.arange(2, 18.0) ** 2).mean())
    # ε is added to every curvature (to the sum for "ratio").
    assert aggregate_mu(torch.tensor([1.0]), torch.tensor([0.0]), how="mean") == 1 / 1e-12
    assert aggregate_mu(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), how="ratio") == 0.0
    assert aggregate_mu(torch.zeros(0), torch.zeros(0), how="median") == 0.0


def test_aggregate_median_matches_torch_quantile() -> None:
    for n in (1, 2, 7, 10, 101):
        num, den = logits(n, seed=n), logits(n, seed=n + 1).abs() + 0.1
        assert aggregate_mu(num, den, how="median") == float(torch.quantile(mu_star(num, den), 0.5))


def test_invalid_options_are_refused() -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="aggregator must be one of mean, median, trimmed, ratio; got 'max'"):
        aggregate_mu(torch.ones(2), torch.ones(2), how="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="curvature must be one of paper, exact; got 'gauss'"):
        mu_terms(z, z, torch.zeros(2, dtype=torch.long), curvature="gauss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        steering_delta(z, z, alpha=1.5)
    with pytest.raises(ValueError, match=r"warm and base logits differ in shape: \(2, 3\) vs \(3,\)"):
        steering_delta(z, torch.zeros(3))


# --- the exact fit and the compact per-token data ----------------------------------------------------------


def calibration(seed: int, tokens: int = 24, vocab: int = 12, alpha: float = 0.1):  # type: ignore[no-untyped-def]
    warm, base = logits(tokens, vocab, seed=seed), logits(tokens, vocab, seed=seed + 100)
    target = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(seed))
    delta, keep = steering_delta(warm, base, alpha=alpha)
    return warm, delta, keep, target


def summed_nll(warm: torch.Tensor, delta: torch.Tensor, target: torch.Tensor, mus: torch.Tensor) -> torch.Tensor:
    """Σ_t −log softmax(z_t + μ δ̂_t)[y_t] for every μ in ``mus`` (brute force on the full logits)."""
    z = warm[None] + mus[:, None, None] * delta[None]
    return -torch.log_softmax(z, -1).gather(-1, target[None, :, None].expand(len(mus), -1, 1)).squeeze(-1).sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_mu_matches_brute_force_grid(seed: int) -> None:
    warm, delta, keep, target = calibration(seed)
    fitted = fit_mu(TokenTerms.from_logits(warm, delta, keep, target))
    coarse = torch.linspace(-50, 50, 10001, dtype=torch.float64)
    best = coarse[summed_nll(warm, delta, target, coarse).argmin()]
    assert -49 < best < 49  # an interior minimum
    fine = torch.linspace(float(best) - 0.01, float(best) + 0.01, 20001, dtype=torch.float64)
    values = summed_nll(warm, delta, target, fine)
    assert abs(fitted - float(fine[values.argmin()])) <= 2e-6
    assert float(summed_nll(warm, delta, target, torch.tensor([fitted], dtype=torch.float64))) <= float(values.min())


def test_fit_mu_on_sharp_logits_where_plain_newton_overshoots() -> None:
    """Sharp distributions: the curvature vanishes just past the optimum (a Newton step there jumps ~1e50)."""
    warm = logits(4, 9, seed=3864, scale=23.0, dtype=torch.float32).double()
    base = logits(4, 9, seed=3865, scale=23.0, dtype=torch.float32).double()
    warm[:, -1] = base[:, -1] = NEG_INF
    target = torch.tensor([3, 5, 0, 5])
    delta, keep = steering_delta(warm, base, alpha=0.0)
    terms = TokenTerms.from_logits(warm, delta, keep, target)
    assert terms.nll_derivatives(10.0)[2] < 1e-6  # nearly flat past the optimum
    fitted = fit_mu(terms)
    grid = torch.linspace(-50, 50, 100001, dtype=torch.float64)
    best = float(grid[summed_nll(warm, delta, target, grid).argmin()])
    assert 5.0 < fitted < 15.0 and abs(fitted - best) <= 1e-3


def test_fit_mu_without_finite_minimiser_stops_at_the_bound() -> None:
    # One token whose gold entry has the largest direction: the NLL decreases for ever as μ grows.
    z = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    d = torch.tensor([[1.0, -0.5, -0.5]], dtype=torch.float64)
    terms = TokenTerms.from_logits(z, d, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0]))
    far = fit_mu(terms)  # where the derivative underflows to 0 in float64 (p_μ(y) rounds to 1)
    assert 20.0 < far < 1e4 and terms.nll_derivatives(far)[1] == 0.0
    assert fit_mu(terms, max_abs=10.0) == 10.0  # still descending at the bound
    flipped = TokenTerms.from_logits(z, -d, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0]))
    assert fit_mu(flipped, max_abs=10.0) == -10.0


def test_fit_mu_degenerate_inputs() -> None:
    assert fit_mu(TokenTerms.empty()) == 0.0
    warm, _, keep, target = calibration(3)
    assert fit_mu(TokenTerms.from_logits(warm, torch.zeros_like(warm), keep, target)) == 0.0  # a flat objective


def test_token_terms_equal_full_logits() -> None:
    warm, delta, keep, target = calibration(4, tokens=10, vocab=16)
    terms = TokenTerms.from_logits(warm, delta, keep, target)
    assert terms.n_tokens == 10 and terms.token.numel() == int(keep.sum())
    assert torch.equal(terms.gold_kept, keep.gather(1, target[:, None]).squeeze(1))
    for curvature in ("paper", "exact"):
        expected = mu_terms(warm, delta, target, curvature=curvature)  # type: ignore[arg-type]
        got = terms.mu_terms(curvature=curvature)  # type: ignore[arg-type]
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-14)
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-14)
    for mu in (0.0, -3.5, 0.7, 12.0):
        gold = steered_logprobs(warm, delta, mu).gather(1, target[:, None]).squeeze(1)
        torch.testing.assert_close(terms.logprobs(mu), gold, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        terms.probs(), torch.softmax(warm, -1)[keep], rtol=0, atol=1e-15
    )  # kept entries, row-major
    # NLL and its derivatives against brute force and finite differences.
    nll, grad, curv = terms.nll_derivatives(-2.0)
    h = 1e-4
    mus = torch.tensor([-2.0 - h, -2.0, -2.0 + h], dtype=torch.float64)
    f = summed_nll(warm, delta, target, mus)
    assert nll == pytest.approx(float(f[1]), rel=1e-12)
    assert grad == pytest.approx(float((f[2] - f[0]) / (2 * h)), rel=1e-6)
    assert curv == pytest.approx(float((f[2] - 2 * f[1] + f[0]) / h**2), rel=1e-4)


def test_token_terms_static_direction_and_cat() -> None:
    warm, delta, keep, target = calibration(5, tokens=9, vocab=14)
    vector = logits(14, seed=50, scale=0.1)
    terms = TokenTerms.from_logits(warm, delta, keep, target).with_direction(vector)
    masked = torch.where(keep, vector.expand_as(warm), torch.zeros_like(warm))
    expected = TokenTerms.from_logits(warm, masked, keep, target)
    for name in ("token", "index", "logits", "delta", "gold", "gold_logit", "gold_kept", "rest_lse"):
        assert torch.equal(getattr(terms, name), getattr(expected, name)), name
    whole = TokenTerms.from_logits(warm, delta, keep, target)
    parts = TokenTerms.cat(
        [TokenTerms.from_logits(warm[a:b], delta[a:b], keep[a:b], target[a:b]) for a, b in ((0, 4), (4, 4), (4, 9))]
    )
    for name in ("token", "index", "logits", "delta", "gold", "gold_logit", "gold_kept", "rest_lse"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name
    assert TokenTerms.cat([]).n_tokens == 0


# --- the decode rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_steer_with_zero_mu_returns_the_input(dtype: torch.dtype) -> None:
    z = logits(3, 4, 50, seed=20, dtype=dtype)
    z[..., -3:] = NEG_INF
    delta, keep = steering_delta(z, logits(3, 4, 50, seed=21, dtype=dtype))
    upcast = z.double() if dtype == torch.float64 else z.float()
    for mu in (0.0, 0, torch.zeros(3), torch.zeros(3, dtype=torch.float64), torch.tensor(0.0)):
        out = steer(z, delta, keep, mu)
        assert out.dtype == upcast.dtype
        assert torch.equal(out, upcast)
        assert out.data_ptr() != z.data_ptr()  # a new tensor, never the caller's


def test_steer_adds_mu_delta_and_filters_for_both_signs() -> None:
    z = logits(2, 30, seed=22, dtype=torch.float32)
    delta, keep = steering_delta(z, logits(2, 30, seed=23, dtype=torch.float32))
    assert not bool(keep.all())
    for mu in (-2.5, 1.5):
        assert torch.equal(steer(z, delta, keep, mu), z + mu * delta)
        filtered = steer(z, delta, keep, mu, filter_masked=True)
        assert bool((filtered[~keep] == NEG_INF).all())
        assert torch.equal(filtered[keep], (z + mu * delta)[keep])
    assert torch.equal(steer(z, delta, keep, 0.0, filter_masked=True), z.masked_fill(~keep, NEG_INF))


@pytest.mark.parametrize("shape", [(4, 25), (4, 3, 25)])
def test_steer_per_row_mu(shape: tuple[int, ...]) -> None:
    z = logits(*shape, seed=24, dtype=torch.float32)
    delta, keep = steering_delta(z, logits(*shape, seed=25, dtype=torch.float32))
    mus = torch.tensor([0.0, -1.0, 2.5, -0.25])
    out = steer(z, delta, keep, mus, filter_masked=True)
    for i, mu in enumerate(mus.tolist()):
        assert torch.equal(out[i], steer(z[i], delta[i], keep[i], mu, filter_masked=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_the_float32_result_of_their_upcast(dtype: torch.dtype) -> None:
    warm = logits(3, 40, seed=26, dtype=dtype)
    base = logits(3, 40, seed=27, dtype=dtype)
    warm[:, -4:] = NEG_INF
    target = torch.tensor([0, 5, 39])
    delta, keep = steering_delta(warm, base)
    delta32, keep32 = steering_delta(warm.float(), base.float())
    assert delta.dtype == torch.float32
    assert torch.equal(delta, delta32) and torch.equal(keep, keep32)
    assert torch.equal(confidence_mask(warm, alpha=0.3), confidence_mask(warm.float(), alpha=0.3))
    for curvature in ("paper", "exact"):
        got = mu_terms(warm, delta, target, curvature=curvature)  # type: ignore[arg-type]
        want = mu_terms(warm.float(), delta32, target, curvature=curvature)  # type: ignore[arg-type]
        assert got[0].dtype == torch.float32
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for mu in (-1.25, torch.tensor([1.0, -2.0, 0.0])):
        assert torch.equal(
            steer(warm, delta.to(dtype), keep, mu, filter_masked=True),
            steer(warm.float(), delta.to(dtype).float(), keep, mu, filter_masked=True),
        )


def test_minus_inf_inputs_never_give_nan() -> None:
    warm, base = logits(6, 20, seed=28), logits(6, 20, seed=29)
    warm[:, -4:] = NEG_INF  # padded vocabulary rows: −inf in both
    base[:, -4:] = NEG_INF
    warm[1, :8] = NEG_INF  # a top-k filtered warm row
    base[2, :10] = NEG_INF  # the base gives zero probability where the warm model has mass
    warm[3] = NEG_INF  # a row that is −inf everywhere
    base[4] = NEG_INF
    target = torch.tensor([0, 2, 3, 5, 7, 19])  # token 19 is a padded row; row 1's gold is filtered
    for alpha in (0.0, 0.1, 1.0):
        delta, keep = steering_delta(warm, base, alpha=alpha)
        assert not bool(delta.isnan().any()) and bool(delta.isfinite().all())
        assert not bool(keep[warm == NEG_INF].any())
        assert bool((delta[warm == NEG_INF] == 0).all())
        for curvature in ("paper", "exact"):
            num, den = mu_terms(warm, delta, target, curvature=curvature)  # type: ignore[arg-type]
            assert bool(num.isfinite().all()) and bool(den.isfinite().all())
        for mu in (-3.0, 0.0, 2.0, torch.linspace(-2, 2, 6)):
            for filter_masked in (False, True):
                out = steer(warm, delta, keep, mu, filter_masked=filter_masked)
                assert not bool(out.isnan().any())
                assert bool((out[warm == NEG_INF] == NEG_INF).all())
        terms = TokenTerms.from_logits(warm, delta, keep, target)
        for curvature in ("paper", "exact"):
            assert all(bool(t.isfinite().all()) for t in terms.mu_terms(curvature=curvature))  # type: ignore[arg-type]
        for mu in (-3.0, 0.0, 2.0):
            lp = terms.logprobs(mu)
            assert not bool(lp.isnan().any())
            assert bool((lp[[1, 3, 5]] == NEG_INF).all())  # gold logit −inf
            assert bool(lp[[0, 2, 4]].isfinite().all())
        # −inf gold tokens add a constant +inf to the NLL: the fit is that of the other tokens.
        fitted = fit_mu(terms)
        finite = torch.tensor([0, 2, 4])
        alone = TokenTerms.from_logits(warm[finite], delta[finite], keep[finite], target[finite])
        assert fitted == pytest.approx(fit_mu(alone), rel=1e-9, abs=1e-12)
    # Base −inf where the warm model has mass: the log-ratio is floored, the direction stays finite and big.
    delta, _ = steering_delta(warm[2], base[2], alpha=0.0)
    assert bool(delta.isfinite().all()) and float(delta.abs().max()) > 100.0


def test_docstring_examples_run() -> None:
    result = doctest.testmod(svdecode, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3


# --- properties over random shapes and scales --------------------------------------------------------------

shapes = st.tuples(st.lists(st.integers(1, 3), min_size=0, max_size=3), st.integers(2, 40))
scales = st.floats(min_value=1e-3, max_value=300.0)


@settings(max_examples=50, deadline=None)
@given(shape=shapes, scale=scales, seed=st.integers(0, 2**16), alpha=st.floats(0.0, 1.0))
def test_properties(shape: tuple[list[int], int], scale: float, seed: int, alpha: float) -> None:
    lead, vocab = shape
    full = (*lead, vocab)
    warm = logits(*full, seed=seed, scale=scale, dtype=torch.float32)
    base = logits(*full, seed=seed + 1, scale=scale, dtype=torch.float32)
    if vocab > 3:
        warm[..., -1] = NEG_INF  # a padded row
        base[..., -1] = NEG_INF
    target = torch.randint(0, vocab, tuple(lead), generator=torch.Generator().manual_seed(seed))

    delta, keep = steering_delta(warm, base, alpha=alpha)
    assert delta.shape == keep.shape == full and delta.dtype == torch.float32
    assert bool(delta.isfinite().all())
    assert bool(keep.gather(-1, warm.argmax(-1, keepdim=True)).all())  # the argmax is always kept
    assert not bool(keep[warm == NEG_INF].any())
    assert bool((delta[~keep] == 0).all())

    # Unmasked, δz sums to 0 (to float32 rounding of its terms).
    dz, _ = steering_delta(warm, base, alpha=0.0)
    p = torch.softmax(warm.double(), -1)
    size = (p * (p.log().nan_to_num() - torch.log_softmax(base.double(), -1).clamp(min=-1e4)).abs()).sum(-1)
    assert bool((dz.double().sum(-1).abs() <= 1e-5 * (1 + size)).all())

    for curvature in ("paper", "exact"):
        num, den = mu_terms(warm, delta, target, curvature=curvature)  # type: ignore[arg-type]
        assert num.shape == den.shape == tuple(lead)
        assert bool(num.isfinite().all()) and bool((den >= 0).all()) and bool(den.isfinite().all())
    for how in ("mean", "median", "trimmed", "ratio"):
        assert isinstance(aggregate_mu(num, den, how=how), float)  # type: ignore[arg-type]

    assert torch.equal(steer(warm, delta, keep, 0.0), warm)
    mu = -abs(scale) / 10
    out = steer(warm, delta, keep, mu, filter_masked=True)
    assert not bool(out.isnan().any()) and bool((out[~keep] == NEG_INF).all())

    if lead:
        flat = warm.reshape(-1, vocab).double()
        terms = TokenTerms.from_logits(flat, delta.reshape(-1, vocab), keep.reshape(-1, vocab), target.reshape(-1))
        expected = torch.log_softmax(flat + mu * delta.reshape(-1, vocab).double(), -1)
        expected = expected.gather(-1, target.reshape(-1, 1)).squeeze(-1)
        got = terms.logprobs(mu)
        assert not bool(got.isnan().any())
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
        fitted = fit_mu(terms)
        around = torch.tensor([fitted - 1e-3 * max(1, abs(fitted)), fitted, fitted + 1e-3 * max(1, abs(fitted))])
        f = [terms.nll_derivatives(float(m))[0] for m in around]
        assert f[1] <= min(f[0], f[2]) + 1e-9 * (1 + abs(f[1])) or abs(fitted) == 1e4
