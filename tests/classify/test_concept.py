"""The concept world in classification form, end to end on a tiny world with short pre-training:
the items are the target concept's and the rival's outputs of each input (checked against the
world's tables), the models are the pre-training stages' checkpoints, and the run reports every
student without zero-shot or in-context stages. Its file's settings are checked too."""

import json
from pathlib import Path

import numpy as np
import pytest

from w2s_jax.classify import classification_graph, load_classification, run_classification
from w2s_jax.pipeline import ExperimentError, Store

SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "classification_concept_world.toml"
TINY = ["seeds=[0]", "concept_world.n_test_inputs=8", "concept_world.world.num_inputs=24",
        "concept_world.world.num_concepts=3", "concept_world.world.pairs_per_document=6",
        "concept_world.strong.hidden_size=32", "concept_world.strong.steps=12", "concept_world.strong.warmup_steps=2",
        "concept_world.strong.batch_size=8", "concept_world.strong.documents=128",
        "concept_world.strong.checkpoint_every=0",
        "concept_world.weak.steps=6", "concept_world.weak.warmup_steps=1", "concept_world.weak.batch_size=8",
        "concept_world.weak.documents=64", "concept_world.weak.checkpoint_every=0",
        "train.total_steps=3", "train.warmup_steps=1", "train.batch_size=4", "models.batch_size=8",
        "repair.knn.k=3", "report.bootstrap=100"]


def test_the_file_makes_its_own_data_and_models_and_refuses_answer_token_stages():
    config = load_classification(SHIPPED)
    assert config.concept_world is not None and not config.models.zero_shot and config.icl.demos == 0
    for override, message in (("models.zero_shot=true", "no answer tokens"), ("icl.demos=2", "no answer tokens"),
                              ('task.dataset="sciq"', "[concept_world] makes them"),
                              ("concept_world.world.num_input=3", "unknown key 'num_input'")):
        with pytest.raises(ExperimentError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_classification(SHIPPED, overrides=[override])


def test_a_tiny_concept_world_run(tmp_path):
    from w2s_jax.concept_world.world import World

    config = load_classification(SHIPPED, overrides=TINY)
    executed = []
    results = run_classification(config, run_dir=tmp_path / "run", store=tmp_path / "store", show_progress=False,
                                 figures=False, log=lambda line: None, executed=executed)
    graph = classification_graph(config, Store(tmp_path / "store"))
    assert len(executed) == len(graph.stages)
    assert [s.name for s in graph.stages[:2]] == ["pretrain/strong", "pretrain/weak"]
    [pair] = results["pairs"]
    assert (pair["weak"], pair["strong"]) == ("concept-weak", "concept-strong")
    subjects = [row["subject"] for row in pair["rows"]]
    assert subjects[:2] == ["weak", "ceiling"] and "zero-shot" not in subjects
    assert {"student/cross_entropy", "student/aux_confidence", "probe/knn", "student/repair-knn",
            "probe/logistic", "student/s2s-1"} <= set(subjects)
    # the items, against the world's tables: per test input, its target output (1) and another (0)
    [data] = [s for s in graph.stages if s.name == "concept-items/seed-0"]
    directory = Store(tmp_path / "store").directory(data)
    setup = json.loads((directory / "setup.json").read_text())
    world = World(config.concept_world.world)
    rows = [json.loads(line) for line in (directory / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(setup["test_inputs"]) == 16
    for x, (right, wrong) in zip(setup["test_inputs"], zip(rows[::2], rows[1::2])):
        y = int(world.tables_KxX[setup["target"], x])
        assert right == {"text": f"Question: x{x}\nAnswer: y{y}", "label": 1}
        assert wrong["label"] == 0 and wrong["text"].startswith(f"Question: x{x}\nAnswer: y")
        other = int(wrong["text"].rsplit("y", 1)[1])
        assert other != y
        if world.tables_KxX[setup["rival"], x] != y:
            assert other == world.tables_KxX[setup["rival"], x]
    assert np.mean([r["label"] for r in rows]) == 0.5
