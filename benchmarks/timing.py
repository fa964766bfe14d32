"""Timing and counting helpers shared by the benchmarks and ``experiments/cost.py``, and two
for comparing programs: one compiled with a module's rule changed, and the largest relative
difference of two results.

Times are medians of repetitions interleaved across the compared functions (so a slow
period of the machine hits all of them alike), after one call that compiles and warms up;
FLOPs are XLA's own count for the compiled program.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def time_run(fn: Callable, *args, repeats: int = 5) -> float:
    """Median wall time of ``fn(*args)`` in seconds (compiled and warmed up first)."""
    return interleaved({"fn": lambda: fn(*args)}, repeats)["fn"]["median"]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Each ``name -> fn()`` timed ``repeats`` times, in turn with the others: ``name ->
    {"median": s, "times": [s, ...]}``. Every fn is called once first (compile, warm up)."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "times": t} for name, t in times.items()}


def compiled_with(fn, args: tuple, module: Any, name: str, value: Any):
    """``fn`` (a ``jax.jit``-ed function) lowered and compiled for ``args`` with
    ``module.name`` set to ``value`` while it is traced, then restored: gatedrnn's rules
    (``TRANSPOSED_COPY_ROWS``, ``ONE_FEATURE_DOT``, ...) are read when a call is traced, so the
    change holds for this program alone. ``fn`` must not have been traced before (JAX keeps
    one trace per function)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        return fn.lower(*args).compile()
    finally:
        setattr(module, name, saved)


def largest_relative_difference(reference, other) -> float:
    """The largest over leaves of ``max|reference - other| / max|reference|``, for two pytrees
    of arrays of the same structure (e.g. two programs' gradients)."""
    return max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
               for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(other), strict=True))


def flops(fn: Callable, *args) -> float:
    """XLA's floating-point operation count of the compiled ``jax.jit(fn)(*args)`` (NaN when
    the backend does not report one). XLA counts a loop's body once, not once per trip: for a
    scan over time use :func:`unroll_flops`."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """The machine's float32 matmul rate in FLOP/s, from ``jnp.dot`` of two ``[n, n]``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return 2 * n**3 / time_run(dot, a, a, repeats=repeats)


def unroll_flops(cell, params, batch: int, seq_len: int, input_size: int, *,
                 backward: bool = True) -> float:
    """FLOPs of ``gr.unroll`` of ``cell`` over ``[batch, seq_len, input_size]`` inputs
    (any layer with ``step`` and ``initial_carry``: a cell need not know its input size):
    XLA's count of
    one step (forward, or forward and backward through params and carry) times ``seq_len``.
    Hoisting the input projection out of the scan moves these FLOPs, it does not change
    them."""
    def outputs(p, carry, x):
        # real parts: a complex carry (the LRU) still gives a real loss to differentiate
        return sum(jnp.sum(jnp.real(leaf)) for leaf in jax.tree.leaves(cell.step(p, carry, x)))

    step = jax.grad(outputs, argnums=(0, 1)) if backward else outputs
    carry = cell.initial_carry((batch,), params=params)
    x = jnp.zeros((batch, input_size))
    return flops(step, params, carry, x) * seq_len
