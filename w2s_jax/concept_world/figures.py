"""The concept world's figures, each point with its two-stage bootstrap interval (worlds, seeds):
in-context curves against Bayes, refined labels against demonstrations, students against labeller
quality, refined labels against gamma, decay rates against gamma."""

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


def _bars(ax, xs, stats, transform=lambda v: v, **kw):
    """Points with interval bars (no bar where the interval is undefined)."""
    v = np.array([transform(s["value"]) for s in stats], float)
    lo = np.array([transform(s["lo"]) if not math.isnan(s["lo"]) else np.nan for s in stats], float)
    hi = np.array([transform(s["hi"]) if not math.isnan(s["hi"]) else np.nan for s in stats], float)
    low, high = np.minimum(lo, hi), np.maximum(lo, hi)
    err = np.nan_to_num(np.stack([v - low, high - v]), nan=0.0).clip(min=0)
    ax.errorbar(xs, v, yerr=err, fmt="o-", capsize=3, **kw)


def write_figures(results: dict, directory: str | Path) -> list[Path]:
    """One PNG per part present in ``results`` (``curves``, ``demos``, ``quality``, ``gamma``,
    ``gamma-rates``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    paths = []
    units = f"{results['units']} units; bars: 95% world/seed bootstrap"

    def done(fig, name):
        fig.tight_layout()
        paths.append(_save(fig, directory / name))
        plt.close(fig)

    if results.get("curves"):
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        colors = {"strong": "tab:blue", "intermediate": "tab:green", "weak": "tab:red"}
        for who, curve in results["curves"].items():
            ns = [r["n"] for r in curve["rows"]]
            _bars(ax, ns, [r["model"] for r in curve["rows"]], color=colors.get(who, "gray"), label=f"{who} model")
        first = next(iter(results["curves"].values()))
        _bars(ax, [r["n"] for r in first["rows"]], [r["bayes"] for r in first["rows"]], color="k", label="Bayes-optimal")
        ax.set_xlabel("demonstrations n (held-out documents)")
        ax.set_ylabel("in-context accuracy")
        ax.set_title(units, fontsize=8)
        ax.legend(fontsize=8)
        done(fig, "curves.png")
    if "demos" in results:
        d = results["demos"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        ns = [r["n"] for r in d["rows"]]
        for key, label, color in (("transformer", "transformer", "tab:blue"), ("bayes", "Bayes-optimal", "k")):
            rate = d[f"rate_{key}"]["value"]
            _bars(ax, ns, [r[key] for r in d["rows"]], transform=lambda v: max(1 - v, 1e-3), color=color,
                  label=f"{label} (fitted rate {rate:.2f})" if not math.isnan(rate) else label)
        ax.set_yscale("log")
        ax.set_xlabel("demonstrations n")
        ax.set_ylabel("refined-label error 1 - accuracy")
        ax.set_title(f"eta={d['eta']:.2f}, {d['draw']} draws; rho*={d['rho_star']['value']:.2f}\n{units}", fontsize=8)
        ax.legend(fontsize=8)
        done(fig, "demos.png")
    if "quality" in results:
        q = results["quality"]
        rows = q["rows"]
        weak = sorted((r for r in rows if r["role"] == "weak"), key=lambda r: r["train_labels"]["value"])
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        for method, color in (("naive", "tab:red"), ("icl-refine", "tab:blue"), ("context-distill", "tab:purple")):
            points = [(w["train_labels"]["value"], r["accuracy"]) for w in weak for r in rows
                      if r["method"] == method and r["supervisor"] == w["supervisor"]]
            if points:
                _bars(ax, [p[0] for p in points], [p[1] for p in points], color=color, label=f"{method} student")
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8, label="student = weak")
        ceiling = next((r["accuracy"]["value"] for r in rows if r["role"] == "ceiling"), None)
        if ceiling is not None:
            ax.axhline(ceiling, ls=":", color="k", label="gold ceiling")
        ax.set_xlabel("accuracy of the training labels fit (noisy labeller)")
        ax.set_ylabel("student test accuracy")
        ax.set_title(units, fontsize=8)
        ax.set_xlim(0, 1.02), ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        done(fig, "quality.png")
    if "gamma" in results:
        g = results["gamma"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        gammas = [r["gamma"] for r in g["rows"]]
        _bars(ax, gammas, [r["weak"] for r in g["rows"]], color="tab:red", label="weak labels")
        _bars(ax, gammas, [r["transformer"] for r in g["rows"]], color="tab:blue", label="transformer")
        _bars(ax, gammas, [r["transformer_rival"] for r in g["rows"]], color="tab:cyan", label="transformer = j")
        _bars(ax, gammas, [r["bayes"] for r in g["rows"]], color="k", label="Bayes-optimal")
        ax.axvline(0.5, color="gray", ls="--", lw=0.8, label="theory: gamma = 1/2")
        ax.set_xlabel("gamma (fraction labelled by concept j)")
        ax.set_ylabel("refined-label rate")
        ax.set_title(f"{g['demos']} demonstrations, {g['draw']} draws\n{units}", fontsize=8)
        ax.legend(fontsize=7)
        done(fig, "gamma.png")
    if "gamma-rates" in results:
        r = results["gamma-rates"]["gammas"]
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        gammas = [g["gamma"] for g in r]
        _bars(ax, gammas, [g["rate_transformer"] for g in r], color="tab:blue", label="transformer fitted rate")
        _bars(ax, gammas, [g["rate_bayes"] for g in r], color="k", label="Bayes fitted rate")
        ax.plot(gammas, [g["rho_star"]["value"] for g in r], "s--", color="tab:orange", label="rho*")
        ax.set_xlabel("gamma (misaligned labeller)")
        ax.set_ylabel("decay rate of the error in n")
        ax.set_title(units, fontsize=8)
        ax.legend(fontsize=8)
        done(fig, "gamma_rates.png")
    return paths
