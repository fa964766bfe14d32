"""Flax modules that run any gatedrnn layer, for models built in Flax.

:class:`Recurrent` (linen) and :class:`NNXRecurrent` (nnx) hold a cell, stack or
bidirectional layer and its params unchanged (the same dict/tuple tree ``layer.init`` makes),
so the params move between a Flax model and :func:`gatedrnn.unroll`, the diagnostics and the
converters as they are. The forward pass is exactly :func:`gatedrnn.unroll`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from gatedrnn.scan import unroll


class Recurrent(nn.Module):
    """A linen module running ``layer`` over a sequence: ``unroll(layer, params, xs, ...)``.

    The params live in the ``"params"`` collection under ``"layer"``, initialised by
    ``layer.init(key, I)`` on the first call. Dropout of the layer (stack dropout, recurrent
    dropout) is on when ``deterministic=False``, drawing its key from the ``"dropout"`` rng
    stream, as ``flax.linen.Dropout`` does.

    Attributes:
        layer: a :class:`gatedrnn.Cell`, :class:`gatedrnn.Stack` or
            :class:`gatedrnn.Bidirectional`.
        time_major: inputs are ``[T, *B, I]`` instead of ``[*B, T, I]``.
        return_carry: return ``(carry, ys)`` instead of ``ys``.

    Call with ``xs [*B, T, I]``, optional ``lengths [*B]`` and ``carry``; returns ``ys
    [*B, T, H_out]`` (and the final carry).
    """

    layer: Any
    time_major: bool = False
    return_carry: bool = False

    @nn.compact
    def __call__(self, xs, *, lengths=None, carry=None, deterministic: bool = True):
        params = self.param("layer", lambda key: self.layer.init(key, xs.shape[-1]))
        key = None if deterministic else self.make_rng("dropout")
        carry, ys = unroll(self.layer, params, xs, carry, lengths=lengths,
                           time_major=self.time_major, key=key)
        return (carry, ys) if self.return_carry else ys


class NNXRecurrent(nnx.Module):
    """An nnx module running ``layer`` over a sequence: ``unroll(layer, params, xs, ...)``.

    ``self.params`` is one :class:`flax.nnx.Param` whose value is the params tree of
    ``layer.init(rngs.params(), input_size)``; ``nnx.grad``, ``nnx.jit`` and ``nnx.Optimizer``
    see its arrays as leaves.

    Args:
        layer: a cell, stack or bidirectional layer.
        input_size: I.
        rngs: ``nnx.Rngs`` with a ``params`` stream.
        time_major: inputs are ``[T, *B, I]``.

    Call with ``xs``, optional ``lengths``, ``carry`` and ``key`` (dropout is on with a key);
    returns ``(carry, ys)``.
    """

    def __init__(self, layer, input_size: int, *, rngs: nnx.Rngs, time_major: bool = False):
        self.layer = layer
        self.time_major = time_major
        self.params = nnx.Param(layer.init(rngs.params(), input_size))

    def __call__(self, xs, *, lengths=None, carry=None, key: jax.Array | None = None):
        params = self.params.get_value() if hasattr(self.params, "get_value") else (
            self.params.value)  # flax < 0.12 has only .value, newer deprecates it
        return unroll(self.layer, params, xs, carry, lengths=lengths,
                      time_major=self.time_major, key=key)


__all__ = ["NNXRecurrent", "Recurrent"]
