"""Gradient-flow instruments: how a signal's gradient fares as it travels back through time.

Backpropagation through a recurrence multiplies one Jacobian per step,
``dL/dh_t = dL/dh_T · J_T ··· J_{t+1}`` with ``J_k = d h_k / d h_{k-1}`` (Pascanu et al. 2013,
eq. 5), so norms shrink or grow geometrically with the lag ``T - t``. A vanilla RNN's
``dL/dh_0`` at ``T = 100`` is around ``1e-25``, below what float32 can square. Every function
here therefore keeps its running product *normalised* and carries the scale separately as a
logarithm: results are ``log10`` norms that stay finite at any lag, in float32 or float64.
Inputs are cast to float64 when ``jax_enable_x64`` is on. Each result says which numerics it
used in its ``numerics`` field.

Everything is a pure function of ``params`` and ``xs``: it jit-compiles, vmaps over seeds
(stacked params), and can run as a metric during training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float

from gatedrnn import checks
from gatedrnn.cells import make_cell
from gatedrnn.scan import _check_lengths, check_inputs, unroll

_LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class Norms:
    """Norms kept as base-10 logarithms, so that they never underflow.

    Attributes:
        log10: ``log10`` of the norms (``-inf`` only for an exactly zero norm).
        components: for :func:`gradient_norms` with ``components=True``, carry component name
            (``"h"``, ``"c"``) -> ``log10`` norms of that component alone; else empty.
        numerics: how they were computed, e.g. ``"float32, log-space products"``.
    """

    log10: Array
    components: dict[str, Array] = dataclasses.field(default_factory=dict)
    numerics: str = ""

    @property
    def value(self) -> Array:
        """The norms themselves, ``10 ** log10`` (underflows to 0 where the dtype ends)."""
        return 10.0**self.log10


jax.tree_util.register_dataclass(
    Norms, data_fields=["log10", "components"], meta_fields=["numerics"]
)


@dataclasses.dataclass(frozen=True)
class GateStats:
    """Gate activations along a sequence and how saturated they are.

    Attributes:
        values: gate name -> ``[B, T, H]`` activations in ``(0, 1)``.
        saturated_low: gate name -> ``[T]`` fraction of units (over batch and H) below
            ``low``.
        saturated_high: gate name -> ``[T]`` fraction above ``high``.
    """

    values: dict[str, Array]
    saturated_low: dict[str, Array]
    saturated_high: dict[str, Array]


jax.tree_util.register_dataclass(
    GateStats, data_fields=["values", "saturated_low", "saturated_high"], meta_fields=[]
)


def _cell_view(layer, params, xs, index):
    """The stepwise layer whose carry a diagnostic follows, with its params and inputs.

    A cell is itself. A stack with ``layer=i`` is its layer ``i``, driven by the outputs of
    the layers below it (layer ``i``'s carry never feeds back into them, so its Jacobians are
    its own). A stack of cells without ``layer`` is one cell whose carry is the tuple of every
    layer's carry (``Stack.step``), so the norms follow all layers together.
    """
    if index is not None:
        layers = getattr(layer, "layers", None)
        if layers is None:
            raise ValueError(f"layer={index!r} selects a layer of a stack; got a "
                             f"{type(layer).__name__}")
        if (not isinstance(index, (int, np.integer)) or isinstance(index, bool)
                or not 0 <= index < len(layers)):
            raise ValueError(f"layer must be an int in [0, {len(layers) - 1}]; got {index!r}")
        if index > 0:
            below = layer.rebuild(layers=layers[:index])
            xs = unroll(below, params[:index], xs)[1]
        return _cell_view(layers[index], params[index], xs, None)
    if hasattr(layer, "recur") and hasattr(layer, "project"):
        return layer, params, xs
    if not (hasattr(layer, "step") and hasattr(layer, "output")):
        raise TypeError(f"cell: diagnostics follow a carry step by step, and a "
                        f"{type(layer).__name__} needs the whole sequence; pass layer=i to "
                        "follow one layer of a stack")

    def core(p, carry, x_t):
        return layer.step(p, carry, x_t)

    def initial_carry(batch_shape, *, params, key, dtype):
        return layer.initial_carry(batch_shape, params=params, key=key, dtype=dtype)

    view = make_cell(layer.init, core, hidden_size=layer.output_size,
                     kind=f"steps({getattr(layer, 'kind', type(layer).__name__)})",
                     initial_carry=initial_carry, output=layer.output,
                     input_size=layer.input_size)
    return view, params, xs


def _prepare(cell, params, xs: ArrayLike, carry, layer=None):
    """Validates ``xs [B, T, I]``, picks the carry to follow (:func:`_cell_view`), casts to
    float64 when enabled, builds the initial carry."""
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape [batch, time, features]; got shape {xs.shape}")
    if xs.shape[1] == 0:
        raise ValueError(f"xs must have at least one time step; got shape {xs.shape}")
    check_inputs(cell, params, xs)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    def widen(tree):  # at least the diagnostics' dtype; complex leaves stay complex
        return jax.tree.map(
            lambda v: jnp.asarray(v).astype(jnp.result_type(dtype, jnp.result_type(v))), tree)

    cell, params, xs = _cell_view(cell, widen(params), xs.astype(dtype), layer)
    if carry is None:
        carry = cell.initial_carry(xs.shape[:1], params=params, dtype=dtype)
    else:
        _check_given_carry(carry, cell, params, xs.shape[0], dtype)
    carry = widen(carry)
    numerics = f"{jnp.dtype(dtype).name}, log-space products"
    return cell, params, xs, carry, numerics


def _check_loss_fn(loss_fn) -> None:
    """``loss_fn`` must be a callable of the outputs alone, ``ys -> scalar``."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable ys [B, T, H] -> scalar loss, e.g. "
                        f"lambda ys: ys[:, -1].sum(); got {type(loss_fn).__name__}")
    if checks.takes_positional(loss_fn, 1) is False:
        raise TypeError(f"loss_fn must take one argument, the outputs ys [B, T, H]; got "
                        f"{checks.signature_of(loss_fn)}: close over anything else "
                        "(targets, params), e.g. lambda ys: loss(ys, targets)")


def _check_given_carry(carry, cell, params, batch: int, dtype) -> None:
    """A carry given to a diagnostic must have the structure and shapes of the cell's
    ``initial_carry`` (an LSTM's is ``(h, c)``, not one ``[B, H]`` array)."""
    expected = jax.eval_shape(lambda: cell.initial_carry((batch,), params=params,
                                                         dtype=dtype))
    shapes = jax.tree.map(jnp.shape, carry)
    want = jax.tree.map(lambda v: v.shape, expected)
    if jax.tree.structure(carry) != jax.tree.structure(expected) or shapes != want:
        raise ValueError(f"carry must have the structure and shapes of the cell's "
                         f"initial_carry(({batch},)): expected {_describe(want)}, got "
                         f"{_describe(shapes)}")


def _describe(shapes) -> str:
    return str(jax.tree.map(list, shapes, is_leaf=lambda v: type(v) is tuple))


def tree_norm(tree) -> Array:
    """The L2 norm of all leaves of a pytree taken together (complex leaves by modulus).

    Computed as ``s * sqrt(sum((x / s)^2))`` with ``s`` the largest modulus, so it overflows
    only where the norm itself does (plain squares overflow float32 above 1.8e19); NaN when
    any entry is NaN."""
    leaves = [jnp.abs(leaf) for leaf in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros(())
    scale = jnp.max(jnp.stack([jnp.max(leaf, initial=0.0) for leaf in leaves]))
    safe = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1.0)
    total = sum(jnp.sum(jnp.square(leaf / safe)) for leaf in leaves)
    return jnp.where(jnp.isfinite(scale), safe * jnp.sqrt(total), scale)


def _unit(tree):
    """``tree`` as a unit-norm tree and its log-norm (``-inf`` for zero, NaN for NaN)."""
    n = tree_norm(tree)
    return jax.tree.map(lambda x: x / jnp.where(n > 0, n, 1.0), tree), jnp.log(n)


def _normalised_sum(a, log_a, b, log_b):
    """``exp(log_a) * a + exp(log_b) * b`` as a unit-norm tree and its log-norm.

    A NaN on either side makes the result NaN and an infinite one ``+inf``: neither may be
    reported as a finite (or zero) gradient."""
    a, norm_a = _unit(a)
    b, norm_b = _unit(b)
    log_a, log_b = log_a + norm_a, log_b + norm_b
    m = jnp.maximum(log_a, log_b)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w_a = jnp.where(jnp.isfinite(log_a), jnp.exp(log_a - m), 0.0)
    w_b = jnp.where(jnp.isfinite(log_b), jnp.exp(log_b - m), 0.0)
    v, log_n = _unit(jax.tree.map(lambda x, y: x * w_a + y * w_b, a, b))
    log = m + log_n
    log = jnp.where((log_a == jnp.inf) | (log_b == jnp.inf), jnp.inf, log)
    return v, jnp.where(jnp.isnan(log_a) | jnp.isnan(log_b), jnp.nan, log)


def _component_names(carry) -> tuple[str, ...]:
    """One name per carry leaf, from its path: ``"h"``, ``"c"``, ``"carry.h"``, ``"mask"``."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(carry)[0]]
    return tuple(jax.tree_util.keystr(p).lstrip(".") or "h" for p in paths)


def gradient_norms(
    cell,
    params,
    xs: Float[ArrayLike, "B T I"],
    loss_fn,
    *,
    carry=None,
    lengths=None,
    components: bool = False,
    layer: int | None = None,
) -> Norms:
    """``||dL / d carry_t||`` for every step ``t``, over the whole batch: ``log10 [T]``.

    ``carry_t`` is the carry after step ``t`` and ``L = loss_fn(ys)`` with the outputs
    ``ys [B, T, H]`` of ``gr.unroll(cell, params, xs, carry, lengths=lengths)``. The
    gradient is the total derivative: through ``y_t`` itself and through every later step,

        g_{T-1} = ∂L/∂carry_{T-1},   g_t = ∂L/∂carry_t|direct + J_{t+1}^T g_{t+1},

    computed in one reverse scan of vector-Jacobian products (one backward pass for all
    ``t``), with ``g_t`` kept at unit norm and its scale as a logarithm, so ``log10`` stays
    finite for lags of thousands of steps in float32. It equals differentiating ``L`` with
    respect to a zero perturbation added to each step's carry.

    Works for any stepwise layer, and for stacks (see ``layer``).

    Args:
        cell: the cell, or a stack of cells.
        params: its params.
        xs: inputs ``[B, T, I]``.
        loss_fn: ``loss_fn(ys) -> scalar`` on the outputs ``[B, T, H]``.
        carry: initial carry (zeros by default).
        lengths: optional ``[B]`` valid lengths, as in :func:`gatedrnn.unroll`.
        components: also report each carry component (LSTM ``h`` and ``c``) on its own.
        layer: for a stack, follow layer ``layer``'s carry alone (driven by the layers
            below it; ``loss_fn`` then sees that layer's outputs); ``None`` follows every
            layer's carry together (a stack of cells).

    Returns:
        :class:`Norms` with ``log10 [T]`` and, with ``components``, ``components[name] [T]``.
    """
    _check_loss_fn(loss_fn)
    cell, params, xs, carry0, numerics = _prepare(cell, params, xs, carry, layer)
    xs_tm = jnp.moveaxis(xs, 1, 0)
    num_steps = xs_tm.shape[0]
    if lengths is not None:
        lengths = _check_lengths(lengths, xs.shape[:1], num_steps)
    us = cell.project(params, xs_tm)
    steps = jnp.arange(num_steps)

    def advance(c_tm1, u_t, t):
        c_t, _ = cell.recur(params, c_tm1, u_t)
        if lengths is None:
            return c_t
        valid = (t < lengths)[:, None]
        return jax.tree.map(lambda n, o: jnp.where(valid, n, o), c_t, c_tm1)

    def output(c_t, t):
        y_t = cell.output(c_t)
        return y_t if lengths is None else jnp.where((t < lengths)[:, None], y_t, 0.0)

    def forward(c_tm1, inp):
        c_t = advance(c_tm1, *inp)
        return c_t, (c_t, output(c_t, inp[1]))

    _, (cs, ys) = jax.lax.scan(forward, carry0, (us, steps))
    def loss(ys):
        return loss_fn(jnp.moveaxis(ys, 0, 1))

    out = jax.eval_shape(loss, ys)
    if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype,
                                                                          jnp.floating)):
        raise TypeError(f"loss_fn must return a float scalar for outputs ys [B, T, H]; got "
                        f"{jax.tree.map(lambda v: f'{v.dtype}{list(v.shape)}', out)}")
    dl_dys = jax.grad(loss)(ys)
    direct = jax.vmap(lambda c, t, g: jax.vjp(lambda c: output(c, t), c)[1](g)[0])(
        cs, steps, dl_dys)

    def backward(state, inp):
        v, log_s = state
        c_t, u_next, t_next, d_t = inp
        a = jax.vjp(lambda c: advance(c, u_next, t_next), c_t)[1](v)[0]
        state = _normalised_sum(a, log_s, d_t, jnp.zeros((), log_s.dtype))
        return state, state

    def head(tree):
        return jax.tree.map(lambda leaf: leaf[:-1], tree)

    last = jax.tree.map(lambda leaf: leaf[-1], direct)
    no_term = jnp.asarray(-jnp.inf, xs.dtype)
    v_last, log_last = _normalised_sum(last, jnp.zeros((), xs.dtype), last, no_term)
    _, (vs, logs) = jax.lax.scan(
        backward, (v_last, log_last), (head(cs), us[1:], steps[1:], head(direct)), reverse=True)
    vs = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), vs, v_last)
    logs = jnp.concatenate([logs, log_last[None]])
    parts = {}
    if components:
        for name, leaf in zip(_component_names(carry0), jax.tree.leaves(vs)):
            norm = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=tuple(range(1, leaf.ndim))))
            parts[name] = (logs + jnp.log(norm)) / _LN10
    return Norms(logs / _LN10, parts, numerics)


def _real_ravel(carry):
    """The carry as one real vector, and its inverse: a complex carry (an LRU's state) is
    the real system of its real and imaginary parts, whose Jacobians are real."""
    flat, unravel = ravel_pytree(carry)
    if not jnp.iscomplexobj(flat):
        return flat, unravel
    n = flat.shape[0]
    return jnp.concatenate([flat.real, flat.imag]), lambda v: unravel(
        jax.lax.complex(v[:n], v[n:]))


def _flat_trajectory(cell, params, xs_e, carry_e):
    """One example: flat step function, projected inputs and flat carries before each step."""
    flat0, unravel = _real_ravel(carry_e)
    us = cell.project(params, xs_e)

    def f(v, u_t):
        return _real_ravel(cell.recur(params, unravel(v), u_t)[0])[0]

    def body(v, u_t):
        return f(v, u_t), v

    _, prev = jax.lax.scan(body, flat0, us)
    return f, us, prev


def _per_example(fn, cell, params, xs, carry):
    return jax.vmap(lambda x_e, c_e: fn(*_flat_trajectory(cell, params, x_e, c_e)))(xs, carry)


def jacobian_norms(
    cell, params, xs: Float[ArrayLike, "B T I"], *, carry=None, ord: Any = 2,
    layer: int | None = None,
) -> Norms:
    """``||d carry_{T-1} / d carry_t||`` for each example and step: ``log10 [B, T]``.

    The Jacobian of the last carry with respect to the carry after step ``t`` is the product
    ``J_{T-1} ··· J_{t+1}`` of one-step Jacobians ``J_k = d carry_k / d carry_{k-1}`` (the
    whole carry flattened, e.g. ``[h, c]`` for the LSTM); the last entry is the identity's
    norm (1 for ``ord=2``). The product is renormalised every step and its scale kept in log
    space.

    Args:
        cell: the cell (or a stack: see ``layer``); params: its params; xs: ``[B, T, I]``;
            carry: initial carry.
        ord: ``2`` (spectral norm, the default) or ``"fro"`` (Frobenius).
        layer: for a stack, follow layer ``layer``'s carry alone; ``None`` follows the
            whole stack's carry (every layer's, flattened together).
    """
    if ord not in (2, "fro"):
        raise ValueError(f"ord must be 2 or 'fro'; got {ord!r}")
    cell, params, xs, carry0, numerics = _prepare(cell, params, xs, carry, layer)

    def one(f, us, prev):
        n = prev.shape[-1]

        def body(state, inp):
            p, log_s = state
            v_t, u_next = inp
            p = p @ jax.jacfwd(f)(v_t, u_next)
            scale = jnp.linalg.norm(p)
            p = p / jnp.where(scale > 0, scale, 1.0)
            log_s = log_s + jnp.log(scale)
            return (p, log_s), log_s + jnp.log(jnp.linalg.norm(p, ord))

        eye = jnp.eye(n, dtype=prev.dtype)
        _, logs = jax.lax.scan(body, (eye, jnp.zeros((), prev.dtype)), (prev[1:], us[1:]),
                               reverse=True)
        return jnp.concatenate([logs, jnp.log(jnp.linalg.norm(eye, ord))[None]])

    return Norms(_per_example(one, cell, params, xs, carry0) / _LN10, {}, numerics)


def jacobian_spectrum(
    cell, params, xs: Float[ArrayLike, "B T I"], *, carry=None, layer: int | None = None
) -> Float[Array, "B T N"]:
    """Singular values of every one-step Jacobian ``d carry_t / d carry_{t-1}``: ``[B, T, N]``.

    N is the flattened carry size (``2H`` for the LSTM), values in descending order. Values
    above 1 expand a perturbation along their direction; the largest one bounds the per-step
    gradient growth (Pascanu et al. 2013).
    """
    cell, params, xs, carry0, _ = _prepare(cell, params, xs, carry, layer)

    def one(f, us, prev):
        return jax.lax.map(lambda a: jnp.linalg.svd(jax.jacfwd(f)(*a), compute_uv=False),
                           (prev, us))

    return _per_example(one, cell, params, xs, carry0)


def lyapunov_exponents(
    cell, params, xs: Float[ArrayLike, "B T I"], *, k: int | None = None, carry=None,
    layer: int | None = None,
) -> Float[Array, "B K"]:
    """The leading ``k`` Lyapunov exponents of the carry dynamics driven by ``xs``: ``[B, k]``.

    QR method (Benettin et al. 1980): tangent vectors ``Q_0 = I[:, :k]`` are pushed through
    each one-step Jacobian and re-orthonormalised, ``J_t Q_{t-1} = Q_t R_t``; the exponents
    are ``(1/T) Σ_t log |diag R_t|``, in nats per step, sorted in descending order. A linear
    RNN with ``w_h = a I`` has every exponent ``log a``; negative exponents mean perturbations
    (and gradients) die out.
    """
    cell, params, xs, carry0, _ = _prepare(cell, params, xs, carry, layer)
    n = _real_ravel(jax.tree.map(lambda v: v[0], carry0))[0].shape[0]
    k = n if k is None else k
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the flattened carry size); got {k!r}")

    def one(f, us, prev):
        def body(q, inp):
            z = jax.jacfwd(f)(*inp) @ q
            q, r = jnp.linalg.qr(z)
            return q, jnp.log(jnp.abs(jnp.diagonal(r)))

        q0 = jnp.eye(n, k, dtype=prev.dtype)
        _, logs = jax.lax.scan(body, q0, (prev, us))
        return jnp.sort(jnp.mean(logs, axis=0))[::-1]

    return _per_example(one, cell, params, xs, carry0)


def gate_activations(
    cell, params, xs: Float[ArrayLike, "B T I"], *, carry=None, low: float = 0.1,
    high: float = 0.9, layer: int | None = None,
) -> GateStats:
    """Every sigmoid gate's activation at every step, and the fraction saturated.

    Gates are the cell's own: LSTM ``"input"``, ``"forget"``, ``"output"``; GRU ``"reset"``,
    ``"update"``; none for the vanilla RNN. A stack without ``layer`` gives every layer's
    gates, named ``"layer i <gate>"`` (the same values as ``layer=i``). A forget (LSTM) or
    update (GRU) gate near 1 keeps the state, and with it the gradient: ``d c_t / d c_{t-1}``
    contains ``diag(f_t)``.

    Returns:
        :class:`GateStats` with ``values[name] [B, T, H]`` and ``[T]`` fractions of units
        below ``low`` and above ``high``.
    """
    checks.real(low, "low", at_least=0.0)
    checks.real(high, "high", below=1.0 + 1e-12)
    if not low < high:
        raise ValueError(f"low must be below high; got low={low!r}, high={high!r}")
    layers = getattr(cell, "layers", None)
    if layer is None and layers is not None:
        # a whole stack: every layer's gates, named by layer, each driven by the layers below
        merged = GateStats({}, {}, {})
        for i in range(len(layers)):
            stats = gate_activations(cell, params, xs, carry=None if carry is None else carry[i],
                                     low=low, high=high, layer=i)
            for field in ("values", "saturated_low", "saturated_high"):
                getattr(merged, field).update(
                    {f"layer {i} {name}": v for name, v in getattr(stats, field).items()})
        return merged
    cell, params, xs, carry0, _ = _prepare(cell, params, xs, carry, layer)
    us = cell.project(params, jnp.moveaxis(xs, 1, 0))

    def body(c_tm1, u_t):
        gates = {k: v for k, v in cell.gates(params, c_tm1, u_t).items() if k != "candidate"}
        return cell.recur(params, c_tm1, u_t)[0], gates

    _, gates = jax.lax.scan(body, carry0, us)
    values = {k: jnp.moveaxis(v, 0, 1) for k, v in gates.items()}
    frac_low = {k: jnp.mean(v < low, axis=(0, 2)) for k, v in values.items()}
    frac_high = {k: jnp.mean(v > high, axis=(0, 2)) for k, v in values.items()}
    return GateStats(values, frac_low, frac_high)


__all__ = [
    "GateStats", "Norms", "gate_activations", "gradient_norms", "jacobian_norms",
    "jacobian_spectrum", "lyapunov_exponents",
]
