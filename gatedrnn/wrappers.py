"""Cell wrappers: each takes a cell and returns a cell, so they compose with everything else."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from gatedrnn.cells import Cell
from gatedrnn.unroll import _check_dropout


class DropoutCarry(NamedTuple):
    """Carry of a :func:`recurrent_dropout` cell: the inner carry and the sequence's mask."""

    carry: Any
    mask: Array


def recurrent_dropout(cell: Cell, rate: Any) -> Cell:
    """Variational recurrent dropout (Gal & Ghahramani 2016) on a cell's hidden state.

    One mask ``m [*B, H]`` per sequence, drawn when the carry is made and reused at every
    step, multiplies ``h_{t-1}`` where it enters the recurrent matmul (``(h_{t-1} ⊙ m) @ w_h``;
    the GRU's ``z ⊙ h_{t-1}`` and the LSTM's cell state are not masked). Masks are inverted:
    kept units are scaled by ``1 / (1 - rate)``.

    The mask lives in the carry, :class:`DropoutCarry` ``(carry, mask)``: pass a key to
    :func:`gatedrnn.unroll` (or to ``initial_carry``) to draw one; without a key the mask is
    all ones and the cell equals the one it wraps.

    Args:
        cell: the cell to wrap.
        rate: drop probability in ``[0, 1)``; may be a traced scalar, to sweep it.
    """
    _check_dropout(rate, "rate")

    def initial_carry(batch_shape=(), *, params=None, key=None, dtype=None):
        inner = cell.initial_carry(batch_shape, params=params, dtype=dtype)
        dt = jax.tree.leaves(inner)[0].dtype
        shape = (*tuple(batch_shape), cell.hidden_size)
        if key is None:
            return DropoutCarry(inner, jnp.ones(shape, dt))
        keep = 1.0 - rate
        mask = jax.random.bernoulli(key, keep, shape).astype(dt) / jnp.asarray(keep, dt)
        return DropoutCarry(inner, mask.astype(dt))

    def recur(params, carry, u_t, h_mask=None):
        mask = carry.mask if h_mask is None else carry.mask * h_mask
        inner, h_t = cell.recur(params, carry.carry, u_t, h_mask=mask)
        return DropoutCarry(inner, carry.mask), h_t

    def step(params, carry, x_t):
        return recur(params, carry, cell.project(params, x_t))

    def gates(params, carry, u_t):
        return cell.gates(params, carry.carry, u_t)

    def output(carry):
        return cell.output(carry.carry)

    return cell._replace(
        initial_carry=initial_carry, recur=recur, step=step, gates=gates, output=output,
        kind=f"recurrent_dropout({cell.kind})", config={"cell": cell, "rate": rate},
    )


def learned_initial_carry(cell: Cell) -> Cell:
    """Makes the initial carry a trainable parameter.

    ``init`` adds ``params["carry_0"]``, shaped like ``cell.initial_carry(())`` (an ``[H]``
    array, or an :class:`~gatedrnn.cells.LSTMCarry` of two) and initialised to zeros;
    ``initial_carry(batch_shape, params=params)`` broadcasts it over the batch.
    """

    def init(key, input_size):
        params = dict(cell.init(key, input_size))
        params["carry_0"] = cell.initial_carry(())
        return params

    def initial_carry(batch_shape=(), *, params=None, key=None, dtype=None):
        del key
        if params is None or "carry_0" not in params:
            raise ValueError(
                "this cell's initial carry is learned: pass params=params (with 'carry_0') "
                "to initial_carry"
            )
        shape = tuple(batch_shape)
        return jax.tree.map(
            lambda c0: jnp.broadcast_to(c0.astype(dtype or c0.dtype), shape + c0.shape),
            params["carry_0"],
        )

    return cell._replace(
        init=init, initial_carry=initial_carry,
        kind=f"learned_initial_carry({cell.kind})", config={"cell": cell},
    )


__all__ = ["DropoutCarry", "learned_initial_carry", "recurrent_dropout"]
