"""Cells linear in their state (minGRU, minLSTM, LRU) and the associative scan; episode resets
inside a sequence for cells, stacks and bidirectional pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, scan_kw, to_numpy, x64
from reference import lru_step, min_gru_step, min_lstm_step
from test_unroll import assert_trees_close, python_loop
from user_cells import indrnn

import gatedrnn as gr

EQ_TOL = 1e-12  # float64 against float64
ASSOC_TOL = 1e-5  # float32: the parallel scan sums in another order than the sequential one
I, H, T = 3, 4, 11

LINEAR = {
    "min_gru": gr.min_gru(H),
    "min_lstm": gr.min_lstm(H),
    "lru": gr.lru(H),
    "lru_real": gr.lru(H, complex_state=False),
    "learned_min_gru": gr.learned_initial_carry(gr.min_gru(H)),
}


def _case(cell, batch_shape=(4,), dtype=jnp.float64, seed=0, scale=0.5):
    k_p, k_r, k_x = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p, I)
    if scale:
        params = randomize(params, k_r, scale, dtype)
    xs = jax.random.normal(k_x, (*batch_shape, T, I), dtype)
    return params, xs


def test_min_gru_min_lstm_and_lru_steps_match_numpy_equations():
    rng = np.random.default_rng(0)
    x, h = rng.normal(size=(2, I)), rng.normal(size=(2, H))
    for cell, ref in [(gr.min_gru(H), min_gru_step), (gr.min_lstm(H), min_lstm_step)]:
        params, _ = _case(cell)
        np.testing.assert_allclose(cell.step(params, jnp.asarray(h), jnp.asarray(x))[1],
                                   ref(to_numpy(params), h, x), atol=EQ_TOL)
    for complex_state in (True, False):
        cell = gr.lru(H, complex_state=complex_state)
        params, _ = _case(cell)
        s = h + 1j * rng.normal(size=(2, H)) if complex_state else h
        new, y = cell.step(params, jnp.asarray(s), jnp.asarray(x))
        s_ref, y_ref = lru_step(to_numpy(params), s, x, complex_state)
        np.testing.assert_allclose(new, s_ref, atol=EQ_TOL)
        np.testing.assert_allclose(y, y_ref, atol=EQ_TOL)


def test_lru_eigenvalues_lie_on_the_initial_ring_and_lyapunov_exponents_are_their_logs():
    cell = gr.lru(64, r_min=0.5, r_max=0.9)
    params = cell.init(jax.random.key(0), I)
    magnitude = np.exp(-np.exp(np.asarray(params["nu_log"], np.float64)))
    assert 0.5 - 1e-6 <= magnitude.min() and magnitude.max() <= 0.9 + 1e-6
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - magnitude**2),
                               rtol=1e-5)
    small = gr.lru(3)
    p = small.init(jax.random.key(1), I)
    xs = jax.random.normal(jax.random.key(2), (1, 20, I))
    exponents = gr.diagnostics.lyapunov_exponents(small, p, xs)[0]
    # each complex eigenvalue is a rotation-scaling of a plane: two equal exponents log|λ|
    expected = np.sort(np.repeat(-np.exp(np.asarray(p["nu_log"], np.float64)), 2))[::-1]
    np.testing.assert_allclose(exponents, expected, atol=1e-6)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("kw", [
    dict(), dict(reverse=True), dict(lengths=[T, 6, 1, 0]),
    dict(lengths=[T, 6, 1, 0], reverse=True), dict(resets=True), dict(resets=True, reverse=True),
    dict(resets=True, lengths=[T, 6, 1, 0], reverse=True),
], ids=lambda kw: "-".join(kw) or "plain")
def test_associative_scan_equals_the_sequential_scan_in_values_and_gradients(name, kw):
    cell = LINEAR[name]
    params, xs = _case(cell, dtype=jnp.float32)
    kw = dict(kw)
    if "lengths" in kw:
        kw["lengths"] = jnp.asarray(kw["lengths"])
    if kw.get("resets"):
        kw["resets"] = jax.random.bernoulli(jax.random.key(5), 0.3, xs.shape[:-1])
    carry = jax.tree.map(lambda v: v + 0.3, cell.initial_carry((4,), params=params,
                                                               dtype=jnp.float32))

    def run(p, method):
        return gr.unroll(cell, p, xs, carry, **scan_kw(**kw, method=method))

    assert_trees_close(run(params, "associative"), run(params, "sequential"), ASSOC_TOL)
    grad = jax.grad(lambda p, m: jnp.sum(jnp.sin(run(p, m)[1])))
    assert_trees_close(grad(params, "associative"), grad(params, "sequential"), ASSOC_TOL)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "lru"])
def test_associative_scan_second_order_and_forward_mode_equal_the_sequential(name):
    # the minGRU's and minLSTM's derivatives are hand-written rules that take symbolic zeros,
    # which the parallel scan's coefficients rely on: their own derivatives must hold too
    cell = LINEAR[name]
    params, xs = _case(cell)
    direction = randomize(params, jax.random.key(3), 0.5, jnp.float64)

    def loss(p, method):
        return jnp.sum(jnp.sin(gr.unroll(cell, p, xs, options=gr.ScanOptions(method=method))[1]))

    for derivative in (lambda m: jax.jvp(jax.grad(lambda p: loss(p, m)), (params,),
                                         (direction,))[1],
                       lambda m: jax.jacfwd(lambda p: loss(p, m))(params)):
        assert_trees_close(derivative("associative"), derivative("sequential"), EQ_TOL)


def test_associative_scan_is_stable_over_thousands_of_steps_in_float32():
    cell = gr.min_gru(8)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (2, 4096, I))
    # the product of 4096 forget factors (1 - z) underflows float32: a prefix-product form
    # would divide by zero
    seq = gr.unroll(cell, params, xs)[1]
    par = gr.unroll(cell, params, xs, options=gr.ScanOptions(method="associative"))[1]
    assert np.isfinite(par).all()
    np.testing.assert_allclose(par, seq, atol=1e-5)


def _user_linear_cell():
    """A gated linear recurrence built with the public constructor, whose input half is a
    pair: ``h_t = sigmoid(a_t) * h_{t-1} + b_t``."""
    def init(key, input_size):
        return {"w": jax.random.normal(key, (input_size, 2 * H)) / input_size ** 0.5}

    def project(params, x):
        a, b = jnp.split(x @ params["w"], 2, axis=-1)
        return {"a": a, "b": b}

    def core(params, h, u_t):
        h = jax.nn.sigmoid(u_t["a"]) * h + u_t["b"]
        return h, h

    return gr.make_cell(init, core, hidden_size=H, project=project, linear=True)


@pytest.mark.parametrize("name", ["user", "mlstm"])
def test_training_unrolls_the_layer_by_the_configs_options(name):
    """``gr.train.Config(options=...)`` reaches every unroll of training and evaluation: a
    user-built linear cell trained with the associative scan, and the mLSTM in its parallel
    form, train as they do sequentially (the same losses and params, to float32 rounding)."""
    cell, method = ((_user_linear_cell(), "associative") if name == "user"
                    else (gr.mlstm(H, heads=2), "parallel"))
    base = dict(cell=cell, task=gr.tasks.modular_sum(8, modulus=2), steps=10, batch_size=8,
                eval_every=5, eval_batch_size=16, learning_rate=1e-2)
    runs = [jax.jit(gr.train.make_train(gr.train.Config(**base, options=options)))(
        jax.random.key(0)) for options in (None, gr.ScanOptions(method=method))]
    for key in ("loss", "train_loss"):
        np.testing.assert_allclose(runs[1].metrics[key], runs[0].metrics[key], rtol=1e-4)
    assert_trees_close(runs[1].params, runs[0].params, tol=1e-4)
    bad = "parallel" if name == "user" else "associative"  # the one the cell has not
    with pytest.raises(ValueError, match=f"method={bad!r} needs a cell"):
        jax.eval_shape(gr.train.make_train(gr.train.Config(
            **base, options=gr.ScanOptions(method=bad))), jax.random.key(0))


@pytest.mark.parametrize("batch_shape", [(), (2, 3)])
def test_associative_scan_of_a_user_cell_with_a_pytree_input_half_equals_the_sequential(
        batch_shape):
    cell = _user_linear_cell()
    params, xs = _case(cell, batch_shape=batch_shape, dtype=jnp.float32, scale=0)

    def run(p, method):
        return gr.unroll(cell, p, xs, options=gr.ScanOptions(method=method))

    assert_trees_close(run(params, "associative"), run(params, "sequential"), ASSOC_TOL)
    grad = jax.grad(lambda p, m: jnp.sum(jnp.sin(run(p, m)[1])))
    assert_trees_close(grad(params, "associative"), grad(params, "sequential"), ASSOC_TOL)


def _user_custom_jvp_cell():
    """A user's linear cell whose step has its own derivative rule (``jax.custom_jvp``), as
    the shipped minGRU's and minLSTM's do: ``h_t = sigmoid(u_t) * h_{t-1} + 0.1 u_t``."""
    @jax.custom_jvp
    def decay(u, h):
        return jax.nn.sigmoid(u) * h

    @decay.defjvp
    def _(primals, tangents):
        (u, h), (du, dh) = primals, tangents
        s = jax.nn.sigmoid(u)
        return s * h, s * dh + s * (1 - s) * h * du

    def init(key, input_size):
        return {"w": jax.random.normal(key, (input_size, H)) / input_size ** 0.5}

    def core(params, h, u_t):
        h = decay(u_t, h) + 0.1 * u_t
        return h, h

    return gr.make_cell(init, core, hidden_size=H, project=lambda p, x: x @ p["w"], linear=True)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "lru", "user_custom_jvp"])
@pytest.mark.parametrize("float64", [False, True])
def test_associative_scan_under_vmap_and_jit_in_either_precision(name, float64):
    # Regression: the linearity probe ran under the caller's vmap, where a custom_jvp call
    # stayed a batched tracer and the probe failed (float32, as an experiment's accuracy over
    # seeds is computed). It is now a program of its own.
    cell = _user_custom_jvp_cell() if name == "user_custom_jvp" else LINEAR[name]
    dtype = jnp.float64 if float64 else jnp.float32
    with x64(float64):
        params = jax.vmap(lambda k: cell.init(k, I))(jax.random.split(jax.random.key(0), 3))
        xs = jax.random.normal(jax.random.key(1), (2, T, I), dtype)

        def loss(p, method):
            ys = gr.unroll(cell, p, xs, options=gr.ScanOptions(method=method))[1]
            return jnp.sum(jnp.sin(ys))

        many = jax.jit(jax.vmap(loss, (0, None)), static_argnums=1)
        assoc, seq = many(params, "associative"), many(params, "sequential")
        assert assoc.dtype == dtype
        # the LRU's transition comes from its float32 params alone, so it stays complex64
        tol = EQ_TOL if float64 and name != "lru" else ASSOC_TOL
        np.testing.assert_allclose(assoc, seq, rtol=tol, atol=tol)
        grads = jax.jit(jax.vmap(jax.grad(loss), (0, None)), static_argnums=1)
        assert_trees_close(grads(params, "associative"), grads(params, "sequential"), tol)


@pytest.mark.parametrize("cell", [gr.lstm(H), indrnn(H), gr.recurrent_dropout(gr.min_gru(H), 0.1)])
def test_associative_scan_refuses_cells_that_are_not_linear(cell):
    params, xs = _case(cell)
    with pytest.raises(ValueError, match="method='associative' needs a cell whose new carry is "
                                         "linear"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(method="associative"))
    with pytest.raises(ValueError, match="method must be one of"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(method="prefix"))
    # "parallel" is a method now, for cells with a whole-sequence form; these have none
    with pytest.raises(ValueError, match="method='parallel' needs a cell with a whole-sequence"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(method="parallel"))


def _episodes(resets_b):
    """[(start, end)] of each episode in one sequence (an episode also starts at 0)."""
    starts = [0] + [t for t in range(1, len(resets_b)) if resets_b[t]]
    return list(zip(starts, starts[1:] + [len(resets_b)]))


def _per_episode(layer, params, xs, resets, reverse=False, lengths=None):
    """Each episode of each sequence (cut at its length) run on its own from the layer's
    initial carry; zeros past the length."""
    ys = np.zeros((*xs.shape[:-1], layer.output_size))
    for b in range(xs.shape[0]):
        n = xs.shape[1] if lengths is None else int(lengths[b])
        for start, end in _episodes(np.asarray(resets[b, :n])):
            _, y = gr.unroll(layer, params, xs[b:b + 1, start:end], reverse=reverse)
            ys[b, start:end] = y[0]
    return ys


RESET_LAYERS = {
    "lstm": gr.lstm(H),
    "learned_gru": gr.learned_initial_carry(gr.gru(H)),
    "indrnn": indrnn(H),
    "stack": gr.stack([gr.gru(H), gr.learned_initial_carry(gr.lstm(3))]),
    "bidirectional": gr.bidirectional(gr.lstm(H), gr.learned_initial_carry(gr.gru(3))),
}


@pytest.mark.parametrize("name", RESET_LAYERS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, np.array([T, 4, 9, 0])])
def test_resets_equal_running_each_episode_separately(name, reverse, lengths):
    layer = RESET_LAYERS[name]
    params, xs = _case(layer)
    resets = np.zeros((4, T), bool)
    resets[0, [3, 4, 9]] = resets[1, 0] = resets[1, 6] = resets[2, 5] = resets[3, 2] = True
    _, ys = gr.unroll(layer, params, xs, resets=jnp.asarray(resets), reverse=reverse,
                      lengths=lengths)
    np.testing.assert_allclose(ys, _per_episode(layer, params, xs, resets, reverse, lengths),
                               atol=EQ_TOL)
    if name == "lstm":  # a reset at step 0 discards a given carry
        carry = jax.tree.map(lambda v: v + 1.0, layer.initial_carry((4,), dtype=xs.dtype))
        first = jnp.asarray(resets).at[:, 0].set(True)
        assert_trees_close(gr.unroll(layer, params, xs, carry, resets=first),
                           gr.unroll(layer, params, xs, resets=first))


def test_resets_keep_the_sequences_dropout_mask_and_respect_lengths():
    cell = gr.recurrent_dropout(gr.lstm(H), 0.5)
    params, xs = _case(cell)
    key = jax.random.key(4)
    resets = jnp.zeros((4, T), bool).at[:, 5].set(True)
    carry, ys = gr.unroll(cell, params, xs, resets=resets, key=key)
    mask = cell.initial_carry((4,), key=key, dtype=xs.dtype).mask
    np.testing.assert_array_equal(carry.mask, mask)
    # the episode after the reset runs with the same mask, from the inner cell's zeros
    fresh = gr.DropoutCarry(gr.lstm(H).initial_carry((4,), dtype=xs.dtype), mask)
    _, tail = gr.unroll(cell, params, xs[:, 5:], fresh)
    np.testing.assert_allclose(ys[:, 5:], tail, atol=EQ_TOL)
    # resets past a sequence's length change nothing
    lengths = jnp.array([T, 4, 5, 2])
    late = jnp.zeros((4, T), bool).at[1, 6].set(True).at[3, 2].set(True)
    assert_trees_close(gr.unroll(cell, params, xs, lengths=lengths, resets=late, key=key),
                       gr.unroll(cell, params, xs, lengths=lengths, key=key))


def test_bad_resets_are_rejected():
    cell = gr.gru(H)
    params, xs = _case(cell)
    with pytest.raises(TypeError, match="resets must be a boolean array"):
        gr.unroll(cell, params, xs, resets=jnp.zeros((4, T), jnp.int32))
    with pytest.raises(ValueError, match=r"resets must have the shape \(4, 11\) of xs"):
        gr.unroll(cell, params, xs, resets=jnp.zeros((T, 4), bool))


def test_stack_step_with_a_key_applies_dropout_between_layers():
    net = gr.stack([gr.gru(H), gr.gru(H)], dropout=0.5)
    params, xs = _case(net)
    carry = net.initial_carry((4,), dtype=xs.dtype)
    x_t = xs[:, 0]
    plain = net.step(params, carry, x_t)
    assert_trees_close(plain, python_loop(net, params, xs[:, :1])[0:1] + (plain[1],))
    key = jax.random.key(0)
    dropped = net.step(params, carry, x_t, key=key)
    c0, y0 = net.layers[0].step(params[0], carry[0], x_t)
    keep = jax.random.bernoulli(jax.random.split(key, 4)[3], 0.5, y0.shape)
    c1, y1 = net.layers[1].step(params[1], carry[1], y0 * keep / 0.5)
    assert_trees_close(dropped, ((c0, c1), y1))
    assert not np.allclose(dropped[1], plain[1])
