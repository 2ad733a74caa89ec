"""A classification run on a mesh of 8 fake CPU devices (tests/conftest.py) gives the same
probabilities as on one device: every classifier trained FSDP, inference batches split over the
mesh's rows. (A test that would also pass if the mesh were ignored is guarded by checking the
trained weights are really spread over the 8 devices.)"""

import json

import jax
import numpy as np
import pytest

from tests.classify.tiny_world import make_world, tiny_config
from w2s_jax.classify import run_classification

SMALL = ["seeds=[0]", "repair.run=[]", "icl.demos=0", "strong_to_strong.rounds=0", 'losses.run=["cross_entropy"]']


def _probs(run_dir):
    index = json.loads((run_dir / "classification.json").read_text())
    return {s["name"]: [r["prob"] for r in map(json.loads, open(s["probs"]))] for s in index["subjects"]}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs the 8 fake CPU devices of tests/conftest.py")
def test_a_sharded_run_matches_one_device(tmp_path, monkeypatch):
    from w2s_jax.classify.stages_models import FitClassifier

    root = tmp_path / "world"
    root.mkdir()
    make_world(root)
    one = tiny_config(root, [*SMALL, "train.batch_size=8", "models.batch_size=8"])
    sharded = tiny_config(root, [*SMALL, "train.batch_size=8", "models.batch_size=8", "models.mesh={fsdp = 8}"])
    placements = []
    train = FitClassifier._train

    def spy(self, res, directory, log=None):
        out = train(self, res, directory, log)
        model, _ = res.memo[f"classifier:{self.key}"]
        placements.append(len(model.backbone.embedding.get_value().sharding.device_set))
        return out

    monkeypatch.setattr(FitClassifier, "_train", spy)
    run_classification(one, run_dir=tmp_path / "one", store=tmp_path / "store-one", show_progress=False,
                       figures=False, log=lambda line: None)
    run_classification(sharded, run_dir=tmp_path / "mesh", store=tmp_path / "store-mesh", show_progress=False,
                       figures=False, log=lambda line: None)
    assert placements[: len(placements) // 2] == [1] * (len(placements) // 2)
    assert placements[len(placements) // 2:] == [8] * (len(placements) // 2)  # FSDP over the 8 devices
    a, b = _probs(tmp_path / "one"), _probs(tmp_path / "mesh")
    assert a.keys() == b.keys() == {"weak", "ceiling", "zero-shot", "student/cross_entropy"}
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=2e-4, err_msg=name)
