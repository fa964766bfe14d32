"""Which formulation of forward+backward through a scan is fastest at a shape, on this
machine? Measured for the shipped cells against ``jax.grad`` of ``gr.unroll`` as it is:

- ``unroll=2`` and ``unroll=4``: ``lax.scan``'s loop unrolling, applied by JAX to the
  forward and the transposed (backward) scan alike;
- ``deferred``: the params' and inputs' gradients taken after the backward scan, for all
  ``T*B`` rows at once, so that the backward loop carries only the carry's cotangent (what
  cuDNN does for the weight gradient). :func:`deferred_unroll` does it for any cell of the
  protocol, through ``cell.step`` only, with a ``jax.custom_jvp`` instead of the
  ``custom_vjp`` of ``benchmarks/fused_backward.py``: forward mode (``jax.jvp``,
  ``jax.jacfwd``) and higher derivatives keep working, and no residual is named. Its JVP
  writes the tangent of the carry as a linear recurrence driven from outside,
  ``dc_t = J_t dc_{t-1} + v_t`` with ``J_t = d step / d carry`` at step ``t`` and
  ``v_t = d step / d (params, x_t) . (dparams, dx_t)``, the forcings ``v_t`` computed for
  all steps in one ``vmap`` over the saved carries. Transposed by ``jax.grad``, the loop
  carries only the carry's cotangent and the forcings' transpose is one batched product
  after it. The price: autodiff recomputes each step's activations from the saved carry
  in a second scan, one more forward pass;
- ``carry only``: ``jax.grad`` in the initial carry alone (the params held fixed), the
  same scan without any weight gradient: a bound on what deferring the weight gradients
  could save, not a gradient of the params.

A second table isolates the cost that deferring removes: the sum ``Σ_t h_{t-1}^T g_t`` of
the recurrent weights' gradient (``h [B, H]``, ``g [B, G*H]``, random), formed in a scan
as ``jax.grad``'s backward loop forms it (a dot of the two ``B``-row matrices, then an add
to the ``[H, G*H]`` total), the same with ``h^T`` materialised first (so that the dot
contracts an ordinary ``[H, B] x [B, G*H]`` product), and after the loop as one dot over
all ``T*B`` rows.

Command: ``python benchmarks/backward_paths.py [--shape B T I H] [--repeats 7]``: 15
seconds on a 2-core CPU at the default latency shape (B=1, T=1000, I=1, H=128), 40 at
B=64, T=256, I=64, H=256. Prints the largest relative gradient difference of ``deferred``
from ``jax.grad`` and two tables of medians in ms. Not used by the library; the figures and
the conclusions are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import gatedrnn as gr
from gatedrnn.unroll import _run_dtype

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.shapes import add_shape_option  # noqa: E402
from benchmarks.timing import interleaved  # noqa: E402


def deferred_scan(step, params, carry0, xs):
    """``lax.scan(lambda c, x: step(params, c, x), carry0, xs)`` over time-major ``xs``,
    whose derivatives defer the params' and inputs' part to outside the loop (module
    docstring). Equal to the plain scan in values and in every derivative."""

    @jax.custom_jvp
    def run(params, carry0, xs):
        return jax.lax.scan(lambda c, x: step(params, c, x), carry0, xs)

    @run.defjvp
    def run_jvp(primals, tangents):
        params, carry0, xs = primals
        d_params, d_carry0, d_xs = tangents

        def forward(c, x):
            c_next, y = step(params, c, x)
            return c_next, (y, c)

        final, (ys, entering) = jax.lax.scan(forward, carry0, xs)

        def forcing(c, x, dx):
            return jax.jvp(lambda p, x: step(p, c, x), (params, x), (d_params, dx))[1]

        v_carry, v_ys = jax.vmap(forcing)(entering, xs, d_xs)

        def linear(dc, inputs):
            c, x, v_c, v_y = inputs
            j_c, j_y = jax.jvp(lambda c: step(params, c, x), (c,), (dc,))[1]
            return jax.tree.map(jnp.add, j_c, v_c), j_y + v_y

        d_final, d_ys = jax.lax.scan(linear, d_carry0, (entering, xs, v_carry, v_ys))
        return (final, ys), (d_final, d_ys)

    return run(params, carry0, xs)


def deferred_unroll(cell, params, xs, carry=None):
    """``gr.unroll(cell, params, xs, carry)`` (batch-major ``xs [*B, T, I]``, no other
    options) through :func:`deferred_scan`."""
    if carry is None:  # in the run's dtype, as unroll makes it
        carry = cell.initial_carry(xs.shape[:-2], params=params, dtype=_run_dtype(xs, params))
    carry, ys = deferred_scan(cell.step, params, carry, jnp.moveaxis(xs, -2, 0))
    return carry, jnp.moveaxis(ys, 0, -2)


def _sum_sq(ys):
    return jnp.sum(jnp.real(ys) ** 2)


def gradient_paths(cell, xs) -> dict:
    """``name -> jitted fn(params, carry)``: the gradient of ``sum(ys ** 2)`` over ``xs
    [B, T, I]`` in the params (in the initial carry for ``"carry only"``) by each path."""
    def grad(run, argnums=0):
        return jax.jit(jax.grad(lambda p, c: _sum_sq(run(p, c)[1]), argnums=argnums))

    def plain(p, c, **options):
        return gr.unroll(cell, p, xs, c, **options)

    return {"jax.grad": grad(plain),
            "unroll=2": grad(functools.partial(plain, unroll=2)),
            "unroll=4": grad(functools.partial(plain, unroll=4)),
            "deferred": grad(lambda p, c: deferred_unroll(cell, p, xs, c)),
            "carry only": grad(plain, argnums=1)}


def accumulation_paths(num_steps: int, batch: int, hidden: int, width: int) -> dict:
    """``name -> fn()``: ``Σ_t h_t^T g_t`` for random ``h [T, B, H]`` and ``g [T, B, W]``
    formed in a scan (``"in the loop"``, ``"in the loop, h^T first"``) or by one dot over
    all ``T*B`` rows (``"after the loop"``); module docstring."""
    k_h, k_g = jax.random.split(jax.random.key(1))
    hs = jax.random.normal(k_h, (num_steps, batch, hidden), jnp.float32)
    gs = jax.random.normal(k_g, (num_steps, batch, width), jnp.float32)

    def in_loop(product):
        def run(hs, gs):
            def body(total, hg):
                return total + product(*hg), None
            return jax.lax.scan(body, jnp.zeros((hidden, width), jnp.float32), (hs, gs))[0]
        return jax.jit(run)

    # the barrier keeps XLA from folding the transpose back into the dot's operand
    fns = {"in the loop": in_loop(lambda h, g: h.T @ g),
           "in the loop, h^T first": in_loop(
               lambda h, g: jax.lax.optimization_barrier(h.T) @ g),
           "after the loop": jax.jit(lambda hs, gs: hs.reshape(-1, hidden).T
                                     @ gs.reshape(-1, width))}
    return {name: functools.partial(fn, hs, gs) for name, fn in fns.items()}


def _print_table(ms: dict) -> None:
    names = list(next(iter(ms.values())))
    print("| cell | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for kind, row in ms.items():
        print(f"| {kind} | " + " | ".join(f"{row[n]:.2f}" for n in names) + " |")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"],
                        choices=["rnn", "lstm", "gru"])
    add_shape_option(parser, "the shape measured", default=(1, 1000, 1, 128))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be positive; got {args.repeats}")
    B, T, I, H = args.shape
    key = jax.random.key(0)
    xs = jax.random.normal(key, (B, T, I), jnp.float32)
    fns, sums, errors = {}, {}, {}
    for kind in args.kinds:
        cell = getattr(gr, kind)(H)
        params = cell.init(key, I)
        carry = cell.initial_carry((B,), params=params)
        paths = gradient_paths(cell, xs)
        reference, deferred = paths["jax.grad"](params, carry), paths["deferred"](params, carry)
        errors[kind] = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                           for a, b in zip(jax.tree.leaves(reference),
                                           jax.tree.leaves(deferred)))
        print(f"{kind} B={B} T={T} I={I} H={H}: deferred's largest relative gradient "
              f"difference from jax.grad {errors[kind]:.1e}", flush=True)
        for name, fn in paths.items():
            fns[kind, name] = functools.partial(fn, params, carry)
        for name, fn in accumulation_paths(T, B, H, params["w_h"].shape[1]).items():
            sums[kind, name] = fn
    times = interleaved(fns, args.repeats)
    ms = {kind: {name: 1e3 * times[kind, name]["median"] for (k, name) in fns if k == kind}
          for kind in args.kinds}
    _print_table(ms)
    times = interleaved(sums, args.repeats)
    accumulation = {kind: {name: 1e3 * times[kind, name]["median"]
                           for (k, name) in sums if k == kind} for kind in args.kinds}
    print("The recurrent weights' gradient alone, ms:")
    _print_table(accumulation)
    return {"errors": errors, "ms": ms, "accumulation": accumulation}


if __name__ == "__main__":
    main()
