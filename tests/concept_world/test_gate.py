"""The pre-training gate: held-out prompts, the verdict, and chunked pre-training on a tiny world
that continues each chunk from the last, stops at the first chunk that passes, and resumes from
the store."""

import dataclasses

import numpy as np
import pytest

from w2s_jax.concept_world.config import ConceptWorldConfig, SplitConfig
from w2s_jax.concept_world.experiment import pass_gate, strong_chunk
from w2s_jax.concept_world.gate import GateConfig, held_out_prompts, trajectory_chunks, verdict
from w2s_jax.concept_world.pretrain import PretrainConfig
from w2s_jax.concept_world.world import World, WorldConfig
from w2s_jax.pipeline import Resources, Store
from w2s_jax.pipeline.artifacts import read_json
from w2s_jax.pipeline.models import ModelPool


def test_held_out_prompts_follow_the_pretraining_law():
    world = World(WorldConfig(num_concepts=4, num_inputs=20, num_outputs=8, noise=0.25))
    cases = held_out_prompts(world, 6, 400)
    assert cases == held_out_prompts(world, 6, 400)
    assert all(q not in xs and len(set(xs)) == 6 for _, xs, _, q in cases)
    kept = np.mean([y == world.tables_KxX[k, x] for k, xs, ys, _ in cases for x, y in zip(xs, ys)])
    expected = 1 - 0.25 + 0.25 / 8  # a replaced output can land on the right one
    assert abs(kept - expected) < 4 * np.sqrt(expected * (1 - expected) / 2400)


def test_verdict_is_the_largest_shortfall_below_bayes():
    rows = [{"n": 1, "model": 0.70, "bayes": 0.72}, {"n": 4, "model": 0.90, "bayes": 0.99}]
    assert verdict(rows, 0.05) == {"gap": pytest.approx(0.09), "worst_n": 4, "tolerance": 0.05, "passed": False}
    assert verdict(rows, 0.10)["passed"]
    with pytest.raises(ValueError, match="gate.tolerance must be in"):
        GateConfig(tolerance=1.5)


def _records(*gaps):
    return [{"chunk": c, "gap": g} for c, g in enumerate(gaps, start=1)]


@pytest.mark.parametrize("gaps, expected", [
    # the first earlier chunk within 0.25 is the intermediate, the one before it the weak base
    ((0.73, 0.62, 0.54, 0.19, 0.05, 0.03), {"strong": 6, "intermediate": 4, "weak": 3, "intermediate_passed": True}),
    ((0.65, 0.24, 0.20, 0.04), {"strong": 4, "intermediate": 2, "weak": 1, "intermediate_passed": True}),
    # no earlier chunk within 0.25: the chunk before the strong one, flagged
    ((0.70, 0.60, 0.04), {"strong": 3, "intermediate": 2, "weak": 1, "intermediate_passed": False}),
    # the strong model's own chunk never counts as the intermediate, even within 0.25
    ((0.30, 0.26, 0.25), {"strong": 3, "intermediate": 2, "weak": 1, "intermediate_passed": False}),
    ((0.04,), {"strong": 1, "intermediate": 1, "weak": 1, "intermediate_passed": False}),
])
def test_trajectory_chunks_pick_the_three_models_by_the_fixed_rule(gaps, expected):
    assert trajectory_chunks(_records(*gaps), 0.25) == expected


def test_bad_intermediate_tolerance_and_empty_records_are_refused():
    with pytest.raises(ValueError, match=r"gate.intermediate_tolerance must be in \[0, 1\)"):
        GateConfig(intermediate_tolerance=1.5)
    with pytest.raises(ValueError, match="at least one chunk"):
        trajectory_chunks([], 0.25)


def _config(tolerance, max_chunks):
    world = WorldConfig(num_concepts=3, num_inputs=8, num_outputs=8, pairs_per_document=6, noise=0.0)
    strong = PretrainConfig(hidden_size=32, num_layers=2, num_heads=4, steps=120, batch_size=32,
                            warmup_steps=10, documents=1024, checkpoint_every=0)
    quick = ConceptWorldConfig.quick()
    return dataclasses.replace(quick, world=world, strong=strong, split=SplitConfig(n_gold=3, n_train=4),
                               sweeps=dataclasses.replace(quick.sweeps, sizes=()),
                               gate=GateConfig(demos=(0, 3), prompts=64, tolerance=tolerance,
                                               max_chunks=max_chunks))


def test_chunked_pretraining_stops_at_the_gate_and_resumes(tmp_path):
    res = Resources(Store(tmp_path / "store"), ModelPool(batch_size=64, length_bucket=16), show_progress=False)
    # tolerance 0: the model must match Bayes at every n; chunks run until it does or 2 are spent
    config = _config(tolerance=0.0, max_chunks=2)
    gate = config.gate
    strict = config
    last, records = pass_gate(strict, 0, res, log=lambda line: None)
    assert [r["chunk"] for r in records] == list(range(1, len(records) + 1)) and last.chunk == len(records)
    assert not any(r["passed"] for r in records[:-1]) and (records[-1]["passed"] or len(records) == 2)
    assert last.total_steps == 120 * last.chunk
    from w2s_jax.pipeline import run_stages

    run_stages([strong_chunk(strict, 0, 2)], res, log=lambda line: None)
    last = strong_chunk(strict, 0, 2)
    first = read_json(res.store.directory(strong_chunk(strict, 0, 1)) / "pretrain.json")
    second = read_json(res.store.directory(last) / "pretrain.json")
    assert second["first_loss"] < first["first_loss"] - 0.5  # chunk 2 starts from chunk 1's weights
    records = pass_gate(dataclasses.replace(strict, gate=dataclasses.replace(gate, max_chunks=2, tolerance=0.0)),
                        0, res, log=lambda line: None)[1]
    # the curve: after 240 steps on a noiseless 3-concept world, 3 demonstrations nearly decide
    rows = {r["n"]: r for r in records[-1]["rows"]}
    assert rows[3]["bayes"] >= 0.9 and rows[3]["model"] >= rows[0]["model"] + 0.2, rows
    executed = []
    again, records_again = pass_gate(strict, 0, res, log=lambda line: None, executed=executed)
    assert executed == [] and records_again == records  # resumed from the store
    # a tolerance the first chunk meets stops after it (its stages are the ones already computed)
    loose = dataclasses.replace(config, gate=dataclasses.replace(gate, tolerance=0.99))
    stage, loose_records = pass_gate(loose, 0, res, log=lambda line: None, executed=executed)
    assert stage.chunk == 1 and len(loose_records) == 1 and loose_records[0]["passed"]
