"""The parallel paths of :func:`gatedrnn.unroll`: ``method="associative"`` for a cell linear in
its carry (a prefix scan of ``(a_t, b_t)`` pairs, ``O(log T)`` depth) and ``method="parallel"``
for a cell that offers its own whole-sequence form (``make_cell(..., parallel=...)``, as the
mLSTM's quadratic form)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def _expand(mask: Array, leaf: Array) -> Array:
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))



def _associative_scan(cell, params, us, carry, lengths, resets, carry_0, flip, input_size):
    """A cell whose step is ``carry_t = a_t * carry_{t-1} + b_t`` as a parallel prefix scan.

    ``a_t`` and ``b_t`` are read off ``recur`` itself, as the value and the forward-mode
    derivative at a zero carry (exact for an affine map). The pairs combine as
    ``(a, b) ∘ (a', b') = (a' a, a' b + b')`` with ``jax.lax.associative_scan``: ``O(log T)``
    depth and no division, so it is stable at any length. A frozen step (past ``lengths``) is
    ``(1, 0)``; a reset step is ``(0, a_t * carry_0 + b_t)``.
    """
    if not getattr(cell, "linear", False):
        raise ValueError(
            f"method='associative' needs a cell whose new carry is linear in the old one "
            f"(made with gr.make_cell(..., linear=True), as gr.min_gru, gr.min_lstm and "
            f"gr.lru are); cell {getattr(cell, 'kind', type(cell).__name__)!r} is not: use "
            "method='sequential'"
        )
    _check_linear(cell, input_size)
    zeros = jax.tree.map(jnp.zeros_like, carry)
    ones = jax.tree.map(jnp.ones_like, carry)

    def coefficients(u_t):
        b_t, a_t = jax.jvp(lambda c: cell.recur(params, c, u_t)[0], (zeros,), (ones,))
        return a_t, b_t

    a, b = jax.vmap(coefficients)(us)
    steps = jnp.arange(jax.tree.leaves(us)[0].shape[0])
    if lengths is not None:
        valid = (steps.reshape((-1,) + (1,) * lengths.ndim) < lengths)
        a = jax.tree.map(lambda v: jnp.where(_expand(valid, v), v, 1), a)
        b = jax.tree.map(lambda v: jnp.where(_expand(valid, v), v, 0), b)
    if resets is not None:
        b = jax.tree.map(lambda a_t, b_t, c0: jnp.where(_expand(resets, b_t), a_t * c0 + b_t,
                                                        b_t), a, b, carry_0)
        a = jax.tree.map(lambda v: jnp.where(_expand(resets, v), 0, v), a)
    if flip:
        a, b = jax.tree.map(lambda v: v[::-1], (a, b))
    # The given carry enters as a first element (0, carry), so the prefixes are the carries.
    a = jax.tree.map(lambda v, c: jnp.concatenate([jnp.zeros_like(c)[None], v]), a, carry)
    b = jax.tree.map(lambda v, c: jnp.concatenate([c[None], v]), b, carry)

    def combine(first, second):
        (a_1, b_1), (a_2, b_2) = first, second
        return (jax.tree.map(jnp.multiply, a_2, a_1),
                jax.tree.map(lambda a2, b1, b2: a2 * b1 + b2, a_2, b_1, b_2))

    _, carries = jax.lax.associative_scan(combine, (a, b))
    carries = jax.tree.map(lambda v: v[1:], carries)
    ys = jax.vmap(cell.output)(carries)
    final = jax.tree.map(lambda v, c: v[-1] if v.shape[0] else c, carries, carry)
    if flip:
        ys = ys[::-1]
    if lengths is not None:
        ys = jnp.where(_expand(valid, ys), ys, jnp.zeros_like(ys))
    return final, ys


def _parallel_form(cell, params, us, carry, lengths, resets, carry_0, flip):
    """Runs a cell's own whole-sequence form (``make_cell(..., parallel=...)``) over the
    projected time-major ``us``; steps past ``lengths`` are marked invalid for it, and their
    outputs are zero as :func:`gatedrnn.unroll`'s sequential scan makes them."""
    form = getattr(cell, "parallel", None)
    if form is None:
        raise ValueError(
            f"method='parallel' needs a cell with a whole-sequence form (gr.mlstm, or "
            f"gr.make_cell(..., parallel=...)); cell "
            f"{getattr(cell, 'kind', type(cell).__name__)!r} has none: use "
            "method='sequential' (or 'associative' for a cell linear in its carry)")
    num_steps = jax.tree.leaves(us)[0].shape[0]
    valid = None
    if lengths is not None:
        valid = jnp.arange(num_steps).reshape((-1,) + (1,) * lengths.ndim) < lengths
    if flip:
        us, valid, resets = jax.tree.map(lambda v: v[::-1], (us, valid, resets))
    carry, ys = form(params, carry, us, valid=valid, resets=resets, carry_0=carry_0)
    if flip:
        ys = ys[::-1]
    if valid is not None:
        ys = jnp.where(_expand(valid, ys), ys, jnp.zeros_like(ys))
    return carry, ys


def _check_linear(cell, input_size: int) -> None:
    """Tests a cell's ``linear=True`` declaration before the associative path trusts it.

    With concrete values (params from the cell's own ``init``, random inputs and carries;
    a program of its own, run while tracing, so a traced run is checked too): the new carry must be
    ``a * carry + b`` elementwise, with ``a`` and ``b`` read off at a zero carry as the
    associative path reads them, and ``core``'s ``h_t`` must equal ``output(carry)``, which
    the associative path emits. A dense linear map ``h @ A + u``, a nonlinear ``core`` or a
    readout other than ``output`` is refused here instead of giving other numbers than
    ``method="sequential"``. A probe, not a proof: a cell that is elementwise-affine only
    for the params ``init`` draws would pass."""
    parts = (cell.init, cell.project, cell.initial_carry, cell.recur, cell.output)
    try:
        hash(parts)
    except TypeError:  # a user's unhashable callable: probe it afresh on every trace
        probe = _linear_probe.__wrapped__
    else:
        probe = _linear_probe
    off, h_gap, h_shape, read_shape, tolerance = probe(*parts, input_size,
                                                       bool(jax.config.jax_enable_x64))
    kind = getattr(cell, "kind", type(cell).__name__)
    if off > tolerance:
        raise ValueError(
            f"cell {kind!r} is declared linear (make_cell(..., linear=True)), but its new carry "
            f"is not a * carry + b elementwise: at a random carry it differs from that by "
            f"{off:.3g} (relative), with a and b read off at a zero carry. "
            "method='associative' needs carry_t = a_t * carry_{t-1} + b_t, a_t and b_t "
            "depending on the input only (a diagonal recurrence; a dense h @ A is not one). "
            "Use method='sequential', or drop linear=True")
    if h_shape != read_shape or h_gap > tolerance:
        raise ValueError(
            f"cell {kind!r} is declared linear, but core's h_t (shape {h_shape}) is not "
            f"output(carry) (shape {read_shape}): method='associative' emits "
            "output(carry), method='sequential' core's h_t, so they would differ. Make core "
            "return output(carry) as h_t, or give make_cell the output function")


@functools.lru_cache(maxsize=64)
def _linear_probe(init, project, initial_carry, recur, output, input_size: int,
                  x64: bool) -> tuple:
    """``(carry gap, h_t gap, h_t's shape, output's shape, tolerance)`` of
    :func:`_check_linear`'s probe: relative gaps, and the tolerance for the carry's dtype
    (``x64``, the precision mode, is part of the cache key, as it sets that dtype).

    The probe runs as its own compiled program, outside whatever trace calls ``unroll``
    (``vmap``, ``jit``, ``grad``): ``ensure_compile_time_eval`` does not fold every
    primitive under ``vmap`` (a ``custom_jvp`` call stays batched), so concrete values need a
    separate program. Cached per cell functions, so a cell is probed once, not at every
    trace."""
    del x64  # only a cache key

    def run():
        k_params, k_x, k_c = jax.random.split(jax.random.key(0x11EA), 3)
        params = init(k_params, input_size)
        u = project(params, jax.random.normal(k_x, (2, input_size)))
        shape = initial_carry((2,), params=params)
        leaves, tree = jax.tree.flatten(shape)
        keys = jax.random.split(k_c, len(leaves))
        probe = jax.tree.unflatten(tree, [_random_like(k, leaf)
                                          for k, leaf in zip(keys, leaves)])
        zeros = jax.tree.map(jnp.zeros_like, probe)
        ones = jax.tree.map(jnp.ones_like, probe)
        b, a = jax.jvp(lambda c: recur(params, c, u)[0], (zeros,), (ones,))
        new, h_t = recur(params, probe, u)
        affine = jax.tree.map(lambda a, c, b: a * c + b, a, probe, b)
        return new, affine, h_t, output(new)

    new, affine, h_t, read = jax.tree.map(np.asarray, jax.jit(run).lower().compile()())

    def gap(x, y) -> float:
        scale = max(1.0, float(np.max(np.abs(y)))) if y.size else 1.0
        return float(np.max(np.abs(x - y))) / scale if x.size else 0.0

    off = max((gap(x, y) for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(affine))),
              default=0.0)
    leaves = jax.tree.leaves(new)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    tolerance = max(1e-4, 100 * float(jnp.finfo(dtype).eps))
    h_gap = gap(h_t, read) if h_t.shape == read.shape else np.inf
    return off, h_gap, h_t.shape, read.shape, tolerance


def _random_like(key, leaf) -> Array:
    """Standard normal values of ``leaf``'s shape and dtype (complex: both parts)."""
    value = jax.random.normal(key, leaf.shape, jnp.float32)
    if jnp.iscomplexobj(leaf):
        value = value + 1j * jax.random.normal(jax.random.fold_in(key, 1), leaf.shape)
    return value.astype(leaf.dtype)
