"""gr.make_cell and the layer protocol: user-built cells (and a user's own layer class) run
through every part of the library as the shipped cells do."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, scan_kw
from test_unroll import assert_trees_close, python_loop
from user_cells import USER_CELLS, forget_only_lstm, indrnn, nested_cell

import gatedrnn as gr

LOOP_TOL = 1e-12  # float64 scan against a float64 Python loop
I, H, T = 3, 5, 8


def _case(layer, batch_shape=(4,), seed=0):
    k_p, k_r, k_x = jax.random.split(jax.random.key(seed), 3)
    params = randomize(layer.init(k_p, I), k_r)
    xs = jax.random.normal(k_x, (*batch_shape, T, I), jnp.float64)
    return params, xs


@pytest.mark.parametrize("name", USER_CELLS)
@pytest.mark.parametrize("options", [dict(), dict(reverse=True), dict(remat=True),
                                     dict(remat=3), dict(remat=3, reverse=True),
                                     dict(hoist=False),
                                     dict(hoist=True), dict(unroll=4),
                                     dict(unroll=4, remat=3),
                                     dict(remat=3, hoist=True),
                                     dict(remat=4, hoist=True, reverse=True)])
def test_user_cells_unroll_as_a_python_loop_of_step(name, options):
    cell = USER_CELLS[name]
    params, xs = _case(cell)
    run = jax.jit(lambda p, x: gr.unroll(cell, p, x, **scan_kw(**options)))
    assert_trees_close(run(params, xs),
                       python_loop(cell, params, xs, reverse=options.get("reverse", False)))


def _pair_projection_cell(hidden):
    """A cell whose input half is a pair of arrays, not one: a gate and a candidate."""
    def init(key, input_size):
        k_g, k_c, k_h = jax.random.split(key, 3)
        return {"w_g": jax.random.normal(k_g, (input_size, hidden)) / 2,
                "w_c": jax.random.normal(k_c, (input_size, hidden)) / 2,
                "w_h": jax.random.normal(k_h, (hidden, hidden)) / 3}

    def core(params, h, u_t):
        gate, cand = u_t
        z = jax.nn.sigmoid(gate)
        h = (1 - z) * h + z * jnp.tanh(cand + h @ params["w_h"])
        return h, h

    def project(params, x):
        return x @ params["w_g"], x @ params["w_c"]

    return gr.make_cell(init, core, hidden_size=hidden, project=project)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)])
@pytest.mark.parametrize("remat", [False, 3])
def test_hoisted_projection_of_any_batch_shape_and_a_pytree_input_half(batch_shape, remat):
    # hoisted, unroll projects all T*B rows as one matrix and reshapes each output back
    cell = _pair_projection_cell(H)
    params, xs = _case(cell, batch_shape)
    run = jax.jit(lambda p, hoist: gr.unroll(
        cell, p, xs, options=gr.ScanOptions(remat=remat, hoist=hoist)), static_argnums=1)
    assert_trees_close(run(params, True), python_loop(cell, params, xs))
    grad = jax.grad(lambda p, hoist: jnp.sum(run(p, hoist)[1] ** 2))
    assert_trees_close(grad(params, True), grad(params, False))


def test_indrnn_step_matches_its_equation_in_numpy():
    cell = indrnn(H)
    params, xs = _case(cell)
    h = np.random.default_rng(0).normal(size=(4, H))
    p = jax.tree.map(np.asarray, params)
    expected = np.maximum(np.asarray(xs[:, 0]) @ p["w"] + p["b"] + p["u"] * h, 0.0)
    np.testing.assert_allclose(cell.step(params, jnp.asarray(h), xs[:, 0])[1], expected,
                               atol=LOOP_TOL)


@pytest.mark.parametrize("name", USER_CELLS)
def test_user_cells_compose_in_stacks_and_bidirectional_pairs(name):
    cell = USER_CELLS[name]
    net = gr.stack([gr.bidirectional(cell, gr.gru(4)), cell, gr.lstm(3)], dropout=0.2)
    params, xs = _case(net)
    carry, ys = gr.unroll(net, params, xs, lengths=jnp.array([8, 3, 6, 1]),
                          key=jax.random.key(1))
    assert ys.shape == (4, T, 3) and np.isfinite(ys).all()
    # the stack's layers one after another, without dropout, are the stack without a key
    _, y0 = gr.unroll(net.layers[0], params[0], xs)
    _, y1 = gr.unroll(cell, params[1], y0)
    _, y2 = gr.unroll(net.layers[2], params[2], y1)
    assert_trees_close(gr.unroll(net, params, xs)[1], y2)


@pytest.mark.parametrize("name", USER_CELLS)
def test_recurrent_dropout_and_learned_carry_wrap_user_cells(name):
    cell = USER_CELLS[name]
    wrapped = gr.learned_initial_carry(gr.recurrent_dropout(cell, 0.5))
    params, xs = _case(wrapped)
    key = jax.random.key(3)
    carry, ys = gr.unroll(wrapped, params, xs, key=key)
    mask = carry.mask
    assert set(np.unique(np.asarray(mask))) <= {0.0, 2.0}
    np.testing.assert_allclose(gr.unroll(wrapped, params, xs)[1],
                               gr.unroll(cell, params["cell"], xs,
                                         wrapped.initial_carry((4,), params=params).carry)[1],
                               atol=LOOP_TOL)  # without a key the mask is all ones
    grads = jax.grad(lambda p: gr.unroll(wrapped, p, xs, key=key)[1].sum())(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_wrappers_wrap_every_cell_of_a_stack_and_a_bidirectional_pair():
    net = gr.stack([gr.bidirectional(gr.lstm(4), indrnn(4)), gr.gru(3)])
    wrapped = gr.recurrent_dropout(gr.learned_initial_carry(net), 0.3)
    assert isinstance(wrapped, gr.Stack)
    assert wrapped.layers[0].fwd.kind == "recurrent_dropout(learned_initial_carry(lstm))"
    params, xs = _case(wrapped)
    carry, ys = gr.unroll(wrapped, params, xs, key=jax.random.key(0))
    assert isinstance(carry[0], gr.BidirectionalCarry) and hasattr(carry[1], "mask")
    assert ys.shape == (4, T, 3)


def test_a_core_without_h_mask_gets_the_previous_carry_masked():
    cell = nested_cell(H)
    params, xs = _case(cell)
    wrapped = gr.recurrent_dropout(cell, 0.5)
    key = jax.random.key(2)
    carry, ys = gr.unroll(wrapped, params, xs, key=key)
    c = cell.initial_carry((4,), dtype=xs.dtype)
    for t in range(T):
        c = jax.tree.map(lambda v: v * carry.mask, c)
        c, y = cell.step(params, c, xs[:, t])
        np.testing.assert_allclose(ys[:, t], y, atol=LOOP_TOL)


@pytest.mark.parametrize("name", ["indrnn", "forget_only_lstm", "own_class", "nested"])
def test_gradient_norms_of_user_cells_equal_autodiff_of_a_carry_perturbation(name):
    cell = USER_CELLS[name]
    params, xs = _case(cell, (2,))

    def loss_fn(ys):
        return jnp.sum(jnp.sin(ys[:, -3:]))

    norms = gr.diagnostics.gradient_norms(cell, params, xs, loss_fn)
    carry0 = cell.initial_carry((2,), dtype=xs.dtype)

    def loss_with(eps):  # eps[t] is added to the carry after step t
        c, ys = carry0, []
        for t in range(T):
            c, _ = cell.step(params, c, xs[:, t])
            c = jax.tree.map(lambda v, e: v + e, c, jax.tree.map(lambda e: e[t], eps))
            ys.append(cell.output(c))
        return loss_fn(jnp.stack(ys, 1))

    zeros = jax.tree.map(lambda v: jnp.zeros((T, *v.shape), v.dtype), carry0)
    grads = jax.grad(loss_with)(zeros)
    expected = jnp.sqrt(sum(jnp.sum(g**2, axis=tuple(range(1, g.ndim)))
                            for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(norms.log10, jnp.log10(expected), atol=1e-9)  # -inf: dead relu


def test_diagnostics_follow_a_stack_of_user_cells_whole_or_one_layer():
    net = gr.stack([forget_only_lstm(4), indrnn(4)], residual=True)
    params, xs = _case(net, (2,))
    whole = gr.diagnostics.jacobian_norms(net, params, xs)
    assert whole.log10.shape == (2, T)
    one = gr.diagnostics.jacobian_norms(net, params, xs, layer=1)
    inputs = gr.unroll(net.layers[0], params[0], xs)[1]
    np.testing.assert_allclose(one.log10, gr.diagnostics.jacobian_norms(
        net.layers[1], params[1], inputs).log10, atol=1e-12)
    gates = gr.diagnostics.gate_activations(net, params, xs, layer=0)
    assert gates.values["forget"].shape == (2, T, 4)
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 1\]"):
        gr.diagnostics.jacobian_norms(net, params, xs, layer=2)
    with pytest.raises(TypeError, match="needs the whole sequence; pass layer=i"):
        gr.diagnostics.jacobian_norms(gr.bidirectional(indrnn(4), indrnn(4)),
                                      gr.bidirectional(indrnn(4), indrnn(4)).init(
                                          jax.random.key(0), I), xs)


def test_cell_factory_records_options_and_rebuilds_with_traced_values():
    cell = indrnn(H, recurrent_scale=0.5)
    assert cell.config == {"hidden": H, "recurrent_scale": 0.5}
    assert cell.rebuild(recurrent_scale=0.7).init(jax.random.key(0), I)["u"][0] == 0.7
    u = jax.jit(lambda s: cell.rebuild(recurrent_scale=s).init(jax.random.key(0), I)["u"])(0.3)
    np.testing.assert_allclose(u, 0.3)
    assert gr.lstm(4).rebuild(forget_bias=2.0).config["forget_bias"] == 2.0
    with pytest.raises(ValueError, match="has no option 'scale'; its options"):
        cell.rebuild(scale=1.0)
    with pytest.raises(ValueError, match="records no factory"):
        USER_CELLS["min_gru_6_lines"].rebuild(hidden_size=3)


def test_make_cell_rejects_bad_definitions_with_clear_errors():
    with pytest.raises(ValueError, match="hidden_size must be a positive int; got 0"):
        gr.make_cell(lambda k, i: {}, lambda p, c, u: (c, c), hidden_size=0)
    bad = gr.make_cell(lambda k, i: {}, lambda p, c, u: c, hidden_size=2)
    with pytest.raises(TypeError, match=r"core of cell 'custom' must return \(carry, h_t\)"):
        gr.unroll(bad, {}, jnp.zeros((1, 3, 2)))
    grows = gr.make_cell(lambda k, i: {}, lambda p, c, u: ((c, c), c), hidden_size=2)
    with pytest.raises(ValueError, match="the new carry must have the old one's structure"):
        gr.unroll(grows, {}, jnp.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"xs has 4 features .* input_size=3"):
        gr.unroll(indrnn(2), indrnn(2).init(jax.random.key(0), 3), jnp.zeros((1, 3, 4)))


def test_the_run_dtype_comes_from_inputs_and_params_not_a_named_key():
    cell = nested_cell(H)  # no w_x anywhere
    params = jax.tree.map(lambda v: v.astype(jnp.float32), cell.init(jax.random.key(0), I))
    _, ys = gr.unroll(cell, params, jnp.ones((2, T, I), jnp.float32))
    assert ys.dtype == jnp.float32
    _, ys = gr.unroll(cell, params, jnp.ones((2, T, I), jnp.float64))
    assert ys.dtype == jnp.float64


@pytest.mark.parametrize("name", ["indrnn", "nested", "own_class"])
def test_user_cells_train_and_sweep(name, tmp_path):
    cell = USER_CELLS[name]
    config = gr.train.Config(cell=cell, task=gr.tasks.adding(6), steps=20, batch_size=8,
                             eval_every=10, eval_batch_size=16)
    result = jax.jit(gr.train.make_train(config))(jax.random.key(0))
    assert np.isfinite(result.metrics["loss"]).all()
    grid = {"learning_rate": [1e-2, 3e-2]}
    if name == "indrnn":
        grid["recurrent_scale"] = [0.5, 0.9]
    swept = gr.sweep(config, seeds=2, grid=grid, out_dir=tmp_path, progress=False)
    assert swept.metrics["loss"].shape == (4 if name == "indrnn" else 2, 2, 2)
    if name == "indrnn":  # the last grid point (lr 3e-2, scale 0.9), seed 0, trained alone
        single = gr.train.Config(**{**config.__dict__, "learning_rate": 3e-2,
                                    "cell": indrnn(5, recurrent_scale=0.9)})
        key = jax.random.split(jax.random.key(0), 2)[0]
        alone = jax.jit(gr.train.make_train(single))(key).params["rnn"]["u"]
        np.testing.assert_allclose(swept.params["rnn"]["u"][-1, 0], alone, rtol=1e-5, atol=1e-7)


def test_sweep_grid_paths_reach_options_inside_stacks_and_wrappers():
    net = gr.stack([gr.recurrent_dropout(gr.lstm(4), 0.1), indrnn(4)])
    assert gr.sweeps.get_option(net, "layers.0.cell.forget_bias") == 1.0
    rebuilt = gr.sweeps.set_option(net, "layers.1.recurrent_scale", 0.25)
    assert rebuilt.layers[1].config["recurrent_scale"] == 0.25
    assert rebuilt.layers[0].config["rate"] == 0.1
    rebuilt = gr.sweeps.set_option(net, "layers.0.rate", 0.3)
    assert rebuilt.layers[0].kind == "recurrent_dropout(lstm)"
    assert rebuilt.layers[0].config["rate"] == 0.3
    with pytest.raises(ValueError, match="holds 2 layers; name one"):
        gr.sweeps.get_option(net, "layers.forget_bias")


def _janet_with_handwritten_derivative(hidden):
    """The forget-only LSTM of ``user_cells``, its elementwise half under ``jax.custom_jvp``
    with one coefficient per tangent term, as docs/performance.md tells a user to write
    it; the same params as ``forget_only_lstm``."""
    @jax.custom_jvp
    def state(pre, c):
        a_f, a_c = jnp.split(pre, 2, -1)
        f = jax.nn.sigmoid(a_f)
        return f * c + (1 - f) * jnp.tanh(a_c)

    @state.defjvp
    def state_jvp(primals, tangents):
        (pre, c), (d_pre, d_c) = primals, tangents
        a_f, a_c = jnp.split(pre, 2, -1)
        f, g = jax.nn.sigmoid(a_f), jnp.tanh(a_c)
        d_f, d_g = jnp.split(d_pre, 2, -1)
        return (f * c + (1 - f) * g,
                f * d_c + ((c - g) * f * (1 - f)) * d_f + ((1 - f) * (1 - g * g)) * d_g)

    plain = forget_only_lstm(hidden)

    def core(params, c, u_t):
        c = state(u_t + c @ params["w_h"], c)
        return c, c

    return gr.make_cell(plain.init, core, hidden_size=hidden, kind="janet_by_hand",
                        project=plain.project, input_size=lambda p: p["w_x"].shape[0])


@pytest.mark.parametrize("options", [dict(), dict(remat=3), dict(unroll=4),
                                     dict(reverse=True, hoist=True)])
def test_a_user_cell_with_a_handwritten_derivative_runs_as_its_plain_twin(options):
    by_hand, plain = _janet_with_handwritten_derivative(H), forget_only_lstm(H)
    params, xs = _case(plain)
    tangent = randomize(params, jax.random.key(9))

    def loss(cell, p, x):
        return jnp.sum(gr.unroll(cell, p, x, **scan_kw(**options))[1] ** 2)

    for fn in (lambda cell: jax.grad(loss, argnums=(1, 2))(cell, params, xs),
               lambda cell: jax.jvp(lambda p: loss(cell, p, xs), (params,), (tangent,))):
        assert_trees_close(fn(by_hand), fn(plain))
    # vmapped, against each member's own gradient: the plain twin's vmapped float64
    # gradient is wrong on XLA:CPU (docs/upstream/vmap_grad_float64/run.py)
    members = [params, jax.tree.map(lambda v: 2 * v, params)]
    vmapped = jax.vmap(lambda p: jax.grad(loss, 1)(by_hand, p, xs))(
        jax.tree.map(lambda *v: jnp.stack(v), *members))
    for k, member in enumerate(members):
        assert_trees_close(jax.tree.map(lambda v: v[k], vmapped),
                           jax.grad(loss, 1)(plain, member, xs))


@pytest.mark.xfail(strict=False, reason="XLA:CPU bug on some x86 CPUs, not on others (an AMD "
                   "EPYC gives the right gradient), docs/upstream/vmap_grad_float64")
def test_vmapped_float64_gradient_through_a_scanned_lstm_equals_each_members():
    import importlib.util
    from pathlib import Path

    if jax.default_backend() != "cpu":
        pytest.skip("seen on XLA:CPU only")
    path = Path(__file__).parents[1] / "docs/upstream/vmap_grad_float64/run.py"
    spec = importlib.util.spec_from_file_location("vmap_grad_float64", path)
    reproducer = importlib.util.module_from_spec(spec)  # not as "run": benchmarks' is
    spec.loader.exec_module(reproducer)
    assert reproducer.largest_difference() < 1e-12


def test_a_cell_shows_its_kind_and_config_not_function_addresses():
    text = repr(gr.lstm(8, proj_size=4))
    assert text.startswith("Cell(kind='lstm', hidden_size=8, output_size=4, config={")
    assert "proj_size=4" in text and "forget_bias=1.0" in text and " at 0x" not in text
    mine = repr(USER_CELLS["indrnn"])
    assert "kind=" in mine and " at 0x" not in mine and len(mine) < 300
