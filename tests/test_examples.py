"""Every example runs (on a tiny random checkpoint built by the same loader path a user's takes)."""

import pytest

pytest.importorskip("torch", reason="the tiny checkpoint is written by transformers' PyTorch classes")

from examples.lm_quickstart import main as quickstart  # noqa: E402
from tests.lm.hf_fixtures import make_hf_checkpoint  # noqa: E402
from w2s_jax.models import load_pretrained  # noqa: E402


def test_lm_quickstart_fine_tunes_and_exports(tmp_path):
    ckpt = make_hf_checkpoint(tmp_path, "llama")
    out = quickstart(["--model", str(ckpt), "--out", str(tmp_path / "run"), "--steps", "8"])
    # fine-tuning on the completion raised its log-probability, and the export reloads
    assert out["logp_after"] > out["logp_before"] + 1.0, out
    assert min(out["train_losses"].values()) < out["train_losses"][1]
    reloaded, _ = load_pretrained(out["export"])
    assert reloaded is not None
