"""Running layers over sequences: :func:`unroll`, its :class:`ScanOptions`, and the checks of
its inputs.

A cell is scanned here (``lax.scan``, optionally checkpointed); the deferred backward pass is
:mod:`gatedrnn.deferred`, the parallel paths (``method="associative"`` and ``"parallel"``)
are :mod:`gatedrnn.associative`, and the compositions (stacks, bidirectional pairs) are
:mod:`gatedrnn.compose`: each imports from here or below, never the reverse.

Everything here works time-major internally (``[T, *B, F]``), the layout ``lax.scan`` wants;
:func:`unroll` moves the time axis once on the way in and once on the way out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from gatedrnn import checks as validate
from gatedrnn.associative import _associative_scan, _expand, _parallel_form
from gatedrnn.cells import Carry, Params
from gatedrnn.deferred import deferred_scan

METHODS = ("sequential", "associative", "parallel")
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
            ``gr.lru``, ``gr.rg_lru``, ``make_cell(..., linear=True)``) or ``"parallel"``
            (the cell's own whole-sequence form, ``make_cell(..., parallel=...)``: the
            mLSTM's quadratic form).
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
        if self.backward == "deferred" and self.method != "sequential":
            raise ValueError("backward='deferred' is a form of the sequential scan's "
                             f"backward pass; method={self.method!r} has none to defer")
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


def reverse_valid(xs: Array, lengths: Array) -> Array:
    """Reverses each sequence's first ``lengths[b]`` steps along axis 0, leaving the padding.

    ``xs [T, *B, F]``, ``lengths [*B]``. Its own inverse, so applying it to the outputs of a
    scan over reversed inputs aligns them with the original inputs again.
    """
    t = jnp.arange(xs.shape[0]).reshape((-1,) + (1,) * lengths.ndim)
    idx = jnp.where(t < lengths, lengths - 1 - t, t)
    return jnp.take_along_axis(xs, idx[..., None], axis=0)


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
    if opts.method == "parallel":
        carry, ys = _parallel_form(cell, params, _project_rows(cell, params, xs), carry,
                                   lengths, resets, carry_0, flip)
    elif opts.method == "associative":
        carry, ys = _associative_scan(cell, params, _project_rows(cell, params, xs), carry,
                                      lengths, resets, carry_0, flip, xs.shape[-1])
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
    ``options=ScanOptions(method="associative")``, ``jax.lax.associative_scan``; for a cell
    with a whole-sequence form, ``method="parallel"``, that form). How the loop
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
    "BACKWARDS", "DEFER_ROWS", "METHODS", "REMAT_AUTO_BYTES", "ScanOptions", "check_layer",
    "check_params", "resolve_backward", "resolve_hoist", "resolve_remat", "resolve_unroll",
    "reverse_valid", "unroll",
]
