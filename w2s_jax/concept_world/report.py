"""The concept world's report over (world, seed) units: ``results.json``, ``results.md``, figures.

Every statistic is computed from per-unit values and carries a two-stage (worlds, then seeds)
bootstrap interval (:mod:`.clusters`). For the pipeline parts: each subject's test accuracy; each
weak supervisor's accuracy on the training labels it gave (what the students fit) beside its
test-split accuracy; how often an answer is the rival concept j's output (the *j-rate*, over the
inputs where j and k* differ); PGR against the weak supervisor's training-label accuracy. For the
sweeps: each point's mean over units, the fitted decay rates and the gamma transition, each with
its interval. The pre-registered predictions (:mod:`.predictions`) are checked at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from w2s_jax.concept_world.bayes import chernoff_rate, label_law
from w2s_jax.concept_world.clusters import cluster_interval, gap_ratio, mean
from w2s_jax.concept_world.sweeps import fitted_rate, transition
from w2s_jax.concept_world.world import World, WorldConfig
from w2s_jax.pipeline.artifacts import JsonlLog, atomic_write_json, atomic_write_text, read_json
from w2s_jax.pipeline import PLAN

INDEX = "concept_world.json"  # what `w2s report` needs to rebuild the report of a run directory


def unit_of(key: str) -> tuple[int, int]:
    """``"w/s"`` -> ``(w, s)``."""
    w, s = key.split("/")
    return int(w), int(s)


class Units:
    """What the report knows of each (world, seed) unit: its world and its ``setup.json``."""

    def __init__(self, world_config: WorldConfig, data: Mapping[str, Path]):
        import dataclasses

        self.setup = {unit_of(k): read_json(Path(d) / "setup.json") for k, d in data.items()}
        self.data = {unit_of(k): Path(d) for k, d in data.items()}
        self.worlds = {w: World(dataclasses.replace(world_config, seed=w)) for w, _ in self.setup}

    def world(self, unit) -> World:
        return self.worlds[unit[0]]

    def outputs(self, unit, split: str, answers: Mapping[int, str]) -> tuple[list[int], list[int], list]:
        """Per row of ``split`` answered in ``answers``: k*'s output, j's output, the answer's output."""
        world, setup = self.world(unit), self.setup[unit]
        inputs = setup[f"{split}_inputs"]
        rows = sorted(i for i in answers if i < len(inputs))
        words = [answers[i].split()[0] if answers[i].split() else "" for i in rows]
        return ([int(world.tables_KxX[setup["target"], inputs[i]]) for i in rows],
                [int(world.tables_KxX[setup["rival"], inputs[i]]) for i in rows],
                [world.parse_output(word) for word in words])

    def rates(self, unit, split: str, answers: Mapping[int, str]) -> tuple[float, float]:
        """(accuracy, j-rate) of ``answers``: the j-rate is over the rows where f_j != f_k*."""
        gold, rival, got = self.outputs(unit, split, answers)
        acc = float(np.mean([g == a for g, a in zip(gold, got)])) if gold else math.nan
        differ = [(r, a) for g, r, a in zip(gold, rival, got) if g != r]
        return acc, (float(np.mean([r == a for r, a in differ])) if differ else math.nan)


def _read(path) -> list[dict]:
    return JsonlLog(Path(path)).read() if Path(path).is_file() else []


def _interval(values: Mapping, statistic=mean, **kw) -> dict:
    values = {u: v for u, v in values.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return cluster_interval(values, statistic, **kw)


def pipeline_part(dirs: Mapping[str, Path], units: Units, *, n_bootstrap: int, level: float) -> dict:
    """One pipeline part (``main`` or ``quality``) over units."""
    kw = {"n_bootstrap": n_bootstrap, "level": level}
    plans = {unit_of(k): read_json(Path(d) / PLAN) for k, d in dirs.items()}
    first = next(iter(plans.values()))
    subjects = first["subjects"]
    ceiling = next((s["name"] for s in subjects if s["role"] == "ceiling"), None)
    test_acc, test_rival, train_acc, train_rival, fit_acc, fit_rival = {}, {}, {}, {}, {}, {}
    for unit, plan in plans.items():
        for name, path in plan.get("labels_fit", {}).items():  # the labels each method's student fit
            answers = {r["index"]: r.get("completion") or "" for r in _read(path)}
            fit_acc.setdefault(name, {})[unit], fit_rival.setdefault(name, {})[unit] = \
                units.rates(unit, "train", answers)
        for s in subjects:
            answers = {r["index"]: r["prediction"] for r in _read(plan["predictions"][s["name"]])}
            test_acc.setdefault(s["name"], {})[unit], test_rival.setdefault(s["name"], {})[unit] = \
                units.rates(unit, "test", answers)
        for supervisor, path in plan.get("weak_labels", {}).items():
            answers = {r["index"]: r["answer"] for r in _read(path)}
            train_acc.setdefault(supervisor, {})[unit], train_rival.setdefault(supervisor, {})[unit] = \
                units.rates(unit, "train", answers)
    rows = []
    for s in subjects:
        name, supervisor = s["name"], s["supervisor"]
        row = {k: s[k] for k in ("name", "role", "method", "supervisor")}
        row["accuracy"] = _interval(test_acc[name], **kw)
        row["rival_rate"] = _interval(test_rival[name], **kw)
        row["per_unit"] = {f"{w}/{sd}": v for (w, sd), v in sorted(test_acc[name].items())}
        if s["role"] == "weak" and supervisor in train_acc:
            row["train_labels"] = _interval(train_acc[supervisor], **kw)
            row["train_labels_rival_rate"] = _interval(train_rival[supervisor], **kw)
        if name in fit_acc:  # a method's own training labels (refined, bootstrapped, ...)
            row["train_labels"] = _interval(fit_acc[name], **kw)
            row["train_labels_rival_rate"] = _interval(fit_rival[name], **kw)
            row["train_labels_per_unit"] = {f"{w}/{sd}": [fit_acc[name][(w, sd)], fit_rival[name][(w, sd)]]
                                            for (w, sd) in sorted(fit_acc[name])}
        row["pgr"] = None
        if s["role"] == "method" and ceiling and supervisor in train_acc:
            triples = {u: (test_acc[name][u], train_acc[supervisor][u], test_acc[ceiling][u])
                       for u in test_acc[name] if u in train_acc[supervisor] and u in test_acc[ceiling]}
            row["pgr"] = cluster_interval(triples, gap_ratio, **kw)
        rows.append(row)
    return {"units": len(plans), "level": level, "rows": rows}


def _per_unit(dirs: Mapping[str, Path]) -> dict:
    return {unit_of(k): read_json(Path(d) / "result.json") for k, d in sorted(dirs.items())}


def _curve(per_unit: Mapping, x: str, rows_of, keys, **kw) -> list[dict]:
    """Sweep points over units: each key's mean with its interval."""
    first = rows_of(next(iter(per_unit.values())))
    out = []
    for i, point in enumerate(first):
        row = {x: point[x]}
        for key in keys:
            row[key] = _interval({u: rows_of(r)[i].get(key) for u, r in per_unit.items()}, **kw)
        out.append(row)
    return out


def _rate_stat(ns, key, rows_of):
    def statistic(results):
        curve = [float(np.mean([rows_of(r)[i][key] for r in results])) for i in range(len(ns))]
        return fitted_rate(ns, curve)
    return statistic


def demos_part(dirs, *, n_bootstrap, level) -> dict:
    kw = {"n_bootstrap": n_bootstrap, "level": level}
    per_unit = _per_unit(dirs)
    rows_of = lambda r: r["rows"]  # noqa: E731
    any_result = next(iter(per_unit.values()))
    ns = [r["n"] for r in any_result["rows"]]
    return {"eta": any_result["eta"], "draw": any_result.get("draw"),
            "rows": _curve(per_unit, "n", rows_of, ("transformer", "bayes"), **kw),
            "rate_transformer": cluster_interval(per_unit, _rate_stat(ns, "transformer", rows_of), **kw),
            "rate_bayes": cluster_interval(per_unit, _rate_stat(ns, "bayes", rows_of), **kw),
            "rho_star": _interval({u: r["rho_star"] for u, r in per_unit.items()}, **kw)}


def gamma_part(dirs, *, n_bootstrap, level) -> dict:
    kw = {"n_bootstrap": n_bootstrap, "level": level}
    per_unit = _per_unit(dirs)
    rows_of = lambda r: r["rows"]  # noqa: E731
    any_result = next(iter(per_unit.values()))
    gammas = [r["gamma"] for r in any_result["rows"]]

    def crossing(key):
        def statistic(results):
            curve = [float(np.mean([r["rows"][i][key] for r in results])) for i in range(len(gammas))]
            return transition(gammas, curve)
        return statistic

    return {"demos": any_result["demos"], "draw": any_result.get("draw"),
            "rows": _curve(per_unit, "gamma", rows_of, ("weak", "transformer", "transformer_rival", "bayes",
                                                         "bayes_rival", "rho_star"), **kw),
            "transition_transformer": cluster_interval(per_unit, crossing("transformer"), **kw),
            "transition_bayes": cluster_interval(per_unit, crossing("bayes"), **kw)}


def gamma_rates_part(dirs, *, n_bootstrap, level) -> dict:
    kw = {"n_bootstrap": n_bootstrap, "level": level}
    per_unit = _per_unit(dirs)
    first = next(iter(per_unit.values()))
    out = []
    for gi, g in enumerate(first["gammas"]):
        rows_of = lambda r, gi=gi: r["gammas"][gi]["rows"]  # noqa: E731
        ns = [r["n"] for r in g["rows"]]
        out.append({"gamma": g["gamma"],
                    "rows": _curve(per_unit, "n", rows_of, ("transformer", "bayes", "transformer_rival"), **kw),
                    "rate_transformer": cluster_interval(per_unit, _rate_stat(ns, "transformer", rows_of), **kw),
                    "rate_bayes": cluster_interval(per_unit, _rate_stat(ns, "bayes", rows_of), **kw),
                    "rho_star": _interval({u: r["gammas"][gi]["rho_star"] for u, r in per_unit.items()}, **kw)})
    return {"draw": first.get("draw"), "gammas": out}


def curves_part(curves: Mapping[str, Path], *, n_bootstrap, level) -> dict:
    """In-context curves on held-out documents, per model over worlds."""
    kw = {"n_bootstrap": n_bootstrap, "level": level}
    by_model: dict = {}
    for key, directory in curves.items():
        w, who = key.split("/", 1)
        by_model.setdefault(who, {})[(int(w), 0)] = read_json(Path(directory) / "result.json")
    return {who: {"rows": _curve(per_world, "n", lambda r: r["rows"], ("model", "bayes"), **kw),
                  "gap": _interval({u: r["gap"] for u, r in per_world.items()}, **kw)}
            for who, per_world in sorted(by_model.items())}


def size_point(m: int, part: dict) -> dict:
    """One training-set size: the weak labels', each student's and the gold student's accuracy."""
    point: dict = {"m": m}
    for row in part["rows"]:
        key = {"weak": "weak", "ceiling": "gold"}.get(row["role"], row["method"])
        point[key] = {"accuracy": row["accuracy"], "per_unit": row["per_unit"]}
        if "train_labels" in row:
            point[key]["train_labels"] = row["train_labels"]
    return point


def noisy_rate(world, setup: dict, eta: float) -> float:
    """rho* of the noisy labeller (eta) on a seed's training inputs (``setup.json``)."""
    inputs = setup["train_inputs"]
    law = label_law(world, None, inputs, target=setup["target"], eta=eta)
    return chernoff_rate(world, law, inputs, setup["target"])


def report_meta(config, gate: Mapping | None = None, chunks: Mapping | None = None) -> dict:
    """The experiment's settings the report reads (JSON-able)."""
    import dataclasses

    return {"name": config.name, "worlds": list(config.worlds), "seeds": list(config.seeds),
            "world": dataclasses.asdict(config.world), "gate_config": dataclasses.asdict(config.gate),
            "gate": {str(w): records for w, records in (gate or {}).items()},
            "chunks": {str(w): c for w, c in (chunks or {}).items()},
            "supervisors": dataclasses.asdict(config.supervisors), "split": dataclasses.asdict(config.split),
            "size_eta": config.sweeps.size_eta,
            "bootstrap": int(config.pipeline.get("report", {}).get("bootstrap", 1000)),
            "level": float(config.pipeline.get("report", {}).get("level", 0.95))}


def rebuild_concept_report(run_dir: str | Path, *, figures: bool = True,
                           log: Callable[[str], None] = print) -> dict:
    """The report of a concept-world run directory rebuilt from its ``concept_world.json``."""
    index = read_json(Path(run_dir) / INDEX)
    return write_concept_report(run_dir, index["meta"], index["runs"], data=index["data"],
                                curves=index.get("curves", {}), figures=figures, log=log)


def write_concept_report(run_dir: str | Path, meta: Mapping, runs: Mapping[str, Mapping[str, Path]], *,
                         data: Mapping[str, Path], curves: Mapping[str, Path] | None = None,
                         figures: bool = True, log: Callable[[str], None] = print) -> dict:
    """Writes the report of a concept-world run directory; returns the results.

    Arguments:
      run_dir: the run directory.
      meta: :func:`report_meta` of the experiment.
      runs: ``{"main" | "quality" | "sweep-<kind>": {"w/s": directory}}``: the pipeline run
        directories and the sweep stage directories of each (world, seed) unit.
      data: each unit's data stage directory (``setup.json``).
      curves: ``{"w/<model>": directory}``: the in-context curve stages.
    """
    from w2s_jax.concept_world.predictions import check_predictions

    run_dir = Path(run_dir)
    curves = dict(curves or {})
    atomic_write_json(run_dir / INDEX, {
        "meta": meta, "data": {k: str(d) for k, d in data.items()}, "curves": {k: str(d) for k, d in curves.items()},
        "runs": {part: {k: str(d) for k, d in by_unit.items()} for part, by_unit in runs.items()}})
    world_config = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["world"].items()})
    units = Units(world_config, data)
    kw = {"n_bootstrap": meta.get("bootstrap", 1000), "level": meta.get("level", 0.95)}
    results: dict = {"experiment": meta["name"], "kind": "concept-world", "worlds": list(meta["worlds"]),
                     "seeds": list(meta["seeds"]), "units": len(units.setup), "world": world_config,
                     "gate": {"config": meta.get("gate_config"), "worlds": meta.get("gate", {}),
                              "chunks": meta.get("chunks", {})},
                     "setup": {f"{w}/{s}": v for (w, s), v in sorted(units.setup.items())}}
    if curves:
        results["curves"] = curves_part(curves, **kw)
    for part in ("main", "quality"):
        if part in runs:
            results[part] = pipeline_part(runs[part], units, **kw)
    if "quality" in results:
        for row in results["quality"]["rows"]:
            if row["role"] == "weak":
                eta = float(row["supervisor"].split("noisy-")[1].removesuffix(".jsonl"))
                row["eta"] = eta
                row["rho_star"] = float(np.mean([noisy_rate(units.world(u), units.setup[u], eta)
                                                 for u in units.setup]))
    sizes = sorted(int(part.split("-")[1]) for part in runs if part.startswith("size-"))
    if sizes:
        results["sizes"] = {"eta": meta.get("size_eta"), "rows": [size_point(m, pipeline_part(runs[f"size-{m}"], units, **kw))
                                                                  for m in sizes]}
    for part, build in (("demos", demos_part), ("gamma", gamma_part), ("gamma-rates", gamma_rates_part)):
        if f"sweep-{part}" in runs:
            results[part] = build(runs[f"sweep-{part}"], **kw)
    results["predictions"] = check_predictions(results, meta)
    atomic_write_json(run_dir / "results.json", results)
    text = results_markdown(results)
    atomic_write_text(run_dir / "results.md", text)
    if figures:
        from w2s_jax.concept_world.figures import write_figures

        write_figures(results, run_dir / "figures")
    log(text)
    return results


def fmt(stat: Mapping | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of an interval record (``n/a`` when undefined)."""
    if stat is None or stat.get("value") is None or math.isnan(stat["value"]):
        return "n/a"
    if math.isnan(stat["lo"]):
        return f"{stat['value']:.{digits}f}"
    return f"{stat['value']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}]"


def part_table(part: dict) -> list[str]:
    head = ["subject", "test accuracy", "j-rate (test)", "accuracy of the labels fit", "j-rate of the labels fit", "PGR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in part["rows"]:
        cells = [row["name"].replace(".jsonl", ""), fmt(row["accuracy"]), fmt(row["rival_rate"]),
                 fmt(row.get("train_labels")), fmt(row.get("train_labels_rival_rate")),
                 fmt(row["pgr"], 2) if row["pgr"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: dict) -> str:
    """The report as Markdown (every interval: 95% two-stage bootstrap over worlds and seeds)."""
    from w2s_jax.concept_world.predictions import predictions_markdown

    lines = [f"# {results['experiment']}: concept world, worlds {results['worlds']} x seeds {results['seeds']} "
             f"({results['units']} units)", "",
             "Intervals: 95% two-stage bootstrap (worlds, then seeds within a world). Weak rows' "
             "\"test accuracy\" is the labeller's accuracy on the test split; the students fit its "
             "training labels, whose accuracy is the next columns'. PGR uses the latter. A method "
             "student's \"labels fit\" are the method's own training labels (refined, bootstrapped, ...).", ""]
    failed = {w: records[-1] for w, records in results["gate"]["worlds"].items() if records and not records[-1]["passed"]}
    if failed:
        lines += [f"**SMOKE TEST.** The strong model of world(s) {', '.join(sorted(failed))} did not pass the "
                  f"pre-training gate (largest shortfall below the Bayes-optimal in-context accuracy: "
                  + ", ".join(f"{r['gap']:.3f}" for r in failed.values())
                  + f", tolerance {results['gate']['config']['tolerance']}). The numbers below test the code "
                  "path, not the theory: the model does not hold the concepts.", ""]
    else:
        lines += ["Pre-training gate: passed in every world (" + ", ".join(
            f"world {w}: gap {records[-1]['gap']:.3f} after {len(records)} chunk(s)"
            for w, records in results["gate"]["worlds"].items()) + ").", ""]
    chunks = results["gate"].get("chunks", {})
    if chunks:
        lines += ["Models per world (chunks of one pre-training; the intermediate's own gate: within "
                  f"{results['gate']['config'].get('intermediate_tolerance')} of Bayes-optimal): " + "; ".join(
                      f"world {w}: strong chunk {c['strong']}, intermediate chunk {c['intermediate']}"
                      + ("" if c["intermediate_passed"] else " (missed its gate)") + f", weak base chunk {c['weak']}"
                      for w, c in chunks.items()) + ".", ""]
    lines += predictions_markdown(results["predictions"]) + [""]
    for who, curve in results.get("curves", {}).items():
        lines += [f"## In-context accuracy on held-out documents: {who} model (gate gap {fmt(curve['gap'])})", "",
                  "| n | model | Bayes-optimal |", "|---|---|---|"]
        lines += [f"| {r['n']} | {fmt(r['model'])} | {fmt(r['bayes'])} |" for r in curve["rows"]] + [""]
    for part, title in (("main", "Main run"), ("quality", "Quality run: noisy labellers")):
        if part in results:
            lines += [f"## {title}", "", *part_table(results[part]), ""]
    if "demos" in results:
        d = results["demos"]
        lines += [f"## Refined labels against demonstrations (noisy labeller eta = {d['eta']}, {d['draw']} draws)", "",
                  "| n | transformer | Bayes-optimal |", "|---|---|---|"]
        lines += [f"| {r['n']} | {fmt(r['transformer'])} | {fmt(r['bayes'])} |" for r in d["rows"]]
        lines += ["", f"Fitted rates: transformer {fmt(d['rate_transformer'], 2)}, Bayes-optimal "
                      f"{fmt(d['rate_bayes'], 2)}; rho* {fmt(d['rho_star'], 3)}.", ""]
    if "gamma" in results:
        g = results["gamma"]
        lines += [f"## Refined labels against gamma (misaligned labeller, {g['demos']} demonstrations)", "",
                  "| gamma | weak | transformer | transformer = j | Bayes | Bayes = j | rho* |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['gamma']:.3f} | {fmt(r['weak'])} | {fmt(r['transformer'])} | {fmt(r['transformer_rival'])} | "
                  f"{fmt(r['bayes'])} | {fmt(r['bayes_rival'])} | {fmt(r['rho_star'])} |" for r in g["rows"]]
        lines += ["", f"Transition: transformer {fmt(g['transition_transformer'], 2)}, Bayes-optimal "
                      f"{fmt(g['transition_bayes'], 2)} (theory: 1/2).", ""]
    if "sizes" in results:
        z = results["sizes"]
        lines += [f"## Students against training-set size (noisy labeller eta = {z['eta']})", "",
                  "| m | labels fit | naive | icl-refine | gold |", "|---|---|---|---|---|"]
        lines += [f"| {r['m']} | {fmt(r.get('weak', {}).get('train_labels'))} | {fmt(r.get('naive', {}).get('accuracy'))} | "
                  f"{fmt(r.get('icl-refine', {}).get('accuracy'))} | {fmt(r.get('gold', {}).get('accuracy'))} |"
                  for r in z["rows"]] + [""]
    if "gamma-rates" in results:
        lines += ["## Decay rate in n at several gamma (misaligned labeller)", "",
                  "| gamma | rho* | Bayes fitted rate | transformer fitted rate |", "|---|---|---|---|"]
        lines += [f"| {g['gamma']:.3f} | {fmt(g['rho_star'])} | {fmt(g['rate_bayes'], 2)} | {fmt(g['rate_transformer'], 2)} |"
                  for g in results["gamma-rates"]["gammas"]] + [""]
    return "\n".join(lines)
