"""The compositions :func:`stack` and :func:`bidirectional`: sequence layers built from other
layers, whose values :func:`gatedrnn.unroll` accepts like a cell's.

Each runs its sublayers with :func:`gatedrnn.unroll` over the whole (time-major) sequence; the
layer protocol they follow is :class:`gatedrnn.cells.SequenceLayer`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from gatedrnn import checks as validate
from gatedrnn.scan import _describe, check_layer, unroll

MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: 0.5 * (a + b),
    "mul": lambda a, b: a * b,
}



class BidirectionalCarry(NamedTuple):
    """Carry of a :func:`bidirectional` layer: each direction's own carry."""

    fwd: Any
    bwd: Any


def _sublayer(i: int, run, *args, **kwargs):
    """Runs a sublayer, naming it in any error it raises about its input."""
    try:
        return run(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise type(error)(f"layer {i}: {error}") from error


class Stack(NamedTuple):
    """Layers run one after another over the whole sequence; made by :func:`stack`.

    ``params`` and carries are tuples with one entry per layer. A sequence layer
    (:class:`gatedrnn.cells.SequenceLayer`): :func:`gatedrnn.unroll` calls :meth:`run`.
    """

    layers: tuple
    dropout: Any
    residual: bool

    kind = "stack"

    @property
    def hidden_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def config(self) -> dict:
        """The arguments of :func:`stack` that made this value."""
        return {"layers": self.layers, "dropout": self.dropout, "residual": self.residual}

    def rebuild(self, **changes) -> Stack:
        """``stack(**{**config, **changes})``."""
        return stack(**{**self.config, **changes})

    def map_layers(self, fn) -> Stack:
        """The same stack with ``fn(layer)`` in place of every layer."""
        return self.rebuild(layers=tuple(fn(layer) for layer in self.layers))

    def input_size(self, params: tuple) -> int | None:
        return self.layers[0].input_size(params[0])

    def init(self, key: PRNGKeyArray, input_size: int) -> tuple:
        """Params of every layer; layer ``l > 0`` takes layer ``l - 1``'s outputs."""
        validate.key(key, "key", required=True)
        params, size = [], input_size
        for layer, k in zip(self.layers, jax.random.split(key, len(self.layers))):
            params.append(layer.init(k, size))
            size = layer.output_size
        return tuple(params)

    def initial_carry(self, batch_shape=(), *, params=None, key=None, dtype=None) -> tuple:
        """Tuple of each layer's ``initial_carry`` (``params``/``key`` passed per layer)."""
        keys = self._keys(key)
        return tuple(
            layer.initial_carry(
                batch_shape, params=None if params is None else params[i], key=keys[i],
                dtype=dtype,
            )
            for i, layer in enumerate(self.layers)
        )

    def _keys(self, key) -> list:
        """Layer ``i`` draws from ``keys[i]``, the dropout after it from ``keys[n + i]``."""
        n = len(self.layers)
        return [None] * (2 * n) if key is None else list(jax.random.split(key, 2 * n))

    def _drop(self, i: int, ys: Array, keys: list) -> Array:
        if i == 0 or keys[i] is None or validate.is_zero(self.dropout):
            return ys
        keep = 1.0 - self.dropout
        mask = jax.random.bernoulli(keys[len(self.layers) + i], keep, ys.shape)
        return ys * mask / keep

    def step(self, params: tuple, carry: tuple, x_t: ArrayLike, *, key=None
             ) -> tuple[tuple, Array]:
        """One time step through every layer; with ``key``, dropout between layers (a fresh
        mask for this step, as :func:`unroll` draws one per step).

        Only for stacks of stepwise layers: a bidirectional layer needs the whole sequence.
        """
        new, y = [], jnp.asarray(x_t)
        keys = self._keys(key)
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "step"):
                raise TypeError(f"layer {i} ({getattr(layer, 'kind', type(layer).__name__)}) "
                                "has no step: it needs the whole sequence")
            inputs = self._drop(i, y, keys)
            c, out = layer.step(params[i], carry[i], inputs)
            y = out + y if self.residual and i > 0 else out
            new.append(c)
        return tuple(new), y

    def output(self, carry: tuple) -> Array:
        """The stack's output from its carry: the last layer's (with ``residual``, the sum of
        every layer's, as the residual connections add them up). Stepwise layers only."""
        outs = [layer.output(c) for layer, c in zip(self.layers, carry)]
        return sum(outs[1:], outs[0]) if self.residual else outs[-1]

    def run(self, params, xs, carry, *, lengths, reverse, resets, key, options):
        """Every layer over time-major ``xs [T, *B, I]`` in turn (see :func:`stack`)."""
        n = len(self.layers)
        if carry is not None and (not isinstance(carry, tuple) or len(carry) != n):
            raise ValueError(
                f"carry must be a tuple of {n} layer carries; got {_describe(carry)}"
            )
        carries = carry if carry is not None else (None,) * n
        keys = self._keys(key)
        finals, ys = [], xs
        for i, sub in enumerate(self.layers):
            inputs = self._drop(i, ys, keys)
            c, out = _sublayer(i, unroll, sub, params[i], inputs, carries[i], lengths=lengths,
                               reverse=reverse, resets=resets, key=keys[i], time_major=True,
                               options=options)
            ys = out + ys if self.residual and i > 0 else out
            finals.append(c)
        return tuple(finals), ys


class Bidirectional(NamedTuple):
    """A forward and a backward layer over the same inputs; made by :func:`bidirectional`.

    ``params`` is ``{"fwd": ..., "bwd": ...}``; the carry is :class:`BidirectionalCarry`.
    """

    fwd: Any
    bwd: Any
    merge: str

    kind = "bidirectional"

    @property
    def output_size(self) -> int:
        if self.merge == "concat":
            return self.fwd.output_size + self.bwd.output_size
        return self.fwd.output_size

    hidden_size = output_size

    @property
    def config(self) -> dict:
        """The arguments of :func:`bidirectional` that made this value."""
        return {"fwd": self.fwd, "bwd": self.bwd, "merge": self.merge}

    def rebuild(self, **changes) -> Bidirectional:
        """``bidirectional(**{**config, **changes})``."""
        return bidirectional(**{**self.config, **changes})

    def map_layers(self, fn) -> Bidirectional:
        """The same pair with ``fn(fwd)`` and ``fn(bwd)``."""
        return self.rebuild(fwd=fn(self.fwd), bwd=fn(self.bwd))

    def input_size(self, params: dict) -> int | None:
        return self.fwd.input_size(params["fwd"])

    def init(self, key: PRNGKeyArray, input_size: int) -> dict:
        """``{"fwd": fwd.init(k_fwd, I), "bwd": bwd.init(k_bwd, I)}``."""
        validate.key(key, "key", required=True)
        k_fwd, k_bwd = jax.random.split(key)
        return {"fwd": self.fwd.init(k_fwd, input_size), "bwd": self.bwd.init(k_bwd, input_size)}

    def initial_carry(self, batch_shape=(), *, params=None, key=None, dtype=None):
        """:class:`BidirectionalCarry` of each direction's ``initial_carry``."""
        k_fwd, k_bwd = (None, None) if key is None else jax.random.split(key)
        p = params or {"fwd": None, "bwd": None}
        return BidirectionalCarry(
            self.fwd.initial_carry(batch_shape, params=p["fwd"], key=k_fwd, dtype=dtype),
            self.bwd.initial_carry(batch_shape, params=p["bwd"], key=k_bwd, dtype=dtype),
        )

    def run(self, params, xs, carry, *, lengths, reverse, resets, key, options):
        """Both directions over time-major ``xs``; each resets at its own episode starts."""
        carry = carry if carry is not None else BidirectionalCarry(None, None)
        if not isinstance(carry, BidirectionalCarry):
            raise ValueError(f"carry must be a BidirectionalCarry(fwd, bwd); got {type(carry)}")
        k_fwd, k_bwd = (None, None) if key is None else jax.random.split(key)
        common = dict(lengths=lengths, resets=resets, time_major=True, options=options)
        c_fwd, y_fwd = _sublayer(0, unroll, self.fwd, params["fwd"], xs, carry.fwd,
                                 reverse=reverse, key=k_fwd, **common)
        c_bwd, y_bwd = _sublayer(1, unroll, self.bwd, params["bwd"], xs, carry.bwd,
                                 reverse=not reverse, key=k_bwd, **common)
        return BidirectionalCarry(c_fwd, c_bwd), MERGES[self.merge](y_fwd, y_bwd)


def stack(layers, *, dropout: float = 0.0, residual: bool = False) -> Stack:
    """Stacks layers: layer ``l`` reads the output sequence of layer ``l - 1``.

    Each layer runs over the whole sequence before the next starts (as cuDNN does), so every
    layer's input projection is one matmul. With a key passed to :func:`unroll`, dropout with
    rate ``dropout`` is applied to the outputs of every layer but the last, with independent
    masks per time step (as ``torch.nn.LSTM(dropout=...)``); without a key it is off. With
    ``residual=True`` layers after the first add their input to their output, ``y_l = f_l(y_{l-1})
    + y_{l-1}``, which needs equal sizes.

    Args:
        layers: cells, stacks or bidirectional layers (at least one).
        dropout: rate in ``[0, 1)``; may be a traced scalar to sweep it.
        residual: add residual connections around layers after the first.
    """
    validate.flag(residual, "residual")
    if not isinstance(layers, (list, tuple)) or hasattr(layers, "init"):  # a cell is a tuple
        raise TypeError(f"layers must be a list or tuple of layers; got {type(layers).__name__}")
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer; got an empty sequence")
    for i, layer in enumerate(layers):
        check_layer(layer, f"layers[{i}]")
    validate.rate(dropout, "dropout")
    if residual:
        for i in range(1, len(layers)):
            if layers[i].output_size != layers[i - 1].output_size:
                raise ValueError(
                    f"residual=True needs equal sizes: layer {i} outputs "
                    f"{layers[i].output_size} features but reads {layers[i - 1].output_size}"
                )
    return Stack(layers, dropout, residual)


def bidirectional(fwd, bwd, *, merge: str = "concat") -> Bidirectional:
    """Runs ``fwd`` over the sequence and ``bwd`` over it reversed, and merges the outputs.

    Outputs stay aligned with the inputs: ``ys[t] = merge(fwd_ys[t], bwd_ys[t])``, where
    ``bwd_ys[t]`` has seen inputs ``t..L-1`` (with ``lengths``, only the valid part is
    reversed, as PyTorch's packed sequences).

    Args:
        fwd: the forward layer (a cell, stack or bidirectional layer).
        bwd: the backward layer.
        merge: ``"concat"`` (``[..., H_fwd + H_bwd]``, PyTorch's layout), ``"sum"``,
            ``"mean"`` or ``"mul"``.
    """
    check_layer(fwd, "fwd")
    check_layer(bwd, "bwd")
    if not isinstance(merge, str) or merge not in MERGES:
        raise ValueError(f"merge must be one of {sorted(MERGES)}; got {merge!r}")
    if merge != "concat" and fwd.output_size != bwd.output_size:
        raise ValueError(
            f"merge={merge!r} needs equal output sizes; got fwd {fwd.output_size} and "
            f"bwd {bwd.output_size}"
        )
    return Bidirectional(fwd, bwd, merge)


__all__ = ["Bidirectional", "BidirectionalCarry", "MERGES", "Stack", "bidirectional", "stack"]
