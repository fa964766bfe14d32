"""Cells: parameter tables, equations against a float64 NumPy transcription, init options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, to_numpy
from reference import gru_step, lstm_step, min_gru_step, min_lstm_step, rnn_step

import gatedrnn as gr

EQ_TOL = 1e-12  # float64 against float64: only summation order differs

I, H = 5, 7


@pytest.mark.parametrize(
    "cell, expected",
    [
        (gr.rnn(H), {"w_x": (I, H), "w_h": (H, H), "b": (H,)}),
        (gr.lstm(H), {"w_x": (I, 4 * H), "w_h": (H, 4 * H), "b": (4 * H,)}),
        (gr.lstm(H, peepholes=True), {"w_x": (I, 4 * H), "w_h": (H, 4 * H), "b": (4 * H,),
                                      "p_i": (H,), "p_f": (H,), "p_o": (H,)}),
        (gr.lstm(H, coupled=True), {"w_x": (I, 3 * H), "w_h": (H, 3 * H), "b": (3 * H,)}),
        (gr.lstm(H, coupled=True, peepholes=True),
         {"w_x": (I, 3 * H), "w_h": (H, 3 * H), "b": (3 * H,), "p_f": (H,), "p_o": (H,)}),
        (gr.gru(H), {"w_x": (I, 3 * H), "w_h": (H, 3 * H), "b": (3 * H,), "b_hn": (H,)}),
        (gr.gru(H, reset_after=False), {"w_x": (I, 3 * H), "w_h": (H, 3 * H), "b": (3 * H,)}),
    ],
)
def test_param_names_and_shapes_match_docstring_table(cell, expected):
    params = cell.init(jax.random.key(0), I)
    assert {k: v.shape for k, v in params.items()} == expected
    assert all(v.dtype == jnp.float32 for v in params.values())
    assert gr.num_params(params) == sum(int(np.prod(s)) for s in expected.values())


def test_lstm_forget_bias_is_stored_in_params_and_only_in_the_forget_block():
    b = gr.lstm(H, forget_bias=1.5).init(jax.random.key(0), I)["b"]
    np.testing.assert_array_equal(b[H:2 * H], 1.5)
    np.testing.assert_array_equal(np.delete(np.asarray(b), np.s_[H:2 * H]), 0.0)


def test_chrono_init_spreads_forget_time_constants_over_the_range():
    t_max = 100.0
    b = gr.lstm(64, chrono_t_max=t_max).init(jax.random.key(0), I)["b"]
    b_i, b_f = np.asarray(b[:64]), np.asarray(b[64:128])
    np.testing.assert_allclose(b_i, -b_f)
    time_constant = 1.0 + np.exp(b_f)
    assert time_constant.min() >= 2.0 - 1e-5 and time_constant.max() <= t_max + 1e-3
    assert time_constant.max() > 30  # spread, not clustered at one value
    b_z = gr.gru(64, chrono_t_max=t_max).init(jax.random.key(0), I)["b"][64:128]
    assert np.all(np.asarray(b_z) >= 0.0)


def test_orthogonal_recurrent_init_is_orthogonal_per_gate_block():
    w_h = np.asarray(gr.lstm(H).init(jax.random.key(0), I)["w_h"], np.float64)
    for k in range(4):
        block = w_h[:, k * H:(k + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)


def test_identity_recurrent_init_and_scale():
    params = gr.rnn(H, activation="relu", recurrent_init="identity", recurrent_scale=0.5).init(
        jax.random.key(0), I)
    np.testing.assert_array_equal(params["w_h"], 0.5 * np.eye(H))


def _random_case(cell, batch_shape=(3,), seed=0):
    k_p, k_r, k_x, k_c = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k_p, I), k_r)
    x = jax.random.normal(k_x, (*batch_shape, I), jnp.float64)
    carry = jax.tree.map(
        lambda z: jax.random.normal(k_c, z.shape, jnp.float64),
        cell.initial_carry(batch_shape, dtype=jnp.float64),
    )
    return params, carry, x


@pytest.mark.parametrize("activation, np_act", [
    ("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0)), ("identity", lambda v: v),
    (jnp.sin, np.sin),
])
def test_rnn_step_matches_numpy_equations(activation, np_act):
    cell = gr.rnn(H, activation=activation)
    params, h, x = _random_case(cell)
    _, h_t = cell.step(params, h, x)
    expected = rnn_step(to_numpy(params), np.asarray(h), np.asarray(x), np_act)
    np.testing.assert_allclose(h_t, expected, atol=EQ_TOL)


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("coupled", [False, True])
def test_lstm_step_matches_numpy_equations(peepholes, coupled):
    cell = gr.lstm(H, peepholes=peepholes, coupled=coupled)
    params, carry, x = _random_case(cell)
    new, h_t = cell.step(params, carry, x)
    h_ref, c_ref = lstm_step(to_numpy(params), np.asarray(carry.h), np.asarray(carry.c),
                             np.asarray(x), peepholes, coupled)
    np.testing.assert_allclose(h_t, h_ref, atol=EQ_TOL)
    np.testing.assert_allclose(new.h, h_ref, atol=EQ_TOL)
    np.testing.assert_allclose(new.c, c_ref, atol=EQ_TOL)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_step_matches_numpy_equations(reset_after):
    cell = gr.gru(H, reset_after=reset_after)
    params, h, x = _random_case(cell)
    new, h_t = cell.step(params, h, x)
    expected = gru_step(to_numpy(params), np.asarray(h), np.asarray(x), reset_after)
    np.testing.assert_allclose(h_t, expected, atol=EQ_TOL)
    np.testing.assert_allclose(new, expected, atol=EQ_TOL)


def _reference_loss(cell, params, carry, xs, weights):
    """``Σ_t weights_t · h_t`` (and ``· c_T`` for the LSTM) over a NumPy run of the equations."""
    p, xs = to_numpy(params), np.asarray(xs)
    if cell.kind == "lstm":
        h, c = (np.asarray(v) for v in carry)
    else:
        h = np.asarray(carry)
    loss = 0.0
    for t in range(xs.shape[1]):
        if cell.kind == "lstm":
            h, c = lstm_step(p, h, c, xs[:, t], coupled=cell.config["coupled"])
        else:
            step = {"gru": gru_step, "min_gru": min_gru_step, "min_lstm": min_lstm_step}
            h = step[cell.kind](p, h, xs[:, t])
        loss += np.sum(weights[t] * h)
    return loss + (np.sum(weights[-1] * c) if cell.kind == "lstm" else 0.0)


@pytest.mark.parametrize("cell", [gr.lstm(H), gr.lstm(H, coupled=True), gr.gru(H),
                                  gr.min_gru(H), gr.min_lstm(H)],
                         ids=["lstm", "lstm-coupled", "gru", "min_gru", "min_lstm"])
def test_handwritten_derivatives_match_finite_differences_of_the_equations(cell):
    # The LSTM's, GRU's, minGRU's and minLSTM's steps carry a derivative written by hand (a
    # custom_jvp): reverse mode, forward mode and second order must all be the equations'
    # own derivatives.
    params, carry, x = _random_case(cell)
    xs = jax.random.normal(jax.random.key(5), (3, 4, I), jnp.float64)
    weights = np.random.default_rng(0).normal(size=(xs.shape[1] + 1, 3, H))
    point = (params, carry, xs)
    direction = jax.tree.map(np.asarray, randomize(point, jax.random.key(6), scale=1.0))

    def loss(point):
        params, carry, xs = point
        final, ys = gr.unroll(cell, params, xs, carry)
        total = jnp.sum(weights[:-1].swapaxes(0, 1) * ys)
        return total + (jnp.sum(weights[-1] * final.c) if cell.kind == "lstm" else 0.0)

    def moved(eps):
        return jax.tree.map(lambda v, d: np.asarray(v) + eps * d, point, direction)

    eps = 1e-5
    expected = (_reference_loss(cell, *moved(eps), weights)
                - _reference_loss(cell, *moved(-eps), weights)) / (2 * eps)
    assert abs(_reference_loss(cell, *point, weights) - loss(point)) < 1e-12
    grad = jax.grad(loss)(point)
    along = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(along, expected, rtol=1e-8)
    np.testing.assert_allclose(jax.jvp(loss, (point,), (direction,))[1], expected, rtol=1e-8)
    hvp = jax.jvp(jax.grad(loss), (point,), (direction,))[1]
    eps = 1e-6  # the gradient's third derivative is large along a unit direction in everything
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), jax.grad(loss)(moved(eps)),
                      jax.grad(loss)(moved(-eps)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), hvp, fd)


@pytest.mark.parametrize("cell", [gr.rnn(H), gr.lstm(H), gr.gru(H), gr.gru(H, reset_after=False)])
def test_step_is_recur_after_project(cell):
    params, carry, x = _random_case(cell)
    a = cell.step(params, carry, x)
    b = cell.recur(params, carry, cell.project(params, x))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_gates_report_the_values_used_by_the_step():
    cell = gr.lstm(H)
    params, carry, x = _random_case(cell)
    gates = cell.gates(params, carry, cell.project(params, x))
    new, _ = cell.step(params, carry, x)
    expected_c = gates["forget"] * carry.c + gates["input"] * gates["candidate"]
    np.testing.assert_allclose(new.c, expected_c, atol=EQ_TOL)
    np.testing.assert_allclose(new.h, gates["output"] * jnp.tanh(new.c), atol=EQ_TOL)


@pytest.mark.parametrize("cell", [
    gr.rnn(H, dtype=jnp.bfloat16), gr.lstm(H, dtype=jnp.bfloat16),
    gr.gru(H, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16),
])
def test_bfloat16_computation_runs_and_stays_close_to_float32(cell):
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (2, 6, I), jnp.float32)
    _, ys = gr.unroll(cell, params, xs)
    assert ys.dtype == jnp.bfloat16
    f32 = jax.tree.map(lambda v: v.astype(jnp.float32), params)
    _, ys32 = gr.unroll(getattr(gr, cell.kind)(H), f32, xs)
    np.testing.assert_allclose(np.asarray(ys, np.float32), ys32, atol=0.05)


def test_unknown_activation_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="activation must be one of .*'tanh'.*got 'sigmoidal'"):
        gr.rnn(H, activation="sigmoidal")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_hidden_size_is_rejected(bad):
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        gr.lstm(bad)


def test_bad_recurrent_init_is_rejected():
    with pytest.raises(ValueError, match="recurrent_init must be"):
        gr.gru(H, recurrent_init="glorot").init(jax.random.key(0), I)


def test_step_rejects_wrong_feature_size_naming_both_sizes():
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError,
                       match=r"last axis must be the 5 input features.*'w_x': \[5, 28\]"):
        cell.step(params, cell.initial_carry((2,)), jnp.zeros((2, 4)))


def _plain_min_gru(u, h):
    z, v = jax.nn.sigmoid(u[..., :H]), u[..., H:]
    return (1.0 - z) * h + z * jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def _plain_min_lstm(u, h):
    f, i, v = jax.nn.sigmoid(u[..., :H]), jax.nn.sigmoid(u[..., H:2 * H]), u[..., 2 * H:]
    return f / (f + i) * h + i / (f + i) * jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


@pytest.mark.parametrize("cell, plain", [(gr.min_gru(H), _plain_min_gru),
                                         (gr.min_lstm(H), _plain_min_lstm)],
                         ids=["min_gru", "min_lstm"])
def test_min_cells_handwritten_derivative_is_autodiffs_at_the_kink_of_g(cell, plain):
    # g(v) = v + 0.5 | σ(v) has a kink at 0, where autodiff takes the v >= 0 branch's slope
    params, h, x = _random_case(cell)
    u = cell.project(params, x)
    u = u.at[..., ::2].set(0.0)  # every other pre-activation of every block exactly at 0
    weights = jax.random.normal(jax.random.key(7), h.shape, h.dtype)

    def ours(u, h):
        return jnp.sum(weights * cell.recur(params, h, u)[1])

    def reference(u, h):
        return jnp.sum(weights * plain(u, h))

    np.testing.assert_allclose(ours(u, h), reference(u, h), rtol=1e-12)
    for a, b in zip(jax.grad(ours, (0, 1))(u, h), jax.grad(reference, (0, 1))(u, h)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
