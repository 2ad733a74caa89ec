"""Intervals at the level of the unit that fails together: worlds, and seeds within them.

Every test question of a (world, seed) unit is answered by students trained on that unit's labels,
with that world's pre-trained models, so its items are not independent: a wrong concept makes
every answer of the unit wrong at once. A statistic of the experiment is therefore computed from
per-unit values (a unit's mean accuracy, its refined-label curve, ...), and its interval from a
two-stage bootstrap: resample the worlds with replacement, then the seeds within each drawn
world with replacement, and recompute the statistic (Davison and Hinkley 1997, section 3.8).
With one world it is the ordinary bootstrap over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Unit = tuple[int, int]  # (world, seed)


def unit_of(key: str) -> Unit:
    """``"w/s"`` -> ``(w, s)``."""
    w, s = key.split("/")
    return int(w), int(s)


def fmt(stat: Mapping | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of an interval record (``n/a`` when undefined)."""
    if stat is None or stat.get("value") is None or math.isnan(stat["value"]):
        return "n/a"
    if math.isnan(stat["lo"]):
        return f"{stat['value']:.{digits}f}"
    return f"{stat['value']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}]"


def cluster_resamples(units: Sequence[Unit], n_bootstrap: int, seed: int = 0) -> list[list[Unit]]:
    """``n_bootstrap`` two-stage resamples of ``units`` (lists of units, repeats allowed)."""
    worlds: dict[int, list[Unit]] = {}
    for unit in units:
        worlds.setdefault(unit[0], []).append(unit)
    names = sorted(worlds)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_bootstrap):
        sample = []
        for w in rng.choice(len(names), size=len(names)):
            members = worlds[names[w]]
            sample += [members[i] for i in rng.choice(len(members), size=len(members))]
        out.append(sample)
    return out


def cluster_interval(values: Mapping[Unit, object], statistic: Callable[[list], float | None], *,
                     n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """``{"value", "lo", "hi", "units"}``: ``statistic`` of the per-unit values and its two-stage
    bootstrap percentile interval (NaN with fewer than two units, or when the statistic is
    undefined on more than a tenth of the resamples)."""
    units = sorted(values)
    value = statistic([values[u] for u in units]) if units else None
    out = {"value": math.nan if value is None else float(value), "lo": math.nan, "hi": math.nan,
           "units": len(units)}
    if len(units) < 2:
        return out
    stats = [statistic([values[u] for u in sample]) for sample in cluster_resamples(units, n_bootstrap, seed)]
    finite = [s for s in stats if s is not None and math.isfinite(s)]
    if len(finite) < 0.9 * len(stats):
        return out
    out["lo"], out["hi"] = (float(q) for q in np.quantile(finite, [0.5 - level / 2, 0.5 + level / 2]))
    return out


def mean(values: list) -> float:
    """The mean of per-unit numbers (the statistic of a per-unit accuracy)."""
    return float(np.mean(values))


def gap_ratio(values: list) -> float | None:
    """PGR of per-unit ``(student, weak, ceiling)`` triples: ``(mean s - mean w) / (mean c - mean w)``
    (None when the ceiling does not exceed the weak supervisor)."""
    s, w, c = (float(np.mean([v[i] for v in values])) for i in range(3))
    return None if c - w <= 1e-9 else (s - w) / (c - w)
