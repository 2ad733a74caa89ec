"""The report's numbers on a hand-made run directory, against hand-computed means, counts, PGR and
misfit; the bootstrap interval; the figures' line vertices; answer extraction's "the answer is";
the judge prompt's layout.

Each of these kills a single-line bug the rest of the suite let through: the bootstrap interval's
tails swapped (``lo <= mean <= hi``), PGR against the zero-shot strong model instead of the weak
supervisor (the hand-computed 2/3), PGR unpaired (the interval equal to ``core.metrics.pgr`` on the
paired items), missing scores counted as 0 (the mean and n of ``student/naive``), "the answer is"
taking its first occurrence, and the judge prompt with question and response swapped.
"""

import json
import math

import numpy as np
import pytest

from w2s_jax.core.metrics import bootstrap_mean, pgr
from w2s_jax.pipeline.report import build_results, results_markdown, write_report
from w2s_jax.pipeline.report_figures import line_vertices, method_points

LEVEL, BOOT, SEED = 0.9, 400, 3
WEAK = [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
ZERO_SHOT = [1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0]
NAIVE = [1, 1, 0, 1, 1, None, 0, 1, 1, 1, 0, 1]  # item 5 could not be scored: left out, not 0
GOLD = [1] * 12
PREDICTIONS = {
    "weak": ["4", "Paris", "blue", "7", "x y", "no", "a", "b", "c", "d", "e", "f"],
    "naive": ["5", " paris ", "red", "7", "X  Y", "no", "a", "b", "c", "d", "e", "F"],  # 0 and 2 differ
}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_dir(tmp_path, *, exact=True):
    """A run directory as `w2s run` leaves it: plan.json and the records it points to."""
    run = tmp_path / "run"
    scores = {"weak/w0-a": WEAK, "zero-shot": ZERO_SHOT, "student/naive/w0-a": NAIVE, "student/gold": GOLD}
    subjects = []
    for (name, values), role, method, sup in zip(
            scores.items(), ["weak", "zero-shot", "method", "ceiling"], [None, "zero-shot", "naive", "gold"],
            ["w0-a", None, "w0-a", None]):
        rows = [{"index": i, "score": v, "_unit": i} for i, v in enumerate(values)]
        if role == "weak":
            rows[1]["_malformed"] = 2  # a diagnostic, summed
        records = f"store/{name.replace('/', '.')}/records.jsonl"
        _write(run / records, rows)
        subject = {"name": name, "role": role, "method": method, "supervisor": sup, "records": records}
        if role in ("weak", "method"):
            predictions = f"store/predict.{name.replace('/', '.')}/records.jsonl"
            _write(run / predictions, [{"index": i, "prediction": p}
                                       for i, p in enumerate(PREDICTIONS["weak" if role == "weak" else "naive"])])
            subject["predictions"] = predictions
        subjects.append(subject)
    plan = {"experiment": "hand", "task": "t", "seed": SEED, "metrics": ["score"], "higher_is_better": True,
            "level": LEVEL, "bootstrap": BOOT, "exact": exact, "subjects": subjects,
            "training": {"student/naive/w0-a": str(run / "store" / "finetune.naive")}}
    (run / "plan.json").write_text(json.dumps(plan))
    return run


def test_means_counts_and_intervals_by_hand(tmp_path):
    rows = {r["name"]: r for r in build_results(_run_dir(tmp_path))["rows"]}
    expected = {"weak/w0-a": (3 / 12, 12), "zero-shot": (8 / 12, 12), "student/naive/w0-a": (8 / 11, 11),
                "student/gold": (1.0, 12)}
    for name, (mean, n) in expected.items():
        stat = rows[name]["score"]
        assert stat["mean"] == pytest.approx(mean, abs=1e-12) and stat["n"] == n, name
        if name != "student/gold":  # a constant has a zero-width interval
            assert stat["lo"] < stat["mean"] < stat["hi"], name
    naive = rows["student/naive/w0-a"]["score"]
    values = [v for v in NAIVE if v is not None]
    assert naive == bootstrap_mean(values, n_bootstrap=BOOT, level=LEVEL, seed=SEED)
    # the percentile interval, computed here independently of core.metrics
    rng = np.random.default_rng(SEED)
    draws = np.array(values, float)[rng.integers(0, len(values), size=(BOOT, len(values)))].mean(axis=1)
    assert (naive["lo"], naive["hi"]) == pytest.approx(tuple(np.quantile(draws, [0.05, 0.95])))
    assert rows["weak/w0-a"]["diagnostics"] == {"_malformed": 2.0}


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_level():
    values = [0.1, 0.9, 0.4, 0.4, 0.7, 0.2, 1.0, 0.0]
    wide = bootstrap_mean(values, n_bootstrap=2000, level=0.95, seed=0)
    narrow = bootstrap_mean(values, n_bootstrap=2000, level=0.5, seed=0)
    assert wide["lo"] < narrow["lo"] < wide["mean"] == narrow["mean"] < narrow["hi"] < wide["hi"]
    # a normal-theory sanity band: the 95% interval is within 40% of +-1.96 se
    se = np.std(values, ddof=1) / math.sqrt(len(values))
    assert wide["hi"] - wide["lo"] == pytest.approx(2 * 1.96 * se, rel=0.4)
    one = bootstrap_mean([0.5], n_bootstrap=100, level=0.9)
    assert one["mean"] == 0.5 and math.isnan(one["lo"]) and one["n"] == 1
    assert bootstrap_mean([], n_bootstrap=100, level=0.9)["n"] == 0


def test_pgr_by_hand_paired_by_item_against_the_weak_supervisor(tmp_path):
    rows = {r["name"]: r for r in build_results(_run_dir(tmp_path))["rows"]}
    p = rows["student/naive/w0-a"]["pgr"]
    # the 11 items other than 5 (no naive score): sum(naive - weak) = 5, sum(gold - weak) = 8
    assert p["reliable"] and p["value"] == pytest.approx(5 / 8, abs=1e-12)
    common = [i for i in range(12) if i != 5]
    paired = pgr([NAIVE[i] for i in common], [WEAK[i] for i in common], [GOLD[i] for i in common],
                 level=LEVEL, n_bootstrap=BOOT, seed=SEED).as_dict()
    assert (p["lo"], p["hi"]) == (paired["lo"], paired["hi"])  # paired bootstrap, same draws
    assert p["lo"] <= p["value"] <= p["hi"]
    assert rows["zero-shot"]["pgr"]["value"] == pytest.approx((8 / 12 - 3 / 12) / (1 - 3 / 12))
    assert rows["weak/w0-a"]["pgr"] is None and rows["student/gold"]["pgr"] is None


def test_misfit_is_the_disagreement_with_the_weak_supervisor(tmp_path):
    rows = {r["name"]: r for r in build_results(_run_dir(tmp_path))["rows"]}
    misfit = rows["student/naive/w0-a"]["misfit"]
    assert misfit == {"value": pytest.approx(2 / 12), "n": 12, "kind": "rate"}  # items 0 and 2 differ
    assert rows["zero-shot"]["misfit"] is None and rows["student/gold"]["misfit"] is None
    judged = {r["name"]: r for r in build_results(_run_dir(tmp_path / "j", exact=False))["rows"]}
    # squared score differences on the 11 scored items: five 1s
    assert judged["student/naive/w0-a"]["misfit"] == {"value": pytest.approx(5 / 11), "n": 11,
                                                      "kind": "mean squared difference"}


def test_misfit_compares_the_answers_the_task_reads_not_the_texts(tmp_path):
    """On a math task a student that writes "The answer is 72." where its supervisor wrote
    "#### 72" agrees with it; "72" against "73" disagrees, however alike the texts."""
    from w2s_jax.pipeline.report import stated_answers
    from w2s_jax.tasks import get_task

    run = _run_dir(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    weak = ["Half of 144 is 72.\n#### 72", "#### 3/4", "so 10", "#### 5", "the answer is 7"] + ["#### 1"] * 7
    student = ["The answer is 72.", "It is 0.75", "#### 10.0", "#### 6", "the answer is 8"] + ["1"] * 7
    for subject, answers in (("weak/w0-a", weak), ("student/naive/w0-a", student)):
        path = run / next(s for s in plan["subjects"] if s["name"] == subject)["predictions"]
        path.write_text("".join(json.dumps({"index": i, "prediction": p}) + "\n" for i, p in enumerate(answers)))
    plan.update(task="math", task_options={"__class__": "MathOptions", **vars(get_task("math").Options())})
    (run / "plan.json").write_text(json.dumps(plan))
    rows = {r["name"]: r for r in build_results(run)["rows"]}
    # every text differs; the stated answers differ on items 3 (5 vs 6) and 4 (7 vs 8) only
    assert rows["student/naive/w0-a"]["misfit"] == {"value": pytest.approx(2 / 12), "n": 12, "kind": "rate"}
    assert stated_answers(plan)("#### 72") == stated_answers(plan)("The answer is 72.")
    boxed = get_task("math-boxed")()
    assert boxed.stated_answer("so \\boxed{\\frac{1}{2}}") == boxed.stated_answer("The answer is 0.5")
    assert boxed.stated_answer("\\boxed{x^2}") != boxed.stated_answer("\\boxed{x^3}")
    qa = get_task("qa")
    assert qa(qa.Options(metric="exact")).stated_answer("The Paris.") == qa().stated_answer("paris")
    assert get_task("concept")().stated_answer(" blue sky") == "blue"


def test_markdown_links_training_curves_and_shows_misfit(tmp_path):
    run = _run_dir(tmp_path)
    results = write_report(run, figures=True)
    text = (run / "results.md").read_text()
    assert text == results_markdown(results)
    assert "finetune.naive/metrics.jsonl" in text and "finetune.naive/loss.png" in text
    naive_line = next(line for line in text.splitlines() if line.startswith("| student/naive/w0-a"))
    assert "| 0.167 |" in naive_line and naive_line.endswith("| 11 |")
    assert (run / "figures" / "weak_vs_student.png").stat().st_size > 1000


def test_weak_vs_student_lines_join_distinct_weak_scores_in_order():
    def stat(mean):
        return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1, "n": 5}

    rows = [{"name": f"weak/{s}", "role": "weak", "method": None, "supervisor": s, "score": stat(m)}
            for s, m in (("a", 0.5), ("b", 0.2), ("c", 0.5))]
    rows += [{"name": f"student/naive/{s}", "role": "method", "method": "naive", "supervisor": s, "score": stat(m)}
             for s, m in (("a", 0.6), ("b", 0.4), ("c", 0.8))]
    points = method_points(rows, "score")["naive"]
    assert [w["mean"] for w, _ in points] == [0.2, 0.5, 0.5]  # a marker per supervisor, by weak score
    assert line_vertices(points) == [(0.2, 0.4), (0.5, pytest.approx(0.7))]  # ties share one vertex


@pytest.mark.parametrize("text, expected", [
    ("The answer is 3. Checking again, the answer is 5", "5"),  # the last statement counts
    ("answer: 2\nso the answer is 9", "9"),
    ("The answer is 12", "12"),
])
def test_the_answer_is_takes_its_last_occurrence(text, expected):
    from w2s_jax.tasks.answers import answer_span, extract_number

    assert answer_span(text) == expected
    assert extract_number(text) == int(expected)


def test_judge_prompt_layout_is_pinned():
    """The judge reads the question after "[Question]" and the response between its markers,
    whatever builds the prompt (the expected text is written out, not rebuilt with judge_prompt)."""
    from w2s_jax.tasks.judge import Judge, JudgeOptions

    class Recording:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, **kwargs):
            self.prompts += list(prompts)
            return ["fine. Rating: [[6]]"] * len(prompts)

    engine = Recording()
    (rating,) = Judge(engine, JudgeOptions(mode="generate", samples=1)).rate_many(
        [("Rate the style.", "  What is 2+2? ", " It is 4. ")])
    assert rating.score == 6.0
    assert engine.prompts[0].user == (
        "Please act as an impartial judge and rate the response to the question below.\n"
        "Rate the style.\n"
        "Begin with a short explanation. Then give your rating, a number from 1 to 10, in exactly this "
        'form: "Rating: [[5]]".\n\n'
        "[Question]\nWhat is 2+2?\n\n"
        "[The Start of the Response]\nIt is 4.\n[The End of the Response]\n")


def test_common_items_drops_an_item_any_subject_failed_from_every_subject(tmp_path):
    """``report.common_items`` (the paper's rule): NAIVE's unscored item 5 leaves every subject's
    mean, n and PGR, and is counted once."""
    run = _run_dir(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    (run / "plan.json").write_text(json.dumps({**plan, "common_items": True}))
    results = build_results(run)
    rows = {r["name"]: r for r in results["rows"]}
    keep = [i for i in range(12) if i != 5]
    for name, values in (("weak/w0-a", WEAK), ("zero-shot", ZERO_SHOT), ("student/naive/w0-a", NAIVE)):
        assert rows[name]["score"]["n"] == 11
        assert rows[name]["score"]["mean"] == pytest.approx(sum(values[i] for i in keep) / 11, abs=1e-12)
    assert rows["weak/w0-a"]["score"]["mean"] == pytest.approx(3 / 11)  # item 5 was a 0 for the weak model
    assert results["dropped"] == {"score": 1}
    assert "score 1 dropped" in results_markdown(results)
    assert "dropped" not in build_results(_run_dir(tmp_path / "again"))  # off by default
