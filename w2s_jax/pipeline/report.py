"""The report: every subject's test score with a bootstrap interval, PGR per method, figures.

Reads only the run directory (``plan.json`` and the score stages' ``records.jsonl``), so
``w2s report RUN_DIR`` rebuilds it at any time. Writes ``results.json``, ``results.md`` and
``figures/scores.png`` (per-subject bars with intervals) and ``figures/weak_vs_student.png`` (the
paper's plot: weak score on x, student score on y, one point per weak model, zero-shot strong as a
dashed line, the gold ceiling dotted).

Intervals: the mean of per-item scores with a percentile bootstrap over test items at the
experiment's ``report.level``. PGR (eq. T.14) is :func:`w2s_jax.core.metrics.pgr` on the per-item
scores of the method, its weak supervisor and the gold ceiling, paired by test item, with a
paired bootstrap interval; it is NaN when the weak-to-ceiling gap is not significantly positive.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from w2s_jax.core.metrics import pgr
from w2s_jax.pipeline.artifacts import JsonlLog, atomic_write_json, atomic_write_text, read_json

PLAN = "plan.json"


def bootstrap_mean(values, *, n_bootstrap: int, level: float, seed: int = 0) -> dict:
    """Mean with a percentile bootstrap interval; NaN interval for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    if v.size < 2:
        return {"mean": float(v.mean()), "lo": math.nan, "hi": math.nan, "n": int(v.size)}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_bootstrap, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi), "n": int(v.size)}


def _scores(run_dir: Path, subject: dict) -> dict[int, dict]:
    path = run_dir / subject["records"]
    if not path.is_file():
        return {}
    return {r["index"]: r for r in JsonlLog(path).read()}


def build_results(run_dir: str | Path) -> dict:
    """The report's numbers from a run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    plan = read_json(run_dir / PLAN)
    metrics, level, n_boot = plan["metrics"], plan["level"], plan["bootstrap"]
    primary, higher = metrics[0], plan["higher_is_better"]
    records = {s["name"]: _scores(run_dir, s) for s in plan["subjects"]}
    rows = []
    for s in plan["subjects"]:
        items = records[s["name"]]
        row = {k: s[k] for k in ("name", "role", "method", "supervisor")}
        row["complete"] = bool(items)
        for metric in metrics:
            values = [r[metric] for r in items.values() if r.get(metric) is not None]
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
                x[i].get(primary) is not None for x in (m, w, c)))
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
    return {"experiment": plan["experiment"], "task": plan["task"], "metrics": metrics,
            "primary": primary, "higher_is_better": higher, "level": level, "rows": rows}


def _fmt(stat: dict) -> str:
    if math.isnan(stat["mean"]):
        return "n/a"
    if math.isnan(stat["lo"]):
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['lo']:.3f}, {stat['hi']:.3f}]"


def results_markdown(results: dict) -> str:
    """The results table as Markdown."""
    level = int(round(100 * results["level"]))
    metrics = results["metrics"]
    head = ["subject", *metrics, f"PGR ({results['primary']}) [{level}% CI]", "n"]
    lines = [f"# {results['experiment']}: {results['task']}", "",
             f"Means over test items with {level}% bootstrap intervals. PGR = (method - weak) / "
             "(ceiling - weak), paired by item; n/a when the weak-to-ceiling gap is not "
             "significantly positive or a subject is missing.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["rows"]:
        p = row["pgr"]
        pgr_text = "" if p is None else ("n/a" if not p["reliable"] else
                                         f"{p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]")
        cells = [row["name"], *(_fmt(row[m]) for m in metrics), pgr_text, str(row[metrics[0]]["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {row['name']}: " + ", ".join(f"{k.lstrip('_')} {v:g}" for k, v in row["diagnostics"].items())
             for row in results["rows"] if any(row["diagnostics"].values())]
    if notes:
        lines += ["", "Diagnostics (summed over items):", *notes]
    return "\n".join(lines) + "\n"


def write_figures(results: dict, directory: Path) -> list[Path]:
    """Per-subject bars with intervals, and weak score vs student score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary, rows = results["primary"], [r for r in results["rows"] if r["complete"]]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1), 3.6))
    means = [r[primary]["mean"] for r in rows]
    errors = np.array([[max(r[primary]["mean"] - r[primary]["lo"], 0) if not math.isnan(r[primary]["lo"]) else 0
                        for r in rows],
                       [max(r[primary]["hi"] - r[primary]["mean"], 0) if not math.isnan(r[primary]["hi"]) else 0
                        for r in rows]])
    colors = {"weak": "tab:red", "zero-shot": "tab:gray", "method": "tab:blue", "ceiling": "tab:green"}
    ax.bar(range(len(rows)), means, yerr=errors, capsize=3, color=[colors[r["role"]] for r in rows])
    ax.set_xticks(range(len(rows)), [r["name"].replace("student/", "") for r in rows], rotation=35, ha="right",
                  fontsize=8)
    ax.set_ylabel(primary)
    ax.set_title(f"{results['experiment']} ({int(100 * results['level'])}% bootstrap CI)", fontsize=9)
    fig.tight_layout()
    paths.append(directory / "scores.png")
    _save(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    weak = {r["supervisor"]: r[primary]["mean"] for r in rows if r["role"] == "weak"}
    for method in sorted({r["method"] for r in rows if r["role"] == "method"}):
        points = sorted((weak[r["supervisor"]], r[primary]["mean"]) for r in rows
                        if r["method"] == method and r["role"] == "method" and r["supervisor"] in weak)
        if points:
            ax.plot(*zip(*points), marker="o", label=method)
    for role, style in (("zero-shot", "--"), ("ceiling", ":")):
        for r in rows:
            if r["role"] == role:
                ax.axhline(r[primary]["mean"], linestyle=style, color="k", lw=1,
                           label="zero-shot strong" if role == "zero-shot" else "gold ceiling")
    if weak:
        lo, hi = min(weak.values()), max(weak.values())
        ax.plot([lo, hi], [lo, hi], color="tab:red", lw=0.8, alpha=0.5, label="student = weak")
    ax.set_xlabel(f"weak supervisor {primary}")
    ax.set_ylabel(f"student {primary}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(directory / "weak_vs_student.png")
    _save(fig, paths[-1])
    plt.close(fig)
    return paths


def _save(fig, path: Path) -> None:
    import io

    from w2s_jax.pipeline.artifacts import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    atomic_write_bytes(path, buffer.getvalue())


def write_report(run_dir: str | Path, *, figures: bool = True) -> dict:
    """Writes results.json, results.md and the figures of a run directory; returns the results."""
    run_dir = Path(run_dir)
    if not (run_dir / PLAN).is_file():
        raise FileNotFoundError(f"{run_dir}: no {PLAN} (not a run directory of `w2s run`)")
    results = build_results(run_dir)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    if figures:
        write_figures(results, run_dir / "figures")
    return results
