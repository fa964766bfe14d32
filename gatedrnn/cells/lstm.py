"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), in
PyTorch's layout and gate order ``i, f, g, o``::

    [i, f, g, o] = x_t @ w_x + h_{t-1} @ w_h + b
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
    h_t = σ(o) ⊙ tanh(c_t)

Options (:func:`lstm`): peepholes (Gers & Schmidhuber 2000), coupled gates (CIFG, Greff et
al. 2017), a projection of ``h`` (LSTMP, Sak et al. 2014), chrono initialisation (Tallec &
Ollivier 2018), head-wise (block-diagonal) ``w_h``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from gatedrnn import checks
from gatedrnn.cells.base import (
    Cell,
    Params,
    _check_common,
    _check_heads,
    _chrono_bias,
    _input_matrix,
    _recurrent_weights,
    _split,
    cell_factory,
    make_cell,
)
from gatedrnn.cells.products import (
    _gated_affine,
    _masked,
    _rows_of_w_x,
    recurrent_matmul,
    recurrent_product,
)


class LSTMCarry(NamedTuple):
    """The LSTM's carry: hidden state ``h [*B, P]`` and cell state ``c [*B, H]`` (PyTorch order;
    ``P = H`` without a projection)."""

    h: Array
    c: Array



@cell_factory
def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    peepholes: bool = False,
    coupled: bool = False,
    proj_size: int | None = None,
    recurrent_init: str | Callable = "orthogonal",
    heads: int = 1,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The LSTM cell (Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000).

    Gates are packed in PyTorch's order ``i, f, g, o`` (``f, g, o`` when ``coupled``)::

        i_t = σ(u_i + h_{t-1} @ w_h[:, i] + p_i ⊙ c_{t-1})      (i_t = 1 - f_t if coupled)
        f_t = σ(u_f + h_{t-1} @ w_h[:, f] + p_f ⊙ c_{t-1})
        g_t = tanh(u_g + h_{t-1} @ w_h[:, g])
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        o_t = σ(u_o + h_{t-1} @ w_h[:, o] + p_o ⊙ c_t)
        h_t = o_t ⊙ tanh(c_t)                                 (no projection)
        h_t = (o_t ⊙ tanh(c_t)) @ w_hr                          (proj_size=P)

    where ``u = x_t @ w_x + b`` and the peephole terms ``p_*`` appear only with
    ``peepholes=True`` (diagonal peepholes, Gers & Schmidhuber 2000; the output gate peeks at
    the new cell state). With ``proj_size`` (the LSTMP of Sak et al. 2014, as
    ``torch.nn.LSTM(proj_size=P)``) the hidden state is projected to ``P < H`` features,
    which shrinks ``w_h`` and the output.

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, G*H]    LeCun normal
    w_h     [P, G*H]    ``recurrent_init`` per gate block (P = H without projection;
                        ``[n, P/n, G, H/n]`` with ``heads=n``)
    b       [G*H]       zeros, forget block ``forget_bias`` (or chrono)
    w_hr    [H, P]      LeCun normal (``proj_size`` only)
    p_i     [H]         zeros (``peepholes`` and not ``coupled``)
    p_f     [H]         zeros (``peepholes``)
    p_o     [H]         zeros (``peepholes``)
    ======  ==========  =======================================================

    G is 4, or 3 when ``coupled``. The carry is :class:`LSTMCarry` ``(h [*B, P], c [*B, H])``;
    the output is ``h_t``. The forget bias is a trainable parameter's initial value
    (Jozefowicz et al. 2015), as Keras's ``unit_forget_bias``; no constant is added in the
    forward pass. Without peepholes the step's derivative is written by hand, one coefficient
    per tangent term (the same values; fewer arrays kept for the backward pass: docs/performance.md,
    "Speed").

    Args:
        hidden_size: H.
        forget_bias: initial forget-gate bias (1.0 by default; PyTorch's and Flax's cells
            start at 0).
        chrono_t_max: if given, chrono initialisation (Tallec & Ollivier 2018):
            ``b_f ~ log U[1, T_max - 1]`` and ``b_i = -b_f``; replaces ``forget_bias``.
        peepholes: add diagonal peephole connections ``p_i, p_f, p_o``.
        coupled: couple the input and forget gates, ``i = 1 - f`` (CIFG, Greff et al. 2017).
        proj_size: P, the width of the projected hidden state (``None``: no projection).
        recurrent_init: ``"orthogonal"`` (default), ``"identity"``, ``"normal"`` or a callable,
            applied to each gate's ``[P, H]`` block (``[P/n, H/n]`` per head).
        heads: n, the number of heads: ``w_h`` is block-diagonal, each head's ``H/n``
            features feeding only its own ``H/n`` of each gate (FlashRNN; Beck et al. 2024),
            stored as the blocks ``[n, P/n, G, H/n]``; 1 (default) is the dense cell.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hidden_size = _check_common(hidden_size, param_dtype, forget_bias=forget_bias,
                                chrono_t_max=chrono_t_max)
    if proj_size is not None:
        proj_size = checks.size(proj_size, "proj_size")
        if proj_size >= hidden_size:  # as PyTorch: a projection shrinks the state
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}; got "
                             f"{proj_size}")
    names = ("f", "g", "o") if coupled else ("i", "f", "g", "o")
    num_gates = len(names)
    hh = hidden_size
    pp = hh if proj_size is None else proj_size
    heads = _check_heads(heads, ("hidden_size", hh), ("proj_size", pp))

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b, k_r = jax.random.split(key, 4)
        blocks = {n: jnp.zeros((hh,), param_dtype) for n in names}
        if chrono_t_max is not None:
            blocks["f"] = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
            if not coupled:
                blocks["i"] = -blocks["f"]
        else:
            blocks["f"] = jnp.full((hh,), forget_bias, param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, num_gates * hh, param_dtype),
            "w_h": _recurrent_weights(k_h, pp, hh, num_gates, recurrent_init, param_dtype,
                                      heads),
            "b": jnp.concatenate([blocks[n] for n in names]),
        }
        if proj_size is not None:
            params["w_hr"] = jax.nn.initializers.lecun_normal()(k_r, (hh, pp), param_dtype)
        if peepholes:
            for n in ("i", "f", "o"):
                if n in names:
                    params[f"p_{n}"] = jnp.zeros((hh,), param_dtype)
        return params

    def core(params, carry, u_t, h_mask=None):
        h_tm1, c_tm1 = carry
        pre_all = u_t + recurrent_product(_masked(h_tm1, h_mask), params["w_h"])
        if peepholes:
            pre = dict(zip(names, _split(pre_all, num_gates)))
            pre["f"] = pre["f"] + params["p_f"] * c_tm1
            if not coupled:
                pre["i"] = pre["i"] + params["p_i"] * c_tm1
            f_t = jax.nn.sigmoid(pre["f"])
            i_t = 1.0 - f_t if coupled else jax.nn.sigmoid(pre["i"])
            g_t = jnp.tanh(pre["g"])
            c_t = f_t * c_tm1 + i_t * g_t
            o_t = jax.nn.sigmoid(pre["o"] + params["p_o"] * c_t)
            h_t = o_t * jnp.tanh(c_t)
        else:
            i_t, f_t, g_t, o_t, _, _ = _lstm_gates(pre_all, c_tm1, coupled)
            h_t, c_t = _lstm_state(pre_all, c_tm1, coupled)
        if proj_size is not None:
            h_t = recurrent_matmul(h_t, params["w_hr"])
        gates = {"input": i_t, "forget": f_t, "output": o_t, "candidate": g_t}
        return LSTMCarry(h_t, c_t), h_t, gates

    def initial_carry(batch_shape, *, dtype, **_):
        return LSTMCarry(jnp.zeros((*batch_shape, pp), dtype), jnp.zeros((*batch_shape, hh), dtype))

    return make_cell(init, core, hidden_size=hh, kind="lstm", project=_gated_affine,
                     initial_carry=initial_carry, output=_lstm_h, input_size=_rows_of_w_x,
                     output_size=pp, dtype=dtype)


def _lstm_h(carry: LSTMCarry) -> Array:
    return carry.h


def _lstm_gates(pre: Array, c_tm1: Array, coupled: bool) -> tuple:
    """``(i, f, g, o, c_t, tanh(c_t))`` from the packed pre-activations ``[*B, G*H]``."""
    if coupled:
        f_pre, g_pre, o_pre = _split(pre, 3)
        f_t = jax.nn.sigmoid(f_pre)
        i_t = 1.0 - f_t
    else:
        i_pre, f_pre, g_pre, o_pre = _split(pre, 4)
        i_t, f_t = jax.nn.sigmoid(i_pre), jax.nn.sigmoid(f_pre)
    g_t, o_t = jnp.tanh(g_pre), jax.nn.sigmoid(o_pre)
    c_t = f_t * c_tm1 + i_t * g_t
    return i_t, f_t, g_t, o_t, c_t, jnp.tanh(c_t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _lstm_state(pre: Array, c_tm1: Array, coupled: bool) -> tuple[Array, Array]:
    """The LSTM's ``(o ⊙ tanh(c_t), c_t)`` from its pre-activations, with a derivative written
    by hand (below) for speed, not for a different value."""
    _, _, _, o_t, c_t, tanh_c = _lstm_gates(pre, c_tm1, coupled)
    return o_t * tanh_c, c_t


@_lstm_state.defjvp
def _lstm_state_jvp(coupled: bool, primals: tuple, tangents: tuple) -> tuple:
    # Autodiff of the plain equations keeps 11 per-step arrays besides h_{t-1} for the
    # backward pass (gates, tanh(c_t), copies of them, c_{t-1}); one coefficient per tangent
    # term keeps 6, and a CPU step spends much of its time writing and reading them back
    # (docs/performance.md). The tangent map is linear in (d_pre, d_c_tm1):
    #   dc_t = f dc_{t-1} + Σ_gates a_gate d_pre_gate,  dh_t = o (1 - tanh² c_t) dc_t + a_o d_pre_o
    pre, c_tm1 = primals
    d_pre, d_c_tm1 = tangents
    i_t, f_t, g_t, o_t, c_t, tanh_c = _lstm_gates(pre, c_tm1, coupled)
    a_f = (c_tm1 - g_t if coupled else c_tm1) * f_t * (1.0 - f_t)
    a_g = i_t * (1.0 - g_t * g_t)
    a_o = tanh_c * o_t * (1.0 - o_t)
    if coupled:
        d_f, d_g, d_o = _split(d_pre, 3)
        d_c = f_t * d_c_tm1 + a_f * d_f + a_g * d_g
    else:
        d_i, d_f, d_g, d_o = _split(d_pre, 4)
        d_c = f_t * d_c_tm1 + (g_t * i_t * (1.0 - i_t)) * d_i + a_f * d_f + a_g * d_g
    d_h = (o_t * (1.0 - tanh_c * tanh_c)) * d_c + a_o * d_o
    return (o_t * tanh_c, c_t), (d_h, d_c)

