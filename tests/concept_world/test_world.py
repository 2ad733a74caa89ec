"""The concept world's generator, tokenizer, exact Bayes posterior and controlled labellers."""

import itertools

import numpy as np
import pytest

from w2s_jax.concept_world.bayes import (
    chernoff_rate,
    label_law,
    posterior_K,
    predictive_Y,
)
from w2s_jax.concept_world.labellers import Labeller, deterministic_labels_X, labels_for
from w2s_jax.concept_world.world import World, WorldConfig, save_tokenizer


def test_generator_is_a_function_of_the_seed():
    config = WorldConfig(num_concepts=4, num_inputs=10, num_outputs=6, pairs_per_document=5, seed=3)
    a, b = World(config), World(config)
    assert np.array_equal(a.tables_KxX, b.tables_KxX)
    assert a.sample_documents(20, stream=0) == b.sample_documents(20, stream=0)
    assert a.sample_documents(20, stream=0) != a.sample_documents(20, stream=1)
    other = World(WorldConfig(num_concepts=4, num_inputs=10, num_outputs=6, pairs_per_document=5, seed=4))
    assert not np.array_equal(a.tables_KxX, other.tables_KxX)
    assert a.sample_documents(20, stream=0) != other.sample_documents(20, stream=0)


def test_documents_are_demonstrations_of_one_concept_with_noise():
    clean = World(WorldConfig(num_concepts=3, num_inputs=12, num_outputs=5, pairs_per_document=6, noise=0.0))
    for doc in clean.sample_documents(50, stream=0):
        pairs = [block.split("\n") for block in doc.split("\n\n")]
        xs = [clean.parse_input(q.removeprefix("Question: ")) for q, _ in pairs]
        ys = [clean.parse_output(a.removeprefix("Answer: ")) for _, a in pairs]
        assert len(pairs) == 6 and len(set(xs)) == 6
        assert any(np.array_equal(clean.tables_KxX[k, xs], ys) for k in range(3))  # one concept explains it
    noisy = World(WorldConfig(num_concepts=3, num_inputs=12, num_outputs=5, pairs_per_document=6, noise=0.5))
    explained = 0
    for doc in noisy.sample_documents(50, stream=0):
        pairs = [block.split("\n") for block in doc.split("\n\n")]
        xs = [noisy.parse_input(q.removeprefix("Question: ")) for q, _ in pairs]
        ys = [noisy.parse_output(a.removeprefix("Answer: ")) for _, a in pairs]
        explained += any(np.array_equal(noisy.tables_KxX[k, xs], ys) for k in range(3))
    assert explained < 25


def test_tokenizer_reads_documents_word_by_word(tmp_path):
    from w2s_jax.models import load_tokenizer

    world = World(WorldConfig(num_concepts=2, num_inputs=4, num_outputs=3, pairs_per_document=2))
    tokenizer = load_tokenizer(save_tokenizer(world, tmp_path))
    vocab = world.vocabulary()
    ids = tokenizer("Question: x3\nAnswer: y2\n\nQuestion: x0\nAnswer:")["input_ids"]
    assert [vocab[i] for i in ids] == ["<s>", "Question:", "x3", "Answer:", "y2", "Question:", "x0", "Answer:"]
    assert tokenizer.decode(ids[4:6]) == "y2 Question:"


def _brute_force(world, xs, ys, query):
    """p(k, ys, y_query | xs, query) by enumerating every concept, every noise flip and every
    replacement token of every demonstration and of the query."""
    eps, size = world.noise, world.config.num_outputs
    n = len(xs)
    joint = np.zeros((world.num_concepts, size))
    for k in range(world.num_concepts):
        for flips in itertools.product([0, 1], repeat=n + 1):
            for repl in itertools.product(range(size), repeat=n + 1):
                p = world.alpha_K[k]
                outs = []
                for i, x in enumerate(list(xs) + [query]):
                    if flips[i]:
                        p *= eps / size
                        outs.append(repl[i])
                    else:
                        if repl[i] != 0:  # a kept output draws no replacement: count it once
                            p = 0.0
                            break
                        p *= 1 - eps
                        outs.append(world.tables_KxX[k, x])
                if p and list(outs[:n]) == list(ys):
                    joint[k, outs[n]] += p
    return joint


def test_bayes_posterior_and_predictive_match_enumeration():
    world = World(WorldConfig(num_concepts=3, num_inputs=4, num_outputs=3, pairs_per_document=3,
                              noise=0.3, alpha=(0.5, 0.3, 0.2), seed=1))
    rng = np.random.default_rng(0)
    for _ in range(4):
        xs = rng.permutation(4)[:3].tolist()
        query, xs = xs[-1], xs[:-1]
        ys = rng.integers(0, 3, size=2).tolist()
        joint = _brute_force(world, xs, ys, query)
        np.testing.assert_allclose(posterior_K(world, xs, ys), joint.sum(1) / joint.sum(), rtol=1e-10)
        np.testing.assert_allclose(predictive_Y(world, xs, ys, query), joint.sum(0) / joint.sum(), rtol=1e-10)


def test_labellers_and_the_chernoff_rate_of_the_misaligned_transition():
    world = World(WorldConfig(num_concepts=4, num_inputs=40, num_outputs=8, noise=0.1))
    inputs = list(range(40))
    noisy = labels_for(world, 0, Labeller(kind="noisy", level=0.25), inputs * 20, seed=0, stream=0)
    accuracy = np.mean(np.asarray(noisy) == np.tile(world.tables_KxX[0], 20))
    assert abs(accuracy - 0.75) < 0.05
    small = deterministic_labels_X(world, 0, Labeller(kind="misaligned", level=0.2, rival=1), seed=0)
    large = deterministic_labels_X(world, 0, Labeller(kind="misaligned", level=0.6, rival=1), seed=0)
    moved_small = small != world.tables_KxX[0]
    assert np.all(small[moved_small] == world.tables_KxX[1][moved_small])
    assert np.all(large[moved_small] == small[moved_small])  # nested subsets
    rates = {}
    for gamma in (0.0, 0.3, 0.7, 1.0):
        labels = deterministic_labels_X(world, 0, Labeller(kind="misaligned", level=gamma, rival=1), seed=0)
        rates[gamma] = chernoff_rate(world, label_law(world, labels.tolist(), inputs, target=0), inputs, 0)
    assert rates[0.0] > rates[0.3] > 0 and rates[0.7] == rates[1.0] == 0
    biased = deterministic_labels_X(world, 0, Labeller(kind="biased", level=0.5), seed=0)
    assert np.mean(biased != world.tables_KxX[0]) == pytest.approx(0.5)
    split = deterministic_labels_X(world, 0, Labeller(kind="biased", level=0.25), seed=0,
                                   groups=[range(8), range(8, 40)])
    assert np.sum(split[:8] != world.tables_KxX[0, :8]) == 2  # the fraction is exact per split
    assert np.sum(split[8:] != world.tables_KxX[0, 8:]) == 8
