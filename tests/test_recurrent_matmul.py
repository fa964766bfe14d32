"""``gr.recurrent_matmul``: ``h @ w`` whose derivative in ``h`` reads a transposed copy of ``w``
made outside the scan. Values and every derivative equal ``h @ w``'s (``jax.jacfwd``,
``jax.jacrev``, Hessian-vector products), in a scan and through ``gr.unroll`` for a user's cell
that uses it, and the rule takes the copy only on the CPU for at most 16 rows."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import scan_kw
from test_unroll import assert_trees_close

import gatedrnn as gr
from gatedrnn import cells as cells_module

TOL = 1e-12


def _hw(batch_shape, k=5, n=7, seed=0):
    k_h, k_w = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(k_h, (*batch_shape, k), jnp.float64),
            jax.random.normal(k_w, (k, n), jnp.float64))


def _uses_copy(fn, *args) -> bool:
    # a new function each time: JAX caches traces by function, and the rule is read in one
    return "custom_jvp_call" in str(jax.make_jaxpr(lambda *a: fn(*a))(*args))


@pytest.mark.parametrize("batch_shape", [(), (1,), (4,), (2, 3)])
def test_values_and_derivatives_equal_the_plain_product(batch_shape):
    h, w = _hw(batch_shape)
    assert _uses_copy(gr.recurrent_matmul, h, w)
    np.testing.assert_array_equal(gr.recurrent_matmul(h, w), h @ w)
    for jac in (jax.jacfwd, jax.jacrev):
        assert_trees_close(jac(gr.recurrent_matmul, argnums=(0, 1))(h, w),
                           jac(jnp.matmul, argnums=(0, 1))(h, w), TOL)

    def hvp(product):
        loss = lambda h, w: jnp.sum(jnp.sin(product(h, w)) * product(h, w) ** 2)  # noqa: E731
        return jax.jvp(jax.grad(loss, argnums=(0, 1)), (h, w), (jnp.cos(h), w ** 2))[1]
    assert_trees_close(hvp(gr.recurrent_matmul), hvp(jnp.matmul), 1e-10)


def test_derivative_in_one_argument_alone():
    """Symbolic zeros: differentiating in ``h`` alone or ``w`` alone gives the plain
    product's derivative with as many products as it, none of them of zeros."""
    h, w = _hw((3,))
    for argnums in (0, 1):
        def grad(product):
            return jax.grad(lambda *a: jnp.sum(product(*a) ** 2), argnums)
        assert_trees_close(grad(gr.recurrent_matmul)(h, w), grad(jnp.matmul)(h, w), TOL)
        counts = [str(jax.make_jaxpr(grad(product))(h, w)).count("dot_general")
                  for product in (gr.recurrent_matmul, jnp.matmul)]
        assert counts[0] == counts[1]


def test_mixed_dtypes_follow_the_plain_product():
    h, w = _hw((4,))
    h32 = h.astype(jnp.float32)
    out = gr.recurrent_matmul(h32, w)
    assert out.dtype == (h32 @ w).dtype
    tangent = jax.jvp(gr.recurrent_matmul, (h32, w), (jnp.ones_like(h32), jnp.ones_like(w)))[1]
    assert tangent.dtype == out.dtype
    np.testing.assert_allclose(jax.grad(lambda h: jnp.sum(gr.recurrent_matmul(h, w)))(h32),
                               jax.grad(lambda h: jnp.sum(h @ w))(h32), rtol=1e-6)


def test_backward_loop_reads_the_copy_in_its_own_layout():
    """Why it exists: in ``jax.grad`` of a scan, every product of the backward loop with a
    ``[K, N]`` weight contracts the first axis of a ``[N, K]`` copy, made outside the loop."""
    h0, w = _hw((4,), k=6, n=6)

    def loss(w, product):
        final, _ = jax.lax.scan(lambda h, _: (jnp.tanh(product(h, w)), None), h0, None, length=5)
        return jnp.sum(final ** 2)

    def backward_loop_contractions(product):
        jaxpr = jax.make_jaxpr(jax.grad(loss), static_argnums=1)(w, product)
        loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan" and e.params["reverse"]]
        assert len(loops) == 1
        return [e.params["dimension_numbers"][0] for e in loops[0].params["jaxpr"].jaxpr.eqns
                if e.primitive.name == "dot_general"]

    assert ((1,), (0,)) in backward_loop_contractions(gr.recurrent_matmul)
    assert ((1,), (1,)) in backward_loop_contractions(jnp.matmul)
    assert_trees_close(jax.grad(loss)(w, gr.recurrent_matmul), jax.grad(loss)(w, jnp.matmul), TOL)


def test_rule_by_rows_and_backend(monkeypatch):
    rows = cells_module.TRANSPOSED_COPY_ROWS["cpu"]
    assert _uses_copy(gr.recurrent_matmul, *_hw((rows,)))
    assert not _uses_copy(gr.recurrent_matmul, *_hw((rows + 1,)))
    assert not _uses_copy(gr.recurrent_matmul, *_hw((4, 5)))
    monkeypatch.setattr(cells_module, "TRANSPOSED_COPY_ROWS", {})
    assert not _uses_copy(gr.recurrent_matmul, *_hw((4,)))


def test_vmapped_weights():
    """Eight seeds' weights at once (float32: XLA:CPU's float64 vmap-of-grad bug,
    docs/training.md)."""
    h, _ = _hw((4,))
    ws = jax.random.normal(jax.random.key(3), (8, 5, 7), jnp.float32)
    h = h.astype(jnp.float32)

    def grads(product):
        return jax.vmap(jax.grad(lambda w: jnp.sum(jnp.tanh(product(h, w)) ** 2)))(ws)
    np.testing.assert_allclose(grads(gr.recurrent_matmul), grads(jnp.matmul), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("h, w, words", [
    (jnp.ones((3, 5)), jnp.ones((5, 2, 2)), "w [K, N]"),
    (jnp.ones((3, 4)), jnp.ones((5, 2)), "h of shape (3, 4) and w of shape (5, 2)"),
    (jnp.ones(()), jnp.ones((5, 2)), "h [*B, K]"),
])
def test_bad_shapes_name_both(h, w, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        gr.recurrent_matmul(h, w)


def _user_rnn(product):
    """A researcher's tanh RNN with nested params, its recurrent product taken by ``product``."""
    def init(key, input_size):
        k_x, k_h = jax.random.split(key)
        return {"inp": {"kernel": jax.random.normal(k_x, (input_size, 6)) / input_size},
                "rec": 0.5 * jax.random.normal(k_h, (6, 6)) / 6 ** 0.5}

    def core(params, h, u_t):
        h = jnp.tanh(u_t + product(h, params["rec"]))
        return h, h

    return gr.make_cell(init, core, hidden_size=6,
                        project=lambda p, x: x @ p["inp"]["kernel"])


@pytest.mark.parametrize("backward", ["scan", "deferred"])
@pytest.mark.parametrize("options", [{}, {"reverse": True}, {"lengths": [7, 3, 0, 5]}],
                         ids=["plain", "reverse", "lengths"])
def test_users_cell_through_unroll(backward, options):
    mine, plain = _user_rnn(gr.recurrent_matmul), _user_rnn(jnp.matmul)
    params = mine.init(jax.random.key(1), 3)
    xs = jax.random.normal(jax.random.key(2), (4, 7, 3), jnp.float64)
    options = {k: jnp.asarray(v) if k == "lengths" else v for k, v in options.items()}

    def loss(cell):
        return lambda p, x: jnp.sum(gr.unroll(cell, p, x,
                                              **scan_kw(**options, backward=backward))[1] ** 2)
    assert_trees_close(jax.grad(loss(mine), (0, 1))(params, xs),
                       jax.grad(loss(plain), (0, 1))(params, xs), 1e-10)
    assert_trees_close(jax.jvp(loss(mine), (params, xs), (params, xs)),
                       jax.jvp(loss(plain), (params, xs), (params, xs)), 1e-10)
