"""(prompt, completion) rows -> left-padded token batches with a completion mask.

Batch layout (all numpy, leading axis = rows):
- `tokens_BxT` int32, `positions_BxT` int32 (0 at the first real token), `valid_BxT` bool (False
  on left padding), `completion_mask_BxT` bool (True on completion tokens, aligned with tokens).
- With teacher targets (rows carry "teacher_probs"): `teacher_probs_BxTxC` float32 and
  `teacher_mask_BxT` bool, aligned with the LOGITS: position t holds the teacher's distribution
  for token t+1, set where token t+1 is a completion token. With `label_ids`, C is the size of the
  label set and `label_ids_BxC` int32 names its tokens; otherwise C is the vocabulary.
- With per-token teacher ids (rows carry "teacher_ids" beside "teacher_probs": a teacher's top-k
  tokens at each completion token), C = k and `teacher_ids_BxTxC` int32, aligned like
  `teacher_probs_BxTxC`, names the vocabulary id of each of the C columns at each position.

Order is deterministic: batch i is a pure function of (seed, i), so a run resumes from a saved
position (the number of batches already drawn) exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class Tokenizer(Protocol):
    """What the dataset needs from a tokenizer (a `transformers` tokenizer fits)."""

    bos_token_id: int | None
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class ShuffledBatches:
    """Training batches in a seeded order reshuffled every epoch, for a dataset with `__len__`,
    `seed` and `collate(indices)`: batch `position` depends on the seed and the position only, so
    a resumed run continues with the batches it would have seen."""

    def batches_per_epoch(self, batch_size: int) -> int:
        """Full batches per pass over the data (the remainder is dropped, order reshuffled)."""
        if batch_size > len(self):
            raise ValueError(f"batch_size={batch_size} exceeds the dataset size {len(self)}")
        return len(self) // batch_size

    def batch(self, position: int, batch_size: int) -> dict[str, np.ndarray]:
        """Training batch number `position` (0-based, counting across epochs)."""
        per_epoch = self.batches_per_epoch(batch_size)
        epoch, j = divmod(position, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self))
        return self.collate(order[j * batch_size : (j + 1) * batch_size])

    def iterate(self, batch_size: int, *, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Endless training batches from position `start`."""
        position = start
        while True:
            yield self.batch(position, batch_size)
            position += 1


class SFTDataset(ShuffledBatches):
    """Tokenized (prompt, completion) rows with a deterministic, resumable batch order."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        tokenizer: Tokenizer,
        *,
        max_len: int,
        pad_id: int = 0,
        add_bos: bool = True,
        add_eos: bool = True,
        label_ids: Sequence[int] | None = None,
        seed: int = 0,
    ):
        """Tokenize every row now; errors name the bad row.

        Arguments:
          rows: mappings with "prompt" and "completion" strings, optionally "teacher_probs": a
            (C,) or (n_completion_tokens, C) array of the teacher's probabilities; a (C,) array
            targets the first completion token only. With "teacher_ids", an (n, k) array of
            vocabulary ids of the same shape as "teacher_probs", column c of row j is the
            probability of token teacher_ids[j, c] (a teacher's top-k at completion token j).
          tokenizer: anything with `encode(text, add_special_tokens=False)` and bos/eos ids.
          max_len: row length T; longer rows lose prompt tokens from the left.
          label_ids: the C token ids of a restricted label set for "teacher_probs".
          seed: data-order seed.
        """
        if len(rows) == 0:
            raise ValueError("SFTDataset got an empty dataset (0 rows)")
        self.max_len = max_len
        self.pad_id = pad_id
        self.seed = seed
        self.label_ids = None if label_ids is None else np.asarray(label_ids, dtype=np.int32)
        self._rows = [
            self._tokenize(i, row, tokenizer, add_bos=add_bos, add_eos=add_eos)
            for i, row in enumerate(rows)
        ]
        has_teacher = {row[2] is not None for row in self._rows}
        if len(has_teacher) > 1:
            raise ValueError("either every row or no row must have 'teacher_probs'")
        self.has_teacher = has_teacher.pop()
        if self.has_teacher:
            widths = {row[2].shape[-1] for row in self._rows}
            if len(widths) > 1:
                raise ValueError(f"rows' teacher_probs have different widths {sorted(widths)}")
            self.num_classes = widths.pop()
            if self.label_ids is not None and len(self.label_ids) != self.num_classes:
                raise ValueError(
                    f"label_ids has {len(self.label_ids)} tokens but teacher_probs have "
                    f"{self.num_classes} columns"
                )
        self._teacher_ids = self._read_teacher_ids(rows)

    def _tokenize(self, index, row, tokenizer, *, add_bos, add_eos):
        for field in ("prompt", "completion"):
            if field not in row:
                raise KeyError(f"row {index} has no {field!r} field (fields: {sorted(row)})")
            if not isinstance(row[field], str):
                raise TypeError(f"row {index} field {field!r} must be a str, got {row[field]!r}")
        prompt = list(tokenizer.encode(row["prompt"], add_special_tokens=False))
        completion = list(tokenizer.encode(row["completion"], add_special_tokens=False))
        if add_bos and tokenizer.bos_token_id is not None:
            prompt = [tokenizer.bos_token_id] + prompt
        if add_eos and tokenizer.eos_token_id is not None:
            completion = completion + [tokenizer.eos_token_id]
        if not completion:
            raise ValueError(f"row {index} has an empty completion")
        if len(completion) >= self.max_len:
            raise ValueError(
                f"row {index}: completion has {len(completion)} tokens, max_len is {self.max_len}"
            )
        prompt = prompt[-(self.max_len - len(completion)) :]
        if not prompt:
            raise ValueError(f"row {index} has an empty prompt (nothing to predict from)")
        teacher = None
        if "teacher_probs" in row:
            teacher = np.asarray(row["teacher_probs"], dtype=np.float32)
            if teacher.ndim == 1:
                teacher = teacher[None]
            if teacher.ndim != 2 or teacher.shape[0] > len(completion):
                raise ValueError(
                    f"row {index}: teacher_probs of shape {teacher.shape} must be (C,) or "
                    f"(n <= {len(completion)} completion tokens, C)"
                )
        return np.asarray(prompt, np.int32), np.asarray(completion, np.int32), teacher

    def _read_teacher_ids(self, rows) -> list[np.ndarray] | None:
        """Each row's "teacher_ids" as int32 arrays shaped like its teacher_probs (None if no row
        has them); errors name the row."""
        has_ids = {"teacher_ids" in row for row in rows}
        if has_ids == {False}:
            return None
        if len(has_ids) > 1:
            raise ValueError("either every row or no row must have 'teacher_ids'")
        if self.label_ids is not None:
            raise ValueError("rows with 'teacher_ids' name their own tokens; do not also pass label_ids")
        out = []
        for index, (row, (_, _, probs)) in enumerate(zip(rows, self._rows)):
            if probs is None:
                raise ValueError(f"row {index} has 'teacher_ids' but no 'teacher_probs'")
            ids = np.asarray(row["teacher_ids"])
            if ids.ndim == 1:
                ids = ids[None]
            if ids.shape != probs.shape:
                raise ValueError(f"row {index}: teacher_ids of shape {ids.shape} must have the shape "
                                 f"of its teacher_probs {probs.shape}")
            if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0
                             or ids.max() > np.iinfo(np.int32).max):
                raise ValueError(f"row {index}: teacher_ids must be non-negative int32 token ids, "
                                 f"got dtype {ids.dtype} in [{ids.min()}, {ids.max()}]")
            out.append(ids.astype(np.int32))
        return out

    def __len__(self) -> int:
        return len(self._rows)

    def fingerprint(self) -> str:
        """sha256 (hex) of everything that decides the batches: every tokenized row (prompt ids,
        completion ids, teacher probabilities, teacher ids) and max_len, pad_id, seed, label_ids.

        Two datasets with the same fingerprint yield the same batch at every position; the
        trainer stores it to refuse resuming a checkpoint on other data.
        """
        label_ids = None if self.label_ids is None else self.label_ids.tolist()
        settings = {"max_len": self.max_len, "pad_id": self.pad_id, "seed": self.seed,
                    "label_ids": label_ids, "rows": len(self._rows)}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for prompt, completion, teacher in self._rows:
            # each array is preceded by its rank and shape, so row boundaries are unambiguous
            arrays = [prompt.astype("<i4"), completion.astype("<i4")]
            arrays.append(np.zeros((0,), "<f4") if teacher is None else teacher.astype("<f4"))
            for array in arrays:
                digest.update(np.asarray([array.ndim, *array.shape], "<i8").tobytes())
                digest.update(np.ascontiguousarray(array).tobytes())
        for ids in self._teacher_ids or ():  # after the rows, so datasets without ids hash as before
            digest.update(np.asarray([ids.ndim, *ids.shape], "<i8").tobytes())
            digest.update(np.ascontiguousarray(ids.astype("<i4")).tobytes())
        return digest.hexdigest()

    def collate(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The left-padded batch of the given rows (see the module docstring for the layout)."""
        B, T = len(indices), self.max_len
        tokens = np.full((B, T), self.pad_id, np.int32)
        valid = np.zeros((B, T), bool)
        completion = np.zeros((B, T), bool)
        if self.has_teacher:
            teacher_probs = np.zeros((B, T, self.num_classes), np.float32)
            teacher_mask = np.zeros((B, T), bool)
        if self._teacher_ids is not None:
            teacher_ids = np.zeros((B, T, self.num_classes), np.int32)
        for b, i in enumerate(indices):
            prompt, comp, teacher = self._rows[i]
            n = len(prompt) + len(comp)
            tokens[b, T - n :] = np.concatenate([prompt, comp])
            valid[b, T - n :] = True
            completion[b, T - len(comp) :] = True
            if self.has_teacher:
                # logits at position t predict token t+1: the first completion token at
                # T - len(comp) is predicted from position T - len(comp) - 1.
                start = T - len(comp) - 1
                teacher_probs[b, start : start + len(teacher)] = teacher
                teacher_mask[b, start : start + len(teacher)] = True
                if self._teacher_ids is not None:
                    teacher_ids[b, start : start + len(teacher)] = self._teacher_ids[i]
        batch = {
            "tokens_BxT": tokens,
            "positions_BxT": np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32),
            "valid_BxT": valid,
            "completion_mask_BxT": completion,
        }
        if self.has_teacher:
            batch["teacher_probs_BxTxC"] = teacher_probs
            batch["teacher_mask_BxT"] = teacher_mask
            if self.label_ids is not None:
                batch["label_ids_BxC"] = np.tile(self.label_ids, (B, 1))
            if self._teacher_ids is not None:
                batch["teacher_ids_BxTxC"] = teacher_ids
        return batch

    def eval_batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Every row once, in order, as (batch, number of real rows); the last batch is filled up
        with copies of row 0 whose completion (and teacher) masks are cleared."""
        for start in range(0, len(self), batch_size):
            indices = list(range(start, min(start + batch_size, len(self))))
            real = len(indices)
            batch = self.collate(indices + [0] * (batch_size - real))
            for key in ("completion_mask_BxT", "teacher_mask_BxT"):
                if key in batch:
                    batch[key][real:] = False
            yield batch, real
