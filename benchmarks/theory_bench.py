"""Benchmark: the JAX Monte Carlo engine (``simulate_fits``) vs a straightforward numpy loop.

Same setting (the default problem of docs/theory.md §5: d=20, K=5, sigma=0.5, biased delta=1) and
the same computation per trial: sample X, label it gold / weak / refined (refined: ``n_icl`` explicit
weak demonstrations per example, posterior over concepts, mean readout), fit the ridge path (one
``np.linalg.solve`` per lambda) and the GD path (closed form in A's eigenbasis), record excess risks.
The numpy loop runs fewer trials (``--numpy-trials``) and both are reported per trial. The two
must agree on every mean risk within Monte Carlo error; the largest |z| is printed.

    python benchmarks/theory_bench.py --trials 10000 --n 100
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see theory/simulate.py: avoids a LAPACK deadlock

import jax
import jax.numpy as jnp
import numpy as np

from theory.model import Biased, ConceptModel, make_problem
from theory.monte_carlo import FitSettings, simulate_fits
from w2s_jax.compilation_cache import enable_compilation_cache


def _numpy_trial(rng, p: dict, s: FitSettings, n: int) -> dict:
    d = p["beta_P"].size
    B, lams, steps = p["B"], np.asarray(s.lams), np.asarray(s.steps, dtype=float)
    X = rng.standard_normal((n, d)) * p["scales"]
    y_gold = X @ p["beta_star"] + p["sigma"] * rng.standard_normal(n)
    y_weak = X @ p["beta_weak"] + p["sigma_weak"] * rng.standard_normal(n)
    # Refined: n_icl explicit demonstrations (x_j, y'_j) per example, posterior, mean readout.
    Xd = rng.standard_normal((n, s.n_icl, d)) * p["scales"]
    yd = Xd @ p["beta_weak"] + p["sigma_weak"] * rng.standard_normal((n, s.n_icl))
    loglik = -0.5 * np.sum((yd[..., None] - Xd @ B.T) ** 2, axis=1) / p["sigma"] ** 2
    logits = np.log(p["alpha"]) + loglik
    pi = np.exp(logits - logits.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    y_ref = np.sum(pi * (X @ B.T), axis=-1)
    out, eye = {}, np.eye(d)
    for name, y in (("gold", y_gold), ("weak", y_weak), ("refined", y_ref)):
        A, c = X.T @ X / n, X.T @ y / n
        b_ridge = np.stack([np.linalg.solve(A + lam * eye, c + lam * p["beta_P"]) for lam in lams])
        a, V = np.linalg.eigh(A)
        w0, ct = V.T @ p["beta_P"], V.T @ c
        decay = (1.0 - s.lr * a[None, :]) ** steps[:, None]
        b_gd = (decay * w0 + (1 - decay) * (ct / a)) @ V.T
        for path, b in (("ridge", b_ridge), ("gd", b_gd)):
            e = b - p["beta_star"]
            out[f"{name}/{path}"] = np.einsum("ld,d,ld->l", e, p["scales"] ** 2, e)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10000, help="JAX Monte Carlo trials")
    ap.add_argument("--numpy-trials", type=int, default=500, help="trials of the numpy baseline")
    ap.add_argument("--n", type=int, default=100, help="training-set size")
    ap.add_argument("--n-icl", type=int, default=8, help="demonstrations per refined label")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # A rerun loads the compiled programs from disk; the reported compile time is then the load time
    # (W2S_COMPILATION_CACHE=off measures a true compile).
    enable_compilation_cache()

    with jax.enable_x64(True):
        prob = make_problem(ConceptModel.paper(), Biased(delta=1.0))
        s = FitSettings(ns=(args.n,), trials=args.trials, n_icl=args.n_icl)
        key = jax.random.key(args.seed)
        t0 = time.perf_counter()
        compiled = simulate_fits.lower(prob, s, key=key).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(prob, key=key))  # warm-up run
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(prob, key=jax.random.fold_in(key, 1)))
        jax_s = time.perf_counter() - t0
        jax_risk = {k: np.asarray(v)[:, 0] for k, v in out.items()}  # drop the single-n axis

        # The floor: the standard normals one trial needs (X, gold and weak label noise, the
        # demonstration residuals), drawn alone, with the same generator, dtype and batch.
        K, d = prob.B_KxD.shape
        normals = args.n * d + 2 * args.n + args.n * args.n_icl * K
        draw = jax.jit(lambda k: jnp.sum(jax.random.normal(k, (args.trials, normals), jnp.float64), axis=1))
        jax.block_until_ready(draw(key))
        t0 = time.perf_counter()
        jax.block_until_ready(draw(jax.random.fold_in(key, 2)))
        rng_s = time.perf_counter() - t0

    p = {k: np.asarray(getattr(prob, f)) for k, f in [("B", "B_KxD"), ("alpha", "alpha_K"), ("beta_star", "beta_star"),
                                                     ("beta_P", "beta_P"), ("beta_weak", "beta_weak")]}
    p.update(sigma=float(prob.sigma), sigma_weak=float(prob.sigma_weak), scales=np.sqrt(np.diag(np.asarray(prob.Sigma_DxD))))
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    trials = [_numpy_trial(rng, p, s, args.n) for _ in range(args.numpy_trials)]
    np_s = time.perf_counter() - t0
    np_risk = {k: np.stack([t[k] for t in trials]) for k in trials[0]}

    z_max, worst = 0.0, ""
    for k in jax_risk:
        a, b = jax_risk[k], np_risk[k]
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        z = np.abs(a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)  # t = 0 risks are constant: se = 0
        if z.max() > z_max:
            z_max, worst = float(z.max()), k
    jax_rate, np_rate = args.trials / jax_s, args.numpy_trials / np_s
    print(f"setting: d=20 K=5 sigma=0.5 biased delta=1, n={args.n}, n_icl={args.n_icl}, "
          f"{len(s.lams)} lambdas, {len(s.steps)} GD step counts, float64, device={jax.devices()[0].platform}")
    print(f"jax   : compile {compile_s:.2f} s (excluded; loaded from the compilation cache on a rerun); {args.trials} trials in {jax_s:.3f} s = {jax_rate:,.0f} trials/s")
    print(f"numpy : {args.numpy_trials} trials in {np_s:.3f} s = {np_rate:,.0f} trials/s")
    print(f"speed-up (jax / numpy, per trial): {jax_rate / np_rate:.1f}x")
    rng_rate = args.trials / rng_s
    print(f"floor : drawing the {normals:,} standard normals of a trial alone runs at {rng_rate:,.0f} trials/s, "
          f"so no engine drawing them this way can exceed {rng_rate / np_rate:.1f}x here")
    n_cmp = sum(v.shape[1] for v in jax_risk.values())
    print(f"agreement: max |z| over {n_cmp} mean risks = {z_max:.2f} (at {worst}); "
          f"{'OK' if z_max <= 4.5 else 'MISMATCH'} (<= 4.5 expected for {n_cmp} comparisons)")
    return {"jax_trials_per_s": jax_rate, "numpy_trials_per_s": np_rate, "compile_s": compile_s, "z_max": z_max,
            "rng_floor_trials_per_s": rng_rate}


if __name__ == "__main__":
    main()
