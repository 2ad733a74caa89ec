"""The concept world in classification form, end to end on a tiny world with short pre-training:
the items are the target concept's and the rival's outputs of each input (checked against the
world's tables), the models are the pre-training stages' checkpoints, and the run reports every
student without a zero-shot stage. Its file's settings are checked too; the in-context refinement
is checked against the decoder's own next-token distribution on a prompt written out by hand."""

import json
from pathlib import Path

import numpy as np
import pytest

from w2s_jax.classify import classification_graph, load_classification, run_classification
from w2s_jax.pipeline import ExperimentError, Store

SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "classification_concept_world.toml"
TINY = ["seeds=[0]", "concept_world.n_test_inputs=8", "concept_world.strong_chunks=1", "concept_world.weak_chunk=0",
        "concept_world.items_per_input=2", 'concept_world.readout="pair"',
        "icl.demos=3", "concept_world.world.num_inputs=24",
        "concept_world.world.num_concepts=3", "concept_world.world.pairs_per_document=6",
        "concept_world.strong.hidden_size=32", "concept_world.strong.steps=12", "concept_world.strong.warmup_steps=2",
        "concept_world.strong.batch_size=8", "concept_world.strong.documents=128",
        "concept_world.strong.checkpoint_every=0",
        "concept_world.weak.steps=6", "concept_world.weak.warmup_steps=1", "concept_world.weak.batch_size=8",
        "concept_world.weak.documents=64", "concept_world.weak.checkpoint_every=0",
        "train.total_steps=3", "train.warmup_steps=1", "train.batch_size=4", "models.batch_size=8",
        "repair.knn.k=3", "report.bootstrap=100"]


def test_the_file_makes_its_own_data_and_models_and_refuses_a_zero_shot_stage(tmp_path):
    config = load_classification(SHIPPED)
    cw = config.concept_world
    assert cw is not None and not config.models.zero_shot and config.icl.demos == 8
    assert (cw.strong_chunks, cw.weak_chunk, cw.weak, cw.items_per_input, cw.readout) == (6, 3, None, 1, "query")
    graph = classification_graph(config, Store(tmp_path / "store"))
    chain = [s for s in graph.stages if s.name.startswith("pretrain/")]
    assert [s.name for s in chain] == ["pretrain/strong"] + [f"pretrain/strong/chunk-{c}" for c in range(2, 7)]
    assert [s.total_steps for s in chain] == [2500 * c for c in range(1, 7)]
    weak = [s for s in graph.stages if s.name == "weak-model/concept-weak/seed-0"][0]
    assert weak.base.made_by == chain[2].key  # the weak model is the strong decoder after chunk 3
    for override, message in (("models.zero_shot=true", "no answer tokens"),
                              ("concept_world.weak_chunk=6", "must be below strong_chunks"),
                              ("concept_world.weak.steps=100", "give exactly one"),
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
            "probe/logistic", "student/s2s-1", "student/icl-refine"} <= set(subjects)
    assert "icl-refine" in {row["labels"] for row in results["label_sets"]}
    # the pre-registered predictions are checked (one seed: no interval over seeds)
    assert [p["id"] for p in results["predictions"]] == [f"C{i}" for i in range(8)]
    assert {p["status"] for p in results["predictions"][:7]} == {"NO INTERVAL"}
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


def test_refined_labels_are_the_decoders_probability_of_the_items_output(tmp_path):
    """The refinement's prompts and probabilities against a hand-written document and a direct
    forward pass of the strong decoder (softmax over the world's output tokens)."""
    import jax
    import jax.numpy as jnp

    from w2s_jax.classify.concept_refine import ConceptRefine
    from w2s_jax.concept_world.world import World
    from w2s_jax.pipeline.models import load_model

    config = load_classification(SHIPPED, overrides=TINY)
    store = Store(tmp_path / "store")
    run_classification(config, run_dir=tmp_path / "run", store=tmp_path / "store", show_progress=False,
                       figures=False, log=lambda line: None)
    [refine] = [s for s in classification_graph(config, store).stages if isinstance(s, ConceptRefine)]
    world = World(config.concept_world.world)
    items = refine.items.items(store, "b")
    weak = refine.weak.soft_labels(store)
    records = {r["index"]: r for r in refine.records(store)}
    assert sorted(records) == [item["index"] for item in items]
    model, tokenizer = load_model(refine.base.path)
    outputs = [tokenizer.convert_tokens_to_ids(f"y{y}") for y in range(world.config.num_outputs)]
    for item in items[:4]:
        record = records[item["index"]]
        x, y = (int(w[1:]) for w in item["text"].split()[1::2])
        shown = [items[i] for i in record["demos"]]
        assert len(shown) == 3 and all(weak[d["index"]] > 0.5 for d in shown)
        inputs = [d["text"].split()[1] for d in shown]
        assert len(set(inputs)) == 3 and f"x{x}" not in inputs
        prompt = "\n\n".join(d["text"] for d in shown) + f"\n\nQuestion: x{x}\nAnswer:"
        ids = tokenizer(prompt)["input_ids"]
        tokens = jnp.asarray([ids])
        logits, _ = model(tokens, positions_BxT=jnp.arange(len(ids))[None], valid_BxT=jnp.ones_like(tokens, bool))
        expected = jax.nn.softmax(logits[0, -1, jnp.asarray(outputs)])[y]
        assert record["prob"] == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


def test_one_item_per_input_read_out_at_a_query(tmp_path):
    """``items_per_input = 1``: each input once, the target's or the rival's output; ``readout =
    "query"``: every item ends with the same query of an input where all concepts differ, an input
    that has no item itself."""
    from w2s_jax.classify.concept import ConceptItems
    from w2s_jax.classify.concept_refine import parse_item
    from w2s_jax.concept_world.world import World, WorldConfig

    config = WorldConfig(num_concepts=6, num_inputs=96, num_outputs=16)
    world = World(config)
    stage = ConceptItems(name="items", world=config, n_test_inputs=32, seed=3, items_per_input=1, readout="query")
    stage.execute(None, tmp_path)
    setup = json.loads((tmp_path / "setup.json").read_text())
    r = setup["query_input"]
    assert len(set(world.tables_KxX[:, r].tolist())) == 6
    assert r not in setup["train_inputs"] and r not in setup["test_inputs"]
    for split, inputs in (("train", setup["train_inputs"]), ("test", setup["test_inputs"])):
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == len(inputs) == (63 if split == "train" else 32)
        for x, row in zip(inputs, rows):
            head, tail = row["text"].split("\n\n")
            assert tail == f"Question: x{r}\nAnswer:" and head.startswith(f"Question: x{x}\nAnswer: y")
            y = int(head.rsplit("y", 1)[1])
            assert row["label"] == int(y == world.tables_KxX[setup["target"], x])
        assert 0.3 < np.mean([row["label"] for row in rows]) < 0.7  # a coin per input
    assert parse_item(world, rows[0]["text"]) == (setup["test_inputs"][0], int(rows[0]["text"].split()[3][1:]))
