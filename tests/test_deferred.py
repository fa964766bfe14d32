"""unroll's deferred backward pass (``backward="deferred"``, taken by ``"auto"`` on the CPU for
1 to 16 rows): every derivative equals JAX's own derivative of the scan, for the shipped cells
and users' cells, with every option of the sequential scan, and the rule picks it only where
it was measured faster."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize, scan_kw
from test_unroll import assert_trees_close, python_loop
from user_cells import USER_CELLS

import gatedrnn as gr
from gatedrnn.scan import DEFER_ROWS, resolve_backward

# older JAX cannot transpose the deferred pass's tangent scan: gr.unroll refuses it there
pytestmark = pytest.mark.skipif(gr.checks.jax_version() < gr.scan.DEFERRED_MIN_JAX,
                                reason="backward='deferred' needs JAX >= 0.10")

TOL = 1e-10  # float64 against float64, summed in another order
I, H, T = 3, 5, 7

CELLS = {"lstm": gr.lstm(H), "gru": gr.gru(H), "rnn": gr.rnn(H), "lru": gr.lru(H),
         **{f"user:{name}": cell for name, cell in USER_CELLS.items()}}


def _case(layer, batch_shape=(4,), seed=0):
    k_p, k_r, k_x, k_c = jax.random.split(jax.random.key(seed), 4)
    params = randomize(layer.init(k_p, I), k_r)
    xs = jax.random.normal(k_x, (*batch_shape, T, I), jnp.float64)
    carry = layer.initial_carry(batch_shape, params=params, dtype=jnp.float64)
    carry = jax.tree.map(lambda c: c + 0.3 * jax.random.normal(k_c, c.shape, c.dtype), carry)
    return params, xs, carry


def _loss(layer, backward, **options):
    """A scalar of everything unroll returns, so that every output's cotangent is used."""
    def loss(point):
        params, xs, carry = point
        final, ys = gr.unroll(layer, params, xs, carry, **scan_kw(**options, backward=backward))
        return (jnp.sum(jnp.real(ys) ** 2)
                + sum(jnp.sum(jnp.real(leaf) ** 3) for leaf in jax.tree.leaves(final)))
    return loss


def _derivatives(loss, point, direction):
    """Reverse mode, forward mode and forward over reverse (a Hessian-vector product)."""
    return (jax.grad(loss)(point), jax.jvp(loss, (point,), (direction,))[1],
            jax.jvp(jax.grad(loss), (point,), (direction,))[1])


def _assert_deferred_is_the_scan(layer, point, **options):
    leaves, treedef = jax.tree.flatten(point)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    direction = treedef.unflatten([jax.random.normal(k, v.shape, v.dtype)  # complex for lru
                                   for k, v in zip(keys, leaves)])
    expected = jax.jit(lambda p, d: _derivatives(_loss(layer, "scan", **options), p, d))
    got = jax.jit(lambda p, d: _derivatives(_loss(layer, "deferred", **options), p, d))
    assert_trees_close(got(point, direction), expected(point, direction), tol=TOL)
    run = jax.jit(lambda p: gr.unroll(layer, p[0], p[1], p[2],
                                      **scan_kw(**options, backward="deferred")))
    assert_trees_close(run(point), gr.unroll(layer, *point, **scan_kw(**options, backward="scan")),
                       tol=TOL)


OPTIONS = {
    "plain": {},
    "reverse": dict(reverse=True),
    "lengths": dict(lengths=jnp.array([7, 3, 0, 5])),
    "lengths-reverse": dict(lengths=jnp.array([7, 3, 0, 5]), reverse=True),
    "resets": dict(resets=jnp.array([[0, 0, 1, 0, 0, 1, 0]] * 2 + [[1, 0, 0, 0, 0, 0, 1]] * 2,
                                    bool)),
    "hoisted": dict(hoist=True),
    "unroll=2": dict(unroll=2),
}


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("option", OPTIONS)
def test_every_derivative_equals_the_scans(name, option):
    if name.startswith("user:") and option in ("reverse", "unroll=2"):
        pytest.skip("covered by the shipped cells; the user cells take the other options")
    cell = CELLS[name]
    _assert_deferred_is_the_scan(cell, _case(cell), **OPTIONS[option])


@pytest.mark.parametrize("batch_shape", [(), (2, 3)])
def test_any_batch_shape(batch_shape):
    cell = gr.lstm(H)
    _assert_deferred_is_the_scan(cell, _case(cell, batch_shape))


def test_a_learned_initial_carry_that_resets_restore_and_a_pytree_input_half():
    # resets put the initial carry, a function of the params here, back into the loop: its
    # derivative reaches the params through the forcings; the pair's projection is two arrays
    def init(key, input_size):
        k_g, k_c, k_h = jax.random.split(key, 3)
        return {"w_g": jax.random.normal(k_g, (input_size, H)),
                "w_c": jax.random.normal(k_c, (input_size, H)),
                "w_h": jax.random.normal(k_h, (H, H))}

    def core(params, h, u_t):
        gate, cand = u_t
        z = jax.nn.sigmoid(gate)
        return (1 - z) * h + z * jnp.tanh(cand + h @ params["w_h"]), h

    pair = gr.make_cell(init, core, hidden_size=H,
                        project=lambda p, x: (x @ p["w_g"], x @ p["w_c"]))
    resets = OPTIONS["resets"]["resets"]
    for cell in (gr.learned_initial_carry(gr.gru(H)), gr.learned_initial_carry(pair)):
        params, xs, _ = _case(cell)
        carry = cell.initial_carry((4,), params=params)
        for hoist in (False, True):
            _assert_deferred_is_the_scan(cell, (params, xs, carry), resets=resets,
                                         hoist=hoist)


def test_stacks_and_bidirectional_pairs_of_user_and_shipped_cells():
    net = gr.stack([gr.bidirectional(USER_CELLS["indrnn"], gr.lstm(4)),
                    USER_CELLS["nested"], gr.gru(3)])
    params, xs, carry = _case(net)
    _assert_deferred_is_the_scan(net, (params, xs, carry), lengths=jnp.array([7, 3, 0, 5]))


def test_vmapped_seeds_equal_each_seed_alone():
    # float32: XLA's CPU backend gets float64 gradients under vmap wrong with or without the
    # deferred pass (docs/training.md, "Float64 gradients under jax.vmap on the CPU")
    cell = gr.lstm(H)
    params = jax.vmap(lambda k: randomize(cell.init(k, I), k, dtype=jnp.float32))(
        jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (4, T, I), jnp.float32)

    def grad(backward):
        options = gr.ScanOptions(backward=backward)
        return jax.grad(lambda p: jnp.sum(gr.unroll(cell, p, xs, options=options)[1] ** 2))

    vmapped = jax.jit(jax.vmap(grad("deferred")))(params)
    for i in range(3):
        one = jax.tree.map(lambda v: v[i], params)
        assert_trees_close(jax.tree.map(lambda v: v[i], vmapped), grad("scan")(one), tol=1e-4)


def test_values_are_the_python_loop_in_float32_too():
    cell = gr.gru(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (4, T, I), jnp.float32)
    assert_trees_close(gr.unroll(cell, params, xs, options=gr.ScanOptions(backward="deferred")),
                       python_loop(cell, params, xs), tol=1e-5)
    grads = [jax.grad(lambda p, o=gr.ScanOptions(backward=b): jnp.sum(
        gr.unroll(cell, p, xs, options=o)[1] ** 2))(params) for b in ("scan", "deferred")]
    assert_trees_close(*grads, tol=1e-4)


def _takes_deferred(cell, batch_shape, **options):
    """Whether unroll's program holds the deferred scan: a custom_jvp around the loop (the
    shipped cells' steps hold custom_jvps of their own, inside it)."""
    params = cell.init(jax.random.key(0), I)
    xs = jnp.zeros((*batch_shape, T, I), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p: gr.unroll(cell, p, xs, **scan_kw(**options)))(params)

    def wraps_a_loop(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "custom_jvp_call" and "scan[" in str(eqn):
                return True
            if eqn.primitive.name != "scan" and any(
                    wraps_a_loop(getattr(v, "jaxpr", v)) for v in eqn.params.values()
                    if hasattr(getattr(v, "jaxpr", v), "eqns")):
                return True
        return False
    return wraps_a_loop(jaxpr.jaxpr)


def test_auto_defers_on_the_cpu_for_one_to_sixteen_rows_without_remat():
    assert DEFER_ROWS["cpu"] == (1, 16)
    cell = gr.rnn(H)
    assert not _takes_deferred(cell, (4,), backward="scan")
    assert _takes_deferred(cell, (4,), backward="deferred")
    expected = {(): True, (1,): True, (2,): True, (2, 4): True, (16,): True, (2, 8): True,
                (17,): False, (64,): False}
    for batch_shape, deferred in expected.items():
        assert _takes_deferred(cell, batch_shape) == (jax.default_backend() == "cpu"
                                                      and deferred), batch_shape
    assert not _takes_deferred(cell, (4,), remat=True)
    assert not _takes_deferred(cell, (4,), remat=2)


def test_resolve_backward_and_its_errors():
    carry = jnp.zeros((4, H))
    assert resolve_backward("deferred", carry, (64,)) is True
    assert resolve_backward("scan", carry, (4,)) is False
    # a carry with an integer leaf (a user's step counter) has no tangent to recur
    counted = (carry, jnp.zeros((4,), jnp.int32))
    assert resolve_backward("auto", counted, (4,)) is False
    with pytest.raises(TypeError, match="backward='deferred' needs a floating-point carry"):
        resolve_backward("deferred", counted, (4,))
    with pytest.raises(ValueError, match="pass remat=False with it"):
        resolve_backward("deferred", carry, (4,), checkpoint_every=3)
    with pytest.raises(ValueError, match=r"backward must be one of \('auto', 'scan', "
                                         r"'deferred'\); got 'fused'"):
        resolve_backward("fused", carry, (4,))
    cell = gr.min_gru(H)
    params, xs, _ = _case(cell)
    with pytest.raises(ValueError, match="backward must be one of"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(backward="fused"))
    with pytest.raises(ValueError, match="method='associative' has none to defer"):
        gr.unroll(cell, params, xs,
                  options=gr.ScanOptions(method="associative", backward="deferred"))
    with pytest.raises(ValueError, match="pass remat=False with it"):
        gr.unroll(cell, params, xs, options=gr.ScanOptions(remat=True, backward="deferred"))
    # the associative scan ignores "auto" and "scan"
    for backward in ("auto", "scan"):
        np.testing.assert_allclose(
            gr.unroll(cell, params, xs,
                      options=gr.ScanOptions(method="associative", backward=backward))[1],
            gr.unroll(cell, params, xs)[1], atol=1e-10)


def test_zero_steps():
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jnp.zeros((4, 0, I))
    grads = jax.grad(lambda p: jnp.sum(gr.unroll(cell, p, xs,
                                                 options=gr.ScanOptions(backward="deferred"))[0].h))(params)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads))


def _weight_normalised_rnn(hidden):
    """A user's tanh RNN whose recurrent matrix is weight-normalised inside the step (Salimans
    & Kingma 2016): the step derives a [H, H] array from the params alone, at every step."""
    def init(key, input_size):
        k_x, k_h = jax.random.split(key)
        return {"w_x": jax.random.normal(k_x, (input_size, hidden)) / input_size ** 0.5,
                "v": jax.random.normal(k_h, (hidden, hidden)),
                "g": jnp.ones((hidden,))}

    def core(params, h, u_t):
        w = params["g"] * params["v"] / jnp.linalg.norm(params["v"], axis=0)
        h = jnp.tanh(u_t + h @ w)
        return h, h

    return gr.make_cell(init, core, hidden_size=hidden, kind="weight_normalised_rnn",
                        project=lambda p, x: x @ p["w_x"])


def _params_gradient(layer, backward, batch=4, steps=40):
    """``(grad, params, xs)``: the gradient in the params of ``sum(ys ** 2)`` over float32
    ``xs [batch, steps, I]``, a function of the params."""
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, I), jnp.float32)
    grad = jax.grad(lambda p: jnp.sum(jnp.real(
        gr.unroll(layer, p, xs, options=gr.ScanOptions(backward=backward))[1]) ** 2))
    return grad, params, xs


def _scan_outputs_and_flops(layer, backward):
    """The shapes of every per-step output of the loops in the params' gradient of unroll,
    and that gradient's compiled FLOPs as XLA counts them (a loop's body once)."""
    grad, params, xs = _params_gradient(layer, backward)

    def stacked(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                yield from (v.aval.shape for v in eqn.outvars[eqn.params["num_carry"]:])
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    yield from stacked(inner)

    return (list(stacked(jax.make_jaxpr(grad)(params).jaxpr)),
            _flops(jax.jit(grad).lower(params).compile()), params, xs)


def _flops(compiled) -> float:
    """A compiled program's FLOPs as XLA's cost analysis counts them (a loop's body once)."""
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "user:forget_only_lstm",
                                  "weight_normalised_rnn"])
def test_the_forward_loop_keeps_each_steps_linearization_once(name):
    """The forward loop linearizes each step once and keeps only what varies from step to
    step: nothing shaped like a parameter is stacked over the steps (the weight-normalised
    matrix is formed once, outside), and after the loops the program forms the weight
    gradients' products over all steps without running the step over them again: the extra
    FLOPs over the scan's derivative are 0.8-1.2 times a pass of the step over all steps
    (the previous form, which recomputed the step there, added 1.85-2.4)."""
    layer = _weight_normalised_rnn(H) if name == "weight_normalised_rnn" else CELLS[name]
    shapes, flops, params, xs = _scan_outputs_and_flops(layer, "deferred")
    for leaf in jax.tree.leaves(params):
        assert (xs.shape[1], *leaf.shape) not in shapes
    _, scan_flops, _, _ = _scan_outputs_and_flops(layer, "scan")
    rows = jnp.swapaxes(xs, 0, 1).reshape(-1, I)
    carry = layer.initial_carry(rows.shape[:1], params=params)
    step_flops = _flops(jax.jit(lambda p: layer.step(p, carry, rows)).lower(params).compile())
    assert flops - scan_flops < 1.5 * step_flops


def test_a_step_that_derives_a_matrix_from_its_params_differentiates_as_the_scan():
    layer = _weight_normalised_rnn(H)
    _assert_deferred_is_the_scan(layer, _case(layer))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a layout of XLA's CPU backend")
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", *(f"user:{n}" for n in USER_CELLS)])
def test_the_weight_gradients_over_all_steps_are_ordinary_products_on_the_cpu(name):
    """Transposed, the forcings' product ``x_t @ dw`` over all steps is a dot of the
    cotangents and the stacked ``x`` followed by a transpose, which XLA's CPU backend folded
    into one dot contracting its first operand's axis 0 and its second's axis 1, run outside
    its fast library at a third of the speed; the deferred pass keeps the two apart, so no dot
    of the compiled gradient has that form (each cell had one or two, ``dw_h`` and ``dw_x``).
    A matrix derived from the params inside the step (the weight-normalised cell) is not
    reached: its product stays folded (docs/cells.md)."""
    grad, params, _ = _params_gradient(CELLS[name], "deferred")
    hlo = jax.jit(grad).lower(params).compile().as_text()
    dots = [line for line in hlo.splitlines() if " dot(" in line]
    assert dots
    assert not [d for d in dots if "lhs_contracting_dims={0}, rhs_contracting_dims={1}" in d]
