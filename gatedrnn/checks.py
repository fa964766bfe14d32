"""Checks of user input shared by every module: each raises a ``ValueError`` or ``TypeError``
that names the argument, the expected and the actual value. Values are checked where they are
concrete (Python and NumPy numbers, concrete JAX arrays); traced values pass through, since
under ``jit`` or ``vmap`` only a checked run can look at them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def jax_version() -> tuple[int, ...]:
    """JAX's ``(major, minor)``, for the features that depend on it."""
    return tuple(int(part) for part in jax.__version__.split(".")[:2] if part.isdigit())


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array when it is a concrete number or array; ``None`` when it is
    traced. Strings and other objects raise a TypeError in the callers' checks."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        return None


def size(value: Any, name: str) -> int:
    """A positive int (Python or NumPy integer), returned as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def real(value: Any, name: str, *, above: float | None = None, at_least: float | None = None,
         below: float | None = None) -> None:
    """A real number (or array of them) that is finite and within the bounds, where
    concrete. Strings, booleans and complex numbers raise a TypeError."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    values = concrete(value)
    if values is None:
        return
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    bounds = [(above, np.greater, "greater than"), (at_least, np.greater_equal, "at least"),
              (below, np.less, "less than")]
    for bound, ok, words in bounds:
        if bound is not None and not np.all(ok(values, bound)):
            raise ValueError(f"{name} must be {words} {bound}; got {value!r}")


def rate(value: Any, name: str) -> None:
    """A probability in ``[0, 1)`` (a dropout rate), where concrete."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number in [0, 1); got {value!r}")
    values = concrete(value)
    if values is not None and (values.dtype.kind not in "iuf" or not np.all(
            (values >= 0) & (values < 1))):
        raise ValueError(f"{name} must be in [0, 1); got {value!r}")


def flag(value: Any, name: str) -> None:
    """A bool (Python or NumPy): a string such as ``"no"`` would silently count as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")


def key(value: Any, name: str = "key", *, required: bool = False) -> None:
    """A PRNG key (``jax.random.key``) or raw key data (``jax.random.PRNGKey``), or ``None``
    unless ``required``."""
    if value is None and not required:
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None or not (jnp.issubdtype(dtype, jax.dtypes.prng_key) or (
            dtype == jnp.uint32 and jnp.shape(value)[-1:] == (2,))):
        raise TypeError(f"{name} must be a PRNG key from jax.random.key(seed); got "
                        f"{type(value).__name__} {value!r}")


def takes_positional(fn: Any, count: int) -> bool | None:
    """Whether ``fn`` can be called with ``count`` positional arguments; ``None`` when it has
    no signature to read (a builtin: calling it will tell)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*[None] * count)
    except TypeError:
        return False
    return True


def signature_of(fn: Any) -> str:
    """``name(args)`` of a callable, for messages."""
    return f"{getattr(fn, '__name__', type(fn).__name__)}{inspect.signature(fn)}"


def batch_shape(value: Any) -> tuple:
    """A batch shape: an int ``B`` or a sequence of them, as a tuple."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        shape = tuple(value)
    except TypeError:
        raise TypeError(f"batch_shape must be a tuple of ints; got {value!r}") from None
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise ValueError(f"batch_shape must be a tuple of ints >= 0; got {value!r}")
    return tuple(int(d) for d in shape)


def is_zero(value: Any) -> bool:
    """Whether ``value`` is concretely 0 (so the work it scales can be skipped)."""
    values = concrete(value)
    return values is not None and values.size == 1 and float(values) == 0.0


def float_dtype(value: Any, name: str, *, optional: bool = True) -> Any:
    """A floating-point dtype (``jnp.float32``, ``"bfloat16"``, ...), or ``None`` if
    ``optional``."""
    if value is None and optional:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"{name} must be a floating-point dtype such as jnp.float32 or "
                         f"jnp.bfloat16; got {value!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point dtype; got {dtype.name}")
    return value


def checked(fn: Callable) -> Callable:
    """``fn`` with run-time checks of traced values, which raise on the host.

    Under ``jit`` and ``vmap`` the library cannot raise on values (a length of 300 for a
    sequence of 200 steps is a tracer), so a checked run is opt-in: ``checked(fn)`` runs
    ``fn`` under :func:`jax.experimental.checkify.checkify` with the user checks and the
    float checks (any operation that makes a NaN), and raises the first failed check as a
    ``jax.experimental.checkify.JaxRuntimeError`` after the call. ``gr.unroll(...,
    checks=True)`` adds the library's own checks: ``lengths`` in ``[0, T]``, finite inputs
    and params. A training run (``checked(jax.jit(make_train(config)))``) stops at the first
    operation that makes a NaN, where the unchecked run would skip the step. Checks cost
    time; use them to find a fault, not in every run::

        run = gr.checks.checked(jax.jit(lambda p, x, n: gr.unroll(
            cell, p, x, lengths=n, checks=True)))
        carry, ys = run(params, xs, lengths)      # raises if any length is outside [0, T]
    """
    from jax.experimental import checkify

    functional = checkify.checkify(fn, errors=checkify.user_checks | checkify.float_checks)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        error, out = functional(*args, **kwargs)
        error.throw()
        return out

    return run


def check_traced(condition: Any, message: str, *values: Any) -> None:
    """A run-time check (``checkify.check``) for a :func:`checked` run; ``message`` may hold
    ``{}`` placeholders for ``values``."""
    from jax.experimental import checkify

    checkify.check(condition, message, *values)


__all__ = ["batch_shape", "check_traced", "checked", "concrete", "flag", "float_dtype",
           "is_zero", "key", "rate", "real", "size"]
