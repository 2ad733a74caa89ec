"""(text, soft label) rows -> left-padded token batches for a sequence classifier.

Batch layout (all numpy, leading axis = rows; `SFTDataset`'s first three arrays):
- `tokens_BxT` int32, `positions_BxT` int32 (0 at the first real token), `valid_BxT` bool (False
  on left padding). Every row is left-padded to `max_len`, so its last token sits at T - 1.
- `teacher_probs_BxTxC` float32: the label distribution (1 - p, p) at position T - 1, where p is
  the row's probability of class 1; zeros elsewhere.
- `teacher_mask_BxT` bool: True at position T - 1 of each real row only, so a loss scores one
  position per example and `KLToTeacher(kind="cross_entropy")` is soft-label cross-entropy.

A text is tokenized as the classifier reads it (`models.classifier.classification_tokens`): BOS
(when the tokenizer has one and `add_bos`), then the text's tokens, cut from the left to `max_len`
so the end of the text, where the classifier reads it, is kept. Order is deterministic and resumable as in
`SFTDataset`: batch i is a pure function of (seed, i).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

from w2s_jax.models.classifier import classification_tokens
from w2s_jax.train.data import ShuffledBatches, Tokenizer

NUM_CLASSES = 2  # a label is the probability of class 1; class 0 has the rest


def _label(value: Any, index: int, field: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (str, bytes)) or not isinstance(value, Real):
        raise ValueError(f"row {index}: {field!r} must be a probability in [0, 1], got {value!r:.60}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"row {index}: {field!r} must be a probability in [0, 1], got {value!r}")
    return value


class ClassificationDataset(ShuffledBatches):
    """Tokenized (text, probability of class 1) rows with a deterministic, resumable batch order;
    the interface of `SFTDataset` (`train` takes either)."""

    num_classes = NUM_CLASSES
    has_teacher = True

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        tokenizer: Tokenizer,
        *,
        max_len: int,
        text_field: str = "text",
        label_field: str = "soft_label",
        pad_id: int = 0,
        add_bos: bool = True,
        seed: int = 0,
    ):
        """Tokenize every row now; errors name the bad row.

        Arguments:
          rows: mappings with a text (`text_field`) and the probability that the row is of class 1
            (`label_field`, a number in [0, 1]; hard labels are 0 or 1).
          tokenizer: anything with `encode(text, add_special_tokens=False)` and `bos_token_id`.
          max_len: row length T; longer texts lose tokens from the left.
          pad_id: token id written on padding (masked out by `valid_BxT`).
          add_bos: start each row with the tokenizer's BOS token (when it has one).
          seed: data-order seed.
        """
        if len(rows) == 0:
            raise ValueError("ClassificationDataset got an empty dataset (0 rows)")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        self.max_len, self.pad_id, self.seed = max_len, pad_id, seed
        self.text_field, self.label_field = text_field, label_field
        tokens, labels = [], []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"row {index} is a {type(row).__name__}, not a mapping of fields")
            for field in (text_field, label_field):
                if field not in row:
                    raise ValueError(f"row {index} has no {field!r} field (fields: {sorted(map(str, row))})")
            tokens.append(np.asarray(classification_tokens(
                tokenizer, row[text_field], max_len=max_len, add_bos=add_bos,
                what=f"row {index}: {text_field!r}"), np.int32))
            labels.append(_label(row[label_field], index, label_field))
        self._tokens = tokens
        self.labels = np.asarray(labels, np.float32)  # N: each row's probability of class 1

    def __len__(self) -> int:
        return len(self._tokens)

    def fingerprint(self) -> str:
        """sha256 (hex) of everything that decides the batches: every row's token ids (the texts
        as this tokenizer reads them, cut to max_len) and label, max_len, pad_id and seed.

        Two datasets with the same fingerprint yield the same batch at every position; the
        trainer stores it to refuse resuming a checkpoint on other data.
        """
        settings = {"kind": "classification", "max_len": self.max_len, "pad_id": self.pad_id,
                    "seed": self.seed, "rows": len(self)}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for ids in self._tokens:  # each row preceded by its length, so boundaries are unambiguous
            digest.update(np.asarray([len(ids)], "<i8").tobytes())
            digest.update(ids.astype("<i4").tobytes())
        digest.update(self.labels.astype("<f4").tobytes())
        return digest.hexdigest()

    def collate(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The left-padded batch of the given rows (see the module docstring for the layout)."""
        B, T = len(indices), self.max_len
        tokens = np.full((B, T), self.pad_id, np.int32)
        valid = np.zeros((B, T), bool)
        teacher_probs = np.zeros((B, T, NUM_CLASSES), np.float32)
        teacher_mask = np.zeros((B, T), bool)
        for b, i in enumerate(indices):
            ids = self._tokens[i]
            tokens[b, T - len(ids):] = ids
            valid[b, T - len(ids):] = True
            teacher_probs[b, T - 1] = (1.0 - self.labels[i], self.labels[i])
            teacher_mask[b, T - 1] = True
        return {
            "tokens_BxT": tokens,
            "positions_BxT": np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32),
            "valid_BxT": valid,
            "teacher_probs_BxTxC": teacher_probs,
            "teacher_mask_BxT": teacher_mask,
        }

    def eval_batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Every row once, in order, as (batch, number of real rows); the last batch is filled up
        with copies of row 0 whose teacher masks are cleared."""
        for start in range(0, len(self), batch_size):
            indices = list(range(start, min(start + batch_size, len(self))))
            real = len(indices)
            batch = self.collate(indices + [0] * (batch_size - real))
            batch["teacher_mask_BxT"][real:] = False
            yield batch, real
