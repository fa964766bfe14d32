"""Griffin's real-gated linear recurrent unit, the RG-LRU (De et al. 2024, "Griffin: Mixing
Gated Linear Recurrences with Local Attention for Efficient Language Models", eqs. 1-4)::

    r_t = σ(x_t @ w_x[:, r] + b_r)                 recurrence gate
    i_t = σ(x_t @ w_x[:, i] + b_i)                 input gate
    v_t = x_t @ w_x[:, v] + b_v                    the value (the block's linear branch)
    log a_t = c r_t log σ(Λ)                       a_t = σ(Λ)^(c r_t), c = 8
    h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ v_t)

With ``negative_transitions=True`` the transition is ``2 a_t - 1``, in ``(-1, 1)`` (Grazzi
et al. 2024, "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues"), and the
input is scaled by ``sqrt(1 - (2 a_t - 1)²)``. Gates read the input alone, so the state is
linear: ``method="associative"`` runs it as a parallel scan.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

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


@cell_factory
def rg_lru(
    hidden_size: int,
    *,
    c: float = 8.0,
    a_min: float = 0.9,
    a_max: float = 0.999,
    negative_transitions: bool = False,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The RG-LRU (De et al. 2024; module docstring): a diagonal linear recurrence whose
    decay ``a_t = σ(Λ)^(c r_t)`` is gated by the input.

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, 3H]     LeCun normal (blocks ``r, i, v``)
    b       [3H]        zeros
    lam     [H]         Λ with ``σ(Λ)^c`` uniform in ``[a_min, a_max]`` (the paper's)
    ======  ==========  =======================================================

    ``sqrt(1 - a_t²)`` is computed as ``sqrt(-expm1(2 log a_t))`` so that it keeps its
    precision where ``a_t`` is close to 1. The carry is ``h [*B, H]``; gates reported:
    ``"recurrence"`` ``r_t``, ``"input"`` ``i_t`` and the ``"transition"`` ``a_t`` (or
    ``2 a_t - 1``).

    Args:
        hidden_size: H.
        c: the constant of ``a_t = σ(Λ)^(c r_t)`` (8 in the paper).
        a_min: the smallest initial ``σ(Λ)^c``.
        a_max: the largest (close to 1: long memory).
        negative_transitions: transitions in ``(-1, 1)`` instead of ``(0, 1)``.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hh = _check_common(hidden_size, param_dtype, c=c)
    checks.real(a_min, "a_min", above=0.0)
    checks.real(a_max, "a_max", below=1.0)
    if not a_min < a_max:
        raise ValueError(f"need 0 < a_min < a_max < 1; got a_min={a_min!r}, a_max={a_max!r}")
    checks.flag(negative_transitions, "negative_transitions")

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_a = jax.random.split(key)
        a_c = jax.random.uniform(k_a, (hh,), jnp.float32, a_min, a_max)
        a = a_c ** (1.0 / c)
        return {"w_x": _input_matrix(k_x, input_size, 3 * hh, param_dtype),
                "b": jnp.zeros((3 * hh,), param_dtype),
                "lam": (jnp.log(a) - jnp.log1p(-a)).astype(param_dtype)}

    def core(params, h_tm1, u_t):
        r_pre, i_pre, v_t = _split(u_t, 3)
        r_t, i_t = jax.nn.sigmoid(r_pre), jax.nn.sigmoid(i_pre)
        log_a = c * r_t * jax.nn.log_sigmoid(params["lam"])
        if negative_transitions:
            kept = jnp.exp(log_a)
            a_t = 2.0 * kept - 1.0
            scale = 2.0 * jnp.sqrt(kept * -jnp.expm1(log_a))  # 1 - (2e - 1)² = 4 e (1 - e)
        else:
            a_t = jnp.exp(log_a)
            scale = jnp.sqrt(-jnp.expm1(2.0 * log_a))
        h_t = a_t * h_tm1 + scale * (i_t * v_t)
        return h_t, h_t, {"recurrence": r_t, "input": i_t, "transition": a_t}

    return make_cell(init, core, hidden_size=hh, kind="rg_lru", project=_gated_affine,
                     input_size=_rows_of_w_x, linear=True, dtype=dtype)
