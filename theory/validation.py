"""Argument checks shared by the theory modules: each names the parameter and the bad value.

The configs (:mod:`theory.model`, :class:`~theory.monte_carlo.FitSettings`) hold Python numbers
and check them in ``__post_init__``. The closed forms take arrays that may be traced (under
``jax.jit`` or ``jax.vmap``), where values cannot be inspected: :func:`concrete` returns the values
when they are known, so a function checks what it can see and leaves traced inputs to its caller.
"""

from __future__ import annotations

import math
import numbers
import operator

import jax
import numpy as np

__all__ = ["integer", "real", "concrete"]


def integer(name: str, value) -> int:
    """``value`` as an ``int`` (Python or numpy integer; not a bool or a float).

    Raises:
      TypeError: naming ``name`` and ``value`` when it is not an integer.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got the bool {name}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {name}={value!r} ({type(value).__name__})") from None


def real(name: str, value, *, finite: bool = True) -> float:
    """``value`` as a ``float``; with ``finite`` (default) NaN and +-inf are refused.

    Raises:
      TypeError: when ``value`` is not a real number (e.g. a string or a bool).
      ValueError: when ``finite`` and ``value`` is NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {name}={value!r} ({type(value).__name__})")
    x = float(value)
    if finite and not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {name}={x}")
    return x


def concrete(x) -> np.ndarray | None:
    """The values of ``x`` as a numpy array, or None when ``x`` is traced (inside jit or vmap)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)):
        return None
    return np.asarray(x)
