"""Probes on cached features and probe-based label repair.

References: scikit-learn's LogisticRegression at the same regularisation, a brute-force kNN
written here (numpy distances and a full sort), fits on the other folds' rows done one by one,
and synthetic features whose gold labels and label noise are known.
"""

import math

import jax
import numpy as np
import pytest

from w2s_jax.core import KNNProbe, LogisticProbe, filter_by_probe, fold_ids, out_of_fold, relabel


def blobs(n, d, *, separation, seed):
    """Two Gaussian classes at +-separation/2 along a random unit direction, plus anisotropic,
    shifted nuisance dimensions (what standardisation is for)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    X = rng.normal(size=(n, d)) + np.outer(y - 0.5, direction) * separation
    return X * rng.uniform(0.2, 5.0, d) + rng.normal(size=d) * 4, y


def noisy_task(n=1500, d=5, flip=0.25, seed=0):
    """Gold labels from a linear rule on Gaussian features; weak labels flip a known fraction."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    gold = (X @ rng.normal(size=d) > 0).astype(float)
    flipped = rng.random(n) < flip
    return X, gold, np.where(flipped, 1 - gold, gold)


@pytest.mark.parametrize("probe", [LogisticProbe(l2=1e-3), KNNProbe(k=5), KNNProbe(k=5, metric="euclidean")])
def test_separable_features_are_classified_perfectly(probe):
    X, y = blobs(450, 8, separation=12.0, seed=0)  # (300, 8) as other tests here: one compile serves them all
    fitted = probe.fit(X[:300], y[:300])
    accuracy = np.mean((fitted.predict_proba(X[300:]) > 0.5) == y[300:])
    assert accuracy >= 0.99


@pytest.mark.parametrize("soft", [False, True])
def test_logistic_probe_matches_scikit_learn(soft):
    """Same optimum as scikit-learn's LogisticRegression(C = 1 / (l2 N)) on standardised features
    (soft labels: each row twice, labelled 1 and 0, weighted y and 1 - y). The objective is
    l2-strongly convex, so ||w - w*|| <= ||grad|| / l2: our fit's bound is checked to be < 1e-6 and
    the comparison allows 1e-5 for scikit-learn's own stopping error."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    N, D, l2 = 300, 8, 1e-2
    X, y = blobs(N, D, separation=1.5, seed=1)
    if soft:
        y = np.clip(y * 0.7 + np.random.default_rng(2).random(N) * 0.3, 0, 1)
    fitted = LogisticProbe(l2=l2, tol=1e-9).fit(X, y)
    assert fitted.grad_max * math.sqrt(D + 1) / l2 < 1e-6
    Xs = preprocessing.StandardScaler().fit_transform(X)
    rows, labels = np.concatenate([Xs, Xs]), np.concatenate([np.ones(N), np.zeros(N)])
    sk = linear_model.LogisticRegression(C=1 / (l2 * N), tol=1e-12, max_iter=10_000)
    sk.fit(rows, labels, sample_weight=np.concatenate([y, 1 - y]))
    np.testing.assert_allclose(fitted.w_D, sk.coef_[0], atol=1e-5)
    assert fitted.b == pytest.approx(sk.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(fitted.predict_proba(X), sk.predict_proba(Xs)[:, 1], atol=1e-6)


def test_logistic_probe_row_weights_and_float32_features():
    X, y = blobs(300, 8, separation=2.0, seed=3)
    probe = LogisticProbe(l2=1e-2)
    keep = np.arange(300) % 30 != 0  # 290 rows: the same padded size as 300, one compile
    by_weight = probe.fit(X, y, weights_N=keep.astype(float))
    by_rows = probe.fit(X[keep], y[keep])
    np.testing.assert_allclose(by_weight.predict_proba(X), by_rows.predict_proba(X), atol=1e-9)
    # float32 features (as cached): the same probabilities to float32 precision
    single = probe.fit(X.astype(np.float32), y)
    np.testing.assert_allclose(single.predict_proba(X), probe.fit(X, y).predict_proba(X), atol=2e-4)


def brute_knn(Q, R, y, k, metric, exclude=None):
    """Mean label of the k nearest reference rows, by computing every distance and sorting."""
    out = []
    for i, q in enumerate(Q):
        if metric == "cosine":
            d = -(R @ q) / (np.linalg.norm(R, axis=1) * np.linalg.norm(q))
        else:
            d = np.linalg.norm(R - q, axis=1)
        if exclude is not None:
            d = np.where(exclude[i], np.inf, d)
        out.append(y[np.argsort(d, kind="stable")[:k]].mean())
    return np.asarray(out)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_matches_brute_force(metric):
    rng = np.random.default_rng(4)
    R, Q = rng.normal(size=(90, 6)) + 1.0, rng.normal(size=(37, 6)) + 1.0
    y = rng.random(90)  # soft labels: the mean label itself, not a vote
    probe = KNNProbe(k=7, metric=metric, chunk=16)  # 37 queries: three chunks, the last one padded
    np.testing.assert_allclose(probe.fit(R, y).predict_proba(Q), brute_knn(Q, R, y, 7, metric), atol=1e-12)
    folds = np.arange(90) % 4
    np.testing.assert_allclose(probe.cross_predict(R, y, folds),
                               brute_knn(R, R, y, 7, metric, exclude=folds[:, None] == folds[None, :]), atol=1e-12)
    np.testing.assert_allclose(probe.cross_predict(R, y, np.arange(90)),  # leave-one-out
                               brute_knn(R, R, y, 7, metric, exclude=np.eye(90, dtype=bool)), atol=1e-12)


def test_logistic_cross_predict_equals_fits_on_the_other_folds():
    X, y = blobs(300, 8, separation=1.0, seed=5)
    folds = fold_ids(300, 5, key=jax.random.key(0))
    assert np.bincount(folds).tolist() == [60] * 5
    probe = LogisticProbe(l2=1e-2)
    together = probe.cross_predict(X, y, folds)
    for f in range(5):
        alone = probe.fit(X[folds != f], y[folds != f]).predict_proba(X[folds == f])
        np.testing.assert_allclose(together[folds == f], alone, atol=1e-9)


@pytest.mark.parametrize("probe,n_folds", [(LogisticProbe(l2=1e-2), 5), (KNNProbe(k=5), None), (KNNProbe(k=5), 5)])
def test_an_example_never_labels_itself(probe, n_folds):
    """Flipping one example's weak label leaves its own out-of-fold prediction exactly as it was
    (while the predictions of examples in other folds move)."""
    X, _, weak = noisy_task(n=300, d=8, seed=6)
    key = jax.random.key(1)
    before = out_of_fold(probe, X, weak, key=key, n_folds=n_folds)
    folds = fold_ids(300, n_folds, key=key)
    for i in (0, 17, 123):
        changed = weak.copy()
        changed[i] = 1 - changed[i]
        after = out_of_fold(probe, X, changed, key=key, n_folds=n_folds)
        assert after[i] == pytest.approx(before[i], abs=1e-12)
        assert np.any(np.abs(after - before)[folds != folds[i]] > 1e-6)  # the label is used for the others


@pytest.mark.parametrize("probe,n_folds", [(LogisticProbe(l2=1e-2), 5), (KNNProbe(k=25), None)])
def test_relabel_and_filter_repair_noisy_labels(probe, n_folds):
    """25% of labels flipped at random: the out-of-fold probe's labels are more accurate than the
    weak ones, relabelling only the worst half of the disagreements helps too, and the kept examples
    after filtering are cleaner (with the drop count exact)."""
    X, gold, weak = noisy_task(seed=7)
    key = jax.random.key(2)
    acc = lambda labels, rows=slice(None): np.mean((labels > 0.5) == gold[rows])  # noqa: E731
    assert acc(weak) == pytest.approx(0.75, abs=0.03)
    repaired = relabel(probe, X, weak, key=key, n_folds=n_folds)
    assert acc(repaired) > 0.88
    partial = relabel(probe, X, weak, key=key, n_folds=n_folds, fraction=0.2)
    assert acc(weak) + 0.1 < acc(partial) and np.sum(partial != weak) <= 300
    kept = filter_by_probe(probe, X, weak, contamination=0.2, key=key, n_folds=n_folds)
    assert kept.size == 1200 and np.all(np.diff(kept) > 0)
    assert acc(weak[kept], kept) > acc(weak) + 0.1
    assert np.array_equal(relabel(probe, X, weak, key=key, n_folds=n_folds, fraction=0.0), weak)


def test_probe_errors_name_the_problem():
    X, y = blobs(80, 3, separation=1.0, seed=8)
    with pytest.raises(TypeError, match="call .fit"):
        LogisticProbe().predict_proba(X)
    with pytest.raises(ValueError, match="l2 must be positive"):
        LogisticProbe(l2=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LogisticProbe().fit(X, y * 2)
    with pytest.raises(ValueError, match="features"):
        LogisticProbe().fit(X, y).predict_proba(X[:, :2])
    with pytest.raises(ValueError, match="k = 90"):
        KNNProbe(k=90).fit(X, y)
    with pytest.raises(ValueError, match="metric"):
        KNNProbe(metric="manhattan")
    with pytest.raises(ValueError, match="key"):
        relabel(LogisticProbe(), X, y, n_folds=4)
    with pytest.raises(ValueError, match="folds"):
        LogisticProbe().cross_predict(X, y, np.arange(80))  # one fit per fold: leave-one-out is kNN's
    with pytest.raises(ValueError, match="contamination"):
        filter_by_probe(KNNProbe(k=3), X, y, contamination=1.0, n_folds=None)


def test_nearby_sizes_share_one_compile():
    from w2s_jax.core import probes

    assert probes.padded_rows(290) == probes.padded_rows(300) == 320 and probes.padded_rows(5) == 5
    assert all(n <= probes.padded_rows(n) <= n * 9 / 8 for n in range(1, 5000))
    X, y = blobs(300, 7, separation=2.0, seed=9)  # a feature count no other test compiles for
    before = probes._fit_one._cache_size()
    LogisticProbe().fit(X[:290], y[:290])
    LogisticProbe().fit(X, y)
    assert probes._fit_one._cache_size() == before + 1


def test_probe_programs_lower_for_gpu():
    """The cross-fit (Newton-CG under vmap) and the kNN chunk compile for an accelerator backend."""
    from w2s_jax.core import probes

    X, y, a = jax.numpy.zeros((64, 8)), jax.numpy.zeros(64), jax.numpy.ones((3, 64))
    fit = probes._fit_folds.trace(X, y, a, 1e-3, 1e-6, max_steps=4, cg_steps=4).lower(lowering_platforms=("cuda",))
    assert "stablehlo.while" in fit.as_text()
    fold = jax.numpy.zeros(64, jax.numpy.int32)
    knn = probes._knn_indices.trace(X, fold, X, y, fold, k=5, cosine=True).lower(lowering_platforms=("cuda",))
    assert "dot_general" in knn.as_text()


def test_probe_fit_benchmark_runs_and_agrees_with_scikit_learn(capsys):
    pytest.importorskip("sklearn")
    from benchmarks import probe_fit

    results = probe_fit.main(["--n", "300", "--d", "8", "--k", "5", "--repeats", "1"])
    out = capsys.readouterr().out
    for job in ("logistic fit", "logistic 5-fold", "kNN leave-one-out", "kNN predict"):
        assert results[job]["ratio"] > 0 and f"| {job} |" in out, out


def test_connected_components_match_a_breadth_first_search():
    from w2s_jax.core.label_repair import connected_components

    rng = np.random.default_rng(10)
    n = 200
    i_E, j_E = rng.integers(0, n, 150), rng.integers(0, n, 150)  # sparse: many components
    neighbours = {v: set() for v in range(n)}
    for a, b in zip(i_E, j_E):
        neighbours[a].add(b)
        neighbours[b].add(a)
    expected = np.full(n, -1)
    for start in range(n):  # ascending: the first node reached is the component's smallest index
        if expected[start] >= 0:
            continue
        expected[start], stack = start, [start]
        while stack:
            for w in neighbours[stack.pop()]:
                if expected[w] < 0:
                    expected[w] = start
                    stack.append(w)
    np.testing.assert_array_equal(connected_components(n, i_E, j_E), expected)


def test_topo_filter_drops_islands_and_the_furthest_from_their_neighbours():
    from w2s_jax.core import topo_filter

    X, gold, weak = noisy_task(n=1500, d=5, flip=0.15, seed=11)
    kept = topo_filter(X, weak, contamination=0.2, k_cc=10, k_zeta=15)
    assert kept.size == 1200 and np.all(np.diff(kept) > 0)
    acc = lambda rows: np.mean((weak[rows] > 0.5) == gold[rows])  # noqa: E731
    assert acc(kept) > acc(np.arange(1500)) + 0.08
    # two well-separated clusters, each with a few examples of the other's label inside: stage 1
    # alone removes exactly those islands (contamination 0: no second stage)
    rng = np.random.default_rng(12)
    X2 = np.concatenate([rng.normal(size=(100, 2)) - 10, rng.normal(size=(100, 2)) + 10])
    y2 = np.repeat([0.0, 1.0], 100)
    islands = np.array([3, 50, 140])  # far apart inside their cluster, so no two are each other's neighbours
    X2[islands] = np.array([[-13.0, -13.0], [-7.0, -7.0], [13.0, 13.0]])
    y2[islands] = 1 - y2[islands]
    np.testing.assert_array_equal(topo_filter(X2, y2, contamination=0.0, k_cc=8, k_zeta=3),
                                  np.setdiff1d(np.arange(200), islands))
