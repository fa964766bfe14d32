"""The cell protocol and the constructor every cell is made with: :class:`Cell`,
:func:`make_cell`, :func:`cell_factory`, and the initialisers the shipped families share.

Every factory returns a :class:`Cell`, an immutable value (a NamedTuple of pure functions and
static configuration, in the style of optax's ``GradientTransformation``). A cell never holds
parameters: ``init`` makes a flat dict of arrays, and every other function takes it explicitly.

The shipped cells share one input half: ``project(params, x) = x @ w_x + b`` (every bias that
sits outside a gated product lives in ``b``), so :func:`gatedrnn.unroll` can apply it to all
time steps in one matmul before the scan. ``recur`` is the hidden half, and ``step`` is
``recur`` after ``project``, never written twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from gatedrnn import checks

Params = Any
Carry = Any

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
        parallel: the cell's whole-sequence form, which
            ``unroll(..., options=ScanOptions(method="parallel"))`` runs (see
            :func:`make_cell`), or ``None``.
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
    parallel: Callable[..., tuple[Carry, Array]] | None = None

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


def _check_heads(heads: Any, *widths: tuple[str, int]) -> int:
    """``heads`` as an int that divides every named width."""
    heads = checks.size(heads, "heads")
    for name, width in widths:
        if width % heads:
            raise ValueError(f"heads={heads} must divide {name}={width}: each head takes "
                             f"{name} / heads features")
    return heads


def _recurrent_weights(
    key: PRNGKeyArray, rows: int, hidden_size: int, num_gates: int, scheme: str | Callable,
    dtype: Any, heads: int = 1,
) -> Array:
    """A cell's recurrent matrix: dense ``[rows, G*H]`` (:func:`_recurrent_matrix`) for one
    head; for ``heads = n`` its diagonal blocks ``[n, rows/n, G, H/n]``, each gate's block of
    each head initialised on its own (read by :func:`gatedrnn.cells.products.recurrent_product`)."""
    if heads == 1:
        return _recurrent_matrix(key, rows, hidden_size, num_gates, scheme, dtype)
    r, d = rows // heads, hidden_size // heads
    return jnp.stack([_recurrent_matrix(k, r, d, num_gates, scheme, dtype).reshape(r, num_gates, d)
                      for k in jax.random.split(key, heads)])


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
    parallel: Callable[..., tuple] | None = None,
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
        parallel: the cell's whole-sequence form, ``parallel(params, carry, us, *, valid,
            resets, carry_0) -> (carry_T, hs)``: from the carry before the first step and the
            projected time-major inputs ``us [T, *B, ...]``, the carry after the last step and
            every step's ``h_t`` ``[T, *B, output_size]``, equal to ``T`` steps of ``core``
            (as the mLSTM's quadratic form, :func:`gatedrnn.mlstm`). ``valid [T, *B]``
            (or ``None``: all) marks the steps to take: an invalid step leaves the carry as it
            was (its ``h_t`` is ignored); ``resets [T, *B]`` (or ``None``) marks steps whose
            incoming carry is replaced by ``carry_0``. ``unroll(..., method="parallel")`` runs
            it; a test should check it against ``method="sequential"``.
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
        parallel=None if parallel is None else (
            lambda params, carry, us, **masks: parallel(cast(params), carry, us, **masks)),
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


def num_params(params: Any) -> int:
    """Total number of scalar parameters in a params pytree."""
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))

