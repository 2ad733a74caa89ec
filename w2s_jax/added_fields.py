"""Settings added after stage keys existed: a dataclass field that stays out of a content key at
its default, so what was stored before it existed is still found.

Stages (``w2s_jax.pipeline``), method and task options mark such fields with :func:`added_field`;
``pipeline.refs.canonical`` and ``pipeline.stage.Stage.fields`` leave them out while
:func:`is_left_out`. It sits below every package that declares settings, so none imports upward.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def added_field(default):
    """A setting added to a stage or an option table after its keys existed: at ``default`` (which
    must be what the code did before) it stays out of the key, so stages that do not use it keep
    their keys and their stored results; any other value is hashed like every field."""
    return dataclasses.field(default=default, metadata={"added": True})


def is_left_out(field: dataclasses.Field, value: Any) -> bool:
    """Whether ``field`` (of a dataclass instance whose value is ``value``) stays out of a key."""
    return bool(field.metadata.get("added")) and value == field.default
