"""The five sweeps behind ``theory/simulate.py``, as small strategy objects.

Each sweep is a frozen dataclass holding its grid; ``run(*, key, trials) -> dict`` returns a
JSON-ready result with three parts:

* ``table``: ``{"columns": [...], "rows": [[...], ...]}``, printed by :mod:`theory.report`;
* ``series``: the arrays its figure draws (:mod:`theory.figures`);
* ``checks``: every claim tested against simulation, ``{"claim", "passed", "detail"}``.

Monte Carlo means are compared with closed forms and bounds with a tolerance of ``Z_TOL``
standard errors, never a guessed constant.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from theory import closed_form as cf
from theory.model import Biased, ConceptModel, Misaligned, Noisy, Problem, Supervisor, make_problem, stack_problems
from theory.monte_carlo import DEFAULT_LAMS, FitSettings, in_chunks, simulate_fits, simulate_posterior
from w2s_jax.core import pgr

__all__ = ["Z_TOL", "LambdaSweep", "DecaySweep", "WeakQualitySweep", "NoisySweep", "MisalignedSweep", "fit_decay_rate"]

Z_TOL = 4.0  # a Monte Carlo mean may sit this many standard errors on the wrong side of a bound


def _check(claim: str, passed, detail: str) -> dict:
    return {"claim": claim, "passed": bool(passed), "detail": detail}


def _mean_se(x_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x_T = np.asarray(x_T)
    return x_T.mean(0), x_T.std(0, ddof=1) / np.sqrt(x_T.shape[0])


def _oracle(risk_TxG: np.ndarray) -> tuple[int, np.ndarray]:
    """The grid point minimising the expected risk, and the per-trial risks there."""
    i = int(np.argmin(risk_TxG.mean(0)))
    return i, risk_TxG[:, i]


def _pgr_dict(method_T, weak_risk, ceiling_T) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return pgr(method_T, weak_risk, ceiling_T, higher_is_better=False).as_dict()


def fit_decay_rate(n_J: np.ndarray, err_J: np.ndarray) -> float:
    """Fit ``log err = -rate n - c1 log n + c0`` by least squares and return ``rate`` (eq. T.18)."""
    A = np.stack([n_J, np.log(n_J), np.ones_like(n_J)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, np.log(err_J), rcond=None)
    return float(-coef[0])


def _fits(problem: Problem, settings: FitSettings, key) -> dict:
    def run(first, size):
        return simulate_fits(problem, dataclasses.replace(settings, trials=size), key=key, first_trial=first)

    return in_chunks(run, settings.trials)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LambdaSweep:
    """Fine-tuning is trapped: risk vs lam and vs GD steps for several n, against the bound (eq. T.13)."""

    model: ConceptModel = ConceptModel.paper()
    supervisor: Supervisor = Biased(delta=1.0)
    ns: tuple[int, ...] = (40, 100, 400)
    n_icl: int = 8
    lams: tuple[float, ...] = DEFAULT_LAMS

    def run(self, *, key, trials: int) -> dict:
        p = make_problem(self.model, self.supervisor)
        fit_key, post_key = jax.random.split(key)
        s = FitSettings(ns=self.ns, trials=trials, n_icl=self.n_icl, lams=self.lams)
        out = _fits(p, s, fit_key)
        post = simulate_posterior(p, self.n_icl, 20 * trials, key=post_key)
        # beta_ref on the host: eager jnp indexing and matmul would each compile a tiny program.
        beta_ref = np.asarray(post["E_pi_JxK"])[self.n_icl] @ np.asarray(p.B_KxD)
        bound = float(cf.segment_bound(p))
        weak_risk = float(cf.eps_W2(p))
        pop_weak = np.asarray(cf.ridge_population(p, self.lams)[1])
        beta_ref = jax.device_put(beta_ref.astype(p.beta_P.dtype))
        pop_ref = np.asarray(cf.ridge_population(p, self.lams, beta_label=beta_ref)[1])
        rows, series, ok_bound, worst = [], {"lams": list(self.lams), "steps": list(s.steps), "bound": bound}, True, np.inf
        for i, n in enumerate(self.ns):
            m = {name: _mean_se(out[name][:, i]) for name in out}
            for name in ("weak/ridge", "weak/gd"):
                slack = (m[name][0] + Z_TOL * m[name][1] - bound).min()
                worst, ok_bound = min(worst, slack), ok_bound and slack >= 0
            j_ft, ft_T = _oracle(out["weak/ridge"][:, i])
            _, ref_T = _oracle(out["refined/ridge"][:, i])
            _, gold_T = _oracle(out["gold/ridge"][:, i])
            ft_pgr, ref_pgr = _pgr_dict(ft_T, weak_risk, gold_T), _pgr_dict(ref_T, weak_risk, gold_T)
            rows.append([n, self.lams[j_ft], ft_T.mean(), ft_T.std(ddof=1) / np.sqrt(trials), bound,
                         m["weak/gd"][0].min(), ref_T.mean(), gold_T.mean(), ft_pgr["value"], ref_pgr["value"]])
            series[f"n={n}"] = {k: {"mean": v[0].tolist(), "se": v[1].tolist()} for k, v in m.items()}
        series["population/weak"] = pop_weak.tolist()
        series["population/refined"] = pop_ref.tolist()
        checks = [
            _check("naive fine-tuning (ridge and GD, every lam, t, n) stays above the segment bound",
                   ok_bound, f"min over grid of (MC mean + {Z_TOL} se - bound) = {worst:.3g}; bound = {bound:.4f}"),
            _check("refine-then-fit beats the fine-tuning bound at the largest n",
                   rows[-1][6] < bound, f"refined {rows[-1][6]:.4f} vs bound {bound:.4f}"),
            _check("population ridge risk is never below the bound", pop_weak.min() >= bound - 1e-12,
                   f"min population risk {pop_weak.min():.4f} vs bound {bound:.4f}"),
        ]
        cols = ["n", "oracle lam", "FT risk", "FT se", "FT bound", "GD best", "refined", "ceiling", "PGR FT", "PGR refined"]
        return {"table": {"columns": cols, "rows": rows}, "series": series, "checks": checks}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecaySweep:
    """Refinement error decays exponentially in n_icl: MC vs the Chernoff bound (eq. T.18)."""

    model: ConceptModel = ConceptModel.paper()
    supervisor: Supervisor = Biased(delta=1.0)
    n_max: int = 32
    draws_per_trial: int = 100  # posterior draws = draws_per_trial * trials

    def run(self, *, key, trials: int) -> dict:
        p = make_problem(self.model, self.supervisor)
        draws = self.draws_per_trial * trials
        post = {k: np.asarray(v) for k, v in simulate_posterior(p, self.n_max, draws, key=key).items()}
        n_J = np.arange(self.n_max + 1)
        bound_J = np.asarray(jax.vmap(lambda n: cf.chernoff_bound(p, n))(jnp.asarray(n_J, jnp.float64)))
        risk_J = np.asarray(jax.vmap(lambda e: cf.refine_population(p, e))(jnp.asarray(post["E_pi_JxK"])))
        risk_map_J = np.asarray(jax.vmap(lambda e: cf.refine_population(p, e))(jnp.asarray(post["E_map_JxK"])))
        err, se = post["err_J"], post["err_se_J"]
        rate = float(cf.decay_exponent(p))
        fit_mask = (n_J >= 2) & (se < 0.1 * err)
        fitted = fit_decay_rate(n_J[fit_mask], err[fit_mask]) if fit_mask.sum() >= 4 else float("nan")
        slack = (bound_J - (err - Z_TOL * se)).min()
        risk_bound_J = np.asarray(cf.refine_risk_bound(p, jnp.asarray(err)))  # warns unless Sigma = I
        rows = [[int(n), err[n], se[n], bound_J[n], risk_J[n], risk_map_J[n], 2 * min(1.0, bound_J[n]) ** 2]
                for n in n_J if n % 4 == 0]
        checks = [
            _check("Chernoff bound >= Monte Carlo 1 - E[pi*] at every n_icl", slack >= 0, f"min(bound - (MC - {Z_TOL} se)) = {slack:.3g}"),
            _check("fitted decay rate matches the computed exponent within 25%", abs(fitted - rate) <= 0.25 * rate,
                   f"fitted {fitted:.4f} (log err on [n, log n, 1], n with rel. se < 10%) vs rho* = {rate:.4f}"),
            _check("risk <= 2 (1 - E pi*)^2 (orthonormal B, Sigma = I)",
                   bool(np.all(risk_J <= risk_bound_J + 1e-12 + 2 * Z_TOL * err * se)),
                   f"max risk/(2 err^2) = {np.max(risk_J / np.maximum(risk_bound_J, 1e-300)):.3f}"),
        ]
        series = {"n_icl": n_J.tolist(), "err": err.tolist(), "err_se": se.tolist(), "bound": bound_J.tolist(),
                  "risk": risk_J.tolist(), "risk_map": risk_map_J.tolist(), "rate": rate, "fitted_rate": fitted, "ft_bound": float(cf.segment_bound(p))}
        cols = ["n_icl", "1-E[pi*] MC", "se", "Chernoff bound", "refine risk (mean)", "refine risk (MAP)", "risk bound"]
        return {"table": {"columns": cols, "rows": rows}, "series": series, "checks": checks}


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeakQualitySweep:
    """Risk and PGR vs the weak supervisor's bias delta, all estimators side by side."""

    model: ConceptModel = ConceptModel.paper()
    deltas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    n: int = 200
    n_icl: int = 8

    def run(self, *, key, trials: int) -> dict:
        problems = [make_problem(self.model, Biased(delta=d)) for d in self.deltas]
        grid = stack_problems(problems)
        s = FitSettings(ns=(self.n,), trials=trials, n_icl=self.n_icl)
        keys = jax.random.split(key, len(self.deltas))

        def run(first, size):
            s_chunk = dataclasses.replace(s, trials=size)
            return jax.vmap(lambda q, k: simulate_fits(q, s_chunk, key=k, first_trial=first))(grid, keys)

        out = {k: v[:, :, 0] for k, v in in_chunks(run, trials, axis=1).items()}  # grid x trials x lams
        rows, ok = [], True
        series = {k: [] for k in ("delta", "weak", "strong", "ft", "refined", "ceiling", "bound", "pgr_ft", "pgr_refined")}
        for g, (d, p) in enumerate(zip(self.deltas, problems)):
            weak, strong, bound = float(cf.eps_W2(p)), float(cf.eps_P2(p)), float(cf.segment_bound(p))
            _, ft_T = _oracle(out["weak/ridge"][g])
            _, ref_T = _oracle(out["refined/ridge"][g])
            _, gold_T = _oracle(out["gold/ridge"][g])
            ok = ok and ft_T.mean() + Z_TOL * ft_T.std(ddof=1) / np.sqrt(trials) >= bound
            pf, pr = _pgr_dict(ft_T, weak, gold_T), _pgr_dict(ref_T, weak, gold_T)
            vals = [d, weak, strong, ft_T.mean(), ref_T.mean(), gold_T.mean(), bound, pf["value"], pr["value"]]
            for k, v in zip(series, vals):
                series[k].append(float(v))
            rows.append(vals + [pr["lo"], pr["hi"]])
        cols = ["delta", "weak", "strong", "best FT", "refined", "ceiling", "FT bound", "PGR FT", "PGR refined", "PGR ref lo", "PGR ref hi"]
        better = [r for r in rows if np.isfinite(r[7]) and np.isfinite(r[8])]
        checks = [
            _check("best fine-tuning stays above its bound for every delta", ok, "oracle lam per delta"),
            _check("refinement recovers more of the gap than fine-tuning (PGR) wherever PGR is defined",
                   bool(better) and all(r[8] > r[7] for r in better), f"{len(better)} deltas with a defined PGR"),
        ]
        return {"table": {"columns": cols, "rows": rows}, "series": series, "checks": checks}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoisySweep:
    """Noisy supervisor: fine-tuning is consistent but pays variance; refinement denoises."""

    model: ConceptModel = ConceptModel.paper()
    eta: float = 2.0
    ns: tuple[int, ...] = (30, 50, 100, 200, 400)
    n_icl: int = 8

    def run(self, *, key, trials: int) -> dict:
        p = make_problem(self.model, Noisy(eta=self.eta))
        lams = (0.0,) + DEFAULT_LAMS
        out = _fits(p, FitSettings(ns=self.ns, trials=trials, n_icl=self.n_icl, lams=lams), key)
        rows, ok, worst = [], True, 0.0
        series = {k: [] for k in ("n", "ols", "ols_se", "ols_closed", "ft", "refined", "ceiling")}
        for i, n in enumerate(self.ns):
            ols, ols_se = _mean_se(out["weak/ridge"][:, i, 0])
            # From the supervisor's definition (eq. T.3), not from p.sigma_weak: the check then also
            # tests how make_problem builds the noisy supervisor.
            sigma_w = float(np.hypot(self.model.sigma, self.eta))
            closed = float(cf.ols_excess_risk(n, self.model.d, sigma_w)) if n > self.model.d + 1 else float("nan")
            if np.isfinite(closed):
                z = abs(ols - closed) / ols_se
                worst, ok = max(worst, z), ok and z <= Z_TOL
            ft = _oracle(out["weak/ridge"][:, i])[1].mean()
            ref = _oracle(out["refined/ridge"][:, i])[1].mean()
            gold = _oracle(out["gold/ridge"][:, i])[1].mean()
            for k, v in zip(series, [n, ols, ols_se, closed, ft, ref, gold]):
                series[k].append(float(v))
            rows.append([n, ols, ols_se, closed, ft, ref, gold])
        cols = ["n", "OLS on weak", "se", "closed form", "best FT", "refined", "ceiling"]
        checks = [
            _check("least squares on noisy weak labels matches sigma_w^2 d/(n-d-1)", ok, f"max |z| = {worst:.2f}"),
            _check("refinement beats best fine-tuning at the smallest n", rows[0][5] < rows[0][4],
                   f"refined {rows[0][5]:.4f} vs FT {rows[0][4]:.4f} at n={rows[0][0]}"),
        ]
        return {"table": {"columns": cols, "rows": rows}, "series": series, "checks": checks}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MisalignedSweep:
    """Misaligned supervisor: refinement succeeds iff gamma < 1/2 (eq. T.19)."""

    model: ConceptModel = ConceptModel.paper()
    gammas: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 3))
    delta: float = 0.5
    j: int = 1  # the competing concept
    n_max: int = 32
    draws_per_trial: int = 20

    def run(self, *, key, trials: int) -> dict:
        problems = [make_problem(self.model, Misaligned(gamma=g, delta=self.delta, j=self.j)) for g in self.gammas]
        grid = stack_problems(problems)
        draws = self.draws_per_trial * trials
        keys = jax.random.split(key, len(self.gammas))
        post = jax.vmap(lambda q, k: simulate_posterior(q, self.n_max, draws, key=k))(grid, keys)
        E_pi = np.asarray(post["E_pi_JxK"])  # vmapped: G x J x K
        k_star, j = self.model.k_star, self.j
        success = E_pi[:, :, k_star]
        ident = [bool(cf.identifiable(p)) for p in problems]
        rates = [float(cf.decay_exponent(p)) for p in problems]
        g_arr = np.asarray(self.gammas)
        below, above = g_arr < 0.5 - 0.05, g_arr > 0.5 + 0.05
        checks = [
            _check("identifiable exactly when gamma < 1/2", all(i == (g < 0.5) for i, g in zip(ident, g_arr)),
                   "closed form ||bw - bj|| > ||bw - b*||"),
            _check("gamma < 0.45: E[pi*] at n_max > 1/2 and rising in n_icl",
                   bool(np.all(success[below, -1] > 0.5) and np.all(success[below, -1] > success[below, 0])),
                   f"min E[pi*] at n_max = {success[below, -1].min():.4f}, at n=0 {success[below, 0].max():.4f}"),
            _check("gamma > 0.55: posterior mass moves to the wrong concept j",
                   bool(np.all(E_pi[above, -1, j] > 0.5)), f"min E[pi_j] at n_max = {E_pi[above, -1, j].min():.4f}"),
        ]
        rows = [[float(g), i, r, success[a, 0], success[a, self.n_max // 2], success[a, -1], E_pi[a, -1, j]]
                for a, (g, i, r) in enumerate(zip(self.gammas, ident, rates)) if a % 2 == 0]
        cols = ["gamma", "identifiable", "rho*", "E[pi*] n=0", f"E[pi*] n={self.n_max // 2}", f"E[pi*] n={self.n_max}", "E[pi_j] n_max"]
        series = {"gammas": g_arr.tolist(), "n_icl": list(range(self.n_max + 1)), "success": success.tolist(), "rates": rates}
        return {"table": {"columns": cols, "rows": rows}, "series": series, "checks": checks}
