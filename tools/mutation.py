"""Mutation run for ``theory/`` and ``w2s_jax/core/``: would the tests catch a realistic bug?

Each mutant below changes one line the way a person might get it wrong (a dropped square, a swapped
sign, the wrong PRNG key, ``ddof=0``). For each, the script writes the mutated file into a scratch
copy of the repository (the checkout is never touched), runs the tests that exercise that module
(``-x``, with a timeout), and records whether they fail ("killed") or pass ("survived"). Mutants
that survive the tests can be given a second chance to die by ``simulate.py --quick``'s checks
(``--simulate``). The score is killed / total.

    python tools/mutation.py                      # every mutant against its tests (~15 min, 2 cores)
    python tools/mutation.py --simulate           # survivors also against simulate.py --quick
    python tools/mutation.py --only noisy_sqrt --only bootstrap_tails
    python tools/mutation.py --list

A baseline run of every test file used comes first: if the unmutated code fails, the run stops
(otherwise every mutant would look killed). Exit status 1 if any mutant survives.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("theory", "w2s_jax", "tests", "pyproject.toml")  # what the targeted tests import

T = "tests/theory/"
C = "tests/core/"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str  # identifier for --only
    path: str  # file, relative to the repository root
    old: str  # exact text that occurs once in the file
    new: str  # its replacement
    tests: tuple[str, ...]  # pytest targets that exercise the module


MUTANTS = [
    # theory/model.py
    Mutant("noisy_sqrt", "theory/model.py", "np.sqrt(np.asarray(model.sigma**2 + self.eta**2))",
           "np.asarray(model.sigma + self.eta)", (T + "test_hand_values.py", T + "test_closed_form_vs_mc.py")),
    Mutant("beta_P_uniform", "theory/model.py", '"beta_P": alpha_K @ B_KxD,', '"beta_P": B_KxD.mean(axis=0),',
           (T + "test_limits.py", T + "test_bounds.py")),
    Mutant("Sigma_scales_not_squared", "theory/model.py", '"Sigma_DxD": np.diag(np.square(scales)),',
           '"Sigma_DxD": np.diag(scales),', (T + "test_closed_form_vs_mc.py", T + "test_validation.py")),
    Mutant("misaligned_weights_swapped", "theory/model.py",
           "beta = (1 - self.gamma) * B_KxD[model.k_star] + self.gamma * B_KxD[self.j]",
           "beta = self.gamma * B_KxD[model.k_star] + (1 - self.gamma) * B_KxD[self.j]",
           (T + "test_bounds.py",)),
    Mutant("biased_target_concept_0", "theory/model.py",
           "beta_weak = B_KxD[model.k_star] + self.delta * _u(model, self.delta)",
           "beta_weak = B_KxD[0] + self.delta * _u(model, self.delta)", (T + "test_hand_values.py", T + "test_bounds.py")),
    # theory/closed_form.py
    Mutant("decay_exponent_masks_concept_0", "theory/closed_form.py", "rho_max_K.at[p.k_star].set(jnp.inf)",
           "rho_max_K.at[0].set(jnp.inf)", (T + "test_hand_values.py", T + "test_bounds.py")),
    Mutant("segment_not_clipped", "theory/closed_form.py", "/ jnp.where(denom > 0, denom, 1.0), 0.0, 1.0), 0.0)",
           "/ jnp.where(denom > 0, denom, 1.0), -jnp.inf, jnp.inf), 0.0)", (T + "test_bounds.py",)),
    Mutant("orthogonal_bound_is_pgr_bound", "theory/closed_form.py", "return eps_p2 * eps_w2 / (eps_p2 + eps_w2)",
           "return eps_w2 / (eps_p2 + eps_w2)", (T + "test_bounds.py",)),
    Mutant("rho_sigma_not_squared", "theory/closed_form.py", "m = (s_S / jnp.square(p.sigma))[None, :]",
           "m = (s_S / p.sigma)[None, :]", (T + "test_bounds.py", T + "test_hand_values.py")),
    Mutant("rho_det_sign", "theory/closed_form.py", "det = (1 + a * m) * (1 - c * m) + b * b * m * m",
           "det = (1 + a * m) * (1 - c * m) - b * b * m * m", (T + "test_bounds.py", T + "test_hand_values.py")),
    Mutant("chernoff_prior_ratio_inverted", "theory/closed_form.py",
           "log_ratio_K = jnp.log(p.alpha_K) - jnp.log(p.alpha_K[p.k_star])",
           "log_ratio_K = jnp.log(p.alpha_K[p.k_star]) - jnp.log(p.alpha_K)", (T + "test_bounds.py",)),
    Mutant("ols_dof", "theory/closed_form.py", "return _scaled_square(sigma_label, d / (n - d - 1))",
           "return _scaled_square(sigma_label, d / (n - d))", (T + "test_closed_form_vs_mc.py",)),
    Mutant("identifiable_non_strict", "theory/closed_form.py", "return jnp.all(gap_K > 0)",
           "return jnp.all(gap_K >= 0)", (T + "test_bounds.py",)),
    Mutant("gd_population_ignores_Sigma", "theory/closed_form.py",
           "shrink_TxD = jnp.power(1.0 - lr * s_D[None, :], t_T[:, None])",
           "shrink_TxD = jnp.power(1.0 - lr * jnp.ones_like(s_D)[None, :], t_T[:, None])",
           (T + "test_validation.py", T + "test_limits.py")),
    Mutant("refine_bound_factor", "theory/closed_form.py", "return 2 * jnp.square(err)", "return jnp.square(err)",
           (T + "test_validation.py",)),
    Mutant("angled_rival_direction_not_unit", "theory/model.py",
           "v = (B_KxD[self.rival] - B_KxD[model.k_star]) / np.sqrt(2.0)",
           "v = (B_KxD[self.rival] - B_KxD[model.k_star]) / 2.0", (T + "test_misfit.py",)),
    # theory/probe.py
    Mutant("probe_variance_dof", "theory/probe.py", "return (float(p.sigma_weak) ** 2 + misfit_population(p)) * K / (n - K - 1)",
           "return (float(p.sigma_weak) ** 2 + misfit_population(p)) * K / (n - K)", (T + "test_misfit.py",)),
    Mutant("probe_noise_without_misfit", "theory/probe.py",
           "return (float(p.sigma_weak) ** 2 + misfit_population(p)) * K / (n - K - 1)",
           "return float(p.sigma_weak) ** 2 * K / (n - K - 1)", (T + "test_misfit.py",)),
    Mutant("probe_misfit_against_target", "theory/probe.py", "excess_risk(b_D, p.beta_weak, p.Sigma_DxD),",
           "excess_risk(b_D, p.beta_star, p.Sigma_DxD),", (T + "test_misfit.py",)),
    # theory/setting.py
    Mutant("setting_family_keeps_old_fields", "theory/setting.py", "sup_name, sup_kw = value, {}", "sup_name = value",
           (T + "test_setting.py",)),
    # theory/sweeps.py (a check's own closed form)
    Mutant("noisy_check_sigma_w_unsquared", "theory/sweeps.py", "sigma_w = float(np.hypot(self.model.sigma, self.eta))",
           "sigma_w = float(self.model.sigma + self.eta)", ("tests/test_simulate.py::test_quick_run_writes_all_outputs_and_every_check_passes",)),
    # theory/estimators.py
    Mutant("spectrum_unmasked_n", "theory/estimators.py", "A_DxD = (X_NxD * w_N[:, None]).T @ X_NxD / n",
           "A_DxD = (X_NxD * w_N[:, None]).T @ X_NxD / X_NxD.shape[0]", (T + "test_closed_form_vs_mc.py",)),
    Mutant("gd_target_not_divided", "theory/estimators.py",
           "w_TxD = decay_TxD * w0_D[None, :] + (1.0 - decay_TxD) * target_D[None, :]",
           "w_TxD = decay_TxD * w0_D[None, :] + (1.0 - decay_TxD) * c_D[None, :]", (T + "test_limits.py",)),
    Mutant("ridge_shrinks_to_zero", "theory/estimators.py", "num_LxD = c_D[None, :] + lam_Lx1 * w0_D[None, :]",
           "num_LxD = c_D[None, :]", (T + "test_limits.py",)),
    Mutant("features_not_square_rooted", "theory/estimators.py", "return z_NxD @ L_DxD.T", "return z_NxD @ Sigma_DxD",
           (T + "test_hand_values.py", T + "test_limits.py", T + "test_closed_form_vs_mc.py")),
    # theory/monte_carlo.py
    Mutant("weak_labels_with_gold_key", "theory/monte_carlo.py",
           'keys = {"gold": gold_key, "weak": weak_key, "refined": refine_key}',
           'keys = {"gold": gold_key, "weak": gold_key, "refined": refine_key}',
           (T + "test_hand_values.py", T + "test_engine.py")),
    Mutant("err_se_ddof0", "theory/monte_carlo.py", '"err_se_J": jnp.std(err_MxJ, axis=0, ddof=1) / jnp.sqrt(draws),',
           '"err_se_J": jnp.std(err_MxJ, axis=0) / jnp.sqrt(draws),', (T + "test_hand_values.py", T + "test_bounds.py")),
    Mutant("cov_pi_biased", "theory/monte_carlo.py",
           'cov_JxKxK = jnp.einsum("mjk,mjl->jkl", centred, centred) / (draws - 1)',
           'cov_JxKxK = jnp.einsum("mjk,mjl->jkl", centred, centred) / draws', (T + "test_hand_values.py",)),
    Mutant("sample_size_mask_off_by_one", "theory/monte_carlo.py",
           "w_SxN = (jnp.arange(n_max)[None, :] < jnp.asarray(s.ns)[:, None])",
           "w_SxN = (jnp.arange(n_max)[None, :] <= jnp.asarray(s.ns)[:, None])", (T + "test_closed_form_vs_mc.py",)),
    # w2s_jax/core/metrics.py
    Mutant("bootstrap_tails", "w2s_jax/core/metrics.py", "lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])",
           "lo, hi = np.quantile(boot, [1 - level, level])", (C + "test_labels_metrics.py",)),
    Mutant("pgr_delta_cross_term_sign", "w2s_jax/core/metrics.py",
           "var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (T * b_bar**2)",
           "var = (cov[0, 0] + 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (T * b_bar**2)",
           (C + "test_labels_metrics.py",)),
    Mutant("pgr_gap_test_one_sided_wrong", "w2s_jax/core/metrics.py", "reliable = b_bar - z * b_se > 0.0 and b_bar > 0.0",
           "reliable = b_bar + z * b_se > 0.0 and b_bar > 0.0", (C + "test_labels_metrics.py",)),
    Mutant("excess_risk_einsum_index", "w2s_jax/core/metrics.py", 'return jnp.einsum("...d,de,...e->...", e, Sigma_DxD, e)',
           'return jnp.einsum("...d,de,...d->...", e, Sigma_DxD, e)', (C + "test_labels_metrics.py",)),
    Mutant("mean_and_se_ddof0", "w2s_jax/core/metrics.py", "return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))",
           "return float(v.mean()), float(v.std() / math.sqrt(v.size))", (C + "test_labels_metrics.py",)),
    # w2s_jax/core/posterior.py
    Mutant("log_softmax_unshifted", "w2s_jax/core/posterior.py",
           "return jax.nn.log_softmax(log_prior_K + loglik_NxK, axis=-1)",
           "return (log_prior_K + loglik_NxK) - jnp.log(jnp.sum(jnp.exp(log_prior_K + loglik_NxK), axis=-1, keepdims=True))",
           (C + "test_objectives_posterior.py", T + "test_hand_values.py")),
    Mutant("map_ties_to_concept_0", "w2s_jax/core/posterior.py",
           "return is_max / jnp.sum(is_max, axis=-1, keepdims=True)",
           "return jax.nn.one_hot(jnp.argmax(log_pi_NxK, axis=-1), log_pi_NxK.shape[-1], dtype=log_pi_NxK.dtype)",
           (C + "test_objectives_posterior.py", T + "test_hand_values.py")),
    Mutant("sample_readout_is_map", "w2s_jax/core/posterior.py", "k_N = jax.random.categorical(key, log_pi_NxK, axis=-1)",
           "k_N = jnp.argmax(log_pi_NxK, axis=-1)", (C + "test_objectives_posterior.py",)),
    # w2s_jax/core/label_sources.py
    Mutant("residual_cov_sigma_not_squared", "w2s_jax/core/label_sources.py",
           "return R_KxD @ Sigma_DxD @ R_KxD.T + jnp.square(weak.sigma_weak)",
           "return R_KxD @ Sigma_DxD @ R_KxD.T + weak.sigma_weak", (T + "test_closed_form_vs_mc.py",)),
    Mutant("loglik_sigma_not_squared", "w2s_jax/core/label_sources.py",
           "return -0.5 * jnp.square(r_KxNxJ) / jnp.square(self.sigma)", "return -0.5 * jnp.square(r_KxNxJ) / self.sigma",
           (T + "test_closed_form_vs_mc.py",)),
    Mutant("psd_sqrt_missing_sqrt", "w2s_jax/core/label_sources.py",
           "return V_KxK * jnp.sqrt(jnp.clip(eigvals_K, 0.0, None))[None, :]",
           "return V_KxK * jnp.clip(eigvals_K, 0.0, None)[None, :]", (T + "test_closed_form_vs_mc.py",)),
    Mutant("label_noise_variance_not_scale", "w2s_jax/core/label_sources.py", "return X_NxD @ beta_D + sigma * noise_N",
           "return X_NxD @ beta_D + jnp.square(sigma) * noise_N", (C + "test_labels_metrics.py",)),
    # w2s_jax/core/objectives.py
    Mutant("kl_sign", "w2s_jax/core/objectives.py", "probs_NxC * (jnp.log(safe_p) - log_q)",
           "probs_NxC * (log_q - jnp.log(safe_p))", (C + "test_objectives_posterior.py",)),
    Mutant("masked_mean_over_all", "w2s_jax/core/objectives.py",
           "return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)", "return jnp.mean(values * mask)",
           (C + "test_objectives_posterior.py",)),
]


def _copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _pytest(workdir: Path, targets, timeout: float) -> tuple[str, float, str]:
    """"passed", "failed" or "timeout", the seconds it took, and the first failing test (or "")."""
    env = dict(os.environ, PYTHONPATH=str(workdir), PYTHONDONTWRITEBYTECODE="1", W2S_COMPILATION_CACHE="off")
    cmd = [sys.executable, "-m", "pytest", *targets, "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    return _run(cmd, workdir, env, timeout)


def _simulate(workdir: Path, timeout: float) -> tuple[str, float, str]:
    env = dict(os.environ, PYTHONPATH=str(workdir), PYTHONDONTWRITEBYTECODE="1", W2S_COMPILATION_CACHE="off")
    cmd = [sys.executable, "theory/simulate.py", "--quick", "--no-figures", "--out", str(workdir / "results")]
    return _run(cmd, workdir, env, timeout)


def _run(cmd, workdir, env, timeout) -> tuple[str, float, str]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    lines = proc.stdout.splitlines()
    first = next((ln.split(" - ")[0].removeprefix("FAILED ") for ln in lines if ln.startswith("FAILED ")), "")
    return ("passed" if proc.returncode == 0 else "failed"), time.perf_counter() - start, first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--simulate", action="store_true", help="run simulate.py --quick on mutants the tests miss")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per test run (default 300)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34s} {m.path}: {m.old!r} -> {m.new!r}")
        return 0
    known = {m.name for m in MUTANTS}
    for name in args.only or ():
        if name not in known:
            ap.error(f"unknown mutant {name!r}; see --list")
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    for m in mutants:  # every mutation must apply to exactly one place, or the run means nothing
        count = (ROOT / m.path).read_text().count(m.old)
        if count != 1:
            ap.error(f"mutant {m.name}: {m.old!r} occurs {count} times in {m.path} (need exactly 1)")

    results = []
    with tempfile.TemporaryDirectory(prefix="w2s-mutation-") as tmp:
        work = Path(tmp)
        _copy_repo(work)
        targets = sorted({t for m in mutants for t in m.tests})
        status, secs, _ = _pytest(work, targets, args.timeout * 4)
        print(f"baseline: {' '.join(targets)}: {status} ({secs:.0f} s)", flush=True)
        if status != "passed":
            print("the unmutated code does not pass its tests; fix that first")
            return 2
        for m in mutants:
            path = work / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                status, secs, first = _pytest(work, m.tests, args.timeout)
                killed_by = (first or "tests") if status != "passed" else None
                if killed_by is None and args.simulate:
                    sim, sim_secs, _ = _simulate(work, args.timeout * 2)
                    secs += sim_secs
                    killed_by = "simulate.py --quick" if sim != "passed" else None
            finally:
                path.write_text(original)
            results.append({"name": m.name, "path": m.path, "killed_by": killed_by, "tests": list(m.tests),
                            "seconds": round(secs, 1), "status": status})
            print(f"{'KILLED  ' if killed_by else 'SURVIVED'} {m.name:34s} {m.path:30s} ({secs:.0f} s)"
                  f"{' by ' + killed_by if killed_by else ''}", flush=True)
    killed = sum(r["killed_by"] is not None for r in results)
    print(f"\nmutation score: {killed}/{len(results)} killed ({100 * killed / len(results):.0f}%)")
    for r in results:
        if not r["killed_by"]:
            print(f"  survived: {r['name']} ({r['path']})")
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "total": len(results), "mutants": results}, indent=1))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
