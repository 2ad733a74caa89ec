"""The language-model stack end to end on any supported checkpoint (a directory or a hub name).

Loads the model (sharded over every local device when there are several), generates, scores a
completion, fine-tunes with LoRA for a few steps on (prompt, completion) rows, merges the adapters
and exports a Hugging Face checkpoint that ``transformers`` and ``load_pretrained`` both read.
About a minute on a laptop CPU for a tiny model; `tests/test_examples.py` runs it on one.

    python examples/lm_quickstart.py --model ./Llama-3.2-1B --out runs/quickstart

Fine-tuning checkpoints go to `OUT/ckpt`: rerunning the same command resumes a killed run (and says
from which step); another model, prompt or `--steps` with the same `--out` is refused with the
differences named, instead of resuming the other run and exporting its weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from w2s_jax.inference import generate, make_sampler, score
from w2s_jax.models import load_pretrained, load_tokenizer, save_pretrained
from w2s_jax.parallel import MeshConfig, make_mesh
from w2s_jax.startup import prepare_jax
from w2s_jax.train import (CheckpointMismatchError, CrossEntropyToTokens, SFTDataset, TrainConfig, merge_lora,
                           train)


def main(argv=None) -> dict:
    """Run the stack; returns the printed summary plus "model", the merged model in memory."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory or hub name")
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run directory")
    ap.add_argument("--prompt", default="the cat sat on the")
    ap.add_argument("--steps", type=int, default=8, help="LoRA fine-tuning steps")
    args = ap.parse_args(argv)

    mesh = make_mesh(MeshConfig(fsdp=-1)) if jax.device_count() > 1 else None
    model, config = load_pretrained(args.model, dtype=jnp.float32, mesh=mesh)  # inference placement
    tok = load_tokenizer(args.model)

    sampler = make_sampler(temperature=0.8, top_p=0.95)
    gen = generate(model, tok, [args.prompt], max_new_tokens=8, sampler=sampler, key=jax.random.key(0))
    logp = score(model, tok, [args.prompt], [" mat"], batch_size=1)[0]

    rows = [{"prompt": args.prompt, "completion": " mat"}] * 8
    cfg = dataclasses.replace(TrainConfig.tiny(), total_steps=args.steps, warmup_steps=1, batch_size=8,
                              max_len=32, lora_rank=4, lora_targets=("q_proj", "v_proj"), learning_rate=5e-2)
    data = SFTDataset(rows, tok, max_len=cfg.max_len, pad_id=tok.pad_token_id or 0)
    result = train(model, data, config=cfg, loss_fn=CrossEntropyToTokens(), checkpoint_dir=args.out / "ckpt",
                   mesh=mesh, show_progress=False)  # trains under FSDP
    merge_lora(model)
    save_pretrained(model, config, args.out / "merged")
    after = score(model, tok, [args.prompt], [" mat"], batch_size=1)[0]
    summary = {"generated": gen.texts[0], "logp_before": logp.sum_logprob, "logp_after": after.sum_logprob,
               "train_losses": result.train_losses, "export": str(args.out / "merged")}
    print(json.dumps(summary, indent=1))
    return {**summary, "model": model}


if __name__ == "__main__":
    prepare_jax()  # on CPU only: keep freed host memory for XLA's per-step scratch (w2s_jax/startup.py)
    try:
        main()
    except CheckpointMismatchError as err:  # the user's fix is in the message: no traceback
        sys.exit(f"error: {err} (here: pass another --out)")
