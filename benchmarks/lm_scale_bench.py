"""A real-size model on CPU: w2s-jax vs transformers loading and running a Llama-3.2-1B-shaped checkpoint.

Builds a random checkpoint with the exact Llama-3.2-1B shape (1.24B parameters, tied embeddings,
bfloat16, three safetensors shards, as published checkpoints are) and, for ours and transformers
in float32 and in bfloat16, measures in a fresh process each:
  load       seconds to a model ready to run (ours: `load_pretrained(path, dtype=)`, the README's
             call, which loads the backend's inference layout; theirs: `from_pretrained`)
  peak anon  the process's peak anonymous memory (RssAnon sampled every 10 ms), over the whole run,
             and up to the end of loading
  compile    first 16-token generate call minus a warm one (ours: tracing + XLA compilation of
             prefill and decode; theirs: first-call overhead)
  generate   warm 16-token greedy generate from one 64-token prompt (median of --repeats 3)
  score      warm log p(16-token completion | 64-token prompt) (ours: `score`; theirs: one forward
             pass and a log-softmax of its logits; median of 3)
and checks that both sides generate the same 16 tokens in float32.

    python benchmarks/lm_scale_bench.py                      # ~10 minutes on 2 cores, 24 GB
    python benchmarks/lm_scale_bench.py --checkpoint-dir ckpt  # keep the checkpoint for reruns
    python benchmarks/lm_scale_bench.py --checkpoint-dir ckpt --load-only --repeats 3  # loading alone

Each (side, dtype) runs in its own process, one after the other, so the memory figures do not mix.
With --load-only each process only loads, and the four loads are repeated --repeats times in
turn (median reported): on a VM the first process to take a few GB of fresh memory pays more for
it than the ones after it, which in the full run is always ours in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Hugging Face Llama config fields (Llama-3.2-1B shapes and RoPE settings).
PRESETS = {
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16),
}
PROMPT_LEN, NEW_TOKENS, NUM_SHARDS = 64, 16, 3
RUNS = (("ours", "float32"), ("transformers", "float32"), ("ours", "bfloat16"), ("transformers", "bfloat16"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where the random checkpoint is written (reused when present); default: "
                             "a temporary directory, removed at the end")
    parser.add_argument("--in-process", action="store_true",
                        help="run every measurement in this process (quick checks; memory figures mix)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per figure (median reported)")
    parser.add_argument("--load-only", action="store_true",
                        help="measure loading alone: load time and peak memory, --repeats rounds of the four loads")
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "DTYPE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the checkpoint -------------------------------------------------------------------------------------


def hf_tensor_shapes(hf: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a tied-embedding Llama checkpoint, in HF names and layouts."""
    V, D, F = hf["vocab_size"], hf["hidden_size"], hf["intermediate_size"]
    NH, KH = hf["num_attention_heads"] * hf["head_dim"], hf["num_key_value_heads"] * hf["head_dim"]
    shapes = [("model.embed_tokens.weight", (V, D))]
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (NH, D)), (p + "self_attn.k_proj.weight", (KH, D)),
                   (p + "self_attn.v_proj.weight", (KH, D)), (p + "self_attn.o_proj.weight", (D, NH)),
                   (p + "mlp.gate_proj.weight", (F, D)), (p + "mlp.up_proj.weight", (F, D)),
                   (p + "mlp.down_proj.weight", (D, F)), (p + "input_layernorm.weight", (D,)),
                   (p + "post_attention_layernorm.weight", (D,))]
    return shapes + [("model.norm.weight", (D,))]


def build_checkpoint(out_dir: Path, preset: str) -> Path:
    """Write the random bf16 checkpoint (config.json, NUM_SHARDS shards and their index) once."""
    import ml_dtypes
    from transformers import LlamaConfig

    from w2s_jax.models.safetensors_format import write_safetensors

    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "model.safetensors.index.json").is_file():
        return out_dir
    hf = PRESETS[preset]
    LlamaConfig(**hf, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                dtype="bfloat16").save_pretrained(out_dir)
    shapes = hf_tensor_shapes(hf)
    total = sum(int(np.prod(s)) for _, s in shapes)
    rng = np.random.default_rng(0)
    weight_map, shard, shard_size, index = {}, [], 0, 0

    def flush():
        name = f"model-{index + 1:05d}-of-{NUM_SHARDS:05d}.safetensors"
        write_safetensors(out_dir / name, shard)
        weight_map.update({tensor: name for tensor, _ in shard})

    for name, shape in shapes:
        if len(shape) == 1:
            array = np.ones(shape, ml_dtypes.bfloat16)
        else:
            array = (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        shard.append((name, array))
        shard_size += array.size
        if shard_size >= total / NUM_SHARDS and index < NUM_SHARDS - 1:
            flush()
            shard, shard_size, index = [], 0, index + 1
    flush()
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total * 2}, "weight_map": weight_map}, indent=1))
    return out_dir


# --- one measurement ------------------------------------------------------------------------------------


class PeakAnonymousMemory:
    """Samples this process's RssAnon (Linux) every 10 ms in a thread; `.peak_gb` is the maximum."""

    def __init__(self):
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.is_set():
            self.sample_gb()
            self._stop.wait(0.01)

    def sample_gb(self) -> float:
        """Read RssAnon now; the peak so far, in GiB."""
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        return self.peak_kb / 2**20

    @property
    def peak_gb(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 2**20


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


REPEATS = [3]  # warm runs per figure (set from --repeats)
LOAD_ONLY = [False]  # stop each measurement after loading (set from --load-only)


def _warm(fn) -> float:
    return statistics.median(_timed(fn)[0] for _ in range(REPEATS[0]))


def measure_ours(ckpt: Path, dtype_name: str, prompt: list[int], completion: list[int],
                 memory: PeakAnonymousMemory) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from w2s_jax.inference import Greedy, generate, score
    from w2s_jax.models import load_pretrained

    def load():
        model, _ = load_pretrained(ckpt, dtype=getattr(jnp, dtype_name))  # the README's call: inference layout
        jax.block_until_ready(nnx.state(model))
        return model

    load_s, model = _timed(load)
    load_peak = memory.sample_gb()
    if LOAD_ONLY[0]:
        return dict(load=load_s, load_peak_anon_gb=load_peak)
    gen = lambda: generate(model, None, [prompt], max_new_tokens=NEW_TOKENS, sampler=Greedy(),  # noqa: E731
                           eos_token_ids=()).token_ids[0]
    cold_s, tokens = _timed(gen)
    generate_s = _warm(gen)
    run_score = lambda: score(model, None, [prompt], [completion])[0].sum_logprob  # noqa: E731
    _, logprob = _timed(run_score)
    return dict(load=load_s, load_peak_anon_gb=load_peak, compile=cold_s - generate_s, generate=generate_s,
                score=_warm(run_score), tokens=tokens, logprob=logprob)


def measure_transformers(ckpt: Path, dtype_name: str, prompt: list[int], completion: list[int],
                         memory: PeakAnonymousMemory) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_s, model = _timed(lambda: AutoModelForCausalLM.from_pretrained(ckpt, dtype=getattr(torch, dtype_name)).eval())
    load_peak = memory.sample_gb()
    if LOAD_ONLY[0]:
        return dict(load=load_s, load_peak_anon_gb=load_peak)
    ids = torch.tensor([prompt])

    def gen():
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)
        return out[0, len(prompt):].tolist()

    def run_score():
        full = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(full).logits[0, len(prompt) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion)[:, None])
        return float(logprobs.sum())

    cold_s, tokens = _timed(gen)
    generate_s = _warm(gen)
    _, logprob = _timed(run_score)
    return dict(load=load_s, load_peak_anon_gb=load_peak, compile=cold_s - generate_s, generate=generate_s,
                score=_warm(run_score), tokens=tokens, logprob=logprob)


def run_worker(ckpt: Path, side: str, dtype_name: str) -> dict:
    """One (side, dtype) measurement in this process, with its peak anonymous memory."""
    memory = PeakAnonymousMemory()
    vocab = json.loads((ckpt / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(1)
    prompt, completion = (rng.integers(3, vocab, n).tolist() for n in (PROMPT_LEN, NEW_TOKENS))
    measure = measure_ours if side == "ours" else measure_transformers
    result = measure(ckpt, dtype_name, prompt, completion, memory)
    return {**result, "peak_anon_gb": memory.peak_gb}


# --- the run --------------------------------------------------------------------------------------------


def _run_worker_process(ckpt: Path, side: str, dtype_name: str) -> dict:
    command = [sys.executable, __file__, "--worker", side, dtype_name, "--checkpoint-dir", str(ckpt),
               "--repeats", str(REPEATS[0])] + (["--load-only"] if LOAD_ONLY[0] else [])
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} {dtype_name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_loads(ckpt: Path, preset: str) -> None:
    """--load-only: REPEATS rounds of the four loads, each in a fresh process, in turn."""
    weights_gb = sum(int(np.prod(s)) for _, s in hf_tensor_shapes(PRESETS[preset])) * 2 / 2**30
    rounds = [{run: _run_worker_process(ckpt, *run) for run in RUNS} for _ in range(REPEATS[0])]
    print(f"preset={preset} ({weights_gb:.2f} GiB of bf16 weights), {len(os.sched_getaffinity(0))} cores, "
          f"{REPEATS[0]} rounds of the four loads in turn; median [every round]")
    for side, dtype_name in RUNS:
        loads = [r[side, dtype_name]["load"] for r in rounds]
        peaks = [r[side, dtype_name]["load_peak_anon_gb"] for r in rounds]
        print(f"{side:>12} {dtype_name:<8}  load {statistics.median(loads):6.2f} s "
              f"[{', '.join(f'{x:.2f}' for x in loads)}]  peak anon {statistics.median(peaks):5.2f} GiB "
              f"({statistics.median(peaks) / weights_gb:.2f}x the bf16 weights)")
    for dtype_name in ("float32", "bfloat16"):
        ratio = statistics.median(r["ours", dtype_name]["load"] / r["transformers", dtype_name]["load"] for r in rounds)
        print(f"{dtype_name}: load time ours / transformers, median of the rounds' ratios: {ratio:.2f}x")


def _run_all(ckpt: Path, in_process: bool) -> dict:
    results = {}
    for side, dtype_name in RUNS:
        if in_process:
            results[side, dtype_name] = run_worker(ckpt, side, dtype_name)
            continue
        results[side, dtype_name] = _run_worker_process(ckpt, side, dtype_name)
    return results


def report(results: dict, preset: str) -> None:
    """Print the table of figures and ratios (ours / transformers: < 1 is ours faster/smaller)."""
    import jax
    import torch

    weights_gb = sum(int(np.prod(s)) for _, s in hf_tensor_shapes(PRESETS[preset])) * 2 / 2**30
    print(f"preset={preset} ({weights_gb:.2f} GiB of bf16 weights), prompt {PROMPT_LEN} tokens, "
          f"{NEW_TOKENS} new tokens, {len(os.sched_getaffinity(0))} cores, jax {jax.__version__}, "
          f"torch {torch.__version__}")
    rows = (("load (s)", "load"), ("peak anon memory (GiB)", "peak_anon_gb"),
            ("load peak anon memory (GiB)", "load_peak_anon_gb"), ("compile (s)", "compile"),
            ("generate 16 tokens, warm (s)", "generate"), ("score, warm (s)", "score"))
    print(f"| {'':<29} | {'ours f32':>9} | {'HF f32':>9} | {'ratio':>6} | {'ours bf16':>9} | {'HF bf16':>9} | {'ratio':>6} |")
    print(f"|{'-' * 31}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    for label, key in rows:
        cells = []
        for dtype_name in ("float32", "bfloat16"):
            a, b = results["ours", dtype_name][key], results["transformers", dtype_name][key]
            cells += [f"{a:>9.2f}", f"{b:>9.2f}", f"{a / b:>5.2f}x" if b > 0 else f"{'-':>6}"]
        print(f"| {label:<29} | " + " | ".join(cells) + " |")
    bf16 = results["ours", "bfloat16"]
    print(f"ours bf16 peak anonymous memory / bf16 weights: {bf16['peak_anon_gb'] / weights_gb:.2f}x "
          f"(by the end of loading: {bf16['load_peak_anon_gb'] / weights_gb:.2f}x)")
    for dtype_name in ("float32", "bfloat16"):
        same = results["ours", dtype_name]["tokens"] == results["transformers", dtype_name]["tokens"]
        a, b = results["ours", dtype_name]["logprob"], results["transformers", dtype_name]["logprob"]
        print(f"{dtype_name}: 16 greedy tokens identical: {same}; completion log-probability "
              f"ours {a:.5f} vs transformers {b:.5f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    REPEATS[0] = args.repeats
    LOAD_ONLY[0] = args.load_only
    if args.worker:
        from w2s_jax.startup import prepare_jax

        # compile times are measured: no persistent compilation cache (set before prepare_jax)
        os.environ["W2S_COMPILATION_CACHE"] = "off"
        prepare_jax()  # as the w2s commands do: keep freed host memory on CPU, before any JAX work
        print(json.dumps(run_worker(Path(args.checkpoint_dir), *args.worker)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(args.checkpoint_dir or tmp), args.preset)
        if args.load_only:
            report_loads(ckpt, args.preset)
        else:
            report(_run_all(ckpt, args.in_process), args.preset)


if __name__ == "__main__":
    main()
