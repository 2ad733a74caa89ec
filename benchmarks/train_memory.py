"""What a compiled train step holds, for a model shape, without allocating the model.

The model is built abstractly (`nnx.eval_shape`: shapes and dtypes, no weights) in the compute
dtype, LoRA adapters and the optimizer are made for real (they are small), and the step the
trainer runs (`w2s_jax.train.make_train_step`) is traced, lowered and compiled by XLA:CPU, whose
`memory_analysis()` says how many bytes the step's arguments, outputs, donated (aliased) buffers
and scratch take. XLA:GPU fuses differently, so its scratch differs; the arguments, outputs and
aliasing are the program's own. A full fine-tuning preset keeps float32 master weights.

    python benchmarks/train_memory.py --preset tiny
    python benchmarks/train_memory.py --preset 7b --batch-size 16 --seq-len 768 --lora-rank 16 \\
        --lora-targets q_proj k_proj v_proj o_proj --platform gpu      # experiments/gsm8k.toml
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.train import CrossEntropyToTokens, TrainConfig, apply_lora, make_optimizer, make_train_step

PRESETS = {
    "tiny": ModelConfig.tiny(),
    # Llama-3.2-1B's shape (tied embeddings)
    "1b": ModelConfig(model_type="llama", vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
                      num_kv_heads=8, head_dim=64, intermediate_size=8192, rms_norm_eps=1e-5,
                      rope_theta=500_000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,),
                      pad_token_id=0),
    # Qwen2.5-7B's shape
    "7b": ModelConfig(model_type="qwen2", vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                      num_kv_heads=4, head_dim=128, intermediate_size=18944, rms_norm_eps=1e-6,
                      rope_theta=1_000_000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_ids=(2,),
                      pad_token_id=0),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the preset's depth")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--compute-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--lora-rank", type=int, default=16, help="0: full fine-tuning")
    parser.add_argument("--lora-targets", nargs="+", default=["q_proj", "v_proj"])
    parser.add_argument("--remat", choices=("auto", "none", "full", "dots"), default="auto")
    parser.add_argument("--platform", default="gpu", help="the platform `remat=auto` is resolved for")
    return parser.parse_args(argv)


def _gib(n: int) -> str:
    return f"{n:>16,} bytes = {n / 2**30:8.3f} GiB"


def main(argv=None) -> None:
    args = parse_args(argv)
    model_config = PRESETS[args.preset]
    if args.layers is not None:
        model_config = dataclasses.replace(model_config, num_layers=args.layers)
    lora = args.lora_rank > 0
    config = TrainConfig(batch_size=args.batch_size, max_len=args.seq_len, compute_dtype=args.compute_dtype,
                         remat=args.remat, lora_rank=args.lora_rank if lora else None,
                         lora_targets=tuple(args.lora_targets))
    dtype = jnp.dtype(args.compute_dtype)
    # a LoRA base is stored in the compute dtype (what `train` does), full fine-tuning in float32
    param_dtype = dtype if lora else jnp.float32
    model = nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
    if lora:
        apply_lora(model, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets,
                   key=jax.random.key(0))
    optimizer = nnx.eval_shape(lambda: make_optimizer(model, config))
    B, T = args.batch_size, args.seq_len
    batch = {"tokens_BxT": jax.ShapeDtypeStruct((B, T), jnp.int32),
             "positions_BxT": jax.ShapeDtypeStruct((B, T), jnp.int32),
             "valid_BxT": jax.ShapeDtypeStruct((B, T), jnp.bool_),
             "completion_mask_BxT": jax.ShapeDtypeStruct((B, T), jnp.bool_)}
    step = make_train_step(CrossEntropyToTokens(), config, platform=args.platform)
    graphdef, trainable, frozen, opt_graphdef, opt_state, batch = step.arguments(model, optimizer, batch)
    start = time.perf_counter()
    lowered = step.jitted.trace(graphdef, trainable, frozen, opt_graphdef, opt_state, batch).lower()
    memory = lowered.compile().memory_analysis()
    seconds = time.perf_counter() - start

    def nbytes(tree):
        return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))

    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"preset={args.preset} layers={model_config.num_layers} params={n_params / 1e9:.3f}B "
          f"{'LoRA r=' + str(config.lora_rank) + ' on ' + ','.join(config.lora_targets) if lora else 'full'} "
          f"compute={args.compute_dtype} B={B} T={T} remat={config.remat_policy(args.platform)} "
          f"(remat={args.remat} for {args.platform}); compiled on {jax.default_backend()} in {seconds:.1f} s")
    print(f"  trained weights   {_gib(nbytes(trainable))}")
    print(f"  optimizer state   {_gib(nbytes(opt_state))}")
    print(f"  frozen weights    {_gib(nbytes(frozen))}")
    print(f"  arguments         {_gib(memory.argument_size_in_bytes)}")
    print(f"  outputs           {_gib(memory.output_size_in_bytes)}")
    print(f"  aliased (donated) {_gib(memory.alias_size_in_bytes)}")
    print(f"  scratch (temp)    {_gib(memory.temp_size_in_bytes)}")
    peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
    print(f"  arguments + outputs - aliased + scratch = {_gib(peak + memory.temp_size_in_bytes)}")


if __name__ == "__main__":
    main()
