"""Does a cuDNN-style backward pass, with the weight gradients as one matmul over all ``T*B``
rows after the backward scan, beat JAX's own gradient of ``lax.scan``, for any cell?

The backward pass of a scan accumulates ``dW_h += h_{t-1}^T d_gates_t`` at every step: T
small matmuls in the sequential loop. Here a ``jax.custom_vjp`` keeps only what is
sequential in the loop (the carry's cotangent) and takes the params' cotangent afterwards,
for every step at once. It works for any cell of the protocol, without knowing its params'
names: the forward scan saves the residuals of ``jax.linearize`` of ``recur`` (those that
change from step to step; the loop-invariant ones, such as ``w_h`` itself, once, found by
tracing which residuals depend on the carry or the input); the backward scan transposes
each step's linear map in the carry and input; the params' cotangent is the transpose of
the linear map in the params vmapped over time with the params unbatched, which JAX
batches into one matmul over all rows.

Command: ``python benchmarks/fused_backward.py [--kind lstm] [--shape 64 256 64 256]``
(about a minute on a 2-core CPU). Prints the largest relative difference of the gradients
from ``jax.grad`` of ``gr.unroll`` and the median times of each path: JAX's own derivative
of the scan (``backward="scan"``, hoisted or not), the library's deferred backward
(``backward="deferred"``, a ``custom_jvp`` that keeps forward mode) and this one. Not used
by the library: on the 2-core CPU it was slower at B=64 (benchmarks/RESULTS.md), where
moving the saved residuals costs more than the T small matmuls, and at 2 to 8 rows, where it
is faster, ``backward="deferred"`` does about as well without losing forward mode. Known gap:
the tests' nested user cell (nested params, a NamedTuple carry) fails: ``jax.linearize``
gives it another number of residuals in the scan body than in :func:`varying_outputs`'
trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import gatedrnn as gr

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.shapes import add_shape_option  # noqa: E402
from benchmarks.timing import interleaved  # noqa: E402


def varying_outputs(fn, args: tuple, varying: tuple[int, ...]) -> list[bool]:
    """For each output leaf of ``fn(*args)``: whether it depends on the arguments at the
    positions ``varying`` (traced once; an equation's outputs depend on all its inputs)."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    depends, position = set(), 0
    for i, arg in enumerate(args):
        count = len(jax.tree.leaves(arg))
        if i in varying:
            depends.update(jaxpr.invars[position:position + count])
        position += count

    def tracked(v):
        return not hasattr(v, "val") and v in depends  # literals carry a value

    for eqn in jaxpr.eqns:
        if any(tracked(v) for v in eqn.invars):
            depends.update(eqn.outvars)
    return [tracked(v) for v in jaxpr.outvars]


def fused_scan(cell, params, us, carry0):
    """``lax.scan`` of ``cell.recur`` over projected inputs ``us [T, B, G]`` from
    ``carry0``, returning ``(final carry, ys)``, with the backward pass described above."""
    def recur(p, c, u):
        return cell.recur(p, c, u)

    def residuals(p, c, u):
        return jax.tree.leaves(jax.linearize(recur, p, c, u)[1])

    mask = varying_outputs(residuals, (params, carry0, us[0]), (1, 2))
    structure = {}

    def rebuild(fixed, varying):
        fixed, varying = iter(fixed), iter(varying)
        return structure["tree"].unflatten([next(varying) if m else next(fixed)
                                            for m in mask])

    @jax.custom_vjp
    def run(params, us, carry0):
        return jax.lax.scan(lambda c, u: recur(params, c, u), carry0, us)

    def forward(params, us, carry0):
        def body(c, u):
            (c, y), linear = jax.linearize(recur, params, c, u)
            leaves, structure["tree"] = jax.tree.flatten(linear)
            return c, (y, [leaf for leaf, m in zip(leaves, mask) if m])

        carry, (ys, varying) = jax.lax.scan(body, carry0, us)
        fixed = [leaf for leaf, m in zip(residuals(params, carry0, us[0]), mask) if not m]
        return (carry, ys), (fixed, varying, params, carry0, us[0])

    def backward(saved, cotangents):
        fixed, varying, params, carry0, u0 = saved
        ct_carry, ct_ys = cotangents
        no_params = jax.tree.map(jnp.zeros_like, params)

        def body(ct_c, inp):
            v, ct_y = inp
            linear = rebuild(fixed, v)
            transpose = jax.linear_transpose(lambda dc, du: linear(no_params, dc, du),
                                             carry0, u0)
            d_c, d_u = transpose((ct_c, ct_y))
            return d_c, (d_u, (ct_c, ct_y))

        ct_c0, (d_us, ct_steps) = jax.lax.scan(body, ct_carry, (varying, ct_ys), reverse=True)
        no_carry = jax.tree.map(jnp.zeros_like, carry0)
        no_input = jnp.zeros_like(u0)

        def over_time(dp):
            return jax.vmap(lambda v: rebuild(fixed, v)(dp, no_carry, no_input))(varying)

        (d_params,) = jax.linear_transpose(over_time, params)(ct_steps)
        return d_params, d_us, ct_c0

    run.defvjp(forward, backward)
    return run(params, us, carry0)


def fused_unroll(cell, params, xs):
    """``gr.unroll(cell, params, xs)`` (batch-major, no options) through :func:`fused_scan`."""
    xs_tm = jnp.moveaxis(xs, -2, 0)
    us = cell.project(params, xs_tm)
    carry, ys = fused_scan(cell, params, us,
                           cell.initial_carry(xs.shape[:-2], params=params))
    return carry, jnp.moveaxis(ys, 0, -2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="lstm", choices=["rnn", "lstm", "gru"])
    add_shape_option(parser, "the shape measured", default=(64, 256, 64, 256))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be positive; got {args.repeats}")
    B, T, I, H = args.shape
    key = jax.random.key(0)
    xs = jax.random.normal(key, (B, T, I), jnp.float32)
    cell = getattr(gr, args.kind)(H)
    params = cell.init(key, I)

    def loss(run):
        return jax.jit(jax.grad(lambda p, x: jnp.sum(run(p, x)[1] ** 2)))

    def unrolled(**options):
        return loss(lambda p, x: gr.unroll(cell, p, x, **options))

    runs = {"jax.grad, hoisted": unrolled(hoist_projection=True, backward="scan"),
            "jax.grad, not hoisted": unrolled(hoist_projection=False, backward="scan"),
            "backward='deferred'": unrolled(hoist_projection=False, backward="deferred"),
            "fused backward": loss(lambda p, x: fused_unroll(cell, p, x))}
    reference = runs["jax.grad, hoisted"](params, xs)
    fused = runs["fused backward"](params, xs)
    error = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(fused)))
    print(f"{args.kind} B={B} T={T} I={I} H={H}: largest relative gradient difference "
          f"{error:.1e}")
    times = interleaved({name: (lambda f=f: f(params, xs)) for name, f in runs.items()},
                        args.repeats)
    for name, t in times.items():
        print(f"{name:24s} {1e3 * t['median']:8.1f} ms")
    return {"error": error, "ms": {n: 1e3 * t["median"] for n, t in times.items()}}


if __name__ == "__main__":
    main()
