"""The vanilla (Elman 1990) RNN, PyTorch's ``nn.RNN`` with its two biases folded into one::

    h_t = act(x_t @ w_x + h_{t-1} @ w_h + b)

``act`` tanh, relu (with identity init: the IRNN of Le et al. 2015) or any elementwise
function; ``identity`` makes a linear RNN whose Jacobians are exactly ``w_hᵀ``.
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
    _input_matrix,
    _recurrent_weights,
    _resolve_activation,
    cell_factory,
    make_cell,
)
from gatedrnn.cells.products import (
    _affine,
    _masked,
    _rows_of_w_x,
    recurrent_product,
)


@cell_factory
def rnn(
    hidden_size: int,
    *,
    activation: str | Callable[[Array], Array] = "tanh",
    recurrent_init: str | Callable = "orthogonal",
    recurrent_scale: float = 1.0,
    heads: int = 1,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The vanilla (Elman) RNN cell.

    Equation (PyTorch's ``nn.RNN`` with its two biases folded into one)::

        h_t = act(x_t @ w_x + h_{t-1} @ w_h + b)

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, H]      LeCun normal
    w_h     [H, H]      ``recurrent_init`` times ``recurrent_scale`` (``[n, H/n, 1, H/n]``
                        with ``heads=n``)
    b       [H]         zeros
    ======  ==========  =======================================================

    The carry is ``h [*B, H]``; the output is ``h_t``.

    Args:
        hidden_size: H.
        activation: ``"tanh"`` (default), ``"relu"``, ``"identity"`` (a linear RNN, whose
            Jacobians are exactly ``w_h^T``), or any elementwise callable.
        recurrent_init: ``"orthogonal"`` (default), ``"identity"`` (with ``"relu"``: the IRNN
            of Le et al. 2015), ``"normal"`` (``N(0, 1/H)``) or a callable
            ``(key, shape, dtype) -> array``.
        recurrent_scale: multiplies ``w_h`` at init; below 1 a tanh RNN is contractive.
        heads: n, the number of heads: ``w_h`` is block-diagonal, each head's ``H/n``
            features feeding only its own ``H/n`` of each gate (FlashRNN; Beck et al. 2024),
            stored as the blocks ``[n, P/n, G, H/n]``; 1 (default) is the dense cell.
        dtype: computation dtype (``None``: promote inputs and params), e.g. ``jnp.bfloat16``.
        param_dtype: dtype of the initialised params.
    """
    hidden_size = _check_common(hidden_size, param_dtype, recurrent_scale=recurrent_scale)
    act = _resolve_activation(activation)
    heads = _check_heads(heads, ("hidden_size", hidden_size))

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h = jax.random.split(key)
        w_h = _recurrent_weights(k_h, hidden_size, hidden_size, 1, recurrent_init, param_dtype,
                                 heads)
        return {
            "w_x": _input_matrix(k_x, input_size, hidden_size, param_dtype),
            "w_h": w_h * jnp.asarray(recurrent_scale, param_dtype),
            "b": jnp.zeros((hidden_size,), param_dtype),
        }

    def core(params, h_tm1, u_t, h_mask=None):
        h_t = act(u_t + recurrent_product(_masked(h_tm1, h_mask), params["w_h"]))
        return h_t, h_t

    return make_cell(init, core, hidden_size=hidden_size, kind="rnn", project=_affine,
                     input_size=_rows_of_w_x, dtype=dtype)

