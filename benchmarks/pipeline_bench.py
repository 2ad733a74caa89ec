"""Labelling throughput: the pipeline's ``icl-refine`` stage against two simpler ways to label.

The stage relabels Q training questions: each query is answered by the strong model after the
other questions of its batch of B (with their weak answers) as demonstrations. This script builds
a random Llama-family checkpoint and a random word-level tokenizer itself (no downloads), makes Q
questions whose in-context prompts come to a few hundred tokens, and labels them three ways:

  ours            ``ICLRefine.label`` through ``Engine.generate`` (exactly the pipeline's code:
                  length-sorted batches, bucketed lengths, stop-string checks, and on two or
                  more cores two batches at once, ``--streams``)
  one at a time   the same prompts, one ``w2s_jax.inference.generate`` call per prompt (batch 1)
  transformers    the same prompts in the same length-sorted batches through
                  ``AutoModelForCausalLM.generate`` (left padding, greedy) on the same weights,
                  saved by ``w2s_jax.models.save_pretrained``

The checkpoint has no EOS token, so every side generates exactly ``--max-new-tokens`` tokens per
query (ours still runs its stop-string checks for ``"\\n\\nQuestion:"``, which the space-joined
word-level text never contains; transformers gets no stop strings). Before timing, the script
checks that ours and transformers produce the same greedy tokens on the first batch and that ours
and the one-at-a-time loop produce the same labels; it stops with an error naming the row and the
token if they do not, since the timings would then compare different computations.

Times are warm (median of ``--repeats`` after one warm-up run). The warm-up run of each JAX side is
reported as its first-call time with the number of programs traced (``generation.TRACE_COUNTS``);
with the persistent compilation cache on, a rerun loads the programs from disk instead of
compiling them (``W2S_COMPILATION_CACHE=off`` measures true compile times).

    python benchmarks/pipeline_bench.py --preset small --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from w2s_jax.compilation_cache import enable_compilation_cache
from w2s_jax.host_memory import reuse_freed_host_memory

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3
MARKUP = ("Question", "Answer", ":")  # the demonstration format's words


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """A random model and the size of the questions it labels."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    question_words: tuple[int, int]  # question length range in words (inclusive)
    answer_words: tuple[int, int]  # weak answer length range in words (inclusive)


PRESETS = {
    # seconds on one core: the smoke test
    "tiny": Preset(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=16, question_words=(6, 14), answer_words=(1, 3)),
    # lm_bench.py's "small" Llama shapes; B=5 in-context prompts of about 200-400 tokens
    "small": Preset(vocab_size=4096, hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8,
                    num_kv_heads=4, head_dim=32, question_words=(30, 70), answer_words=(2, 8)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--queries", type=int, default=64, help="training questions to relabel")
    parser.add_argument("--icl-batch", type=int, default=5,
                        help="icl-refine batch B: each query sees the other B - 1 as demonstrations")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per generate batch, ours and transformers (default: the Engine's)")
    parser.add_argument("--length-bucket", type=int, default=None,
                        help="Engine prompt-length bucket (default: the Engine's)")
    parser.add_argument("--streams", type=int, default=None,
                        help="Engine batches generating at once (default: the Engine's)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin the process to this many cores (both frameworks see the same ones)")
    parser.add_argument("--skip-one-at-a-time", action="store_true", help="do not run the batch-1 loop")
    parser.add_argument("--layout", choices=("per_layer", "stacked"), default="per_layer",
                        help="our weights' layout (default: per_layer, what the pipeline's labelling loads)")
    parser.add_argument("--no-reuse-host-memory", dest="reuse_host_memory", action="store_false",
                        help="leave glibc's malloc at its defaults (see lm_bench.py)")
    args = parser.parse_args(argv)
    if args.queries < args.icl_batch or args.icl_batch < 2:
        parser.error(f"--queries ({args.queries}) must be >= --icl-batch ({args.icl_batch}) >= 2")
    return args


# --- the random checkpoint and questions ----------------------------------------------------------


def write_checkpoint(preset: Preset, out_dir: Path) -> None:
    """A random Llama checkpoint (no EOS id, pad id 0) and a word-level tokenizer filling its vocabulary."""
    from flax import nnx
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from w2s_jax.models import ModelConfig, Transformer, save_pretrained

    config = ModelConfig(model_type="llama", vocab_size=preset.vocab_size, hidden_size=preset.hidden_size,
                         num_layers=preset.num_layers, num_heads=preset.num_heads,
                         num_kv_heads=preset.num_kv_heads, head_dim=preset.head_dim,
                         intermediate_size=preset.intermediate_size, rms_norm_eps=1e-5,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_ids=(), pad_token_id=0)
    save_pretrained(Transformer(config, rngs=nnx.Rngs(0)), config, out_dir)
    words = SPECIAL_TOKENS + MARKUP + tuple(f"w{i}" for i in range(preset.vocab_size - 7))
    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(out_dir))


def questions(preset: Preset, num: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``num`` random questions and weak answers, words drawn uniformly from the vocabulary."""
    rng = np.random.default_rng(seed)
    words = lambda lo_hi: " ".join(f"w{i}" for i in rng.integers(0, preset.vocab_size - 7,
                                                                   rng.integers(lo_hi[0], lo_hi[1] + 1)))
    return [words(preset.question_words) for _ in range(num)], [words(preset.answer_words) for _ in range(num)]


def bench_task():
    """A task whose student prompt is the question itself (default answering: ``engine.generate``)."""
    from w2s_jax.inference import Prompt
    from w2s_jax.tasks.base import Example, Task

    class BenchQuestions(Task):
        name = "pipeline-bench"

        def example(self, row, index, source):
            return Example(index=index, question=row["question"], answer=None)

        def prompt(self, example):
            return Prompt(user=example.question)

        def metric(self, examples, predictions, *, judge=None):
            return [{"score": None} for _ in examples]

    return BenchQuestions()


# --- the three ways to label -----------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _interleaved_medians(sides: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and process CPU seconds per side over ``repeats`` rounds, each round running
    every side once (on a shared machine, load changes then hit all sides alike). CPU time counts
    all threads: it shows the work done, where wall time also counts waiting for a core."""
    walls = {name: [] for name in sides}
    cpus = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            wall, cpu = time.perf_counter(), _cpu_seconds()
            fn()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(_cpu_seconds() - cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in sides}


def _first_call(fn):
    """(result, seconds, programs traced) of one call."""
    from w2s_jax.inference import generation

    before = dict(generation.TRACE_COUNTS)
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    traced = {k: v - before.get(k, 0) for k, v in generation.TRACE_COUNTS.items() if v != before.get(k, 0)}
    return result, seconds, traced


def _hf_generate(reference, batches: list[list[list[int]]], new_tokens: int) -> list[list[int]]:
    """Transformers' greedy batched generate over left-padded batches; new token ids per row."""
    import torch

    out = []
    for rows in batches:
        length = max(len(r) for r in rows)
        input_ids = torch.zeros((len(rows), length), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, length - len(ids):] = torch.as_tensor(ids)
            attention_mask[i, length - len(ids):] = 1
        with torch.no_grad():
            generated = reference.generate(input_ids, attention_mask=attention_mask, do_sample=False,
                                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                           pad_token_id=0)
        out += generated[:, length:].tolist()
    return out


def _first_difference(ours: list[list[int]], theirs: list[list[int]]) -> str | None:
    for row, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            token = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"row {row} token {token}: {a[token:token + 4]} against {b[token:token + 4]}"
    return None


def run(args) -> dict[str, float]:
    """Builds, checks and times the three sides; returns the wall-time speed-ups of ours."""
    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from w2s_jax.inference import Engine, generate
    from w2s_jax.methods.base import MethodContext
    from w2s_jax.methods.icl_refine import ICLRefine, ICLRefineOptions, question_text
    from w2s_jax.models import load_pretrained, load_tokenizer
    from w2s_jax.tasks.base import Generation
    from w2s_jax.tasks.demonstrations import (
        QUERY_STOP,
        clean_answer,
        in_context_prompt,
    )

    preset = PRESETS[args.preset]
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # as many threads as XLA's CPU pool
    with tempfile.TemporaryDirectory() as tmp:  # both sides load the very same files
        write_checkpoint(preset, Path(tmp))
        model, _ = load_pretrained(tmp, layout=args.layout)
        tokenizer = load_tokenizer(tmp)
        reference = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    engine_kw = {k: v for k, v in (("batch_size", args.batch_size), ("length_bucket", args.length_bucket),
                                                 ("streams", args.streams))
                 if v is not None}
    engine = Engine(model, tokenizer, name="strong", **engine_kw)
    task = bench_task()
    texts, weak = questions(preset, args.queries)
    examples = [task.example({"question": q}, i, "generated") for i, q in enumerate(texts)]
    ctx = MethodContext(task=task, examples=examples, weak=weak, upstream={}, engine=lambda role: engine,
                        generation=Generation(max_new_tokens=args.max_new_tokens))
    method = ICLRefine(ICLRefineOptions(batch=args.icl_batch))
    units = method.units(ctx)

    # The prompts the method builds, for the other two sides (same order as its label rows).
    demos = {p: d for unit in units for p, d in method.demos(ctx, unit).items()}
    prompts = [in_context_prompt([(question_text(ctx, d), weak[d]) for d in demos[p]], question_text(ctx, p))
               for p in demos]
    ids = engine.encode(prompts)
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")  # the Engine's batches
    hf_batches = [[ids[i] for i in order[s:s + engine.batch_size]] for s in range(0, len(ids), engine.batch_size)]
    new = args.max_new_tokens

    label = lambda: method.label(ctx, units)
    rows, ours_first, ours_traced = _first_call(label)
    _, ours_second, retraced = _first_call(label)
    if retraced:
        raise RuntimeError(f"a second identical labelling run traced new programs {retraced}")
    # Same computation as transformers: ours through the Engine's code path on the first batch.
    first = generate(model, tokenizer, hf_batches[0], max_new_tokens=new, batch_size=engine.batch_size,
                     prompt_bucket=engine.length_bucket, stop_strings=(QUERY_STOP,)).token_ids
    theirs_first_batch = _hf_generate(reference, hf_batches[:1], new)
    difference = _first_difference(first, theirs_first_batch)
    if difference is not None:
        raise RuntimeError(f"greedy tokens differ between w2s-jax and transformers on the first batch, "
                           f"{difference}; the timings would compare different computations")

    def one_at_a_time():
        return [generate(model, tokenizer, [x], max_new_tokens=new, batch_size=1,
                         stop_strings=(QUERY_STOP,)).texts[0] for x in ids]

    sides = {"ours": label}
    lines = []
    if not args.skip_one_at_a_time:
        single_texts, single_first, single_traced = _first_call(one_at_a_time)
        labels = [row["completion"] for row in rows]
        expected = [task.target(e, clean_answer(a))
                    for e, a in zip((examples[p] for p in demos), single_texts)]
        difference = next((i for i, (a, b) in enumerate(zip(labels, expected)) if a != b), None)
        if difference is not None:
            raise RuntimeError(f"query {difference}: batched label {labels[difference]!r} differs from "
                               f"the one-at-a-time label {expected[difference]!r}")
        sides["one_at_a_time"] = one_at_a_time
        lines.append(f"one-at-a-time first call {single_first:.2f} s, traced {single_traced}")
    sides["transformers"] = lambda: _hf_generate(reference, hf_batches, new)
    sides["transformers"]()  # warm-up
    # Ours with one new token: the prompts' prefill (and the first token), which no batching of the
    # decoding steps can shorten; the loop's time over it bounds ours against the loop.
    prefill_ctx = dataclasses.replace(ctx, generation=Generation(max_new_tokens=1))
    sides["ours_prefill"] = lambda: method.label(prefill_ctx, units)
    sides["ours_prefill"]()  # warm-up (compiles its programs)
    timings = _interleaved_medians(sides, args.repeats)

    n_params = sum(p.numel() for p in reference.parameters())
    tokens = len(ids) * new
    print(f"preset={args.preset} params={n_params / 1e6:.1f}M queries={len(ids)} icl_batch={args.icl_batch} "
          f"prompt tokens {lengths.min()}..{lengths.max()} (mean {lengths.mean():.0f}) "
          f"max_new_tokens={new} batch_size={engine.batch_size} length_bucket={engine.length_bucket} "
          f"float32, jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({len(os.sched_getaffinity(0))} cores), torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"greedy tokens of the first batch agree with transformers ({len(first)} rows x {new} tokens)"
          + ("" if args.skip_one_at_a_time else "; batched labels equal one-at-a-time labels"))
    print(f"ours first call {ours_first:.2f} s (compile or cache load + run), traced {ours_traced}; "
          f"second call {ours_second:.2f} s, no new traces")
    for line in lines:
        print(line)
    print(f"| {'labelling (warm)':<16} | {'wall s':>7} | {'new tokens/s':>12} | {'CPU s':>7} |")
    print(f"|{'-' * 18}|{'-' * 9}|{'-' * 14}|{'-' * 9}|")
    for name, label_ in (("ours", "ours (Engine)"), ("one_at_a_time", "one at a time"),
                         ("transformers", "transformers"), ("ours_prefill", "ours, 1 new token")):
        if name in timings:
            wall, cpu = timings[name]
            print(f"| {label_:<16} | {wall:>7.3f} | {tokens / wall:>12.0f} | {cpu:>7.3f} |")
    ratios = {}
    for name in ("one_at_a_time", "transformers"):
        if name in timings:
            ratios[name] = timings[name][0] / timings["ours"][0]
            print(f"ratio ours/{name}: {ratios[name]:.2f}x wall "
                  f"({timings[name][1] / timings['ours'][1]:.2f}x CPU time)")
    if "one_at_a_time" in timings:
        prefill_share = timings["ours_prefill"][0] / timings["ours"][0]
        print(f"ours with 1 new token (prefill + first token) takes {prefill_share:.0%} of ours; "
              f"one at a time / that = {timings['one_at_a_time'][0] / timings['ours_prefill'][0]:.2f}x, "
              "the most ours/one_at_a_time can reach with the prefill as it is")
    return ratios


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    if args.threads:  # before the first JAX computation creates the CPU client and its thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    if args.reuse_host_memory and not reuse_freed_host_memory():  # before any thread allocates
        print("reuse_freed_host_memory: mallopt unavailable (not glibc); running with malloc defaults")
    enable_compilation_cache()
    return run(args)


if __name__ == "__main__":
    main()
