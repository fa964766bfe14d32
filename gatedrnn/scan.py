"""Running cells over sequences: :func:`unroll`, and the compositions :func:`stack` and
:func:`bidirectional`, whose values :func:`unroll` accepts like a cell's.

Everything here works time-major internally (``[T, *B, F]``), the layout ``lax.scan`` wants;
:func:`unroll` moves the time axis once on the way in and once on the way out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal, jaxpr_as_fun
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from gatedrnn import checks as validate
from gatedrnn.cells import Carry, Params

MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: 0.5 * (a + b),
    "mul": lambda a, b: a * b,
}


METHODS = ("sequential", "associative")
# Backends on which hoist="auto" projects inside the scan. On a 2-core CPU the
# hoisted [T, B, G*H] projection, written once and read back (and its gradient likewise),
# costs more memory traffic than the small per-step matmul it saves: forward+backward took
# 1.07-1.30x as long hoisted (projected as rows, _project_rows) at both throughput shapes of
# benchmarks/run.py for every cell, and up to 1.36x at the latency shape; 0.89-1.23x with
# gr.workarounds.reuse_cpu_memory(), faster only for the GRU at B=64 (benchmarks/RESULTS.md).
# On an H100 hoisting took 0.85-1.16x the time of projecting per step (RESULTS.md); there
# one large matmul is the design's default. When remat checkpoints segments, the projection
# is hoisted per segment, inside the checkpoint, so it is recomputed with the segment instead of
# stored whole: the LSTM at B=64, T=4096, H=256 then plans the 584 MiB of XLA temporaries
# of projecting per step, against 2.4 GiB hoisted whole, and on an H100 ran 1.02-1.03x (LSTM)
# and 1.09-1.17x (GRU) faster than projecting per step.
PROJECT_PER_STEP = ("cpu",)


def resolve_hoist(hoist: bool | str, *, checkpoint_every: int = 0) -> bool:
    """``ScanOptions.hoist`` as :func:`unroll` applies it: ``"auto"`` is ``False`` on the
    backends of ``PROJECT_PER_STEP`` (the CPU) or when ``remat`` checkpoints every step
    (``checkpoint_every == 1``: a segment is one step, and a projection hoisted out of it
    would be stored whole), and ``True`` otherwise, decided by ``jax.default_backend()``
    when the call is traced. With ``checkpoint_every > 1`` a hoisted projection is
    computed per segment of that many steps."""
    if isinstance(hoist, str) and hoist == "auto":
        return jax.default_backend() not in PROJECT_PER_STEP and checkpoint_every != 1
    if not isinstance(hoist, (bool, np.bool_)):
        raise TypeError(f"hoist must be True, False or 'auto'; got "
                        f"{type(hoist).__name__} {hoist!r}")
    return bool(hoist)


# unroll="auto": lax.scan's unrolling factor on each backend (1 on the others). On a GPU every
# iteration of XLA's while loop costs a fixed few microseconds beyond its kernels, which a
# short step cannot hide: on an H100, unroll=4 made forward+backward of the shipped cells
# 1.2-1.9x faster at benchmarks/run.py's throughput shapes and 1.9-5.6x at its latency shape
# (B=1, T=1000), and the forward 1.1-2.0x; 8 was faster still at some shapes and slower at
# others, and compiles longer (benchmarks/unroll_factors.py, benchmarks/RESULTS.md). On a
# 2-core CPU unrolling helps only single-sequence gated cells and slows the rest.
UNROLL_AUTO = {"gpu": 4}


def resolve_unroll(unroll: int | bool | str) -> int | bool:
    """``unroll`` as :func:`unroll` passes it to ``lax.scan``: ``"auto"`` is
    ``UNROLL_AUTO[jax.default_backend()]`` (4 on a GPU) or 1, decided when the call is traced;
    a positive int or ``True`` (full unrolling) is kept; anything else is refused."""
    if isinstance(unroll, str) and unroll == "auto":
        return UNROLL_AUTO.get(jax.default_backend(), 1)
    if unroll is not True and (isinstance(unroll, (bool, np.bool_))
                               or not isinstance(unroll, (int, np.integer)) or unroll < 1):
        raise ValueError(f"unroll must be a positive int, True or 'auto'; got {unroll!r}")
    return unroll


# remat="auto" checkpoints when the carries of one run would take at least this many bytes
# (the residuals autodiff stores per step are a few times the carry: 2368 MiB of XLA
# temporaries on the CPU for the LSTM at B=64, T=4096, H=256, whose carries take 512 MiB;
# 3648 before its hand-written derivative). Below it, recomputing cost 1.1-1.3x the time at
# the benchmarked shapes for little memory saved; at that T=4096 shape it cost 1.0-1.1x and
# cut the temporaries 4-6x (benchmarks/RESULTS.md).
REMAT_AUTO_BYTES = 2**28


def resolve_remat(remat: bool | int | str, carry: Any, num_steps: int) -> int:
    """The number of steps between saved carries that :func:`unroll` uses for ``remat``: 0
    for none (store every step's residuals), ``k >= 1`` to save the carry every ``k`` steps
    and recompute the steps between in the backward pass. ``True`` is 1; ``"auto"`` is
    ``ceil(sqrt(T))`` (memory ``O(sqrt(T))`` carries, one extra forward pass of compute;
    Chen et al. 2016, "Training deep nets with sublinear memory cost") when the ``T``
    carries of the run take at least ``REMAT_AUTO_BYTES``, else 0."""
    if isinstance(remat, str) and remat == "auto":
        carry_bytes = sum(np.size(leaf) * jnp.dtype(jnp.result_type(leaf)).itemsize
                          for leaf in jax.tree.leaves(carry))
        if num_steps * carry_bytes < REMAT_AUTO_BYTES:
            return 0
        return math.isqrt(max(num_steps - 1, 0)) + 1
    if isinstance(remat, (bool, np.bool_)):
        return int(remat)
    if isinstance(remat, (int, np.integer)) and remat >= 1:
        return int(remat)
    raise ValueError(f"remat must be True, False, a positive int (steps between saved carries) "
                     f"or 'auto'; got {type(remat).__name__} {remat!r}")


BACKWARDS = ("auto", "scan", "deferred")
# backward="auto": the backends on which unroll takes the deferred backward pass, and the numbers
# of rows per step (the product of the batch shape) for which it does. JAX's gradient of a scan
# adds each step's weight gradient h_{t-1}^T g_t to the [H, G*H] total inside the backward loop;
# for 2 to 16 rows XLA's CPU backend forms it as a dot into a fresh matrix and a separate add, at
# about 80 us a step whatever the rows (9 us for one row, where it is one fused outer product).
# Deferred, the sum is one dot over all T*B rows after the loop. On a 2-core CPU
# (benchmarks/backward_paths.py, RESULTS.md) forward+backward of the shipped cells was
# 1.2-1.8x faster at one row for the LSTM (the tanh RNN and GRU 0.92-1.5x), 1.5-2.8x at B=4
# and 8, 1.2-1.9x at B=16; at B=32 1.06-1.24x at H=128 but 0.80-0.90x for the LSTM and GRU at
# H=256, and from B=64 the LSTM and GRU took 1.2-1.45x as long.
DEFER_ROWS = {"cpu": (1, 16)}


def resolve_backward(backward: str, carry: Any, batch_shape: tuple,
                     checkpoint_every: int = 0) -> bool:
    """Whether :func:`unroll` takes the deferred backward pass (:func:`deferred_scan`) for a
    run with this initial ``carry`` and ``batch_shape``: ``"scan"`` never, ``"deferred"``
    always (refused with ``remat``, which it would undo, or a carry that is not
    floating-point), ``"auto"`` on the backends of ``DEFER_ROWS`` (the CPU) when the rows per
    step, ``prod(batch_shape)``, lie in its range (1 to 16) and ``remat`` is off. Decided when
    the call is traced, from the shapes unroll sees (under ``jax.vmap``, one member's)."""
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}; got {backward!r}")
    floating = all(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
                   for leaf in jax.tree.leaves(carry))
    if backward == "deferred":
        if checkpoint_every:
            raise ValueError("backward='deferred' keeps every step's residuals, which remat "
                             f"would recompute; pass remat=False with it (remat resolved to "
                             f"{checkpoint_every} steps between saved carries)")
        if not floating:
            raise TypeError("backward='deferred' needs a floating-point carry; got "
                            f"{_describe(carry)}")
        return True
    if validate.jax_version() < DEFERRED_MIN_JAX:
        return False
    low, high = DEFER_ROWS.get(jax.default_backend(), (0, -1))
    return (backward == "auto" and not checkpoint_every and floating
            and low <= math.prod(batch_shape) <= high)


# Full unrolling compiles one copy of the step per time step: T=500 took 92 s on 2 cores.
MAX_FULL_UNROLL = 256


# jax 0.10 is the first whose scan transposes the deferred backward pass's tangent scan
# (0.5.0 to 0.8.0 fail an assertion in the scan's transpose rule, 0.9.0 another error)
DEFERRED_MIN_JAX = (0, 10)


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How :func:`unroll` executes a run: settings of XLA's loop, not of the model. Every
    choice gives the same values (within float32 rounding); they trade speed and memory.
    Each ``"auto"`` is decided when the call is traced, from the backend and the shapes, as
    measured fastest (docs/performance.md holds the measurements).

    Attributes:
        unroll: ``lax.scan``'s unrolling factor: a positive int, ``True`` (full unrolling,
            refused above ``MAX_FULL_UNROLL`` steps) or ``"auto"`` (:func:`resolve_unroll`).
        remat: what the backward pass recomputes instead of storing: ``False`` nothing,
            ``k`` (a positive int) the steps between carries saved every ``k`` steps,
            ``True`` is 1, ``"auto"`` ``ceil(sqrt(T))`` for runs whose carries are large
            (:func:`resolve_remat`).
        hoist: project the inputs of all steps in one matmul before the scan (``True``) or
            inside each step (``False``); ``"auto"``: :func:`resolve_hoist`.
        method: ``"sequential"`` (``lax.scan``) or ``"associative"`` (a parallel prefix
            scan, for cells linear in their carry: ``gr.min_gru``, ``gr.min_lstm``,
            ``gr.lru``, ``make_cell(..., linear=True)``).
        backward: the sequential scan's derivative: ``"scan"`` (JAX's own), ``"deferred"``
            (the weight gradients of all steps in one matmul after the loop,
            :func:`deferred_scan`; not with ``remat``, and only on JAX >= 0.10) or
            ``"auto"`` (:func:`resolve_backward`).
    """

    unroll: int | bool | str = "auto"
    remat: bool | int | str = "auto"
    hoist: bool | str = "auto"
    method: str = "sequential"
    backward: str = "auto"

    def __post_init__(self):
        # "auto" is resolved when traced: resolving it here would start JAX's backend
        if not _is_auto(self.unroll):
            resolve_unroll(self.unroll)
        resolve_remat(self.remat, (), 0)
        if not _is_auto(self.hoist):
            resolve_hoist(self.hoist)
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if not isinstance(self.backward, str) or self.backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}; got {self.backward!r}")
        if self.backward == "deferred" and self.method == "associative":
            raise ValueError("backward='deferred' is a form of the sequential scan's "
                             "backward pass; method='associative' has none to defer")
        if self.backward == "deferred" and validate.jax_version() < DEFERRED_MIN_JAX:
            raise ValueError(
                f"backward='deferred' needs JAX >= {'.'.join(map(str, DEFERRED_MIN_JAX))} "
                f"(this is {jax.__version__}, whose scan cannot transpose it); use "
                "backward='scan' or 'auto', which gives the same values")

    def replace(self, **changes) -> ScanOptions:
        """These options with some changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


# gr.unroll's execution keywords before ScanOptions, and the field each became
_DEPRECATED_KEYWORDS = {"unroll": "unroll", "remat": "remat", "hoist_projection": "hoist",
                        "method": "method", "backward": "backward"}


def _scan_options(options: ScanOptions | None, deprecated: dict) -> ScanOptions:
    """``options``, or the ScanOptions of :func:`unroll`'s deprecated keywords (warned)."""
    unknown = sorted(set(deprecated) - set(_DEPRECATED_KEYWORDS))
    if unknown:
        raise TypeError(f"unroll() got an unexpected keyword argument {unknown[0]!r}")
    if options is not None and not isinstance(options, ScanOptions):
        raise TypeError(f"options must be a gr.ScanOptions; got {type(options).__name__} "
                        f"{options!r}")
    if not deprecated:
        return options if options is not None else ScanOptions()
    if options is not None:
        raise TypeError(f"pass the execution settings either as options=gr.ScanOptions(...) "
                        f"or as the deprecated keywords {sorted(deprecated)}, not both")
    fields = {_DEPRECATED_KEYWORDS[name]: value for name, value in deprecated.items()}
    warnings.warn(
        f"gr.unroll's keywords {sorted(deprecated)} are deprecated and will be removed in the "
        f"next release; pass options=gr.ScanOptions("
        f"{', '.join(f'{k}={v!r}' for k, v in fields.items())})",
        DeprecationWarning, stacklevel=3)
    return ScanOptions(**fields)


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
    dtypes = [jnp.result_type(leaf).name for leaf in jax.tree.leaves(carry)]
    wanted = [leaf.dtype.name for leaf in jax.tree.leaves(expected)]
    if dtypes != wanted:
        raise ValueError(f"{where} must have the run's dtypes {wanted} (promoted from xs and "
                         f"the params); got {dtypes}: cast it, or the outputs' dtype would "
                         "silently change")


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
    """``path -> shape`` of every leaf, with paths that read the same for a dict, a NamedTuple
    or a restored checkpoint (``['w_x']``, ``.h`` and ``['h']`` all become ``w_x``/``h``)."""
    return {
        ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path):
        tuple(jnp.shape(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def check_inputs(layer: Any, params: Any, xs: Array) -> None:
    """The checks every entry point (``unroll``, the diagnostics) makes of a layer, its params
    and inputs ``xs [..., I]``: the layer protocol, the feature size, the params' entries."""
    check_layer(layer, "cell")
    expected = input_size_of(layer, params)
    if expected is not None and xs.shape[-1] != expected:
        raise ValueError(
            f"xs has {xs.shape[-1]} features (shape {xs.shape}) but the params were initialised "
            f"for input_size={expected}; pass inputs with {expected} features or init "
            f"with input_size={xs.shape[-1]}"
        )
    check_params(layer, params, xs.shape[-1])


def input_size_of(layer: Any, params: Any) -> int | None:
    """``layer.input_size(params)``, or ``None`` where params of the wrong shape make it fail
    (:func:`check_params` then says what is wrong with them)."""
    try:
        return layer.input_size(params)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def check_params(layer: Any, params: Any, input_size: int, name: str = "params") -> None:
    """Raises a ValueError unless ``params`` has the structure and shapes that
    ``layer.init(key, input_size)`` gives (dtypes may differ), naming the first entry that is
    missing, unexpected or of another shape. Costs one abstract evaluation of ``init``."""
    try:
        expected = _leaf_shapes(jax.eval_shape(lambda key: layer.init(key, input_size),
                                               jax.random.key(0)))
    except Exception:  # an init that cannot be traced abstractly: nothing to compare with
        return
    got = _leaf_shapes(params)
    kind = getattr(layer, "kind", type(layer).__name__)
    for path in expected:
        if path not in got:
            raise ValueError(f"{name} lack the entry {path!r} that {kind}.init(key, "
                             f"input_size={input_size}) makes (shape {expected[path]}); got "
                             f"entries {sorted(got)}")
        if got[path] != expected[path]:
            raise ValueError(f"{name}[{path!r}] has shape {got[path]}, but {kind}.init(key, "
                             f"input_size={input_size}) makes {expected[path]}: are these "
                             "params of another cell or size?")
    extra = sorted(set(got) - set(expected))
    if extra:
        raise ValueError(f"{name} hold {extra}, which {kind}.init(key, input_size="
                         f"{input_size}) does not make: are these params of another cell?")


def _run_dtype(xs: Array, params) -> Any:
    """The dtype a run computes in: promoted from the inputs and the params' float leaves."""
    leaves = [leaf for leaf in jax.tree.leaves(params)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.result_type(xs.dtype, *leaves)


def _where_tree(mask: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(_expand(mask, n), n, o), new, old)


def _episode_starts(resets: Array, lengths: Array | None, reverse: bool) -> Array:
    """Where the carry entering step ``t`` is reset, in the order the steps are taken.

    Forward, that is ``resets[t]``. Backward, an episode starting at ``s`` ends at the step
    before the next start, which is where the reversed pass enters it: ``resets[t + 1]``.
    Steps past a sequence's length never reset (its carry stays frozen there).
    """
    t = jnp.arange(resets.shape[0]).reshape((-1,) + (1,) * (resets.ndim - 1))
    if reverse:
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
        if lengths is not None:
            resets = reverse_valid((resets & (t + 1 < lengths))[..., None], lengths)[..., 0]
    elif lengths is not None:
        resets = resets & (t < lengths)
    return resets


def _scan_cell(cell, params, xs, carry, lengths, reverse, resets, opts, key):
    """Runs a stepwise layer over time-major ``xs [T, *B, I]``; see :func:`unroll`."""
    batch_shape = xs.shape[1:-1]
    dtype = _run_dtype(xs, params)

    def start():
        return cell.initial_carry(batch_shape, params=params, key=key, dtype=dtype)

    carry_0 = start() if carry is None or resets is not None else None
    if carry is None:
        carry = carry_0
    else:
        _check_carry(carry, jax.eval_shape(start), "carry")
    if resets is not None:
        resets = _episode_starts(resets, lengths, reverse)
    flip = reverse and lengths is None  # with lengths, only the valid prefix is reversed
    if reverse and lengths is not None:
        xs = reverse_valid(xs, lengths)
    if opts.method == "associative":
        carry, ys = _associative_scan(cell, params, xs, carry, lengths, resets, carry_0, flip)
    else:
        every = resolve_remat(opts.remat, carry, xs.shape[0])
        factor = resolve_unroll(opts.unroll)
        hoist = resolve_hoist(opts.hoist, checkpoint_every=every)
        per_segment = hoist and every > 1  # projected inside each checkpointed segment
        inputs = _project_rows(cell, params, xs) if hoist and not per_segment else xs
        advance = cell.recur if hoist else cell.step
        # segment inputs are (xs, steps, resets): only xs is projected
        prepare = ((lambda seg: (_project_rows(cell, params, seg[0]), *seg[1:]))
                   if per_segment else None)

        # what the step reads besides its inputs, as arguments: the deferred scan
        # differentiates in them explicitly
        def body(consts, carry_tm1, inp):
            params, carry_0, lengths = consts
            x_t, t, reset_t = inp
            if reset_t is not None:
                carry_tm1 = _where_tree(reset_t, carry_0, carry_tm1)
            carry_t, y_t = advance(params, carry_tm1, x_t)
            if lengths is not None:
                valid = t < lengths
                carry_t = _where_tree(valid, carry_t, carry_tm1)
                y_t = jnp.where(_expand(valid, y_t), y_t, jnp.zeros_like(y_t))
            return carry_t, y_t

        consts = (params, carry_0, lengths)
        # the step index only serves lengths: without them no index array enters the loop
        steps = None if lengths is None else jnp.arange(xs.shape[0])
        if resolve_backward(opts.backward, carry, batch_shape, every):
            carry, ys = deferred_scan(body, consts, carry, (inputs, steps, resets),
                                      reverse=flip, unroll=factor)
        else:
            carry, ys = _checkpointed_scan(functools.partial(body, consts), carry,
                                           (inputs, steps, resets), every, flip,
                                           factor, prepare)
    if reverse and lengths is not None:
        ys = reverse_valid(ys, lengths)
    return carry, ys


def _project_rows(cell, params: Params, xs: Array) -> Any:
    """``cell.project`` of time-major ``xs [T, *B, I]`` applied to one ``[T*B, I]`` matrix of
    rows, each output reshaped back to ``[T, *B, ...]``.

    The same values as projecting ``xs`` whole, but the derivative differs in form: for
    ``xs @ w`` on ``[T, B, I]`` XLA's CPU backend computed ``dw`` by transposing the whole
    ``[T, B, G*H]`` cotangent and then a dot outside its fast library, and forward+backward
    hoisted took 1.1-1.5x as long as with the rows (benchmarks/RESULTS.md)."""
    lead = xs.shape[:-1]
    rows = cell.project(params, xs.reshape(math.prod(lead), xs.shape[-1]))
    return jax.tree.map(lambda r: r.reshape(*lead, *r.shape[1:]), rows)


def deferred_scan(body, consts, carry, inputs, *, reverse: bool = False, unroll=1):
    """``lax.scan(lambda c, x: body(consts, c, x), carry, inputs)`` whose derivatives in
    ``consts`` and the floating-point ``inputs`` are taken outside the loop, for all steps at
    once: the weight gradients as one matmul over all ``T*B`` rows after the backward loop,
    which carries only the carry's cotangent, as cuDNN's RNN backward does.

    It is a ``jax.custom_jvp``, so forward mode (``jax.jvp``, ``jax.jacfwd``) and higher
    derivatives work as for the plain scan. With ``J_t`` the derivative of a step in its carry
    at step ``t`` and ``v_t`` its derivative in ``(consts, x_t)`` applied to their tangents,
    the carry's tangent is the linear recurrence ``dc_t = J_t dc_{t-1} + v_t``. The forward
    loop linearizes each step once (``jax.linearize``), in carry, consts and input, and keeps
    the residuals of that linearization that vary from step to step (those that depend only
    on ``consts`` are computed once, outside the loop). From the same residuals the forcings
    ``v_t`` are one ``vmap`` over all steps and the recurrence is a scan of ``J_t`` alone.
    Transposed by ``jax.grad``, that scan carries the carry's cotangent alone and ``v``'s
    transpose is one batched product after it. Needs a floating-point ``carry``; stores
    each step's residuals.

    Args:
        body: ``body(consts, carry, x_t) -> (carry, y_t)``, for any pytrees.
        consts: what the step reads besides its carry and inputs (params; any pytree).
        carry: the initial carry.
        inputs: per-step inputs, each leaf ``[T, ...]``; integer and boolean leaves (step
            indices, reset flags) get no derivative.
        reverse: as ``lax.scan``'s.
        unroll: as ``lax.scan``'s.

    Returns:
        ``(final_carry, ys)`` as ``lax.scan``'s.
    """
    leaves, treedef = jax.tree.flatten(inputs)
    floating = [jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves]

    def step(k, c, x_float, x_other):
        x_float, x_other = iter(x_float), iter(x_other)
        x = [next(x_float) if f else next(x_other) for f in floating]
        return body(k, c, jax.tree.unflatten(treedef, x))

    def scan(fn, c, xs):
        return jax.lax.scan(fn, c, xs, reverse=reverse, unroll=unroll)

    @jax.custom_jvp
    def run(k, c, x_float, x_other):
        return scan(lambda c, x: step(k, c, *x), c, (x_float, x_other))

    @run.defjvp
    def run_jvp(primals, tangents):
        k, c0, x_float, x_other = primals
        d_k, d_c0, d_float, _ = tangents
        one_step = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape[1:], v.dtype),
                                (x_float, x_other))
        linearized, varying, assemble = _step_linearization(step, k, c0, one_step)

        def forward(c, x):
            (c_next, y), residuals = linearized(c, *x)
            return c_next, (y, [r for r, v in zip(residuals, varying) if v])

        final, (ys, per_step) = scan(forward, c0, (x_float, x_other))
        # the residuals that depend on consts alone are the same at any point: at the first
        # step's (zeros when there is none), where the user's step is defined
        first = jax.tree.map(lambda v, s: v[0] if v.shape[0] else jnp.zeros(s.shape, s.dtype),
                             (x_float, x_other), one_step)
        _, fixed = linearized(c0, *first)
        zero_c, zero_k, zero_x = map(_tangent_zeros, (c0, k, one_step[0]))

        # each map is the step's linearization with the other tangents zero, taken as a JVP
        # of it so that those zeros are symbolic: no product of a zero is left to compute
        def forcing(lin, dx):
            return jax.jvp(lambda dk, dx: lin(zero_c, dk, dx), (zero_k, zero_x), (d_k, dx))[1]

        axes = assemble([None] * len(fixed), [0] * len(per_step))
        # transposed, a product ``x_t @ dw`` over all steps is ``dot(g, x)`` followed by a
        # transpose, which XLA's CPU backend folds into one dot of both operands transposed
        # and runs at a third of the speed (forward+backward 1.07-1.16x faster kept apart for
        # the LSTM and GRU at 4 to 16 rows, 1.4x at 64; docs/cells.md); a barrier between
        # two transposes of each matrix among the consts' tangents (the params, and the
        # initial carry, where it costs two small copies) keeps them apart
        d_k = jax.tree.map(_transposed_twice, d_k)
        forcings = jax.vmap(forcing, in_axes=(axes, 0))(assemble(fixed, per_step), d_float)

        def recurrence(dc, inp):
            residuals, (v_c, v_y) = inp
            lin = assemble(fixed, residuals)
            d_c, d_y = jax.jvp(lambda dc: lin(dc, zero_k, zero_x), (zero_c,), (dc,))[1]
            return jax.tree.map(jnp.add, d_c, v_c), jax.tree.map(jnp.add, d_y, v_y)

        d_final, d_ys = scan(recurrence, d_c0, (per_step, forcings))
        return (final, ys), (d_final, d_ys)

    x_float = [leaf for leaf, f in zip(leaves, floating) if f]
    x_other = [leaf for leaf, f in zip(leaves, floating) if not f]
    return run(consts, carry, x_float, x_other)


def _step_linearization(step, k, c0, one_step):
    """The linearization of ``step(k, c, x_float, x_other)`` in ``(c, k, x_float)``, traced
    once: ``(linearized, varying, assemble)``. ``linearized(c, x_float, x_other)`` gives the
    step's output and the linearization's residuals (a list of arrays); ``varying[i]`` says
    whether residual ``i`` depends on the carry or the inputs (else on ``k`` alone);
    ``assemble(fixed, per_step)`` rebuilds the linear map ``(dc, dk, dx_float) -> (d_carry,
    d_y)`` (a ``jax.tree_util.Partial``) from the residuals, taking the varying ones in turn
    from ``per_step`` and the others from ``fixed``, a list as long as all of them."""
    structure = []

    def linearize(c, k, x_float, x_other):
        out, lin = jax.linearize(lambda c, k, x: step(k, c, x, x_other), c, k, x_float)
        residuals, lin_tree = jax.tree.flatten(lin)
        structure.append((jax.tree.structure(out), lin_tree))
        return jax.tree.leaves(out), residuals

    closed = jax.make_jaxpr(linearize)(c0, k, *one_step)
    (out_tree, lin_tree), = structure
    flat_k = jax.tree.leaves(k)
    num_c, num_out = len(jax.tree.leaves(c0)), out_tree.num_leaves
    invars = closed.jaxpr.invars
    sources = [*invars[:num_c], *invars[num_c + len(flat_k):]]
    varying = _depends_on(closed.jaxpr, sources)[num_out:]
    evaluate = jaxpr_as_fun(closed)

    def linearized(c, x_float, x_other):
        flat = evaluate(*jax.tree.leaves(c), *flat_k, *jax.tree.leaves((x_float, x_other)))
        return jax.tree.unflatten(out_tree, flat[:num_out]), flat[num_out:]

    def assemble(fixed, per_step):
        per_step = iter(per_step)
        return jax.tree.unflatten(lin_tree, [next(per_step) if v else r
                                             for r, v in zip(fixed, varying)])

    return linearized, varying, assemble


def _depends_on(jaxpr, sources) -> list[bool]:
    """For each output of ``jaxpr``, whether it depends on any of the variables ``sources``
    (conservatively: an equation's outputs depend on all of its inputs)."""
    reached = set(sources)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    return [not isinstance(v, Literal) and v in reached for v in jaxpr.outvars]


def _transposed_twice(v):
    """``v`` itself, its last two axes swapped twice with an optimization barrier between."""
    if v.ndim < 2 or not jnp.issubdtype(v.dtype, jnp.inexact):
        return v
    return jnp.swapaxes(jax.lax.optimization_barrier(jnp.swapaxes(v, -1, -2)), -1, -2)


def _tangent_zeros(tree):
    """Zero tangents for the arrays (or shapes) of ``tree``: ``float0`` for integer ones."""
    def zero(v):
        if jnp.issubdtype(v.dtype, jnp.inexact):
            return jnp.zeros(v.shape, v.dtype)
        return np.zeros(v.shape, jax.dtypes.float0)
    return jax.tree.map(zero, tree)


def _checkpointed_scan(body, carry, inputs, every: int, reverse: bool, unroll,
                       prepare=None):
    """``lax.scan(body, carry, inputs)`` that keeps, for the backward pass, only the carry
    entering every ``every``-th step (all residuals when ``every`` is 0) and recomputes the
    steps between. The steps are split into whole segments of ``every`` steps, scanned as an
    outer scan over ``jax.checkpoint``-ed inner scans, and a shorter last segment;
    ``prepare`` (segments only) maps a segment's inputs to the body's, inside the
    checkpoint, so what it computes is recomputed rather than stored."""
    if every <= 1:
        return jax.lax.scan(jax.checkpoint(body) if every else body, carry, inputs,
                            reverse=reverse, unroll=unroll)
    num_steps = jax.tree.leaves(inputs)[0].shape[0]
    split = num_steps - num_steps % every

    @jax.checkpoint
    def segment(carry, segment_inputs):
        if prepare is not None:
            segment_inputs = prepare(segment_inputs)
        return jax.lax.scan(body, carry, segment_inputs, reverse=reverse, unroll=unroll)

    head = jax.tree.map(lambda v: v[:split].reshape(-1, every, *v.shape[1:]), inputs)
    tail = jax.tree.map(lambda v: v[split:], inputs)
    if reverse and split < num_steps:
        carry, ys_tail = segment(carry, tail)
    carry, ys = jax.lax.scan(segment, carry, head, reverse=reverse)
    ys = jax.tree.map(lambda v: v.reshape(split, *v.shape[2:]), ys)
    if split < num_steps:
        if not reverse:
            carry, ys_tail = segment(carry, tail)
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
    return carry, ys


def _associative_scan(cell, params, xs, carry, lengths, resets, carry_0, flip):
    """A cell whose step is ``carry_t = a_t * carry_{t-1} + b_t`` as a parallel prefix scan.

    ``a_t`` and ``b_t`` are read off ``recur`` itself, as the value and the forward-mode
    derivative at a zero carry (exact for an affine map). The pairs combine as
    ``(a, b) ∘ (a', b') = (a' a, a' b + b')`` with ``jax.lax.associative_scan``: ``O(log T)``
    depth and no division, so it is stable at any length. A frozen step (past ``lengths``) is
    ``(1, 0)``; a reset step is ``(0, a_t * carry_0 + b_t)``.
    """
    if not getattr(cell, "linear", False):
        raise ValueError(
            f"method='associative' needs a cell whose new carry is linear in the old one "
            f"(made with gr.make_cell(..., linear=True), as gr.min_gru, gr.min_lstm and "
            f"gr.lru are); cell {getattr(cell, 'kind', type(cell).__name__)!r} is not: use "
            "method='sequential'"
        )
    _check_linear(cell, xs.shape[-1])
    us = _project_rows(cell, params, xs)
    zeros = jax.tree.map(jnp.zeros_like, carry)
    ones = jax.tree.map(jnp.ones_like, carry)

    def coefficients(u_t):
        b_t, a_t = jax.jvp(lambda c: cell.recur(params, c, u_t)[0], (zeros,), (ones,))
        return a_t, b_t

    a, b = jax.vmap(coefficients)(us)
    steps = jnp.arange(xs.shape[0])
    if lengths is not None:
        valid = (steps.reshape((-1,) + (1,) * lengths.ndim) < lengths)
        a = jax.tree.map(lambda v: jnp.where(_expand(valid, v), v, 1), a)
        b = jax.tree.map(lambda v: jnp.where(_expand(valid, v), v, 0), b)
    if resets is not None:
        b = jax.tree.map(lambda a_t, b_t, c0: jnp.where(_expand(resets, b_t), a_t * c0 + b_t,
                                                        b_t), a, b, carry_0)
        a = jax.tree.map(lambda v: jnp.where(_expand(resets, v), 0, v), a)
    if flip:
        a, b = jax.tree.map(lambda v: v[::-1], (a, b))
    # The given carry enters as a first element (0, carry), so the prefixes are the carries.
    a = jax.tree.map(lambda v, c: jnp.concatenate([jnp.zeros_like(c)[None], v]), a, carry)
    b = jax.tree.map(lambda v, c: jnp.concatenate([c[None], v]), b, carry)

    def combine(first, second):
        (a_1, b_1), (a_2, b_2) = first, second
        return (jax.tree.map(jnp.multiply, a_2, a_1),
                jax.tree.map(lambda a2, b1, b2: a2 * b1 + b2, a_2, b_1, b_2))

    _, carries = jax.lax.associative_scan(combine, (a, b))
    carries = jax.tree.map(lambda v: v[1:], carries)
    ys = jax.vmap(cell.output)(carries)
    final = jax.tree.map(lambda v, c: v[-1] if v.shape[0] else c, carries, carry)
    if flip:
        ys = ys[::-1]
    if lengths is not None:
        ys = jnp.where(_expand(valid, ys), ys, jnp.zeros_like(ys))
    return final, ys


def _check_linear(cell, input_size: int) -> None:
    """Tests a cell's ``linear=True`` declaration before the associative path trusts it.

    With concrete values (params from the cell's own ``init``, random inputs and carries;
    evaluated while tracing, so a traced run is checked too): the new carry must be
    ``a * carry + b`` elementwise, with ``a`` and ``b`` read off at a zero carry as the
    associative path reads them, and ``core``'s ``h_t`` must equal ``output(carry)``, which
    the associative path emits. A dense linear map ``h @ A + u``, a nonlinear ``core`` or a
    readout other than ``output`` is refused here instead of giving other numbers than
    ``method="sequential"``. A probe, not a proof: a cell that is elementwise-affine only
    for the params ``init`` draws would pass."""
    with jax.ensure_compile_time_eval():
        k_params, k_x, k_c = jax.random.split(jax.random.key(0x11EA), 3)
        params = cell.init(k_params, input_size)
        u = cell.project(params, jax.random.normal(k_x, (2, input_size)))
        shape = cell.initial_carry((2,), params=params)
        leaves, tree = jax.tree.flatten(shape)
        keys = jax.random.split(k_c, len(leaves))
        probe = jax.tree.unflatten(tree, [_random_like(k, leaf)
                                          for k, leaf in zip(keys, leaves)])
        zeros = jax.tree.map(jnp.zeros_like, probe)
        ones = jax.tree.map(jnp.ones_like, probe)
        b, a = jax.jvp(lambda c: cell.recur(params, c, u)[0], (zeros,), (ones,))
        new, h_t = cell.recur(params, probe, u)
        affine = jax.tree.map(lambda a, c, b: a * c + b, a, probe, b)
        read = cell.output(new)
        new, affine, h_t, read = jax.tree.map(np.asarray, (new, affine, h_t, read))

    def gap(x, y) -> float:
        scale = max(1.0, float(np.max(np.abs(y)))) if y.size else 1.0
        return float(np.max(np.abs(x - y))) / scale if x.size else 0.0

    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    tolerance = max(1e-4, 100 * float(jnp.finfo(dtype).eps))
    kind = getattr(cell, "kind", type(cell).__name__)
    off = max(gap(x, y) for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(affine)))
    if off > tolerance:
        raise ValueError(
            f"cell {kind!r} is declared linear (make_cell(..., linear=True)), but its new carry "
            f"is not a * carry + b elementwise: at a random carry it differs from that by "
            f"{off:.3g} (relative), with a and b read off at a zero carry. "
            "method='associative' needs carry_t = a_t * carry_{t-1} + b_t, a_t and b_t "
            "depending on the input only (a diagonal recurrence; a dense h @ A is not one). "
            "Use method='sequential', or drop linear=True")
    if h_t.shape != read.shape or gap(h_t, read) > tolerance:
        raise ValueError(
            f"cell {kind!r} is declared linear, but core's h_t (shape {jnp.shape(h_t)}) is not "
            f"output(carry) (shape {jnp.shape(read)}): method='associative' emits "
            "output(carry), method='sequential' core's h_t, so they would differ. Make core "
            "return output(carry) as h_t, or give make_cell the output function")


def _random_like(key, leaf) -> Array:
    """Standard normal values of ``leaf``'s shape and dtype (complex: both parts)."""
    value = jax.random.normal(key, leaf.shape, jnp.float32)
    if jnp.iscomplexobj(leaf):
        value = value + 1j * jax.random.normal(jax.random.fold_in(key, 1), leaf.shape)
    return value.astype(leaf.dtype)


def _run(layer, params, xs, carry, lengths, reverse, resets, opts, key):
    """Runs any layer over time-major ``xs``: a stepwise layer (a cell) is scanned here; a
    sequence layer runs itself through its ``run`` method."""
    if hasattr(layer, "recur") and hasattr(layer, "project"):
        return _scan_cell(layer, params, xs, carry, lengths, reverse, resets, opts, key)
    return layer.run(params, xs, carry, lengths=lengths, reverse=reverse, resets=resets,
                     key=key, options=opts)  # check_layer: a sequence layer


_COMMON = ("init", "initial_carry", "input_size", "output_size")


def check_layer(layer: Any, name: str = "layer") -> None:
    """Raises a TypeError naming what ``layer`` lacks unless it follows the layer protocol
    (:class:`gatedrnn.cells.StepLayer` or :class:`gatedrnn.cells.SequenceLayer`)."""
    missing = [a for a in _COMMON if not hasattr(layer, a)]
    stepwise = hasattr(layer, "project") and hasattr(layer, "recur")
    if missing or not (stepwise or hasattr(layer, "run")):
        what = missing + ([] if stepwise or hasattr(layer, "run") else
                          ["project and recur (a cell) or run (a sequence layer)"])
        hint = " (a factory: call it, e.g. gr.lstm(64))" if callable(layer) and not hasattr(
            layer, "init") else ""
        raise TypeError(f"{name} must be a layer (a cell from gr.make_cell or gr.lstm, a "
                        f"gr.stack, a gr.bidirectional, or an object of the same protocol); "
                        f"got {type(layer).__name__}{hint}, which lacks {', '.join(what)}")


def unroll(
    cell,
    params: Params,
    xs: Float[ArrayLike, "*B T I"],
    carry: Carry | None = None,
    *,
    lengths: Int[ArrayLike, "*B"] | None = None,
    reverse: bool = False,
    resets: Bool[ArrayLike, "*B T"] | None = None,
    time_major: bool = False,
    key: PRNGKeyArray | None = None,
    options: ScanOptions | None = None,
    checks: bool = False,
    **deprecated,
) -> tuple[Carry, Float[Array, "*B T H"]]:
    """Runs a layer (a cell, a stack, a bidirectional pair, any object of the layer protocol)
    over a sequence.

    For a cell it equals the Python loop::

        for t in range(T):                     # t = T-1, ..., 0 when reverse=True
            if resets[..., t]:                 # (forward; see resets below)
                carry = cell.initial_carry(batch_shape, params=params, key=key)
            carry, ys[..., t, :] = cell.step(params, carry, xs[..., t, :])

    run with ``jax.lax.scan`` (or, for a cell linear in its carry with
    ``options=ScanOptions(method="associative")``, ``jax.lax.associative_scan``). How the loop
    is compiled (unrolling, rematerialisation, where the input projection happens, the form
    of the backward pass) is ``options``; every choice gives the same values.

    With ``lengths``, sequence ``b`` stops after ``lengths[b]`` steps: its carry is frozen
    there (and returned as its final carry), its outputs past the length are zero, and with
    ``reverse=True`` only its valid prefix is reversed, so ``ys`` stays aligned with ``xs``.

    With ``resets`` (``done`` flags of RL and streaming code), an episode starts at every
    step ``t`` where ``resets[..., t]`` is true: the carry entering it is replaced by the
    layer's initial carry (a learned carry, or the sequence's recurrent-dropout mask, stays
    as it was drawn). Each episode's outputs equal a separate run over it. Stacks reset every
    layer; a backward direction resets where its own episodes start, i.e. at the last step
    before each forward start.

    Args:
        cell: a layer: a cell, a :func:`stack`, a :func:`bidirectional` pair, or a user's
            object of the protocol in :mod:`gatedrnn.cells` (``StepLayer`` or
            ``SequenceLayer``).
        params: the layer's params, as its ``init`` made them.
        xs: inputs ``[*B, T, I]`` (any number of batch dims, including none), or
            ``[T, *B, I]`` with ``time_major=True``.
        carry: the initial carry; ``None`` means ``cell.initial_carry(batch_shape)``.
        lengths: integer ``[*B]`` valid lengths in ``[0, T]``.
        reverse: process the sequence from its end.
        resets: boolean ``[*B, T]`` (``[T, *B]`` with ``time_major``) episode starts.
        time_major: ``xs`` and ``ys`` have time first.
        key: PRNG key for dropout (stack dropout, :func:`gatedrnn.recurrent_dropout` masks);
            without a key dropout is off.
        options: the execution settings, a :class:`ScanOptions` (default: all ``"auto"``,
            sequential; docs/performance.md).
        checks: check traced values at run time (``lengths`` in ``[0, T]``, finite ``xs``
            and params); the call must run under :func:`gatedrnn.checks.checked`.
        **deprecated: ``unroll``, ``remat``, ``hoist_projection``, ``method`` and
            ``backward`` as keywords, as before ``options`` (a ``DeprecationWarning``; they
            will be removed in the next release).

    Returns:
        ``(final_carry, ys)`` with ``ys [*B, T, H_out]`` (``[T, *B, H_out]`` if time-major).
    """
    opts = _scan_options(options, deprecated)
    xs = jnp.asarray(xs)
    if xs.ndim < 2:
        layout = "[time, *batch, features]" if time_major else "[*batch, time, features]"
        raise ValueError(f"xs must have shape {layout}; got shape {xs.shape}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must be a floating-point array; got dtype {xs.dtype}")
    for name, value in (("reverse", reverse), ("time_major", time_major), ("checks", checks)):
        validate.flag(value, name)
    validate.key(key)
    check_inputs(cell, params, xs)
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    if opts.unroll is True and num_steps > MAX_FULL_UNROLL:
        raise ValueError(f"unroll=True copies the step {num_steps} times into the program, "
                         f"which takes minutes to compile beyond {MAX_FULL_UNROLL} steps; pass "
                         "an int such as unroll=8")
    if lengths is not None:
        lengths = _check_lengths(lengths, batch_shape, num_steps)
    if resets is not None:
        resets = _check_resets(resets, batch_shape, num_steps, time_major)
    if checks:
        _check_values(xs, params, lengths, num_steps)
    carry, ys = _run(cell, params, xs_tm, carry, lengths, reverse, resets, opts, key)
    return carry, ys if time_major else jnp.moveaxis(ys, 0, -2)


def _check_values(xs: Array, params: Any, lengths: Array | None, num_steps: int) -> None:
    """The run-time checks of ``unroll(..., checks=True)``."""
    if lengths is not None:
        validate.check_traced(jnp.all((lengths >= 0) & (lengths <= num_steps)),
                            f"lengths must lie in [0, {num_steps}]; got values from {{}} to {{}}",
                            jnp.min(lengths), jnp.max(lengths))
    validate.check_traced(jnp.all(jnp.isfinite(xs)), "xs holds {} non-finite values",
                        jnp.sum(~jnp.isfinite(xs)))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            validate.check_traced(jnp.all(jnp.isfinite(leaf)),
                                f"params{jax.tree_util.keystr(path)} holds {{}} non-finite values",
                                jnp.sum(~jnp.isfinite(leaf)))


def _check_resets(resets: ArrayLike, batch_shape: tuple, num_steps: int,
                  time_major: bool) -> Array:
    resets = jnp.asarray(resets)
    layout = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets must be a boolean array (True where an episode starts); got "
                        f"dtype {resets.dtype}")
    if resets.shape != layout:
        raise ValueError(f"resets must have the shape {layout} of xs without its feature axis; "
                         f"got {resets.shape}")
    return resets if time_major else jnp.moveaxis(resets, -1, 0)


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
    "BACKWARDS", "Bidirectional", "BidirectionalCarry", "DEFER_ROWS", "MERGES", "METHODS",
    "REMAT_AUTO_BYTES", "ScanOptions", "Stack", "bidirectional", "check_layer", "check_params",
    "deferred_scan", "resolve_backward", "resolve_hoist", "resolve_remat", "resolve_unroll",
    "reverse_valid", "stack", "unroll",
]
