"""The concept world's classification predictions C0-C7 on synthetic results: each flips between
PASS and FAIL at its criterion (a paired difference whose interval over seeds is above 0, which one
seed far below 0 breaks; the trap's margin), is NOT RUN without its subjects and NO INTERVAL with
one seed."""

import math

import pytest

from w2s_jax.classify.predictions import TRAP_MARGIN, check_predictions, predictions_markdown

SUBJECTS = ("weak", "ceiling", "student/cross_entropy", "student/aux_confidence", "student/icl-refine")
LABELS = ("weak", "icl-refine", "repair/knn", "repair/logistic")


def results(test: dict, labels: dict, pgr=(0.3, 0.1, 0.5, True)) -> dict:
    """A report's results with per-seed test accuracies ``test[subject]`` and half-B label
    accuracies ``labels[name]``; ``pgr``: (mean, lo, hi, reliable) of the aux student's PGR on AUC."""
    rows = []
    for subject, per_seed in test.items():
        row = {"subject": subject, "accuracy": {"mean": sum(per_seed) / len(per_seed), "per_seed": per_seed},
               "seeds": {}}
        if subject == "student/aux_confidence":
            mean, lo, hi, reliable = pgr
            row["pgr_auc"] = {"mean": mean, "lo": lo, "hi": hi, "reliable": reliable}
            row["seeds"]["pgr_auc"] = [{"value": mean}] * len(per_seed)
        rows.append(row)
    return {"level": 0.95, "bootstrap": 500, "pairs": [{"weak": "w", "strong": "s", "rows": rows}],
            "label_sets": [{"labels": name, "accuracy": {"per_seed": v}} for name, v in labels.items()]}


def base():
    test = {"weak": [0.60, 0.62, 0.58], "ceiling": [0.90, 0.92, 0.88], "student/cross_entropy": [0.65, 0.66, 0.60],
            "student/aux_confidence": [0.70, 0.70, 0.65], "student/icl-refine": [0.80, 0.75, 0.70]}
    labels = {"weak": [0.6, 0.6, 0.6], "icl-refine": [0.8, 0.7, 0.9], "repair/knn": [0.7, 0.65, 0.61],
              "repair/logistic": [0.62, 0.61, 0.7]}
    return test, labels


def by_id(predictions):
    return {p["id"]: p for p in predictions}


def test_all_pass_and_the_interval_is_the_range_of_three_seeds():
    got = by_id(check_predictions(results(*base())))
    assert [got[f"C{i}"]["status"] for i in range(8)] == ["PASS"] * 8
    c1 = got["C1"]  # aux - naive per seed: 0.05, 0.04, 0.05
    assert c1["per_seed"] == pytest.approx([0.05, 0.04, 0.05])
    assert c1["value"] == pytest.approx(0.14 / 3)
    assert 0.04 - 1e-12 <= c1["lo"] <= c1["hi"] <= 0.05 + 1e-12  # within the seeds' range
    assert "**PASS**" in "\n".join(predictions_markdown(list(got.values())))


@pytest.mark.parametrize("pid,which,subject,seed,value", [
    ("C0", "test", "ceiling", 2, 0.38),  # each: one seed 0.2 below its reference
    ("C1", "test", "student/aux_confidence", 1, 0.46),
    ("C3", "labels", "icl-refine", 0, 0.4),
    ("C4", "test", "student/icl-refine", 2, 0.4),
    ("C5", "labels", "repair/knn", 2, 0.4),
    ("C6", "labels", "repair/logistic", 1, 0.4),
])
def test_one_seed_against_the_prediction_fails_it(pid, which, subject, seed, value):
    test, labels = base()
    (test if which == "test" else labels)[subject][seed] = value
    assert by_id(check_predictions(results(test, labels)))[pid]["status"] == "FAIL"


def test_the_trap_holds_within_its_margin_and_fails_beyond_it():
    test, labels = base()
    test["student/cross_entropy"] = [0.60 + TRAP_MARGIN - 0.001, 0.62 - TRAP_MARGIN + 0.001, 0.58]
    assert by_id(check_predictions(results(test, labels)))["C2"]["status"] == "PASS"
    test["student/cross_entropy"][0] = 0.60 + 2 * TRAP_MARGIN  # one seed far beyond it
    assert by_id(check_predictions(results(test, labels)))["C2"]["status"] == "FAIL"


def test_pgr_needs_a_reliable_gap_and_a_positive_lower_bound():
    for pgr, status in (((0.3, -0.1, 0.6, True), "FAIL"), ((0.3, math.nan, math.nan, False), "NO INTERVAL"),
                        ((0.3, 0.01, 0.6, True), "PASS")):
        assert by_id(check_predictions(results(*base(), pgr=pgr)))["C7"]["status"] == status


def test_missing_subjects_are_not_run_and_one_seed_has_no_interval():
    test, labels = base()
    del test["student/icl-refine"], labels["icl-refine"]
    got = by_id(check_predictions(results(test, labels)))
    assert got["C3"]["status"] == got["C4"]["status"] == "NOT RUN"
    one = by_id(check_predictions(results({k: v[:1] for k, v in base()[0].items()},
                                          {k: v[:1] for k, v in base()[1].items()})))
    assert one["C1"]["status"] == "NO INTERVAL" and math.isnan(one["C1"]["lo"])
