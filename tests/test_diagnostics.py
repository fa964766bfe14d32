"""Diagnostics against analytic cases and brute-force autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, x64

import gatedrnn as gr
from gatedrnn import diagnostics as dg

LOG_TOL = 1e-8  # float64 log10 norms against autodiff references
I, H, B, T = 3, 4, 2, 8


def _linear_rnn(a, hidden=H):
    cell = gr.rnn(hidden, activation="identity")
    params = cell.init(jax.random.key(0), I)
    params["w_h"] = a * jnp.eye(hidden)
    return cell, params


def _xs(seed=1, batch=B, steps=T):
    return jax.random.normal(jax.random.key(seed), (batch, steps, I), jnp.float64)


@pytest.mark.parametrize("a", [0.5, 1.3])
def test_linear_rnn_jacobian_norms_and_lyapunov_are_analytic(a):
    cell, params = _linear_rnn(a)
    lags = np.arange(T)[::-1]
    spectral = dg.jacobian_norms(cell, params, _xs())
    np.testing.assert_allclose(spectral.log10, np.broadcast_to(lags * np.log10(a), (B, T)),
                               atol=LOG_TOL)
    fro = dg.jacobian_norms(cell, params, _xs(), ord="fro")
    np.testing.assert_allclose(fro.log10, np.broadcast_to(lags * np.log10(a) + 0.5 * np.log10(H),
                                                          (B, T)), atol=LOG_TOL)
    np.testing.assert_allclose(dg.lyapunov_exponents(cell, params, _xs()), np.log(a),
                               atol=LOG_TOL)
    svals = dg.jacobian_spectrum(cell, params, _xs())
    np.testing.assert_allclose(svals, a, atol=LOG_TOL)


def test_linear_rnn_gradient_norms_are_analytic():
    cell, params = _linear_rnn(0.7)
    # L = sum of the last output: dL/dh_{T-1} is all ones, and dL/dh_t = 0.7^(T-1-t) * ones
    norms = dg.gradient_norms(cell, params, _xs(), lambda ys: ys[:, -1].sum())
    expected = np.arange(T)[::-1] * np.log10(0.7) + 0.5 * np.log10(B * H)
    np.testing.assert_allclose(norms.log10, expected, atol=LOG_TOL)
    assert norms.numerics == "float64, log-space products"


@pytest.mark.parametrize("cell", [gr.lstm(H), gr.gru(H), gr.gru(H, reset_after=False)])
def test_jacobian_norms_match_jacfwd_of_the_remaining_steps(cell):
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1))
    xs = _xs()
    norms = dg.jacobian_norms(cell, params, xs)
    fro = dg.jacobian_norms(cell, params, xs, ord="fro")
    for b in range(B):
        for t in range(T):
            def rest(carry, b=b, t=t):
                return gr.unroll(cell, params, xs[b, t + 1:], carry)[0]
            start = gr.unroll(cell, params, xs[b, :t + 1])[0]
            if t == T - 1:
                jac = np.eye(2 * H if cell.kind == "lstm" else H)
            else:
                tree = jax.jacfwd(rest)(start)
                jac = np.block([[np.asarray(tree[i][j]) for j in range(len(start))]
                                for i in range(len(start))]) if cell.kind == "lstm" else tree
            np.testing.assert_allclose(norms.log10[b, t], np.log10(np.linalg.norm(jac, 2)),
                                       atol=LOG_TOL)
            np.testing.assert_allclose(fro.log10[b, t], np.log10(np.linalg.norm(jac, "fro")),
                                       atol=LOG_TOL)


def _loss(ys):
    return jnp.sum(jnp.sin(ys) * jnp.linspace(0.5, 1.5, ys.shape[1])[:, None])


@pytest.mark.parametrize("cell", [gr.rnn(H), gr.lstm(H), gr.gru(H)])
def test_gradient_norms_match_restarting_the_scan_at_each_step(cell):
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1))
    xs = _xs()
    lengths = jnp.array([T, 5])
    norms = dg.gradient_norms(cell, params, xs, _loss, lengths=lengths, components=True)
    for t in range(T):
        head_carry, head_ys = gr.unroll(cell, params, xs[:, :t + 1], lengths=jnp.minimum(
            lengths, t + 1))

        def loss_from(carry_t, t=t, head_ys=head_ys):
            # carry_t is the carry after step t; its output y_t is re-derived from it
            y_t = jnp.where((t < lengths)[:, None], cell.output(carry_t), 0.0)
            _, tail = gr.unroll(cell, params, xs[:, t + 1:], carry_t,
                                lengths=jnp.clip(lengths - t - 1, 0, T - t - 1))
            return _loss(jnp.concatenate([head_ys[:, :t], y_t[:, None], tail], axis=1))

        grad = jax.grad(loss_from)(head_carry)
        total = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grad)))
        np.testing.assert_allclose(norms.log10[t], np.log10(total), atol=LOG_TOL)
        for name, leaf in zip(norms.components, jax.tree.leaves(grad)):
            with np.errstate(divide="ignore"):  # the last c gets no gradient: log10(0) = -inf
                expected = np.log10(np.linalg.norm(leaf))
            np.testing.assert_allclose(norms.components[name][t], expected, atol=LOG_TOL)
    assert set(norms.components) == ({"h", "c"} if cell.kind == "lstm" else {"h"})


def test_gradient_norms_equal_zero_perturbation_autodiff():
    """The formulation the issue names: d L / d eps_t with eps_t added to each step's carry."""
    cell = gr.lstm(H)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(2))
    xs = _xs()

    def loss_of_eps(eps):
        def body(c, inp):
            u_t, e_t = inp
            c, _ = cell.recur(params, c, u_t)
            c = jax.tree.map(jnp.add, c, e_t)
            return c, cell.output(c)

        us = cell.project(params, jnp.moveaxis(xs, 1, 0))
        _, ys = jax.lax.scan(body, cell.initial_carry((B,), dtype=xs.dtype), (us, eps))
        return _loss(jnp.moveaxis(ys, 0, 1))

    eps = jax.tree.map(lambda v: jnp.zeros((T, *v.shape), v.dtype),
                       cell.initial_carry((B,), dtype=xs.dtype))
    grads = jax.grad(loss_of_eps)(eps)
    expected = np.sqrt(sum(np.sum(np.square(g), axis=(1, 2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(dg.gradient_norms(cell, params, xs, _loss).log10,
                               np.log10(expected), atol=LOG_TOL)


def test_float32_log_norms_stay_finite_at_lag_1000():
    with x64(False):
        cell = gr.rnn(16, recurrent_scale=0.5)
        params = cell.init(jax.random.key(0), I)
        xs = jax.random.normal(jax.random.key(1), (2, 1001, I))
        norms = jax.jit(lambda p, x: dg.gradient_norms(cell, p, x,
                                                       lambda ys: ys[:, -1].sum()))(params, xs)
        jac = dg.jacobian_norms(cell, params, xs[:1])
    assert norms.numerics == "float32, log-space products"
    assert norms.log10.dtype == jnp.float32
    assert np.all(np.isfinite(norms.log10)) and np.all(np.isfinite(jac.log10))
    assert norms.log10[0] < -100  # far below float32's smallest normal, 1e-38
    assert float(norms.value[0]) == 0.0  # what a plain float32 norm would report


def test_lstm_with_large_forget_bias_keeps_gradient_that_contractive_rnn_loses():
    with x64(False):
        xs = jax.random.normal(jax.random.key(1), (8, 300, I))
        loss = lambda ys: ys[:, -1].sum()  # noqa: E731
        lstm = gr.lstm(32, forget_bias=5.0)
        tanh = gr.rnn(32, recurrent_scale=0.7)
        g_lstm = dg.gradient_norms(lstm, lstm.init(jax.random.key(0), I), xs, loss).log10
        g_rnn = dg.gradient_norms(tanh, tanh.init(jax.random.key(0), I), xs, loss).log10
    lstm_drop = g_lstm[-1] - g_lstm[0]  # decades lost over 299 steps of lag
    rnn_drop = g_rnn[-1] - g_rnn[0]
    assert lstm_drop < 3.0
    assert rnn_drop > 30.0


def test_diagnostics_vmap_over_seeds_under_jit():
    cell = gr.gru(H)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: cell.init(k, I))(keys)
    xs = _xs()

    @jax.jit
    def measure(p):
        return (dg.gradient_norms(cell, p, xs, _loss), dg.jacobian_norms(cell, p, xs),
                dg.lyapunov_exponents(cell, p, xs, k=2), dg.gate_activations(cell, p, xs))

    grads, jacs, lyap, gates = jax.vmap(measure)(params)
    assert grads.log10.shape == (3, T) and jacs.log10.shape == (3, B, T)
    assert lyap.shape == (3, B, 2) and gates.values["update"].shape == (3, B, T, H)
    for s in range(3):
        p_s = jax.tree.map(lambda v: v[s], params)
        np.testing.assert_allclose(grads.log10[s], dg.gradient_norms(cell, p_s, xs, _loss).log10,
                                   atol=1e-10)


def test_gate_activations_report_the_gates_the_cell_uses():
    cell = gr.lstm(H, forget_bias=3.0)
    params = cell.init(jax.random.key(0), I)
    xs = _xs()
    stats = dg.gate_activations(cell, params, xs)
    assert set(stats.values) == {"input", "forget", "output"}
    # reconstruct the cell state from the reported gates and compare with unroll's
    carry, g = cell.initial_carry((B,), dtype=xs.dtype), None
    for t in range(T):
        g = cell.gates(params, carry, cell.project(params, xs[:, t]))
        np.testing.assert_allclose(stats.values["forget"][:, t], g["forget"], atol=1e-12)
        carry, _ = cell.step(params, carry, xs[:, t])
    np.testing.assert_allclose(stats.saturated_high["forget"],
                               np.mean(np.asarray(stats.values["forget"]) > 0.9, axis=(0, 2)))
    assert np.mean(stats.saturated_high["forget"]) > 0.5  # sigmoid(3) = 0.95
    assert dg.gate_activations(gr.rnn(H), gr.rnn(H).init(jax.random.key(0), I), xs).values == {}


def test_diagnostics_reject_bad_input():
    cell, params = _linear_rnn(0.5)
    with pytest.raises(ValueError, match=r"xs must have shape \[batch, time, features\]"):
        dg.jacobian_norms(cell, params, jnp.zeros((T, I)))
    with pytest.raises(ValueError, match="xs has 5 features"):
        dg.gradient_norms(cell, params, jnp.zeros((B, T, 5)), jnp.sum)
    with pytest.raises(ValueError, match="ord must be 2 or 'fro'"):
        dg.jacobian_norms(cell, params, _xs(), ord=1)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 4\]"):
        dg.lyapunov_exponents(cell, params, _xs(), k=9)


def test_plots_write_pngs(tmp_path):
    from gatedrnn import plots

    rng = np.random.default_rng(0)
    figs = {
        "grad.png": plots.gradient_norms({"rnn": rng.normal(size=(3, 20)),
                                          "lstm": rng.normal(size=(3, 20))}),
        "spec.png": plots.jacobian_spectrum({"gru": rng.uniform(0.1, 2, size=(2, 5, 8))}),
        "gates.png": plots.gate_saturation({"LSTM forget > 0.9": rng.uniform(size=20)}),
        "lyap.png": plots.lyapunov_spectrum({"lstm": -rng.uniform(size=(3, 8))}),
    }
    for name, fig in figs.items():
        plots.save(fig, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_activations_of_a_whole_stack_name_every_layers_gates():
    stack = gr.stack([gr.gru(4), gr.lstm(3)])
    params = stack.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 2))
    stats = gr.diagnostics.gate_activations(stack, params, xs)
    assert sorted(stats.values) == ["layer 0 reset", "layer 0 update", "layer 1 forget",
                                    "layer 1 input", "layer 1 output"]
    # each layer alone, driven by what the layers below it output
    first = gr.diagnostics.gate_activations(stack.layers[0], params[0], xs)
    hidden = gr.unroll(stack.layers[0], params[0], xs)[1]
    second = gr.diagnostics.gate_activations(stack.layers[1], params[1], hidden)
    np.testing.assert_allclose(stats.values["layer 0 update"], first.values["update"])
    np.testing.assert_allclose(stats.values["layer 1 forget"], second.values["forget"],
                               rtol=1e-6)
    np.testing.assert_allclose(stats.saturated_high["layer 1 input"],
                               second.saturated_high["input"])


def test_gate_activations_of_a_stack_include_a_user_cells_gates():
    from user_cells import forget_only_lstm

    mine = forget_only_lstm(4)
    stack = gr.stack([gr.gru(3), mine])
    params = stack.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 2))
    stats = gr.diagnostics.gate_activations(stack, params, xs)
    hidden = gr.unroll(stack.layers[0], params[0], xs)[1]
    alone = gr.diagnostics.gate_activations(mine, params[1], hidden)
    np.testing.assert_allclose(stats.values["layer 1 forget"], alone.values["forget"], rtol=1e-6)
