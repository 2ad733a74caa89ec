"""The pre-registered predictions of the concept world in classification form, checked with
PASS/FAIL at the end of its run (``experiments/classification_concept_world.toml``).

Fixed here before the run. The unit is the seed: a seed draws the target concept, the rival, the
split and every classifier's training order, so its test items fail together. Each statistic is a
mean over seeds of a per-seed value (a paired difference where two subjects are compared, both
measured on the seed's own items), and its interval is the percentile bootstrap over seeds
(``w2s_jax.concept_world.clusters.cluster_interval`` with one world), at the report's level and
bootstrap count. With three seeds and a 95% interval the bootstrap's bounds lie at or just inside
the smallest and largest seed's values (a resample of one seed three times has probability
1/27 = 3.7%, just above 2.5%), so "interval above 0" asks, in effect, for every seed to be
positive. PGR is the report's seed-level estimate (the ratio of the
seed-mean gaps with its delta-method interval, ``w2s_jax.core.metrics.pgr``).

- C0 premise: the strong ceiling beats the weak model (test accuracy, ceiling - weak > 0).
- C1 auxiliary loss: the ``aux_confidence`` student beats the naive (``cross_entropy``) one
  (test accuracy, aux - naive > 0).
- C2 trap: the naive student stays near its supervisor (test accuracy, naive - weak within
  +-``TRAP_MARGIN``).
- C3 refinement: the in-context refined labels of half B are more accurate than the weak labels
  (half-B label accuracy, icl-refine - weak > 0).
- C4 refined student: the student of the refined labels beats the naive student (test accuracy,
  icl-refine student - naive > 0).
- C5, C6 probe relabelling: the kNN (C5) and logistic (C6) relabelled half-B labels are more
  accurate than the weak labels (half-B label accuracy, repair - weak > 0).
- C7 PGR: the auxiliary student recovers part of the gap on AUC (PGR on AUC, interval above 0).

A prediction whose subjects the run lacks is NOT RUN; one without an interval (one seed, or an
unreliable gap for PGR) is NO INTERVAL. Nothing here is tuned to a result.
"""

from __future__ import annotations

import math

from w2s_jax.concept_world.clusters import cluster_interval, mean

TRAP_MARGIN = 0.10  # C2: |naive - weak| test accuracy within this


def _interval(per_seed: list[float], results: dict) -> dict:
    """Mean over seeds and its bootstrap interval over seeds."""
    return cluster_interval({(0, i): v for i, v in enumerate(per_seed)}, mean, level=results["level"],
                            n_bootstrap=results.get("bootstrap", 1000))


def _pair(results: dict) -> dict | None:
    return results["pairs"][0] if results.get("pairs") else None


def _test_accuracy(results: dict, subject: str) -> list[float] | None:
    pair = _pair(results)
    rows = [r for r in (pair["rows"] if pair else []) if r["subject"] == subject]
    return list(rows[0]["accuracy"]["per_seed"]) if rows else None


def _label_accuracy(results: dict, labels: str) -> list[float] | None:
    rows = [r for r in results.get("label_sets", []) if r["labels"] == labels]
    return list(rows[0]["accuracy"]["per_seed"]) if rows else None


def _f(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:+.3f}"


def _difference(pid, claim, statistic, a, b, results, passes) -> dict:
    """A prediction on the per-seed differences ``a - b``; ``passes(interval) -> bool``."""
    if a is None or b is None:
        return {"id": pid, "claim": claim, "statistic": statistic, "status": "NOT RUN",
                "detail": "the run has no such subjects", "per_seed": []}
    diffs = [x - y for x, y in zip(a, b)]
    stat = _interval(diffs, results)
    status = "NO INTERVAL" if math.isnan(stat["lo"]) else ("PASS" if passes(stat) else "FAIL")
    detail = (f"{statistic}: {_f(stat['value'])} [{_f(stat['lo'])}, {_f(stat['hi'])}] over {len(diffs)} seeds "
              f"(per seed {', '.join(_f(d) for d in diffs)})")
    return {"id": pid, "claim": claim, "statistic": statistic, "status": status, "detail": detail,
            "value": stat["value"], "lo": stat["lo"], "hi": stat["hi"], "per_seed": diffs}


def above_zero(stat: dict) -> bool:
    return stat["lo"] > 0


def within_margin(stat: dict) -> bool:
    return -TRAP_MARGIN <= stat["lo"] and stat["hi"] <= TRAP_MARGIN


def c7(results: dict) -> dict:
    claim = "the aux-confidence student recovers part of the weak-to-ceiling gap on AUC"
    statistic = "PGR on AUC of student/aux_confidence (seed-level)"
    pair = _pair(results)
    rows = [r for r in (pair["rows"] if pair else []) if r["subject"] == "student/aux_confidence"]
    if not rows or "pgr_auc" not in rows[0]:
        return {"id": "C7", "claim": claim, "statistic": statistic, "status": "NOT RUN",
                "detail": "the run has no aux-confidence student", "per_seed": []}
    stat = rows[0]["pgr_auc"]
    lo, hi = stat.get("lo", math.nan), stat.get("hi", math.nan)
    ok = stat.get("reliable", False) and math.isfinite(lo) and math.isfinite(hi)
    status = "PASS" if ok and lo > 0 else ("FAIL" if ok else "NO INTERVAL")
    per_seed = [s["value"] for s in rows[0]["seeds"].get("pgr_auc", [])]
    detail = (f"{statistic}: {_f(stat.get('mean'))} [{_f(lo)}, {_f(hi)}] (per seed "
              f"{', '.join(_f(v) for v in per_seed)})")
    return {"id": "C7", "claim": claim, "statistic": statistic, "status": status, "detail": detail,
            "value": stat.get("mean"), "lo": lo, "hi": hi, "per_seed": per_seed}


def check_predictions(results: dict) -> list[dict]:
    """C0-C7 (module docstring) from a classification report's results."""
    acc, labels = (lambda s: _test_accuracy(results, s)), (lambda s: _label_accuracy(results, s))
    naive, weak = acc("student/cross_entropy"), acc("weak")
    return [
        _difference("C0", "the strong ceiling beats the weak model", "test accuracy, ceiling - weak",
                    acc("ceiling"), weak, results, above_zero),
        _difference("C1", "the aux-confidence student beats the naive student", "test accuracy, aux - naive",
                    acc("student/aux_confidence"), naive, results, above_zero),
        _difference("C2", f"trap: the naive student stays within {TRAP_MARGIN} of the weak model",
                    "test accuracy, naive - weak", naive, weak, results, within_margin),
        _difference("C3", "in-context refined labels are more accurate than the weak labels",
                    "half-B label accuracy, icl-refine - weak", labels("icl-refine"), labels("weak"), results,
                    above_zero),
        _difference("C4", "the refined-label student beats the naive student", "test accuracy, icl-refine - naive",
                    acc("student/icl-refine"), naive, results, above_zero),
        _difference("C5", "kNN-relabelled labels are more accurate than the weak labels",
                    "half-B label accuracy, repair/knn - weak", labels("repair/knn"), labels("weak"), results,
                    above_zero),
        _difference("C6", "logistic-relabelled labels are more accurate than the weak labels",
                    "half-B label accuracy, repair/logistic - weak", labels("repair/logistic"), labels("weak"),
                    results, above_zero),
        c7(results),
    ]


def predictions_markdown(predictions: list[dict]) -> list[str]:
    lines = ["## Pre-registered predictions", "", "| | prediction | status | statistic [interval over seeds] |",
             "|---|---|---|---|"]
    return lines + [f"| {p['id']} | {p['claim']} | **{p['status']}** | {p['detail']} |" for p in predictions]
