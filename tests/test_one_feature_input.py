"""The gated cells' input product for one input feature (``gatedrnn.cells._gated_affine``): on
the CPU, a dot with a zero second feature in the forward pass (XLA:CPU runs the fused form
slowly, docs/upstream/sliced_dynamic_slice) and the plain product when differentiated. Values
and every derivative equal ``x @ w_x + b``'s, alone and through ``gr.unroll``, and the rule
applies to one feature on the CPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_unroll import assert_trees_close
from user_cells import indrnn

import gatedrnn as gr
from gatedrnn import cells as cells_module

GATED = ["lstm", "gru", "min_gru", "min_lstm"]
TOL = 1e-12


def _cell_params_x(kind, input_size=1, batch_shape=(3,), hidden=4, seed=0):
    cell = getattr(gr, kind)(hidden)
    k_p, k_x = jax.random.split(jax.random.key(seed))
    params = cell.init(k_p, input_size)
    params = {**params, "b": jax.random.normal(k_p, params["b"].shape, params["b"].dtype)}
    return cell, params, jax.random.normal(k_x, (*batch_shape, input_size), jnp.float64)


def _uses_padded_dot(cell, params, x) -> bool:
    # a new function each time: JAX caches traces by function, and the rule is read in one
    return "custom_jvp_call" in str(jax.make_jaxpr(lambda p, x: cell.project(p, x))(params, x))


def _plain(params, x):
    return x @ params["w_x"] + params["b"]


# The four cells share one project (_gated_affine), so each batch shape is tried on one of them;
# test_unroll_equals_the_plain_product runs every cell through gr.unroll.
@pytest.mark.parametrize(("kind", "batch_shape"),
                         [("lstm", ()), ("gru", (1,)), ("min_gru", (2, 5)), ("min_lstm", (3,))])
def test_values_and_derivatives_equal_the_plain_product(kind, batch_shape):
    cell, params, x = _cell_params_x(kind, batch_shape=batch_shape)
    assert _uses_padded_dot(cell, params, x)
    np.testing.assert_array_equal(cell.project(params, x), _plain(params, x))
    for jac in (jax.jacfwd, jax.jacrev):
        assert_trees_close(jac(cell.project, argnums=(0, 1))(params, x),
                           jac(_plain, argnums=(0, 1))(params, x), TOL)

    def hvp(project):
        loss = lambda p, x: jnp.sum(jnp.sin(project(p, x)) * project(p, x) ** 2)  # noqa: E731
        return jax.jvp(jax.grad(loss, argnums=(0, 1)), (params, x),
                       (jax.tree.map(jnp.cos, params), x ** 2))[1]
    assert_trees_close(hvp(cell.project), hvp(_plain), 1e-10)


def test_derivative_in_one_argument_alone_has_no_product_of_zeros():
    cell, params, x = _cell_params_x("gru")
    for argnums in (0, 1):
        def grad(project):
            return jax.grad(lambda *a: jnp.sum(project(*a) ** 2), argnums)
        assert_trees_close(grad(cell.project)(params, x), grad(_plain)(params, x), TOL)
        counts = [str(jax.make_jaxpr(grad(project))(params, x)).count("dot_general")
                  for project in (cell.project, _plain)]
        assert counts[0] == counts[1]


def test_rule_by_features_and_backend(monkeypatch):
    cell, params, x = _cell_params_x("lstm", input_size=2)
    assert not _uses_padded_dot(cell, params, x)
    cell, params, x = _cell_params_x("lstm")
    rnn = gr.rnn(4)
    assert not _uses_padded_dot(rnn, rnn.init(jax.random.key(0), 1), x)
    monkeypatch.setattr(cells_module, "ONE_FEATURE_DOT", ())
    assert not _uses_padded_dot(cell, params, x)
    np.testing.assert_array_equal(cell.project(params, x), _plain(params, x))


def test_a_wrong_input_width_is_named():
    cell, params, _ = _cell_params_x("gru")
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\): its last axis must be the 1"):
        cell.project(params, jnp.ones((3, 2)))


def _runs(monkeypatch, layer, params, xs, rule):
    monkeypatch.setattr(cells_module, "ONE_FEATURE_DOT", rule)

    def loss(p, xs):
        return jnp.sum(jnp.sin(gr.unroll(layer, p, xs)[1]))
    forward = jax.jit(lambda p, xs: gr.unroll(layer, p, xs)[1])(params, xs)
    tangent = jax.jvp(loss, (params, xs), (params, jnp.cos(xs)))[1]
    return forward, jax.grad(loss, argnums=(0, 1))(params, xs), tangent


@pytest.mark.parametrize("kind", GATED)
def test_unroll_equals_the_plain_product(monkeypatch, kind):
    """Forward pass, gradient and forward mode of ``gr.unroll`` at I=1 (the deferred backward
    pass at 3 rows, a vmap over seeds) with the rule and without."""
    cell, params, _ = _cell_params_x(kind)
    xs = jax.random.normal(jax.random.key(1), (3, 9, 1), jnp.float64)
    runs = [_runs(monkeypatch, cell, params, xs, rule) for rule in (("cpu",), ())]
    assert_trees_close(runs[0], runs[1], TOL)

    keys = jax.random.split(jax.random.key(2), 2)
    monkeypatch.setattr(cells_module, "ONE_FEATURE_DOT", ("cpu",))
    seeds = jax.vmap(lambda k: gr.unroll(cell, cell.init(k, 1), xs)[1])(keys)
    for i, k in enumerate(keys):
        assert_trees_close(seeds[i], gr.unroll(cell, cell.init(k, 1), xs)[1], TOL)


def test_stack_with_a_user_cell(monkeypatch):
    """A stack whose first layer is a gated cell and second a user's cell, at I=1."""
    layer = gr.stack([gr.gru(4), indrnn(3)])
    params = layer.init(jax.random.key(0), 1)
    xs = jax.random.normal(jax.random.key(1), (2, 7, 1), jnp.float64)
    runs = [_runs(monkeypatch, layer, params, xs, rule) for rule in (("cpu",), ())]
    assert_trees_close(runs[0], runs[1], TOL)
