"""The paper's settings through `w2s run` on tiny random checkpoints: the joint judge with its vote,
the user-placed and system-placed refinement layouts, the detector step of infer-and-respond and
the judged math metric all run inside the pipeline, and every score record holds the vote's
outcome (a random judge writes no valid ``[[x]] [[y]]``, so every item fails: None, with all of its
samples counted as dropped)."""

import json
import textwrap

from tests.pipeline.test_pipeline_methods_judge import WORDS, _checkpoint
from w2s_jax.cli import main
from w2s_jax.pipeline import stage_directories


def _records(out, prefix):
    stage = next(d for name, d in stage_directories(out).items() if name.startswith(prefix))
    return [json.loads(line) for line in (stage / "records.jsonl").read_text().splitlines()]


def test_paper_persona_settings_through_w2s_run(tmp_path):
    import random

    rng = random.Random(1)
    rows = [{"instruction": " ".join(rng.choice(WORDS[:20]) for _ in range(4))} for _ in range(9)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"question": r["instruction"]}) + "\n" for r in rows[6:]))
    models = {name: _checkpoint(tmp_path / name, seed, 1) for name, seed in (("weak", 1), ("strong", 0), ("judge", 3))}
    experiment = tmp_path / "paper.toml"
    experiment.write_text(textwrap.dedent(f"""
        [task]
        name = "persona"
        instruction_field = ["instruction", "question"]
        weak_template = "Question: {{question}}"
        weak_system_in_user = true
        system = "You are an AI assistant."
        [data]
        train = "{tmp_path / 'train.jsonl'}"
        test = "{tmp_path / 'test.jsonl'}"
        [models]
        strong = "{models['strong']}"
        weak = ["{models['weak']}"]
        judge = "{models['judge']}"
        batch_size = 4
        length_bucket = 32
        [methods]
        run = ["zero-shot", "naive", "icl-refine", "infer-and-respond"]
        [methods.icl-refine]
        batch = 3
        strip_newlines = true
        cut = 2
        [methods.infer-and-respond]
        batch = 3
        detector = "Name the style."
        respond_user = "Question: {{question}}"
        max_sentence_tokens = 3
        [generation]
        max_new_tokens = 3
        [judge]
        mode = "joint"
        samples = 2
        temperature = 1.0
        max_new_tokens = 4
        [train]
        total_steps = 2
        warmup_steps = 1
        batch_size = 3
        max_len = 96
        [report]
        bootstrap = 100
    """))
    out = tmp_path / "run"
    assert main(["run", str(experiment), "--out", str(out), "--no-progress", "--no-figures"]) == 0
    scores = _records(out, "score/weak")
    assert len(scores) == 3
    assert all(r["style"] is None and r["quality"] is None and r["_malformed"] == 2 for r in scores)
    assert [r["inferred"] for r in _records(out, "labels/infer-and-respond")][:1]
    assert (out / "results.md").is_file()


def test_paper_bias_and_judged_math_through_w2s_run(tmp_path):
    models = {name: _checkpoint(tmp_path / name, seed, 1)
              for name, seed in (("weak", 1), ("strong", 0), ("judge", 3))}
    train = [{"question": f"the {job} is big", "job": job, "kind": "biography"} for job in ("cat", "dog", "mat")]
    test = [{"question": "the cat sat", "kind": "content"}, {"question": "the dog ran", "kind": "story"}]
    for name, rows in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"""
        [models]
        strong = "{models['strong']}"
        weak = ["{models['weak']}"]
        judge = "{models['judge']}"
        batch_size = 4
        length_bucket = 32
        [generation]
        max_new_tokens = 3
        [judge]
        mode = "joint"
        samples = 2
        temperature = 1.0
        max_new_tokens = 4
        [train]
        total_steps = 2
        warmup_steps = 1
        batch_size = 3
        max_len = 128
        [report]
        bootstrap = 100
    """
    bias = tmp_path / "bias.toml"
    bias.write_text(textwrap.dedent(f"""
        [task]
        name = "bias"
        [data]
        train = "{tmp_path / 'train.jsonl'}"
        test = "{tmp_path / 'test.jsonl'}"
        [methods]
        run = ["zero-shot", "naive", "ask-to-improve"]
        [methods.ask-to-improve]
        cue = ""
        cut = 2
    """) + textwrap.dedent(common))
    assert main(["run", str(bias), "--out", str(tmp_path / "bias"), "--no-progress", "--no-figures"]) == 0
    results = json.loads((tmp_path / "bias" / "results.json").read_text())
    assert results["metrics"][:3] == ["content", "female_share", "male_share"]
    scores = _records(tmp_path / "bias", "score/zero-shot")
    assert [sorted(k for k, v in r.items() if v is None) for r in scores] == [
        ["content", "female_share", "male_share"]] * 2  # a random judge never votes validly

    words = ("cat", "dog", "mat", "sea", "red", "big")
    rows = [{"question": f"the {w} sat", "answer": f"#### {i}"} for i, w in enumerate(words)]
    (tmp_path / "m_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (tmp_path / "m_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    math = tmp_path / "math.toml"
    math.write_text(textwrap.dedent(f"""
        [task]
        name = "math"
        instruction = ""
        weak_template = "Question: {{question}}\\nAnswer:"
        metric = "judge"
        [data]
        train = "{tmp_path / 'm_train.jsonl'}"
        test = "{tmp_path / 'm_test.jsonl'}"
        [methods]
        run = ["zero-shot", "naive", "icl-refine"]
        [methods.icl-refine]
        fixed_demos = [0]
        placement = "user"
        query_separator = ""
    """) + textwrap.dedent(common))
    assert main(["run", str(math), "--out", str(tmp_path / "math"), "--no-progress", "--no-figures"]) == 0
    scores = _records(tmp_path / "math", "score/weak")
    assert [(r["accuracy"], r["_malformed"]) for r in scores] == [(None, 2), (None, 2)]
