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

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

Params = dict[str, Any]
Carry = Any


class LSTMCarry(NamedTuple):
    """The LSTM's carry: hidden state ``h [*B, H]`` and cell state ``c [*B, H]`` (PyTorch order)."""

    h: Array
    c: Array


class Cell(NamedTuple):
    """A recurrent cell: pure functions over an explicit parameter dict.

    Attributes:
        init: ``init(key, input_size) -> params``, a flat dict of arrays.
        initial_carry: ``initial_carry(batch_shape=(), *, params=None, key=None, dtype=None)``
            -> the carry before the first step (zeros for the plain cells; wrappers may read
            ``params`` for a learned carry or ``key`` for dropout masks).
        project: ``project(params, x) -> u``, the input half ``x @ w_x + b`` for inputs
            ``x [..., I]`` with any leading dimensions; ``u [..., G*H]``.
        recur: ``recur(params, carry, u_t, h_mask=None) -> (carry, h_t)``, the hidden half.
            ``h_mask [*B, H]`` multiplies the hidden state where it enters the recurrent
            matmul (variational dropout, Gal & Ghahramani 2016); ``None`` means no mask.
        step: ``step(params, carry, x_t) -> (carry, h_t)``; equals ``recur`` after ``project``.
        gates: ``gates(params, carry, u_t) -> dict`` of gate name -> ``[*B, H]`` activations
            for that step (empty for the vanilla RNN).
        output: ``output(carry) -> h``, the part of a carry that is the cell's output (``h``
            for every cell here); ``recur``'s ``h_t`` equals ``output`` of its new carry.
        input_size: ``input_size(params) -> int``, the feature size the params expect.
        hidden_size: H, the size of ``h_t`` (static).
        kind: ``"rnn"``, ``"lstm"``, ``"gru"`` or a wrapper's name (static).
        config: the factory's keyword arguments, for converters and reports (static).
    """

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    project: Callable[..., Array]
    recur: Callable[..., tuple[Carry, Array]]
    step: Callable[..., tuple[Carry, Array]]
    gates: Callable[..., dict[str, Array]]
    output: Callable[[Carry], Array]
    input_size: Callable[[Params], int]
    hidden_size: int
    kind: str
    config: Mapping[str, Any]

    @property
    def output_size(self) -> int:
        """Size of the outputs ``ys`` that :func:`gatedrnn.unroll` returns (H for a cell)."""
        return self.hidden_size


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


def _check_hidden_size(hidden_size: int) -> None:
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int; got {hidden_size!r}")


def _recurrent_matrix(
    key: PRNGKeyArray, hidden_size: int, num_gates: int, scheme: str | Callable, dtype: Any
) -> Array:
    """``w_h [H, G*H]`` with each gate's ``[H, H]`` block initialised on its own.

    Orthogonal init of the fused matrix would not make each gate block orthogonal, so blocks
    are drawn separately (the per-block choice of Flax and Keras).
    """
    shape = (hidden_size, hidden_size)
    if callable(scheme):
        block = scheme
    elif scheme == "orthogonal":
        block = jax.nn.initializers.orthogonal()
    elif scheme == "identity":
        def block(_key, shape, dtype):
            return jnp.eye(shape[0], dtype=dtype)
    elif scheme == "normal":
        # Entries N(0, 1/H): the spectral radius is close to 1 for large H (circular law).
        block = jax.nn.initializers.normal(stddev=hidden_size**-0.5)
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
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise ValueError(f"input_size must be a positive int; got {input_size!r}")
    return jax.nn.initializers.lecun_normal()(key, (input_size, width), dtype)


def _chrono_bias(key: PRNGKeyArray, t_max: float, hidden_size: int, dtype: Any) -> Array:
    """Chrono initialisation (Tallec & Ollivier 2018): ``log U[1, T_max - 1]``.

    A gate with this bias keeps its state with time constant ``1 + e^b``, spread over
    ``[2, T_max]``.
    """
    if not t_max > 2:
        raise ValueError(f"chrono_t_max must be greater than 2; got {t_max!r}")
    return jnp.log(jax.random.uniform(key, (hidden_size,), dtype, 1.0, t_max - 1.0))


def _split(v: Array, num: int) -> list[Array]:
    return jnp.split(v, num, axis=-1)


def _make_cell(
    kind: str,
    hidden_size: int,
    init: Callable[[PRNGKeyArray, int], Params],
    core: Callable[[Params, Carry, Array, Array | None], tuple[Carry, Array, dict]],
    zeros: Callable[[tuple[int, ...], Any], Carry],
    output: Callable[[Carry], Array],
    config: dict[str, Any],
    dtype: Any,
    param_dtype: Any,
) -> Cell:
    """Builds the shared parts of a cell around its ``core`` equations.

    ``core(params, carry, u_t, h_mask) -> (carry, h_t, gates)`` is the only place a cell's
    equations are written; ``recur`` and ``gates`` are its two views.
    """

    def cast(params: Params) -> Params:
        if dtype is None:
            return params
        return jax.tree.map(lambda v: jnp.asarray(v).astype(dtype), params)

    def input_size(params: Params) -> int:
        return params["w_x"].shape[0]

    def project(params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        expected = input_size(params)
        if x.ndim < 1 or x.shape[-1] != expected:
            raise ValueError(
                f"x has shape {x.shape}: its last axis must be the {expected} input features "
                f"the params were initialised for (w_x is {tuple(params['w_x'].shape)})"
            )
        p = cast(params)
        if dtype is not None:
            x = x.astype(dtype)
        return x @ p["w_x"] + p["b"]

    def recur(params: Params, carry: Carry, u_t: Array, h_mask: Array | None = None):
        new_carry, h_t, _ = core(cast(params), carry, u_t, h_mask)
        # Keeps the carry's dtype fixed across steps, as lax.scan requires.
        new_carry = jax.tree.map(lambda new, old: new.astype(old.dtype), new_carry, carry)
        return new_carry, h_t.astype(jax.tree.leaves(carry)[0].dtype)

    def gates(params: Params, carry: Carry, u_t: Array) -> dict[str, Array]:
        return core(cast(params), carry, u_t, None)[2]

    def step(params: Params, carry: Carry, x_t: ArrayLike):
        return recur(params, carry, project(params, x_t))

    def initial_carry(batch_shape=(), *, params=None, key=None, dtype=None) -> Carry:
        del params, key  # a plain cell starts from zeros
        return zeros(tuple(batch_shape), dtype or config["dtype"] or param_dtype)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        step=step,
        gates=gates,
        output=output,
        input_size=input_size,
        hidden_size=hidden_size,
        kind=kind,
        config=config,
    )


def _identity(carry: Array) -> Array:
    return carry


def _masked(h: Array, h_mask: Array | None) -> Array:
    return h if h_mask is None else h * h_mask


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
    _check_hidden_size(hidden_size)
    act = _resolve_activation(activation)
    config = dict(
        activation=activation, recurrent_init=recurrent_init,
        recurrent_scale=recurrent_scale, dtype=dtype, param_dtype=param_dtype,
    )

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h = jax.random.split(key)
        w_h = _recurrent_matrix(k_h, hidden_size, 1, recurrent_init, param_dtype)
        return {
            "w_x": _input_matrix(k_x, input_size, hidden_size, param_dtype),
            "w_h": w_h * jnp.asarray(recurrent_scale, param_dtype),
            "b": jnp.zeros((hidden_size,), param_dtype),
        }

    def core(params, h_tm1, u_t, h_mask):
        h_t = act(u_t + _masked(h_tm1, h_mask) @ params["w_h"])
        return h_t, h_t, {}

    def zeros(batch_shape, dt):
        return jnp.zeros((*batch_shape, hidden_size), dt)

    return _make_cell("rnn", hidden_size, init, core, zeros, _identity, config, dtype,
                      param_dtype)


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    peepholes: bool = False,
    coupled: bool = False,
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
        h_t = o_t ⊙ tanh(c_t)

    where ``u = x_t @ w_x + b`` and the peephole terms ``p_*`` appear only with
    ``peepholes=True`` (diagonal peepholes, Gers & Schmidhuber 2000; the output gate peeks at
    the new cell state).

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, G*H]    LeCun normal
    w_h     [H, G*H]    ``recurrent_init`` per gate block
    b       [G*H]       zeros, forget block ``forget_bias`` (or chrono)
    p_i     [H]         zeros (``peepholes`` and not ``coupled``)
    p_f     [H]         zeros (``peepholes``)
    p_o     [H]         zeros (``peepholes``)
    ======  ==========  =======================================================

    G is 4, or 3 when ``coupled``. The carry is :class:`LSTMCarry` ``(h, c)``; the output is
    ``h_t``. The forget bias is a trainable parameter's initial value (Jozefowicz et al. 2015),
    as Keras's ``unit_forget_bias``; no constant is added in the forward pass.

    Args:
        hidden_size: H.
        forget_bias: initial forget-gate bias (1.0 by default; PyTorch's and Flax's cells
            start at 0).
        chrono_t_max: if given, chrono initialisation (Tallec & Ollivier 2018):
            ``b_f ~ log U[1, T_max - 1]`` and ``b_i = -b_f``; replaces ``forget_bias``.
        peepholes: add diagonal peephole connections ``p_i, p_f, p_o``.
        coupled: couple the input and forget gates, ``i = 1 - f`` (CIFG, Greff et al. 2017).
        recurrent_init: ``"orthogonal"`` (default), ``"identity"``, ``"normal"`` or a callable,
            applied to each gate's ``[H, H]`` block.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    _check_hidden_size(hidden_size)
    names = ("f", "g", "o") if coupled else ("i", "f", "g", "o")
    num_gates = len(names)
    config = dict(
        forget_bias=forget_bias, chrono_t_max=chrono_t_max, peepholes=peepholes,
        coupled=coupled, recurrent_init=recurrent_init, dtype=dtype, param_dtype=param_dtype,
    )
    hh = hidden_size

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b = jax.random.split(key, 3)
        blocks = {n: jnp.zeros((hh,), param_dtype) for n in names}
        if chrono_t_max is not None:
            blocks["f"] = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
            if not coupled:
                blocks["i"] = -blocks["f"]
        else:
            blocks["f"] = jnp.full((hh,), forget_bias, param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, num_gates * hh, param_dtype),
            "w_h": _recurrent_matrix(k_h, hh, num_gates, recurrent_init, param_dtype),
            "b": jnp.concatenate([blocks[n] for n in names]),
        }
        if peepholes:
            for n in ("i", "f", "o"):
                if n in names:
                    params[f"p_{n}"] = jnp.zeros((hh,), param_dtype)
        return params

    def core(params, carry, u_t, h_mask):
        h_tm1, c_tm1 = carry
        pre = dict(zip(names, _split(u_t + _masked(h_tm1, h_mask) @ params["w_h"], num_gates)))
        if peepholes:
            pre["f"] = pre["f"] + params["p_f"] * c_tm1
            if not coupled:
                pre["i"] = pre["i"] + params["p_i"] * c_tm1
        f_t = jax.nn.sigmoid(pre["f"])
        i_t = 1.0 - f_t if coupled else jax.nn.sigmoid(pre["i"])
        g_t = jnp.tanh(pre["g"])
        c_t = f_t * c_tm1 + i_t * g_t
        o_pre = pre["o"] + params["p_o"] * c_t if peepholes else pre["o"]
        o_t = jax.nn.sigmoid(o_pre)
        h_t = o_t * jnp.tanh(c_t)
        gates = {"input": i_t, "forget": f_t, "output": o_t, "candidate": g_t}
        return LSTMCarry(h_t, c_t), h_t, gates

    def zeros(batch_shape, dt):
        z = jnp.zeros((*batch_shape, hh), dt)
        return LSTMCarry(z, z)

    return _make_cell("lstm", hidden_size, init, core, zeros, lambda carry: carry.h, config,
                      dtype, param_dtype)


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
    is a real extra parameter (PyTorch's ``b_hr`` and ``b_hz`` fold into ``b``).

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
    _check_hidden_size(hidden_size)
    hh = hidden_size
    config = dict(
        reset_after=reset_after, update_bias=update_bias, chrono_t_max=chrono_t_max,
        recurrent_init=recurrent_init, dtype=dtype, param_dtype=param_dtype,
    )

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h, k_b = jax.random.split(key, 3)
        if chrono_t_max is not None:
            b_z = _chrono_bias(k_b, chrono_t_max, hh, param_dtype)
        else:
            b_z = jnp.full((hh,), update_bias, param_dtype)
        zeros_h = jnp.zeros((hh,), param_dtype)
        params = {
            "w_x": _input_matrix(k_x, input_size, 3 * hh, param_dtype),
            "w_h": _recurrent_matrix(k_h, hh, 3, recurrent_init, param_dtype),
            "b": jnp.concatenate([zeros_h, b_z, zeros_h]),
        }
        if reset_after:
            params["b_hn"] = zeros_h
        return params

    def core(params, h_tm1, u_t, h_mask):
        u_r, u_z, u_n = _split(u_t, 3)
        hm = _masked(h_tm1, h_mask)
        if reset_after:
            w_r, w_z, w_n = _split(hm @ params["w_h"], 3)
            r_t = jax.nn.sigmoid(u_r + w_r)
            z_t = jax.nn.sigmoid(u_z + w_z)
            n_t = jnp.tanh(u_n + r_t * (w_n + params["b_hn"]))
        else:
            w_r, w_z = _split(hm @ params["w_h"][:, : 2 * hh], 2)
            r_t = jax.nn.sigmoid(u_r + w_r)
            z_t = jax.nn.sigmoid(u_z + w_z)
            n_t = jnp.tanh(u_n + (r_t * hm) @ params["w_h"][:, 2 * hh :])
        h_t = (1.0 - z_t) * n_t + z_t * h_tm1
        return h_t, h_t, {"reset": r_t, "update": z_t, "candidate": n_t}

    def zeros(batch_shape, dt):
        return jnp.zeros((*batch_shape, hh), dt)

    return _make_cell("gru", hidden_size, init, core, zeros, _identity, config, dtype,
                      param_dtype)


def num_params(params: Any) -> int:
    """Total number of scalar parameters in a params pytree."""
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))


__all__ = ["ACTIVATIONS", "Cell", "LSTMCarry", "gru", "lstm", "num_params", "rnn"]
