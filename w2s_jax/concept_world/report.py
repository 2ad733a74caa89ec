"""The concept world's report over seeds: ``results.json``, ``results.md`` and three figures.

Pipeline runs (``main``, ``quality``) are pooled over seeds: for each subject (weak supervisor,
zero-shot, student of a method, gold ceiling) the per-item accuracies of every seed's test split
are pooled into one bootstrap interval, PGR is computed on the pooled items (paired by item within
each seed), and each seed's own mean is listed. Sweeps are averaged over seeds point by point and
their exponential rates and transitions are read off the averaged curves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from w2s_jax.concept_world.bayes import chernoff_rate, label_law
from w2s_jax.concept_world.sweeps import fitted_rate, theory_transition, transition
from w2s_jax.concept_world.world import World, WorldConfig
from w2s_jax.core.metrics import bootstrap_mean, pgr
from w2s_jax.pipeline import PLAN, format_stat
from w2s_jax.pipeline.artifacts import (
    JsonlLog,
    atomic_write_json,
    atomic_write_text,
    read_json,
)


def _items(run_dir: Path) -> tuple[dict, dict[str, dict[int, float]]]:
    plan = read_json(run_dir / PLAN)
    primary = plan["metrics"][0]
    items = {}
    for s in plan["subjects"]:
        path = run_dir / s["records"]
        records = JsonlLog(path).read() if path.is_file() else []
        items[s["name"]] = {r["index"]: r[primary] for r in records if r.get(primary) is not None}
    return plan, items


def pooled_run(dirs: Mapping[int, Path]) -> dict:
    """One pipeline part pooled over seeds (see the module docstring)."""
    seeds = sorted(dirs)
    plans, items = {}, {}
    for seed in seeds:
        plans[seed], items[seed] = _items(Path(dirs[seed]))
    plan = plans[seeds[0]]
    level, n_boot = plan["level"], plan["bootstrap"]
    subjects = plan["subjects"]
    ceiling = next((s["name"] for s in subjects if s["role"] == "ceiling"), None)
    rows = []
    for s in subjects:
        name = s["name"]
        pooled = [v for seed in seeds for v in items[seed].get(name, {}).values()]
        row = {k: s[k] for k in ("name", "role", "method", "supervisor")}
        row["accuracy"] = bootstrap_mean(pooled, n_bootstrap=n_boot, level=level)
        row["per_seed"] = {str(seed): (float(np.mean(list(items[seed][name].values())))
                                       if items[seed].get(name) else None) for seed in seeds}
        row["pgr"] = None
        weak_name = next((w["name"] for w in subjects if w["role"] == "weak" and w["supervisor"] == s["supervisor"]), None)
        if s["role"] == "method" and ceiling and weak_name:
            m, w, c = [], [], []
            for seed in seeds:
                a, b, d = items[seed].get(name, {}), items[seed].get(weak_name, {}), items[seed].get(ceiling, {})
                for i in sorted(set(a) & set(b) & set(d)):
                    m.append(a[i]), w.append(b[i]), c.append(d[i])
            if len(m) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    row["pgr"] = pgr(m, w, c, higher_is_better=True, level=level, n_bootstrap=n_boot,
                                     seed=0).as_dict()
        rows.append(row)
    return {"seeds": seeds, "level": level, "rows": rows}


def weak_train_accuracy(dirs: Mapping[int, Path], data: Mapping[int, Path]) -> dict[str, float]:
    """Each weak supervisor's accuracy on the training labels it gave (what the students are
    trained on), pooled over seeds; it can differ from its test accuracy, e.g. for a weak model
    fine-tuned on some of the training questions."""
    import json

    hits: dict[str, list[float]] = {}
    for seed, run_dir in dirs.items():
        gold = [json.loads(line)["answer"] for line in (Path(data[seed]) / "train.jsonl").read_text().splitlines()]
        for name, path in sorted(read_json(Path(run_dir) / PLAN).get("weak_labels", {}).items()):
            for record in JsonlLog(Path(run_dir) / path).read():
                words = record["answer"].split()
                hits.setdefault(name, []).append(float(bool(words) and words[0] == gold[record["index"]]))
    return {name: float(np.mean(values)) for name, values in sorted(hits.items())}


def quality_curve(pooled: dict, levels: Mapping[str, float]) -> tuple[list[dict], float | None]:
    """Per noisy labeller (by eta): weak and students' accuracy pooled over seeds, sorted by weak
    accuracy; and the gold ceiling (None without one)."""
    out = []
    for supervisor, eta in levels.items():
        point = {"eta": eta, "supervisor": supervisor}
        for row in pooled["rows"]:
            if row["supervisor"] != supervisor:
                continue
            key = "weak" if row["role"] == "weak" else row["method"]
            point[key] = row["accuracy"]["mean"]
        out.append(point)
    ceiling = next((r["accuracy"]["mean"] for r in pooled["rows"] if r["role"] == "ceiling"), None)
    return sorted(out, key=lambda p: p.get("weak", 0.0)), ceiling


def noisy_rate(world, setup: dict, eta: float) -> float:
    """rho* of the noisy labeller (eta) on a seed's training inputs (``setup.json``)."""
    inputs = setup["train_inputs"]
    law = label_law(world, None, inputs, target=setup["target"], eta=eta)
    return chernoff_rate(world, law, inputs, setup["target"])


def averaged_sweep(results: list[dict], x: str, keys: tuple[str, ...]) -> list[dict]:
    """Sweep rows averaged over seeds point by point (points present in every seed)."""
    rows = []
    for points in zip(*(r["rows"] for r in results)):
        row = {x: points[0][x], "seeds": len(points)}
        for key in keys:
            values = [p[key] for p in points if p.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        rows.append(row)
    return rows


INDEX = "concept_world.json"  # what `w2s report` needs to rebuild the report of a run directory


def report_meta(config) -> dict:
    """The experiment's settings the report reads (JSON-able)."""
    import dataclasses

    return {"name": config.name, "seeds": list(config.seeds), "world": dataclasses.asdict(config.world),
            "demos_eta": config.sweeps.demos_eta, "gamma_demos": config.sweeps.gamma_demos}


def rebuild_concept_report(run_dir: str | Path, *, figures: bool = True,
                           log: Callable[[str], None] = print) -> dict:
    """The report of a concept-world run directory rebuilt from its ``concept_world.json``."""
    index = read_json(Path(run_dir) / INDEX)
    runs = {part: {int(s): Path(d) for s, d in by_seed.items()} for part, by_seed in index["runs"].items()}
    data = {int(s): Path(d) for s, d in index["data"].items()}
    return write_concept_report(run_dir, index["meta"], runs, data=data, figures=figures, log=log)


def write_concept_report(run_dir: str | Path, meta: Mapping, runs: Mapping[str, Mapping[int, Path]], *,
                         data: Mapping[int, Path], figures: bool = True,
                         log: Callable[[str], None] = print) -> dict:
    """Writes the report of a concept-world run directory; returns the results.

    Arguments:
      run_dir: the run directory.
      meta: :func:`report_meta` of the experiment.
      runs: ``{"main" | "quality" | "sweep-demos" | "sweep-gamma": {seed: directory}}``: the
        pipeline run directories and the sweep stage directories.
      data: each seed's data stage directory (``setup.json``, ``train.jsonl``).
    """
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / INDEX, {"meta": meta, "data": {str(s): str(d) for s, d in data.items()},
                                        "runs": {part: {str(s): str(d) for s, d in by_seed.items()}
                                                 for part, by_seed in runs.items()}})
    world_config = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["world"].items()})
    results: dict = {"experiment": meta["name"], "kind": "concept-world", "seeds": list(meta["seeds"]),
                     "world": world_config, "setup": {str(s): read_json(Path(d) / "setup.json") for s, d in data.items()}}
    if "main" in runs:
        results["main"] = pooled_run(runs["main"])
        results["main"]["weak_train_accuracy"] = weak_train_accuracy(runs["main"], data)
    if "quality" in runs:
        pooled = pooled_run(runs["quality"])
        supervisors = {r["supervisor"]: float(r["supervisor"].split("noisy-")[1].removesuffix(".jsonl"))
                       for r in pooled["rows"] if r["role"] == "weak"}
        curve, ceiling = quality_curve(pooled, supervisors)
        for point in curve:  # the theory's rate for this labeller, averaged over seeds
            point["rho_star"] = float(np.mean([noisy_rate(World(world_config), setup, point["eta"])
                                               for setup in results["setup"].values()]))
        results["quality"] = {"pooled": pooled, "curve": curve, "ceiling": ceiling}
    if "sweep-demos" in runs:
        per_seed = [read_json(Path(d) / "result.json") for _, d in sorted(runs["sweep-demos"].items())]
        rows = averaged_sweep(per_seed, "n", ("transformer", "bayes"))
        ns = [r["n"] for r in rows]
        results["demos"] = {
            "eta": meta["demos_eta"], "rows": rows,
            "rate_transformer": fitted_rate(ns, [r["transformer"] for r in rows]),
            "rate_bayes": fitted_rate(ns, [r["bayes"] for r in rows]),
            "rho_star": float(np.mean([r["rho_star"] for r in per_seed])),
            "per_seed": per_seed}
    if "sweep-gamma" in runs:
        per_seed = [read_json(Path(d) / "result.json") for _, d in sorted(runs["sweep-gamma"].items())]
        rows = averaged_sweep(per_seed, "gamma", ("weak", "transformer", "transformer_rival", "bayes",
                                                  "bayes_rival", "rho_star"))
        gammas = [r["gamma"] for r in rows]
        results["gamma"] = {
            "demos": meta["gamma_demos"], "rows": rows,
            "transition_transformer": transition(gammas, [r["transformer"] for r in rows]),
            "transition_bayes": transition(gammas, [r["bayes"] for r in rows]),
            "transition_theory": theory_transition(rows), "per_seed": per_seed}
    atomic_write_json(run_dir / "results.json", results)
    text = results_markdown(results)
    atomic_write_text(run_dir / "results.md", text)
    if figures:
        from w2s_jax.concept_world.figures import write_figures

        write_figures(results, run_dir / "figures")
    log(text)
    return results


def _pgr(p) -> str:
    if p is None:
        return ""
    return "n/a" if not p["reliable"] else f"{p['value']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}]"


def _num(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def pooled_table(pooled: dict) -> list[str]:
    level = int(round(100 * pooled["level"]))
    seeds = pooled["seeds"]
    head = ["subject", f"accuracy [{level}% CI], pooled", *(f"seed {s}" for s in seeds), "PGR", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in pooled["rows"]:
        cells = [row["name"].replace(".jsonl", ""), format_stat(row["accuracy"]),
                 *(_num(row["per_seed"][str(s)]) for s in seeds), _pgr(row["pgr"]), str(row["accuracy"]["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: dict) -> str:
    """The report as Markdown."""
    lines = [f"# {results['experiment']}: concept world, seeds {results['seeds']}", ""]
    if "main" in results:
        lines += ["## Main run (test accuracy pooled over seeds; PGR paired by item)", "",
                  *pooled_table(results["main"]), "",
                  "Weak supervisors' accuracy on the training labels they gave (pooled): " + ", ".join(
                      f"{name.replace('.jsonl', '')} {value:.3f}"
                      for name, value in results["main"].get("weak_train_accuracy", {}).items()) + ".", ""]
    if "quality" in results:
        q = results["quality"]
        lines += ["## Quality sweep: students against noisy labellers", "",
                  "| eta | weak | naive | icl-refine | rho* |", "|---|---|---|---|---|"]
        lines += [f"| {p['eta']:.2f} | {_num(p.get('weak'))} | {_num(p.get('naive'))} | "
                  f"{_num(p.get('icl-refine'))} | {_num(p.get('rho_star'))} |" for p in q["curve"]]
        lines += ["", f"Gold ceiling: {_num(q['ceiling'])}.", ""]
    if "demos" in results:
        d = results["demos"]
        lines += [f"## Refined-label accuracy against demonstrations (noisy labeller, eta = {d['eta']})", "",
                  "| n | transformer | Bayes-optimal |", "|---|---|---|"]
        lines += [f"| {r['n']} | {_num(r['transformer'])} | {_num(r['bayes'])} |" for r in d["rows"]]
        lines += ["", (f"Fitted rates of 1 - accuracy ~ exp(-rho n): transformer {_num(d['rate_transformer'])}, "
                      f"Bayes-optimal {_num(d['rate_bayes'])}; Chernoff rate rho* {_num(d['rho_star'])}."), ""]
    if "gamma" in results:
        g = results["gamma"]
        lines += [f"## Refinement against gamma (misaligned labeller, {g['demos']} demonstrations)", "",
                  "| gamma | weak | transformer | transformer = j | Bayes | Bayes = j | rho* |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['gamma']:.2f} | {_num(r['weak'])} | {_num(r['transformer'])} | "
                  f"{_num(r['transformer_rival'])} | {_num(r['bayes'])} | {_num(r['bayes_rival'])} | "
                  f"{_num(r['rho_star'])} |" for r in g["rows"]]
        lines += ["", (f"Transition (accuracy below the midpoint of its ends): transformer "
                      f"{_num(g['transition_transformer'], 2)}, Bayes-optimal {_num(g['transition_bayes'], 2)}; "
                      f"rho* first 0 at gamma = {_num(g['transition_theory'], 2)} (theory: 1/2)."), ""]
    return "\n".join(lines)
