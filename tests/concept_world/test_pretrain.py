"""Pre-training on the concept world gives a checkpoint whose in-context accuracy rises with the
number of demonstrations; the same decoder untrained does not (so the test can fail)."""

import numpy as np
from flax import nnx

from w2s_jax.concept_world.pretrain import PretrainConfig, pretrain
from w2s_jax.concept_world.world import World, WorldConfig, save_tokenizer
from w2s_jax.inference import Engine
from w2s_jax.tasks.demonstrations import in_context_prompt
from w2s_jax.models import Transformer, save_pretrained
from w2s_jax.pipeline.models import load_model


def _accuracy(directory, world, n, draws=96):
    """Greedy one-token accuracy on a query absent from its n demonstrations of a random concept."""
    model, tokenizer = load_model(str(directory))
    engine = Engine(model, tokenizer, batch_size=96, length_bucket=16)
    rng = np.random.default_rng(0)
    prompts, gold = [], []
    for _ in range(draws):
        k = rng.integers(world.num_concepts)
        xs = rng.permutation(world.config.num_inputs)[: n + 1]
        demos = [(world.input_token(x), world.output_token(world.tables_KxX[k, x])) for x in xs[:n]]
        prompts.append(in_context_prompt(demos, world.input_token(xs[n])))
        gold.append(world.output_token(world.tables_KxX[k, xs[n]]))
    answers = engine.generate(prompts, max_new_tokens=1)
    return float(np.mean([a.strip() == g for a, g in zip(answers, gold)]))


def test_in_context_accuracy_rises_with_demonstrations_after_pretraining(tmp_path):
    world = World(WorldConfig(num_concepts=3, num_inputs=8, num_outputs=8, pairs_per_document=6, noise=0.0))
    config = PretrainConfig(hidden_size=32, num_layers=2, num_heads=4, steps=250, batch_size=32,
                            learning_rate=3e-3, warmup_steps=10, documents=2048, checkpoint_every=0)
    untrained = tmp_path / "untrained"
    save_pretrained(Transformer(config.model_config(world), rngs=nnx.Rngs(config.seed)),
                    config.model_config(world), untrained)
    save_tokenizer(world, untrained)
    stats = pretrain(world, config, tmp_path / "trained", checkpoint_dir=tmp_path / "ckpt", stream=0)
    assert stats["last_loss"] < stats["first_loss"]
    trained = {n: _accuracy(tmp_path / "trained", world, n) for n in (0, 3)}
    before = {n: _accuracy(untrained, world, n) for n in (0, 3)}
    # three demonstrations identify one of three concepts almost surely (Bayes accuracy ~1); with
    # none the best answer is the output most concepts share (about 0.5 in this small world)
    assert trained[3] >= 0.7 and trained[3] >= trained[0] + 0.2, trained
    assert before[3] < 0.4 and abs(before[3] - before[0]) < 0.2, before


def test_pretraining_resumes_from_the_trainers_checkpoints(tmp_path):
    world = World(WorldConfig(num_concepts=2, num_inputs=4, num_outputs=4, pairs_per_document=2))
    config = PretrainConfig(hidden_size=16, num_layers=1, num_heads=2, steps=6, batch_size=4,
                            warmup_steps=1, documents=16, checkpoint_every=3)
    first = pretrain(world, config, tmp_path / "a", checkpoint_dir=tmp_path / "ckpt", stream=0)
    again = pretrain(world, config, tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", stream=0)
    assert first["steps"] == again["steps"] == 6 and first["last_loss"] is not None
    assert again["last_loss"] is None  # restored at the last step: nothing retrained
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
