"""Which formulation of forward+backward through a scan is fastest at a shape, on this
machine? Measured for the shipped cells against ``jax.grad`` of ``gr.unroll`` with JAX's own
derivative of the scan (``backward="scan"``):

- ``unroll=2`` and ``unroll=4``: ``lax.scan``'s loop unrolling, applied by JAX to the
  forward and the transposed (backward) scan alike;
- ``deferred``: ``gr.ScanOptions(backward="deferred")``, the params' and inputs' gradients
  taken after the backward scan, for all ``T*B`` rows at once, so that the backward loop
  carries only the carry's cotangent (what cuDNN does for the weight gradient; see
  :func:`gatedrnn.scan.deferred_scan`), which ``backward="auto"`` takes on the CPU for 1 to
  16 rows;
- ``carry only``: ``jax.grad`` in the initial carry alone (the params held fixed), the
  same scan without any weight gradient: a bound on what deferring the weight gradients
  could save, not a gradient of the params;
- ``jax.grad, h @ w`` and ``deferred, h @ w``: those two paths compiled with
  :func:`gatedrnn.recurrent_matmul` falling back to ``h @ w`` (``TRANSPOSED_COPY_ROWS``
  emptied while they are traced), so that the backward loop's product ``g @ w_h^T`` reads
  ``w_h`` transposed instead of a transposed copy; it is what the shipped cells did before
  they took their recurrent products through it;
- ``deferred, folded``: the deferred path compiled without the optimization barrier that
  keeps the transpose of its weight gradients' products apart from the products (the
  barrier removed while it is traced), so that XLA folds the two into one dot of both
  operands transposed, as it did before the barrier was added.

A second table isolates the cost that deferring removes: the sum ``Σ_t h_{t-1}^T g_t`` of
the recurrent weights' gradient (``h [B, H]``, ``g [B, G*H]``, random), formed in a scan
as ``jax.grad``'s backward loop forms it (a dot of the two ``B``-row matrices, then an add
to the ``[H, G*H]`` total), the same with ``h^T`` materialised first (so that the dot
contracts an ordinary ``[H, B] x [B, G*H]`` product), and after the loop as one dot over
all ``T*B`` rows.

Command: ``python benchmarks/backward_paths.py [--shape B T I H] [--repeats 7]``: 15
seconds on a 2-core CPU at the default latency shape (B=1, T=1000, I=1, H=128), 40 at
B=64, T=256, I=64, H=256. Prints the largest relative gradient difference of any path
(but ``carry only``) from ``jax.grad`` and two tables of medians in ms. The figures are in
benchmarks/RESULTS.md, and ``backward="auto"``'s rule (``gatedrnn.scan.DEFER_ROWS``) and
``gr.recurrent_matmul``'s (``gatedrnn.cells.TRANSPOSED_COPY_ROWS``) were chosen from them.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import gatedrnn as gr
from gatedrnn import cells

deferred_module = sys.modules["gatedrnn.deferred"]

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.shapes import add_shape_option  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    compiled_with,
    interleaved,
    largest_relative_difference,
)


def _sum_sq(ys):
    return jnp.sum(jnp.real(ys) ** 2)


def gradient_paths(cell, xs) -> dict:
    """``name -> jitted fn(params, carry)``: the gradient of ``sum(ys ** 2)`` over ``xs
    [B, T, I]`` in the params (in the initial carry for ``"carry only"``) by each path."""
    def grad(run, argnums=0):
        return jax.jit(jax.grad(lambda p, c: _sum_sq(run(p, c)[1]), argnums=argnums))

    def plain(p, c, backward="scan", **options):
        return gr.unroll(cell, p, xs, c, options=gr.ScanOptions(**options, backward=backward))

    def deferred():  # a new jitted function each: jax.jit keeps one trace per function
        return grad(functools.partial(plain, backward="deferred"))

    return {"jax.grad": grad(plain),
            "unroll=2": grad(functools.partial(plain, unroll=2)),
            "unroll=4": grad(functools.partial(plain, unroll=4)),
            "deferred": deferred(),
            "carry only": grad(plain, argnums=1),
            "jax.grad, h @ w": _traced_with(grad(plain), cells, "TRANSPOSED_COPY_ROWS", {}),
            "deferred, h @ w": _traced_with(deferred(), cells, "TRANSPOSED_COPY_ROWS", {}),
            "deferred, folded": _traced_with(deferred(), deferred_module, "_transposed_twice",
                                             lambda v: v)}


def _traced_with(fn, module, name, value):
    """``fn`` compiled, at its first call, with ``module.name`` set to ``value``
    (:func:`benchmarks.timing.compiled_with`)."""
    compiled = {}

    def run(*args):
        if not compiled:
            compiled["fn"] = compiled_with(fn, args, module, name, value)
        return compiled["fn"](*args)
    return run


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
        reference = paths["jax.grad"](params, carry)
        errors[kind] = max(largest_relative_difference(reference, fn(params, carry))
                           for name, fn in paths.items() if name != "carry only")
        print(f"{kind} B={B} T={T} I={I} H={H}: every path's largest relative gradient "
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
