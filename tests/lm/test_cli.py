"""The `w2s` command line on a tiny checkpoint: its JSON equals the library's answer, and user errors
(bad flags, text the tokenizer cannot use, broken checkpoint files) exit with status 2 and one line
on stderr naming the problem, never a traceback."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.lm.hf_fixtures import make_hf_checkpoint
from w2s_jax.cli import main
from w2s_jax.inference import Temperature, TopK, TopP, generate, score
from w2s_jax.models import load_pretrained, load_tokenizer

pytest.importorskip("torch", reason="building the tiny checkpoint needs torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("cli"), "qwen3")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model, _ = load_pretrained(checkpoint)
    return model, load_tokenizer(checkpoint)


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_json_matches_library(checkpoint, loaded, capsys):
    model, tokenizer = loaded
    out = _json_out(capsys, ["generate", "--model", str(checkpoint), "--prompt", "the cat sat",
                             "--prompt", "why", "--max-new-tokens", "5", "--temperature", "0.8",
                             "--top-k", "20", "--top-p", "0.9", "--seed", "3", "--json"])
    expected = generate(model, tokenizer, ["the cat sat", "why"], max_new_tokens=5,
                        sampler=Temperature(0.8, filters=(TopK(20), TopP(0.9))), key=jax.random.key(3))
    assert [r["token_ids"] for r in out["results"]] == expected.token_ids
    assert [r["text"] for r in out["results"]] == expected.texts
    assert [r["finish_reason"] for r in out["results"]] == expected.finish_reasons
    assert out["results"][0]["prompt_token_ids"] == tokenizer("the cat sat")["input_ids"]


def test_generate_chat_plain_text(checkpoint, loaded, capsys):
    model, tokenizer = loaded
    assert main(["generate", "--model", str(checkpoint), "--prompt", "why", "--chat",
                 "--max-new-tokens", "3"]) == 0
    expected = generate(model, tokenizer, ["why"], max_new_tokens=3, chat=True)
    assert capsys.readouterr().out == expected.texts[0] + "\n"


def test_score_json_matches_library(checkpoint, loaded, capsys):
    model, tokenizer = loaded
    out = _json_out(capsys, ["score", "--model", str(checkpoint), "--prompt", "the cat",
                             "--completion", " sat on the mat", "--json"])
    (expected,) = score(model, tokenizer, ["the cat"], [" sat on the mat"])
    (row,) = out["results"]
    assert row["token_ids"] == expected.token_ids and len(row["token_ids"]) == 4
    assert row["token_logprobs"] == pytest.approx(expected.token_logprobs, abs=1e-6)
    assert row["sum_logprob"] == pytest.approx(expected.sum_logprob, abs=1e-5)
    assert row["sum_logprob"] < 0


def _error_line(capsys, argv) -> str:
    """Runs `w2s argv`, checks exit status 2 and a single stderr line, and returns that line."""
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"w2s {argv[0]}: error: ") and captured.out == ""
    return err


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "/nonexistent/model", "--prompt", "x"], "model directory not found"),
    (["generate", "--model", "{ckpt}", "--prompt", "x", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["generate", "--model", "{ckpt}", "--prompt", "x", "--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
    (["generate", "--model", "{ckpt}", "--prompt", "x", "--max-new-tokens", "0"], "max-new-tokens"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--temperature", "inf"],
     "--temperature must be a finite number >= 0, got inf"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--temperature", "nan"],
     "--temperature must be a finite number >= 0, got nan"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--temperature", "-1"],
     "--temperature must be a finite number >= 0, got -1.0"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--top-k", "-1"], "--top-k must be >= 0"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--seed", "-1"], "--seed must be in [0, 4294967296)"),
    (["generate", "--model", "{ckpt}", "--prompt", "the", "--prompt", ""], "prompt 1 is empty"),
    (["score", "--model", "{ckpt}", "--prompt", "a", "--prompt", "b", "--completion", "c"],
     "2 --prompt but 1 --completion"),
    (["score", "--model", "{empty}", "--prompt", "a", "--completion", "b"], "no config.json"),
    (["score", "--model", "{ckpt}", "--prompt", "the", "--completion", " cat", "--batch-size", "0"],
     "--batch-size must be >= 1, got 0"),
    (["score", "--model", "{ckpt}", "--prompt", "the", "--completion", " cat", "--batch-size", "-1"],
     "--batch-size must be >= 1, got -1"),
    (["score", "--model", "{ckpt}", "--prompt", "the", "--completion", "cat"],
     "pair 0 (prompt 'the', completion 'cat'): the completion merges with the prompt's last token"),
    (["score", "--model", "{ckpt}", "--prompt", "the cat", "--completion", " sat", "--prompt", "the",
      "--completion", ""], "pair 1 (prompt 'the', completion ''): the completion adds no tokens"),
    (["score", "--model", "{ckpt}", "--prompt", "", "--completion", " cat"], "the prompt gives no tokens"),
])
def test_user_errors_exit_2_with_one_line(checkpoint, tmp_path, capsys, argv, message):
    argv = [a.format(ckpt=checkpoint, empty=tmp_path) for a in argv]
    assert message in _error_line(capsys, argv)


def test_merged_completion_says_what_to_do(checkpoint, capsys):
    err = _error_line(capsys, ["score", "--model", checkpoint, "--prompt", "the", "--completion", "cat"])
    assert "with a space: ' cat'" in err


def test_top_k_zero_means_off(checkpoint, loaded, capsys):
    model, tokenizer = loaded
    out = _json_out(capsys, ["generate", "--model", str(checkpoint), "--prompt", "the cat sat",
                             "--max-new-tokens", "4", "--temperature", "0.8", "--top-k", "0",
                             "--seed", "5", "--json"])
    expected = generate(model, tokenizer, ["the cat sat"], max_new_tokens=4,
                        sampler=Temperature(0.8), key=jax.random.key(5))
    assert out["results"][0]["token_ids"] == expected.token_ids[0]


# --- positions past max_position_embeddings ---------------------------------------------------


@pytest.fixture(scope="module")
def short_context(checkpoint, tmp_path_factory):
    """The tiny checkpoint with max_position_embeddings=8."""
    path = shutil.copytree(checkpoint, tmp_path_factory.mktemp("short") / "ckpt")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    return path


def test_prompt_longer_than_max_positions_is_refused(short_context, capsys):
    nine_words = "the cat sat on the mat and then it"
    err = _error_line(capsys, ["generate", "--model", short_context, "--prompt", "the", "--prompt", nine_words])
    assert "prompt 1 is 9 tokens, more than the model's max_position_embeddings=8" in err
    err = _error_line(capsys, ["score", "--model", short_context, "--prompt", "the cat sat on the",
                               "--completion", " mat and then it"])
    assert "pair 0: prompt + completion is 9 tokens, more than the model's max_position_embeddings=8" in err


def test_generation_past_max_positions_warns(short_context, capsys):
    assert main(["generate", "--model", str(short_context), "--prompt", "the cat sat on the mat",
                 "--max-new-tokens", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: the longest prompt (6 tokens) + --max-new-tokens 3 runs past the model's " \
           "max_position_embeddings=8" in err


# --- the tokenizer and config are checked before the weights are read --------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    """Makes loading the weights fail the test: these errors must come before it."""
    import w2s_jax.models
    import w2s_jax.models.checkpoint

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(w2s_jax.models.checkpoint, "load_pretrained", fail)
    monkeypatch.setattr(w2s_jax.models, "load_pretrained", fail)


def test_chat_without_template_fails_before_the_model_loads(checkpoint, tmp_path, capsys, no_model_loading):
    path = shutil.copytree(checkpoint, tmp_path / "ckpt")
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    err = _error_line(capsys, ["generate", "--model", path, "--prompt", "why", "--chat"])
    assert "--chat: the tokenizer of" in err and "has no chat template" in err


def test_text_errors_come_before_the_model_loads(checkpoint, capsys, no_model_loading):
    assert "prompt 0 is empty" in _error_line(capsys, ["generate", "--model", checkpoint, "--prompt", ""])
    assert "adds no tokens" in _error_line(
        capsys, ["score", "--model", checkpoint, "--prompt", "the", "--completion", ""])


# --- broken checkpoint files ----------------------------------------------------------------


def _broken(checkpoint, tmp_path, name, edit):
    """A copy of the checkpoint whose file `name` is rewritten by `edit(bytes) -> bytes`."""
    path = shutil.copytree(checkpoint, tmp_path / "ckpt")
    (path / name).write_bytes(edit((path / name).read_bytes()))
    return path


def _header_with_offsets_past_the_end(data: bytes) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(n for n in header if n != "__metadata__")
    begin, end = header[name]["data_offsets"]
    size = len(data) - 8 - length
    header[name]["data_offsets"] = [size - (end - begin) + 4, size + 4]  # right size, 4 bytes past
    header_bytes = json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data[8 + length:]


@pytest.mark.parametrize("name, edit, message", [
    ("model.safetensors", lambda b: b[: len(b) // 2], r"data_offsets \[\d+, \d+\] lie outside the file"),
    ("model.safetensors", lambda b: bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
     r"header length \d+ bytes is beyond the file size \(4096 bytes\)"),
    ("model.safetensors", lambda b: b"", r"the file is 0 bytes, too short for the 8-byte header length"),
    ("model.safetensors", lambda b: b[:8] + b[8:40], r"header length \d+ bytes is beyond the file size \(40 bytes\)"),
    ("model.safetensors", _header_with_offsets_past_the_end, r"lie outside the file: only \d+ bytes follow"),
    ("config.json", lambda b: b[:-20], r"config\.json: not valid JSON"),
])
def test_broken_files_are_named(checkpoint, tmp_path, capsys, name, edit, message):
    path = _broken(checkpoint, tmp_path, name, edit)
    err = _error_line(capsys, ["score", "--model", path, "--prompt", "the", "--completion", " cat"])
    assert f"could not load '{path}': {path / name}" in err and re.search(message, err), err


def test_directory_without_tokenizer_files(checkpoint, tmp_path, capsys):
    path = shutil.copytree(checkpoint, tmp_path / "ckpt")
    for file in path.iterdir():
        if file.name.startswith("tokenizer") or file.suffix == ".jinja":
            file.unlink()
    err = _error_line(capsys, ["score", "--model", path, "--prompt", "the", "--completion", " cat"])
    assert f"no tokenizer files in {path}: looked for tokenizer.json, tokenizer_config.json" in err


def test_loader_message_keeps_its_whole_first_paragraph(checkpoint, capsys, monkeypatch):
    import w2s_jax.models.tokenizer

    def fail(path):
        raise OSError("Can't load tokenizer for 'x'. Make sure that\n'x' is the correct path to a "
                      "directory.\n\nSecond paragraph with details.")

    monkeypatch.setattr(w2s_jax.models.tokenizer, "load_tokenizer", fail)
    err = _error_line(capsys, ["score", "--model", checkpoint, "--prompt", "the", "--completion", " cat"])
    assert err.endswith("Can't load tokenizer for 'x'. Make sure that 'x' is the correct path to a directory.")


def test_argparse_errors_return_2(capsys):
    assert main(["generate", "--prompt", "x"]) == 2  # --model missing
    assert "--model" in capsys.readouterr().err


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "w2s_jax.cli", "score", "--model",
                           str(tmp_path / "missing"), "--prompt", "a", "--completion", "b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model directory not found" in proc.stderr


def test_console_run_fills_the_compilation_cache(checkpoint, tmp_path):
    cache = tmp_path / "jax-cache"
    proc = subprocess.run([sys.executable, "-m", "w2s_jax.cli", "score", "--model", str(checkpoint),
                           "--prompt", "the cat", "--completion", " sat", "--json"],
                          env={**os.environ, "W2S_COMPILATION_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["token_ids"] == [8]  # "sat"
    assert any(cache.iterdir())  # the compiled forward pass was written for the next run
