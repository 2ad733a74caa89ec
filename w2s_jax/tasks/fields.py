"""Text fields of data rows: required or optional, numbers accepted as text.

CSV and parquet columns of numbers arrive as ints or floats (a CSV column with a gap arrives as
floats: ``72.0``), so a field meant as text accepts numbers and spells them as text; an integral
float is spelled as an int (``72.0`` -> ``"72"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from w2s_jax.tasks.base import DataError


def as_text(value: Any, name: str, index: int, source: str) -> str:
    """``value`` as non-empty text, or a DataError naming the source, row and field."""
    if isinstance(value, bool):
        raise DataError(f"{source}: row {index} field {name!r} must be text, got a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{source}: row {index} field {name!r} is {value} (a missing value?)")
        value = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{source}: row {index} field {name!r} must be text, got "
                        f"{type(value).__name__} {str(value)[:60]!r}")
    if not value.strip():
        raise DataError(f"{source}: row {index} field {name!r} is empty")
    return value


def text_field(row: Mapping[str, Any], name: str, index: int, source: str) -> str:
    """``row[name]`` as text (see :func:`as_text`); a missing field is a DataError listing the row's
    fields."""
    if name not in row or row[name] is None:
        raise DataError(f"{source}: row {index} has no {name!r} field (fields: {sorted(row)})")
    return as_text(row[name], name, index, source)


def optional_text_field(row: Mapping[str, Any], name: str | None, index: int, source: str) -> str | None:
    """``row[name]`` as text, or None when ``name`` is None or the row has no value for it
    (an unlabelled row). A value that is present must be valid text."""
    if name is None or row.get(name) is None:
        return None
    if isinstance(row[name], float) and math.isnan(row[name]):  # a gap in a CSV column
        return None
    return as_text(row[name], name, index, source)


def check_name(value: Any, what: str) -> None:
    """An Options field naming a data column must be a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty field name, got {value!r}")
