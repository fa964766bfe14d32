"""The GRU (Cho et al. 2014), reset-after as PyTorch, cuDNN and Flax (gate order ``r, z, n``)::

    r_t = σ(u_r + h_{t-1} @ w_h[:, r]),  z_t = σ(u_z + h_{t-1} @ w_h[:, z])
    n_t = tanh(u_n + r_t ⊙ (h_{t-1} @ w_h[:, n] + b_hn))
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

with ``u = x_t @ w_x + b``; reset-before (Cho et al.'s original) applies ``r_t`` to
``h_{t-1}`` before its product. Options in :func:`gru`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

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
    recurrent_product,
)


@cell_factory
def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    update_bias: float = 0.0,
    chrono_t_max: float | None = None,
    recurrent_init: str | Callable = "orthogonal",
    heads: int = 1,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The GRU cell (Cho et al. 2014), gates packed in PyTorch's order ``r, z, n``.

    With ``u = x_t @ w_x + b`` and ``h = h_{t-1}``::

        r_t = σ(u_r + h @ w_h[:, r])
        z_t = σ(u_z + h @ w_h[:, z])
        n_t = tanh(u_n + r_t ⊙ (h @ w_h[:, n] + b_hn))      reset_after=True
        n_t = tanh(u_n + (r_t ⊙ h) @ w_h[:, n])             reset_after=False
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h

    ``reset_after=True`` is the form of PyTorch, cuDNN, Keras and Flax (all three recurrent
    products are one matmul); ``reset_after=False`` is Cho et al. 2014's. As in PyTorch, ``z``
    keeps the old state. Only the reset-after form has ``b_hn``: the bias inside the gated term
    is a real extra parameter (PyTorch's ``b_hr`` and ``b_hz`` fold into ``b``). The reset-after
    step's derivative is written by hand, as the LSTM's (the same values; docs/performance.md).

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, 3H]     LeCun normal
    w_h     [H, 3H]     ``recurrent_init`` per gate block (``[n, H/n, 3, H/n]`` with
                        ``heads=n``)
    b       [3H]        zeros, update block ``update_bias`` (or chrono)
    b_hn    [H]         zeros (``reset_after`` only)
    ======  ==========  =======================================================

    The carry is ``h [*B, H]``; the output is ``h_t``.

    Args:
        hidden_size: H.
        reset_after: which candidate form, above.
        update_bias: initial update-gate bias; positive values keep the state longer.
        chrono_t_max: chrono initialisation of the update gate (Tallec & Ollivier 2018):
            ``b_z ~ log U[1, T_max - 1]``, positive because ``z`` keeps the old state;
            replaces ``update_bias``.
        recurrent_init: ``"orthogonal"`` (default), ``"identity"``, ``"normal"`` or a callable,
            applied to each gate's ``[H, H]`` block (``[H/n, H/n]`` per head).
        heads: n, the number of heads: ``w_h`` is block-diagonal, each head's ``H/n``
            features feeding only its own ``H/n`` of each gate (FlashRNN; Beck et al. 2024),
            stored as the blocks ``[n, P/n, G, H/n]``; 1 (default) is the dense cell.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hh = hidden_size = _check_common(hidden_size, param_dtype, update_bias=update_bias,
                                     chrono_t_max=chrono_t_max)
    heads = _check_heads(heads, ("hidden_size", hh))

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b = jax.random.split(key, 3)
        if chrono_t_max is not None:
            b_z = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
        else:
            b_z = jnp.full((hh,), update_bias, param_dtype)
        zeros_h = jnp.zeros((hh,), param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, 3 * hh, param_dtype),
            "w_h": _recurrent_weights(k_h, hh, hh, 3, recurrent_init, param_dtype, heads),
            "b": jnp.concatenate([zeros_h, b_z, zeros_h]),
        }
        if reset_after:
            params["b_hn"] = zeros_h
        return params

    def core(params, h_tm1, u_t, h_mask=None):
        hm = _masked(h_tm1, h_mask)
        if reset_after:
            w_t = recurrent_product(hm, params["w_h"])
            r_t, z_t, n_t, _ = _gru_gates(u_t, w_t, params["b_hn"], h_tm1)
            h_t = _gru_state(u_t, w_t, params["b_hn"], h_tm1)
        else:
            u_r, u_z, u_n = _split(u_t, 3)
            w_h = params["w_h"]
            # the reset gate enters between the product and the candidate's block
            w_rz, w_n = ((w_h[:, : 2 * hh], w_h[:, 2 * hh :]) if w_h.ndim == 2
                         else (w_h[:, :, :2], w_h[:, :, 2:]))
            w_r, w_z = _split(recurrent_product(hm, w_rz), 2)
            r_t = jax.nn.sigmoid(u_r + w_r)
            z_t = jax.nn.sigmoid(u_z + w_z)
            n_t = jnp.tanh(u_n + recurrent_product(r_t * hm, w_n))
            h_t = (1.0 - z_t) * n_t + z_t * h_tm1
        return h_t, h_t, {"reset": r_t, "update": z_t, "candidate": n_t}

    return make_cell(init, core, hidden_size=hh, kind="gru", project=_gated_affine,
                     input_size=_rows_of_w_x, dtype=dtype)


def _gru_gates(u_t: Array, w_t: Array, b_hn: Array, h_tm1: Array) -> tuple:
    """The reset-after GRU's ``(r, z, n, h_t)`` from its input half ``u_t`` and recurrent half
    ``w_t = h_{t-1} @ w_h``, both ``[*B, 3H]``."""
    u_r, u_z, u_n = _split(u_t, 3)
    w_r, w_z, w_n = _split(w_t, 3)
    r_t, z_t = jax.nn.sigmoid(u_r + w_r), jax.nn.sigmoid(u_z + w_z)
    n_t = jnp.tanh(u_n + r_t * (w_n + b_hn))
    return r_t, z_t, n_t, (1.0 - z_t) * n_t + z_t * h_tm1


@jax.custom_jvp
def _gru_state(u_t: Array, w_t: Array, b_hn: Array, h_tm1: Array) -> Array:
    """The reset-after GRU's ``h_t``, with a derivative written by hand (as ``_lstm_state``)."""
    return _gru_gates(u_t, w_t, b_hn, h_tm1)[3]


@_gru_state.defjvp
def _gru_state_jvp(primals: tuple, tangents: tuple) -> tuple:
    # One coefficient per tangent term: 5 arrays kept per step besides h_{t-1}, not 8:
    #   dh_t = a_r (du_r + dw_r) + a_z (du_z + dw_z) + a_n du_n + a_n r (dw_n + db_hn) + z dh_{t-1}
    u_t, w_t, b_hn, h_tm1 = primals
    d_u, d_w, d_b_hn, d_h_tm1 = tangents
    r_t, z_t, n_t, h_t = _gru_gates(u_t, w_t, b_hn, h_tm1)
    a_n = (1.0 - z_t) * (1.0 - n_t * n_t)
    a_r = a_n * (_split(w_t, 3)[2] + b_hn) * r_t * (1.0 - r_t)
    a_z = (h_tm1 - n_t) * z_t * (1.0 - z_t)
    du_r, du_z, du_n = _split(d_u, 3)
    dw_r, dw_z, dw_n = _split(d_w, 3)
    d_h = (a_r * (du_r + dw_r) + a_z * (du_z + dw_z) + a_n * du_n
           + (a_n * r_t) * (dw_n + d_b_hn) + z_t * d_h_tm1)
    return h_t, d_h

