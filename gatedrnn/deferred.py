"""The deferred backward pass (:func:`deferred_scan`): a scan whose derivatives in its
constants and inputs are taken outside the loop, for all steps at once, as cuDNN's RNN
backward does. :func:`gatedrnn.unroll` takes it with ``ScanOptions(backward="deferred")``
(the CPU default at 1 to 16 rows, on JAX >= 0.10; docs/performance.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal, jaxpr_as_fun


def deferred_scan(body, consts, carry, inputs, *, reverse: bool = False, unroll=1):
    """``lax.scan(lambda c, x: body(consts, c, x), carry, inputs)`` whose derivatives in
    ``consts`` and the floating-point ``inputs`` are taken outside the loop, for all steps at
    once: the weight gradients as one matmul over all ``T*B`` rows after the backward loop,
    which carries only the carry's cotangent, as cuDNN's RNN backward does.

    It is a ``jax.custom_jvp``, so forward mode (``jax.jvp``, ``jax.jacfwd``) and higher
    derivatives work as for the plain scan. With ``J_t`` the derivative of a step in its carry
    at step ``t`` and ``v_t`` its derivative in ``(consts, x_t)`` applied to their tangents,
    the carry's tangent is the linear recurrence ``dc_t = J_t dc_{t-1} + v_t``. The forward
    loop linearizes each step once (``jax.linearize``), in carry, consts and input, and keeps
    the residuals of that linearization that vary from step to step (those that depend only
    on ``consts`` are computed once, outside the loop). From the same residuals the forcings
    ``v_t`` are one ``vmap`` over all steps and the recurrence is a scan of ``J_t`` alone.
    Transposed by ``jax.grad``, that scan carries the carry's cotangent alone and ``v``'s
    transpose is one batched product after it. Needs a floating-point ``carry``; stores
    each step's residuals.

    Args:
        body: ``body(consts, carry, x_t) -> (carry, y_t)``, for any pytrees.
        consts: what the step reads besides its carry and inputs (params; any pytree).
        carry: the initial carry.
        inputs: per-step inputs, each leaf ``[T, ...]``; integer and boolean leaves (step
            indices, reset flags) get no derivative.
        reverse: as ``lax.scan``'s.
        unroll: as ``lax.scan``'s.

    Returns:
        ``(final_carry, ys)`` as ``lax.scan``'s.
    """
    leaves, treedef = jax.tree.flatten(inputs)
    floating = [jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves]

    def step(k, c, x_float, x_other):
        x_float, x_other = iter(x_float), iter(x_other)
        x = [next(x_float) if f else next(x_other) for f in floating]
        return body(k, c, jax.tree.unflatten(treedef, x))

    def scan(fn, c, xs):
        return jax.lax.scan(fn, c, xs, reverse=reverse, unroll=unroll)

    @jax.custom_jvp
    def run(k, c, x_float, x_other):
        return scan(lambda c, x: step(k, c, *x), c, (x_float, x_other))

    @run.defjvp
    def run_jvp(primals, tangents):
        k, c0, x_float, x_other = primals
        d_k, d_c0, d_float, _ = tangents
        one_step = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape[1:], v.dtype),
                                (x_float, x_other))
        linearized, varying, assemble = _step_linearization(step, k, c0, one_step)

        def forward(c, x):
            (c_next, y), residuals = linearized(c, *x)
            return c_next, (y, [r for r, v in zip(residuals, varying) if v])

        final, (ys, per_step) = scan(forward, c0, (x_float, x_other))
        # the residuals that depend on consts alone are the same at any point: at the first
        # step's (zeros when there is none), where the user's step is defined
        first = jax.tree.map(lambda v, s: v[0] if v.shape[0] else jnp.zeros(s.shape, s.dtype),
                             (x_float, x_other), one_step)
        _, fixed = linearized(c0, *first)
        zero_c, zero_k, zero_x = map(_tangent_zeros, (c0, k, one_step[0]))

        # each map is the step's linearization with the other tangents zero, taken as a JVP
        # of it so that those zeros are symbolic: no product of a zero is left to compute
        def forcing(lin, dx):
            return jax.jvp(lambda dk, dx: lin(zero_c, dk, dx), (zero_k, zero_x), (d_k, dx))[1]

        axes = assemble([None] * len(fixed), [0] * len(per_step))
        # transposed, a product ``x_t @ dw`` over all steps is ``dot(g, x)`` followed by a
        # transpose, which XLA's CPU backend folds into one dot of both operands transposed
        # and runs at a third of the speed (forward+backward 1.07-1.16x faster kept apart for
        # the LSTM and GRU at 4 to 16 rows, 1.4x at 64; docs/performance.md); a barrier between
        # two transposes of each matrix among the consts' tangents (the params, and the
        # initial carry, where it costs two small copies) keeps them apart
        d_k = jax.tree.map(_transposed_twice, d_k)
        forcings = jax.vmap(forcing, in_axes=(axes, 0))(assemble(fixed, per_step), d_float)

        def recurrence(dc, inp):
            residuals, (v_c, v_y) = inp
            lin = assemble(fixed, residuals)
            d_c, d_y = jax.jvp(lambda dc: lin(dc, zero_k, zero_x), (zero_c,), (dc,))[1]
            return jax.tree.map(jnp.add, d_c, v_c), jax.tree.map(jnp.add, d_y, v_y)

        d_final, d_ys = scan(recurrence, d_c0, (per_step, forcings))
        return (final, ys), (d_final, d_ys)

    x_float = [leaf for leaf, f in zip(leaves, floating) if f]
    x_other = [leaf for leaf, f in zip(leaves, floating) if not f]
    return run(consts, carry, x_float, x_other)


def _step_linearization(step, k, c0, one_step):
    """The linearization of ``step(k, c, x_float, x_other)`` in ``(c, k, x_float)``, traced
    once: ``(linearized, varying, assemble)``. ``linearized(c, x_float, x_other)`` gives the
    step's output and the linearization's residuals (a list of arrays); ``varying[i]`` says
    whether residual ``i`` depends on the carry or the inputs (else on ``k`` alone);
    ``assemble(fixed, per_step)`` rebuilds the linear map ``(dc, dk, dx_float) -> (d_carry,
    d_y)`` (a ``jax.tree_util.Partial``) from the residuals, taking the varying ones in turn
    from ``per_step`` and the others from ``fixed``, a list as long as all of them."""
    structure = []

    def linearize(c, k, x_float, x_other):
        out, lin = jax.linearize(lambda c, k, x: step(k, c, x, x_other), c, k, x_float)
        residuals, lin_tree = jax.tree.flatten(lin)
        structure.append((jax.tree.structure(out), lin_tree))
        return jax.tree.leaves(out), residuals

    closed = jax.make_jaxpr(linearize)(c0, k, *one_step)
    (out_tree, lin_tree), = structure
    flat_k = jax.tree.leaves(k)
    num_c, num_out = len(jax.tree.leaves(c0)), out_tree.num_leaves
    invars = closed.jaxpr.invars
    sources = [*invars[:num_c], *invars[num_c + len(flat_k):]]
    varying = _depends_on(closed.jaxpr, sources)[num_out:]
    evaluate = jaxpr_as_fun(closed)

    def linearized(c, x_float, x_other):
        flat = evaluate(*jax.tree.leaves(c), *flat_k, *jax.tree.leaves((x_float, x_other)))
        return jax.tree.unflatten(out_tree, flat[:num_out]), flat[num_out:]

    def assemble(fixed, per_step):
        per_step = iter(per_step)
        return jax.tree.unflatten(lin_tree, [next(per_step) if v else r
                                             for r, v in zip(fixed, varying)])

    return linearized, varying, assemble


def _depends_on(jaxpr, sources) -> list[bool]:
    """For each output of ``jaxpr``, whether it depends on any of the variables ``sources``
    (conservatively: an equation's outputs depend on all of its inputs)."""
    reached = set(sources)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    return [not isinstance(v, Literal) and v in reached for v in jaxpr.outvars]


def _transposed_twice(v):
    """``v`` itself, its last two axes swapped twice with an optimization barrier between."""
    if v.ndim < 2 or not jnp.issubdtype(v.dtype, jnp.inexact):
        return v
    return jnp.swapaxes(jax.lax.optimization_barrier(jnp.swapaxes(v, -1, -2)), -1, -2)


def _tangent_zeros(tree):
    """Zero tangents for the arrays (or shapes) of ``tree``: ``float0`` for integer ones."""
    def zero(v):
        if jnp.issubdtype(v.dtype, jnp.inexact):
            return jnp.zeros(v.shape, v.dtype)
        return np.zeros(v.shape, jax.dtypes.float0)
    return jax.tree.map(zero, tree)


__all__ = ["deferred_scan"]
