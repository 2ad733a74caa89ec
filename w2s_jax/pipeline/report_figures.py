"""The report's figures: ``scores.png`` and ``weak_vs_student.png``.

``scores.png``: one bar per subject with its interval. ``weak_vs_student.png`` (the paper's plot):
weak supervisor's score on x, student's score on y; a marker per (method, weak supervisor) with
both intervals as error bars; each method's line runs through its distinct weak scores in
increasing order (students of supervisors that tie in score share one vertex, their mean, so no
vertical segment joins them); zero-shot strong dashed, the gold ceiling dotted, ``student = weak``
thin.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from w2s_jax.pipeline.artifacts import atomic_write_bytes

_COLORS = {"weak": "tab:red", "zero-shot": "tab:gray", "method": "tab:blue", "ceiling": "tab:green"}


def _err(stat: dict) -> tuple[float, float]:
    """(below, above) the mean of an interval, 0 where it is undefined."""
    if math.isnan(stat["lo"]) or math.isnan(stat["hi"]):
        return 0.0, 0.0
    return max(stat["mean"] - stat["lo"], 0.0), max(stat["hi"] - stat["mean"], 0.0)


def method_points(rows: list[dict], primary: str) -> dict[str, list[tuple]]:
    """Per method, ``(weak stat, student stat)`` per weak supervisor, by the weak score."""
    weak = {r["supervisor"]: r[primary] for r in rows if r["role"] == "weak"}
    out: dict[str, list[tuple]] = {}
    for r in rows:
        if r["role"] == "method" and r["supervisor"] in weak:
            out.setdefault(r["method"], []).append((weak[r["supervisor"]], r[primary]))
    return {m: sorted(p, key=lambda pair: pair[0]["mean"]) for m, p in sorted(out.items())}


def line_vertices(points: list[tuple]) -> list[tuple[float, float]]:
    """One vertex per distinct weak score (the mean student score there), in increasing order."""
    by_x: dict[float, list[float]] = {}
    for w, s in points:
        by_x.setdefault(w["mean"], []).append(s["mean"])
    return [(x, float(np.mean(ys))) for x, ys in sorted(by_x.items())]


def write_figures(results: dict, directory: Path) -> list[Path]:
    """Writes both figures into ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary, rows = results["primary"], [r for r in results["rows"] if r["complete"]]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1), 3.6))
    errors = np.array([_err(r[primary]) for r in rows]).T.reshape(2, len(rows))
    ax.bar(range(len(rows)), [r[primary]["mean"] for r in rows], yerr=errors, capsize=3,
           color=[_COLORS[r["role"]] for r in rows])
    ax.set_xticks(range(len(rows)), [r["name"].replace("student/", "") for r in rows], rotation=35, ha="right",
                  fontsize=8)
    ax.set_ylabel(primary)
    ax.set_title(f"{results['experiment']} ({int(100 * results['level'])}% bootstrap CI)", fontsize=9)
    fig.tight_layout()
    paths.append(_save(fig, directory / "scores.png"))

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    for i, (method, points) in enumerate(method_points(rows, primary).items()):
        color = f"C{i}"
        xerr = np.array([_err(w) for w, _ in points]).T
        yerr = np.array([_err(s) for _, s in points]).T
        ax.errorbar([w["mean"] for w, _ in points], [s["mean"] for _, s in points], xerr=xerr, yerr=yerr,
                    fmt="o", color=color, capsize=2, lw=0.8, label=method)
        vertices = line_vertices(points)
        if len(vertices) > 1:
            ax.plot(*zip(*vertices), color=color, lw=1)
    for role, style in (("zero-shot", "--"), ("ceiling", ":")):
        for r in rows:
            if r["role"] == role:
                ax.axhline(r[primary]["mean"], linestyle=style, color="k", lw=1,
                           label="zero-shot strong" if role == "zero-shot" else "gold ceiling")
    weak = [r[primary]["mean"] for r in rows if r["role"] == "weak"]
    if weak:
        ax.plot([min(weak), max(weak)], [min(weak), max(weak)], color="tab:red", lw=0.8, alpha=0.5,
                label="student = weak")
    ax.set_xlabel(f"weak supervisor {primary}")
    ax.set_ylabel(f"student {primary}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, directory / "weak_vs_student.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
