"""``zero-shot``: the strong model untouched (no labels, no fine-tuning), the floor of the strong side."""

from __future__ import annotations

from w2s_jax.methods.base import Method, register


@register
class ZeroShot(Method):
    """The strong model as pre-trained, evaluated without fine-tuning."""

    name = "zero-shot"
    uses_weak = False
    trains = False

    def units(self, ctx):
        return []

    def label(self, ctx, units):
        return []
