"""The classification report: every model's accuracy, ROC AUC, ECE and agreement with its weak
supervisor on the test split, PGR on accuracy and on AUC, with intervals over items and over seeds.

Per seed, a statistic's item interval is a percentile bootstrap over the test items, resampled
once per draw for every subject of the seed (so a PGR's numerator and denominator are paired).
Over seeds, a metric's interval is a percentile bootstrap over the seeds' values
(``w2s_jax.core.metrics.bootstrap_mean``) and PGR's is ``w2s_jax.core.metrics.pgr`` with the seeds
as paired trials. With one seed there is no seed interval (NaN); with a gap that is not
significantly positive PGR is NaN. Label sets (weak, repaired, refined labels of half B) are
scored by their accuracy against half B's gold labels.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from w2s_jax.core.classification_metrics import agreement, expected_calibration_error, roc_auc
from w2s_jax.core.metrics import bootstrap_mean, pgr
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text, read_json

METRICS = ("accuracy", "auc", "ece", "agreement")
PGR_METRICS = ("accuracy", "auc")


def _probs(path: str) -> dict[int, float]:
    return {r["index"]: r["prob"] for r in (json.loads(line) for line in Path(path).read_text().splitlines())}


def _labels(items_dir: str, part: str) -> np.ndarray:
    rows = [json.loads(line) for line in (Path(items_dir) / f"{part}.jsonl").read_text().splitlines()]
    return np.asarray([r["label"] for r in rows], np.float64)


def metric_values(p_N: np.ndarray, y_N: np.ndarray, weak_N: np.ndarray | None) -> dict[str, float]:
    """The four metrics of one subject on one set of items (agreement NaN without a weak model)."""
    values = {"accuracy": float(np.mean((p_N >= 0.5) == (y_N >= 0.5))),
              "auc": float(roc_auc(p_N, y_N)),
              "ece": float(expected_calibration_error(p_N, y_N))}
    values["agreement"] = float(agreement(p_N >= 0.5, weak_N >= 0.5)) if weak_N is not None else math.nan
    return values


def _gap_ratio(student: float, weak: float, ceiling: float) -> float:
    return (student - weak) / (ceiling - weak) if ceiling != weak else math.nan


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return math.nan, math.nan
    lo, hi = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def seed_statistics(probs: dict[str, np.ndarray], weak_of: dict[str, str | None], y_N: np.ndarray, *,
                    pairs: dict[str, tuple[str, str]], n_bootstrap: int, level: float, seed: int) -> dict:
    """One seed's statistics: ``{subject: {metric: {"value", "lo", "hi"}}}`` over the test items,
    and ``pgr_<metric>`` for each subject in ``pairs`` (subject -> (weak subject, ceiling subject))."""
    N = y_N.size
    rng = np.random.default_rng(seed)
    draws = [np.arange(N)] + [rng.integers(0, N, N) for _ in range(n_bootstrap)]
    table = {name: [] for name in probs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for idx in draws:
            y = y_N[idx]
            if y.min() == y.max():  # one class only: AUC undefined; skip the draw
                continue
            for name, p in probs.items():
                weak = probs[weak_of[name]][idx] if weak_of.get(name) else None
                table[name].append(metric_values(p[idx], y, weak))
    out = {}
    for name, rows in table.items():
        stats = {}
        for metric in METRICS:
            v = np.asarray([r[metric] for r in rows])
            stats[metric] = {"value": float(v[0]), **dict(zip(("lo", "hi"), _interval(v[1:], level)))}
        out[name] = stats
    for name, (weak, ceiling) in pairs.items():
        for metric in PGR_METRICS:
            v = np.asarray([_gap_ratio(a[metric], b[metric], c[metric])
                            for a, b, c in zip(table[name], table[weak], table[ceiling])])
            out[name][f"pgr_{metric}"] = {"value": float(v[0]), **dict(zip(("lo", "hi"), _interval(v[1:], level)))}
    return out


def _over_seeds(values: list[float], *, n_bootstrap: int, level: float) -> dict:
    stat = bootstrap_mean(values, n_bootstrap=n_bootstrap, level=level)
    return {"mean": stat["mean"], "lo": stat["lo"], "hi": stat["hi"], "per_seed": list(values)}


def build_results(run_dir: str | Path) -> dict:
    """``results.json``'s content from a run directory's ``classification.json``."""
    index = read_json(Path(run_dir) / "classification.json")
    level, n_bootstrap = index["level"], index["bootstrap"]
    per_seed, pairs_seen = {}, []
    for seed in index["seeds"]:
        y_N = _labels(index["items"][str(seed)], "test")
        subjects = [s for s in index["subjects"] if s["seed"] == seed]
        probs, weak_of, pairs = {}, {}, {}
        for s in subjects:
            key = (s["name"], s["weak"], s["strong"])
            by_index = _probs(s["probs"])
            probs[key] = np.asarray([by_index[i] for i in range(y_N.size)], np.float64)
        for (name, weak, strong) in probs:
            if weak is not None:
                weak_of[(name, weak, strong)] = ("weak", weak, None)
            if weak is not None and strong is not None:
                pairs[(name, weak, strong)] = (("weak", weak, None), ("ceiling", None, strong))
                if (weak, strong) not in pairs_seen:
                    pairs_seen.append((weak, strong))
        per_seed[seed] = seed_statistics(probs, weak_of, y_N, pairs=pairs, n_bootstrap=n_bootstrap,
                                         level=level, seed=seed)
    pair_rows = []
    for weak, strong in pairs_seen:
        names = [("weak", weak, None), ("ceiling", None, strong), ("zero-shot", None, strong)]
        names += [k for k in per_seed[index["seeds"][0]] if k[1] == weak and k[2] == strong]
        rows = []
        for key in names:
            row = {"subject": key[0], "weak": weak, "strong": strong, "seeds": {}}
            for metric in METRICS + tuple(f"pgr_{m}" for m in PGR_METRICS):
                if metric not in per_seed[index["seeds"][0]][key]:
                    continue
                seed_values = [per_seed[s][key][metric] for s in index["seeds"]]
                row[metric] = _over_seeds([v["value"] for v in seed_values], n_bootstrap=n_bootstrap, level=level)
                row["seeds"][metric] = seed_values
            for metric in PGR_METRICS:
                if f"pgr_{metric}" in row:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        estimate = pgr([per_seed[s][key][metric]["value"] for s in index["seeds"]],
                                       [per_seed[s][("weak", weak, None)][metric]["value"] for s in index["seeds"]],
                                       [per_seed[s][("ceiling", None, strong)][metric]["value"] for s in index["seeds"]],
                                       level=level)
                    row[f"pgr_{metric}"]["ratio_of_means"] = {"value": estimate.value, "lo": estimate.lo,
                                                              "hi": estimate.hi, "reliable": estimate.reliable}
            rows.append(row)
        pair_rows.append({"weak": weak, "strong": strong, "rows": rows})
    return {"experiment": index["experiment"], "dataset": index["dataset"], "seeds": index["seeds"],
            "level": level, "weak": index["weak"], "strong": index["strong"], "losses": index["losses"],
            "pairs": pair_rows, "label_sets": label_set_rows(index, n_bootstrap=n_bootstrap, level=level)}


def label_set_rows(index: dict, *, n_bootstrap: int, level: float) -> list[dict]:
    """Each label set's accuracy against half B's gold labels, and the share of half B it covers."""
    found: dict = {}
    for s in index["label_sets"]:
        y = _labels(index["items"][str(s["seed"])], "b")
        labels = _probs(s["labels"])
        kept = np.asarray(sorted(labels), int)
        correct = np.asarray([labels[i] >= 0.5 for i in kept]) == (y[kept] >= 0.5)
        entry = found.setdefault((s["name"], s["weak"], s["strong"]), {"accuracy": [], "coverage": []})
        entry["accuracy"].append(float(correct.mean()) if kept.size else math.nan)
        entry["coverage"].append(kept.size / y.size)
    return [{"labels": name, "weak": weak, "strong": strong,
             "accuracy": _over_seeds(v["accuracy"], n_bootstrap=n_bootstrap, level=level),
             "coverage": _over_seeds(v["coverage"], n_bootstrap=n_bootstrap, level=level)}
            for (name, weak, strong), v in found.items()]


def format_stat(stat: dict | None) -> str:
    """``0.812 [0.790, 0.834]`` (the interval left out where it is NaN)."""
    if not stat or stat.get("mean") is None or not np.isfinite(stat["mean"]):
        return "n/a"
    text = f"{stat['mean']:.3f}"
    if np.isfinite(stat.get("lo", math.nan)) and np.isfinite(stat.get("hi", math.nan)):
        text += f" [{stat['lo']:.3f}, {stat['hi']:.3f}]"
    return text


def results_markdown(results: dict) -> str:
    """The report as Markdown: one table per (weak, strong) pair, then the label sets."""
    pct = round(results["level"] * 100)
    lines = [f"# {results['experiment']}: {results['dataset']}, seeds {results['seeds']}", "",
             f"Mean over seeds [{pct}% percentile bootstrap over seeds]; the test split's items in "
             "`results.json` (`seeds`) carry each seed's interval over items.", ""]
    for pair in results["pairs"]:
        lines += [f"## weak {pair['weak']} -> strong {pair['strong']}", "",
                  "| model | accuracy | AUC | ECE | agreement with weak | PGR (accuracy) | PGR (AUC) |",
                  "|---|---|---|---|---|---|---|"]
        for row in pair["rows"]:
            cells = [format_stat(row.get(m)) for m in METRICS + ("pgr_accuracy", "pgr_auc")]
            lines.append(f"| {row['subject']} | " + " | ".join(cells) + " |")
        lines.append("")
    if results["label_sets"]:
        lines += ["## Training labels of half B against its gold labels", "",
                  "| labels | weak | strong | accuracy | coverage |", "|---|---|---|---|---|"]
        for row in results["label_sets"]:
            lines.append(f"| {row['labels']} | {row['weak']} | {row['strong'] or '-'} | "
                         f"{format_stat(row['accuracy'])} | {format_stat(row['coverage'])} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, *, figures: bool = True) -> dict:
    """Writes ``results.json``, ``results.md`` and (with ``figures``) ``figures/``; returns the results."""
    run_dir = Path(run_dir)
    results = build_results(run_dir)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    if figures:
        from w2s_jax.classify.figures import write_figures

        write_figures(results, run_dir / "figures")
    return results
