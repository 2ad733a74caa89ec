"""Every method and a judge-scored task through `w2s run`, on tiny random checkpoints saved by
`save_pretrained` (weak, intermediate, strong and judge): each method's labels reach a fine-tuned
student, the judge's expected ratings land in the report on the rating scale, and the student
trained on context-distill's top-k targets is fitted with the KL objective."""

import json
import textwrap

from flax import nnx

from w2s_jax.cli import main
from w2s_jax.models import ModelConfig, Transformer, save_pretrained
from w2s_jax.pipeline import stage_directories

WORDS = ("the a cat dog sat on mat ran to home big small red blue is was and then yes no "
         "pirate arr matey ship sea answer question how why what").split()
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "Rating", ":", "[[", "]]", *map(str, range(10)), *WORDS]


def _checkpoint(directory, seed, layers=2):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    config = ModelConfig.tiny("llama", vocab_size=len(VOCAB), num_layers=layers)
    save_pretrained(Transformer(config, rngs=nnx.Rngs(seed)), config, directory)
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(directory))
    return directory


def test_every_method_and_the_judge_through_w2s_run(tmp_path):
    import random

    rng = random.Random(0)
    rows = [{"instruction": " ".join(rng.choice(WORDS[:20]) for _ in range(4)),
             "answer": " ".join(rng.choice(WORDS) for _ in range(3))} for _ in range(14)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:9]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[9:]))
    models = {name: _checkpoint(tmp_path / name, seed, layers)
              for name, seed, layers in (("weak", 1, 1), ("mid", 2, 1), ("strong", 0, 2), ("judge", 3, 2))}
    experiment = tmp_path / "all.toml"
    experiment.write_text(textwrap.dedent(f"""
        name = "all-methods"
        [task]
        name = "persona"
        answer_field = "answer"
        [data]
        train = "{tmp_path / 'train.jsonl'}"
        test = "{tmp_path / 'test.jsonl'}"
        [models]
        strong = "{models['strong']}"
        weak = ["{models['weak']}"]
        intermediate = ["{models['mid']}"]
        judge = "{models['judge']}"
        batch_size = 4
        length_bucket = 32
        [methods]
        run = ["zero-shot", "naive", "icl-refine", "infer-and-respond", "ask-to-improve",
               "bootstrap", "context-distill", "gold"]
        [methods.icl-refine]
        batch = 3
        [methods.bootstrap]
        batch = 3
        [methods.infer-and-respond]
        batch = 3
        [methods.context-distill]
        top_k = 4
        [generation]
        max_new_tokens = 3
        [judge]
        mode = "expected"
        scale = [1, 9]
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
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"][:2] == ["style", "quality"]
    by_name = {r["name"].split("/w0-")[0]: r for r in results["rows"]}
    expected = {"weak", "zero-shot", "student/naive", "student/icl-refine", "student/infer-and-respond",
                "student/ask-to-improve", "student/bootstrap", "student/context-distill", "student/gold"}
    assert expected == set(by_name)
    for row in results["rows"]:
        assert row["style"]["n"] == 5 and 1.0 <= row["style"]["mean"] <= 9.0
        assert 1.0 <= row["quality"]["mean"] <= 9.0
    dirs = stage_directories(out)
    distill = dirs["labels/context-distill/w0-weak"]
    label = json.loads((distill / "records.jsonl").read_text().splitlines()[0])
    assert len(label["teacher_ids"][0]) == 4 and abs(sum(label["teacher_probs"][0]) - 1) < 1e-5
    finetune = dirs["finetune/context-distill/w0-weak"]
    identity = json.loads((finetune / "checkpoints" / "run_identity.json").read_text())
    assert "KLToTeacher" in json.dumps(identity)
    bootstrap = dirs["labels/bootstrap/w0-weak"]
    assert "hops" in json.loads((bootstrap / "records.jsonl").read_text().splitlines()[0])
    assert (out / "results.md").read_text().count("| student/") == 7

