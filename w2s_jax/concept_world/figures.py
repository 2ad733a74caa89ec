"""The concept world's three figures: demonstrations, labeller quality, gamma."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from w2s_jax.pipeline.artifacts import atomic_write_bytes


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def write_figures(results: dict, directory: str | Path) -> list[Path]:
    """``demos.png``, ``quality.png`` and ``gamma.png`` for the sweeps present in ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    paths = []
    if "demos" in results:
        d = results["demos"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        ns = np.array([r["n"] for r in d["rows"]])
        for key, label, color in (("transformer", "transformer", "tab:blue"), ("bayes", "Bayes-optimal", "k")):
            acc = np.array([r[key] for r in d["rows"]], float)
            rate = d[f"rate_{key}"]
            ax.plot(ns, 1 - acc, "o-", color=color, label=f"{label} (fitted rho {rate:.2f})" if rate is not None else label)
        ax.set_yscale("log")
        ax.set_xlabel("demonstrations n")
        ax.set_ylabel("refined-label error 1 - accuracy")
        ax.set_title(f"noisy labeller eta={d['eta']:.2f}; Chernoff rho*={d['rho_star']:.2f}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, directory / "demos.png"))
        plt.close(fig)
    if "quality" in results:
        q = results["quality"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        weak = [p.get("weak") for p in q["curve"]]
        for key, color in (("naive", "tab:red"), ("icl-refine", "tab:blue"), ("context-distill", "tab:purple")):
            points = [(p["weak"], p[key]) for p in q["curve"] if p.get(key) is not None and p.get("weak") is not None]
            if points:
                ax.plot(*zip(*points), "o-", color=color, label=f"{key} student")
        if weak:
            ax.plot([0, 1], [0, 1], color="gray", lw=0.8, label="student = weak")
        if q["ceiling"] is not None:
            ax.axhline(q["ceiling"], ls=":", color="k", label="gold ceiling")
        ax.set_xlabel("weak labeller accuracy (test)")
        ax.set_ylabel("student accuracy (test)")
        ax.set_xlim(0, 1.02), ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, directory / "quality.png"))
        plt.close(fig)
    if "gamma" in results:
        g = results["gamma"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        gammas = [r["gamma"] for r in g["rows"]]
        ax.plot(gammas, [r["weak"] for r in g["rows"]], "s--", color="tab:red", label="weak labeller")
        ax.plot(gammas, [r["transformer"] for r in g["rows"]], "o-", color="tab:blue", label="transformer")
        ax.plot(gammas, [r["bayes"] for r in g["rows"]], "o-", color="k", label="Bayes-optimal")
        for key, color in (("transition_transformer", "tab:blue"), ("transition_bayes", "k")):
            if g[key] is not None and not math.isnan(g[key]):
                ax.axvline(g[key], color=color, ls=":", lw=1)
        ax.axvline(0.5, color="gray", ls="--", lw=0.8, label="theory: gamma = 1/2")
        ax.set_xlabel("gamma (fraction labelled by concept j)")
        ax.set_ylabel("refined-label accuracy vs k*")
        ax.set_title(f"{g['demos']} demonstrations; dotted: transitions", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, directory / "gamma.png"))
        plt.close(fig)
    return paths
