"""The ``w2s`` command line: thin subcommands that parse arguments and call library functions.

Reference
---------
``w2s generate --model M --prompt TEXT [--prompt TEXT ...] [flags]``
    Continues each prompt; prints one generation per line (``--json``: one JSON object with the
    token ids, texts and finish reasons).

    --model PATH_OR_HUB_NAME  checkpoint directory (config.json, safetensors, tokenizer files) or
                              Hugging Face Hub name
    --prompt TEXT             prompt, repeat for a batch; must give at least one token
    --max-new-tokens N        most new tokens per prompt, N >= 1 (default 64)
    --temperature T           finite, T >= 0; 0 decodes greedily (default 0)
    --top-k K                 sample from the K most likely tokens, K >= 0; 0 (default): off
    --top-p P                 sample from the nucleus of mass P in (0, 1]; 1 (default): off
    --seed S                  sampling seed, 0 <= S < 2**32 (default 0)
    --stop STR                stop when the text contains STR (repeatable)
    --chat                    wrap each prompt in the tokenizer's chat template
    --dtype float32|bfloat16  compute dtype (default float32)
    --json                    machine-readable output

``w2s score --model M --prompt P --completion C [--prompt P --completion C ...] [flags]``
    ``log p(completion | prompt)`` of each pair, per token and summed. The completion is
    tokenized together with its prompt, so it should start at a token boundary (usually with a
    space: ``--prompt "the cat" --completion " sat"``).

    --model, --dtype, --json  as above
    --prompt P / --completion C  one pair per position, as many of each; neither may be empty
    --batch-size N            pairs per forward pass, N >= 1 (default 8)

``w2s run EXPERIMENT.toml``, ``w2s report RUN_DIR``, ``w2s list``
    The weak-to-strong pipeline (``w2s_jax/cli_pipeline.py``, docs/pipeline.md).

A prompt (score: prompt + completion) longer than the model's ``max_position_embeddings`` is
refused; generation that would run past it warns on stderr. The tokenizer and config.json are
checked before the model's weights are loaded.

Exit status: 0 success; 2 a usage or input error (bad flag value, missing or broken checkpoint
file, text the tokenizer cannot use), reported as one line ``w2s COMMAND: error: WHAT`` on stderr;
1 only for an unexpected internal error (with its traceback); 130 interrupted.

Start-up: JAX's persistent compilation cache is on (``w2s_jax.compilation_cache``; move it or
turn it off with ``W2S_COMPILATION_CACHE``), so a second run of the same command loads its
compiled programs instead of compiling them; on CPU, freed host memory is kept for reuse
(``w2s_jax.host_memory``). Heavy modules are imported only by the subcommand that needs them.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its flags and sets ``run`` to a
``_run_<name>(args) -> int`` function. To add one, write the pair and list it in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from w2s_jax.cli_pipeline import PipelineUsageError, add_list, add_report, add_run
from w2s_jax.startup import prepare_jax

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SEED_LIMIT = 2**32  # jax.random.key folds larger seeds onto smaller ones


class UsageError(Exception):
    """An error caused by the command line; reported as one line with exit status 2."""


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint directory (config.json + safetensors) or hub name")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (default float32)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_generate(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate text from a prompt")
    _add_model_flags(parser)
    parser.add_argument("--prompt", action="append", required=True,
                        help="prompt text (repeat for a batch)")
    parser.add_argument("--max-new-tokens", type=int, default=64,
                        help="most new tokens per prompt, >= 1 (default 64)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="finite, >= 0; 0 means greedy (default)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="keep the k most likely tokens when sampling; 0 or omitted: off")
    parser.add_argument("--top-p", type=float, default=None,
                        help="nucleus mass in (0, 1] when sampling; 1 or omitted: off")
    parser.add_argument("--seed", type=int, default=0, help=f"sampling seed in [0, {_SEED_LIMIT})")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    parser.set_defaults(run=_run_generate)


def _add_score(subparsers) -> None:
    parser = subparsers.add_parser("score", help="log-probability of a completion given a prompt")
    _add_model_flags(parser)
    parser.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    parser.add_argument("--completion", action="append", required=True,
                        help="completion scored after the prompt of the same position; start it "
                             "at a token boundary (usually a space)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass, >= 1")
    parser.set_defaults(run=_run_score)


_SUBCOMMANDS = (_add_generate, _add_score, add_run, add_report, add_list)


def build_parser() -> argparse.ArgumentParser:
    """The ``w2s`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="w2s", description="w2s-jax language-model tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``w2s`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage and the error (or --help)
        return int(exit_.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch themselves
    try:
        return args.run(args)
    except (UsageError, PipelineUsageError) as error:
        print(f"w2s {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"w2s {args.command}: interrupted", file=sys.stderr)
        return 130


# --- loading --------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    """The first paragraph of an error message as one line (wrapped sentences kept whole)."""
    paragraph = re.split(r"\n\s*\n", str(error).strip(), maxsplit=1)[0]
    return " ".join(paragraph.split()) or type(error).__name__


def _checkpoint_dir(model: str) -> Path:
    """The local checkpoint directory of ``--model`` (a Hub name is downloaded first)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{model}: not a directory (give the checkpoint directory)")
        if not (path / "config.json").is_file():
            raise UsageError(f"{model}: no config.json in this directory")
        return path
    if model.startswith((".", "/", "~")) or not _HUB_NAME.match(model):
        raise UsageError(f"{model}: model directory not found")
    from w2s_jax.models.hub import resolve_checkpoint_dir

    try:
        return resolve_checkpoint_dir(model)
    except Exception as error:  # noqa: BLE001 -- any download failure is reported in one line
        raise UsageError(f"could not download {model!r}: {_one_line(error)}") from None


def _load_config_and_tokenizer(ckpt_dir: Path, model: str):
    """(ModelConfig, tokenizer): the cheap parts, checked before any weights are read."""
    from w2s_jax.models.config import config_from_hf
    from w2s_jax.models.tokenizer import load_tokenizer

    try:
        config = config_from_hf(ckpt_dir / "config.json")
        tokenizer = load_tokenizer(ckpt_dir)
    except Exception as error:  # noqa: BLE001 -- any loader failure is reported in one line
        raise UsageError(f"could not load {model!r}: {_one_line(error)}") from None
    return config, tokenizer


def _load_model(ckpt_dir: Path, model: str, dtype_name: str):
    """The Transformer, for inference: its matmul weights one array per layer, read in place by
    generation and scoring (`w2s_jax.models.layer_weights`). Call
    :func:`~w2s_jax.startup.prepare_jax` first."""
    import jax.numpy as jnp

    from w2s_jax.models.checkpoint import load_pretrained

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
    try:
        model_, _ = load_pretrained(ckpt_dir, dtype=dtype, layout="per_layer")
    except Exception as error:  # noqa: BLE001 -- any loader failure is reported in one line
        raise UsageError(f"could not load {model!r}: {_one_line(error)}") from None
    return model_


def _check_positions(lengths: list[int], limit: int, what: str) -> None:
    """Refuses a sequence longer than the model's max_position_embeddings.

    ``what`` names sequence ``index`` in the message, e.g. ``"prompt {index}"``.
    """
    for index, length in enumerate(lengths):
        if length > limit:
            raise UsageError(f"{what.format(index=index)} is {length} tokens, more than the "
                             f"model's max_position_embeddings={limit} (config.json): shorten it")


# --- generate -------------------------------------------------------------------------------


def _check_generate_flags(args) -> None:
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not 0.0 <= args.temperature < math.inf:
        raise UsageError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise UsageError(f"--top-k must be >= 0 (0 turns it off), got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if not 0 <= args.seed < _SEED_LIMIT:
        raise UsageError(f"--seed must be in [0, {_SEED_LIMIT}), got {args.seed}")
    if args.temperature == 0.0 and (args.top_k or (args.top_p or 1.0) < 1.0):
        print("w2s generate: warning: --top-k/--top-p only apply when sampling (--temperature > 0);"
              " decoding greedily", file=sys.stderr)


def _run_generate(args) -> int:
    _check_generate_flags(args)
    ckpt_dir = _checkpoint_dir(args.model)
    prepare_jax()
    config, tokenizer = _load_config_and_tokenizer(ckpt_dir, args.model)
    if args.chat and getattr(tokenizer, "chat_template", None) is None:
        raise UsageError(f"--chat: the tokenizer of {args.model!r} has no chat template")
    from w2s_jax.inference.prompts import encode_prompts

    try:
        prompt_ids = encode_prompts(tokenizer, args.prompt, chat=args.chat)
    except ValueError as error:
        raise UsageError(str(error)) from None
    limit = config.max_position_embeddings
    _check_positions([len(ids) for ids in prompt_ids], limit, "prompt {index}")
    longest = max(len(ids) for ids in prompt_ids)
    if longest + args.max_new_tokens > limit:
        print(f"w2s generate: warning: the longest prompt ({longest} tokens) + --max-new-tokens "
              f"{args.max_new_tokens} runs past the model's max_position_embeddings={limit}: "
              "tokens beyond it come from positions the model was not trained on", file=sys.stderr)

    model = _load_model(ckpt_dir, args.model, args.dtype)
    import jax

    from w2s_jax.inference import generate, make_sampler

    sampler = make_sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    result = generate(model, tokenizer, prompt_ids, max_new_tokens=args.max_new_tokens,
                      sampler=sampler, key=jax.random.key(args.seed), stop_strings=tuple(args.stop))
    rows = [
        dict(prompt=prompt, prompt_token_ids=ids_in, token_ids=ids, text=text,
             finish_reason=reason)
        for prompt, ids_in, ids, text, reason in zip(
            args.prompt, result.prompt_token_ids, result.token_ids, result.texts,
            result.finish_reasons)
    ]
    if args.json:
        print(json.dumps(dict(model=args.model, sampler=repr(sampler), results=rows)))
    else:
        for row in rows:
            print(row["text"])
    return 0


# --- score ----------------------------------------------------------------------------------


def _run_score(args) -> int:
    if len(args.prompt) != len(args.completion):
        raise UsageError(f"{len(args.prompt)} --prompt but {len(args.completion)} --completion")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    ckpt_dir = _checkpoint_dir(args.model)
    prepare_jax()
    config, tokenizer = _load_config_and_tokenizer(ckpt_dir, args.model)
    from w2s_jax.inference.scoring import tokenize_pair

    try:
        pairs = [tokenize_pair(tokenizer, prompt, completion, index)
                 for index, (prompt, completion) in enumerate(zip(args.prompt, args.completion))]
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_positions([len(full) for full, _ in pairs], config.max_position_embeddings,
                     "pair {index}: prompt + completion")

    model = _load_model(ckpt_dir, args.model, args.dtype)
    from w2s_jax.inference import score

    # Token ids, split as tokenize_pair split them: score() then scores exactly these tokens.
    results = score(model, None, [full[:n] for full, n in pairs], [full[n:] for full, n in pairs],
                    batch_size=args.batch_size)
    rows = [
        dict(prompt=prompt, completion=completion, token_ids=r.token_ids,
             token_logprobs=r.token_logprobs, sum_logprob=r.sum_logprob)
        for prompt, completion, r in zip(args.prompt, args.completion, results)
    ]
    if args.json:
        print(json.dumps(dict(model=args.model, results=rows)))
    else:
        for row in rows:
            pieces = [f"{tokenizer.decode([t])!r}:{lp:.4f}"
                      for t, lp in zip(row["token_ids"], row["token_logprobs"])]
            print(f"sum_logprob={row['sum_logprob']:.6f}  " + " ".join(pieces))
    return 0


if __name__ == "__main__":
    sys.exit(main())
