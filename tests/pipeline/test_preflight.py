"""`w2s run` refuses what it can know is wrong before its first stage: each case through the CLI
exits 2 with exactly one line on stderr naming the problem, runs no stage and writes nothing.

The world is two tiny random checkpoints (tests/lm/hf_fixtures.py) and the `qa` task; each case
breaks one thing in a copy. `run_experiment` is replaced by a function that fails the test, so a
case caught only by the run's own later checks (or not at all) fails here. Token counts in the
messages are checked against what fine-tuning (`SFTDataset`) and inference (`Engine.encode`)
actually build, not against the checks' own arithmetic.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.lm.hf_fixtures import SPECIAL_TOKENS, WORDS, make_hf_checkpoint
from w2s_jax.cli import main
from w2s_jax.tasks.data import overlap_key

pytest.importorskip("torch", reason="building the tiny checkpoints needs torch")

VOCAB = len(SPECIAL_TOKENS) + len(WORDS)
TRAIN = ["the cat sat on the mat", "a dog ran to the big home", "why is the sky blue",
         "how big is a small dog", "what is the answer to the question"]
TEST = ["she ran home", "he sat on a red mat", "is it true or false"]


def _jsonl(path, questions, answers=None):
    answers = answers or ["yes"] * len(questions)
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(questions, answers)))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    strong = make_hf_checkpoint(root / "strong", "llama", seed=0, vocab_size=VOCAB)
    weak = make_hf_checkpoint(root / "weak", "llama", seed=1, vocab_size=VOCAB, num_hidden_layers=1)
    _jsonl(root / "train.jsonl", TRAIN)
    _jsonl(root / "test.jsonl", TEST)
    return root, strong, weak


def experiment(world, directory, *, train=None, test=None, strong=None, weak=None, top="", task="",
               models="", extra=""):
    """An experiment file in ``directory``; keyword arguments replace or add to its parts."""
    root, strong_dir, weak_dir = world
    weak = weak if weak is not None else [str(weak_dir)]
    path = directory / "experiment.toml"
    path.write_text(textwrap.dedent(f"""
        name = "tiny"
        {top}
        [task]
        name = "qa"
        {task}
        [data]
        train = "{train or root / 'train.jsonl'}"
        test = "{test or root / 'test.jsonl'}"
        [models]
        strong = "{strong or strong_dir}"
        weak = {json.dumps([str(w) for w in weak])}
        {models}
        [methods]
        run = ["zero-shot", "naive", "gold"]
        [generation]
        max_new_tokens = 3
        [train]
        total_steps = 2
        warmup_steps = 1
        batch_size = 2
        max_len = 64
        learning_rate = 0.01
        {extra}
    """))
    return path


@pytest.fixture
def no_run(monkeypatch):
    """Makes reaching the run itself fail the test: every case must be refused before it."""
    import w2s_jax.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the run started: the problem was not caught before the first stage")

    monkeypatch.setattr(w2s_jax.pipeline.runner, "run_experiment", refuse)


def refused(capsys, tmp_path, path, *flags):
    """Runs `w2s run path --out <fresh dir>`; checks exit 2, one stderr line, nothing written."""
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), *flags]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("w2s run: error: ") and captured.out == ""
    assert not out.exists()
    return err


def copy_of(checkpoint, tmp_path, name="ckpt"):
    return shutil.copytree(checkpoint, tmp_path / name)


def rewrite(path, edit):
    path.write_bytes(edit(path.read_bytes()))


# --- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["strong", "weak", "intermediate"])
@pytest.mark.parametrize("file, edit, message", [
    ("config.json", lambda b: b[:-20], r"config\.json: not valid JSON"),
    ("config.json", lambda b: json.dumps({**json.loads(b), "model_type": "gpt9"}).encode(),
     r"model_type='gpt9' is not supported"),
    ("model.safetensors", lambda b: b[: len(b) // 2], r"data_offsets \[\d+, \d+\] lie outside the file"),
    ("model.safetensors", lambda b: bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
     r"header length \d+ bytes is beyond the file size \(4096 bytes\)"),
    ("model.safetensors", lambda b: b + b"\0" * 64, r"the header's tensors end at byte (\d+) but the file has"),
    ("tokenizer.json", "unlink", r"the tokenizer does not load: Couldn't instantiate the backend tokenizer"),
    ("tokenizer*", "unlink", r"the tokenizer does not load: no tokenizer files in"),
])
def test_a_broken_model_is_refused(world, tmp_path, capsys, no_run, role, file, edit, message):
    import re

    root, strong, weak = world
    broken = copy_of(strong if role == "strong" else weak, tmp_path)
    if edit == "unlink":
        for path in broken.glob(file):
            path.unlink()
    else:
        rewrite(broken / file, edit)
    kw = {"strong": dict(strong=broken), "weak": dict(weak=[broken]),
          "intermediate": dict(models=f'intermediate = ["{broken}"]')}[role]
    err = refused(capsys, tmp_path, experiment(world, tmp_path, **kw))
    key = {"strong": "models.strong", "weak": "models.weak[0]", "intermediate": "models.intermediate[0]"}[role]
    assert f"{key} '{broken}'" in err and re.search(message, err), err


def test_a_broken_judge_is_refused(world, tmp_path, capsys, no_run):
    root, strong, weak = world
    judge = copy_of(strong, tmp_path)
    rewrite(judge / "model.safetensors", lambda b: b[:100])
    path = experiment(world, tmp_path, task='metric = "judge"\nrubric = "Rate it."', models=f'judge = "{judge}"')
    err = refused(capsys, tmp_path, path)
    assert f"models.judge '{judge}'" in err and "model.safetensors" in err


def test_tokenizer_ids_past_the_vocabulary_are_refused(world, tmp_path, capsys, no_run):
    small = make_hf_checkpoint(tmp_path, "llama", seed=2, vocab_size=20, num_hidden_layers=1)
    capsys.readouterr()  # the checkpoint writer's progress bar
    err = refused(capsys, tmp_path, experiment(world, tmp_path, weak=[small]))
    largest = VOCAB - 1  # the word-level tokenizer's ids are 0 .. VOCAB - 1
    assert f"models.weak[0] '{small}'" in err
    assert f"has token id {largest} ({WORDS[-1]!r}) but config.json has vocab_size = 20" in err


def test_weights_that_do_not_match_the_config_are_refused(world, tmp_path, capsys, no_run):
    root, strong, weak = world
    wrong = copy_of(strong, tmp_path)
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    err = refused(capsys, tmp_path, experiment(world, tmp_path, strong=wrong))
    assert "has shape (64, 32), expected (48, 32) from config.json" in err


def test_chat_needs_every_model_to_have_a_template(world, tmp_path, capsys, no_run):
    root, strong, weak = world
    plain = copy_of(weak, tmp_path)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    err = refused(capsys, tmp_path, experiment(world, tmp_path, weak=[plain], models="chat = true"))
    assert f"models.chat = true but the tokenizer of models.weak[0] '{plain}' has no chat template" in err


# --- settings, names, the run directory ---------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    ("train.learning_rate=inf", "[train] learning_rate must be a finite number > 0, got inf"),
    ("train.learning_rate=-inf", "learning_rate must be > 0, got -inf"),  # TrainConfig's own check
    ("train.weight_decay=nan", "[train] weight_decay must be a finite number >= 0, got nan"),
    ("train.adam_b2=1.0", "[train] adam_b2 must be a finite number in [0, 1), got 1.0"),
    ("train.grad_clip_norm=inf", "[train] grad_clip_norm must be a finite number > 0, got inf"),
    ("train.lora_alpha=nan", "[train] lora_alpha must be a finite number > 0, got nan"),
    ("seed=4294967296", "seed must be in [0, 4294967296), got 4294967296"),
    ("data.n_train=true", "data.n_train must be an int >= 0, got True"),
    ("data.truncate='right'", "data.truncate must be one of ('none', 'prompt-left'), got 'right'"),
])
def test_numbers_out_of_range_are_refused(world, tmp_path, capsys, no_run, setting, message):
    assert message in refused(capsys, tmp_path, experiment(world, tmp_path), "--set", setting)


def test_nan_learning_rate_is_still_refused(world, tmp_path, capsys, no_run):
    err = refused(capsys, tmp_path, experiment(world, tmp_path), "--set", "train.learning_rate=nan")
    assert "learning_rate" in err and "nan" in err


def test_a_run_name_with_a_path_is_refused(world, tmp_path, capsys, no_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = experiment(world, tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "../../etc/x"', 1))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "name = '../../etc/x' is not a plain name" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent.parent / "etc").exists()


def test_out_naming_a_file_or_a_path_under_one_is_refused(world, tmp_path, capsys, no_run):
    path = experiment(world, tmp_path)
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    for out, message in ((file, "exists and is not a directory"),
                         (file / "run", f"{str(file)!r} is a file, so no directory can be made under it"),
                         (file / "a" / "b", f"{str(file)!r} is a file")):
        assert main(["run", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--out {str(out)!r}: " in err and message in err, err
    assert file.read_text() == "keep me"


def test_the_same_weak_model_twice_is_refused(world, tmp_path, capsys, no_run):
    root, strong, weak = world
    err = refused(capsys, tmp_path, experiment(world, tmp_path, weak=[weak, str(weak) + "/"]))
    assert f"models.weak lists '{weak}/' twice (weak[0] and weak[1])" in err


# --- data ---------------------------------------------------------------------------------------


def test_overlap_key_normalisation():
    assert overlap_key("  The\tCAT  sat\n") == overlap_key("the cat sat") == "the cat sat"
    assert overlap_key("ﬁnd ＡＢＣ") == overlap_key("find abc")  # NFKC: ligature, full-width letters
    assert overlap_key("Straße") == overlap_key("STRASSE")  # case folding, not lower()
    assert overlap_key("the cat") != overlap_key("the cats")


def test_overlap_up_to_case_and_whitespace_is_refused(world, tmp_path, capsys, no_run):
    test = _jsonl(tmp_path / "test.jsonl", ["she ran home", "  Why is the  SKY\tblue "])
    err = refused(capsys, tmp_path, experiment(world, tmp_path, test=test))
    assert "the test split overlaps training: test row 1" in err and "is training row 2" in err
    assert "Unicode NFKC, case folding and collapsing whitespace" in err


def test_load_rows_counted_says_how_many_rows_exist(world):
    from w2s_jax.tasks.data import load_rows_counted

    source = str(world[0] / "train.jsonl")
    rows, total = load_rows_counted(source, limit=2)
    assert [r["question"] for r in rows] == TRAIN[:2] and total == len(TRAIN)
    rows, total = load_rows_counted(source, limit=1000)
    assert [r["question"] for r in rows] == TRAIN and total == len(TRAIN)


def test_more_rows_requested_than_exist_is_a_warning(world, tmp_path, capsys, monkeypatch):
    import w2s_jax.pipeline

    calls = []
    monkeypatch.setattr(w2s_jax.pipeline.runner, "run_experiment", lambda config, **kw: calls.append(config))
    path = experiment(world, tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--set", "data.n_train=1000",
                 "--set", "data.n_test=2"]) == 0
    err = capsys.readouterr().err
    assert f"warning: data.n_train = 1000 but {world[0] / 'train.jsonl'} has {len(TRAIN)} rows: using all " \
           f"{len(TRAIN)}" in err
    assert "n_test" not in err  # 2 of 3 rows: as asked
    assert len(calls) == 1


def test_a_data_file_datasets_cannot_parse_gives_exactly_one_line(world, tmp_path):
    """Through the console script, as a user runs it: `datasets` logs its own error before raising;
    that line is held back, so stderr is w2s's one line."""
    broken = tmp_path / "train.jsonl"
    broken.write_text('{"question": "the cat", "answer": "yes"}\n{"question": \n')
    path = experiment(world, tmp_path, train=broken)
    proc = subprocess.run([sys.executable, "-m", "w2s_jax.cli", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("w2s run: error: "), proc.stderr
    assert f"data.train: {broken}: cannot be read as json" in proc.stderr
    assert not (tmp_path / "out").exists()


# --- lengths: contexts and train.max_len ----------------------------------------------------------


def test_a_prompt_longer_than_a_context_is_refused(world, tmp_path, capsys, no_run):
    from transformers import PreTrainedTokenizerFast

    root, strong, weak = world
    short = copy_of(weak, tmp_path)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 5}))
    err = refused(capsys, tmp_path, experiment(world, tmp_path, weak=[short]))
    # the first row over 5 tokens, counted as the engine encodes it (with the tokenizer's special tokens)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(short))
    lengths = [len(tokenizer(q)["input_ids"]) for q in TRAIN]
    first = next(i for i, n in enumerate(lengths) if n > 5)
    assert f"train row {first}: the weak prompt is {lengths[first]} tokens, more than the context of " \
           f"models.weak[0] '{short}' (5 tokens" in err


def test_a_huge_question_is_refused_not_truncated(world, tmp_path, capsys, no_run):
    train = _jsonl(tmp_path / "train.jsonl", TRAIN[:2] + [" ".join(["cat"] * 20000)])
    err = refused(capsys, tmp_path, experiment(world, tmp_path, train=train))
    # the strong model is checked first; its context is 128 tokens
    assert "train row 2: the prompt is 20000 tokens, more than the context of models.strong" in err
    assert "(128 tokens, max_position_embeddings in config.json); prompts are never truncated" in err


def test_prompt_lengths_equal_the_engines(world):
    """The preflight's token counts are the inference engine's own, with and without chat."""
    from tests.pipeline.tiny_lm import tiny_engine
    from w2s_jax.inference import Prompt
    from w2s_jax.pipeline.checkpoint_checks import check_checkpoint
    from w2s_jax.pipeline.preflight import prompt_lengths

    root, strong, weak = world
    model = check_checkpoint(str(strong), "models.strong")
    prompts = [Prompt(user=q) for q in TRAIN] + [Prompt(user="why", system="answer yes or no")]
    for chat in (False, True):
        engine = tiny_engine(model.tokenizer, chat=chat)
        assert prompt_lengths(model, prompts, chat=chat) == [len(ids) for ids in engine.encode(prompts)]


def _sft_lengths(strong, prompt_text, completion):
    """(prompt, completion) token counts as fine-tuning builds the row (BOS and EOS included)."""
    from transformers import PreTrainedTokenizerFast

    from w2s_jax.train import SFTDataset

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(strong))
    data = SFTDataset([{"prompt": prompt_text, "completion": completion}], tokenizer, max_len=4096)
    prompt, completion, _ = data._rows[0]
    return len(prompt), len(completion)


def test_a_gold_row_longer_than_max_len_is_refused_with_both_numbers(world, tmp_path, capsys, no_run):
    import re

    root, strong, weak = world
    lengths = [_sft_lengths(strong, q, " yes") for q in TRAIN]
    max_len = max(p + c for p, c in lengths) - 1
    too_long = [i for i, (p, c) in enumerate(lengths) if p + c > max_len]
    first = too_long[0]
    p, c = lengths[first]
    path = experiment(world, tmp_path)
    err = refused(capsys, tmp_path, path, "--methods", "gold", "--set", f"train.max_len={max_len}")
    match = re.search(r"training row (\d+) of .* train\.max_len = (\d+): its prompt is (\d+) tokens and its "
                      r"gold answer adds (\d+) \(end-of-sequence included\), (\d+) in all \((\d+) row\(s\) "
                      r"too long\)", err)
    assert match, err
    assert [int(g) for g in match.groups()] == [first, max_len, p, c, p + c, len(too_long)]
    assert 'data.truncate = "prompt-left"' in err


def test_max_len_that_fits_every_row_exactly_passes(world, tmp_path, capsys, monkeypatch):
    import w2s_jax.pipeline

    root, strong, weak = world
    monkeypatch.setattr(w2s_jax.pipeline.runner, "run_experiment", lambda config, **kw: None)
    fits = max(sum(_sft_lengths(strong, q, " yes")) for q in TRAIN)
    path = experiment(world, tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--methods", "gold",
                 "--set", f"train.max_len={fits}"]) == 0
    assert capsys.readouterr().err == ""


def test_generated_labels_count_max_new_tokens_and_prompt_left_is_a_stated_choice(world, tmp_path, capsys,
                                                                              monkeypatch):
    import w2s_jax.pipeline

    root, strong, weak = world
    path = experiment(world, tmp_path)
    p = _sft_lengths(strong, TRAIN[0], " yes")[0]
    bound = 3 + 1  # generation.max_new_tokens + EOS
    set_len = ["--methods", "naive", "--set", f"train.max_len={p + bound - 1}"]
    err = refused(capsys, tmp_path, path, *set_len)
    assert f"training row 0 of {root / 'train.jsonl'} does not fit train.max_len = {p + bound - 1}: its prompt " \
           f"is {p} tokens and a generated label of up to generation.max_new_tokens = 3 adds {bound}" in err

    started = []
    monkeypatch.setattr(w2s_jax.pipeline.runner, "run_experiment", lambda config, **kw: started.append(config))
    too_long = sum(_sft_lengths(strong, q, " yes")[0] + bound > p + bound - 1 for q in TRAIN)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), *set_len,
                 "--set", "data.truncate='prompt-left'"]) == 0
    err = capsys.readouterr().err
    assert f'warning: data.truncate = "prompt-left": {too_long} of {len(TRAIN)} training rows may lose ' \
           f"prompt tokens from the left to fit train.max_len = {p + bound - 1}" in err
    assert started

    # a label that alone fills max_len cannot be fixed by cutting the prompt
    err = refused(capsys, tmp_path, path, "--methods", "naive", "--set", f"train.max_len={bound}",
                  "--set", "data.truncate='prompt-left'")
    assert f"a generated label of up to generation.max_new_tokens = 3 is {bound} tokens" in err
    assert f"leaving no room for a prompt token in train.max_len = {bound}" in err


def test_library_log_lines_are_dropped_on_error_and_kept_in_order_otherwise():
    import logging
    import warnings

    from w2s_jax.held_logs import held_library_logs

    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Collect()
    library = logging.getLogger("datasets")
    library.addHandler(handler)
    try:
        with pytest.raises(ValueError), held_library_logs():
            logging.getLogger("datasets.builder").warning("a line before the error")
            raise ValueError("the error")
        assert seen == []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with held_library_logs():
                logging.getLogger("datasets.builder").warning("first")
                warnings.warn("a warning", UserWarning)
                logging.getLogger("datasets").warning("second")
                assert seen == []  # held until the block ends
        assert seen == ["first", "second"]
        assert [str(w.message) for w in caught] == ["a warning"]
        assert library.handlers[-1] is handler and library.propagate  # the logger is as it was
    finally:
        library.removeHandler(handler)
