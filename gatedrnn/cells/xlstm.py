"""xLSTM's two cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"): the sLSTM
and the mLSTM, the LSTM with exponential gating and a normaliser.

sLSTM (the paper's eqs. 8-19; scalar memory, recurrent, head-wise recurrent matrices)::

    [ĩ, f̃, z̃, õ] = x_t @ w_x + h_{t-1} @ w_h + b        (w_h block-diagonal over heads)
    log f_t = log σ(f̃)   (forget_gate="sigmoid")   or  f̃   (forget_gate="exp")
    m_t = max(log f_t + m_{t-1}, ĩ)                      (m_t = ĩ where n_{t-1} = 0)
    i'_t = exp(ĩ - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
    c_t = f'_t ⊙ c_{t-1} + i'_t ⊙ tanh(z̃)
    n_t = f'_t ⊙ n_{t-1} + i'_t
    h_t = σ(õ) ⊙ c_t / n_t

mLSTM (eqs. 20-27; a matrix memory per head, no recurrent matrix, so a quadratic parallel
form exists, Appendix B.3 of the paper, and a chunked one: the quadratic form within chunks,
the carry passed from chunk to chunk)::

    q_t, k_t, v_t = x_t @ w_x + b  (per head, d = H / heads features each; k scaled by 1/√d)
    ĩ_t, f̃_t = scalars per head from x_t @ w_x + b;  o_t = σ(õ_t)
    m_t = max(log f_t + m_{t-1}, ĩ_t)
    C_t = f'_t C_{t-1} + i'_t v_t k_tᵀ                       [heads, d, d]
    n_t = f'_t n_{t-1} + i'_t k_t                            [heads, d]
    h_t = o_t ⊙ (C_t q_t) / max(|n_tᵀ q_t|, exp(-m_t))

``m`` is the stabiliser: the exponentials ``exp(ĩ)`` and ``exp(f̃)`` of the paper's gates are
never formed, only ``exp`` of differences that are at most 0. ``h_t`` does not depend on
``m`` (scaling ``c, n`` or ``C, n`` by ``exp(-m)`` cancels, the ``exp(-m_t)`` in the mLSTM's
denominator being the paper's lower bound 1 scaled the same way), so both forms of the
mLSTM, whose ``m`` coincide, give the same carries and outputs. The sLSTM's rule ``m_t = ĩ``
at ``n_{t-1} = 0`` (the first step, or after a reset) is the authors' code's: with it
``n_t >= 1`` from the first step on, so ``c_t / n_t`` is finite for any pre-activations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from gatedrnn import checks
from gatedrnn.cells.base import (
    Cell,
    Params,
    _check_common,
    _check_heads,
    _input_matrix,
    _recurrent_weights,
    _split,
    cell_factory,
    make_cell,
)
from gatedrnn.cells.products import _gated_affine, _masked, _rows_of_w_x, recurrent_product

FORGET_GATES = ("sigmoid", "exp")


class SLSTMCarry(NamedTuple):
    """The sLSTM's carry, each ``[*B, H]``: output ``h``, cell state ``c``, normaliser ``n``
    and stabiliser ``m`` (``c`` and ``n`` scaled by ``exp(-m)``)."""

    h: Array
    c: Array
    n: Array
    m: Array


class MLSTMCarry(NamedTuple):
    """The mLSTM's carry: output ``h [*B, H]``, matrix memory ``C [*B, heads, d, d]``
    (``C q`` reads it), normaliser ``n [*B, heads, d]`` and stabiliser ``m [*B, heads]``
    (``C`` and ``n`` scaled by ``exp(-m)``)."""

    h: Array
    C: Array
    n: Array
    m: Array


def _log_forget(pre: Array, forget_gate: str) -> Array:
    return jax.nn.log_sigmoid(pre) if forget_gate == "sigmoid" else pre


def _check_forget_gate(forget_gate: Any) -> str:
    if forget_gate not in FORGET_GATES:
        raise ValueError(f"forget_gate must be one of {FORGET_GATES}; got {forget_gate!r}")
    return forget_gate


def _carry_h(carry) -> Array:
    return carry.h


@cell_factory
def slstm(
    hidden_size: int,
    *,
    heads: int = 1,
    forget_gate: str = "sigmoid",
    forget_bias: float = 1.0,
    recurrent_init: str | Callable = "orthogonal",
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The sLSTM cell (Beck et al. 2024, eqs. 8-19; module docstring): exponential input gate,
    sigmoid or exponential forget gate, normaliser ``n`` and stabiliser ``m``.

    Gates are packed ``i, f, z, o`` (the LSTM's ``i, f, g, o``):

    ======  ==========  =======================================================
    name    shape       init
    ======  ==========  =======================================================
    w_x     [I, 4H]     LeCun normal
    w_h     [H, 4H]     ``recurrent_init`` per gate block; ``[n, H/n, 4, H/n]`` with
                        ``heads=n`` (block-diagonal, as the paper's sLSTM)
    b       [4H]        zeros, forget block ``forget_bias``
    ======  ==========  =======================================================

    The carry is :class:`SLSTMCarry` ``(h, c, n, m)``, each ``[*B, H]``, zeros at the start;
    the output is ``h_t``. Gates reported: the stabilised ``"input"`` ``i'`` and
    ``"forget"`` ``f'``, ``"output"`` and ``"candidate"`` ``tanh(z̃)``. The paper's blocks
    use 4 heads; the default here is 1, the dense LSTM's shape, for comparisons.

    Args:
        hidden_size: H.
        heads: n, heads of the recurrent matrix (each ``H/n`` features).
        forget_gate: ``"sigmoid"`` (default, ``f = σ(f̃)``) or ``"exp"`` (``f = exp(f̃)``).
        forget_bias: initial forget-gate bias.
        recurrent_init: ``"orthogonal"`` (default), ``"identity"``, ``"normal"`` or a callable,
            per gate block of each head.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hh = _check_common(hidden_size, param_dtype, forget_bias=forget_bias)
    heads = _check_heads(heads, ("hidden_size", hh))
    forget_gate = _check_forget_gate(forget_gate)

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        k_x, k_h = jax.random.split(key)
        zeros = jnp.zeros((hh,), param_dtype)
        return {
            "w_x": _input_matrix(k_x, input_size, 4 * hh, param_dtype),
            "w_h": _recurrent_weights(k_h, hh, hh, 4, recurrent_init, param_dtype, heads),
            "b": jnp.concatenate([zeros, jnp.full((hh,), forget_bias, param_dtype), zeros,
                                  zeros]),
        }

    def core(params, carry, u_t, h_mask=None):
        h_tm1, c_tm1, n_tm1, m_tm1 = carry
        pre = u_t + recurrent_product(_masked(h_tm1, h_mask), params["w_h"])
        i_t, f_t, z_t, o_t, *_ = _slstm_gates(pre, n_tm1, m_tm1, forget_gate)
        h_t, c_t, n_t, m_t = _slstm_state(pre, c_tm1, n_tm1, m_tm1, forget_gate)
        gates = {"input": i_t, "forget": f_t, "output": o_t, "candidate": z_t}
        return SLSTMCarry(h_t, c_t, n_t, m_t), h_t, gates

    def initial_carry(batch_shape, *, dtype, **_):
        return SLSTMCarry(*(jnp.zeros((*batch_shape, hh), dtype) for _ in range(4)))

    return make_cell(init, core, hidden_size=hh, kind="slstm", project=_gated_affine,
                     initial_carry=initial_carry, output=_carry_h, input_size=_rows_of_w_x,
                     dtype=dtype)


def _slstm_gates(pre: Array, n_tm1: Array, m_tm1: Array, forget_gate: str) -> tuple:
    """``(i', f', tanh(z̃), σ(õ), m_t, kept)`` from the packed pre-activations ``[*B, 4H]``,
    ``kept = log f_t + m_{t-1}`` (``-inf`` where nothing is stored yet)."""
    i_pre, f_pre, z_pre, o_pre = _split(pre, 4)
    # where nothing is stored yet the forget term is -inf, so m_t = ĩ and f' = 0 (a where on
    # the exponent, not on f': exp of the other branch could overflow)
    kept = jnp.where(n_tm1 == 0, -jnp.inf, _log_forget(f_pre, forget_gate) + m_tm1)
    m_t = jnp.maximum(kept, i_pre)
    i_t, f_t = jnp.exp(i_pre - m_t), jnp.exp(kept - m_t)
    return i_t, f_t, jnp.tanh(z_pre), jax.nn.sigmoid(o_pre), m_t, kept


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _slstm_state(pre: Array, c_tm1: Array, n_tm1: Array, m_tm1: Array,
                 forget_gate: str) -> tuple:
    """The sLSTM's ``(h_t, c_t, n_t, m_t)`` from its pre-activations and carry, with a
    derivative written by hand (below) for speed, not for a different value."""
    i_t, f_t, z_t, o_t, m_t, _ = _slstm_gates(pre, n_tm1, m_tm1, forget_gate)
    c_t = f_t * c_tm1 + i_t * z_t
    n_t = f_t * n_tm1 + i_t
    return o_t * (c_t / n_t), c_t, n_t, m_t


@_slstm_state.defjvp
def _slstm_state_jvp(forget_gate: str, primals: tuple, tangents: tuple) -> tuple:
    # Autodiff of the plain equations made the sLSTM's forward+backward 1.4-1.6x the LSTM's
    # on a 2-core CPU; one coefficient per tangent term brings it to about 1.1x, as the LSTM's
    # own rule does for it (benchmarks/RESULTS.md). With s = [log f_t + m_{t-1} > ĩ] (the
    # argument the max took; a tie, of measure zero, counts as ĩ) and
    # δ = d(log f_t) + dm_{t-1} - dĩ:
    #   dm_t = dĩ + s δ,   di' = i' (dĩ - dm_t) = -s i' δ,   df' = (1 - s) f' δ, so
    #   dc_t = f' dc_{t-1} + i' (1 - z²) dz̃ + ((1 - s) f' c_{t-1} - s i' z) δ
    #   dn_t = f' dn_{t-1} + ((1 - s) f' n_{t-1} - s i') δ
    #   dh_t = σ'(õ) (c_t / n_t) dõ + (o / n_t) (dc_t - (c_t / n_t) dn_t)
    # Where nothing is stored yet f' = 0 and s = 0, so the -inf never meets a tangent.
    pre, c_tm1, n_tm1, m_tm1 = primals
    d_pre, d_c, d_n, d_m = tangents
    i_t, f_t, z_t, o_t, m_t, kept = _slstm_gates(pre, n_tm1, m_tm1, forget_gate)
    i_pre, f_pre, _, _ = _split(pre, 4)
    d_i, d_f, d_z, d_o = _split(d_pre, 4)
    c_t = f_t * c_tm1 + i_t * z_t
    n_t = f_t * n_tm1 + i_t
    ratio = c_t / n_t
    took_kept = kept > i_pre
    log_f_slope = jax.nn.sigmoid(-f_pre) if forget_gate == "sigmoid" else 1.0
    delta = log_f_slope * d_f + d_m - d_i
    d_c_t = (f_t * d_c + (i_t * (1.0 - z_t * z_t)) * d_z
             + jnp.where(took_kept, -i_t * z_t, f_t * c_tm1) * delta)
    d_n_t = f_t * d_n + jnp.where(took_kept, -i_t, f_t * n_tm1) * delta
    d_m_t = d_i + jnp.where(took_kept, delta, 0.0)
    scale = o_t / n_t
    d_h_t = (o_t * (1.0 - o_t) * ratio) * d_o + scale * d_c_t - (scale * ratio) * d_n_t
    return (o_t * ratio, c_t, n_t, m_t), (d_h_t, d_c_t, d_n_t, d_m_t)


@cell_factory
def mlstm(
    hidden_size: int,
    *,
    heads: int = 1,
    forget_gate: str = "sigmoid",
    forget_bias: float = 3.0,
    input_bias: float = 0.0,
    chunk_size: int | None = 64,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """The mLSTM cell (Beck et al. 2024, eqs. 20-27; module docstring): a matrix memory per
    head with exponential gating, all gates read from the input alone, so it also has a
    parallel form: ``gr.unroll(..., options=gr.ScanOptions(method="parallel"))`` computes
    every step at once from a ``[T, T]`` matrix of decays per head (the paper's Appendix B.3),
    with the same values, carries and gradients as the recurrent form (tested); a sequence
    longer than ``chunk_size`` runs as a scan over chunks, each in that form (``T / L``
    sequential steps instead of ``T``).

    The input half ``u = x_t @ w_x + b`` holds, in order, ``q, k, v, õ`` (``H`` each, head
    ``j`` the ``j``-th ``d = H / heads`` of each) and ``ĩ, f̃`` (``heads`` each):

    ======  ===================  ==============================================
    name    shape                init
    ======  ===================  ==============================================
    w_x     [I, 4H + 2 heads]    LeCun normal
    b       [4H + 2 heads]       zeros; ``ĩ`` block ``input_bias``, ``f̃`` block
                                 ``forget_bias``
    ======  ===================  ==============================================

    There is no recurrent matrix, so recurrent dropout has nothing to act on and is refused.
    The carry is :class:`MLSTMCarry` ``(h, C, n, m)``, zeros at the start; the output is
    ``h_t [*B, H]``. Gates reported (per head, ``[*B, heads]``): the stabilised ``"input"``
    and ``"forget"``; and ``"output"`` ``[*B, H]``.

    Args:
        hidden_size: H, the width of ``q, k, v`` and of the output.
        heads: heads of the memory (each ``d = H / heads``).
        forget_gate: ``"sigmoid"`` (default, as the paper's experiments) or ``"exp"``.
        forget_bias: initial ``f̃`` bias (a long memory at the start: ``σ(3) = 0.95``).
        input_bias: initial ``ĩ`` bias.
        chunk_size: the parallel form's chunk: sequences longer than this run as a scan over
            chunks of this many steps, each chunk in the quadratic form from the carry the
            previous one left (``O(T L d)`` work and ``O(L^2)`` memory per head for chunks of
            ``L``); ``None``: the whole sequence in one quadratic form.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params.
    """
    hh = _check_common(hidden_size, param_dtype, forget_bias=forget_bias, input_bias=input_bias)
    if chunk_size is not None:
        chunk_size = checks.size(chunk_size, "chunk_size")
    heads = _check_heads(heads, ("hidden_size", hh))
    forget_gate = _check_forget_gate(forget_gate)
    d = hh // heads
    width = 4 * hh + 2 * heads

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        b = jnp.zeros((width,), param_dtype)
        b = b.at[4 * hh : 4 * hh + heads].set(input_bias).at[4 * hh + heads :].set(forget_bias)
        return {"w_x": _input_matrix(key, input_size, width, param_dtype), "b": b}

    def parts(u):
        """``q, k, v [..., heads, d]``, ``o [..., H]``, ``ĩ, log f [..., heads]``."""
        lead = u.shape[:-1]
        q, k, v, o_pre = (w.reshape(*lead, heads, d) for w in _split(u[..., : 4 * hh], 4))
        i_pre, f_pre = u[..., 4 * hh : 4 * hh + heads], u[..., 4 * hh + heads :]
        return (q, k / math.sqrt(d), v, jax.nn.sigmoid(o_pre).reshape(*lead, hh), i_pre,
                _log_forget(f_pre, forget_gate))

    def read(C, n, m, q, o):
        """``h = o ⊙ C q / max(|nᵀ q|, exp(-m))`` for one step (or many: leading axes)."""
        num = jnp.einsum("...ij,...j->...i", C, q)
        den = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))
        return o * (num / den[..., None]).reshape(o.shape)

    def core(params, carry, u_t, h_mask=None):
        if h_mask is not None:
            raise ValueError("the mLSTM has no recurrent matrix, so recurrent dropout has "
                             "nothing to act on: use dropout on its inputs or outputs")
        _, C, n, m = carry
        q, k, v, o, i_pre, log_f = parts(u_t)
        m_t = jnp.maximum(log_f + m, i_pre)
        i_t, f_t = jnp.exp(i_pre - m_t), jnp.exp(log_f + m - m_t)
        C_t = f_t[..., None, None] * C + i_t[..., None, None] * (v[..., :, None] * k[..., None, :])
        n_t = f_t[..., None] * n + i_t[..., None] * k
        h_t = read(C_t, n_t, m_t, q, o)
        return MLSTMCarry(h_t, C_t, n_t, m_t), h_t, {"input": i_t, "forget": f_t, "output": o}

    def parallel(params, carry, us, *, valid=None, resets=None, carry_0=None):
        steps = us.shape[0]
        if chunk_size is None or steps <= chunk_size:
            return quadratic(carry, us, valid, resets, carry_0)
        # chunks of chunk_size steps, the last padded with frozen steps (carry unchanged)
        count = -(-steps // chunk_size)
        pad = count * chunk_size - steps
        live = jnp.ones(us.shape[:-1], bool) if valid is None else valid

        def chunks(a, fill):
            a = jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), fill, a.dtype)])
            return a.reshape(count, chunk_size, *a.shape[1:])

        def body(c, inputs):
            u, v, r = inputs
            return quadratic(c, u, v, r, carry_0)

        carry, hs = jax.lax.scan(body, carry, (chunks(us, 0), chunks(live, False),
                                               None if resets is None else chunks(resets, False)))
        return carry, hs.reshape(count * chunk_size, *hs.shape[2:])[:steps]

    def quadratic(carry, us, valid, resets, carry_0):
        # batch-major, [*B, heads, T, ...], so that each head's products are [T, d] x [d, T]
        q, k, v, o, i_pre, log_f = parts(us)
        q, k, v = (jnp.moveaxis(a, 0, -2) for a in (q, k, v))         # [*B, h, T, d]
        i_pre, log_f = (jnp.moveaxis(a, 0, -1) for a in (i_pre, log_f))  # [*B, h, T]
        steps = us.shape[0]
        if valid is not None:                       # a frozen step: f = 1, i = 0
            live = jnp.moveaxis(valid, 0, -1)[..., None, :]
            log_f = jnp.where(live, log_f, 0.0)
            i_pre = jnp.where(live, i_pre, -jnp.inf)
        t = jnp.arange(steps)
        total = jnp.cumsum(log_f, axis=-1)          # F_t = Σ_{r<=t} log f_r
        # each step's episode, and F just before the episode's first step (0 in the first)
        starts = (jnp.zeros(us.shape[1:-1] + (1, steps), bool) if resets is None
                  else jnp.moveaxis(resets, 0, -1)[..., None, :])       # [*B, 1, T]
        episode = jnp.cumsum(starts, axis=-1)
        begin = jax.lax.cummax(jnp.where(starts, t, 0), axis=starts.ndim - 1)
        before = jnp.take_along_axis(total - log_f, jnp.broadcast_to(begin, total.shape),
                                     axis=-1)
        first = episode == 0
        before = jnp.where(first, 0.0, before)
        # D[t, s] = F_t - F_s + ĩ_s for s <= t in t's episode; the carry the episode starts
        # from enters as one more column, F_t - F_before + m_start
        resetting = carry_0 is not None and resets is not None
        m_start = (jnp.where(first, carry.m[..., None], carry_0.m[..., None]) if resetting
                   else carry.m[..., None])
        decay_0 = total - before + m_start                              # [*B, h, T]
        same = (episode[..., :, None] == episode[..., None, :]) & (t[:, None] >= t[None, :])
        decay = jnp.where(same, total[..., :, None] - total[..., None, :] + i_pre[..., None, :],
                          -jnp.inf)                                     # [*B, h, T, S]
        m = jnp.maximum(decay_0, jnp.max(decay, axis=-1))
        weights = jnp.exp(decay - m[..., None])
        w_0 = jnp.exp(decay_0 - m)
        scores = jnp.einsum("...td,...sd->...ts", q, k) * weights
        num = scores @ v                                                # [*B, h, T, d]
        dot = jnp.sum(scores, axis=-1)

        def from_start(C, n):                       # the starting carry's share of each step
            return jnp.einsum("...ij,...tj->...ti", C, q), jnp.einsum("...j,...tj->...t", n, q)

        c_q, n_q = from_start(carry.C, carry.n)
        if resetting:
            c_q0, n_q0 = from_start(carry_0.C, carry_0.n)
            c_q, n_q = jnp.where(first[..., None], c_q, c_q0), jnp.where(first, n_q, n_q0)
        num = num + w_0[..., None] * c_q
        dot = dot + w_0 * n_q
        read = num / jnp.maximum(jnp.abs(dot), jnp.exp(-m))[..., None]
        hs = o * jnp.moveaxis(read, -2, 0).reshape(o.shape)
        # the carry after the last step: its row of weights applied to v kᵀ and to k
        last, w_last = weights[..., -1, :], w_0[..., -1]
        start_C, start_n = carry.C, carry.n
        if resetting:
            kept = first[..., -1]                                       # [*B, 1]
            start_C = jnp.where(kept[..., None, None], carry.C, carry_0.C)
            start_n = jnp.where(kept[..., None], carry.n, carry_0.n)
        C_T = jnp.einsum("...s,...si,...sj->...ij", last, v, k) + w_last[..., None, None] * start_C
        n_T = jnp.einsum("...s,...sj->...j", last, k) + w_last[..., None] * start_n
        h_T = hs[-1] if valid is None else _last_valid(hs, valid, carry.h)
        return MLSTMCarry(h_T, C_T, n_T, m[..., -1]), hs

    def initial_carry(batch_shape, *, dtype, **_):
        return MLSTMCarry(jnp.zeros((*batch_shape, hh), dtype),
                          jnp.zeros((*batch_shape, heads, d, d), dtype),
                          jnp.zeros((*batch_shape, heads, d), dtype),
                          jnp.zeros((*batch_shape, heads), dtype))

    return make_cell(init, core, hidden_size=hh, kind="mlstm", project=_gated_affine,
                     initial_carry=initial_carry, output=_carry_h, input_size=_rows_of_w_x,
                     parallel=parallel, dtype=dtype)


def _last_valid(hs: Array, valid: Array, h_0: Array) -> Array:
    """Each row's ``h`` at its last valid step (``h_0`` where it has none)."""
    count = jnp.sum(valid, axis=0)
    index = jnp.maximum(count - 1, 0)[None, ..., None]
    last = jnp.take_along_axis(hs, jnp.broadcast_to(index, (1, *hs.shape[1:])), axis=0)[0]
    return jnp.where((count > 0)[..., None], last, h_0)
