"""The products the shipped cells share, tuned per backend: :func:`recurrent_matmul` (the
recurrent product a scan reads at every step), its head-wise form, and the input half
``x @ w_x + b``.

The backend rules (:data:`TRANSPOSED_COPY_ROWS`, :data:`ONE_FEATURE_DOT`) are read from the
package, ``gatedrnn.cells``, when a call is traced, so setting ``gatedrnn.cells.NAME`` takes
effect.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array

from gatedrnn.cells.base import Params


def _rule(name: str):
    """A backend rule as the package holds it now (see the module docstring)."""
    return getattr(sys.modules[__package__], name)


#: derivative in ``h`` reads a transposed copy of ``w``, per ``jax.default_backend()``.
#: Measured on a 2-core CPU (docs/performance.md, benchmarks/RESULTS.md): the shipped cells'
#: forward+backward 1.13-1.55x as fast at 4 rows and 0.93-1.23x at 1 and 16, but 0.92-1.07x
#: from 32 rows on. Not measured on a GPU, where it is ``h @ w``.
TRANSPOSED_COPY_ROWS = {"cpu": 16}


def recurrent_matmul(h: Array, w: Array) -> Array:
    """``h @ w`` for a matrix that a scan reads at every step, e.g. a recurrent weight
    ``w_h [H, G*H]`` applied to ``h_{t-1} [*B, H]``; the same values and derivatives.

    Reverse mode through a scan forms ``dh = g @ w^T`` at every step; XLA's CPU backend runs
    that product with the transposed ``w`` about half as fast as an ordinary one for a few
    rows (``[4, 1024] x [1024, 256]``: 31 against 14 us). Here the derivative in ``h`` is
    written against ``w^T``, a copy that JAX makes once, outside the loop, as a residual
    that does not change from step to step, so the backward loop reads it in its own layout.
    The copy is taken on the backends of :data:`TRANSPOSED_COPY_ROWS` (the CPU) for at most
    that many rows; elsewhere this is ``h @ w``. Forward mode and higher derivatives work;
    forward mode's product in ``h`` reads the copy transposed instead. The shipped cells use
    it for their recurrent products, and a cell of one's own may too (docs/performance.md).

    Args:
        h: ``[*B, K]``, any leading axes.
        w: ``[K, N]``.

    Returns:
        ``[*B, N]``.
    """
    h, w = jnp.asarray(h), jnp.asarray(w)
    if w.ndim != 2 or h.ndim < 1 or h.shape[-1] != w.shape[0]:
        raise ValueError(f"recurrent_matmul needs h [*B, K] and w [K, N]; got h of shape "
                         f"{h.shape} and w of shape {w.shape}")
    rows = math.prod(h.shape[:-1])
    if rows > _rule("TRANSPOSED_COPY_ROWS").get(jax.default_backend(), -1):
        return h @ w
    return _matmul_transposed_copy(h, w)


@jax.custom_jvp
def _matmul_transposed_copy(h: Array, w: Array) -> Array:
    return h @ w


@functools.partial(_matmul_transposed_copy.defjvp, symbolic_zeros=True)
def _matmul_transposed_copy_jvp(primals, tangents):
    h, w = primals
    out = h @ w

    def in_h(dh):
        w_t = jnp.swapaxes(w, 0, 1).astype(out.dtype)
        # Contracted against w_t's second axis, so that the transpose of this linear map
        # in dh, the backward pass's product, contracts the copy's first: its own layout.
        return jax.lax.dot_general(dh.astype(out.dtype), w_t, (((dh.ndim - 1,), (1,)), ((), ())))
    return out, _product_tangent(out, h, *tangents, in_h)


def _product_tangent(out: Array, h: Array, dh, dw, in_h: Callable) -> Array:
    """The tangent of ``out = h @ w``, ``in_h(dh) + h @ dw``, leaving out each term whose
    tangent is a symbolic zero (so that no product of zeros enters the program)."""
    terms = []
    if not isinstance(dh, SymbolicZero):
        terms.append(in_h(dh))
    if not isinstance(dw, SymbolicZero):
        terms.append((h @ dw).astype(out.dtype))
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def _masked(h: Array, h_mask: Array | None) -> Array:
    return h if h_mask is None else h * h_mask


def _affine(params: Params, x: Array) -> Array:
    """The shipped cells' input half: ``x @ w_x + b``."""
    return x @ params["w_x"] + params["b"]


#: The backends (``jax.default_backend()``) on which a gated cell's input product over a single
#: feature is kept a matrix product (:func:`_gated_affine`). Measured on a 2-core CPU; not on
#: a GPU, where XLA's emitters differ.
ONE_FEATURE_DOT = ("cpu",)


def _gated_affine(params: Params, x: Array) -> Array:
    """``x @ w_x + b`` for a cell that slices ``u`` into gates, with the same values.

    For one input feature (``w_x [1, G*H]``) XLA rewrites the product as a broadcast multiply
    and fuses it into the step's gate fusion, and XLA:CPU's fusion emitters run slices of a
    value computed there from the step's dynamic slice of the inputs slowly: the GRU's
    forward at B=1, I=1, H=128 took 4.0 us a step against 2.4 with the product kept a dot
    (docs/performance.md; docs/upstream/sliced_dynamic_slice/run.py). On
    :data:`ONE_FEATURE_DOT`'s backends the product is then :func:`_one_feature_product`."""
    w_x = params["w_x"]
    if w_x.shape[0] == 1 == jnp.shape(x)[-1] and jax.default_backend() in _rule("ONE_FEATURE_DOT"):
        return _one_feature_product(x, w_x) + params["b"]
    return _affine(params, x)


@jax.custom_jvp
def _one_feature_product(x: Array, w: Array) -> Array:
    """``x @ w`` for ``x [..., 1]``, ``w [1, N]``, computed as a dot of two features (the
    second zero), which XLA keeps a dot. Differentiated, it is the plain product: in a
    forward+backward program the padded dot made the gated cells up to 1.2x slower."""
    return (jnp.concatenate([x, jnp.zeros_like(x)], axis=-1)
            @ jnp.concatenate([w, jnp.zeros_like(w)], axis=0))


def _one_feature_product_jvp(primals: tuple, tangents: tuple) -> tuple:
    x, w = primals
    out = x @ w
    return out, _product_tangent(out, x, *tangents, lambda dx: (dx @ w).astype(out.dtype))


_one_feature_product.defjvp(_one_feature_product_jvp, symbolic_zeros=True)


def _rows_of_w_x(params: Params) -> int:
    return params["w_x"].shape[0]


def recurrent_product(h: Array, w: Array) -> Array:
    """``h @ W`` for a recurrent matrix stored dense or by its diagonal blocks.

    A dense ``w [P, G*H]`` goes to :func:`recurrent_matmul`. A head-wise (block-diagonal) one
    is stored as its blocks, ``w [n, P/n, G, H/n]``: head ``k`` reads its own ``P/n``
    features of ``h`` and writes its own ``H/n`` of each gate (FlashRNN; the sLSTM of Beck
    et al. 2024). The result keeps the dense layout, gate-major: ``[*B, G*H]`` with gate
    ``g``'s ``H`` columns in head order, so the cell's equations do not change with ``n``.

    Args:
        h: ``[*B, P]``.
        w: ``[P, G*H]`` or ``[n, P/n, G, H/n]``.

    Returns:
        ``[*B, G*H]``.
    """
    if w.ndim == 2:
        return recurrent_matmul(h, w)
    heads, rows, gates, width = w.shape
    lead = h.shape[:-1]
    out = jnp.einsum("...np,npgd->...gnd", h.reshape(*lead, heads, rows), w)
    return out.reshape(*lead, gates * heads * width)


def dense_recurrent(w: Array) -> Array:
    """The dense ``[P, G*H]`` matrix of a recurrent matrix stored by blocks
    ``[n, P/n, G, H/n]`` (zeros off the blocks), as :func:`recurrent_product` applies it; a
    dense ``w`` is returned unchanged. ``h @ dense_recurrent(w)`` equals
    ``recurrent_product(h, w)``; PyTorch's and Flax's cells take this form."""
    if w.ndim == 2:
        return w
    heads, rows, gates, width = w.shape
    blocks = jnp.einsum("npgd,nm->npgmd", w, jnp.eye(heads, dtype=w.dtype))
    return blocks.reshape(heads * rows, gates * heads * width)
