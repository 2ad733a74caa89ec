"""The Monte Carlo engine's contracts: PRNG discipline, one compile per static setting, validated
settings, and a jax/numpy-only import surface."""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest

from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem
from theory.monte_carlo import FitSettings, simulate_fits, simulate_posterior
from w2s_jax.core import GoldLabels, RefinedLabels, WeakLabels

TINY = FitSettings(ns=(12,), trials=6, lams=(0.0, 1.0), steps=(0, 5), n_icl=3)


def _tiny_problem():
    return make_problem(ConceptModel.tiny(), Biased(delta=1.0))


def test_same_key_same_result_different_keys_differ():
    p = _tiny_problem()
    a = simulate_fits(p, TINY, key=jax.random.key(0))
    b = simulate_fits(p, TINY, key=jax.random.key(0))
    c = simulate_fits(p, TINY, key=jax.random.key(1))
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))  # bitwise
        assert not np.allclose(np.asarray(a[name])[..., 1:], np.asarray(c[name])[..., 1:]), name
    post_a = simulate_posterior(p, 4, 64, key=jax.random.key(0))
    post_b = simulate_posterior(p, 4, 64, key=jax.random.key(0))
    post_c = simulate_posterior(p, 4, 64, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(post_a["E_pi_JxK"]), np.asarray(post_b["E_pi_JxK"]))
    assert not np.allclose(np.asarray(post_a["E_pi_JxK"])[1:], np.asarray(post_c["E_pi_JxK"])[1:])


def test_trial_draws_do_not_depend_on_the_number_of_trials():
    """Keys are folded with the trial index, so trial i is the same in a run of 6 or of 3 trials."""
    p = _tiny_problem()
    full = simulate_fits(p, TINY, key=jax.random.key(0))
    head = simulate_fits(p, FitSettings(**{**TINY.__dict__, "trials": 3}), key=jax.random.key(0))
    for name in full:
        np.testing.assert_allclose(np.asarray(head[name]), np.asarray(full[name])[:3], rtol=1e-12, atol=1e-14)


def test_simulation_compiles_once_per_static_setting():
    p = _tiny_problem()
    settings = FitSettings(ns=(12,), trials=5, lams=(0.5,), steps=(3,), n_icl=2)  # unique to this test
    before = simulate_fits._cache_size()
    simulate_fits(p, settings, key=jax.random.key(0))
    after_first = simulate_fits._cache_size()
    simulate_fits(p, settings, key=jax.random.key(1))
    p2 = make_problem(ConceptModel.tiny(), Biased(delta=2.0))  # same shapes, new values: no retrace
    simulate_fits(p2, settings, key=jax.random.key(2))
    assert after_first == before + 1
    assert simulate_fits._cache_size() == after_first


BAD_SETTINGS = [
    (lambda: ConceptModel(d=3, K=5), "K=5"),
    (lambda: ConceptModel(d=6, K=3, alpha=(0.5, 0.6, -0.1)), "alpha="),
    (lambda: ConceptModel(d=6, K=3, alpha=(0.2, 0.2, 0.2)), "alpha="),
    (lambda: ConceptModel(d=6, K=3, sigma=0.0), "sigma=0.0"),
    (lambda: ConceptModel(d=6, K=3, sigma=-1.0), "sigma=-1.0"),
    (lambda: ConceptModel(d=6, K=3, k_star=3), "k_star=3"),
    (lambda: ConceptModel(d=6, K=3, k_star=-1), "k_star=-1"),
    (lambda: Misaligned(gamma=1.5), "gamma=1.5"),
    (lambda: Misaligned(gamma=-0.1), "gamma=-0.1"),
    (lambda: FitSettings(n_icl=-1), "n_icl=-1"),
    (lambda: FitSettings(readout="median"), "'median'"),
    (lambda: FitSettings(lams=()), "lams=()"),
    (lambda: FitSettings(ns=()), "ns=()"),
    (lambda: Biased(delta=-1.0), "delta=-1.0"),
    (lambda: Noisy(eta=-1.0), "eta=-1.0"),
    (lambda: make_problem(ConceptModel(d=3, K=3), Biased(delta=1.0)), "K=3"),
    (lambda: make_problem(ConceptModel(d=6, K=3), Misaligned(j=0)), "j=0"),
]


@pytest.mark.parametrize("i", range(len(BAD_SETTINGS)))
def test_bad_settings_raise_value_error_naming_the_value(i):
    build, fragment = BAD_SETTINGS[i]
    with pytest.raises(ValueError) as info:
        build()
    assert fragment in str(info.value), str(info.value)


def test_refined_labels_reject_negative_n_icl():
    p = _tiny_problem()
    weak = WeakLabels(p.beta_weak, p.sigma_weak)
    with pytest.raises(ValueError, match="n_icl.*-2"):
        RefinedLabels(weak, p.B_KxD, np.log(p.alpha_K), p.sigma, p.Sigma_DxD, -2)
    with pytest.raises(ValueError, match="n_icl=-1"):  # numpy integers too
        RefinedLabels(weak, p.B_KxD, np.log(p.alpha_K), p.sigma, p.Sigma_DxD, np.int64(-1))
    with pytest.raises(TypeError, match="integer"):
        RefinedLabels(weak, p.B_KxD, np.log(p.alpha_K), p.sigma, p.Sigma_DxD, 2.5)
    assert GoldLabels.name == "gold"


def test_core_and_theory_do_not_import_flax():
    code = (
        "import sys, w2s_jax.core, theory, theory.model, theory.closed_form, theory.estimators, "
        "theory.monte_carlo; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', "
        "'orbax', 'transformers', 'torch')); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_chunked_run_equals_one_call_bit_for_bit():
    from theory.monte_carlo import in_chunks

    p = _tiny_problem()
    s = dataclasses.replace(TINY, trials=7)
    whole = simulate_fits(p, s, key=jax.random.key(5))
    chunked = in_chunks(
        lambda first, size: simulate_fits(p, dataclasses.replace(s, trials=size), key=jax.random.key(5), first_trial=first),
        7, chunk=3)
    for name, v in whole.items():
        np.testing.assert_array_equal(chunked[name], np.asarray(v))


def test_final_posterior_is_the_last_slice_of_the_path():
    """`log_posterior` skips the path for speed; it must be the path's endpoint on the same draw."""
    p = _tiny_problem()
    src = RefinedLabels(WeakLabels(p.beta_weak, p.sigma_weak), p.B_KxD, np.log(p.alpha_K), p.sigma,
                        p.Sigma_DxD, 5)
    key = jax.random.key(3)
    path = np.asarray(src.log_posterior_path(7, key=key))
    assert path.shape == (7, 6, p.B_KxD.shape[0])
    np.testing.assert_allclose(np.asarray(src.log_posterior(7, key=key)), path[:, -1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(path[:, 0], np.broadcast_to(np.log(p.alpha_K), path[:, 0].shape), atol=1e-12)


def test_theory_is_imported_from_this_repository():
    """``tests/theory`` is not a package, so ``theory`` resolves to the repository's ``theory/``, never
    to a test directory of the same name or to another checkout's copy through an installed finder."""
    import theory.model
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert Path(theory.model.__file__).resolve().is_relative_to(repo / "theory"), theory.model.__file__
