"""P1-P5 read the right statistic and flip between PASS and FAIL exactly at their stated criteria."""

import math

from w2s_jax.concept_world.predictions import J_MAX, PGR_MIN, check_predictions


def _i(value, lo, hi):
    return {"value": value, "lo": lo, "hi": hi, "units": 6}


def _results(naive_j, refine_j, refine_pgr, labels_j=0.25, rate_bayes=(0.8, 0.7, 0.9), rho=0.79,
             transition=(0.5, 0.45, 0.55), rates=((1.0, 0.8, 1.2), (0.1, 0.05, 0.2)), draw="fresh"):
    sup = "w1-misaligned-0.25.jsonl"
    nan = _i(math.nan, math.nan, math.nan)
    return {
        "main": {"rows": [
            {"name": "weak/w1", "role": "weak", "method": None, "supervisor": sup, "accuracy": nan,
             "rival_rate": nan, "train_labels_rival_rate": _i(labels_j, math.nan, math.nan), "pgr": None},
            {"name": "student/naive/w1", "role": "method", "method": "naive", "supervisor": sup,
             "accuracy": nan, "rival_rate": _i(*naive_j), "pgr": _i(0.1, 0.0, 0.2)},
            {"name": "student/icl-refine/w1", "role": "method", "method": "icl-refine", "supervisor": sup,
             "accuracy": nan, "rival_rate": _i(*refine_j), "pgr": _i(*refine_pgr)}]},
        "demos": {"draw": draw, "rho_star": _i(rho, rho, rho), "rate_bayes": _i(*rate_bayes),
                  "rate_transformer": _i(0.5, 0.4, 0.6)},
        "gamma": {"transition_transformer": _i(*transition), "transition_bayes": _i(0.5, 0.49, 0.51)},
        "gamma-rates": {"gammas": [{"gamma": 0.125, "rate_transformer": _i(*rates[0]), "rho_star": _i(0.3, 0.3, 0.3)},
                                   {"gamma": 0.4375, "rate_transformer": _i(*rates[1]), "rho_star": _i(0.01, 0, 0.02)}]},
    }


def _status(results):
    return {p["id"]: p["status"] for p in check_predictions(results)}


def test_each_prediction_passes_at_its_criterion():
    good = _results(naive_j=(0.22, 0.15, 0.30), refine_j=(0.01, 0.0, J_MAX - 0.01),
                    refine_pgr=(0.9, PGR_MIN + 0.01, 1.0))
    assert _status(good) == {"P1": "PASS", "P2": "PASS", "P3": "PASS", "P4": "PASS", "P5": "NOT RUN"}  # no sizes


def test_each_prediction_fails_outside_its_criterion():
    bad = _results(naive_j=(0.05, 0.0, 0.2), refine_j=(0.05, 0.0, J_MAX + 0.01),
                   refine_pgr=(0.9, 0.6, 1.0), rate_bayes=(1.2, 1.0, 1.4), transition=(0.4, 0.35, 0.45),
                   rates=((1.0, 0.8, 1.2), (0.9, 0.7, 1.1)))
    assert _status(bad) == {"P1": "FAIL", "P2": "FAIL", "P3": "FAIL", "P4": "FAIL", "P5": "NOT RUN"}
    low_pgr = _results(naive_j=(0.22, 0.15, 0.30), refine_j=(0.0, 0.0, 0.0), refine_pgr=(0.6, PGR_MIN - 0.1, 0.9))
    assert _status(low_pgr)["P2"] == "FAIL"


def test_predictions_without_their_measurement_are_not_run_or_have_no_interval():
    fixed = _results(naive_j=(0.22, math.nan, math.nan), refine_j=(0.0, 0.0, 0.0), refine_pgr=(0.9, 0.8, 1.0),
                     draw="fixed")
    status = _status(fixed)
    assert status["P1"] == "NO INTERVAL" and status["P3"] == "NOT RUN"
    assert _status({}) == {f"P{i}": "NOT RUN" for i in range(1, 6)}


def _sizes(naive, refine):
    """Size rows from per-unit accuracies: ``naive[m]`` and ``refine[m]`` list 4 units' values."""
    units = ["0/0", "0/1", "1/0", "1/1"]
    rows = []
    for m in sorted(naive):
        rows.append({"m": m, **{key: {"accuracy": _i(sum(v[m]) / 4, 0, 1), "per_unit": dict(zip(units, v[m]))}
                                for key, v in (("naive", naive), ("icl-refine", refine))}})
    return {"sizes": {"eta": 0.3, "rows": rows}}


def test_p5_reads_paired_unit_differences():
    grows = _sizes({12: [0.5, 0.55, 0.6, 0.5], 48: [0.8, 0.85, 0.9, 0.8]},
                   {12: [0.9, 0.95, 0.9, 0.92], 48: [0.95, 0.95, 0.97, 0.96]})
    assert _status(grows)["P5"] == "PASS"
    flat = _sizes({12: [0.5, 0.55, 0.6, 0.5], 48: [0.5, 0.5, 0.62, 0.55]},
                  {12: [0.9, 0.95, 0.9, 0.92], 48: [0.95, 0.95, 0.97, 0.96]})
    assert _status(flat)["P5"] == "FAIL"
    behind = _sizes({12: [0.5, 0.55, 0.6, 0.5], 48: [0.8, 0.85, 0.9, 0.8]},
                    {12: [0.4, 0.5, 0.5, 0.45], 48: [0.95, 0.95, 0.97, 0.96]})
    assert _status(behind)["P5"] == "FAIL"
