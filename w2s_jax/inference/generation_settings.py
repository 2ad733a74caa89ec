"""The sampling settings of an answer: the experiment's ``[generation]`` table.

A frozen value that stage keys hash (``w2s_jax.pipeline.refs.Inference``), so its class name and
fields are part of every key that reads it; :meth:`Generation.sampler` turns it into the sampler
:mod:`w2s_jax.inference.sampling` draws tokens with.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generation:
    """How answers are generated (the experiment's ``[generation]`` table)."""

    max_new_tokens: int = 128  # most tokens per answer
    temperature: float = 0.0  # 0 = greedy
    top_p: float | None = None  # nucleus mass in (0, 1]
    top_k: int | None = None  # keep the k most likely tokens
    stop: tuple[str, ...] = ()  # stop strings ("\n\nQuestion:" keeps base models from rambling on)

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature < float("inf")):
            raise ValueError(f"generation.temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"generation.top_k must be an int >= 1, got {self.top_k!r}")

    def sampler(self):
        """The :mod:`w2s_jax.inference.sampling` sampler for these settings."""
        from w2s_jax.inference.sampling import make_sampler

        return make_sampler(temperature=float(self.temperature), top_k=self.top_k, top_p=self.top_p)
