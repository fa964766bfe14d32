"""Float64 NumPy transcriptions of the cell equations in gatedrnn's docstrings.

Written from the docstrings (and the papers they cite), not from the library's code, so that
a test comparing the two checks the specification.
"""

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_step(p, h, x, act=np.tanh):
    return act(x @ p["w_x"] + h @ p["w_h"] + p["b"])


def lstm_step(p, h, c, x, peepholes=False, coupled=False):
    """Returns (h_t, c_t) for one step; gates i, f, g, o (f, g, o when coupled)."""
    H = h.shape[-1]
    pre = x @ p["w_x"] + p["b"] + h @ p["w_h"]
    if coupled:
        a_f, a_g, a_o = (pre[..., k * H:(k + 1) * H] for k in range(3))
    else:
        a_i, a_f, a_g, a_o = (pre[..., k * H:(k + 1) * H] for k in range(4))
    if peepholes:
        a_f = a_f + p["p_f"] * c
        if not coupled:
            a_i = a_i + p["p_i"] * c
    f = sigmoid(a_f)
    i = 1.0 - f if coupled else sigmoid(a_i)
    g = np.tanh(a_g)
    c_t = f * c + i * g
    if peepholes:
        a_o = a_o + p["p_o"] * c_t
    o = sigmoid(a_o)
    return o * np.tanh(c_t), c_t


def gru_step(p, h, x, reset_after=True):
    H = h.shape[-1]
    W_x, W_h, b = p["w_x"], p["w_h"], p["b"]

    def blk(m, k):
        return m[..., k * H:(k + 1) * H]

    r = sigmoid(x @ blk(W_x, 0) + blk(b, 0) + h @ blk(W_h, 0))
    z = sigmoid(x @ blk(W_x, 1) + blk(b, 1) + h @ blk(W_h, 1))
    if reset_after:
        n = np.tanh(x @ blk(W_x, 2) + blk(b, 2) + r * (h @ blk(W_h, 2) + p["b_hn"]))
    else:
        n = np.tanh(x @ blk(W_x, 2) + (r * h) @ blk(W_h, 2) + blk(b, 2))
    return (1.0 - z) * n + z * h


def g(v):
    """Feng et al. 2024's activation: v + 0.5 for v >= 0, else sigmoid(v)."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def min_gru_step(p, h, x):
    u = x @ p["w_x"] + p["b"]
    H = h.shape[-1]
    z = sigmoid(u[..., :H])
    return (1.0 - z) * h + z * g(u[..., H:])


def min_lstm_step(p, h, x):
    u = x @ p["w_x"] + p["b"]
    H = h.shape[-1]
    f, i = sigmoid(u[..., :H]), sigmoid(u[..., H:2 * H])
    return f / (f + i) * h + i / (f + i) * g(u[..., 2 * H:])


def lru_step(p, s, x, complex_state=True):
    """Orvieto et al. 2023: s_t = λ s_{t-1} + γ (B x_t); output [Re s, Im s] (s if real)."""
    if complex_state:
        lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
        b = p["b_re"] + 1j * p["b_im"]
    else:
        lam, b = np.exp(-np.exp(p["nu_log"])), p["b_re"]
    s = lam * s + np.exp(p["gamma_log"]) * (x @ b)
    return s, (np.concatenate([s.real, s.imag], -1) if complex_state else s)


def block_diagonal(w):
    """The dense ``[P, G*H]`` matrix of head-wise blocks ``w [n, P/n, G, H/n]``: head k's rows
    feed columns ``g*H + k*(H/n) ...`` of each gate g (written with loops, not einsum)."""
    n, p, gates, d = w.shape
    dense = np.zeros((n * p, gates * n * d))
    for k in range(n):
        for g in range(gates):
            dense[k * p:(k + 1) * p, g * n * d + k * d:g * n * d + (k + 1) * d] = w[k, :, g, :]
    return dense


def log_sigmoid(v):
    return -np.logaddexp(0.0, -v)


def slstm_step(p, carry, x, forget_gate="sigmoid"):
    """xLSTM's sLSTM (Beck et al. 2024, eqs. 8-19, stabilised as the authors' code: m_t = ĩ
    where nothing is stored yet). ``carry = (h, c, n, m)``; returns the new carry."""
    h, c, n, m = carry
    w_h = p["w_h"] if p["w_h"].ndim == 2 else block_diagonal(p["w_h"])
    i_pre, f_pre, z_pre, o_pre = np.split(x @ p["w_x"] + h @ w_h + p["b"], 4, axis=-1)
    log_f = log_sigmoid(f_pre) if forget_gate == "sigmoid" else f_pre
    m_new = np.where(n == 0, i_pre, np.maximum(log_f + m, i_pre))
    i = np.exp(i_pre - m_new)
    f = np.where(n == 0, 0.0, np.exp(np.minimum(log_f + m - m_new, 0.0)))
    c_new = f * c + i * np.tanh(z_pre)
    n_new = f * n + i
    return sigmoid(o_pre) * c_new / n_new, c_new, n_new, m_new


def _mlstm_parts(p, x, heads, forget_gate):
    u = x @ p["w_x"] + p["b"]
    H = (u.shape[-1] - 2 * heads) // 4
    d = H // heads
    q, k, v, o = (u[..., j * H:(j + 1) * H].reshape(*u.shape[:-1], heads, d) for j in range(4))
    i_pre, f_pre = u[..., 4 * H:4 * H + heads], u[..., 4 * H + heads:]
    log_f = log_sigmoid(f_pre) if forget_gate == "sigmoid" else f_pre
    return q, k / np.sqrt(d), v, sigmoid(o).reshape(*u.shape[:-1], H), i_pre, log_f


def mlstm_step(p, carry, x, heads, forget_gate="sigmoid"):
    """xLSTM's mLSTM (Beck et al. 2024, eqs. 20-27), stabilised. ``carry = (h, C, n, m)`` with
    ``C [B, heads, d, d]`` (``C[i, j] = Σ v_i k_j``), ``n [B, heads, d]``, ``m [B, heads]``."""
    _, C, n, m = carry
    q, k, v, o, i_pre, log_f = _mlstm_parts(p, x, heads, forget_gate)
    m_new = np.maximum(log_f + m, i_pre)
    i, f = np.exp(i_pre - m_new), np.exp(log_f + m - m_new)
    C_new = f[..., None, None] * C + i[..., None, None] * np.einsum("bhi,bhj->bhij", v, k)
    n_new = f[..., None] * n + i[..., None] * k
    num = np.einsum("bhij,bhj->bhi", C_new, q)
    den = np.maximum(np.abs(np.einsum("bhj,bhj->bh", n_new, q)), np.exp(-m_new))
    return o * (num / den[..., None]).reshape(o.shape), C_new, n_new, m_new


def mlstm_plain(p, xs, heads, forget_gate="sigmoid"):
    """The mLSTM's equations as the paper writes them first, without the stabiliser:
    ``C_t = f_t C_{t-1} + i_t v_t k_tᵀ``, ``h_t = o_t ⊙ C_t q_t / max(|n_tᵀ q_t|, 1)`` with
    ``i_t = exp(ĩ_t)``; for moderate pre-activations only. ``xs [T, B, I]`` -> ``[T, B, H]``."""
    q, k, v, o, i_pre, log_f = _mlstm_parts(p, xs, heads, forget_gate)
    B, d = xs.shape[1], q.shape[-1]
    C, n, hs = np.zeros((B, heads, d, d)), np.zeros((B, heads, d)), []
    for t in range(xs.shape[0]):
        f, i = np.exp(log_f[t]), np.exp(i_pre[t])
        C = f[..., None, None] * C + i[..., None, None] * np.einsum("bhi,bhj->bhij", v[t], k[t])
        n = f[..., None] * n + i[..., None] * k[t]
        num = np.einsum("bhij,bhj->bhi", C, q[t])
        den = np.maximum(np.abs(np.einsum("bhj,bhj->bh", n, q[t])), 1.0)
        hs.append(o[t] * (num / den[..., None]).reshape(o[t].shape))
    return np.stack(hs)


def rg_lru_step(p, h, x, c=8.0, negative=False):
    """Griffin's RG-LRU (De et al. 2024, eqs. 1-4): ``a_t = σ(Λ)^(c r_t)``,
    ``h_t = a_t h + sqrt(1 - a_t²) (i_t v_t)``; ``negative``: the transition ``2 a_t - 1``."""
    r_pre, i_pre, v = np.split(x @ p["w_x"] + p["b"], 3, axis=-1)
    a = sigmoid(p["lam"]) ** (c * sigmoid(r_pre))
    if negative:
        a = 2 * a - 1
    return a * h + np.sqrt(1 - a * a) * sigmoid(i_pre) * v


def min_gru_negative_step(p, h, x):
    """minGRU with its transition ``1 - z`` mapped to ``2 (1 - z) - 1`` (Grazzi et al. 2024)."""
    z_pre, h_pre = np.split(x @ p["w_x"] + p["b"], 2, axis=-1)
    z = sigmoid(z_pre)
    return (2 * (1 - z) - 1) * h + z * g(h_pre)


def min_lstm_negative_step(p, h, x):
    """minLSTM with its transition ``f'`` mapped to ``2 f' - 1``."""
    f_pre, i_pre, h_pre = np.split(x @ p["w_x"] + p["b"], 3, axis=-1)
    f, i = sigmoid(f_pre), sigmoid(i_pre)
    return (2 * f / (f + i) - 1) * h + i / (f + i) * g(h_pre)
