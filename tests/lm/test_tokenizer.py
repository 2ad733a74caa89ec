"""The tokenizer loader keeps a checkpoint's own tokenizer, names what is missing, and turning text
into tokens refuses prompts and pairs that give nothing to run or score."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.lm.hf_fixtures import CHAT_TEMPLATE, SPECIAL_TOKENS, WORDS, write_tokenizer
from w2s_jax.inference.prompts import encode_prompts
from w2s_jax.inference.scoring import tokenize_pair
from w2s_jax.models.tokenizer import TOKENIZER_FILES, load_tokenizer

WORD_IDS = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(WORDS))}


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """A Qwen2 checkpoint directory (config.json only: no weights needed) with a custom word-level
    tokenizer saved by `PreTrainedTokenizerFast.save_pretrained`."""
    path = tmp_path_factory.mktemp("qwen2-word-level")
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    write_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(qwen2_dir):
    return load_tokenizer(qwen2_dir)


@pytest.mark.parametrize("tokenizer_class", ["TokenizersBackend", "PreTrainedTokenizerFast"])
def test_qwen2_checkpoint_keeps_its_word_level_tokenizer(qwen2_dir, tmp_path, tokenizer_class):
    # transformers 5 writes TokenizersBackend, transformers 4 PreTrainedTokenizerFast; with either,
    # AutoTokenizer would take Qwen2Tokenizer from config.json and encode these words to [5, 5].
    path = tmp_path / "ckpt"
    path.mkdir()
    for file in qwen2_dir.iterdir():
        (path / file.name).write_bytes(file.read_bytes())
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}))
    tokenizer = load_tokenizer(path)
    prompt = "the cat sat on the mat"
    assert tokenizer(prompt)["input_ids"] == [WORD_IDS[w] for w in prompt.split()]
    assert tokenizer.decode(tokenizer(prompt)["input_ids"]) == prompt
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_word_level_tokenizer_loads_without_torch_or_jax(qwen2_dir):
    # The generic tokenizer path skips AutoTokenizer's model-config imports (PyTorch), which are
    # over a second of every `w2s` command's start-up.
    code = ("import sys; from w2s_jax.models.tokenizer import load_tokenizer; "
            f"assert load_tokenizer({str(qwen2_dir)!r})('the cat')['input_ids'] == [4, 6]; "
            "print(sorted(m for m in ('torch', 'jax', 'flax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_directory_without_tokenizer_files_lists_what_was_looked_for(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and all(name in message for name in TOKENIZER_FILES)


def test_invalid_tokenizer_config_is_named(qwen2_dir, tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    for file in qwen2_dir.iterdir():
        (path / file.name).write_bytes(file.read_bytes())
    (path / "tokenizer_config.json").write_text('{"tokenizer_class": ')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: not valid JSON"):
        load_tokenizer(path)


# --- prompts and pairs that give nothing to run or score ------------------------------------


@pytest.mark.parametrize("prompts, message", [
    (["the cat", ""], "prompt 1 is empty"),
    (["   "], "prompt 0 '   ' encodes to no tokens"),
    ([[4, 6], []], "prompt 1 is an empty token list"),
])
def test_prompts_without_tokens_are_refused(tokenizer, prompts, message):
    with pytest.raises(ValueError, match=message):
        encode_prompts(tokenizer, prompts)


def test_prompt_encoding_gives_word_ids(tokenizer):
    assert encode_prompts(tokenizer, ["the cat", [7, 8]]) == [[4, 6], [7, 8]]


@pytest.mark.parametrize("prompt, completion, message", [
    ("the", "cat", r"pair 3 .*merges with the prompt's last token.*with a space: ' cat'"),
    ("the", "", r"pair 3 .*adds no tokens after the prompt"),
    ("", " cat", r"pair 3 .*the prompt gives no tokens"),
    ([4], [], r"pair 3 .*adds no tokens"),
])
def test_pairs_without_context_or_completion_are_refused(tokenizer, prompt, completion, message):
    with pytest.raises(ValueError, match=message):
        tokenize_pair(tokenizer, prompt, completion, 3)


def test_pair_split_at_the_prompt(tokenizer):
    assert tokenize_pair(tokenizer, "the cat", " sat on") == ([4, 6, 8, 9], 2)
    assert tokenize_pair(tokenizer, "the ca", "t") == ([4, 6], 1)  # merged token is completion
