"""Running cells over sequences: :func:`unroll`, and the compositions :func:`stack` and
:func:`bidirectional`, whose values :func:`unroll` accepts like a cell's.

Everything here works time-major internally (``[T, *B, F]``), the layout ``lax.scan`` wants;
:func:`unroll` moves the time axis once on the way in and once on the way out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from gatedrnn.cells import Carry, Cell, Params

MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: 0.5 * (a + b),
    "mul": lambda a, b: a * b,
}


class _Options(NamedTuple):
    unroll: int | bool
    remat: bool
    hoist_projection: bool


class BidirectionalCarry(NamedTuple):
    """Carry of a :func:`bidirectional` layer: each direction's own carry."""

    fwd: Any
    bwd: Any


def _check_dropout(rate: Any, name: str) -> None:
    if isinstance(rate, (int, float)) and not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {rate!r}")


def _is_zero(rate: Any) -> bool:
    return isinstance(rate, (int, float)) and rate == 0


class Stack(NamedTuple):
    """Layers run one after another over the whole sequence; made by :func:`stack`.

    ``params`` and carries are tuples with one entry per layer.
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

    def input_size(self, params: tuple) -> int:
        return self.layers[0].input_size(params[0])

    def init(self, key: PRNGKeyArray, input_size: int) -> tuple:
        """Params of every layer; layer ``l > 0`` takes layer ``l - 1``'s outputs."""
        params, size = [], input_size
        for layer, k in zip(self.layers, jax.random.split(key, len(self.layers))):
            params.append(layer.init(k, size))
            size = layer.output_size
        return tuple(params)

    def initial_carry(self, batch_shape=(), *, params=None, key=None, dtype=None) -> tuple:
        """Tuple of each layer's ``initial_carry`` (``params``/``key`` passed per layer)."""
        keys = [None] * len(self.layers) if key is None else jax.random.split(key, len(self.layers))
        return tuple(
            layer.initial_carry(
                batch_shape, params=None if params is None else params[i], key=keys[i],
                dtype=dtype,
            )
            for i, layer in enumerate(self.layers)
        )

    def step(self, params: tuple, carry: tuple, x_t: ArrayLike) -> tuple[tuple, Array]:
        """One time step through every layer (no dropout: stepping takes no key).

        Only for stacks of cells: a bidirectional layer needs the whole sequence.
        """
        new, y = [], jnp.asarray(x_t)
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "step"):
                raise TypeError(f"layer {i} ({layer.kind}) has no step: it needs the sequence")
            c, out = layer.step(params[i], carry[i], y)
            y = out + y if self.residual and i > 0 else out
            new.append(c)
        return tuple(new), y


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

    def input_size(self, params: dict) -> int:
        return self.fwd.input_size(params["fwd"])

    def init(self, key: PRNGKeyArray, input_size: int) -> dict:
        """``{"fwd": fwd.init(k_fwd, I), "bwd": bwd.init(k_bwd, I)}``."""
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
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer; got an empty sequence")
    _check_dropout(dropout, "dropout")
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
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {sorted(MERGES)}; got {merge!r}")
    if merge != "concat" and fwd.output_size != bwd.output_size:
        raise ValueError(
            f"merge={merge!r} needs equal output sizes; got fwd {fwd.output_size} and "
            f"bwd {bwd.output_size}"
        )
    return Bidirectional(fwd, bwd, merge)


def reverse_valid(xs: Array, lengths: Array) -> Array:
    """Reverses each sequence's first ``lengths[b]`` steps along axis 0, leaving the padding.

    ``xs [T, *B, F]``, ``lengths [*B]``. Its own inverse, so applying it to the outputs of a
    scan over reversed inputs aligns them with the original inputs again.
    """
    t = jnp.arange(xs.shape[0]).reshape((-1,) + (1,) * lengths.ndim)
    idx = jnp.where(t < lengths, lengths - 1 - t, t)
    return jnp.take_along_axis(xs, idx[..., None], axis=0)


def _expand(mask: Array, leaf: Array) -> Array:
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _describe(tree: Any) -> str:
    return str(jax.tree.map(lambda leaf: list(jnp.shape(leaf)), tree))


def _check_carry(carry: Any, expected: Any, where: str) -> None:
    shapes = jax.tree.map(jnp.shape, carry)
    want = jax.tree.map(jnp.shape, expected)
    if jax.tree.structure(carry) != jax.tree.structure(expected) or shapes != want:
        raise ValueError(
            f"{where} must match initial_carry(batch_shape) of the layer: expected "
            f"{_describe(expected)}, got {_describe(carry)}"
        )


def _scan_cell(cell: Cell, params, xs, carry, lengths, reverse, opts, key, where):
    """Scans one cell over time-major ``xs [T, *B, I]``; see :func:`unroll` for semantics."""
    batch_shape = xs.shape[1:-1]
    dtype = cell.config.get("dtype") or jnp.result_type(xs.dtype, params["w_x"].dtype)
    expected = jax.eval_shape(
        lambda: cell.initial_carry(batch_shape, params=params, key=key, dtype=dtype)
    )
    if carry is None:
        carry = cell.initial_carry(batch_shape, params=params, key=key, dtype=dtype)
    else:
        _check_carry(carry, expected, where)
    if reverse and lengths is not None:
        xs = reverse_valid(xs, lengths)
    inputs = cell.project(params, xs) if opts.hoist_projection else xs
    advance = cell.recur if opts.hoist_projection else cell.step

    def body(carry_tm1, inp):
        x_t, t = inp
        carry_t, y_t = advance(params, carry_tm1, x_t)
        if lengths is not None:
            valid = t < lengths
            carry_t = jax.tree.map(
                lambda new, old: jnp.where(_expand(valid, new), new, old), carry_t, carry_tm1
            )
            y_t = jnp.where(_expand(valid, y_t), y_t, jnp.zeros_like(y_t))
        return carry_t, y_t

    if opts.remat:
        body = jax.checkpoint(body)
    carry, ys = jax.lax.scan(
        body, carry, (inputs, jnp.arange(xs.shape[0])),
        reverse=reverse and lengths is None, unroll=opts.unroll,
    )
    if reverse and lengths is not None:
        ys = reverse_valid(ys, lengths)
    return carry, ys


def _run(layer, params, xs, carry, lengths, reverse, opts, key, where="carry"):
    """Runs any layer over time-major ``xs``: the recursion behind :func:`unroll`."""
    expected_in = layer.input_size(params)
    if xs.shape[-1] != expected_in:
        raise ValueError(
            f"the inputs of {where.replace('carry', 'layer')} have {xs.shape[-1]} features but "
            f"its params expect input_size={expected_in}"
        )
    if isinstance(layer, Cell):
        return _scan_cell(layer, params, xs, carry, lengths, reverse, opts, key, where)
    if isinstance(layer, Bidirectional):
        carry = carry if carry is not None else BidirectionalCarry(None, None)
        if not isinstance(carry, BidirectionalCarry):
            raise ValueError(f"{where} must be a BidirectionalCarry(fwd, bwd); got {type(carry)}")
        k_fwd, k_bwd = (None, None) if key is None else jax.random.split(key)
        c_fwd, y_fwd = _run(
            layer.fwd, params["fwd"], xs, carry.fwd, lengths, reverse, opts, k_fwd, where + ".fwd"
        )
        c_bwd, y_bwd = _run(
            layer.bwd, params["bwd"], xs, carry.bwd, lengths, not reverse, opts, k_bwd,
            where + ".bwd",
        )
        return BidirectionalCarry(c_fwd, c_bwd), MERGES[layer.merge](y_fwd, y_bwd)
    if isinstance(layer, Stack):
        n = len(layer.layers)
        if carry is not None and (not isinstance(carry, tuple) or len(carry) != n):
            raise ValueError(
                f"{where} must be a tuple of {n} layer carries; got {_describe(carry)}"
            )
        carries = carry if carry is not None else (None,) * n
        keys = [None] * (2 * n) if key is None else list(jax.random.split(key, 2 * n))
        finals, ys = [], xs
        for i, sub in enumerate(layer.layers):
            inputs = ys
            if i > 0 and key is not None and not _is_zero(layer.dropout):
                keep = 1.0 - layer.dropout
                inputs = inputs * jax.random.bernoulli(keys[n + i], keep, inputs.shape) / keep
            c, out = _run(sub, params[i], inputs, carries[i], lengths, reverse, opts, keys[i],
                          f"{where}[{i}]")
            ys = out + ys if layer.residual and i > 0 else out
            finals.append(c)
        return tuple(finals), ys
    raise TypeError(f"cell must be a Cell, Stack or Bidirectional; got {type(layer).__name__}")


def unroll(
    cell,
    params: Params,
    xs: Float[ArrayLike, "*B T I"],
    carry: Carry | None = None,
    *,
    lengths: Int[ArrayLike, "*B"] | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: bool = False,
    key: PRNGKeyArray | None = None,
    hoist_projection: bool = True,
) -> tuple[Carry, Float[Array, "*B T H"]]:
    """Runs a cell (or a stack or bidirectional layer) over a sequence.

    For a cell it equals the Python loop::

        for t in range(T):                     # t = T-1, ..., 0 when reverse=True
            carry, ys[..., t, :] = cell.step(params, carry, xs[..., t, :])

    run with ``jax.lax.scan``. With ``hoist_projection=True`` (the default) the input half
    ``cell.project`` is applied to all steps in one matmul before the scan and only
    ``cell.recur`` runs inside it; ``False`` calls ``cell.step`` inside the scan. Both give
    the same results; which is faster depends on backend and shape (see benchmarks/).

    With ``lengths``, sequence ``b`` stops after ``lengths[b]`` steps: its carry is frozen
    there (and returned as its final carry), its outputs past the length are zero, and with
    ``reverse=True`` only its valid prefix is reversed, so ``ys`` stays aligned with ``xs``.

    Args:
        cell: a :class:`~gatedrnn.cells.Cell`, a :func:`stack` or a :func:`bidirectional`.
        params: the layer's params, as its ``init`` made them.
        xs: inputs ``[*B, T, I]`` (any number of batch dims, including none), or
            ``[T, *B, I]`` with ``time_major=True``.
        carry: the initial carry; ``None`` means ``cell.initial_carry(batch_shape)``.
        lengths: integer ``[*B]`` valid lengths in ``[0, T]``.
        reverse: process the sequence from its end.
        time_major: ``xs`` and ``ys`` have time first.
        unroll: ``lax.scan``'s loop unrolling factor.
        remat: wrap the scan body in ``jax.checkpoint`` (recompute in the backward pass
            instead of storing per-step intermediates).
        key: PRNG key for dropout (stack dropout, :func:`gatedrnn.recurrent_dropout` masks);
            without a key dropout is off.
        hoist_projection: compute the input projection outside the scan.

    Returns:
        ``(final_carry, ys)`` with ``ys [*B, T, H_out]`` (``[T, *B, H_out]`` if time-major).
    """
    xs = jnp.asarray(xs)
    if xs.ndim < 2:
        layout = "[time, *batch, features]" if time_major else "[*batch, time, features]"
        raise ValueError(f"xs must have shape {layout}; got shape {xs.shape}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must be a floating-point array; got dtype {xs.dtype}")
    if not isinstance(cell, (Cell, Stack, Bidirectional)):
        raise TypeError(f"cell must be a Cell, Stack or Bidirectional; got {type(cell).__name__}")
    expected_in = cell.input_size(params)
    if xs.shape[-1] != expected_in:
        raise ValueError(
            f"xs has {xs.shape[-1]} features (shape {xs.shape}) but the params were initialised "
            f"for input_size={expected_in}; pass inputs with {expected_in} features or init "
            f"with input_size={xs.shape[-1]}"
        )
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    if lengths is not None:
        lengths = _check_lengths(lengths, batch_shape, num_steps)
    opts = _Options(unroll, remat, hoist_projection)
    carry, ys = _run(cell, params, xs_tm, carry, lengths, reverse, opts, key)
    return carry, ys if time_major else jnp.moveaxis(ys, 0, -2)


def _check_lengths(lengths: ArrayLike, batch_shape: tuple, num_steps: int) -> Array:
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be an integer array; got dtype {lengths.dtype}")
    if lengths.shape != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape {tuple(batch_shape)} of xs; got {lengths.shape}"
        )
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > num_steps):
            raise ValueError(
                f"lengths must lie in [0, {num_steps}] (the number of time steps); got values "
                f"from {values.min()} to {values.max()}"
            )
    return lengths


__all__ = [
    "Bidirectional", "BidirectionalCarry", "MERGES", "Stack", "bidirectional", "reverse_valid",
    "stack", "unroll",
]
