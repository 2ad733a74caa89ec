"""Every example runs (on a tiny random checkpoint built by the same loader path a user's takes)."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="the tiny checkpoint is written by transformers' PyTorch classes")

from examples.lm_quickstart import main as quickstart  # noqa: E402
from tests.lm.hf_fixtures import make_hf_checkpoint  # noqa: E402
from w2s_jax.models import load_pretrained  # noqa: E402
from w2s_jax.train import CheckpointMismatchError  # noqa: E402

# The in-memory model is sharded over the test session's 8 CPU devices and the reloaded export is
# not: the two forwards sum in different orders, so logits agree to float32 rounding of O(1)
# values (measured max difference 6e-7), while fine-tuning moves them by up to 3.
ROUNDING = 2e-5


def _logits(model) -> np.ndarray:
    tokens_BxT = np.array([[1, 4, 5, 6, 7, 8, 9], [1, 20, 11, 12, 30, 14, 15]], np.int32)
    positions_BxT = np.broadcast_to(np.arange(tokens_BxT.shape[1], dtype=np.int32), tokens_BxT.shape)
    logits, _ = model(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=np.ones(tokens_BxT.shape, bool))
    return np.asarray(logits)


def test_lm_quickstart_fine_tunes_and_exports_the_merged_model(tmp_path, capsys):
    ckpt = make_hf_checkpoint(tmp_path, "llama")
    run = ["--out", str(tmp_path / "run"), "--steps", "8"]
    out = quickstart(["--model", str(ckpt), *run])
    # fine-tuning on the completion raised its log-probability
    assert out["logp_after"] > out["logp_before"] + 1.0, out
    assert min(out["train_losses"].values()) < out["train_losses"][1]
    # the export is the merged fine-tuned model: its logits are the in-memory model's, not the base's
    merged = _logits(out["model"])
    exported = _logits(load_pretrained(out["export"])[0])
    np.testing.assert_allclose(exported, merged, atol=ROUNDING, rtol=0)
    assert np.abs(_logits(load_pretrained(ckpt)[0]) - merged).max() > 100 * ROUNDING

    # the same command again resumes the finished run, says so, and exports the same model
    capsys.readouterr()
    again = quickstart(["--model", str(ckpt), *run])
    assert "at step 8 of 8: already complete, 0 steps left" in capsys.readouterr().err
    assert again["train_losses"] == {}
    np.testing.assert_array_equal(_logits(load_pretrained(again["export"])[0]), exported)

    # another checkpoint of the same shape into the same --out is refused, not exported as its fine-tune
    other = make_hf_checkpoint(tmp_path, "llama", seed=1)
    with pytest.raises(CheckpointMismatchError, match="base model weights differ"):
        quickstart(["--model", str(other), *run])
