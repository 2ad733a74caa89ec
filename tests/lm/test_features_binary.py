"""Last-token features and two-token zero-shot probabilities against the Hugging Face PyTorch model
(its final-norm hidden state and its next-token logits, computed here), their batching (one
compile per bucket, input order kept, a mesh giving the same numbers) and their errors."""

import numpy as np
import pytest

from tests.lm.hf_fixtures import WORDS, load_hf_torch_model, make_hf_checkpoint
from w2s_jax.inference import features as features_module
from w2s_jax.inference import classifier_probs, label_token_logprobs, label_token_probs, last_token_features
from w2s_jax.models import Classifier, load_classifier, load_pretrained, load_tokenizer
from w2s_jax.parallel import MeshConfig, make_mesh
from w2s_jax.train import ClassificationDataset

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")


def _texts(n, *, lengths=(1, 12), seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(*lengths))) for _ in range(n)]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def checkpoint(request, tmp_path_factory):
    """(family, directory, our model, tokenizer, the PyTorch reference)."""
    path = make_hf_checkpoint(tmp_path_factory.mktemp("hf"), request.param)
    model, _ = load_pretrained(path)
    return request.param, path, model, load_tokenizer(path), load_hf_torch_model(path)


def _reference_features(reference, ids):
    with torch.no_grad():  # one unpadded row: the final-norm hidden state of its last token
        return reference.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy()


def test_features_equal_the_reference_final_norm_state_of_the_last_token(checkpoint):
    _, path, model, tokenizer, reference = checkpoint
    texts = _texts(11)
    got = last_token_features(model, tokenizer, texts, batch_size=4, max_len=64, show_progress=False)
    assert got.shape == (11, model.config.hidden_size) and got.dtype == np.float32
    data = ClassificationDataset([{"text": t, "soft_label": 0} for t in texts], tokenizer, max_len=64)
    for i in range(len(texts)):  # the tokens a ClassificationDataset gives the classifier
        ids = data.collate([i])["tokens_BxT"][0][data.collate([i])["valid_BxT"][0]].tolist()
        np.testing.assert_allclose(got[i], _reference_features(reference, ids), atol=1e-4, rtol=0)
    # a Classifier's features are its backbone's; its head reads them
    classifier = load_classifier(path)
    np.testing.assert_array_equal(
        last_token_features(classifier, tokenizer, texts, batch_size=4, max_len=64, show_progress=False), got)


def test_features_compile_once_per_bucket_and_keep_input_order(checkpoint):
    _, _, model, tokenizer, _ = checkpoint
    short = _texts(12, lengths=(1, 10), seed=1)  # <= 10 tokens with BOS: one length bucket (16)
    count = lambda: features_module.TRACE_COUNTS["last_features"]  # noqa: E731
    before = count()
    # batches of 3 rows (no other test uses 3): four batches of (3 rows, 16 slots), one program
    first = last_token_features(model, tokenizer, short, batch_size=3, max_len=64, show_progress=False, streams=2)
    assert count() - before == 1
    again = last_token_features(model, tokenizer, short[::-1], batch_size=3, max_len=64, show_progress=False)
    assert count() - before == 1  # no new shape, no new compile
    np.testing.assert_array_equal(again, first[::-1])
    one = last_token_features(model, tokenizer, short[5:6], batch_size=4, max_len=64, show_progress=False)
    np.testing.assert_allclose(one[0], first[5], atol=1e-5)  # batched with others or alone, padded or not
    # a text of 20 words: its batch (with the two longest others) takes a second length bucket (24)
    before = count()
    last_token_features(model, tokenizer, short[:5] + [" ".join(["cat"] * 20)], batch_size=3, max_len=64,
                        show_progress=False)
    assert count() - before == 1


def test_features_on_a_mesh_equal_one_device(checkpoint):
    _, path, model, tokenizer, _ = checkpoint
    texts = _texts(10, seed=2)
    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    sharded, _ = load_pretrained(path, mesh=mesh)
    expected = last_token_features(model, tokenizer, texts, batch_size=8, max_len=64, show_progress=False)
    got = last_token_features(sharded, tokenizer, texts, batch_size=8, max_len=64, mesh=mesh, show_progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="features batch_size=6 is not a multiple"):
        last_token_features(sharded, tokenizer, texts, batch_size=6, max_len=64, mesh=mesh)


def test_classifier_probs_equal_the_classifier_on_a_left_padded_batch(checkpoint):
    _, path, _, tokenizer, _ = checkpoint
    classifier = load_classifier(path)
    rng = np.random.default_rng(0)
    classifier.score_kernel.set_value(rng.normal(size=(classifier.config.hidden_size, 2)).astype(np.float32))
    classifier.score_bias.set_value(np.asarray([0.3, -0.3], np.float32))
    texts = _texts(7, seed=3)
    probs = classifier_probs(classifier, tokenizer, texts, batch_size=4, max_len=64, show_progress=False)
    batch = ClassificationDataset([{"text": t, "soft_label": 0} for t in texts], tokenizer, max_len=64).collate(
        range(7))
    logits = np.asarray(classifier(batch["tokens_BxT"], positions_BxT=batch["positions_BxT"],
                                   valid_BxT=batch["valid_BxT"]), np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert probs.shape == (7, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert np.ptp(probs[:, 1]) > 0.05  # the texts really differ
    with pytest.raises(ValueError, match="needs a Classifier"):
        classifier_probs(classifier.backbone, tokenizer, texts)


def test_features_name_a_text_without_tokens(checkpoint):
    _, _, model, tokenizer, _ = checkpoint
    with pytest.raises(ValueError, match="text 1 gives no tokens"):
        last_token_features(model, tokenizer, ["the cat", ""], batch_size=2, max_len=8)


PROMPTS = ["is the cat big answer", "the dog sat on the mat is it red answer", "true or false answer",
           "she ran home then he ran to the big red mat answer"]


def test_label_token_probs_equal_the_reference_next_token_distribution(checkpoint):
    _, _, model, tokenizer, reference = checkpoint
    labels = (" no", " yes")
    probs = label_token_probs(model, tokenizer, PROMPTS, label_texts=labels, batch_size=2, show_progress=False)
    logprobs = label_token_logprobs(model, tokenizer, PROMPTS, label_texts=labels, batch_size=4,
                                    show_progress=False)
    assert probs.shape == logprobs.shape == (4, 2)
    vocab = tokenizer.get_vocab()
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            logits = reference(input_ids=torch.tensor([ids])).logits[0, -1].double()
        full = torch.log_softmax(logits, -1).numpy()
        expected_logprobs = full[[vocab["no"], vocab["yes"]]]
        np.testing.assert_allclose(logprobs[i], expected_logprobs, atol=1e-4)
        expected = np.exp(expected_logprobs) / np.exp(expected_logprobs).sum()
        np.testing.assert_allclose(probs[i], expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert np.ptp(probs[:, 1]) > 1e-3  # the prompts really differ


def test_label_texts_that_cannot_classify_are_errors(checkpoint):
    _, path, model, tokenizer, _ = checkpoint
    with pytest.raises(ValueError, match=r"start with the same token.*after prompt 0"):
        label_token_probs(model, tokenizer, PROMPTS, label_texts=(" yes", " yes please"))
    with pytest.raises(ValueError, match="label text '' gives no tokens after prompt 0"):
        label_token_probs(model, tokenizer, PROMPTS, label_texts=("", " yes"))
    with pytest.raises(ValueError, match="label text 'yes' merges with the last token of prompt 0"):
        label_token_probs(model, tokenizer, PROMPTS, label_texts=(" no", "yes"))
    with pytest.raises(ValueError, match="a Classifier's head has none"):
        label_token_probs(Classifier(model), tokenizer, PROMPTS, label_texts=(" no", " yes"))
