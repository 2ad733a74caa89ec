"""The pre-registered predictions P1-P5, checked with PASS/FAIL at the end of a run.

Each prediction is a statement of the theory (``docs/theory.md``) about this world, a statistic
of the run with its two-stage bootstrap interval (:mod:`.clusters`), and a criterion fixed here,
before any run. A prediction whose statistic the run did not measure is ``NOT RUN``; one whose
interval is undefined (one unit) is ``NO INTERVAL``. Nothing here is tuned to a result.

- P1 trap: a naive student fit to the misaligned labeller (rival j on a fraction gamma < 1/2 of
  the inputs) answers with j's output at the labeller's rate: for every such gamma, the student's
  test j-rate interval covers the j-rate of the training labels it fit.
- P2 escape: the ``icl-refine`` student fit to the same labellers does not: its j-rate interval
  lies below ``J_MAX`` and its PGR interval above ``PGR_MIN``.
- P3 decay: with fresh demonstrations the Bayes-optimal refined-label error decays at rho*: the
  interval of its fitted exponential rate covers rho* (the transformer's rate is reported beside).
- P4 transition: the transformer's refined-label accuracy crosses the midpoint of its range at
  gamma = 1/2 (the interval covers 1/2), and its fitted decay rate in n falls as gamma -> 1/2
  (the rate at the largest swept gamma < 1/2 lies below the rate at the smallest, intervals apart).
- P5 noise: naive students of a noisy labeller (consistent, with a variance price) gain accuracy
  as training data grows: naive at the largest size minus naive at the smallest, interval above 0;
  and refinement gets there with less data: icl-refine minus naive at the smallest size, interval
  above 0 (paired by unit).
"""

from __future__ import annotations

import math

J_MAX = 0.10  # P2: the refined student's j-rate stays below this
PGR_MIN = 0.50  # P2: the refined student's PGR stays above this


def _ok(stat) -> bool:
    return stat is not None and not math.isnan(stat.get("lo", math.nan))


def _record(pid, claim, statistic, status, detail, values=None) -> dict:
    return {"id": pid, "claim": claim, "statistic": statistic, "status": status, "detail": detail,
            "values": values or []}


def _misaligned_rows(results: dict, method: str) -> list[tuple[float, dict, dict]]:
    """(gamma, method's student row, weak row) for each misaligned labeller with gamma < 1/2."""
    main = results.get("main")
    if not main:
        return []
    weak = {r["supervisor"]: r for r in main["rows"] if r["role"] == "weak"}
    out = []
    for r in main["rows"]:
        sup = r["supervisor"] or ""
        if r["role"] == "method" and r["method"] == method and "misaligned-" in sup and sup in weak:
            gamma = float(sup.split("misaligned-")[1].removesuffix(".jsonl"))
            if gamma < 0.5:
                out.append((gamma, r, weak[sup]))
    return sorted(out, key=lambda t: t[0])


def p1(results: dict) -> dict:
    claim = "naive students fit to a misaligned labeller (gamma < 1/2) answer with j's output at the labeller's rate"
    stat = "student test j-rate [interval] vs the j-rate of its training labels"
    rows = _misaligned_rows(results, "naive")
    if not rows:
        return _record("P1", claim, stat, "NOT RUN", "no naive student of a misaligned labeller")
    values, covered, intervals = [], [], True
    for gamma, student, weak in rows:
        target = weak["train_labels_rival_rate"]["value"]
        s = student["rival_rate"]
        intervals &= _ok(s)
        covered.append(_ok(s) and s["lo"] <= target <= s["hi"])
        values.append({"gamma": gamma, "student_j_rate": s, "labels_j_rate": target})
    status = "NO INTERVAL" if not intervals else ("PASS" if all(covered) else "FAIL")
    detail = "; ".join(f"gamma {v['gamma']:.2f}: student {_f(v['student_j_rate'])} vs labels {v['labels_j_rate']:.3f}"
                       for v in values)
    return _record("P1", claim, stat, status, detail, values)


def p2(results: dict) -> dict:
    claim = f"icl-refine students escape: j-rate below {J_MAX} and PGR above {PGR_MIN} for gamma < 1/2"
    stat = "student test j-rate [interval], PGR [interval]"
    rows = _misaligned_rows(results, "icl-refine")
    if not rows:
        return _record("P2", claim, stat, "NOT RUN", "no icl-refine student of a misaligned labeller")
    values, passed, intervals = [], [], True
    for gamma, student, _weak in rows:
        j, g = student["rival_rate"], student["pgr"]
        intervals &= _ok(j) and _ok(g)
        passed.append(_ok(j) and _ok(g) and j["hi"] < J_MAX and g["lo"] > PGR_MIN)
        values.append({"gamma": gamma, "j_rate": j, "pgr": g, "accuracy": student["accuracy"]})
    status = "NO INTERVAL" if not intervals else ("PASS" if all(passed) else "FAIL")
    detail = "; ".join(f"gamma {v['gamma']:.2f}: j-rate {_f(v['j_rate'])}, PGR {_f(v['pgr'], 2)}" for v in values)
    return _record("P2", claim, stat, status, detail, values)


def p3(results: dict) -> dict:
    claim = "with fresh demonstrations the Bayes-optimal refined-label error decays at rho*"
    stat = "fitted rate of the Bayes-optimal error [interval] vs rho*; transformer's fitted rate beside"
    d = results.get("demos")
    if not d:
        return _record("P3", claim, stat, "NOT RUN", "no demonstrations sweep")
    rho, bayes = d["rho_star"]["value"], d["rate_bayes"]
    if d.get("draw") != "fresh":
        return _record("P3", claim, stat, "NOT RUN", f"the sweep drew {d.get('draw')} demonstrations, not fresh")
    status = "NO INTERVAL" if not _ok(bayes) else ("PASS" if bayes["lo"] <= rho <= bayes["hi"] else "FAIL")
    detail = (f"Bayes {_f(bayes, 2)}, rho* {rho:.3f}, transformer {_f(d['rate_transformer'], 2)}")
    return _record("P3", claim, stat, status, detail, [{"rate_bayes": bayes, "rho_star": rho,
                                                        "rate_transformer": d["rate_transformer"]}])


def p4(results: dict) -> dict:
    claim = "refined-label accuracy crosses at gamma = 1/2, and the decay rate in n falls to 0 as gamma -> 1/2"
    stat = "transformer transition [interval]; transformer fitted rate at the smallest and largest swept gamma"
    g, rates = results.get("gamma"), results.get("gamma-rates")
    if not g or not rates or len(rates["gammas"]) < 2:
        return _record("P4", claim, stat, "NOT RUN", "needs the gamma sweep and rates at >= 2 gammas")
    t = g["transition_transformer"]
    low, high = rates["gammas"][0], rates["gammas"][-1]
    a, b = low["rate_transformer"], high["rate_transformer"]
    if not (_ok(t) and _ok(a) and _ok(b)):
        status = "NO INTERVAL"
    else:
        status = "PASS" if t["lo"] <= 0.5 <= t["hi"] and b["hi"] < a["lo"] else "FAIL"
    detail = (f"transition {_f(t, 2)} (Bayes {_f(g['transition_bayes'], 2)}); rate at gamma {low['gamma']:.2f}: "
              f"{_f(a, 2)} (rho* {low['rho_star']['value']:.3f}), at gamma {high['gamma']:.2f}: {_f(b, 2)} "
              f"(rho* {high['rho_star']['value']:.3f})")
    return _record("P4", claim, stat, status, detail, [{"transition": t, "rate_low": a, "rate_high": b}])


def _paired(a: dict, b: dict, **kw) -> dict:
    """Mean over units of ``a - b`` (per-unit values keyed ``"w/s"``) with its cluster interval."""
    from w2s_jax.concept_world.clusters import cluster_interval, mean, unit_of

    values = {unit_of(k): a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None
              and not math.isnan(a[k]) and not math.isnan(b[k])}
    return cluster_interval(values, mean, **kw)


def p5(results: dict) -> dict:
    claim = ("naive students of a noisy labeller gain accuracy as training data grows, and refinement is "
             "ahead with the least data")
    stat = "naive(m_max) - naive(m_min) [interval]; icl-refine(m_min) - naive(m_min) [interval]"
    rows = (results.get("sizes") or {}).get("rows", [])
    if len(rows) < 2 or any("naive" not in r or "icl-refine" not in r for r in rows):
        return _record("P5", claim, stat, "NOT RUN", "needs naive and icl-refine students at >= 2 training-set sizes")
    small, large = rows[0], rows[-1]
    grow = _paired(large["naive"]["per_unit"], small["naive"]["per_unit"])
    ahead = _paired(small["icl-refine"]["per_unit"], small["naive"]["per_unit"])
    if not (_ok(grow) and _ok(ahead)):
        status = "NO INTERVAL"
    else:
        status = "PASS" if grow["lo"] > 0 and ahead["lo"] > 0 else "FAIL"
    detail = (f"naive m={large['m']} minus m={small['m']}: {_f(grow)}; icl-refine minus naive at m={small['m']}: "
              f"{_f(ahead)}; naive {', '.join(_f(r['naive']['accuracy']) for r in rows)}; icl-refine "
              f"{', '.join(_f(r['icl-refine']['accuracy']) for r in rows)}")
    return _record("P5", claim, stat, status, detail, [{"naive_gain": grow, "refine_lead": ahead}])


def check_predictions(results: dict, meta: dict | None = None) -> list[dict]:
    """P1-P5 on a run's results (see the module docstring)."""
    return [p(results) for p in (p1, p2, p3, p4, p5)]


def _f(stat, digits: int = 3) -> str:
    from w2s_jax.concept_world.clusters import fmt

    return fmt(stat, digits)


def predictions_markdown(predictions: list[dict]) -> list[str]:
    lines = ["## Pre-registered predictions", "", "| | prediction | status | statistic and interval |", "|---|---|---|---|"]
    lines += [f"| {p['id']} | {p['claim']} | **{p['status']}** | {p['detail']} |" for p in predictions]
    return lines
