"""The minimal gated cells of Feng et al. 2024 ("Were RNNs all we needed?"): gates read the
input alone, so the state is linear and a parallel scan runs them::

    minGRU:   h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ g(u_h),      z_t = σ(u_z)
    minLSTM:  h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ g(u_h),          f' = f / (f + i), i' = i / (f + i)

with ``u = x_t @ w_x + b`` and ``g(v) = v + 0.5`` for ``v >= 0``, else ``σ(v)``. With
``negative_transitions=True`` the transitions ``1 - z_t`` and ``f'_t`` map to ``2 a - 1``,
in ``(-1, 1)`` (Grazzi et al. 2024).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, PRNGKeyArray

from gatedrnn import checks
from gatedrnn.cells.base import (
    Cell,
    Params,
    _check_common,
    _input_matrix,
    _split,
    cell_factory,
    make_cell,
)
from gatedrnn.cells.products import _gated_affine, _rows_of_w_x


def _g(v: Array) -> Array:
    """Feng et al. 2024's positive activation: ``v + 0.5`` for ``v >= 0``, else ``σ(v)``."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def _g_slope(v: Array) -> Array:
    """``g'(v)``: 1 for ``v >= 0`` (the branch autodiff of :func:`_g` takes at 0), else
    ``σ(v) (1 - σ(v))``."""
    s = jax.nn.sigmoid(v)
    return jnp.where(v >= 0, 1.0, s * (1.0 - s))


def _linear_terms(like: Array, *terms: tuple) -> Array:
    """``Σ coefficient * tangent`` over ``terms``, leaving out each whose tangent is a
    ``SymbolicZero``: ``unroll(..., options=ScanOptions(method="associative"))`` reads a
    linear cell's ``a_t`` as the derivative in the carry alone, and a zero array in place of
    the input's tangent would be multiplied out over every step. Zeros shaped as ``like``
    when all are zero."""
    live = [c * t for c, t in terms if not isinstance(t, SymbolicZero)]
    return functools.reduce(jnp.add, live) if live else jnp.zeros_like(like)


def _min_gru_gates(u_t: Array) -> tuple:
    """minGRU's ``(z, g(u_h))`` from ``u_t = [u_z, u_h]``."""
    k_z, k_h = _split(u_t, 2)
    return jax.nn.sigmoid(k_z), _g(k_h)


@jax.custom_jvp
def _min_gru_state(u_t: Array, h_tm1: Array) -> Array:
    """minGRU's ``h_t`` from ``u_t`` and ``h_{t-1}``, with a derivative written by hand (as
    ``_lstm_state``) for speed, not for a different value."""
    z_t, g_t = _min_gru_gates(u_t)
    return (1.0 - z_t) * h_tm1 + z_t * g_t


def _min_gru_state_jvp(primals: tuple, tangents: tuple) -> tuple:
    # Autodiff of the plain equations keeps 5 arrays, a mask and h_{t-1} per step for the
    # backward pass; one coefficient per tangent term keeps 3, and with no recurrent product
    # a step's time goes mostly to writing and reading them back:
    #   dh_t = (1 - z) dh_{t-1} + (g - h_{t-1}) z (1 - z) du_z + z g'(u_h) du_h
    u_t, h_tm1 = primals
    d_u, d_h_tm1 = tangents
    z_t, g_t = _min_gru_gates(u_t)
    keep = 1.0 - z_t
    h_t = keep * h_tm1 + z_t * g_t
    d_z, d_h = (d_u,) * 2 if isinstance(d_u, SymbolicZero) else _split(d_u, 2)
    return h_t, _linear_terms(h_t, (keep, d_h_tm1), ((g_t - h_tm1) * z_t * keep, d_z),
                              (z_t * _g_slope(_split(u_t, 2)[1]), d_h))


_min_gru_state.defjvp(_min_gru_state_jvp, symbolic_zeros=True)


def _min_lstm_gates(u_t: Array) -> tuple:
    """minLSTM's normalised ``(f', i', g(u_h))`` and the raw ``(f, i)`` from ``u_t = [u_f,
    u_i, u_h]``."""
    k_f, k_i, k_h = _split(u_t, 3)
    f_t, i_t = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
    total = f_t + i_t
    return f_t / total, i_t / total, _g(k_h), f_t, i_t


@jax.custom_jvp
def _min_lstm_state(u_t: Array, h_tm1: Array) -> Array:
    """minLSTM's ``h_t`` from ``u_t`` and ``h_{t-1}``, with a derivative written by hand (as
    ``_min_gru_state``)."""
    f_n, i_n, g_t, _, _ = _min_lstm_gates(u_t)
    return f_n * h_tm1 + i_n * g_t


def _min_lstm_state_jvp(primals: tuple, tangents: tuple) -> tuple:
    # 4 arrays a step instead of 10, a mask and h_{t-1}. With f' = f / (f + i), i' = 1 - f',
    # df' = f' i' ((1 - f) du_f - (1 - i) du_i), and so
    #   dh_t = f' dh_{t-1} + (h_{t-1} - g) f' i' ((1 - f) du_f - (1 - i) du_i) + i' g'(u_h) du_h
    u_t, h_tm1 = primals
    d_u, d_h_tm1 = tangents
    f_n, i_n, g_t, f_t, i_t = _min_lstm_gates(u_t)
    h_t = f_n * h_tm1 + i_n * g_t
    spread = (h_tm1 - g_t) * f_n * i_n
    d_f, d_i, d_h = (d_u,) * 3 if isinstance(d_u, SymbolicZero) else _split(d_u, 3)
    return h_t, _linear_terms(h_t, (f_n, d_h_tm1), (spread * (1.0 - f_t), d_f),
                              (-spread * (1.0 - i_t), d_i),
                              (i_n * _g_slope(_split(u_t, 3)[2]), d_h))


_min_lstm_state.defjvp(_min_lstm_state_jvp, symbolic_zeros=True)


def _input_gated_cell(kind: str, num_gates: int, hidden_size: int, core: Callable,
                      dtype: Any, param_dtype: Any) -> Cell:
    """A cell whose gates read the input alone, ``u = x @ w_x + b`` with ``w_x [I, G*H]`` and
    ``b [G*H]``; its state is linear (minGRU, minLSTM)."""
    def init(key: PRNGKeyArray, input_size: int) -> Params:
        return {"w_x": _input_matrix(key, input_size, num_gates * hidden_size, param_dtype),
                "b": jnp.zeros((num_gates * hidden_size,), param_dtype)}

    return make_cell(init, core, hidden_size=hidden_size, kind=kind, project=_gated_affine,
                     input_size=_rows_of_w_x, linear=True, dtype=dtype)


@cell_factory
def min_gru(hidden_size: int, *, negative_transitions: bool = False, dtype: Any = None,
            param_dtype: Any = jnp.float32) -> Cell:
    """minGRU (Feng et al. 2024, "Were RNNs all we needed?"): gates from the input alone, so
    the recurrence is linear in the state and runs as a parallel scan.

    With ``u = x_t @ w_x + b`` split into blocks ``z, h``::

        z_t = σ(u_z)
        h~_t = g(u_h),    g(v) = v + 0.5 if v >= 0 else σ(v)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t

    ======  ==========  ============
    name    shape       init
    ======  ==========  ============
    w_x     [I, 2H]     LeCun normal
    b       [2H]        zeros
    ======  ==========  ============

    The carry is ``h [*B, H]``. ``g`` keeps ``h~`` positive, which the paper needs for its
    log-space scan: that scan forms prefix products of ``1 - z`` and divides by them, which
    underflows in linear space. ``gr.unroll(..., method="associative")`` instead combines
    ``(a, b)`` pairs with ``jax.lax.associative_scan`` and never divides, so the linear-space
    form is stable at any length (tested at T = 4096).

    With ``negative_transitions=True`` the transition ``1 - z_t`` becomes ``1 - 2 z_t``, in
    ``(-1, 1)`` (Grazzi et al. 2024: a diagonal linear RNN can then track parity);
    ``h_t = (1 - 2 z_t) ⊙ h_{t-1} + z_t ⊙ h~_t``.
    """
    hidden_size = _check_common(hidden_size, param_dtype)
    checks.flag(negative_transitions, "negative_transitions")

    def core(params, h_tm1, u_t):
        if negative_transitions:
            z_t, g_t = _min_gru_gates(u_t)
            h_t = (1.0 - 2.0 * z_t) * h_tm1 + z_t * g_t
        else:
            h_t = _min_gru_state(u_t, h_tm1)
        return h_t, h_t, {"update": _min_gru_gates(u_t)[0]}

    return _input_gated_cell("min_gru", 2, hidden_size, core, dtype, param_dtype)


@cell_factory
def min_lstm(hidden_size: int, *, negative_transitions: bool = False, dtype: Any = None,
             param_dtype: Any = jnp.float32) -> Cell:
    """minLSTM (Feng et al. 2024): input-only forget and input gates, normalised to sum to 1.

    With ``u = x_t @ w_x + b`` split into blocks ``f, i, h``::

        f_t = σ(u_f),  i_t = σ(u_i),  h~_t = g(u_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h~_t

    ======  ==========  ============
    name    shape       init
    ======  ==========  ============
    w_x     [I, 3H]     LeCun normal
    b       [3H]        zeros
    ======  ==========  ============

    The carry is ``h [*B, H]``; linear in the state, so it runs as a parallel scan (see
    :func:`min_gru` on stability). Gates reported: the normalised ``"forget"`` and
    ``"input"``. With ``negative_transitions=True`` the transition is ``2 f'_t - 1``, in
    ``(-1, 1)`` (Grazzi et al. 2024): ``h_t = (2 f'_t - 1) ⊙ h_{t-1} + i'_t ⊙ h~_t``.
    """
    hidden_size = _check_common(hidden_size, param_dtype)
    checks.flag(negative_transitions, "negative_transitions")

    def core(params, h_tm1, u_t):
        if negative_transitions:
            f_n, i_n, g_t = _min_lstm_gates(u_t)[:3]
            h_t = (2.0 * f_n - 1.0) * h_tm1 + i_n * g_t
        else:
            h_t = _min_lstm_state(u_t, h_tm1)
        f_t, i_t = _min_lstm_gates(u_t)[:2]
        return h_t, h_t, {"forget": f_t, "input": i_t}

    return _input_gated_cell("min_lstm", 3, hidden_size, core, dtype, param_dtype)

