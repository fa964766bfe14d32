"""unroll, stack, bidirectional and the wrappers: loops, lengths, reverse, dropout, errors."""

import re

import jax
import jax.numpy as jnp
import jax.test_util  # noqa: F401  (check_grads lives in a submodule)
import numpy as np
import pytest
from helpers import randomize, scan_kw
from user_cells import USER_CELLS

import gatedrnn as gr

LOOP_TOL = 1e-12  # float64 scan against a float64 Python loop
GRAD_TOL = 1e-6  # check_grads' finite differences in float64

I, H, T = 4, 6, 9

CELLS = {
    "rnn": gr.rnn(H),
    "lstm": gr.lstm(H),
    "lstm_peep_cifg": gr.lstm(H, peepholes=True, coupled=True),
    "gru": gr.gru(H),
    "gru_before": gr.gru(H, reset_after=False),
}


def _case(cell, batch_shape, seed=0, input_size=I):
    k_p, k_r, k_x = jax.random.split(jax.random.key(seed), 3)
    params = randomize(cell.init(k_p, input_size), k_r)
    xs = jax.random.normal(k_x, (*batch_shape, T, input_size), jnp.float64)
    return params, xs


def python_loop(cell, params, xs, carry=None, reverse=False):
    """The loop that unroll's docstring says it equals."""
    if carry is None:
        carry = cell.initial_carry(xs.shape[:-2], params=params, dtype=xs.dtype)
    ys = [None] * xs.shape[-2]
    order = range(xs.shape[-2] - 1, -1, -1) if reverse else range(xs.shape[-2])
    for t in order:
        carry, ys[t] = cell.step(params, carry, xs[..., t, :])
    if not ys:
        return carry, jnp.zeros((*xs.shape[:-2], 0, cell.output_size), xs.dtype)
    return carry, jnp.stack(ys, axis=-2)


def assert_trees_close(a, b, tol=LOOP_TOL):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=tol, rtol=tol), a, b)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_matches_python_loop_of_step(name, batch_shape, transform, reverse):
    cell = CELLS[name]
    params, xs = _case(cell, batch_shape)
    run = transform(lambda p, x: gr.unroll(cell, p, x, reverse=reverse))
    assert_trees_close(run(params, xs), python_loop(cell, params, xs, reverse=reverse))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(
    "options", [dict(hoist=False), dict(hoist=True), dict(remat=True),
                dict(remat=False), dict(remat=4, unroll=3), dict(remat=4, hoist=True),
                dict(unroll=3), dict(unroll=1), dict(unroll=4)],
)
def test_unroll_options_give_equal_results(name, options):
    cell = CELLS[name]
    params, xs = _case(cell, (3,))
    assert_trees_close(gr.unroll(cell, params, xs,
                                 **scan_kw(**options)), gr.unroll(cell, params, xs))
    grad = jax.grad(lambda p, **kw: gr.unroll(cell, p, xs, **scan_kw(**kw))[1].sum())
    assert_trees_close(grad(params, **options), grad(params))


def test_hoist_projection_auto_projects_inside_the_scan_on_the_cpu_only():
    from gatedrnn.scan import resolve_hoist
    assert resolve_hoist("auto") is (jax.default_backend() != "cpu")
    assert resolve_hoist(True) is True and resolve_hoist(np.bool_(False)) is False
    cell = CELLS["lstm"]
    params, xs = _case(cell, (3,))
    # the default is "auto": the jaxpr shows where the input matmul went
    hoisted = str(jax.make_jaxpr(lambda p: gr.unroll(cell, p, xs,
                                                     options=gr.ScanOptions(hoist=True)))(params))
    default = str(jax.make_jaxpr(lambda p: gr.unroll(cell, p, xs))(params))
    assert (default == hoisted) is resolve_hoist("auto")


@pytest.mark.parametrize("name", ["lstm", "forget_only_lstm", "own_class"])
def test_hoist_projection_under_remat_projects_per_segment_and_per_step_when_every_step(
        monkeypatch, name):
    from gatedrnn.scan import resolve_hoist
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_hoist("auto") and resolve_hoist("auto", checkpoint_every=3)
    assert not resolve_hoist("auto", checkpoint_every=1)
    assert resolve_hoist(True, checkpoint_every=1)  # an explicit choice stands
    cell = {**CELLS, **USER_CELLS}[name]
    params, xs = _case(cell, (3,))

    def jaxpr(**options):
        text = str(jax.make_jaxpr(lambda p: gr.unroll(cell, p, xs, **scan_kw(**options)))(params))
        return re.sub(r" at 0x[0-9a-f]+", "", text)  # older JAX prints functions' addresses

    for remat, hoisted in ((False, True), (True, False), (3, True)):
        assert jaxpr(remat=remat) == jaxpr(remat=remat, hoist=hoisted)
        assert jaxpr(remat=remat) != jaxpr(remat=remat, hoist=not hoisted)
    # hoisted per segment, the projection is recomputed with its segment, not stored whole:
    # XLA plans what projecting per step plans, below the [T, B, G*H] projection's size
    monkeypatch.undo()
    B, T_long, segment = 8, 1024, 32
    xs = jnp.zeros((B, T_long, xs.shape[-1]), jnp.float32)
    params = jax.tree.map(lambda v: v.astype(jnp.float32), params)

    def temporaries(hoist):
        grad = jax.jit(jax.grad(lambda p: jnp.sum(gr.unroll(
            cell, p, xs, options=gr.ScanOptions(remat=segment, hoist=hoist))[1] ** 2)))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    projection = cell.project(params, xs).nbytes
    per_step, hoisted = temporaries(False), temporaries(True)
    assert hoisted <= 1.05 * per_step < per_step + projection / 2, (hoisted, per_step)


@pytest.mark.parametrize("name", ["lstm", "forget_only_lstm", "own_class"])
def test_unroll_auto_unrolls_four_steps_on_a_gpu_and_none_elsewhere(monkeypatch, name):
    from gatedrnn.scan import resolve_unroll
    assert resolve_unroll(3) == 3 and resolve_unroll(np.int64(2)) == 2
    assert resolve_unroll(True) is True
    cell = {**CELLS, **USER_CELLS}[name]
    params, xs = _case(cell, (3,))
    for backend, factor in [("cpu", 1), ("gpu", 4), ("tpu", 1)]:
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert resolve_unroll("auto") == factor
        # the default is "auto": the scan in the traced program carries the factor
        assert f"unroll={factor}" in str(jax.make_jaxpr(lambda p: gr.unroll(cell, p, xs))(params))


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "reverse_lengths", "resets"])
# T=9: segments of 3 divide it, of 4 leave a shorter last one; hoisted: projected per segment
@pytest.mark.parametrize(("remat", "hoist"), [(3, False), (4, False), (4, True)])
def test_remat_segments_equal_storing_every_step(name, remat, direction, hoist):
    cell = CELLS[name]
    params, xs = _case(cell, (3,))
    options = {
        "forward": {}, "reverse": dict(reverse=True),
        "reverse_lengths": dict(reverse=True, lengths=jnp.array([9, 4, 0])),
        "resets": dict(resets=jnp.zeros((3, T), bool).at[:, 3].set(True).at[1, 7].set(True)),
    }[direction]
    run = jax.jit(lambda p, x, k: gr.unroll(
        cell, p, x, **scan_kw(**options, remat=k, hoist=hoist))[1] ** 2, static_argnums=2)
    assert_trees_close(run(params, xs, remat), run(params, xs, False))
    grad = jax.grad(lambda p, x, k: run(p, x, k).sum(), argnums=(0, 1))
    assert_trees_close(grad(params, xs, remat), grad(params, xs, False))


def test_remat_auto_checkpoints_every_sqrt_t_steps_above_the_size(monkeypatch):
    import importlib
    unroll_module = importlib.import_module("gatedrnn.scan")
    from gatedrnn.scan import REMAT_AUTO_BYTES, resolve_remat
    carry = (jnp.zeros((64, 256), jnp.float32),) * 2  # an LSTM's, B=64, H=256: 128 KiB
    assert resolve_remat("auto", carry, REMAT_AUTO_BYTES // 2**17 - 1) == 0
    assert resolve_remat("auto", carry, 2048) == 46  # ceil(sqrt(2048))
    assert resolve_remat("auto", carry, 4096) == 64
    assert (resolve_remat(True, carry, 10), resolve_remat(False, carry, 10)) == (1, 0)
    assert resolve_remat(np.int64(5), carry, 10) == 5
    cell = CELLS["lstm"]
    params, xs = _case(cell, (3,))

    def jaxpr(**kw):
        return str(jax.make_jaxpr(jax.grad(
            lambda p: gr.unroll(cell, p, xs, **scan_kw(**kw))[1].sum()))(params))

    # the default is "auto", below the size nothing is recomputed
    assert jaxpr() == jaxpr(remat=False) != jaxpr(remat=3)
    monkeypatch.setattr(unroll_module, "REMAT_AUTO_BYTES", 1)
    assert jaxpr() == jaxpr(remat=3)  # ceil(sqrt(9)) = 3


def test_time_major_equals_batch_major():
    cell = CELLS["lstm"]
    params, xs = _case(cell, (3,))
    carry, ys = gr.unroll(cell, params, jnp.swapaxes(xs, 0, 1), time_major=True)
    assert_trees_close((carry, jnp.swapaxes(ys, 0, 1)), gr.unroll(cell, params, xs))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_batched_unroll_equals_vmap_of_unbatched(name):
    cell = CELLS[name]
    params, xs = _case(cell, (5,))
    lengths = jnp.array([9, 3, 0, 7, 1])
    batched = gr.unroll(cell, params, xs, lengths=lengths, reverse=True)
    vmapped = jax.vmap(lambda x, n: gr.unroll(cell, params, x, lengths=n, reverse=True))(
        xs, lengths)
    assert_trees_close(batched, vmapped)


def test_vmap_over_params_equals_separate_runs():
    cell = CELLS["gru"]
    params = jax.vmap(lambda k: cell.init(k, I))(jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (2, T, I))
    _, ys = jax.vmap(lambda p: gr.unroll(cell, p, xs))(params)
    for s in range(3):
        p_s = jax.tree.map(lambda v: v[s], params)
        assert_trees_close(ys[s], gr.unroll(cell, p_s, xs)[1])


@pytest.mark.parametrize("name", [*CELLS, *USER_CELLS])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_match_per_sequence_runs(name, reverse):
    cell = {**CELLS, **USER_CELLS}[name]
    params, xs = _case(cell, (4,))
    lengths = np.array([T, 5, 1, 0])
    carry, ys = gr.unroll(cell, params, xs, lengths=lengths, reverse=reverse)
    for b, n in enumerate(lengths):
        c_b, y_b = python_loop(cell, params, xs[b, :n], reverse=reverse)
        assert_trees_close(jax.tree.map(lambda v, b=b: v[b], carry), c_b)
        np.testing.assert_allclose(ys[b, :n], y_b, atol=LOOP_TOL)
        np.testing.assert_array_equal(ys[b, n:], 0.0)


def test_carry_is_threaded_through_consecutive_chunks():
    cell = CELLS["lstm"]
    params, xs = _case(cell, (2,))
    whole = gr.unroll(cell, params, xs)
    carry, ys_a = gr.unroll(cell, params, xs[:, :4])
    carry, ys_b = gr.unroll(cell, params, xs[:, 4:], carry)
    assert_trees_close((carry, jnp.concatenate([ys_a, ys_b], 1)), whole)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "mul"])
def test_bidirectional_equals_forward_and_reversed_runs(merge):
    layer = gr.bidirectional(CELLS["lstm"], CELLS["gru"], merge=merge)
    params, xs = _case(layer, (3,))
    lengths = jnp.array([9, 4, 2])
    carry, ys = gr.unroll(layer, params, xs, lengths=lengths)
    c_f, y_f = gr.unroll(layer.fwd, params["fwd"], xs, lengths=lengths)
    c_b, y_b = gr.unroll(layer.bwd, params["bwd"], xs, lengths=lengths, reverse=True)
    assert_trees_close(carry, gr.BidirectionalCarry(c_f, c_b))
    assert_trees_close(ys, gr.compose.MERGES[merge](y_f, y_b))
    assert ys.shape[-1] == layer.output_size
    # the backward direction at step t has read exactly steps t..L-1 of a sequence
    b, n, t = 1, 4, 2
    _, y_tail = python_loop(layer.bwd, params["bwd"], xs[b, t:n], reverse=True)
    np.testing.assert_allclose(y_b[b, t], y_tail[0], atol=LOOP_TOL)


def test_stack_equals_layer_by_layer_and_step_loop():
    layers = [CELLS["lstm"], CELLS["gru"], gr.rnn(H)]
    net = gr.stack(layers, residual=True)
    params, xs = _case(net, (2,))
    carry, ys = gr.unroll(net, params, xs)
    h, finals = xs, []
    for i, (layer, p) in enumerate(zip(layers, params)):
        c, out = gr.unroll(layer, p, h)
        h = out + h if i > 0 else out
        finals.append(c)
    assert_trees_close((carry, ys), (tuple(finals), h))
    assert_trees_close((carry, ys), python_loop(net, params, xs))


def test_two_layer_bidirectional_lstm_is_one_call():
    net = gr.stack([gr.bidirectional(gr.lstm(H), gr.lstm(H))] * 2)
    params, xs = _case(net, (3,))
    assert jax.tree.map(jnp.shape, params[1]["fwd"])["w_x"] == (2 * H, 4 * H)
    carry, ys = gr.unroll(net, params, xs, lengths=jnp.array([9, 5, 1]))
    assert ys.shape == (3, T, 2 * H) and len(carry) == 2


def test_stack_dropout_is_off_without_key_and_deterministic_with_one():
    net = gr.stack([gr.lstm(H), gr.lstm(H)], dropout=0.5)
    plain = gr.stack([gr.lstm(H), gr.lstm(H)])
    params, xs = _case(net, (3,))
    assert_trees_close(gr.unroll(net, params, xs), gr.unroll(plain, params, xs))
    a = gr.unroll(net, params, xs, key=jax.random.key(1))[1]
    b = gr.unroll(net, params, xs, key=jax.random.key(1))[1]
    c = gr.unroll(net, params, xs, key=jax.random.key(2))[1]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_recurrent_dropout_uses_one_mask_per_sequence_on_the_recurrent_input():
    base = CELLS["gru"]
    cell = gr.recurrent_dropout(base, 0.5)
    params, xs = _case(cell, (3,))
    assert_trees_close(gr.unroll(cell, params, xs)[1], gr.unroll(base, params, xs)[1])
    key = jax.random.key(7)
    carry, ys = gr.unroll(cell, params, xs, key=key)
    mask = cell.initial_carry((3,), key=key, dtype=xs.dtype).mask
    assert set(np.unique(np.asarray(mask))) <= {0.0, 2.0}
    np.testing.assert_array_equal(carry.mask, mask)
    h, expected = jnp.zeros((3, H)), []
    for t in range(T):
        h, y = base.recur(params, h, base.project(params, xs[:, t]), h_mask=mask)
        expected.append(y)
    np.testing.assert_allclose(ys, jnp.stack(expected, 1), atol=LOOP_TOL)


def test_learned_initial_carry_is_a_trainable_parameter():
    cell = gr.learned_initial_carry(CELLS["lstm"])
    params, xs = _case(cell, (2,))
    assert isinstance(params["carry_0"], gr.LSTMCarry)
    _, ys = gr.unroll(cell, params, xs)
    start = jax.tree.map(lambda v: jnp.broadcast_to(v, (2, H)), params["carry_0"])
    np.testing.assert_allclose(ys, gr.unroll(CELLS["lstm"], params["cell"], xs, start)[1],
                               atol=LOOP_TOL)
    grads = jax.grad(lambda p: gr.unroll(cell, p, xs)[1].sum())(params)
    assert np.abs(np.asarray(grads["carry_0"].c)).sum() > 0
    with pytest.raises(ValueError, match="initial carry is learned"):
        cell.initial_carry((2,))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "gru_before"])
def test_gradients_match_finite_differences(name):
    cell = CELLS[name]
    params, xs = _case(cell, (2,))
    lengths = jnp.array([9, 5])

    def loss(p, x):
        return jnp.sum(gr.unroll(cell, p, x, lengths=lengths)[1] ** 2)

    jax.test_util.check_grads(loss, (params, xs), order=1, modes=["rev"], atol=GRAD_TOL,
                              rtol=GRAD_TOL)


@pytest.mark.parametrize("name", CELLS)
def test_jvp_agrees_with_grad(name):
    cell = CELLS[name]
    params, xs = _case(cell, (3,))
    tangent = randomize(params, jax.random.key(9))

    def loss(p):
        carry, ys = gr.unroll(cell, p, xs, lengths=jnp.array([9, 2, 6]))
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

    _, directional = jax.jvp(loss, (params,), (tangent,))
    grads = jax.grad(loss)(params)
    via_grad = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads),
                                                    jax.tree.leaves(tangent)))
    np.testing.assert_allclose(directional, via_grad, rtol=1e-10)


def test_jitted_unroll_traces_once():
    cell = CELLS["lstm"]
    traces = []

    @jax.jit
    def run(params, xs, lengths):
        traces.append(1)
        return gr.unroll(cell, params, xs, lengths=lengths)[1].sum()

    params, xs = _case(cell, (3,))
    run(params, xs, jnp.array([1, 2, 3]))
    run(randomize(params, jax.random.key(5)), xs + 1.0, jnp.array([4, 5, 6]))
    assert len(traces) == 1


def test_wrong_feature_size_names_both_sizes():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"xs has 7 features .* input_size=4"):
        gr.unroll(cell, params, jnp.zeros((2, T, 7)))


@pytest.mark.parametrize("shape", [(7,), ()])
def test_wrong_rank_is_rejected(shape):
    cell = CELLS["gru"]
    with pytest.raises(ValueError, match=r"xs must have shape \[\*batch, time, features\]"):
        gr.unroll(cell, cell.init(jax.random.key(0), 7), jnp.zeros(shape))


def test_integer_inputs_are_rejected():
    cell = CELLS["gru"]
    with pytest.raises(TypeError, match="xs must be a floating-point array; got dtype int"):
        gr.unroll(cell, cell.init(jax.random.key(0), I), jnp.zeros((2, T, I), jnp.int32))


@pytest.mark.parametrize("carry, match", [
    (jnp.zeros((3, H)), r"carry must match .*LSTMCarry"),
    (gr.LSTMCarry(jnp.zeros((3, H)), jnp.zeros((3, H + 1))),
     r"expected .*\[3, 6\].*got .*\[3, 7\]"),
    (gr.LSTMCarry(jnp.zeros((2, H)), jnp.zeros((2, H))), r"carry must match"),
])
def test_wrong_carry_is_rejected(carry, match):
    cell = CELLS["lstm"]
    params, xs = _case(cell, (3,))
    with pytest.raises(ValueError, match=match):
        gr.unroll(cell, params, xs, carry)


def test_wrong_stack_carry_names_the_layer():
    net = gr.stack([gr.gru(H), gr.gru(H)])
    params, xs = _case(net, (3,))
    good = net.initial_carry((3,), dtype=xs.dtype)
    with pytest.raises(ValueError, match=r"layer 1: carry must match"):
        gr.unroll(net, params, xs, (good[0], jnp.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"layer 0: carry must have the run's dtypes "
                                         r"\['float64'\] .*; got \['int32'\]"):
        gr.unroll(net, params, xs, (good[0].astype(jnp.int32), good[1]))


@pytest.mark.parametrize("lengths, error, match", [
    (jnp.array([1.0, 2.0, 3.0]), TypeError, "lengths must be an integer array; got dtype float"),
    (jnp.array([1, 2]), ValueError, r"lengths must have the batch shape \(3,\) of xs; got \(2,\)"),
    (jnp.array([1, 2, 10]), ValueError, r"lengths must lie in \[0, 9\].*from 1 to 10"),
    (jnp.array([-1, 2, 3]), ValueError, r"lengths must lie in \[0, 9\]"),
])
def test_bad_lengths_are_rejected(lengths, error, match):
    cell = CELLS["rnn"]
    params, xs = _case(cell, (3,))
    with pytest.raises(error, match=match):
        gr.unroll(cell, params, xs, lengths=lengths)


def test_bad_compositions_are_rejected():
    with pytest.raises(ValueError, match="merge must be one of .*got 'max'"):
        gr.bidirectional(gr.gru(H), gr.gru(H), merge="max")
    with pytest.raises(ValueError, match="merge='sum' needs equal output sizes"):
        gr.bidirectional(gr.gru(H), gr.gru(H + 1), merge="sum")
    with pytest.raises(ValueError, match="residual=True needs equal sizes"):
        gr.stack([gr.gru(H), gr.gru(H + 1)], residual=True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.0"):
        gr.stack([gr.gru(H)], dropout=1.0)
    with pytest.raises(TypeError, match="cell must be a layer .*got str, which lacks init"):
        gr.unroll("lstm", {}, jnp.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match=r"layers\[1\] must be a layer .*got NoneType"):
        gr.stack([gr.gru(H), None])
    with pytest.raises(TypeError, match="layers must be a list or tuple of layers; got Cell"):
        gr.stack(gr.gru(H))
    with pytest.raises(TypeError, match=r"bwd must be a layer .*a factory: call it"):
        gr.bidirectional(gr.gru(H), gr.gru)
    with pytest.raises(ValueError, match=r"merge must be one of .*got \['concat'\]"):
        gr.bidirectional(gr.gru(H), gr.gru(H), merge=["concat"])


@pytest.mark.parametrize("old, new", [
    (dict(remat=3, unroll=2), gr.ScanOptions(remat=3, unroll=2)),
    (dict(hoist_projection=True), gr.ScanOptions(hoist=True)),
    (dict(backward="scan", method="sequential"), gr.ScanOptions(backward="scan")),
])
def test_the_deprecated_execution_keywords_warn_and_give_identical_results(old, new):
    cell = CELLS["lstm"]
    params, xs = _case(cell, (3,))
    loss = lambda p, **kw: jnp.sum(gr.unroll(cell, p, xs, **kw)[1] ** 2)  # noqa: E731
    with pytest.warns(DeprecationWarning, match=r"pass options=gr.ScanOptions\("):
        before = gr.unroll(cell, params, xs, **old)
    with pytest.warns(DeprecationWarning):
        grad_before = jax.grad(loss)(params, **old)
    assert_trees_close(before, gr.unroll(cell, params, xs, options=new), tol=0)
    assert_trees_close(grad_before, jax.grad(loss)(params, options=new), tol=0)


def test_scan_options_are_checked_when_made_and_not_mixed_with_the_old_keywords():
    cell = CELLS["gru"]
    params, xs = _case(cell, (2,))
    with pytest.raises(ValueError, match="method must be one of"):
        gr.ScanOptions(method="prefix")
    with pytest.raises(ValueError, match="remat must be True, False, a positive int"):
        gr.ScanOptions(remat=-1)
    with pytest.raises(TypeError, match="either as options=gr.ScanOptions"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(), remat=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'unrol'"):
        gr.unroll(cell, params, xs, unrol=2)
    with pytest.raises(TypeError, match="options must be a gr.ScanOptions; got dict"):
        gr.unroll(cell, params, xs, options={"remat": 2})
    assert gr.ScanOptions(remat=2).replace(unroll=3) == gr.ScanOptions(remat=2, unroll=3)


def test_the_deferred_backward_pass_needs_jax_0_10(monkeypatch):
    # older JAX cannot transpose its tangent scan: "auto" falls back to JAX's own derivative
    monkeypatch.setattr(gr.checks, "jax_version", lambda: (0, 9))
    with pytest.raises(ValueError, match=r"backward='deferred' needs JAX >= 0.10"):
        gr.ScanOptions(backward="deferred")
    assert not gr.scan.resolve_backward("auto", jnp.zeros(3), (1,))
