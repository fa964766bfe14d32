"""Cells a researcher writes with gr.make_cell, and a layer class of their own: the tests run
every part of the library on them, as on the shipped cells."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

import gatedrnn as gr

lecun = jax.nn.initializers.lecun_normal()


def min_gru_in_six_lines(hidden):
    """The make_cell docstring's example, verbatim apart from the width."""
    def init(key, input_size):
        return {"w": jax.nn.initializers.lecun_normal()(key, (input_size, 2 * hidden))}
    def core(params, h, u_t):  # noqa: E306
        z, h_new = jnp.split(u_t, 2, axis=-1)
        return (h := (1 - jax.nn.sigmoid(z)) * h + jax.nn.sigmoid(z) * h_new), h
    return gr.make_cell(init, core, hidden_size=hidden, project=lambda p, x: x @ p["w"])


@gr.cell_factory
def indrnn(hidden, *, recurrent_scale=0.9):
    """IndRNN (Li et al. 2018): h_t = relu(x_t @ w + u * h_{t-1} + b), u elementwise."""
    def init(key, input_size):
        return {"w": lecun(key, (input_size, hidden)),
                "u": jnp.full((hidden,), recurrent_scale), "b": jnp.zeros((hidden,))}

    def core(params, h, u_t, h_mask=None):
        h_in = h if h_mask is None else h * h_mask
        h = jax.nn.relu(u_t + params["u"] * h_in)
        return h, h

    return gr.make_cell(init, core, hidden_size=hidden, kind="indrnn",
                        project=lambda p, x: x @ p["w"] + p["b"],
                        input_size=lambda p: p["w"].shape[0])


@gr.cell_factory
def forget_only_lstm(hidden, *, forget_bias=1.0):
    """An LSTM with only a forget gate (JANET, van der Westhuizen & Lasenby 2018):
    c_t = f ⊙ c_{t-1} + (1 - f) ⊙ tanh(a_c), f = σ(a_f), h_t = c_t; its recurrent product
    through gr.recurrent_matmul, as the shipped cells take theirs."""
    def init(key, input_size):
        k_x, k_h = jax.random.split(key)
        b = jnp.concatenate([jnp.full((hidden,), forget_bias), jnp.zeros((hidden,))])
        return {"w_x": lecun(k_x, (input_size, 2 * hidden)),
                "w_h": lecun(k_h, (hidden, 2 * hidden)), "b": b}

    def core(params, c, u_t, h_mask=None):
        c_in = c if h_mask is None else c * h_mask
        a_f, a_c = jnp.split(u_t + gr.recurrent_matmul(c_in, params["w_h"]), 2, -1)
        f = jax.nn.sigmoid(a_f)
        c = f * c + (1 - f) * jnp.tanh(a_c)
        return c, c, {"forget": f}

    return gr.make_cell(init, core, hidden_size=hidden, kind="forget_only_lstm",
                        project=lambda p, x: x @ p["w_x"] + p["b"],
                        input_size=lambda p: p["w_x"].shape[0])


class Pair(NamedTuple):
    fast: jax.Array
    slow: jax.Array


def nested_cell(hidden):
    """Nested params (a dict of a dict and a tuple), a NamedTuple carry, no input_size, and
    a core without h_mask: a fast tanh unit and a slow leaky average of it."""
    def init(key, input_size):
        k_e, k_r = jax.random.split(key)
        return {"enc": {"kernel": lecun(k_e, (input_size, hidden))},
                "rec": (lecun(k_r, (hidden, hidden)), jnp.full((hidden,), 0.8))}

    def core(params, carry, x_t):
        w_rec, leak = params["rec"]
        fast = jnp.tanh(x_t @ params["enc"]["kernel"] + carry.fast @ w_rec)
        slow = leak * carry.slow + (1 - leak) * fast
        return Pair(fast, slow), slow

    def initial_carry(batch_shape, *, dtype, **_):
        zeros = jnp.zeros((*batch_shape, hidden), dtype)
        return Pair(zeros, zeros)

    return gr.make_cell(init, core, hidden_size=hidden, kind="nested",
                        initial_carry=initial_carry, output=lambda c: c.slow)


class ScaledTanhRNN:
    """A layer class of the user's own, following the cell protocol without gr.Cell."""

    kind = "scaled_tanh"

    def __init__(self, hidden):
        self.hidden_size = self.output_size = hidden

    def init(self, key, input_size):
        k_x, k_h = jax.random.split(key)
        return [lecun(k_x, (input_size, self.hidden_size)),
                0.5 * lecun(k_h, (self.hidden_size, self.hidden_size))]

    def initial_carry(self, batch_shape=(), *, params=None, key=None, dtype=None):
        return jnp.zeros((*batch_shape, self.hidden_size), dtype or jnp.float32)

    def input_size(self, params):
        return params[0].shape[0]

    def project(self, params, x):
        return x @ params[0]

    def recur(self, params, h, u_t, h_mask=None):
        h = jnp.tanh(u_t + (h if h_mask is None else h * h_mask) @ params[1])
        return h, h

    def step(self, params, h, x_t):
        return self.recur(params, h, self.project(params, x_t))

    def output(self, h):
        return h


USER_CELLS = {
    "min_gru_6_lines": min_gru_in_six_lines(5),
    "indrnn": indrnn(5),
    "forget_only_lstm": forget_only_lstm(5),
    "nested": nested_cell(5),
    "own_class": ScaledTanhRNN(5),
}
