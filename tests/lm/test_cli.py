"""The `w2s` command line on a tiny checkpoint: its JSON equals the library's answer, and user errors
exit with status 2 and one line on stderr."""

import json
import subprocess
import sys

import jax
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


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "/nonexistent/model", "--prompt", "x"], "model directory not found"),
    (["generate", "--model", "{ckpt}", "--prompt", "x", "--top-p", "1.5"], "1.5"),
    (["generate", "--model", "{ckpt}", "--prompt", "x", "--max-new-tokens", "0"], "max-new-tokens"),
    (["score", "--model", "{ckpt}", "--prompt", "a", "--prompt", "b", "--completion", "c"],
     "2 --prompt but 1 --completion"),
    (["score", "--model", "{empty}", "--prompt", "a", "--completion", "b"], "no config.json"),
])
def test_user_errors_exit_2_with_one_line(checkpoint, tmp_path, capsys, argv, message):
    argv = [a.format(ckpt=checkpoint, empty=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_argparse_errors_return_2(capsys):
    assert main(["generate", "--prompt", "x"]) == 2  # --model missing
    assert "--model" in capsys.readouterr().err


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "w2s_jax.cli", "score", "--model",
                           str(tmp_path / "missing"), "--prompt", "a", "--completion", "b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model directory not found" in proc.stderr
