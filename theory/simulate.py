"""Check every claim of the latent-concept W2S theory against simulation (one process, one device).

Usage (from the repository root)::

    python theory/simulate.py                       # all experiments, default setting (~1 min, 2 cores)
    python theory/simulate.py --quick               # smaller grids, for a smoke run
    python theory/simulate.py --experiment refine_decay --trials 4000 --seed 1 --out results/x
    python theory/simulate.py --list
    python theory/simulate.py --set model.d=50 --set model.K=10 --set supervisor=noisy --set supervisor.eta=0.5
    python theory/simulate.py --config my_setting.toml --quick      # the same, from a TOML file
    python theory/simulate.py --trials 100000 --resume   # after a kill: finished experiments are reused

Writes ``<out>/<experiment>.json``, ``<out>/<experiment>.png`` / ``.pdf`` and ``<out>/summary.md``,
and prints one table per experiment with its checks (PASS, FAIL, or N/A with the reason where a claim
does not apply to the setting). Exits 1 if any check fails. Deterministic
for a given ``--seed``: each experiment's key is ``fold_in(key(seed), crc32(name))``, so it does not
depend on which other experiments run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

# XLA:CPU may run two LAPACK calls (eigh) of one program at once; a multi-threaded OpenBLAS then
# deadlocks (seen with jaxlib 0.10.2 + scipy-openblas 0.3.30). The matrices here are tiny (d x d),
# so single-threaded BLAS costs nothing. Must be set before numpy/jax load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from theory import report  # noqa: E402
from theory.claims import status  # noqa: E402
from theory.experiments import EXPERIMENTS, get  # noqa: E402
from theory.setting import Setting, SettingError, parse_setting  # noqa: E402
from w2s_jax.compilation_cache import enable_compilation_cache  # noqa: E402

SEED_RANGE = (-(2**63), 2**63 - 1)  # jax.random.key takes a signed 64-bit seed

__all__ = ["main", "parse_args", "run_experiment"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python theory/simulate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", action="append", metavar="NAME", help="run only NAME (repeatable); see --list")
    ap.add_argument("--quick", action="store_true", help="smaller grids and 1/4 of the trials")
    ap.add_argument("--trials", type=int, default=None, help="Monte Carlo trials (default: per experiment)")
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    ap.add_argument("--out", type=Path, default=Path("results/theory"), help="output directory")
    ap.add_argument("--list", action="store_true", help="list the experiments and exit")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG/PDF figures")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                    help="a setting, e.g. model.d=50, model.alpha=[0.4,0.3,0.3], supervisor=noisy, supervisor.eta=0.5 "
                         "(repeatable; names as in theory/model.py)")
    ap.add_argument("--config", type=Path, default=None, metavar="FILE.toml",
                    help="a TOML file with [model] and [supervisor] tables (read before --set)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse <out>/<experiment>.json computed with the same settings (after a killed run)")
    args = ap.parse_args(argv)
    if args.trials is not None and args.trials < 2:
        ap.error(f"--trials must be >= 2, got {args.trials}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        ap.error(f"--seed must be an integer in [-2**63, 2**63 - 1] (a signed 64-bit seed), got {args.seed}")
    for name in args.experiment or ():
        if name not in EXPERIMENTS:
            ap.error(f"unknown experiment {name!r}; choose from: {', '.join(EXPERIMENTS)}")
    if args.experiment:
        args.experiment = list(dict.fromkeys(args.experiment))  # each once, in the order first given
    try:
        args.setting = parse_setting(args.overrides, args.config)
    except SettingError as error:
        ap.error(str(error))
    if not args.list:
        problem = _unwritable(args.out)
        if problem:
            ap.error(f"--out {args.out}: {problem}; pass a directory you can write to")
    return args


def _unwritable(out: Path) -> str | None:
    """Why results cannot be written under ``out`` (None when they can), found before any compute.

    Creates ``out`` (as the run would) and a scratch file in it: permission bits alone do not tell
    (root ignores them; a read-only file system does not show in them).
    """
    if out.exists() and not out.is_dir():
        return "exists and is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        return f"cannot write there ({error.strerror or error})"
    return None


def _sweep_and_trials(name: str, quick: bool, trials: int | None, setting: Setting):
    exp = get(name)
    sweep = (exp.quick if quick else exp.sweep).for_setting(setting)
    return sweep, trials or (max(50, exp.trials // 4) if quick else exp.trials)


def load_finished(out: Path, name: str, *, seed: int, quick: bool, trials: int | None,
                  setting: Setting = Setting()) -> dict | None:
    """The result in ``out/<name>.json`` if it was computed with exactly these settings, else None.

    A result is a deterministic function of (sweep, trials, seed), so reusing it is exact: this is
    what ``--resume`` does after a killed or partial run.
    """
    path = out / f"{name}.json"
    if not path.exists():
        return None
    try:
        r = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: recompute (writes are atomic, so this is a foreign file)
    sweep, n_trials = _sweep_and_trials(name, quick, trials, setting)
    same = (r.get("sweep"), r.get("trials"), r.get("seed"), r.get("quick"), r.get("setting")) == (
        repr(sweep), n_trials, seed, quick, report.to_jsonable(setting.as_dict()))
    return r if same else None


def run_experiment(name: str, *, seed: int, quick: bool, trials: int | None, setting: Setting = Setting()) -> dict:
    """Run one experiment in float64 in ``setting`` and return its result (table, series, checks, metadata)."""
    exp = get(name)
    sweep, n_trials = _sweep_and_trials(name, quick, trials, setting)
    key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))
    start = time.perf_counter()
    with jax.enable_x64(True):
        result = sweep.run(key=key, trials=n_trials)
    result.update(name=name, title=exp.title, trials=n_trials, seed=seed, quick=quick,
                  seconds=round(time.perf_counter() - start, 2), sweep=repr(sweep), setting=setting.as_dict())
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, exp in EXPERIMENTS.items():
            print(f"{name:14s} {exp.title}")
        return 0
    # Compiled programs are the same from run to run: a warm run loads them from disk.
    enable_compilation_cache()
    if not args.no_figures:
        from theory import figures  # matplotlib costs ~0.4 s to import: only when drawing
    names = args.experiment or list(EXPERIMENTS)
    results, t0 = {}, time.perf_counter()
    for name in tqdm(names, desc="experiments", unit="exp", disable=None):
        r = (load_finished(args.out, name, seed=args.seed, quick=args.quick, trials=args.trials, setting=args.setting)
             if args.resume else None)
        reused = r is not None
        if not reused:
            r = run_experiment(name, seed=args.seed, quick=args.quick, trials=args.trials, setting=args.setting)
            report.write_json_atomic(args.out / f"{name}.json", r)
        results[name] = r
        if not args.no_figures and not (reused and (args.out / f"{name}.png").exists()):
            report.save_figure(getattr(figures, get(name).figure)(r["series"]), args.out / name)
        tqdm.write(f"\n== {name}: {r['title']} ({r['trials']} trials, {r['seconds']:.1f} s"
                   f"{', reused from ' + str(args.out / (name + '.json')) if reused else ''})")
        tqdm.write(report.format_table(r["table"]))
        for c in r["checks"]:
            tqdm.write(f"  [{status(c)}] {c['claim']} ({c['detail']})")
    checks = [(n, c) for n, r in results.items() for c in r["checks"]]
    failed = [f"{n}: {c['claim']}" for n, c in checks if c["passed"] is False]
    n_na = sum(c["passed"] is None for _, c in checks)
    flags = "".join(f" --set {o}" for o in args.overrides)
    flags = (f" --config {args.config}" if args.config else "") + flags
    header = (f"# Theory checks\n\nCommand: `python theory/simulate.py{' --quick' if args.quick else ''}"
              f" --seed {args.seed}{flags}`; {len(results)} experiments, {time.perf_counter() - t0:.1f} s; "
              f"{len(checks) - len(failed) - n_na} checks passed, {len(failed)} failed, {n_na} not applicable.\n\n"
              f"Setting: {args.setting.describe()}.")
    report.write_summary(args.out / "summary.md", results, header)
    print(f"\nSetting: {args.setting.describe()}")
    print(f"Wrote {args.out}/ ({len(results)} experiments). {len(failed)} failed checks, {n_na} not applicable.")
    for f in failed:
        print(f"  FAILED {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
