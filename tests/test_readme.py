"""README.md's Python example runs as written, on a tiny random checkpoint in place of the real one.

The snippet is read from README.md (the ```python block that loads a checkpoint), its one line
naming the checkpoint directory is replaced by a tiny random Llama checkpoint written by
`tests.lm.hf_fixtures`, and it is executed from a temporary working directory (its train run
writes `runs/sft` there). Nothing else is changed: the settings in the README are small enough
for the tiny model. If the README's path line changes, update `README_PATH_LINE` with it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the tiny checkpoint is written by transformers' PyTorch classes")

from tests.lm.hf_fixtures import make_hf_checkpoint  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
README_PATH_LINE = 'path = "./Llama-3.2-1B"'


def _lm_snippet() -> str:
    """The README's ```python block that calls `load_pretrained(path`; exactly one must exist."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)
    matches = [block for block in blocks if "load_pretrained(path" in block]
    assert len(matches) == 1, f"expected one ```python block calling load_pretrained(path in {README}"
    return matches[0]


def test_readme_lm_snippet_runs_on_a_tiny_checkpoint(tmp_path, monkeypatch):
    snippet = _lm_snippet()
    assert snippet.count(README_PATH_LINE) == 1, f"{README}: the snippet no longer has {README_PATH_LINE!r}"
    checkpoint = make_hf_checkpoint(tmp_path / "checkpoints", "llama")
    source = snippet.replace(README_PATH_LINE, f"path = {str(checkpoint)!r}")
    monkeypatch.chdir(tmp_path)

    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(source, f"{README}:python", "exec"), namespace)

    # every name the snippet defines is real: one generation and one score per prompt, a full run
    prompts = namespace["prompts"]
    assert len(namespace["out"].texts) == len(prompts)
    assert len(namespace["logp"]) == len(prompts)
    assert all(math.isfinite(r.sum_logprob) and r.sum_logprob < 0 for r in namespace["logp"])
    cfg, result = namespace["cfg"], namespace["result"]
    assert result.step == cfg.total_steps
    assert sorted(result.train_losses) == list(range(1, cfg.total_steps + 1))
    assert all(math.isfinite(loss) for loss in result.train_losses.values())
    assert (tmp_path / "runs" / "sft").is_dir()  # the checkpoint the run resumes from
