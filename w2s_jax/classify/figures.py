"""The classification report's figures, every one with its intervals.

- ``pgr_heatmap_<metric>.png``: PGR of the first loss's student, weak models (rows) x strong models
  (columns), each cell annotated with its mean and interval over seeds;
- ``pgr_lines_<metric>.png``: PGR of every student against the strong model, one line per
  (weak model, student), error bars over seeds;
- ``accuracy_<weak>_<strong>.png``: every model's test accuracy for one pair, error bars over seeds.

With one seed the error bars are the seed's interval over test items.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _err(stat: dict | None, item: dict | None = None) -> tuple[float, float, float]:
    """(value, lower error, upper error): the interval over seeds, else over items (one seed)."""
    if not stat:
        return math.nan, 0.0, 0.0
    lo, hi = stat.get("lo", math.nan), stat.get("hi", math.nan)
    if not (np.isfinite(lo) and np.isfinite(hi)) and item is not None:
        lo, hi = item.get("lo", math.nan), item.get("hi", math.nan)
    mean = stat["mean"]
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(mean)):
        return mean, 0.0, 0.0
    return mean, max(mean - lo, 0.0), max(hi - mean, 0.0)


def _stat(row: dict, metric: str) -> tuple[float, float, float]:
    seeds = row.get("seeds", {}).get(metric, [])
    return _err(row.get(metric), seeds[0] if len(seeds) == 1 else None)


def _row(results: dict, weak: str, strong: str, subject: str) -> dict | None:
    for pair in results["pairs"]:
        if pair["weak"] == weak and pair["strong"] == strong:
            return next((r for r in pair["rows"] if r["subject"] == subject), None)
    return None


def _short(name: str) -> str:
    return Path(name.rstrip("/")).name.lower()


def write_figures(results: dict, directory: Path) -> list[Path]:
    """Writes the figures (see the module docstring); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    weak = [_short(w) for w in results["weak"]]
    strong = [_short(s) for s in results["strong"]]
    students = sorted({r["subject"] for p in results["pairs"] for r in p["rows"]
                       if r["subject"].startswith("student/")})
    first = f"student/{results['losses'][0]}"
    written = []
    for metric in ("accuracy", "auc"):
        key = f"pgr_{metric}"
        grid = np.full((len(weak), len(strong)), np.nan)
        fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(strong), 1.2 + 1.0 * len(weak)))
        for i, w in enumerate(weak):
            for j, s in enumerate(strong):
                row = _row(results, w, s, first)
                if row is None or key not in row:
                    continue
                mean, lo, hi = _stat(row, key)
                grid[i, j] = mean
                text = "n/a" if not np.isfinite(mean) else f"{mean:.2f}\n[{mean - lo:.2f}, {mean + hi:.2f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
        ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(strong)), strong, rotation=30, ha="right")
        ax.set_yticks(range(len(weak)), weak)
        ax.set_xlabel("strong model")
        ax.set_ylabel("weak model")
        ax.set_title(f"PGR ({metric}) of {first}, mean [interval]")
        written.append(_save(fig, directory / f"pgr_heatmap_{metric}.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for w in weak:
            for subject in students:
                points = [(j, *_stat(row, key)) for j, s in enumerate(strong)
                          if (row := _row(results, w, s, subject)) is not None and key in row]
                if points:
                    x, y, lo, hi = (np.asarray(v, float) for v in zip(*points))
                    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=f"{w}: {subject}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(strong)), strong, rotation=30, ha="right")
        ax.set_xlabel("strong model")
        ax.set_ylabel(f"PGR ({metric})")
        ax.legend(fontsize=7)
        written.append(_save(fig, directory / f"pgr_lines_{metric}.png"))
    for pair in results["pairs"]:
        fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(pair["rows"]), 4))
        values = [_stat(row, "accuracy") for row in pair["rows"]]
        y, lo, hi = (np.asarray(v, float) for v in zip(*values))
        ax.bar(range(len(y)), y, yerr=[lo, hi], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(y)), [r["subject"] for r in pair["rows"]], rotation=40, ha="right")
        ax.set_ylim(0.0, 1.0)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"weak {pair['weak']} -> strong {pair['strong']}")
        written.append(_save(fig, directory / f"accuracy_{pair['weak']}_{pair['strong']}.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from w2s_jax.atomic_write import atomic_write_bytes
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
