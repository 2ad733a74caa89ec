"""Turning user prompts (strings or token-id lists) into token ids; finding stop strings and EOS in
generated rows."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np


def encode_prompts(tokenizer, prompts: Sequence, *, chat: bool = False) -> list[list[int]]:
    """Token ids for each prompt.

    Arguments:
      tokenizer: a ``transformers`` tokenizer, or None when every prompt is already a token-id list.
      prompts: strings or token-id lists (not mixed requirements: each item is handled on its own).
      chat: wrap each string prompt as one user turn with the tokenizer's chat template and the
        generation prompt appended; the template supplies special tokens such as BOS.
    Returns:
      one list of ints per prompt.
    Raises:
      ValueError naming the prompt's index when a prompt gives no tokens (an empty string with a
      tokenizer that adds no BOS token, an empty list), or a string comes without a tokenizer.
    """
    encoded = []
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ValueError(f"prompt {index} is a string but no tokenizer was given")
            encoded.append(_encode_text(tokenizer, prompt, index, chat=chat))
        else:
            ids = [int(t) for t in prompt]
            if not ids:
                raise ValueError(f"prompt {index} is an empty token list: the model needs at least "
                                 "one token to continue from")
            encoded.append(ids)
    return encoded


def _encode_text(tokenizer, text: str, index: int, *, chat: bool) -> list[int]:
    if not chat:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    else:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat=True but the tokenizer has no chat template")
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        # The template already contains BOS and friends; do not add them twice.
        ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    if not ids:
        what = "is empty" if not text else f"{text!r} encodes to no tokens"
        raise ValueError(f"prompt {index} {what} (the tokenizer adds no start token): the model "
                         "needs at least one token to continue from")
    return ids


def find_stop(tokenizer, token_ids: Sequence[int], stop_strings: Sequence[str]):
    """Finds the first stop string in the decoded ``token_ids``.

    Returns:
      None when no stop string occurs; otherwise ``(num_tokens, text)``: the fewest leading tokens
      whose decoded text contains a stop string, and that text cut just before the stop string.
    """
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    if _first_stop(text, stop_strings) is None:
        return None
    for num_tokens in range(1, len(token_ids) + 1):
        text = tokenizer.decode(list(token_ids[:num_tokens]), skip_special_tokens=True)
        cut = _first_stop(text, stop_strings)
        if cut is not None:
            return num_tokens, text[:cut]
    raise AssertionError("unreachable: the full text contains a stop string")


def _first_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stop_strings if s and s in text]
    return min(hits) if hits else None


def trim_after_eos(row_ids: list[int], eos_ids) -> tuple[list[int], str]:
    """Cuts a row after its first EOS."""
    for i, token in enumerate(row_ids):
        if token in eos_ids:
            return row_ids[: i + 1], "eos"
    return row_ids, "length"


def mark_stopped(decode_state, tokenizer, stop_strings, eos_ids, stopped, num_rows):
    """Host side, between decoding chunks: finds rows whose text now contains a stop string,
    records them in `stopped` (row -> (num_tokens, text)) and marks them done in `decode_state`."""
    tokens_BxN = np.asarray(decode_state.tokens_BxN)[:, : int(decode_state.step)]
    done_B = np.array(decode_state.done_B)
    for row in range(num_rows):
        if row in stopped:
            continue
        row_ids, _ = trim_after_eos(tokens_BxN[row].tolist(), eos_ids)
        hit = find_stop(tokenizer, row_ids, stop_strings)
        if hit is not None:
            stopped[row] = hit
            done_B[row] = True
    # Placed as before (rows over the mesh): a different placement would compile _decode again.
    return decode_state._replace(done_B=jax.device_put(done_B, decode_state.done_B.sharding))
