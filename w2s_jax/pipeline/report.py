"""The report: every subject's test score with a bootstrap interval, PGR per method, misfit.

Reads only the run directory's ``plan.json`` and the records it points to, so ``w2s report
RUN_DIR`` rebuilds it at any time. Writes ``results.json``, ``results.md`` and the figures of
:mod:`.report_figures`.

Intervals: the mean of per-item scores with a percentile bootstrap over test items at the
experiment's ``report.level`` (:func:`w2s_jax.core.metrics.bootstrap_mean`); an item the metric
could not score (``None``) is left out and not counted; with ``report.common_items`` it is left
out of every subject (the items kept are those every subject with records scored), and
``results["dropped"]`` counts the items dropped per metric. PGR (eq. T.14) is
:func:`w2s_jax.core.metrics.pgr` on the per-item scores of the method, its weak supervisor and the
gold ceiling, paired by test item, with a paired bootstrap interval; it is NaN when the
weak-to-ceiling gap is not significantly positive. Misfit: per student, its disagreement with its
weak supervisor on the test questions (:func:`w2s_jax.core.metrics.disagreement`): the fraction of
questions whose stated answers differ (the task's :meth:`~w2s_jax.tasks.base.Task.stated_answer`,
its grading path: ``#### 72`` and ``The answer is 72.`` agree on a math task; the text trimmed,
whitespace collapsed and lower-cased for a task without one) for tasks scored without a judge, the
mean squared difference of the primary score for tasks scored by a judge. Each student's training curve (``metrics.jsonl``, ``loss.png``) is
linked.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from w2s_jax.core.metrics import bootstrap_mean, disagreement, pgr
from w2s_jax.pipeline.artifacts import JsonlLog, atomic_write_json, atomic_write_text, read_json

PLAN = "plan.json"


def _scores(run_dir: Path, subject: dict, field: str = "records") -> dict[int, dict]:
    if field not in subject:
        return {}
    path = run_dir / subject[field]
    if not path.is_file():
        return {}
    return {r["index"]: r for r in JsonlLog(path).read()}


def _plain(text: str) -> str:
    return " ".join(str(text).split()).lower()


def stated_answers(plan: dict):
    """The run's task's ``stated_answer``, rebuilt from ``plan.json`` (its task name and options);
    the plain text (trimmed, whitespace collapsed, lower-cased) for a plan without options, and,
    with a warning saying why, for a task that cannot be rebuilt here."""
    if "task_options" not in plan:
        return _plain
    from w2s_jax.pipeline.config import build_dataclass
    from w2s_jax.tasks import get_task

    try:
        cls = get_task(plan["task"])
        options = {k: v for k, v in plan["task_options"].items() if k != "__class__"}
        return cls(build_dataclass(cls.Options, options, "[task]", PLAN)).stated_answer
    except (KeyError, ValueError) as error:
        warnings.warn(f"misfit compares answers as plain text: task {plan['task']!r} cannot be rebuilt "
                      f"({error})", stacklevel=2)
        return _plain


def _misfit(run_dir: Path, plan: dict, student: dict, weak: dict, primary: str, stated=_plain) -> dict | None:
    """The student's disagreement with its weak supervisor on the test items both answered."""
    exact = plan.get("exact", True)
    if exact:
        a, b = _scores(run_dir, student, "predictions"), _scores(run_dir, weak, "predictions")
        common = sorted(set(a) & set(b))
        values = [[stated(x[i]["prediction"]) for i in common] for x in (a, b)]
    else:
        a, b = _scores(run_dir, student), _scores(run_dir, weak)
        common = sorted(i for i in set(a) & set(b) if a[i].get(primary) is not None and b[i].get(primary) is not None)
        values = [[x[i][primary] for i in common] for x in (a, b)]
    if not common:
        return None
    return {"value": disagreement(*values, exact=exact), "n": len(common),
            "kind": "rate" if exact else "mean squared difference"}


def build_results(run_dir: str | Path) -> dict:
    """The report's numbers from a run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    plan = read_json(run_dir / PLAN)
    metrics, level, n_boot = plan["metrics"], plan["level"], plan["bootstrap"]
    primary, higher = metrics[0], plan["higher_is_better"]
    records = {s["name"]: _scores(run_dir, s) for s in plan["subjects"]}
    kept, dropped = _common_items(records, metrics) if plan.get("common_items") else (None, None)
    rows = []
    for s in plan["subjects"]:
        items = records[s["name"]]
        row = {k: s[k] for k in ("name", "role", "method", "supervisor")}
        row["complete"] = bool(items)
        for metric in metrics:
            values = [r[metric] for i, r in items.items()
                      if r.get(metric) is not None and (kept is None or i in kept[metric])]
            row[metric] = bootstrap_mean(values, n_bootstrap=n_boot, level=level, seed=plan["seed"])
        diagnostics = sorted({k for r in items.values() for k in r if k.startswith("_") and k != "_unit"})
        row["diagnostics"] = {k: float(sum(r.get(k) or 0 for r in items.values())) for k in diagnostics}
        rows.append(row)
    ceiling = next((s for s in plan["subjects"] if s["role"] == "ceiling"), None)
    for row, s in zip(rows, plan["subjects"]):
        row["pgr"] = None
        if s["role"] not in ("method", "zero-shot") or ceiling is None:
            continue
        for weak in (w for w in plan["subjects"] if w["role"] == "weak"):
            if s["supervisor"] not in (None, weak["supervisor"]):
                continue
            m, w, c = records[s["name"]], records[weak["name"]], records[ceiling["name"]]
            common = sorted(i for i in m if i in w and i in c and all(
                x[i].get(primary) is not None for x in (m, w, c)) and (kept is None or i in kept[primary]))
            if len(common) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # NaN PGR is reported, not warned
                estimate = pgr([m[i][primary] for i in common], [w[i][primary] for i in common],
                               [c[i][primary] for i in common], higher_is_better=higher,
                               level=level, n_bootstrap=n_boot, seed=plan["seed"])
            row.setdefault("pgr_by_weak", {})[weak["supervisor"]] = estimate.as_dict()
            if row["pgr"] is None:
                row["pgr"] = estimate.as_dict()
    by_supervisor = {w["supervisor"]: w for w in plan["subjects"] if w["role"] == "weak"}
    stated = stated_answers(plan) if plan.get("exact", True) else _plain
    for row, s in zip(rows, plan["subjects"]):
        row["misfit"] = None
        if s["role"] == "method" and s["supervisor"] in by_supervisor:
            row["misfit"] = _misfit(run_dir, plan, s, by_supervisor[s["supervisor"]], primary, stated)
        if s["name"] in plan.get("training", {}):
            row["training"] = {name: str(Path(plan["training"][s["name"]]) / name)
                               for name in ("metrics.jsonl", "loss.png")}
    results = {"experiment": plan["experiment"], "task": plan["task"], "metrics": metrics,
               "primary": primary, "higher_is_better": higher, "level": level, "rows": rows}
    if dropped is not None:
        results["dropped"] = dropped
    return results


def _common_items(records: dict[str, dict[int, dict]], metrics) -> tuple[dict, dict]:
    """Per metric, the items every subject with records scored, and how many items were dropped."""
    present = [items for items in records.values() if items]
    every = set().union(*(set(items) for items in present)) if present else set()
    kept = {m: {i for i in every if all(i in items and items[i].get(m) is not None for items in present)}
            for m in metrics}
    return kept, {m: len(every) - len(kept[m]) for m in metrics}


def format_stat(stat: dict) -> str:
    """``mean [lo, hi]`` to 3 decimals (the mean alone without an interval, n/a without values)."""
    if math.isnan(stat["mean"]):
        return "n/a"
    if math.isnan(stat["lo"]):
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['lo']:.3f}, {stat['hi']:.3f}]"


def results_markdown(results: dict) -> str:
    """The results table as Markdown."""
    level = int(round(100 * results["level"]))
    metrics = results["metrics"]
    head = ["subject", *metrics, f"PGR ({results['primary']}) [{level}% CI]", "misfit", "n"]
    lines = [f"# {results['experiment']}: {results['task']}", "",
             f"Means over test items with {level}% bootstrap intervals. PGR = (method - weak) / "
             "(ceiling - weak), paired by item; n/a when the weak-to-ceiling gap is not "
             "significantly positive or a subject is missing. Misfit: the student's disagreement "
             "with its weak supervisor on the test questions.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["rows"]:
        p = row["pgr"]
        pgr_text = "" if p is None else ("n/a" if not p["reliable"] else
                                         f"{p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]")
        misfit = row.get("misfit")
        misfit_text = "" if misfit is None else f"{misfit['value']:.3f}"
        cells = [row["name"], *(format_stat(row[m]) for m in metrics), pgr_text, misfit_text, str(row[metrics[0]]["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {row['name']}: " + ", ".join(f"{k.lstrip('_')} {v:g}" for k, v in row["diagnostics"].items())
             for row in results["rows"] if any(row["diagnostics"].values())]
    if notes:
        lines += ["", "Diagnostics (summed over items):", *notes]
    kinds = sorted({row["misfit"]["kind"] for row in results["rows"] if row.get("misfit")})
    if kinds:
        lines += ["", f"Misfit: {', '.join(kinds)} of the student's answers against its weak supervisor's."]
    if "dropped" in results:
        lines += ["", "Items some subject could not score are left out of every subject (report.common_items): "
                  + ", ".join(f"{metric} {n}" for metric, n in results["dropped"].items()) + " dropped."]
    curves = [f"- {row['name']}: [metrics.jsonl]({row['training']['metrics.jsonl']}), "
              f"[loss.png]({row['training']['loss.png']})" for row in results["rows"] if row.get("training")]
    if curves:
        lines += ["", "Training curves (per optimizer step):", *curves]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, *, figures: bool = True) -> dict:
    """Writes results.json, results.md and the figures of a run directory; returns the results."""
    run_dir = Path(run_dir)
    if not (run_dir / PLAN).is_file():
        raise FileNotFoundError(f"{run_dir}: no {PLAN} (not a run directory of `w2s run`)")
    results = build_results(run_dir)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    if figures:
        from w2s_jax.pipeline.report_figures import write_figures

        write_figures(results, run_dir / "figures")
    return results
