"""The LSTM's 2024 descendants: head-wise recurrence, xLSTM's sLSTM and mLSTM, Griffin's RG-LRU
and negative transitions, against NumPy transcriptions of the papers' equations (float64), and
through every part of the library a shipped cell runs in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, to_numpy
from reference import (
    block_diagonal,
    gru_step,
    lstm_step,
    min_gru_negative_step,
    min_lstm_negative_step,
    mlstm_plain,
    mlstm_step,
    rg_lru_step,
    rnn_step,
    slstm_step,
)
from test_unroll import assert_trees_close

import gatedrnn as gr
from gatedrnn.cells import SLSTMCarry
from gatedrnn.cells.products import dense_recurrent

EQ_TOL = 1e-12
I, H, T, B = 3, 8, 50, 2
PARALLEL = gr.ScanOptions(method="parallel")


def _inputs(seed=1, steps=T, scale=1.0, batch=B):
    return scale * jax.random.normal(jax.random.key(seed), (batch, steps, I), jnp.float64)


def _params(cell, scale=0.5, seed=0):
    return randomize(cell.init(jax.random.key(seed), I), jax.random.key(seed + 100), scale)


def _numpy_run(step, carry, xs):
    """``step(carry, x_t) -> carry`` over ``xs [B, T, I]``; the outputs are each carry's
    first part."""
    outs = []
    for t in range(xs.shape[1]):
        carry = step(carry, xs[:, t])
        outs.append(carry[0] if isinstance(carry, tuple) else carry)
    return carry, np.stack(outs, axis=1)


# --- head-wise recurrence -------------------------------------------------------------------

@pytest.mark.parametrize("make, ref", [
    (lambda **k: gr.rnn(H, **k), lambda p, c, x: rnn_step(p, c, x)),
    (lambda **k: gr.lstm(H, **k), lambda p, c, x: lstm_step(p, *c, x)),
    (lambda **k: gr.gru(H, **k), lambda p, c, x: gru_step(p, c, x)),
    (lambda **k: gr.gru(H, reset_after=False, **k), lambda p, c, x: gru_step(p, c, x, False)),
], ids=["rnn", "lstm", "gru", "gru-reset-before"])
def test_heads_make_the_recurrent_matrix_block_diagonal(make, ref):
    """``heads=4`` equals the dense equations with the blocks laid out on the diagonal
    (NumPy, written with loops); ``heads=1`` is today's cell: same params, same values."""
    cell = make(heads=4)
    params = _params(cell)
    assert params["w_h"].shape[0] == 4 and params["w_h"].shape[-1] == H // 4
    xs = _inputs()
    dense = {**to_numpy(params), "w_h": block_diagonal(np.asarray(params["w_h"]))}
    np.testing.assert_allclose(dense["w_h"], dense_recurrent(params["w_h"]), atol=0)
    start = (np.zeros((B, H)), np.zeros((B, H))) if "lstm" in cell.kind else np.zeros((B, H))
    _, expected = _numpy_run(lambda c, x: ref(dense, c, x), start, np.asarray(xs))
    np.testing.assert_allclose(gr.unroll(cell, params, xs)[1], expected, atol=EQ_TOL)
    one, today = make(heads=1), make()
    key = jax.random.key(3)
    assert_trees_close(one.init(key, I), today.init(key, I), tol=0)
    p = _params(today)
    np.testing.assert_array_equal(gr.unroll(one, p, xs)[1], gr.unroll(today, p, xs)[1])
    assert gr.num_params(cell.init(key, I)) < gr.num_params(today.init(key, I))


def test_heads_count_parameters_and_refuse_a_width_they_do_not_divide():
    dense, headed = gr.lstm(64), gr.lstm(64, heads=4)
    count = gr.num_params(headed.init(jax.random.key(0), I))
    assert count == gr.num_params(dense.init(jax.random.key(0), I)) - 4 * 64 * 64 * 3 // 4
    with pytest.raises(ValueError, match="heads=3 must divide hidden_size=64"):
        gr.lstm(64, heads=3)
    with pytest.raises(ValueError, match="proj_size=6"):
        gr.lstm(64, heads=4, proj_size=6)


# --- sLSTM ----------------------------------------------------------------------------------

def _zero_slstm(batch=B, hidden=H):
    return tuple(np.zeros((batch, hidden)) for _ in range(4))


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("scale", [0.5, 30.0], ids=["moderate", "extreme"])
def test_slstm_matches_the_papers_equations(forget_gate, heads, scale):
    """T=50 in float64, with pre-activations of order 1 and of order 100 (exp(100) would
    overflow without the stabiliser)."""
    cell = gr.slstm(H, heads=heads, forget_gate=forget_gate)
    params = _params(cell, scale=scale)
    xs = _inputs(scale=3.0)
    carry, ys = gr.unroll(cell, params, xs)
    ref_carry, expected = _numpy_run(
        lambda c, x: slstm_step(to_numpy(params), c, x, forget_gate), _zero_slstm(),
        np.asarray(xs))
    assert np.all(np.isfinite(ys))
    np.testing.assert_allclose(ys, expected, atol=1e-10)
    for got, want in zip(carry, ref_carry):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_slstm_stays_finite_over_4096_steps_in_float32_with_large_pre_activations():
    cell = gr.slstm(16, heads=4, forget_gate="exp")
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1), 20.0, jnp.float32)
    xs = 5.0 * jax.random.normal(jax.random.key(2), (2, 4096, I), jnp.float32)
    carry, ys = gr.unroll(cell, params, xs)
    assert ys.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in (ys, *carry))
    assert float(jnp.max(jnp.abs(ys))) <= 1.0 + 1e-5  # |o c / n| <= 1: c/n averages tanh's

    grads = jax.grad(lambda p: jnp.sum(gr.unroll(cell, p, xs[:, :512])[1]))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("forget_gate, start", [("sigmoid", "stored"), ("exp", "empty")])
def test_slstm_handwritten_derivative_matches_finite_differences_of_the_equations(
        forget_gate, start):
    """The sLSTM's step carries a derivative written by hand (a custom_jvp, for speed): reverse
    mode, forward mode and second order must be the derivatives of the NumPy equations, in
    every carry part (a loss on the outputs and on the final ``c``, ``n`` and ``m``), from a
    stored carry and from an empty one (the ``n = 0`` rule; the carry is then not moved, as
    the rule is a jump there)."""
    cell = gr.slstm(H, heads=2, forget_gate=forget_gate)
    params, xs = _params(cell, scale=1.0), _inputs(steps=6, scale=2.0)
    if start == "stored":
        k_c, k_n, k_m = jax.random.split(jax.random.key(7), 3)
        carry = SLSTMCarry(jnp.tanh(jax.random.normal(k_c, (B, H), jnp.float64)),
                              jax.random.normal(k_c, (B, H), jnp.float64),
                              1.0 + jax.random.uniform(k_n, (B, H), jnp.float64),
                              jax.random.normal(k_m, (B, H), jnp.float64))
    else:
        carry = SLSTMCarry(*(np.zeros((B, H)) for _ in range(4)))
    weights = np.random.default_rng(0).normal(size=(xs.shape[1] + 3, B, H))
    point = (params, carry, xs)
    direction = jax.tree.map(np.asarray, randomize(point, jax.random.key(6), scale=1.0))
    if start == "empty":
        direction = (direction[0], jax.tree.map(np.zeros_like, carry), direction[2])

    def loss(point):
        params, carry, xs = point
        final, ys = gr.unroll(cell, params, xs, carry)
        total = jnp.sum(weights[:xs.shape[1]].swapaxes(0, 1) * ys)
        return total + sum(jnp.sum(w * v) for w, v in zip(weights[-3:], final[1:]))

    def reference(point):
        params, carry, xs = jax.tree.map(np.asarray, point)
        final, ys = _numpy_run(lambda c, x: slstm_step(to_numpy(params), c, x, forget_gate),
                               tuple(carry), xs)
        total = np.sum(weights[:xs.shape[1]].swapaxes(0, 1) * ys)
        return total + sum(np.sum(w * v) for w, v in zip(weights[-3:], final[1:]))

    def moved(eps):
        return jax.tree.map(lambda v, d: np.asarray(v) + eps * d, point, direction)

    eps = 1e-5
    expected = (reference(moved(eps)) - reference(moved(-eps))) / (2 * eps)
    assert abs(reference(point) - loss(point)) < 1e-10
    grad = jax.grad(loss)(point)
    along = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(along, expected, rtol=1e-7)
    np.testing.assert_allclose(jax.jvp(loss, (point,), (direction,))[1], expected, rtol=1e-7)
    hvp = jax.jvp(jax.grad(loss), (point,), (direction,))[1]
    eps = 1e-6
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), jax.grad(loss)(moved(eps)),
                      jax.grad(loss)(moved(-eps)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), hvp, fd)


# --- mLSTM ----------------------------------------------------------------------------------

def _zero_mlstm(heads, batch=B, hidden=H):
    d = hidden // heads
    return (np.zeros((batch, hidden)), np.zeros((batch, heads, d, d)),
            np.zeros((batch, heads, d)), np.zeros((batch, heads)))


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("heads", [1, 2])
def test_mlstm_matches_the_papers_equations_with_and_without_the_stabiliser(forget_gate,
                                                                              heads):
    cell = gr.mlstm(H, heads=heads, forget_gate=forget_gate)
    params = _params(cell, scale=0.3)
    xs = _inputs()
    p = to_numpy(params)
    carry, ys = gr.unroll(cell, params, xs)
    np.testing.assert_allclose(
        ys, np.swapaxes(mlstm_plain(p, np.swapaxes(np.asarray(xs), 0, 1), heads, forget_gate),
                        0, 1), atol=1e-10)
    ref_carry, expected = _numpy_run(lambda c, x: mlstm_step(p, c, x, heads, forget_gate),
                                     _zero_mlstm(heads), np.asarray(xs))
    np.testing.assert_allclose(ys, expected, atol=EQ_TOL)
    for got, want in zip(carry, ref_carry):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # pre-activations of order 100: the plain equations overflow, the stabilised ones do not
    params = _params(cell, scale=30.0)
    _, ys = gr.unroll(cell, params, xs)
    _, expected = _numpy_run(lambda c, x: mlstm_step(to_numpy(params), c, x, heads, forget_gate),
                             _zero_mlstm(heads), np.asarray(xs))
    assert np.all(np.isfinite(ys))
    np.testing.assert_allclose(ys, expected, rtol=1e-9, atol=1e-9)


RESETS = jax.random.bernoulli(jax.random.key(5), 0.15, (3, T))


@pytest.mark.parametrize("kw", [
    {}, {"lengths": jnp.array([24, 17, 0])}, {"reverse": True},
    {"reverse": True, "lengths": jnp.array([24, 17, 3])}, {"resets": RESETS[:, :24]},
    {"resets": RESETS[:, :24], "lengths": jnp.array([24, 20, 9]), "reverse": True},
], ids=["plain", "lengths", "reverse", "reverse-lengths", "resets", "all"])
def test_mlstm_parallel_form_equals_the_recurrent_one_in_values_carries_and_gradients(kw):
    """Chunks of 7 steps (24 = 3 x 7 + 3: the last chunk padded), each in the quadratic form
    from the previous chunk's carry; the quadratic form over the whole sequence is tested
    below."""
    cell = gr.mlstm(H, heads=2, chunk_size=7)
    params = _params(cell, scale=0.8)
    xs = _inputs(batch=3, steps=24)
    recurrent = gr.unroll(cell, params, xs, **kw)
    parallel = gr.unroll(cell, params, xs, options=PARALLEL, **kw)
    assert_trees_close(parallel, recurrent, tol=1e-10)
    # from a carry of its own (the end of another run)
    start = gr.unroll(cell, params, xs[:, ::-1])[0]
    assert_trees_close(gr.unroll(cell, params, xs, start, options=PARALLEL, **kw),
                       gr.unroll(cell, params, xs, start, **kw), tol=1e-10)
    # a learned initial carry, which a reset returns to, reaches the parallel form
    learned = gr.learned_initial_carry(cell)
    first = jax.tree.map(lambda v: v[0], start)  # one sequence's final carry, unbatched
    p = {"cell": params, "carry_0": first._replace(m=first.m + 0.5)}
    assert_trees_close(gr.unroll(learned, p, xs, options=PARALLEL, **kw),
                       gr.unroll(learned, p, xs, **kw), tol=1e-10)

    def loss(p, x, options):
        carry, ys = gr.unroll(cell, p, x, options=options, **kw)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry.C ** 2)

    assert_trees_close(jax.grad(loss, (0, 1))(params, xs, PARALLEL),
                       jax.grad(loss, (0, 1))(params, xs, None), tol=1e-9)


def test_mlstm_quadratic_form_over_the_whole_sequence_equals_the_recurrent_one():
    cell = gr.mlstm(H, heads=2, chunk_size=None)
    params = _params(cell, scale=0.8)
    xs = _inputs(batch=3, steps=24)
    kw = {"resets": RESETS[:, :24], "lengths": jnp.array([24, 20, 9]), "reverse": True}

    def loss(p, options):
        carry, ys = gr.unroll(cell, p, xs, options=options, **kw)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry.C ** 2)

    assert_trees_close(gr.unroll(cell, params, xs, options=PARALLEL, **kw),
                       gr.unroll(cell, params, xs, **kw), tol=1e-10)
    assert_trees_close(jax.grad(loss)(params, PARALLEL), jax.grad(loss)(params, None),
                       tol=1e-9)


def test_mlstm_parallel_form_is_finite_with_large_gates_in_float32():
    cell = gr.mlstm(16, heads=4)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1), 20.0, jnp.float32)
    xs = jax.random.normal(jax.random.key(2), (2, 256, I), jnp.float32)
    a, b = gr.unroll(cell, params, xs), gr.unroll(cell, params, xs, options=PARALLEL)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves((a, b)))
    np.testing.assert_allclose(b[1], a[1], rtol=1e-3, atol=1e-3)


def test_method_parallel_is_refused_for_a_cell_without_a_parallel_form():
    with pytest.raises(ValueError, match="method='parallel' needs a cell with a whole-sequence"):
        gr.unroll(gr.lstm(4), gr.lstm(4).init(jax.random.key(0), I), _inputs(), options=PARALLEL)
    with pytest.raises(ValueError, match="has none to defer"):
        gr.ScanOptions(method="parallel", backward="deferred")


def test_a_user_cell_with_its_own_parallel_form_runs_under_method_parallel():
    """A cumulative sum written as a step and as a whole-sequence form: make_cell takes the
    form, and resets, lengths and reverse reach it as the documented masks."""
    def init(key, input_size):
        return {"w": jax.random.normal(key, (input_size, 4))}

    def core(params, h, u_t):
        return h + u_t, h + u_t

    def parallel(params, h, us, *, valid, resets, carry_0):
        if valid is not None:
            us = jnp.where(valid[..., None], us, 0.0)
        if resets is None:
            hs = h + jnp.cumsum(us, axis=0)
        else:                    # a reset restarts the sum from carry_0 (zeros here)
            def body(c, inp):
                u, r = inp
                c = jnp.where(r[..., None], carry_0, c) + u
                return c, c
            hs = jax.lax.scan(body, h, (us, resets))[1]
        return hs[-1], hs

    cell = gr.make_cell(init, core, hidden_size=4, project=lambda p, x: x @ p["w"],
                        parallel=parallel)
    params = cell.init(jax.random.key(0), I)
    xs = _inputs(batch=3)
    for kw in ({}, {"reverse": True}, {"resets": RESETS}, {"lengths": jnp.array([T, 5, 0])}):
        assert_trees_close(gr.unroll(cell, params, xs, options=PARALLEL, **kw),
                           gr.unroll(cell, params, xs, **kw), tol=1e-12)


# --- RG-LRU and negative transitions -------------------------------------------------------

@pytest.mark.parametrize("negative", [False, True])
def test_rg_lru_matches_the_papers_equations_and_its_associative_scan(negative):
    cell = gr.rg_lru(H, negative_transitions=negative)
    params = _params(cell)
    xs = _inputs()
    _, expected = _numpy_run(lambda h, x: rg_lru_step(to_numpy(params), h, x,
                                                      negative=negative),
                             np.zeros((B, H)), np.asarray(xs))
    carry, ys = gr.unroll(cell, params, xs)
    np.testing.assert_allclose(ys, expected, atol=EQ_TOL)
    assoc = gr.unroll(cell, params, xs, options=gr.ScanOptions(method="associative"),
                      lengths=jnp.array([T, 7]), reverse=True)
    assert_trees_close(assoc, gr.unroll(cell, params, xs, lengths=jnp.array([T, 7]),
                                        reverse=True), tol=1e-12)
    a = cell.gates(params, jnp.zeros((B, H)), cell.project(params, xs[:, 0]))["transition"]
    assert float(jnp.min(a)) > (-1 if negative else 0) and float(jnp.max(a)) < 1


def test_rg_lru_initial_decays_lie_in_the_papers_range():
    cell = gr.rg_lru(256, a_min=0.9, a_max=0.999)
    lam = np.asarray(cell.init(jax.random.key(0), I)["lam"], np.float64)
    a_c = (1 / (1 + np.exp(-lam))) ** 8
    assert 0.9 - 1e-5 <= a_c.min() and a_c.max() <= 0.999 + 1e-5


@pytest.mark.parametrize("make, ref", [
    (lambda: gr.min_gru(H, negative_transitions=True), min_gru_negative_step),
    (lambda: gr.min_lstm(H, negative_transitions=True), min_lstm_negative_step),
], ids=["min_gru", "min_lstm"])
def test_negative_transitions_of_the_minimal_cells_match_numpy_and_the_associative_scan(
        make, ref):
    cell = make()
    params = _params(cell)
    xs = _inputs()
    _, expected = _numpy_run(lambda h, x: ref(to_numpy(params), h, x), np.zeros((B, H)),
                             np.asarray(xs))
    np.testing.assert_allclose(gr.unroll(cell, params, xs)[1], expected, atol=EQ_TOL)
    assert_trees_close(gr.unroll(cell, params, xs, options=gr.ScanOptions(method="associative")),
                       gr.unroll(cell, params, xs), tol=1e-12)


# --- everywhere a shipped cell runs ---------------------------------------------------------

NEW = {
    "slstm": gr.slstm(H, heads=2),
    "mlstm": gr.mlstm(H, heads=2),
    "rg_lru": gr.rg_lru(H, negative_transitions=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_new_cells_run_through_unroll_options_vmap_compositions_and_wrappers(name):
    cell = NEW[name]
    params = _params(cell)
    xs = _inputs(batch=3, steps=12)
    lengths, resets = jnp.array([12, 5, 0]), RESETS[:, :12]
    plain = gr.unroll(cell, params, xs, lengths=lengths, resets=resets, reverse=True)
    remat = gr.unroll(cell, params, xs, lengths=lengths, resets=resets, reverse=True,
                      options=gr.ScanOptions(remat=3, unroll=2, hoist=True))
    assert_trees_close(remat, plain, tol=1e-12)
    # vmap over seeds: member i equals its own run
    keys = jax.random.split(jax.random.key(0), 3)
    many = jax.vmap(lambda k: gr.unroll(cell, cell.init(k, I), xs)[1])(keys)
    np.testing.assert_allclose(many[1], gr.unroll(cell, cell.init(keys[1], I), xs)[1],
                               rtol=1e-12, atol=1e-12)
    # in a stack and a bidirectional pair, with learned initial carries
    layer = gr.stack([gr.bidirectional(cell, gr.learned_initial_carry(cell)), gr.gru(4)])
    p = layer.init(jax.random.key(1), I)
    carry, ys = gr.unroll(layer, p, xs, lengths=lengths)
    assert ys.shape == (3, 12, 4) and np.all(np.isfinite(ys))
    # gates and per-part gradient norms
    gates = cell.gates(params, cell.initial_carry((3,), params=params),
                       cell.project(params, xs[:, 0]))
    assert gates and all(np.all(np.isfinite(g)) for g in gates.values())
    norms = gr.diagnostics.gradient_norms(cell, params, xs, lambda ys: jnp.sum(ys[:, -1]),
                                          components=True)
    assert len(norms.components) == len(jax.tree.leaves(cell.initial_carry(())))
    assert np.all(np.isfinite(norms.log10[:-1]))
    jacobians = gr.diagnostics.jacobian_norms(cell, params, xs[:, :6])
    assert jacobians.log10.shape == (3, 6) and np.all(np.isfinite(jacobians.log10))


# the RG-LRU and the head-wise LSTM train through the same code as the minGRU and the LSTM
@pytest.mark.slow
@pytest.mark.parametrize("name", ["slstm", "mlstm"])
def test_new_cells_train_and_sweep_and_run_as_flax_modules(name, tmp_path):
    cell = NEW[name]
    config = gr.train.Config(cell=cell, task=gr.tasks.adding(10), steps=20, batch_size=16,
                             eval_every=10, eval_batch_size=32, learning_rate=3e-3)
    if name == "slstm":  # a sweep is the training program vmapped: one cell shows both
        result = gr.sweep(config, seeds=2, grid={"learning_rate": [3e-3, 1e-2]},
                          out_dir=tmp_path / "sweep", progress=False)
        loss = np.asarray(result.metrics["loss"])[:, :, -1], np.asarray(result.initial["loss"])
    else:
        result = jax.jit(gr.train.make_train(config))(jax.random.key(0))
        loss = np.asarray(result.metrics["loss"])[-1], np.asarray(result.initial["loss"])
    assert np.all(np.isfinite(loss[0])) and np.all(loss[0] < loss[1])
    module = gr.modules.Recurrent(cell)
    xs = _inputs(batch=2, steps=6)
    variables = module.init(jax.random.key(0), xs)
    np.testing.assert_allclose(module.apply(variables, xs),
                               gr.unroll(cell, variables["params"]["layer"], xs)[1],
                               rtol=1e-12, atol=1e-12)


def test_recurrent_dropout_masks_the_slstm_and_is_refused_by_the_mlstm():
    xs = _inputs(batch=2, steps=6)
    slstm = gr.recurrent_dropout(NEW["slstm"], 0.5)
    p = slstm.init(jax.random.key(0), I)
    a = gr.unroll(slstm, p, xs, key=jax.random.key(1))[1]
    b = gr.unroll(slstm, p, xs, key=jax.random.key(2))[1]
    assert not np.allclose(a, b)
    mlstm = gr.recurrent_dropout(NEW["mlstm"], 0.5)
    with pytest.raises(ValueError, match="no recurrent matrix"):
        gr.unroll(mlstm, mlstm.init(jax.random.key(0), I), xs, key=jax.random.key(1))
