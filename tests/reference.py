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
