"""Bounds of the model against Monte Carlo: the fine-tuning lower bound over a grid, the Chernoff
bound on refinement's error and its decay rate, rho against a direct moment estimate, and the
identifiability condition. Tolerances are 4 Monte Carlo standard errors (plus float64 round-off).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form as cf
from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem, stack_problems
from theory.monte_carlo import FitSettings, simulate_fits, simulate_posterior
from w2s_jax.core import excess_risk

Z = 4.0  # tolerance in standard errors


def _grid_problems(d, K):
    """Supervisors x priors sharing (d, K), stacked so one compiled simulation covers them all."""
    skewed = tuple(np.r_[0.4, np.full(K - 1, 0.6 / (K - 1))])
    cases = [
        (ConceptModel(d=d, K=K, sigma=0.5), Biased(delta=0.5)),
        (ConceptModel(d=d, K=K, sigma=0.5), Biased(delta=1.0)),
        (ConceptModel(d=d, K=K, sigma=0.5), Biased(delta=2.0)),
        (ConceptModel(d=d, K=K, sigma=0.5, alpha=skewed), Biased(delta=1.0)),
        (ConceptModel(d=d, K=K, sigma=0.5), Misaligned(gamma=0.3, delta=0.5)),
    ]
    return [make_problem(m, s) for m, s in cases]


@pytest.mark.parametrize("d,K,ns", [(6, 3, (4, 12, 50)), (20, 5, (10, 30, 100))])
def test_segment_bound_holds_for_finite_sample_fine_tuning(d, K, ns):
    """E R(b) >= R(E b) >= segment_bound for weak-label ridge and GD at every (delta, n, lam, t),
    including n < d (ridge at lam > 0; GD from beta_P)."""
    problems = _grid_problems(d, K)
    s = FitSettings(ns=ns, trials=200, n_icl=0)
    out = jax.vmap(lambda p: simulate_fits(p, s, key=jax.random.key(7)))(stack_problems(problems))
    bound_P = np.asarray(jax.vmap(cf.segment_bound)(stack_problems(problems)))
    for path in ("weak/ridge", "weak/gd"):
        risk_PxTxNxL = np.asarray(out[path])
        mean = risk_PxTxNxL.mean(axis=1)
        se = risk_PxTxNxL.std(axis=1, ddof=1) / np.sqrt(risk_PxTxNxL.shape[1])
        slack = mean - (bound_P[:, None, None] - Z * se - 1e-12)
        assert np.all(slack >= 0), (path, np.unravel_index(np.argmin(slack), slack.shape), slack.min())


ORTHOGONAL_CASES = [
    (ConceptModel(d=20, K=5, sigma=0.5), Biased(delta=1.0)),
    (ConceptModel(d=6, K=3, sigma=0.5), Biased(delta=0.3)),
    (ConceptModel(d=10, K=4, sigma=0.5, alpha=(0.1, 0.2, 0.3, 0.4), k_star=2), Biased(delta=2.5)),
    (ConceptModel(d=6, K=3, sigma=0.5), Noisy(eta=1.0)),  # eps_W = 0: both bounds vanish
]


@pytest.mark.parametrize("case", range(len(ORTHOGONAL_CASES)))
def test_segment_bound_equals_orthogonal_bound_when_errors_orthogonal(case):
    p = make_problem(*ORTHOGONAL_CASES[case])
    seg = float(cf.segment_bound(p))
    orth = float(cf.orthogonal_bound(cf.eps_P2(p), cf.eps_W2(p))) if float(cf.eps_W2(p)) > 0 else 0.0
    assert seg == pytest.approx(orth, abs=1e-12)


ALL_SUPERVISORS = [
    (ConceptModel(d=20, K=5, sigma=0.5), Biased(delta=1.0)),
    (ConceptModel(d=6, K=3, sigma=0.5), Noisy(eta=1.0)),
    (ConceptModel(d=8, K=4, sigma=0.5), Misaligned(gamma=0.3, delta=0.5)),
    (ConceptModel(d=8, K=4, sigma=0.5), Misaligned(gamma=0.8, delta=0.0, j=3)),
    (ConceptModel(d=8, K=4, sigma=0.5, alpha=(0.7, 0.1, 0.1, 0.1)), Misaligned(gamma=0.4, delta=1.0)),
]


@pytest.mark.parametrize("case", range(len(ALL_SUPERVISORS)))
def test_segment_bound_is_the_segment_minimum_and_population_paths_stay_above(case):
    p = make_problem(*ALL_SUPERVISORS[case])
    bound = float(cf.segment_bound(p))
    s_S = jnp.linspace(0.0, 1.0, 100001)[:, None]
    brute = float(jnp.min(excess_risk((1 - s_S) * p.beta_P + s_S * p.beta_weak, p.beta_star)))
    assert bound == pytest.approx(brute, abs=1e-8)  # grid spacing 1e-5, risk quadratic in s
    _, ridge_risk = cf.ridge_population(p, jnp.concatenate([jnp.zeros(1), jnp.logspace(-4, 4, 400)]))
    _, gd_risk = cf.gd_population(p, jnp.arange(0, 3000), lr=0.01)  # small steps resolve the segment
    assert float(jnp.min(ridge_risk)) >= bound - 1e-12
    assert float(jnp.min(gd_risk)) >= bound - 1e-12
    # Both paths sweep the whole segment, so they come within the grid's resolution of the bound.
    assert float(jnp.min(ridge_risk)) <= bound + 1e-3
    assert float(jnp.min(gd_risk)) <= bound + 1e-3


CHERNOFF_CASES = {
    "biased": (ConceptModel(d=8, K=4, sigma=0.5), Biased(delta=1.0)),
    "noisy": (ConceptModel(d=8, K=4, sigma=0.5), Noisy(eta=1.5)),
    "misaligned": (ConceptModel(d=8, K=4, sigma=0.5), Misaligned(gamma=0.3, delta=0.5)),
    "nonuniform_alpha": (ConceptModel(d=8, K=4, sigma=0.5, alpha=(0.1, 0.6, 0.2, 0.1)), Biased(delta=1.0)),
    "default": (ConceptModel.paper(), Biased(delta=1.0)),
}


_chernoff_path = jax.jit(lambda p, n_J: jax.vmap(lambda n: cf.chernoff_bound(p, n))(n_J))


@pytest.mark.parametrize("case", sorted(CHERNOFF_CASES))
def test_chernoff_bound_dominates_refinement_error(case):
    p = make_problem(*CHERNOFF_CASES[case])
    n_max, draws = (16, 40000) if case == "default" else (60, 20000)  # shapes shared with other tests
    post = simulate_posterior(p, n_max, draws, key=jax.random.key(13))
    bound_J = _chernoff_path(p, jnp.arange(n_max + 1))
    err, se = np.asarray(post["err_J"]), np.asarray(post["err_se_J"])
    assert np.all(np.asarray(bound_J) >= err - Z * se - 1e-12), np.min(np.asarray(bound_J) - err + Z * se)
    assert np.all(np.diff(np.asarray(bound_J)) <= 1e-12)  # non-increasing in n_icl
    assert float(bound_J[n_max]) < 1.0  # and informative somewhere in the range


def test_decay_exponent_matches_fitted_slope():
    """log err_n = -rho* n - c log n + b + O(1/n) (Cramér): fit [n, log n, 1] where rel. se < 10%.

    Tolerance: the slope is a fixed linear combination sum_n W_n log err_n of the fit rows; with
    relative errors se_n / err_n, its standard error is at most sum_n |W_n| se_n / err_n (the nested
    demonstration sets make the errors positively correlated; perfect correlation is the worst
    case). We allow 4 of those; for this setting it is ~25% of rho*.
    """
    p = make_problem(ConceptModel(d=8, K=4, sigma=0.5), Misaligned(gamma=0.4, delta=0.5))
    rho_star = float(cf.decay_exponent(p))
    post = simulate_posterior(p, 100, 40000, key=jax.random.key(0))
    err, se = np.asarray(post["err_J"]), np.asarray(post["err_se_J"])
    n = np.arange(err.size)
    sel = n[(n >= 5) & (se < 0.1 * err)]
    assert sel.size >= 50, sel  # a long, well-resolved range
    A = np.stack([sel, np.log(sel), np.ones(sel.size)], axis=1)
    W = np.linalg.pinv(A)[0]
    slope = float(W @ np.log(err[sel]))
    tol = Z * float(np.sum(np.abs(W) * se[sel] / err[sel]))
    assert abs(slope + rho_star) <= tol, (slope, -rho_star, tol)


@pytest.mark.parametrize("case", ["default", "noisy", "misaligned"])
def test_rho_matches_direct_moment(case):
    """exp(-rho_k(s)) = E[(p_k(y'|x) / p_star(y'|x))^s] over one demonstration (x, y')."""
    model, sup = CHERNOFF_CASES[case]
    p = make_problem(model, sup)
    s_S = jnp.asarray([0.02, 0.04])  # 2s must stay inside the (narrow) region where the moment exists
    # The estimator's variance is finite iff the moment at 2s exists.
    assert np.all(np.isfinite(np.asarray(cf.rho(p, 2 * s_S)))), "pick s with a finite second moment"
    rng = np.random.default_rng(17)
    M = 400_000
    x = rng.standard_normal((M, model.d)) * np.sqrt(np.diag(np.asarray(p.Sigma_DxD)))
    y = x @ np.asarray(p.beta_weak) + float(p.sigma_weak) * rng.standard_normal(M)
    r2_MxK = (y[:, None] - x @ np.asarray(p.B_KxD).T) ** 2
    dlog_MxK = -(r2_MxK - r2_MxK[:, [model.k_star]]) / (2 * float(p.sigma) ** 2)  # log p_k - log p_star
    for i, s in enumerate(np.asarray(s_S)):
        v = np.exp(s * dlog_MxK)
        mean, se = v.mean(axis=0), v.std(axis=0, ddof=1) / np.sqrt(M)
        expected = np.exp(-np.asarray(cf.rho(p, s_S))[:, i])
        assert np.all(np.abs(mean - expected) <= Z * se + 1e-12), (s, mean, expected, se)


IDENTIFIABILITY = [
    (ConceptModel(d=20, K=5, sigma=0.5), Biased(delta=1.0), True),
    (ConceptModel(d=20, K=5, sigma=0.5), Biased(delta=10.0), True),
    (ConceptModel(d=6, K=3, sigma=0.5), Noisy(eta=3.0), True),
    (ConceptModel(d=6, K=3, sigma=0.5), Misaligned(gamma=0.49), True),
    (ConceptModel(d=6, K=3, sigma=0.5), Misaligned(gamma=0.5), False),
    (ConceptModel(d=6, K=3, sigma=0.5), Misaligned(gamma=0.51), False),
    (ConceptModel(d=6, K=3, sigma=0.5), Misaligned(gamma=0.49, delta=2.0), True),  # u is orthogonal to both
    (ConceptModel(d=6, K=3, sigma=0.5, alpha=(0.05, 0.9, 0.05)), Misaligned(gamma=0.49), True),  # prior-free
]


@pytest.mark.parametrize("case", range(len(IDENTIFIABILITY)))
def test_identifiable_flips_exactly_at_gamma_half(case):
    model, sup, expected = IDENTIFIABILITY[case]
    p = make_problem(model, sup)
    assert bool(cf.identifiable(p)) is expected
    assert (float(cf.decay_exponent(p)) > 0) is expected


@pytest.mark.parametrize("gamma", [0.3, 0.7])
def test_refinement_posterior_concentrates_on_the_closer_concept(gamma):
    """gamma < 1/2: mass on k* -> 1; gamma > 1/2: mass on k* -> 0 and on j -> 1 (misidentified)."""
    model = ConceptModel(d=8, K=4, sigma=0.5)
    sup = Misaligned(gamma=gamma, j=1)
    p = make_problem(model, sup)
    post = simulate_posterior(p, 60, 20000, key=jax.random.key(2))
    winner = model.k_star if gamma < 0.5 else sup.j
    mass = np.asarray(post["E_pi_JxK"])[:, winner]
    cov = np.asarray(post["cov_pi_JxKxK"])[:, winner, winner]
    se = np.sqrt(cov / 20000)
    checkpoints = [0, 5, 20, 60]
    assert np.all(np.diff(mass[checkpoints]) > -Z * se[checkpoints][1:]), mass[checkpoints]
    assert mass[60] >= 0.99 - Z * se[60], mass[60]
    if gamma > 0.5:
        assert np.asarray(post["E_pi_JxK"])[60, model.k_star] <= 0.01


def test_chernoff_bound_at_zero_demonstrations_is_the_prior_ratio_sum():
    """No demonstration: each term is inf_{s in (0,1]} (alpha_k / alpha_*)^s = alpha_k / alpha_* when
    alpha_k < alpha_*, even where the moment rho_k(s) is infinite (0 * inf is 0 here, not NaN)."""
    p = make_problem(ConceptModel(d=8, K=5, sigma=0.5, alpha=(0.6, 0.1, 0.1, 0.1, 0.1)), Biased(delta=1.0))
    assert np.any(np.isinf(np.asarray(cf.rho(p))))  # the case that used to give NaN
    assert float(cf.chernoff_bound(p, 0)) == pytest.approx(4 * 0.1 / 0.6, abs=1e-12)
    np.testing.assert_allclose(np.asarray(cf.chernoff_terms(p, 0)), [0, 1 / 6, 1 / 6, 1 / 6, 1 / 6], atol=1e-12)
    assert 1 - 0.6 <= float(cf.chernoff_bound(p, 0))  # and it bounds 1 - E[pi*] = 1 - alpha_* at n_icl = 0
