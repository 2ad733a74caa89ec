"""The ``w2s`` command line: thin subcommands that parse arguments and call library functions.

    w2s generate --model PATH_OR_HUB_NAME --prompt TEXT [--max-new-tokens N] [--temperature T]
                 [--top-p P] [--top-k K] [--seed S] [--stop STR] [--chat] [--dtype D] [--json]
    w2s score --model PATH --prompt P --completion C [--dtype D] [--json]

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its flags and sets ``run`` to a
``_run_<name>(args) -> int`` function. To add one, write the pair and list it in ``_SUBCOMMANDS``.
Errors a user can fix (missing model directory, bad flag values) print one line to stderr and exit
with status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 means greedy (default)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus mass in (0, 1]")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    parser.set_defaults(run=_run_generate)


def _add_score(subparsers) -> None:
    parser = subparsers.add_parser("score", help="log-probability of a completion given a prompt")
    _add_model_flags(parser)
    parser.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    parser.add_argument("--completion", action="append", required=True,
                        help="completion scored after the prompt of the same position")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.set_defaults(run=_run_score)


_SUBCOMMANDS = (_add_generate, _add_score)


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
    try:
        return args.run(args)
    except UsageError as error:
        print(f"w2s {args.command}: error: {error}", file=sys.stderr)
        return 2


def _load(model: str, dtype_name: str):
    """Loads model, config and tokenizer, turning loader failures into one-line usage errors."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"{model}: no config.json in this directory")
    elif model.startswith((".", "/", "~")) or not _HUB_NAME.match(model):
        raise UsageError(f"{model}: model directory not found")

    import jax.numpy as jnp

    from w2s_jax.models import load_pretrained, load_tokenizer

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
    source = str(path) if path.exists() else model
    try:
        model_, config = load_pretrained(source, dtype=dtype)
        tokenizer = load_tokenizer(source)
    except Exception as error:  # noqa: BLE001 -- any loader failure is reported in one line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"could not load {model!r}: {first_line}") from None
    return model_, config, tokenizer


def _run_generate(args) -> int:
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    from w2s_jax.inference import generate, make_sampler

    try:
        sampler = make_sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model, _, tokenizer = _load(args.model, args.dtype)
    if args.chat and getattr(tokenizer, "chat_template", None) is None:
        raise UsageError(f"--chat: the tokenizer of {args.model!r} has no chat template")

    import jax

    result = generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                      sampler=sampler, key=jax.random.key(args.seed), stop_strings=tuple(args.stop),
                      chat=args.chat)
    rows = [
        dict(prompt=prompt, prompt_token_ids=prompt_ids, token_ids=ids, text=text,
             finish_reason=reason)
        for prompt, prompt_ids, ids, text, reason in zip(
            args.prompt, result.prompt_token_ids, result.token_ids, result.texts,
            result.finish_reasons)
    ]
    if args.json:
        print(json.dumps(dict(model=args.model, sampler=repr(sampler), results=rows)))
    else:
        for row in rows:
            print(row["text"])
    return 0


def _run_score(args) -> int:
    if len(args.prompt) != len(args.completion):
        raise UsageError(f"{len(args.prompt)} --prompt but {len(args.completion)} --completion")
    from w2s_jax.inference import score

    model, _, tokenizer = _load(args.model, args.dtype)
    results = score(model, tokenizer, args.prompt, args.completion, batch_size=args.batch_size)
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
