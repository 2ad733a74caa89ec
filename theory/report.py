"""Write what a sweep returned: a printed table, JSON (atomically), a PNG + PDF figure, a summary."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from w2s_jax.atomic_write import atomic_write_bytes

__all__ = ["format_table", "write_json_atomic", "save_figure", "write_summary", "to_jsonable"]


def _fmt(x) -> str:
    if x is None:  # NaN after a JSON round trip
        return "nan"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
            return f"{x:.3e}"
        return f"{x:.4f}"
    return str(x)


def format_table(table: dict) -> str:
    """A fixed-width text table (also valid Markdown)."""
    cols = table["columns"]
    rows = [[_fmt(v) for v in r] for r in table["rows"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cols), sep, *(line(r) for r in rows)])


def to_jsonable(x):
    """Convert numpy/jax scalars and arrays (and NaN/inf) into plain JSON values."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (float, int, bool)):
        return to_jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON via a temporary file and ``os.replace``: a reader never sees a partial file."""
    data = json.dumps(to_jsonable(payload), indent=1, allow_nan=False).encode()
    atomic_write_bytes(Path(path), data)


def save_figure(fig, stem: Path) -> list[Path]:
    """Save ``stem.png`` and ``stem.pdf`` atomically; returns the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        path = Path(f"{stem}.{ext}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=130, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def write_summary(path: Path, results: dict, header: str) -> None:
    """``summary.md``: every experiment's table and checks, with PASS/FAIL."""
    lines = [header, ""]
    for name, r in results.items():
        lines += [f"## {name}: {r['title']}", "", format_table(r["table"]), ""]
        for c in r["checks"]:
            label = "N/A" if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")
            lines.append(f"- **{label}** {c['claim']} ({c['detail']})")
        lines += ["", f"Figure: `{name}.png`, data: `{name}.json`.", ""]
    atomic_write_bytes(Path(path), "\n".join(lines).encode())
