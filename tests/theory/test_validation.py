"""Bad input is refused with an error naming the parameter and the value, never turned into numbers.

Each case here used to return silent garbage (NaN means, beta_P's risk for a NaN strength, 0.0 for
a negative n_icl, 1e60 for a diverging step size) or fail with an error that named neither.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form as cf
from theory.estimators import gd_path, ridge_path, sample_features
from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem
from theory.monte_carlo import FitSettings, simulate_posterior
from w2s_jax.core import WeakLabels

NAN, INF = float("nan"), float("inf")


def _problem():
    return make_problem(ConceptModel.tiny(), Biased(delta=1.0))


BAD_CONFIGS = [
    (lambda: ConceptModel(d=6, K=3, alpha=(NAN, 0.5, 0.5)), ValueError, "alpha[0]=nan"),
    (lambda: ConceptModel(d=6, K=3, alpha=(0.5, NAN, NAN)), ValueError, "alpha[1]=nan"),
    (lambda: ConceptModel(d=3, K=2, feature_scales=(1.0, NAN, 1.0)), ValueError, "feature_scales[1]=nan"),
    (lambda: ConceptModel(d=3, K=2, feature_scales=(1.0, 1.0, INF)), ValueError, "feature_scales[2]=inf"),
    (lambda: ConceptModel(d=3, K=2, feature_scales="abc"), TypeError, "feature_scales='abc'"),
    (lambda: ConceptModel(d=6.0, K=3), TypeError, "d=6.0"),
    (lambda: ConceptModel(d=6, K=2.5), TypeError, "K=2.5"),
    (lambda: ConceptModel(d=6, K=3, k_star=0.0), TypeError, "k_star=0.0"),
    (lambda: ConceptModel(d=6, K=3, sigma="0.5"), TypeError, "sigma='0.5'"),
    (lambda: ConceptModel(d=6, K=3, sigma=INF), ValueError, "sigma=inf"),
    (lambda: Noisy(eta=INF), ValueError, "eta=inf"),
    (lambda: Noisy(eta=NAN), ValueError, "eta=nan"),
    (lambda: Biased(delta=INF), ValueError, "delta=inf"),
    (lambda: Biased(delta="1"), TypeError, "delta='1'"),
    (lambda: Misaligned(gamma=NAN), ValueError, "gamma=nan"),
    (lambda: Misaligned(delta=INF), ValueError, "delta=inf"),
    (lambda: Misaligned(j=1.0), TypeError, "j=1.0"),
    (lambda: FitSettings(lams=(1.0, NAN)), ValueError, "lams[1]=nan"),
    (lambda: FitSettings(lams=(INF,)), ValueError, "lams[0]=inf"),
    (lambda: FitSettings(steps=(0, 2.5)), TypeError, "steps[1]=2.5"),
    (lambda: FitSettings(trials=10.0), TypeError, "trials=10.0"),
    (lambda: FitSettings(lr=NAN), ValueError, "lr=nan"),
]


@pytest.mark.parametrize("i", range(len(BAD_CONFIGS)))
def test_bad_config_names_the_parameter_and_value(i):
    build, error, fragment = BAD_CONFIGS[i]
    with pytest.raises(error) as info:
        build()
    assert fragment in str(info.value), str(info.value)


def test_integer_like_numpy_values_are_accepted():
    model = ConceptModel(d=np.int64(6), K=np.int32(3), sigma=np.float32(0.5), alpha=(0.25, 0.5, 0.25))
    assert make_problem(model, Biased(delta=np.float64(0.5))).B_KxD.shape == (3, 6)


@pytest.mark.parametrize("draws,error,fragment", [
    (0, ValueError, "draws=0"), (1, ValueError, "draws=1"), (-5, ValueError, "draws=-5"),
    (2.5, TypeError, "draws=2.5"),
])
def test_simulate_posterior_needs_two_draws(draws, error, fragment):
    with pytest.raises(error, match=fragment):
        simulate_posterior(_problem(), 2, draws, key=jax.random.key(0))


def test_simulate_posterior_refuses_negative_n_max():
    with pytest.raises(ValueError, match="n_max=-1"):
        simulate_posterior(_problem(), -1, 4, key=jax.random.key(0))


@pytest.mark.parametrize("n_icl", [-1, -0.5, NAN, INF])
def test_chernoff_bound_refuses_bad_n_icl(n_icl):
    with pytest.raises(ValueError, match="n_icl"):
        cf.chernoff_bound(_problem(), n_icl)


def test_chernoff_bound_under_tracing_is_nan_for_negative_n_icl():
    p = _problem()
    out = np.asarray(jax.vmap(lambda n: cf.chernoff_bound(p, n))(jnp.asarray([-1.0, 0.0, 3.0])))
    assert math.isnan(out[0]) and np.all(np.isfinite(out[1:])), out


@pytest.mark.parametrize("lams,fragment", [([0.0, -0.5], r"\[-0.5\] in lam_L"), ([NAN], r"\[nan\] in lam_L"),
                                           ([INF, 1.0], r"\[inf\] in lam_L")])
def test_ridge_population_refuses_bad_strengths(lams, fragment):
    with pytest.raises(ValueError, match=fragment):
        cf.ridge_population(_problem(), jnp.asarray(lams))


def test_ridge_population_under_tracing_gives_nan_for_bad_strengths():
    p = _problem()
    risk = np.asarray(jax.jit(lambda lam: cf.ridge_population(p, lam)[1])(jnp.asarray([-1.0, NAN, 0.0, 1.0])))
    assert np.isnan(risk[:2]).all() and np.isfinite(risk[2:]).all(), risk


def test_finite_sample_ridge_refuses_nan_strength_instead_of_returning_beta_P():
    p = _problem()
    X = sample_features(p.Sigma_DxD, 20, key=jax.random.key(1))
    y = WeakLabels(p.beta_weak, p.sigma_weak)(X, key=jax.random.key(2))
    with pytest.raises(ValueError, match="lam_L"):
        ridge_path(X, y, p.beta_P, jnp.asarray([NAN]))
    traced = np.asarray(jax.jit(lambda lam: ridge_path(X, y, p.beta_P, lam))(jnp.asarray([NAN, 1.0])))
    assert np.isnan(traced[0]).all() and np.isfinite(traced[1]).all()


def test_gd_population_refuses_step_sizes_beyond_the_stability_limit():
    p = _problem()  # Sigma = I: lambda_max = 1, limit 2
    _, risk = cf.gd_population(p, jnp.arange(0, 100), lr=2.0)  # the limit itself oscillates, bounded
    assert np.all(np.isfinite(np.asarray(risk)))
    with pytest.raises(ValueError, match=r"lr=3.0 .*2 / lambda_max\(Sigma\) = 2 .*lambda_max\(Sigma\) = 1"):
        cf.gd_population(p, jnp.arange(0, 100), lr=3.0)
    scaled = make_problem(ConceptModel(d=6, K=3, feature_scales=(1.0, 1.0, 2.0, 1.0, 1.0, 1.0)), Biased(delta=1.0))
    with pytest.raises(ValueError, match=r"lr=1.0 .* = 0.5 .*lambda_max\(Sigma\) = 4"):
        cf.gd_population(scaled, jnp.arange(3), lr=1.0)  # stable for Sigma = I, not for this Sigma
    for lr in (0.0, -0.1, NAN):
        with pytest.raises(ValueError, match="lr="):
            cf.gd_population(p, jnp.arange(3), lr=lr)


def test_finite_sample_gd_refuses_step_sizes_beyond_two_over_lambda_max_of_A():
    p = _problem()
    X = sample_features(p.Sigma_DxD, 4, key=jax.random.key(3))  # n < d: lambda_max(A) well above 1
    y = WeakLabels(p.beta_weak, p.sigma_weak)(X, key=jax.random.key(4))
    a_max = float(np.linalg.eigvalsh(np.asarray(X).T @ np.asarray(X) / 4)[-1])
    lr_ok, lr_bad = 1.9 / a_max, 2.1 / a_max
    assert np.all(np.isfinite(np.asarray(gd_path(X, y, p.beta_P, jnp.asarray([0, 1, 50]), lr_ok))))
    with pytest.raises(ValueError, match=r"2 / lambda_max\(A\)"):
        gd_path(X, y, p.beta_P, jnp.asarray([0, 1, 50]), lr_bad)


# Sigma != I: the two guarantees that need isotropy fail, and the functions say so.
ANISOTROPIC = (ConceptModel(d=6, K=5, feature_scales=(2.0, 1.0, 1.0, 1.0, 1.0, 0.5)), Biased(delta=1.0))


def test_segment_bound_warns_for_anisotropic_features_where_gd_goes_below_it():
    p = make_problem(*ANISOTROPIC)
    with pytest.warns(cf.IsotropyWarning, match="Sigma = I"):
        bound = float(cf.segment_bound(p))
    _, gd_risk = cf.gd_population(p, jnp.arange(0, 10), lr=0.2)
    assert float(jnp.min(gd_risk)) < 0.5 * bound, (float(jnp.min(gd_risk)), bound)  # not a floor here


def test_refine_risk_bound_warns_for_anisotropic_features_where_the_risk_exceeds_it():
    p = make_problem(*ANISOTROPIC)
    err = 1.0 - float(p.alpha_K[p.k_star])  # n_icl = 0: E[pi] = alpha exactly, no Monte Carlo needed
    with pytest.warns(cf.IsotropyWarning, match="Sigma = I"):
        bound = float(cf.refine_risk_bound(p, err))
    assert float(cf.refine_population(p, p.alpha_K)) > 2 * bound  # 2.72 vs 1.28


def test_isotropic_problems_do_not_warn():
    p = make_problem(ConceptModel.paper(), Biased(delta=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cf.IsotropyWarning)
        assert float(cf.segment_bound(p)) == pytest.approx(4 / 9, abs=1e-12)
        assert float(cf.refine_risk_bound(p, 0.5)) == pytest.approx(0.5, abs=1e-15)
