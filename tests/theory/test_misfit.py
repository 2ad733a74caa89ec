"""The probe on span(B) (theory/probe.py) against hand values, limits and Monte Carlo.

Pythagorean identity (eq. T.20) to 1e-10; the finite-n risk (T.21) and the finite-n identity with
the fitted probe's misfit (T.22) within 4 Monte Carlo standard errors; the limits theta = 90 (the
probe's error is its variance alone) and theta = 0 (no gain).
"""

import math

import jax
import numpy as np
import pytest

from theory import closed_form as cf
from theory import probe
from theory.model import Angled, Biased, ConceptModel, make_problem

Z = 4.0

SETTINGS = [
    (ConceptModel.paper(), Angled(delta=1.0, theta=60.0)),
    (ConceptModel(d=8, K=4, sigma=0.3, alpha=(0.1, 0.2, 0.3, 0.4), k_star=2), Angled(delta=2.5, theta=17.0, rival=0)),
    (ConceptModel(d=7, K=3, sigma=1.0, feature_scales=(2.0, 0.5, 1.0, 1.5, 1.0, 0.7, 3.0)), Angled(delta=0.8, theta=75.0)),
    (ConceptModel(d=30, K=8, sigma=1.0), Angled(delta=1.3, theta=0.0, rival=5)),
]


@pytest.mark.parametrize("case", range(len(SETTINGS)))
def test_pythagorean_identity_in_closed_form(case):
    """eps_W^2 = R(P beta_w) + ||(I - P) beta_w||^2_Sigma, eps_W^2 from closed_form (another code path)."""
    p = make_problem(*SETTINGS[case])
    _, inside = probe.probe_population(p)
    assert abs(inside + probe.misfit_population(p) - float(cf.eps_W2(p))) <= 1e-10


@pytest.mark.parametrize("theta,inside,outside", [(60.0, 0.25, 0.75), (30.0, 0.75, 0.25), (45.0, 0.5, 0.5),
                                                  (90.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_in_span_bias_and_misfit_by_hand(theta, inside, outside):
    """delta = 1, Sigma = I: in-span bias^2 = cos^2(theta), misfit = sin^2(theta), exactly at 0 and 90."""
    p = make_problem(ConceptModel.paper(), Angled(delta=1.0, theta=theta))
    assert probe.probe_population(p)[1] == pytest.approx(inside, abs=1e-15)
    assert probe.misfit_population(p) == pytest.approx(outside, abs=1e-15)
    if theta == 90.0:
        assert probe.probe_population(p)[1] == 0.0  # exactly: no bias inside span(B)
    if theta == 0.0:
        assert probe.misfit_population(p) == 0.0  # exactly: no bias outside span(B)


def test_theta_90_is_the_biased_supervisor_and_the_probe_error_is_its_variance_alone():
    a = make_problem(ConceptModel.paper(), Angled(delta=1.0, theta=90.0))
    b = make_problem(ConceptModel.paper(), Biased(delta=1.0))
    np.testing.assert_array_equal(np.asarray(a.beta_weak), np.asarray(b.beta_weak))
    # sigma^2 + delta^2 = 1.25 of effective noise in K = 5 dimensions: 1.25 * 5 / (n - 6)
    assert probe.probe_risk(a, 26) == pytest.approx(1.25 * 5 / 20, abs=1e-15)
    assert float(cf.segment_bound(a)) == pytest.approx(4 / 9, abs=1e-12)


def test_theta_0_gives_no_gain():
    """Bias inside span(B): the probe keeps all of it, so its risk is eps_W^2 plus its variance."""
    p = make_problem(ConceptModel.paper(), Angled(delta=1.0, theta=0.0))
    assert probe.misfit_population(p) == 0.0
    assert probe.probe_risk(p, 106) == pytest.approx(float(cf.eps_W2(p)) + 0.25 * 5 / 100, abs=1e-14)


@pytest.mark.parametrize("theta,expected", [(44.0, False), (45.0, False), (46.0, True), (90.0, True)])
def test_identifiable_iff_in_span_bias_below_one_over_root_two(theta, expected):
    """||beta_w - beta_r||^2 - ||beta_w - beta*||^2 = 2 - 2 sqrt(2) delta cos(theta): positive iff delta cos < 1/sqrt 2."""
    p = make_problem(ConceptModel.paper(), Angled(delta=1.0, theta=theta))
    assert bool(cf.identifiable(p)) is expected


@pytest.mark.parametrize("case", [0, 1, 2])
def test_finite_n_risk_and_misfit_identity_by_monte_carlo(case):
    model, sup = SETTINGS[case]
    p = make_problem(model, sup)
    K, T = model.K, 3000
    ns = (K + 8, 4 * K + 10)
    out = {k: np.asarray(v) for k, v in probe.simulate_probe(p, ns, T, 50, key=jax.random.key(case)).items()}
    eps_w = float(cf.eps_W2(p))
    for i, n in enumerate(ns):
        V = probe.probe_variance(p, n)
        R, M, Mt = out["risk_TxN"][:, i], out["misfit_TxN"][:, i], out["misfit_test_TxN"][:, i]
        assert abs(R.mean() - probe.probe_risk(p, n)) <= Z * R.std(ddof=1) / math.sqrt(T), (n, R.mean())
        S = R + M  # eq. T.22
        assert abs(S.mean() - (eps_w + 2 * V)) <= Z * S.std(ddof=1) / math.sqrt(T), (n, S.mean())
        gap = (eps_w - R) - (Mt - 2 * V)  # the gain the unlabelled misfit predicts
        assert abs(gap.mean()) <= Z * gap.std(ddof=1) / math.sqrt(T)


@pytest.mark.parametrize("build,fragment", [
    (lambda: Angled(theta=91.0), "theta=91.0"),
    (lambda: Angled(theta=-1.0), "theta=-1.0"),
    (lambda: Angled(delta=-1.0), "delta=-1.0"),
    (lambda: make_problem(ConceptModel.paper(), Angled(rival=0)), "rival=0"),
    (lambda: make_problem(ConceptModel.paper(), Angled(rival=5)), "rival=5"),
    (lambda: probe.probe_variance(make_problem(ConceptModel.paper(), Angled()), 6), "n > K + 1"),
])
def test_bad_angled_settings_name_the_parameter(build, fragment):
    with pytest.raises(ValueError, match=fragment.replace("+", r"\+")):
        build()
