"""Cell wrappers: each takes a layer and returns one of the same kind, so they compose with
everything else. A wrapped cell is built with :func:`gatedrnn.make_cell` from the protocol
methods of the cell it wraps; a stack or bidirectional pair has every cell in it wrapped."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from gatedrnn import checks
from gatedrnn.cells import cell_factory, make_cell
from gatedrnn.scan import check_layer


class DropoutCarry(NamedTuple):
    """Carry of a :func:`recurrent_dropout` cell: the inner carry and the sequence's mask."""

    carry: Any
    mask: Array


def _kind(layer: Any) -> str:
    return getattr(layer, "kind", type(layer).__name__)


def _gates(cell: Any, params: Any, carry: Any, u_t: Array) -> dict:
    """The wrapped cell's gates (``gates`` is optional in the protocol)."""
    return cell.gates(params, carry, u_t) if hasattr(cell, "gates") else {}


def _for_every_cell(layer: Any, wrap) -> Any | None:
    """``layer.map_layers(wrap)`` for a composite layer; ``None`` for a cell."""
    check_layer(layer, "cell")
    if hasattr(layer, "recur"):
        return None
    if not hasattr(layer, "map_layers"):
        raise TypeError(f"cell: a sequence layer ({type(layer).__name__}) can be wrapped only "
                        "if it has map_layers(fn), as gr.stack and gr.bidirectional have")
    return layer.map_layers(wrap)


@cell_factory
def recurrent_dropout(cell: Any, rate: Any) -> Any:
    """Variational recurrent dropout (Gal & Ghahramani 2016) on a cell's hidden state.

    One mask ``m [*B, output_size]`` per sequence, drawn when the carry is made and reused at
    every step, multiplies ``h_{t-1}`` where it enters the recurrent matmul (``(h_{t-1} ⊙ m) @
    w_h``; the GRU's ``z ⊙ h_{t-1}`` and the LSTM's cell state are not masked). Masks are
    inverted: kept units are scaled by ``1 / (1 - rate)``. The mask reaches the cell's
    ``core`` as ``h_mask`` (see :func:`gatedrnn.make_cell` for cores that take none).

    The mask lives in the carry, :class:`DropoutCarry` ``(carry, mask)``: pass a key to
    :func:`gatedrnn.unroll` (or to ``initial_carry``) to draw one; without a key the mask is
    all ones and the cell equals the one it wraps. A stack or bidirectional pair gets every
    cell in it wrapped, each with its own mask.

    Args:
        cell: the layer to wrap (a cell, or a stack or bidirectional pair of them).
        rate: drop probability in ``[0, 1)``; may be a traced scalar, to sweep it.
    """
    checks.rate(rate, "rate")
    composite = _for_every_cell(cell, lambda layer: recurrent_dropout(layer, rate))
    if composite is not None:
        return composite

    def initial_carry(batch_shape, *, params, key, dtype):
        inner = cell.initial_carry(batch_shape, params=params, dtype=dtype)
        dt = jax.eval_shape(cell.output, inner).dtype
        shape = (*batch_shape, cell.output_size)
        if key is None:
            return DropoutCarry(inner, jnp.ones(shape, dt))
        keep = 1.0 - rate
        mask = jax.random.bernoulli(key, keep, shape).astype(dt) / jnp.asarray(keep, dt)
        return DropoutCarry(inner, mask.astype(dt))

    def core(params, carry, u_t, h_mask=None):
        mask = carry.mask if h_mask is None else carry.mask * h_mask
        inner, h_t = cell.recur(params, carry.carry, u_t, h_mask=mask)
        return DropoutCarry(inner, carry.mask), h_t, _gates(cell, params, carry.carry, u_t)

    return make_cell(cell.init, core, hidden_size=cell.hidden_size,
                     kind=f"recurrent_dropout({_kind(cell)})", project=cell.project,
                     initial_carry=initial_carry, output=lambda carry: cell.output(carry.carry),
                     input_size=cell.input_size, output_size=cell.output_size)


@cell_factory
def learned_initial_carry(cell: Any) -> Any:
    """Makes the initial carry a trainable parameter.

    The params become ``{"cell": cell's params, "carry_0": c_0}`` with ``c_0`` shaped like
    ``cell.initial_carry(())`` (an ``[H]`` array, or an :class:`~gatedrnn.cells.LSTMCarry` of
    two) and initialised to zeros; ``initial_carry(batch_shape, params=params)`` broadcasts
    it over the batch. A stack or bidirectional pair gets every cell in it wrapped; a
    :func:`recurrent_dropout` cell gets its inner cell wrapped (masks are drawn, not learned).
    """
    composite = _for_every_cell(cell, learned_initial_carry)
    if composite is not None:
        return composite
    if getattr(cell, "factory", None) is recurrent_dropout:
        # the mask is drawn per sequence, never learned: the learned carry goes inside
        return recurrent_dropout(learned_initial_carry(cell.config["cell"]), cell.config["rate"])

    def init(key, input_size):
        params = cell.init(key, input_size)
        return {"cell": params, "carry_0": cell.initial_carry((), params=params)}

    def initial_carry(batch_shape, *, params, key, dtype):
        del key
        if params is None or not isinstance(params, dict) or "carry_0" not in params:
            raise ValueError(
                "this cell's initial carry is learned: pass params=params (with 'carry_0') "
                "to initial_carry"
            )
        return jax.tree.map(
            lambda c0: jnp.broadcast_to(c0.astype(dtype), batch_shape + c0.shape),
            params["carry_0"],
        )

    def core(params, carry, u_t, h_mask=None):
        inner = params["cell"]
        new, h_t = cell.recur(inner, carry, u_t, h_mask=h_mask)
        return new, h_t, _gates(cell, inner, carry, u_t)

    inner_form = getattr(cell, "parallel", None)

    def parallel(params, carry, us, **masks):
        return inner_form(params["cell"], carry, us, **masks)

    return make_cell(init, core, hidden_size=cell.hidden_size,
                     kind=f"learned_initial_carry({_kind(cell)})",
                     project=lambda params, x: cell.project(params["cell"], x),
                     initial_carry=initial_carry, output=cell.output,
                     input_size=lambda params: cell.input_size(params["cell"]),
                     output_size=cell.output_size, linear=getattr(cell, "linear", False),
                     parallel=None if inner_form is None else parallel)


__all__ = ["DropoutCarry", "learned_initial_carry", "recurrent_dropout"]
