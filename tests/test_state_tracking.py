"""The state-tracking experiment's own cells and measurements: the (-1, 1) variants of minGRU
and minLSTM built with gr.make_cell, against a NumPy transcription of their equations, under
both unroll methods; the transition values read off a trained cell."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gatedrnn as gr

sys.path.insert(0, str(Path(__file__).parents[1]))

from experiments import state_tracking  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)  # float32, 12 steps


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _g(v):
    return np.where(v >= 0, v + 0.5, _sigmoid(v))


def numpy_loop(name, params, xs, lengths):
    """The docstrings' equations, step by step, the carry frozen past each length."""
    u = np.asarray(xs, np.float64) @ np.asarray(params["w_x"], np.float64) + np.asarray(
        params["b"], np.float64)
    H = u.shape[-1] // (2 if name == "min_gru_neg" else 3)
    h, hs = np.zeros(u.shape[:1] + (H,)), []
    for t in range(u.shape[1]):
        blocks = np.split(u[:, t], u.shape[-1] // H, axis=-1)
        if name == "min_gru_neg":
            z = _sigmoid(blocks[0])
            new = (1 - 2 * z) * h + z * _g(blocks[1])
        else:
            f, i = _sigmoid(blocks[0]), _sigmoid(blocks[1])
            new = (2 * f / (f + i) - 1) * h + i / (f + i) * _g(blocks[2])
        h = np.where((t < lengths)[:, None], new, h)
        hs.append(np.where((t < lengths)[:, None], h, 0.0))
    return h, np.stack(hs, 1)


@pytest.mark.parametrize("name", ["min_gru_neg", "min_lstm_neg"])
def test_negative_variants_equal_their_equations_sequentially_and_associatively(name):
    cell = state_tracking.CELLS[name](5)
    params = cell.init(jax.random.key(0), 3)
    params = jax.tree.map(lambda v: 2.0 * v, params)  # transitions well into (-1, 0)
    params["b"] = jax.random.normal(jax.random.key(2), params["b"].shape)
    xs = jax.random.normal(jax.random.key(1), (4, 12, 3))
    lengths = jnp.array([12, 7, 1, 10])
    want_h, want_ys = numpy_loop(name, params, xs, np.asarray(lengths))
    for method in ("sequential", "associative"):
        h, ys = gr.unroll(cell, params, xs, lengths=lengths, options=gr.ScanOptions(method=method))
        np.testing.assert_allclose(h, want_h, **TOL)
        np.testing.assert_allclose(ys, want_ys, **TOL)
    a = state_tracking.transitions(cell, {"rnn": jax.tree.map(lambda v: v[None], params)}, 3)
    u = np.eye(3) @ np.asarray(params["w_x"]) + np.asarray(params["b"])
    blocks = np.split(u, u.shape[-1] // 5, axis=-1)
    if name == "min_gru_neg":
        want = 1 - 2 * _sigmoid(blocks[0])
    else:
        f, i = _sigmoid(blocks[0]), _sigmoid(blocks[1])
        want = 2 * f / (f + i) - 1
    np.testing.assert_allclose(a[0], want, **TOL)
    assert a.min() < -0.5  # the variants do reach negative transitions


def test_accuracy_is_read_at_each_strings_last_token_by_either_method():
    task = gr.tasks.parity(9, min_len=2)
    cell = state_tracking.min_gru_neg(4)
    model = gr.models.sequence_model(cell, 2)
    params = jax.vmap(lambda k: model.init(k, 2))(jax.random.split(jax.random.key(0), 3))
    xs, targets, lengths = task.sample(jax.random.key(1), 64)
    got = {m: state_tracking.accuracy_fn(cell, model, m)(params, xs, targets, lengths)
           for m in ("sequential", "associative")}
    for s in range(3):
        p = jax.tree.map(lambda v: v[s], params)
        logits = model.apply(p, xs, lengths=lengths)  # [B, O] at step lengths - 1
        want = float(jnp.mean(jnp.argmax(logits, -1) == targets))
        assert float(got["sequential"][s]) == pytest.approx(want)
        assert float(got["associative"][s]) == pytest.approx(want)
