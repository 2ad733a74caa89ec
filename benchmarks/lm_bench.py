"""Language-model throughput: our Flax NNX Llama vs the `transformers` PyTorch Llama.

Measures, on the same random config, batch and sequence length:
  forward tokens/s     one no-cache forward pass over B x T tokens
  train tokens/s       forward + backward + AdamW update on next-token cross-entropy (written here,
                       with optax for ours and torch.optim for the reference)
  generate tokens/s    B x N new tokens from B prompts of length P, greedy, no early stop
                       (prefill included; ours = `w2s_jax.inference.generate`, theirs = HF generate)

CPU comparison (under a minute; pin to one core when other processes share the machine, since
PyTorch's OpenMP threads slow down by an order of magnitude when the cores are oversubscribed):
    python benchmarks/lm_bench.py --preset small --cpus 1
GPU variant (~1B Llama, bf16, no torch; reports train-step MFU = 6 * params * tokens/s / peak):
    python benchmarks/lm_bench.py --device-variant --preset 1b --peak-flops 989e12
MFU counts 6 FLOPs per parameter per token (embedding included, attention score FLOPs excluded).
`--breakdown N` prints the N most expensive XLA ops of our train step. The process first makes
glibc keep freed memory (`w2s_jax.host_memory.reuse_freed_host_memory`, what we recommend for CPU
runs), which spares XLA:CPU a page fault per page of its per-step scratch buffer; it applies to the
whole process, the PyTorch side included. `--no-reuse-host-memory` measures with malloc defaults.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from w2s_jax.compilation_cache import enable_compilation_cache
from w2s_jax.host_memory import reuse_freed_host_memory
from w2s_jax.inference import Greedy, generate
from w2s_jax.train import CrossEntropyToTokens, loss_from_hidden

# Llama-shaped configs in Hugging Face field names.
PRESETS = {
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=32),
    # Llama-3.2-1B shapes (1.24B parameters with tied embeddings).
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64),
}
DEFAULT_SEQ_LEN = {"small": 128, "1b": 1024}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None, help="default: 128 (small), 1024 (1b)")
    parser.add_argument("--prompt-len", type=int, default=32, help="generation prompt length P")
    parser.add_argument("--new-tokens", type=int, default=32, help="generated tokens per row N")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="pin the process to this many cores (both frameworks see the same ones)")
    parser.add_argument("--no-reuse-host-memory", dest="reuse_host_memory", action="store_false",
                        help="leave glibc's malloc at its defaults; by default the process calls "
                             "w2s_jax.host_memory.reuse_freed_host_memory() first (whole process, torch "
                             "included), as docs/benchmarks.md recommends for CPU runs")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N",
                        help="also print the N most expensive XLA ops of our train step (jax.profiler)")
    parser.add_argument("--device-variant", action="store_true",
                        help="accelerator run: bf16, no torch, report MFU")
    parser.add_argument("--remat", choices=("full", "dots"), default=None,
                        help="device variant: recompute each layer in the backward pass (Transformer remat=)")
    parser.add_argument("--peak-flops", type=float, default=989e12,
                        help="peak FLOP/s for MFU (default: H100 SXM dense bf16)")
    return parser.parse_args(argv)


def _median_seconds(fn, repeats: int, warmup: int = 10) -> float:
    """Runs ``fn`` ``warmup`` times, then returns the median wall time of ``repeats`` more calls.

    Ten warm-up calls, not one: the first compiles (ours), and with freed memory kept
    (`reuse_freed_host_memory`) the heap can take several steps to settle: XLA:CPU's scratch
    buffer is placed anew at the top of the heap (fresh pages, page faults) until the holes left by
    earlier steps fit it; measured in fresh processes, faults stopped within 20 steps and then
    stayed at 0. Both sides get the same treatment.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _print_op_breakdown(fn, top: int, runs: int = 3) -> None:
    """Traces `runs` calls of `fn` with jax.profiler and prints the `top` XLA ops by time per call."""
    import collections
    import glob

    totals, counts = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(runs):
                fn()
        (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                if line.name != "python" and "ThunkExecutor" not in event.name:
                    totals[event.name] += event.duration_ns
                    counts[event.name] += 1
    print(f"our train step, XLA ops (ms per step, {sum(totals.values()) / runs / 1e6:.1f} ms in all ops):")
    for name, ns in totals.most_common(top):
        print(f"  {ns / runs / 1e6:8.2f}  x{counts[name] // runs:<3d} {name}")


def _hf_config(preset: str):
    from transformers import LlamaConfig

    return LlamaConfig(**PRESETS[preset], max_position_embeddings=4096, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)


# --- ours ------------------------------------------------------------------------------------------


def _next_token_loss(model, tokens_BxT):
    """The library's SFT loss (`CrossEntropyToTokens`) with every position a completion token:
    the mean next-token cross-entropy over the T - 1 predicted positions, computed as the train
    step does (`loss_from_hidden`: logits a chunk of positions at a time at large B x T)."""
    B, T = tokens_BxT.shape
    batch = {"tokens_BxT": tokens_BxT, "positions_BxT": jnp.broadcast_to(jnp.arange(T), (B, T)),
             "valid_BxT": jnp.ones((B, T), bool), "completion_mask_BxT": jnp.ones((B, T), bool)}
    h_BxTxD, _ = model.hidden(tokens_BxT, positions_BxT=batch["positions_BxT"], valid_BxT=batch["valid_BxT"])
    return loss_from_hidden(CrossEntropyToTokens(), model, h_BxTxD, batch)


def bench_ours(model, tokens_BxT, prompts, *, new_tokens, repeats, breakdown: int = 0,
               generator=None) -> dict[str, float]:
    """Seconds per forward, per train step and per generate call for our model.

    generator: the model `generate` runs (default `model`): the same weights as loaded for
    inference. With `breakdown` > 0, also prints that many of the train step's most expensive XLA ops.
    """
    generator = model if generator is None else generator
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def forward(params, tokens_BxT):
        model = nnx.merge(graphdef, params, rest)
        B, T = tokens_BxT.shape
        logits_BxTxV, _ = model(tokens_BxT, positions_BxT=jnp.broadcast_to(jnp.arange(T), (B, T)),
                                valid_BxT=jnp.ones((B, T), bool))
        return logits_BxTxV.mean()

    optimizer = optax.adamw(1e-4)

    @functools.partial(jax.jit, donate_argnums=(0, 1))  # update in place, as torch.optim does
    def train_step(params, opt_state, tokens_BxT):
        loss_fn = lambda p: _next_token_loss(nnx.merge(graphdef, p, rest), tokens_BxT)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_state = [jax.tree.map(jnp.copy, params), optimizer.init(params)]  # donated: keep the model intact

    def run_train():
        train_state[0], train_state[1], loss = train_step(train_state[0], train_state[1], tokens_BxT)
        loss.block_until_ready()

    train = _median_seconds(run_train, repeats)
    if breakdown:
        _print_op_breakdown(run_train, breakdown)
    return dict(
        forward=_median_seconds(lambda: forward(params, tokens_BxT).block_until_ready(), repeats),
        train=train,
        generate=_median_seconds(lambda: generate(generator, None, prompts, max_new_tokens=new_tokens,
                                                  sampler=Greedy(), eos_token_ids=()), repeats),
    )


# --- transformers ------------------------------------------------------------------------------------


def bench_torch(reference, tokens_BxT, prompts, *, new_tokens, repeats) -> dict[str, float]:
    """Seconds per forward, per train step and per generate call for the PyTorch reference."""
    import torch

    tokens = torch.as_tensor(np.array(tokens_BxT), dtype=torch.long)
    prompt_ids = torch.as_tensor(np.asarray(prompts), dtype=torch.long)

    def forward():
        with torch.no_grad():
            reference(tokens).logits.mean().item()

    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-4)

    def train_step():
        loss = reference(tokens, labels=tokens).loss  # transformers' own causal-LM loss (shifts labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run_generate():
        with torch.no_grad():
            reference.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)

    reference.train()
    train = _median_seconds(train_step, repeats)
    reference.eval()
    return dict(forward=_median_seconds(forward, repeats), train=train,
                generate=_median_seconds(run_generate, repeats))


# --- runs ----------------------------------------------------------------------------------------------


def _inputs(vocab_size, batch_size, seq_len, prompt_len):
    rng = np.random.default_rng(0)
    tokens_BxT = jnp.asarray(rng.integers(3, vocab_size, (batch_size, seq_len)), jnp.int32)
    prompts = rng.integers(3, vocab_size, (batch_size, prompt_len)).tolist()
    return tokens_BxT, prompts


def run_cpu_comparison(args) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from w2s_jax.models import load_pretrained

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # as many threads as XLA's CPU pool
    seq_len = args.seq_len or DEFAULT_SEQ_LEN[args.preset]
    torch.manual_seed(0)
    reference = LlamaForCausalLM(_hf_config(args.preset)).to(torch.float32)
    with tempfile.TemporaryDirectory() as tmp:  # ours loads the very same weights
        reference.save_pretrained(tmp)
        model, config = load_pretrained(tmp)  # as the README loads it: the backend's inference layout
        trainable, _ = load_pretrained(tmp, layout="stacked")  # what a train step reads
    reference.config._attn_implementation = "sdpa"
    tokens_BxT, prompts = _inputs(config.vocab_size, args.batch_size, seq_len, args.prompt_len)
    # Same computation: both sides' training losses agree on the same weights and tokens.
    ours_loss = float(_next_token_loss(trainable, tokens_BxT))
    with torch.no_grad():
        labels = torch.as_tensor(np.array(tokens_BxT), dtype=torch.long)
        theirs_loss = float(reference(labels, labels=labels).loss)
    if not abs(ours_loss - theirs_loss) <= 1e-4 * abs(theirs_loss):
        raise RuntimeError(f"the two train steps compute different losses: {ours_loss} vs {theirs_loss}")
    kw = dict(new_tokens=args.new_tokens, repeats=args.repeats)
    ours = bench_ours(trainable, tokens_BxT, prompts, breakdown=args.breakdown, generator=model, **kw)
    theirs = bench_torch(reference, tokens_BxT, prompts, **kw)
    n_params = sum(p.numel() for p in reference.parameters())
    train_tokens = args.batch_size * seq_len
    new_tokens = args.batch_size * args.new_tokens
    print(f"preset={args.preset} params={n_params / 1e6:.1f}M batch={args.batch_size} seq_len={seq_len} "
          f"prompt_len={args.prompt_len} new_tokens={args.new_tokens} float32, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), reuse-host-memory={args.reuse_host_memory}")
    print(f"train loss on the first batch: w2s-jax {ours_loss:.6f}, transformers {theirs_loss:.6f}")
    print(f"| {'tokens/s':<30} | {'w2s-jax':>10} | {'transformers':>12} | {'ratio':>8} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 14}|{'-' * 10}|")
    for name, label, count in (("forward", "forward", train_tokens),
                               ("train", "train step (AdamW)", train_tokens),
                               ("generate", "generate (greedy, new tokens)", new_tokens)):
        a, b = count / ours[name], count / theirs[name]
        print(f"| {label:<30} | {a:>10.0f} | {b:>12.0f} | {a / b:>7.2f}x |")


def run_device_variant(args) -> None:
    from w2s_jax.models import ModelConfig, Transformer

    hf = PRESETS[args.preset]
    config = ModelConfig(model_type="llama", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                         num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                         num_kv_heads=hf["num_key_value_heads"], head_dim=hf["head_dim"],
                         intermediate_size=hf["intermediate_size"], rms_norm_eps=1e-5, rope_theta=500_000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,), pad_token_id=0)
    # the layers are one scan (compile time independent of depth); --remat trades compute for memory
    model = Transformer(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                        remat=args.remat)
    seq_len = args.seq_len or DEFAULT_SEQ_LEN[args.preset]
    tokens_BxT, prompts = _inputs(config.vocab_size, args.batch_size, seq_len, args.prompt_len)
    seconds = bench_ours(model, tokens_BxT, prompts, new_tokens=args.new_tokens, repeats=args.repeats,
                         breakdown=args.breakdown)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    train_tps = args.batch_size * seq_len / seconds["train"]
    print(f"preset={args.preset} params={n_params / 1e9:.3f}B bf16 batch={args.batch_size} seq_len={seq_len} "
          f"device={jax.devices()[0].device_kind}")
    print(f"forward tokens/s      {args.batch_size * seq_len / seconds['forward']:.0f}")
    print(f"train tokens/s        {train_tps:.0f}   MFU {6 * n_params * train_tps / args.peak_flops:.1%} "
          f"(peak {args.peak_flops:.3g} FLOP/s)")
    print(f"generate tokens/s     {args.batch_size * args.new_tokens / seconds['generate']:.0f} "
          f"(prompt {args.prompt_len}, {args.new_tokens} new tokens, prefill included)")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.cpus:  # before the first JAX computation creates the CPU client and its thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    if args.reuse_host_memory and not reuse_freed_host_memory():  # before any thread allocates
        print("reuse_freed_host_memory: mallopt unavailable (not glibc); running with malloc defaults")
        args.reuse_host_memory = False
    # Compiled programs are loaded from disk on a rerun (W2S_COMPILATION_CACHE moves or turns it
    # off); timings are unaffected: every figure is taken after warm-up calls.
    enable_compilation_cache()
    if args.device_variant:
        run_device_variant(args)
    else:
        run_cpu_comparison(args)


if __name__ == "__main__":
    main()
