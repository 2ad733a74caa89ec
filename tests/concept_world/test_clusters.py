"""The two-stage bootstrap resamples the unit that fails together: its interval matches the
standard error of the world means (not of the items), and with one world it is the ordinary
bootstrap over seeds."""

import math

import numpy as np

from w2s_jax.concept_world.clusters import cluster_interval, cluster_resamples, gap_ratio, mean


def test_resamples_draw_worlds_then_seeds_within_them():
    units = [(w, s) for w in (0, 1, 2) for s in (0, 1)]
    samples = cluster_resamples(units, 200, seed=1)
    assert all(len(s) == 6 for s in samples)
    for sample in samples:  # seeds stay with their world: two per drawn world
        worlds = [u[0] for u in sample]
        assert all(worlds.count(w) % 2 == 0 for w in set(worlds))
    assert cluster_resamples(units, 5, seed=1) == samples[:5]


def test_interval_width_is_that_of_the_world_means():
    """Units share a world effect (sd 0.2) and differ by little within a world (sd 0.01): the
    95% interval of the mean is about +-1.96 sd(world means) / sqrt(W), far wider than an interval
    that treated the 40 units as independent."""
    rng = np.random.default_rng(0)
    worlds, seeds = 10, 4
    effect = rng.normal(0, 0.2, worlds)
    values = {(w, s): 0.5 + effect[w] + rng.normal(0, 0.01) for w in range(worlds) for s in range(seeds)}
    stat = cluster_interval(values, mean, n_bootstrap=4000, seed=0)
    world_means = np.array([np.mean([values[(w, s)] for s in range(seeds)]) for w in range(worlds)])
    se = world_means.std(ddof=0) / math.sqrt(worlds)
    assert math.isclose((stat["hi"] - stat["lo"]) / 2, 1.96 * se, rel_tol=0.2)
    naive_se = np.std(list(values.values())) / math.sqrt(len(values))
    assert (stat["hi"] - stat["lo"]) / 2 > 1.5 * 1.96 * naive_se
    assert stat["units"] == 40 and math.isclose(stat["value"], np.mean(list(values.values())))


def test_one_world_is_the_ordinary_bootstrap_over_seeds():
    values = {(0, s): float(v) for s, v in enumerate([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])}
    stat = cluster_interval(values, mean, n_bootstrap=4000, seed=0)
    se = np.std(list(values.values())) / math.sqrt(8)
    assert math.isclose((stat["hi"] - stat["lo"]) / 2, 1.96 * se, rel_tol=0.2)
    single = cluster_interval({(0, 0): 0.5}, mean)
    assert single["value"] == 0.5 and math.isnan(single["lo"])


def test_pgr_of_unit_triples():
    assert gap_ratio([(0.9, 0.5, 1.0), (0.7, 0.5, 1.0)]) == (0.8 - 0.5) / (1.0 - 0.5)
    assert gap_ratio([(0.9, 1.0, 1.0)]) is None
