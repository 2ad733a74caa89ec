"""A fine-tuning stage's curves: ``metrics.jsonl`` (one line per optimizer step) and ``loss.png``.

Each line holds what the trainer reports for the step (``w2s_jax.train.train``'s callback
metrics): ``step``, ``loss`` (the step's training loss), ``grad_norm`` (before clipping), ``lr``
(the rate the step's update used), ``tokens`` (the step's non-padding tokens) and, on the steps
the trainer evaluates (every ``train.eval_every`` steps, and the last step), ``eval_loss`` (on the
stage's held-out rows, when it has some); and what is timed here: ``seconds`` (wall time of the
step, from the previous callback) and ``tokens_per_s`` (``tokens`` over those seconds). Lines are
appended as steps finish; a run resumed from a checkpoint first drops the lines at or after the
step it resumes from, so every step has exactly one line.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from w2s_jax.pipeline.artifacts import JsonlLog, atomic_write_bytes, atomic_write_text

METRICS, LOSS_PLOT = "metrics.jsonl", "loss.png"


class TrainingLog:
    """The callback that writes ``metrics.jsonl`` in a stage directory (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / METRICS
        self._log = JsonlLog(self.path)
        self._last: float | None = None
        self._started = False

    def on_step(self, step: int, metrics: dict) -> None:
        import jax

        now = time.perf_counter()
        if jax.process_index() != 0:
            return
        if not self._started:  # resumed: steps from here on are recomputed
            kept = [r for r in self._log.read() if r["step"] < step]
            atomic_write_text(self.path, "".join(_line(r) for r in kept))
            self._started = True
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        if math.isnan(row.get("eval_loss", 0.0)):  # an eval step of a run without eval data
            del row["eval_loss"]
        if self._last is not None:
            row["seconds"] = now - self._last
            if "tokens" in row:
                row["tokens_per_s"] = row["tokens"] / max(now - self._last, 1e-9)
        self._last = now
        self._log.append([row])

    def rows(self) -> list[dict]:
        return self._log.read()

    def finish(self, result=None) -> Path | None:
        """Adds the evaluations the trainer ran after its last callback (``result.eval_losses``,
        e.g. the final one) to their steps' lines, then draws ``loss.png`` from ``metrics.jsonl``
        (None when no step was logged)."""
        rows = self.rows()
        if not rows:
            return None
        evals = getattr(result, "eval_losses", None) or {}
        late = [r for r in rows if r["step"] in evals and r.get("eval_loss") is None]
        for row in late:
            row["eval_loss"] = float(evals[row["step"]])
        if late:
            atomic_write_text(self.path, "".join(_line(r) for r in rows))
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
        evals = [r for r in rows if r.get("eval_loss") is not None]
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o", label="eval loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        return atomic_write_bytes(self.path.parent / LOSS_PLOT, buffer.getvalue())


def _line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"
