"""One matplotlib figure per experiment, drawn from a sweep's ``series`` (no recomputation)."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_ft_trapped", "plot_refine_decay", "plot_weak_quality", "plot_noisy", "plot_misaligned", "plot_misfit"]


def plot_ft_trapped(series: dict):
    fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    lams, steps = np.asarray(series["lams"]), np.maximum(np.asarray(series["steps"]), 0.5)
    runs = [k for k in series if k.startswith("n=")]
    for i, run in enumerate(runs):
        c = f"C{i}"
        for ax, x, key in ((ax_l, lams, "weak/ridge"), (ax_t, steps, "weak/gd")):
            m, s = np.asarray(series[run][key]["mean"]), np.asarray(series[run][key]["se"])
            ax.plot(x, m, color=c, label=f"fine-tune on weak, {run}")
            ax.fill_between(x, m - 2 * s, m + 2 * s, color=c, alpha=0.2)
        ax_l.plot(lams, series[run]["refined/ridge"]["mean"], color=c, ls="--", label=f"refine then fit, {run}")
    ax_l.plot(lams, series["population/weak"], "k:", label="fine-tune, population (T.11)")
    ax_l.plot(lams, series["population/refined"], "k-.", label="refine, population (T.15)")
    for ax in (ax_l, ax_t):
        ax.axhline(series["bound"], color="r", lw=2, label="fine-tuning lower bound (T.13)")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax_l.set_xlabel(r"shrinkage $\lambda$ towards $\beta_P$")
    ax_t.set_xlabel("gradient-descent steps from $\\beta_P$")
    ax_l.set_ylabel(r"excess risk $R(b)$")
    ax_l.legend(fontsize=7)
    fig.suptitle("Fine-tuning on weak labels is trapped above the bound; refinement is not")
    return fig


def plot_refine_decay(series: dict):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    n = np.asarray(series["n_icl"])
    err, se = np.asarray(series["err"]), np.asarray(series["err_se"])
    ax.errorbar(n, err, yerr=2 * se, fmt="o", ms=3, label=r"$1 - E[\pi_{k^*}]$, Monte Carlo")
    ax.plot(n, np.minimum(series["bound"], 1.0), "r-", label="Chernoff bound (T.18)")
    ax.plot(n, np.maximum(series["risk"], 1e-300), "g^", ms=3, label="refine-then-fit risk, mean readout (T.15)")
    ax.plot(n, np.maximum(series["risk_map"], 1e-300), "mv", ms=3, label="refine-then-fit risk, MAP readout")
    ax.axhline(series["ft_bound"], color="k", ls=":", label="fine-tuning lower bound (T.13)")
    ref = err[min(4, len(err) - 1)] * np.exp(-series["rate"] * (n - n[min(4, len(n) - 1)]))
    ax.plot(n, ref, "C1--", label=rf"slope $\rho^*$={series['rate']:.3f} (fit {series['fitted_rate']:.3f})")
    ax.set_yscale("log")
    risk = np.asarray(series["risk"])
    floor = min(float(err[err > 0].min()), float(risk[risk > 0].min()) if np.any(risk > 0) else 1.0)
    ax.set_ylim(max(1e-10, floor / 3), 2)
    ax.set_xlabel(r"demonstrations $n_{icl}$")
    ax.set_ylabel("error")
    ax.legend(fontsize=7)
    ax.set_title("Refinement error decays exponentially")
    return fig


def plot_weak_quality(series: dict):
    fig, (ax_r, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    d, param = series["value"], series["parameter"]
    xlabel = {"delta": r"weak bias $\delta$", "eta": r"weak noise $\eta$", "gamma": r"misalignment $\gamma$"}[param]
    for key, label in (("weak", "weak model"), ("strong", "pre-trained strong"), ("ft", "best fine-tuning"),
                       ("bound", "fine-tuning bound"), ("refined", "refinement"), ("ceiling", "gold ceiling")):
        ax_r.plot(d, series[key], "o-", ms=3, label=label)
    ax_r.set_yscale("log")
    ax_r.set_xlabel(xlabel)
    ax_r.set_ylabel("excess risk")
    ax_r.legend(fontsize=7)
    ax_p.plot(d, series["pgr_ft"], "o-", label="fine-tuning")
    ax_p.plot(d, series["pgr_refined"], "s-", label="refinement")
    ax_p.axhline(1.0, color="k", ls=":")
    ax_p.set_xlabel(xlabel)
    ax_p.set_ylabel("PGR")
    ax_p.legend(fontsize=7)
    fig.suptitle("Weak-quality sweep")
    return fig


def plot_noisy(series: dict):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    n = series["n"]
    ax.errorbar(n, series["ols"], yerr=2 * np.asarray(series["ols_se"]), fmt="o", ms=3, label="least squares on weak")
    ax.plot(n, series["ols_closed"], "k:", label=r"$\sigma_w^2 d / (n - d - 1)$")
    ax.plot(n, series["ft"], "s-", ms=3, label="best fine-tuning")
    ax.plot(n, series["refined"], "^-", ms=3, label="refinement")
    ax.plot(n, series["ceiling"], "d-", ms=3, label="gold ceiling")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(n, [str(int(v)) for v in n], minor=False)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training examples n")
    ax.set_ylabel("excess risk")
    ax.legend(fontsize=7)
    ax.set_title("Noisy supervisor")
    return fig


def plot_misaligned(series: dict):
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
    g, n = np.asarray(series["gammas"]), np.asarray(series["n_icl"])
    success = np.asarray(series["success"])
    im = ax_h.pcolormesh(n, g, success, shading="nearest", vmin=0, vmax=1, cmap="viridis")
    ax_h.axhline(0.5, color="w", ls="--")
    fig.colorbar(im, ax=ax_h, label=r"$E[\pi_{k^*}]$")
    ax_h.set_xlabel(r"demonstrations $n_{icl}$")
    ax_h.set_ylabel(r"misalignment $\gamma$")
    ax_c.plot(g, success[:, -1], "o-", label=rf"$E[\pi_{{k^*}}]$ at $n_{{icl}}$={n[-1]}")
    ax_c.axvline(0.5, color="r", ls="--", label=r"$\gamma = 1/2$ (T.19)")
    ax_c.set_xlabel(r"misalignment $\gamma$")
    ax_c.legend(fontsize=7)
    fig.suptitle("Misaligned supervisor: the phase transition at gamma = 1/2")
    return fig


def plot_misfit(series: dict):
    fig, (ax_r, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2))
    th, n = np.asarray(series["thetas"]), series["ns"][-1]
    last = lambda key: np.asarray(series[key])[:, -1]  # noqa: E731
    ax_r.plot(th, series["eps_w"], "k-", label=r"weak supervisor $\varepsilon_W^2$")
    ax_r.plot(th, series["bound"], "r-", lw=2, label="fine-tuning lower bound (T.13)")
    ax_r.plot(th, last("probe_closed"), "C0-", label=f"probe, closed form (T.21), n={n}")
    ax_r.plot(th, last("probe"), "C0o", ms=4, label="probe, Monte Carlo")
    ax_r.plot(th, last("ft"), "C1s-", ms=3, label="full fine-tuning, best ridge")
    ax_r.plot(th, last("refined"), "C2^-", ms=3, label="refine then fit")
    ax_r.plot(th, last("gold"), "C3d:", ms=3, label="gold ceiling")
    ax_r.set_xlabel(r"angle $\theta$ of the weak bias to span(B) (degrees)")
    ax_r.set_ylabel("excess risk")
    ax_r.set_yscale("symlog", linthresh=1e-2)
    ax_r.legend(fontsize=7)
    gain, pred = np.asarray(series["gain"]), np.asarray(series["gain_predicted"])
    for i, size in enumerate(series["ns"]):
        ax_g.plot(pred[:, i], gain[:, i], "o", ms=4, label=f"n={size}")
    lim = [min(pred.min(), gain.min()), max(pred.max(), gain.max())]
    ax_g.plot(lim, lim, "k:", label="gain = misfit - 2 V_K(n)")
    ax_g.set_xlabel("misfit on unlabelled inputs - 2 V_K(n) (no gold labels)")
    ax_g.set_ylabel(r"probe's gain $\varepsilon_W^2 - R$ (gold)")
    ax_g.legend(fontsize=7)
    fig.suptitle("Misfit: the probe gains what it disagrees with the weak model; full fine-tuning is trapped")
    return fig
