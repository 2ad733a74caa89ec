"""The classification report on a run directory written here (no model runs): every number is
recomputed directly (numpy, scikit-learn where installed) from the stored probabilities; PGR over
seeds is the ratio of the seed-mean gaps; a filter's coverage is the share of half B it kept; the
figures of a 2 x 2 sweep are written."""

import json
import math

import numpy as np
import pytest

from w2s_jax.classify.report import build_results, results_markdown, write_report

SEEDS = (0, 1, 2)
N = 60


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _probs(rng, y, skill):
    """Probabilities that rank the gold labels with the given skill (0: random, 1: nearly perfect)."""
    return np.clip(0.5 + skill * (y - 0.5) + rng.normal(0, 0.25, y.size), 0.01, 0.99)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    skills = {"weak": 0.2, "ceiling": 0.8, "zero-shot": 0.1, "student/cross_entropy": 0.5}
    index = {"experiment": "synthetic", "dataset": "sciq", "seeds": list(SEEDS), "weak": ["org/w1", "org/w2"],
             "strong": ["org/s1", "org/s2"], "losses": ["cross_entropy"], "repair": ["f"], "icl_demos": 0,
             "level": 0.9, "bootstrap": 200, "items": {}, "subjects": [], "label_sets": []}
    truth = {}
    for seed in SEEDS:
        items = root / f"items-{seed}"
        items.mkdir()
        y = rng.permutation(np.repeat([0, 1], N // 2))
        yb = rng.permutation(np.repeat([0, 1], N // 2))
        _write(items / "test.jsonl", [{"index": i, "text": f"t{i}", "label": int(v)} for i, v in enumerate(y)])
        _write(items / "b.jsonl", [{"index": i, "text": f"b{i}", "label": int(v)} for i, v in enumerate(yb)])
        index["items"][str(seed)] = str(items)
        for name, weak, strong in [("weak", "w1", None), ("weak", "w2", None), ("ceiling", None, "s1"),
                                   ("ceiling", None, "s2"), ("zero-shot", None, "s1"), ("zero-shot", None, "s2"),
                                   *[("student/cross_entropy", w, s) for w in ("w1", "w2") for s in ("s1", "s2")]]:
            p = _probs(rng, y, skills[name])
            truth[(seed, name, weak, strong)] = (p, y)
            path = _write(root / f"{seed}-{name.replace('/', '.')}-{weak}-{strong}.jsonl",
                          [{"index": i, "prob": float(v)} for i, v in enumerate(p)])
            index["subjects"].append({"name": name, "role": name.split("/")[0], "seed": seed, "weak": weak,
                                      "strong": strong, "probs": path})
        kept = sorted(rng.choice(N, size=45, replace=False).tolist())  # a filter that kept 45 of 60
        labels = _probs(rng, yb, 0.6)
        truth[(seed, "repair/f")] = (labels[kept], yb[kept])
        index["label_sets"].append({"name": "repair/f", "seed": seed, "weak": "w1", "strong": "s1",
                                    "labels": _write(root / f"{seed}-labels.jsonl",
                                                     [{"index": i, "prob": float(labels[i])} for i in kept])})
    (root / "classification.json").write_text(json.dumps(index))
    return root, truth


def _row(results, weak, strong, subject):
    [pair] = [p for p in results["pairs"] if p["weak"] == weak and p["strong"] == strong]
    [row] = [r for r in pair["rows"] if r["subject"] == subject]
    return row


def test_every_pair_and_metric_against_a_direct_computation(run):
    root, truth = run
    results = build_results(root)
    pairs = [(p["weak"], p["strong"]) for p in results["pairs"]]
    assert pairs == [("w1", "s1"), ("w1", "s2"), ("w2", "s1"), ("w2", "s2")]
    sklearn = pytest.importorskip("sklearn.metrics")
    for weak, strong in (("w1", "s2"), ("w2", "s1")):
        row = _row(results, weak, strong, "student/cross_entropy")
        acc, auc, agree, pgr_acc = [], [], [], []
        for seed in SEEDS:
            p, y = truth[(seed, "student/cross_entropy", weak, strong)]
            pw, _ = truth[(seed, "weak", weak, None)]
            pc, _ = truth[(seed, "ceiling", None, strong)]
            acc.append(np.mean((p > 0.5) == y))
            auc.append(sklearn.roc_auc_score(y, p))
            agree.append(np.mean((p > 0.5) == (pw > 0.5)))
            pgr_acc.append((acc[-1] - np.mean((pw > 0.5) == y), np.mean((pc > 0.5) == y) - np.mean((pw > 0.5) == y)))
            seed_stat = row["seeds"]["auc"][seed]
            assert seed_stat["value"] == pytest.approx(auc[-1]) and seed_stat["lo"] < auc[-1] < seed_stat["hi"]
        assert row["accuracy"]["per_seed"] == pytest.approx(acc)
        assert row["accuracy"]["mean"] == pytest.approx(np.mean(acc))
        assert row["auc"]["mean"] == pytest.approx(np.mean(auc))
        assert row["agreement"]["mean"] == pytest.approx(np.mean(agree))
        assert min(acc) <= row["accuracy"]["lo"] <= row["accuracy"]["mean"] <= row["accuracy"]["hi"] <= max(acc)
        numerator, gap = np.mean([a for a, _ in pgr_acc]), np.mean([b for _, b in pgr_acc])
        stat = row["pgr_accuracy"]
        assert stat["reliable"]  # the synthetic gaps are wide: the ratio of the seed-mean gaps
        assert stat["mean"] == pytest.approx(numerator / gap) and stat["lo"] < stat["mean"] < stat["hi"]
        for seed, (a, b) in zip(SEEDS, pgr_acc):
            per_seed = row["seeds"]["pgr_accuracy"][seed]
            assert per_seed["reliable"] and per_seed["value"] == pytest.approx(a / b)
            assert per_seed["lo"] < per_seed["value"] < per_seed["hi"]
    assert "agreement" not in _row(results, "w1", "s1", "weak")
    assert "pgr_auc" not in _row(results, "w1", "s1", "ceiling")


def test_a_filtered_label_set_is_scored_on_what_it_kept(run):
    root, truth = run
    [row] = build_results(root)["label_sets"]
    assert row["coverage"]["per_seed"] == pytest.approx([45 / 60] * 3)
    expected = [np.mean((truth[(s, "repair/f")][0] > 0.5) == truth[(s, "repair/f")][1]) for s in SEEDS]
    assert row["accuracy"]["per_seed"] == pytest.approx(expected)


def test_one_seed_has_no_seed_interval_and_says_so(run, tmp_path):
    root, _ = run
    index = json.loads((root / "classification.json").read_text())
    index["seeds"] = [1]
    index["subjects"] = [s for s in index["subjects"] if s["seed"] == 1]
    index["label_sets"] = [s for s in index["label_sets"] if s["seed"] == 1]
    (tmp_path / "classification.json").write_text(json.dumps(index))
    results = build_results(tmp_path)
    row = _row(results, "w1", "s1", "student/cross_entropy")
    assert math.isnan(row["accuracy"]["lo"]) and not math.isnan(row["seeds"]["accuracy"][0]["lo"])
    assert "| student/cross_entropy | " in results_markdown(results)


def test_the_report_and_its_figures_are_written(run):
    root, _ = run
    results = write_report(root, figures=True)
    assert json.loads((root / "results.json").read_text())["pairs"][0]["weak"] == "w1"
    assert (root / "results.md").read_text() == results_markdown(results)
    names = {p.name for p in (root / "figures").iterdir()}
    assert {"pgr_heatmap_accuracy.png", "pgr_heatmap_auc.png", "pgr_lines_accuracy.png", "pgr_lines_auc.png",
            "accuracy_w1_s1.png", "accuracy_w2_s2.png"} <= names
