"""The classification report: every model's accuracy, ROC AUC, ECE and agreement with its weak
supervisor on the test split, PGR on accuracy and on AUC, with intervals over items and over seeds.

Per seed (``w2s_jax.core.classification_metrics``): a metric's interval is a percentile bootstrap
over the test items (``item_interval``; agreement, a mean over items, by ``bootstrap_mean``), and
PGR's is the paired bootstrap over items of ``pgr_over_items`` (the same resampled items for the
student, its weak supervisor and the ceiling). Over seeds (each seed draws its own items): a
metric's interval is a percentile bootstrap over the seeds' values (``bootstrap_mean``) and PGR's
is ``w2s_jax.core.metrics.pgr`` with the seeds as paired trials. With one seed there is no seed
interval (NaN); a gap that is not significantly positive makes PGR NaN. Label sets (the weak,
repaired and refined labels of half B) are scored by their accuracy against half B's gold labels.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from w2s_jax.core.classification_metrics import CLASSIFICATION_METRICS, item_interval, pgr_over_items
from w2s_jax.core.metrics import bootstrap_mean, pgr
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text, read_json

METRICS = ("accuracy", "auc", "ece", "agreement")
PGR_METRICS = ("accuracy", "auc")


def _probs(path: str) -> dict[int, float]:
    return {r["index"]: r["prob"] for r in (json.loads(line) for line in Path(path).read_text().splitlines())}


def _labels(items_dir: str, part: str) -> np.ndarray:
    rows = [json.loads(line) for line in (Path(items_dir) / f"{part}.jsonl").read_text().splitlines()]
    return np.asarray([r["label"] for r in rows], np.float64)


def _hard(p_N: np.ndarray) -> np.ndarray:
    return p_N > 0.5  # as core.classification_metrics hardens a probability


def subject_statistics(p_N: np.ndarray, y_N: np.ndarray, weak_N: np.ndarray | None, *, n_bootstrap: int,
                       level: float, seed: int) -> dict:
    """One subject's metrics on one seed's test items: ``{metric: {"value", "lo", "hi"}}``."""
    out = {}
    for name in ("accuracy", "auc", "ece"):
        stat = item_interval(CLASSIFICATION_METRICS[name], p_N, y_N, n_bootstrap=n_bootstrap, level=level, seed=seed)
        out[name] = {"value": stat["value"], "lo": stat["lo"], "hi": stat["hi"]}
    if weak_N is not None:
        stat = bootstrap_mean(_hard(p_N) == _hard(weak_N), n_bootstrap=n_bootstrap, level=level, seed=seed)
        out["agreement"] = {"value": stat["mean"], "lo": stat["lo"], "hi": stat["hi"]}
    return out


def pgr_statistics(student_N, weak_N, ceiling_N, y_N, *, n_bootstrap: int, level: float, seed: int) -> dict:
    """PGR on accuracy and on AUC over one seed's test items: ``{"pgr_<metric>": {"value", "lo", "hi"}}``."""
    out = {}
    for name in PGR_METRICS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an unreliable gap: NaN, reported as n/a
            estimate = pgr_over_items(CLASSIFICATION_METRICS[name], student_N, weak_N, ceiling_N, y_N,
                                      n_bootstrap=n_bootstrap, level=level, seed=seed)
        out[f"pgr_{name}"] = {"value": estimate.value, "lo": estimate.lo, "hi": estimate.hi,
                              "gap": estimate.gap, "reliable": estimate.reliable}
    return out


def _over_seeds(values: list[float], *, n_bootstrap: int, level: float) -> dict:
    stat = bootstrap_mean(values, n_bootstrap=n_bootstrap, level=level)
    return {"mean": stat["mean"], "lo": stat["lo"], "hi": stat["hi"], "per_seed": list(values)}


def build_results(run_dir: str | Path) -> dict:
    """``results.json``'s content from a run directory's ``classification.json``."""
    index = read_json(Path(run_dir) / "classification.json")
    level, n_bootstrap, seeds = index["level"], index["bootstrap"], index["seeds"]
    per_seed, pairs = {}, []
    for seed in seeds:
        y_N = _labels(index["items"][str(seed)], "test")
        probs = {}
        for s in (s for s in index["subjects"] if s["seed"] == seed):
            by_index = _probs(s["probs"])
            probs[(s["name"], s["weak"], s["strong"])] = np.asarray([by_index[i] for i in range(y_N.size)])
        stats = {}
        for (name, weak, strong), p_N in probs.items():
            weak_N = probs[("weak", weak, None)] if weak is not None and name != "weak" else None
            stats[(name, weak, strong)] = subject_statistics(p_N, y_N, weak_N, n_bootstrap=n_bootstrap,
                                                             level=level, seed=seed)
            if weak is not None and strong is not None:
                stats[(name, weak, strong)].update(pgr_statistics(
                    p_N, probs[("weak", weak, None)], probs[("ceiling", None, strong)], y_N,
                    n_bootstrap=n_bootstrap, level=level, seed=seed))
                if (weak, strong) not in pairs:
                    pairs.append((weak, strong))
        per_seed[seed] = stats
    pair_rows = []
    for weak, strong in pairs:
        keys = [k for k in (("weak", weak, None), ("ceiling", None, strong), ("zero-shot", None, strong))
                if k in per_seed[seeds[0]]]  # (no zero-shot for models without answer tokens)
        keys += [k for k in per_seed[seeds[0]] if k[1] == weak and k[2] == strong]
        rows = []
        for key in keys:
            row = {"subject": key[0], "weak": weak, "strong": strong, "seeds": {}}
            for metric in METRICS + tuple(f"pgr_{m}" for m in PGR_METRICS):
                if metric not in per_seed[seeds[0]][key]:
                    continue
                values = [per_seed[s][key][metric] for s in seeds]
                row[metric] = _over_seeds([v["value"] for v in values], n_bootstrap=n_bootstrap, level=level)
                row["seeds"][metric] = values
            for metric in PGR_METRICS:
                if f"pgr_{metric}" in row and len(seeds) > 1:
                    def values(k, metric=metric):
                        return [per_seed[s][k][metric]["value"] for s in seeds]

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        estimate = pgr(values(key), values(("weak", weak, None)), values(("ceiling", None, strong)),
                                       level=level)
                    row[f"pgr_{metric}"].update(mean=estimate.value, lo=estimate.lo, hi=estimate.hi,
                                                reliable=estimate.reliable)
            rows.append(row)
        pair_rows.append({"weak": weak, "strong": strong, "rows": rows})
    results = {"experiment": index["experiment"], "dataset": index["dataset"], "seeds": seeds,
               "level": level, "bootstrap": n_bootstrap, "weak": index["weak"], "strong": index["strong"],
               "losses": index["losses"], "pairs": pair_rows,
               "label_sets": label_set_rows(index, n_bootstrap=n_bootstrap, level=level)}
    if index.get("predictions") == "concept-world":  # pre-registered for the concept world's form
        from w2s_jax.classify.predictions import check_predictions

        results["predictions"] = check_predictions(results)
    return results


def label_set_rows(index: dict, *, n_bootstrap: int, level: float) -> list[dict]:
    """Each label set's accuracy against half B's gold labels, and the share of half B it covers."""
    found: dict = {}
    for s in index["label_sets"]:
        y = _labels(index["items"][str(s["seed"])], "b")
        labels = _probs(s["labels"])
        kept = np.asarray(sorted(labels), int)
        correct = _hard(np.asarray([labels[i] for i in kept])) == (y[kept] > 0.5)
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
             f"Mean over seeds [{pct}% interval over seeds: a percentile bootstrap of the seeds' values; "
             "for PGR, the ratio of the seed-mean gaps with its delta-method interval]. Each seed's "
             "interval over test items is in `results.json` (`seeds`). n/a: undefined (one seed "
             "gives no seed interval; a weak-to-ceiling gap that is not significantly positive gives "
             "no PGR).", ""]
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
    if results.get("predictions"):
        from w2s_jax.classify.predictions import predictions_markdown

        lines += ["", *predictions_markdown(results["predictions"])]
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
