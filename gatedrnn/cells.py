"""Recurrent cells as pure functions: the vanilla RNN, the LSTM and the GRU.

Every factory returns a :class:`Cell`, an immutable value (a NamedTuple of pure functions and
static configuration, in the style of optax's ``GradientTransformation``). A cell never holds
parameters: ``init`` makes a flat dict of arrays, and every other function takes it explicitly.

All cells share one input half: ``project(params, x) = x @ w_x + b`` (every bias that sits
outside a gated product lives in ``b``), so :func:`gatedrnn.unroll` can apply it to all time
steps in one matmul before the scan. ``recur`` is the hidden half, and ``step`` is ``recur``
after ``project``, never written twice.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from gatedrnn import checks

Params = Any
Carry = Any


class LSTMCarry(NamedTuple):
    """The LSTM's carry: hidden state ``h [*B, P]`` and cell state ``c [*B, H]`` (PyTorch order;
    ``P = H`` without a projection)."""

    h: Array
    c: Array


class Layer(Protocol):
    """What every layer offers: :func:`gatedrnn.unroll`, composition, training and sweeps use
    nothing else. Cells, stacks, bidirectional layers and a user's own classes alike.

    A layer is either *stepwise* (:class:`StepLayer`, a cell: ``unroll`` scans it) or a
    *sequence layer* (:class:`SequenceLayer`: it runs over the whole sequence itself).
    """

    output_size: int

    def init(self, key: PRNGKeyArray, input_size: int) -> Params:
        """Params for inputs of ``input_size`` features: any pytree."""

    def initial_carry(self, batch_shape=(), *, params=None, key=None, dtype=None) -> Carry:
        """The carry before the first step (and after a reset)."""

    def input_size(self, params: Params) -> int | None:
        """The feature size ``params`` expect, or ``None`` when unknown (no check)."""


class StepLayer(Layer, Protocol):
    """A cell: one time step at a time. ``unroll`` applies ``project`` to every step at once
    (outside the scan) and scans ``recur``; ``step`` is ``recur`` after ``project``.

    Optional attributes: ``gates(params, carry, u_t) -> dict`` (gate statistics) and
    ``linear`` (``True`` when the new carry is ``a_t * carry + b_t`` elementwise, so
    ``unroll(..., options=ScanOptions(method="associative"))`` may run it).
    """

    def project(self, params: Params, x: Array) -> Array:
        """The input half for inputs ``x [..., I]`` with any leading dimensions."""

    def recur(self, params: Params, carry: Carry, u_t: Array, h_mask: Array | None = None):
        """``(carry, h_t)``: the hidden half; ``h_mask`` is recurrent dropout's mask."""

    def step(self, params: Params, carry: Carry, x_t: Array):
        """``(carry, h_t)`` for one input ``x_t [*B, I]``."""

    def output(self, carry: Carry) -> Array:
        """The part of a carry that is the output: ``recur``'s ``h_t`` is ``output(carry_t)``."""


class SequenceLayer(Layer, Protocol):
    """A layer that needs the whole sequence (a stack, a bidirectional pair, a user's own)."""

    def run(self, params: Params, xs: Array, carry: Carry, *, lengths, reverse, resets, key,
            options):
        """``(carry, ys)`` for time-major ``xs [T, *B, I]``; ``carry`` may be ``None``.
        ``options`` is the run's :class:`gatedrnn.ScanOptions`: run sublayers with
        ``gr.unroll(sub, p, xs, c, time_major=True, lengths=lengths, reverse=reverse,
        resets=resets, key=k, options=options)``."""


class Cell(NamedTuple):
    """A recurrent cell: pure functions over explicit params; made by :func:`make_cell`.

    Attributes:
        init: ``init(key, input_size) -> params`` (any pytree).
        initial_carry: ``initial_carry(batch_shape=(), *, params=None, key=None, dtype=None)``
            -> the carry before the first step (zeros unless the cell says otherwise;
            wrappers may read ``params`` for a learned carry or ``key`` for dropout masks).
        project: ``project(params, x) -> u``, the input half, for inputs ``x [..., I]`` with
            any leading dimensions (``x @ w_x + b`` for the shipped cells).
        recur: ``recur(params, carry, u_t, h_mask=None) -> (carry, h_t)``, the hidden half.
            ``h_mask [*B, output_size]`` is recurrent dropout's mask (see :func:`make_cell`);
            ``None`` means no mask.
        step: ``step(params, carry, x_t) -> (carry, h_t)``; equals ``recur`` after ``project``.
        gates: ``gates(params, carry, u_t) -> dict`` of gate name -> ``[*B, H]`` activations
            for that step (empty for cells without gates).
        output: ``output(carry) -> h``, the part of a carry that is the cell's output;
            ``recur``'s ``h_t`` equals ``output`` of its new carry.
        input_size: ``input_size(params) -> int | None``, the feature size the params expect.
        hidden_size: H, the cell's width (static).
        kind: ``"rnn"``, ``"lstm"``, ``"gru"``, ``"min_gru"``, ... or ``"custom"`` (static).
        config: the options the cell was made with (static); with :func:`cell_factory`, every
            argument of the factory, so :meth:`rebuild` can change them.
        output_size: size of ``h_t`` (H unless the cell projects, as the LSTM's ``proj_size``).
        linear: the new carry is ``a_t * carry + b_t`` elementwise, with ``a_t, b_t`` functions
            of the input alone, so a parallel scan may run the cell.
        factory: the function that made the cell from ``config`` (set by
            :func:`cell_factory`), or ``None``.
    """

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    project: Callable[..., Array]
    recur: Callable[..., tuple[Carry, Array]]
    step: Callable[..., tuple[Carry, Array]]
    gates: Callable[..., dict[str, Array]]
    output: Callable[[Carry], Array]
    input_size: Callable[[Params], int | None]
    hidden_size: int
    kind: str
    config: Mapping[str, Any]
    output_size: int
    linear: bool = False
    factory: Callable[..., Cell] | None = None

    def __repr__(self) -> str:
        """The cell's kind, sizes and config (functions by name), not its functions'
        addresses."""
        config = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.config.items())
        sizes = f"hidden_size={self.hidden_size}" + (
            f", output_size={self.output_size}" if self.output_size != self.hidden_size else "")
        return f"Cell(kind={self.kind!r}, {sizes}{', linear=True' if self.linear else ''}, " \
               f"config={{{config}}})"

    def rebuild(self, **changes) -> Cell:
        """The same cell with some options changed: ``factory(**{**config, **changes})``.

        Values may be traced (a sweep vmaps over them). Needs a cell made by a
        :func:`cell_factory`.
        """
        if self.factory is None:
            raise ValueError(
                f"cell {self.kind!r} records no factory, so its options {sorted(changes)} "
                "cannot be changed: build it in a function decorated with gr.cell_factory"
            )
        unknown = sorted(set(changes) - set(self.config))
        if unknown:
            raise ValueError(f"cell {self.kind!r} has no option {unknown[0]!r}; its options: "
                             f"{sorted(self.config)}")
        return self.factory(**{**self.config, **changes})


def _short_repr(value: Any) -> str:
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if isinstance(value, Cell):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda v: v,
    "linear": lambda v: v,
}


def _resolve_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}"
        )
    return ACTIVATIONS[activation]


def _check_common(hidden_size: Any, param_dtype: Any, *, chrono_t_max: Any = None,
                  **finite: Any) -> int:
    """The checks every shipped factory needs: the size, the params' dtype, finite options
    and a chrono range; returns ``hidden_size`` as an int."""
    checks.float_dtype(param_dtype, "param_dtype", optional=False)
    for name, value in finite.items():
        checks.real(value, name)
    if chrono_t_max is not None:
        checks.real(chrono_t_max, "chrono_t_max", above=2)
    return checks.size(hidden_size, "hidden_size")


def _recurrent_matrix(
    key: PRNGKeyArray, rows: int, hidden_size: int, num_gates: int, scheme: str | Callable,
    dtype: Any,
) -> Array:
    """``w_h [rows, G*H]`` with each gate's ``[rows, H]`` block initialised on its own.

    Orthogonal init of the fused matrix would not make each gate block orthogonal, so blocks
    are drawn separately (the per-block choice of Flax and Keras).
    """
    shape = (rows, hidden_size)
    if callable(scheme):
        block = scheme
    elif scheme == "orthogonal":
        block = jax.nn.initializers.orthogonal()
    elif scheme == "identity":
        def block(_key, shape, dtype):
            return jnp.eye(*shape, dtype=dtype)
    elif scheme == "normal":
        # Entries N(0, 1/rows): the spectral radius is close to 1 for large H (circular law).
        block = jax.nn.initializers.normal(stddev=rows**-0.5)
    else:
        raise ValueError(
            "recurrent_init must be 'orthogonal', 'identity', 'normal' or a callable "
            f"(key, shape, dtype) -> array; got {scheme!r}"
        )
    keys = jax.random.split(key, num_gates)
    # QR (orthogonal init) has no bfloat16 kernel: draw in at least float32, then cast.
    draw = jnp.promote_types(dtype, jnp.float32)
    return jnp.concatenate([block(k, shape, draw) for k in keys], axis=1).astype(dtype)


def _input_matrix(key: PRNGKeyArray, input_size: int, width: int, dtype: Any) -> Array:
    input_size = checks.size(input_size, "input_size")
    return jax.nn.initializers.lecun_normal()(key, (input_size, width), dtype)


def _chrono_bias(key: PRNGKeyArray, t_max: float, hidden_size: int, dtype: Any) -> Array:
    """Chrono initialisation (Tallec & Ollivier 2018): ``log U[1, T_max - 1]``.

    A gate with this bias keeps its state with time constant ``1 + e^b``, spread over
    ``[2, T_max]``.
    """
    return jnp.log(jax.random.uniform(key, (hidden_size,), dtype, 1.0, t_max - 1.0))


def _split(v: Array, num: int) -> list[Array]:
    return jnp.split(v, num, axis=-1)


def _accepts(fn: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _params_dtype(params: Params) -> Any:
    leaves = [v for v in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(v),
                                                                    jnp.inexact)]
    return jnp.result_type(*leaves) if leaves else None


def _describe_tree(tree: Any) -> str:
    return str(jax.tree.map(lambda leaf: list(jnp.shape(leaf)), tree))


def _check_arity(fn: Callable, name: str, form: str, count: int, other: Callable) -> None:
    """``fn`` must accept ``count`` positional arguments (``form``); one that does not while
    the other function does was most likely passed in the other's place."""
    if checks.takes_positional(fn, count) is False:
        hint = "; init and core may be swapped" if checks.takes_positional(other, count) \
            else ""
        raise TypeError(f"{name} must be {form}; got {checks.signature_of(fn)}{hint}")


def make_cell(
    init: Callable[[PRNGKeyArray, int], Params],
    core: Callable[..., tuple],
    *,
    hidden_size: int,
    kind: str = "custom",
    project: Callable[[Params, Array], Array] | None = None,
    initial_carry: Callable[..., Carry] | None = None,
    output: Callable[[Carry], Array] | None = None,
    input_size: Callable[[Params], int] | None = None,
    output_size: int | None = None,
    linear: bool = False,
    dtype: Any = None,
    config: Mapping[str, Any] | None = None,
) -> Cell:
    """Builds a cell from its equations; every cell of the library is made here.

    ``core`` is the only place a cell's equations are written; ``recur`` (with the carry's
    dtype kept fixed, as ``lax.scan`` needs), ``step`` (``recur`` after ``project``) and
    ``gates`` are derived from it. A minGRU in six lines::

        def init(key, input_size):
            return {"w": jax.nn.initializers.lecun_normal()(key, (input_size, 2 * 64))}
        def core(params, h, u_t):
            z, h_new = jnp.split(u_t, 2, axis=-1)
            return (h := (1 - jax.nn.sigmoid(z)) * h + jax.nn.sigmoid(z) * h_new), h
        cell = gr.make_cell(init, core, hidden_size=64, project=lambda p, x: x @ p["w"])

    Recurrent dropout (:func:`gatedrnn.recurrent_dropout`) reaches ``core`` as the keyword
    ``h_mask [*B, output_size]`` when ``core`` accepts one, to multiply the hidden state where
    it enters the recurrent product (Gal & Ghahramani 2016); a ``core`` without it gets the
    previous carry multiplied by the mask, leaf by leaf, before the step.

    Args:
        init: ``init(key, input_size) -> params``, any pytree.
        core: ``core(params, carry, u_t) -> (carry, h_t)`` or ``(carry, h_t, gates)`` with
            ``gates`` a dict of name -> ``[*B, H]`` activations; ``u_t`` is ``project``'s
            output for step ``t``; ``h_t`` must equal ``output(carry)``.
        hidden_size: H.
        kind: a name for reports and errors.
        project: ``project(params, x) -> u`` for ``x [..., I]`` with any leading dimensions,
            applied by :func:`gatedrnn.unroll` to all steps at once; default the identity
            (``core`` then receives ``x_t``).
        initial_carry: ``initial_carry(batch_shape, *, params, key, dtype) -> carry``; default
            zeros ``[*B, hidden_size]``. ``dtype`` is the run's dtype (see ``dtype`` below).
        output: ``output(carry) -> h``; default the identity (the carry is ``h``).
        input_size: ``input_size(params) -> int``; with it, inputs of another size are refused
            with both sizes named; without it the check is skipped.
        output_size: size of ``h_t`` (default ``hidden_size``).
        linear: declare the new carry elementwise-affine in the old, ``a_t * carry + b_t``
            with ``a_t, b_t`` depending on the input only, so ``unroll(...,
            method="associative")`` may run the cell (``a_t`` and ``b_t`` are read off
            ``core`` with one forward-mode derivative; nothing is written twice).
        dtype: computation dtype: params and inputs are cast to it and the carry is kept in
            it (``None``: the run's dtype is promoted from the inputs and the params' leaves).
        config: the options the cell was made with (filled in by :func:`cell_factory`).
    """
    hidden_size = checks.size(hidden_size, "hidden_size")
    checks.float_dtype(dtype, "dtype")
    if not (callable(init) and callable(core)):
        raise TypeError(f"init and core must be callables; got {type(init).__name__} and "
                        f"{type(core).__name__}")
    _check_arity(init, "init", "init(key, input_size)", 2, core)
    _check_arity(core, "core", "core(params, carry, u_t)", 3, init)
    out_size = hidden_size if output_size is None else output_size
    out_size = checks.size(out_size, "output_size")
    takes_mask = _accepts(core, "h_mask")
    read = output or _identity
    compute_dtype = dtype

    def cast(params: Params) -> Params:
        if dtype is None:
            return params
        return jax.tree.map(lambda v: jnp.asarray(v).astype(dtype), params)

    def size(params: Params) -> int | None:
        return None if input_size is None else input_size(params)

    def project_(params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        expected = size(params)
        if expected is not None and (x.ndim < 1 or x.shape[-1] != expected):
            raise ValueError(
                f"x has shape {x.shape}: its last axis must be the {expected} input features "
                f"the params were initialised for (params: {_describe_tree(params)})"
            )
        if dtype is not None:
            x = x.astype(dtype)
        return x if project is None else project(cast(params), x)

    def run_core(params: Params, carry: Carry, u_t: Array, h_mask: Array | None):
        try:
            if takes_mask:
                out = core(cast(params), carry, u_t, h_mask=h_mask)
            else:
                if h_mask is not None:
                    carry = jax.tree.map(lambda c: c * h_mask.astype(c.dtype), carry)
                out = core(cast(params), carry, u_t)
        except (TypeError, ValueError) as error:
            if type(error) not in (TypeError, ValueError):  # JAX's own kinds pass unchanged
                raise
            # a shape slip surfaces inside the user's equations: say what core was given
            raise type(error)(
                f"core of cell {kind!r} (hidden_size {hidden_size}) failed on a carry "
                f"{_describe_tree(carry)} and u_t {list(jnp.shape(u_t))}: "
                f"{str(error).rstrip('.')}. Check hidden_size against the widths init makes "
                "and project returns") from error
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise TypeError(f"core of cell {kind!r} must return (carry, h_t) or (carry, h_t, "
                            f"gates); got {type(out).__name__}")
        return out if len(out) == 3 else (*out, {})

    def recur(params: Params, carry: Carry, u_t: Array, h_mask: Array | None = None):
        new_carry, h_t, _ = run_core(params, carry, u_t, h_mask)
        if jax.tree.structure(new_carry) != jax.tree.structure(carry):
            raise ValueError(f"core of cell {kind!r} returned a carry of structure "
                             f"{_describe_tree(new_carry)} for a carry {_describe_tree(carry)}: "
                             "the new carry must have the old one's structure")
        if jax.tree.map(jnp.shape, new_carry) != jax.tree.map(jnp.shape, carry):
            raise ValueError(f"core of cell {kind!r} returned a carry of shapes "
                             f"{_describe_tree(new_carry)} for a carry {_describe_tree(carry)} "
                             f"(hidden_size {hidden_size}): the new carry must keep the old "
                             "one's shapes")
        # Keeps the carry's dtype fixed across steps, as lax.scan requires.
        new_carry = jax.tree.map(lambda new, old: new.astype(old.dtype), new_carry, carry)
        return new_carry, h_t.astype(jax.eval_shape(read, carry).dtype)

    def gates(params: Params, carry: Carry, u_t: Array) -> dict[str, Array]:
        return run_core(params, carry, u_t, None)[2]

    def step(params: Params, carry: Carry, x_t: ArrayLike):
        return recur(params, carry, project_(params, x_t))

    def initial_carry_(batch_shape=(), *, params=None, key=None, dtype=None) -> Carry:
        # the cell's own computation dtype wins; else the run's; else the params'
        dt = compute_dtype or dtype or _params_dtype(params) or jnp.float32
        batch_shape = checks.batch_shape(batch_shape)
        if initial_carry is None:
            return jnp.zeros((*batch_shape, hidden_size), dt)
        return initial_carry(batch_shape, params=params, key=key, dtype=dt)

    def init_(key: PRNGKeyArray, input_size: int) -> Params:
        # an int seed would reach the user's initialisers and fail deep inside them
        checks.key(key, "key", required=True)
        return init(key, input_size)

    return Cell(
        init=init_, initial_carry=initial_carry_, project=project_, recur=recur, step=step,
        gates=gates, output=read, input_size=size, hidden_size=hidden_size, kind=kind,
        config=dict(config or {}), output_size=out_size, linear=bool(linear),
    )


def cell_factory(fn: Callable[..., Cell]) -> Callable[..., Cell]:
    """Decorates a function that returns a :func:`make_cell` cell so the cell records every
    argument it was made with (``cell.config``) and the function (``cell.factory``).

    ``cell.rebuild(forget_bias=2.0)`` then makes the same cell with one option changed, which
    is how :func:`gatedrnn.sweep` sweeps a cell's options (the new value may be traced). The
    shipped factories (:func:`rnn`, :func:`lstm`, :func:`gru`, ...) are decorated with it.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def factory(*args, **kwargs) -> Cell:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        cell = fn(*args, **kwargs)
        if not isinstance(cell, Cell):  # a stack or pair records its own arguments
            return cell
        options = {}
        for name, value in bound.arguments.items():
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                options.update(value)
            else:
                options[name] = value
        return cell._replace(config=options, factory=factory)

    return factory


def _identity(carry: Array) -> Array:
    return carry


#: The most rows per product (``prod(h.shape[:-1])``) for which :func:`recurrent_matmul`'s
#: derivative in ``h`` reads a transposed copy of ``w``, per ``jax.default_backend()``.
#: Measured on a 2-core CPU (docs/cells.md, benchmarks/RESULTS.md): the shipped cells'
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
    it for their recurrent products, and a cell of one's own may too (docs/cells.md).

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
    if rows > TRANSPOSED_COPY_ROWS.get(jax.default_backend(), -1):
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
    if w_x.shape[0] == 1 == jnp.shape(x)[-1] and jax.default_backend() in ONE_FEATURE_DOT:
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


@cell_factory
def rnn(
    hidden_size: int,
    *,
    activation: str | Callable[[Array], Array] = "tanh",
    recurrent_init: str | Callable = "orthogonal",
    recurrent_scale: float = 1.0,
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
    w_h     [H, H]      ``recurrent_init`` times ``recurrent_scale``
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
        dtype: computation dtype (``None``: promote inputs and params), e.g. ``jnp.bfloat16``.
        param_dtype: dtype of the initialised params.
    """
    hidden_size = _check_common(hidden_size, param_dtype, recurrent_scale=recurrent_scale)
    act = _resolve_activation(activation)

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h = jax.random.split(key)
        w_h = _recurrent_matrix(k_h, hidden_size, hidden_size, 1, recurrent_init, param_dtype)
        return {
            "w_x": _input_matrix(k_x, input_size, hidden_size, param_dtype),
            "w_h": w_h * jnp.asarray(recurrent_scale, param_dtype),
            "b": jnp.zeros((hidden_size,), param_dtype),
        }

    def core(params, h_tm1, u_t, h_mask=None):
        h_t = act(u_t + recurrent_matmul(_masked(h_tm1, h_mask), params["w_h"]))
        return h_t, h_t

    return make_cell(init, core, hidden_size=hidden_size, kind="rnn", project=_affine,
                     input_size=_rows_of_w_x, dtype=dtype)


@cell_factory
def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    peepholes: bool = False,
    coupled: bool = False,
    proj_size: int | None = None,
    recurrent_init: str | Callable = "orthogonal",
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The LSTM cell (Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000).

    Gates are packed in PyTorch's order ``i, f, g, o`` (``f, g, o`` when ``coupled``)::

        i_t = σ(u_i + h_{t-1} @ w_h[:, i] + p_i ⊙ c_{t-1})      (i_t = 1 - f_t if coupled)
        f_t = σ(u_f + h_{t-1} @ w_h[:, f] + p_f ⊙ c_{t-1})
        g_t = tanh(u_g + h_{t-1} @ w_h[:, g])
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        o_t = σ(u_o + h_{t-1} @ w_h[:, o] + p_o ⊙ c_t)
        h_t = o_t ⊙ tanh(c_t)                                 (no projection)
        h_t = (o_t ⊙ tanh(c_t)) @ w_hr                          (proj_size=P)

    where ``u = x_t @ w_x + b`` and the peephole terms ``p_*`` appear only with
    ``peepholes=True`` (diagonal peepholes, Gers & Schmidhuber 2000; the output gate peeks at
    the new cell state). With ``proj_size`` (the LSTMP of Sak et al. 2014, as
    ``torch.nn.LSTM(proj_size=P)``) the hidden state is projected to ``P < H`` features,
    which shrinks ``w_h`` and the output.

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, G*H]    LeCun normal
    w_h     [P, G*H]    ``recurrent_init`` per gate block (P = H without projection)
    b       [G*H]       zeros, forget block ``forget_bias`` (or chrono)
    w_hr    [H, P]      LeCun normal (``proj_size`` only)
    p_i     [H]         zeros (``peepholes`` and not ``coupled``)
    p_f     [H]         zeros (``peepholes``)
    p_o     [H]         zeros (``peepholes``)
    ======  ==========  =======================================================

    G is 4, or 3 when ``coupled``. The carry is :class:`LSTMCarry` ``(h [*B, P], c [*B, H])``;
    the output is ``h_t``. The forget bias is a trainable parameter's initial value
    (Jozefowicz et al. 2015), as Keras's ``unit_forget_bias``; no constant is added in the
    forward pass. Without peepholes the step's derivative is written by hand, one coefficient
    per tangent term (the same values; fewer arrays kept for the backward pass: docs/cells.md,
    "Speed").

    Args:
        hidden_size: H.
        forget_bias: initial forget-gate bias (1.0 by default; PyTorch's and Flax's cells
            start at 0).
        chrono_t_max: if given, chrono initialisation (Tallec & Ollivier 2018):
            ``b_f ~ log U[1, T_max - 1]`` and ``b_i = -b_f``; replaces ``forget_bias``.
        peepholes: add diagonal peephole connections ``p_i, p_f, p_o``.
        coupled: couple the input and forget gates, ``i = 1 - f`` (CIFG, Greff et al. 2017).
        proj_size: P, the width of the projected hidden state (``None``: no projection).
        recurrent_init: ``"orthogonal"`` (default), ``"identity"``, ``"normal"`` or a callable,
            applied to each gate's ``[P, H]`` block.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hidden_size = _check_common(hidden_size, param_dtype, forget_bias=forget_bias,
                                chrono_t_max=chrono_t_max)
    if proj_size is not None:
        proj_size = checks.size(proj_size, "proj_size")
        if proj_size >= hidden_size:  # as PyTorch: a projection shrinks the state
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}; got "
                             f"{proj_size}")
    names = ("f", "g", "o") if coupled else ("i", "f", "g", "o")
    num_gates = len(names)
    hh = hidden_size
    pp = hh if proj_size is None else proj_size

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b, k_r = jax.random.split(key, 4)
        blocks = {n: jnp.zeros((hh,), param_dtype) for n in names}
        if chrono_t_max is not None:
            blocks["f"] = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
            if not coupled:
                blocks["i"] = -blocks["f"]
        else:
            blocks["f"] = jnp.full((hh,), forget_bias, param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, num_gates * hh, param_dtype),
            "w_h": _recurrent_matrix(k_h, pp, hh, num_gates, recurrent_init, param_dtype),
            "b": jnp.concatenate([blocks[n] for n in names]),
        }
        if proj_size is not None:
            params["w_hr"] = jax.nn.initializers.lecun_normal()(k_r, (hh, pp), param_dtype)
        if peepholes:
            for n in ("i", "f", "o"):
                if n in names:
                    params[f"p_{n}"] = jnp.zeros((hh,), param_dtype)
        return params

    def core(params, carry, u_t, h_mask=None):
        h_tm1, c_tm1 = carry
        pre_all = u_t + recurrent_matmul(_masked(h_tm1, h_mask), params["w_h"])
        if peepholes:
            pre = dict(zip(names, _split(pre_all, num_gates)))
            pre["f"] = pre["f"] + params["p_f"] * c_tm1
            if not coupled:
                pre["i"] = pre["i"] + params["p_i"] * c_tm1
            f_t = jax.nn.sigmoid(pre["f"])
            i_t = 1.0 - f_t if coupled else jax.nn.sigmoid(pre["i"])
            g_t = jnp.tanh(pre["g"])
            c_t = f_t * c_tm1 + i_t * g_t
            o_t = jax.nn.sigmoid(pre["o"] + params["p_o"] * c_t)
            h_t = o_t * jnp.tanh(c_t)
        else:
            i_t, f_t, g_t, o_t, _, _ = _lstm_gates(pre_all, c_tm1, coupled)
            h_t, c_t = _lstm_state(pre_all, c_tm1, coupled)
        if proj_size is not None:
            h_t = recurrent_matmul(h_t, params["w_hr"])
        gates = {"input": i_t, "forget": f_t, "output": o_t, "candidate": g_t}
        return LSTMCarry(h_t, c_t), h_t, gates

    def initial_carry(batch_shape, *, dtype, **_):
        return LSTMCarry(jnp.zeros((*batch_shape, pp), dtype), jnp.zeros((*batch_shape, hh), dtype))

    return make_cell(init, core, hidden_size=hh, kind="lstm", project=_gated_affine,
                     initial_carry=initial_carry, output=_lstm_h, input_size=_rows_of_w_x,
                     output_size=pp, dtype=dtype)


def _lstm_h(carry: LSTMCarry) -> Array:
    return carry.h


def _lstm_gates(pre: Array, c_tm1: Array, coupled: bool) -> tuple:
    """``(i, f, g, o, c_t, tanh(c_t))`` from the packed pre-activations ``[*B, G*H]``."""
    if coupled:
        f_pre, g_pre, o_pre = _split(pre, 3)
        f_t = jax.nn.sigmoid(f_pre)
        i_t = 1.0 - f_t
    else:
        i_pre, f_pre, g_pre, o_pre = _split(pre, 4)
        i_t, f_t = jax.nn.sigmoid(i_pre), jax.nn.sigmoid(f_pre)
    g_t, o_t = jnp.tanh(g_pre), jax.nn.sigmoid(o_pre)
    c_t = f_t * c_tm1 + i_t * g_t
    return i_t, f_t, g_t, o_t, c_t, jnp.tanh(c_t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _lstm_state(pre: Array, c_tm1: Array, coupled: bool) -> tuple[Array, Array]:
    """The LSTM's ``(o ⊙ tanh(c_t), c_t)`` from its pre-activations, with a derivative written
    by hand (below) for speed, not for a different value."""
    _, _, _, o_t, c_t, tanh_c = _lstm_gates(pre, c_tm1, coupled)
    return o_t * tanh_c, c_t


@_lstm_state.defjvp
def _lstm_state_jvp(coupled: bool, primals: tuple, tangents: tuple) -> tuple:
    # Autodiff of the plain equations keeps 11 per-step arrays besides h_{t-1} for the
    # backward pass (gates, tanh(c_t), copies of them, c_{t-1}); one coefficient per tangent
    # term keeps 6, and a CPU step spends much of its time writing and reading them back
    # (docs/performance.md). The tangent map is linear in (d_pre, d_c_tm1):
    #   dc_t = f dc_{t-1} + Σ_gates a_gate d_pre_gate,  dh_t = o (1 - tanh² c_t) dc_t + a_o d_pre_o
    pre, c_tm1 = primals
    d_pre, d_c_tm1 = tangents
    i_t, f_t, g_t, o_t, c_t, tanh_c = _lstm_gates(pre, c_tm1, coupled)
    a_f = (c_tm1 - g_t if coupled else c_tm1) * f_t * (1.0 - f_t)
    a_g = i_t * (1.0 - g_t * g_t)
    a_o = tanh_c * o_t * (1.0 - o_t)
    if coupled:
        d_f, d_g, d_o = _split(d_pre, 3)
        d_c = f_t * d_c_tm1 + a_f * d_f + a_g * d_g
    else:
        d_i, d_f, d_g, d_o = _split(d_pre, 4)
        d_c = f_t * d_c_tm1 + (g_t * i_t * (1.0 - i_t)) * d_i + a_f * d_f + a_g * d_g
    d_h = (o_t * (1.0 - tanh_c * tanh_c)) * d_c + a_o * d_o
    return (o_t * tanh_c, c_t), (d_h, d_c)


@cell_factory
def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    update_bias: float = 0.0,
    chrono_t_max: float | None = None,
    recurrent_init: str | Callable = "orthogonal",
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
    step's derivative is written by hand, as the LSTM's (the same values; docs/cells.md).

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, 3H]     LeCun normal
    w_h     [H, 3H]     ``recurrent_init`` per gate block
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
            applied to each gate's ``[H, H]`` block.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hh = hidden_size = _check_common(hidden_size, param_dtype, update_bias=update_bias,
                                     chrono_t_max=chrono_t_max)

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b = jax.random.split(key, 3)
        if chrono_t_max is not None:
            b_z = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
        else:
            b_z = jnp.full((hh,), update_bias, param_dtype)
        zeros_h = jnp.zeros((hh,), param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, 3 * hh, param_dtype),
            "w_h": _recurrent_matrix(k_h, hh, hh, 3, recurrent_init, param_dtype),
            "b": jnp.concatenate([zeros_h, b_z, zeros_h]),
        }
        if reset_after:
            params["b_hn"] = zeros_h
        return params

    def core(params, h_tm1, u_t, h_mask=None):
        hm = _masked(h_tm1, h_mask)
        if reset_after:
            w_t = recurrent_matmul(hm, params["w_h"])
            r_t, z_t, n_t, _ = _gru_gates(u_t, w_t, params["b_hn"], h_tm1)
            h_t = _gru_state(u_t, w_t, params["b_hn"], h_tm1)
        else:
            u_r, u_z, u_n = _split(u_t, 3)
            w_r, w_z = _split(recurrent_matmul(hm, params["w_h"][:, : 2 * hh]), 2)
            r_t = jax.nn.sigmoid(u_r + w_r)
            z_t = jax.nn.sigmoid(u_z + w_z)
            n_t = jnp.tanh(u_n + recurrent_matmul(r_t * hm, params["w_h"][:, 2 * hh :]))
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
def min_gru(hidden_size: int, *, dtype: Any = None, param_dtype: Any = jnp.float32) -> Cell:
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
    """
    hidden_size = _check_common(hidden_size, param_dtype)

    def core(params, h_tm1, u_t):
        h_t = _min_gru_state(u_t, h_tm1)
        return h_t, h_t, {"update": _min_gru_gates(u_t)[0]}

    return _input_gated_cell("min_gru", 2, hidden_size, core, dtype, param_dtype)


@cell_factory
def min_lstm(hidden_size: int, *, dtype: Any = None, param_dtype: Any = jnp.float32) -> Cell:
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
    ``"input"``.
    """
    hidden_size = _check_common(hidden_size, param_dtype)

    def core(params, h_tm1, u_t):
        h_t = _min_lstm_state(u_t, h_tm1)
        f_t, i_t = _min_lstm_gates(u_t)[:2]
        return h_t, h_t, {"forget": f_t, "input": i_t}

    return _input_gated_cell("min_lstm", 3, hidden_size, core, dtype, param_dtype)


@cell_factory
def lru(
    hidden_size: int,
    *,
    complex_state: bool = True,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """A diagonal linear recurrent unit (the LRU of Orvieto et al. 2023, eqs. 3-7).

    The state ``s [*B, N]`` (N = ``hidden_size``) evolves elementwise::

        λ = exp(-exp(nu_log) + i exp(theta_log))      (real: λ = exp(-exp(nu_log)))
        s_t = λ ⊙ s_{t-1} + exp(gamma_log) ⊙ (x_t @ (b_re + i b_im))
        h_t = [Re s_t, Im s_t]                         (real: h_t = s_t)

    ``|λ| = exp(-exp(nu_log)) < 1`` for any parameter values (the stable exponential
    parameterisation); ``gamma_log`` starts at ``log sqrt(1 - |λ|^2)`` (the normalisation).
    The paper's readout ``Re(C s_t) = [C_re, -C_im] @ [Re s_t; Im s_t]`` is a linear map of
    ``h_t``, so it is the next layer's input projection here (as is its skip ``D x_t``).

    ==========  ==========  =====================================================
    name        shape       init
    ==========  ==========  =====================================================
    nu_log      [N]         ``|λ|`` uniform on the ring ``[r_min, r_max]``
    theta_log   [N]         ``log(max_phase * U[0, 1])`` (complex only)
    gamma_log   [N]         ``log sqrt(1 - |λ|^2)``
    b_re        [I, N]      ``N(0, 1 / (2 I))`` (``N(0, 1 / I)`` when real)
    b_im        [I, N]      ``N(0, 1 / (2 I))`` (complex only)
    ==========  ==========  =====================================================

    The carry is the complex (or real) state; the output has ``2N`` features (``N`` real).
    Linear in the state: ``unroll(..., options=ScanOptions(method="associative"))`` runs it
    as a parallel scan.

    Args:
        hidden_size: N, the state size.
        complex_state: complex diagonal (the paper) or real diagonal.
        r_min: the inner radius of the ring of initial eigenvalue magnitudes.
        r_max: its outer radius (close to 1: long memory).
        max_phase: initial phases are uniform in ``[0, max_phase]``.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params (real).
    """
    hidden_size = _check_common(hidden_size, param_dtype, max_phase=max_phase)
    checks.real(r_min, "r_min", at_least=0.0)
    checks.real(r_max, "r_max", below=1.0)
    if not r_min < r_max:
        raise ValueError(f"need 0 <= r_min < r_max < 1; got r_min={r_min!r}, r_max={r_max!r}")
    n = hidden_size

    def magnitude_log(params):  # log |λ| = -exp(nu_log)
        return -jnp.exp(params["nu_log"])

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        input_size = checks.size(input_size, "input_size")
        k_nu, k_th, k_re, k_im = jax.random.split(key, 4)
        u = jax.random.uniform(k_nu, (n,), jnp.float32)
        nu_log = jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))
        scale = (2 * input_size if complex_state else input_size) ** -0.5
        params = {"nu_log": nu_log,
                  "gamma_log": 0.5 * jnp.log1p(-jnp.exp(-2.0 * jnp.exp(nu_log))),
                  "b_re": scale * jax.random.normal(k_re, (input_size, n))}
        if complex_state:
            params["theta_log"] = jnp.log(max_phase * jax.random.uniform(k_th, (n,)))
            params["b_im"] = scale * jax.random.normal(k_im, (input_size, n))
        return jax.tree.map(lambda v: v.astype(param_dtype), params)

    def project(params, x):
        u = x @ params["b_re"]
        if complex_state:
            u = jax.lax.complex(u, x @ params["b_im"])
        return u * jnp.exp(params["gamma_log"])

    def core(params, s_tm1, u_t):
        if complex_state:
            lam = jnp.exp(jax.lax.complex(magnitude_log(params), jnp.exp(params["theta_log"])))
        else:
            lam = jnp.exp(magnitude_log(params))
        s_t = lam * s_tm1 + u_t
        return s_t, output(s_t)

    def output(s):
        return jnp.concatenate([s.real, s.imag], axis=-1) if complex_state else s

    def initial_carry(batch_shape, *, dtype, **_):
        dt = jnp.result_type(dtype, jnp.complex64) if complex_state else dtype
        return jnp.zeros((*batch_shape, n), dt)

    return make_cell(init, core, hidden_size=n, kind="lru", project=project,
                     initial_carry=initial_carry, output=output,
                     input_size=lambda p: p["b_re"].shape[0],
                     output_size=2 * n if complex_state else n, linear=True, dtype=dtype)


def num_params(params: Any) -> int:
    """Total number of scalar parameters in a params pytree."""
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))


__all__ = ["ACTIVATIONS", "Cell", "LSTMCarry", "Layer", "ONE_FEATURE_DOT", "SequenceLayer",
           "StepLayer", "TRANSPOSED_COPY_ROWS", "cell_factory", "gru", "lru", "lstm", "make_cell",
           "min_gru", "min_lstm", "num_params", "recurrent_matmul", "rnn"]
