"""What does keeping a one-feature input product a dot (``gatedrnn.cells.ONE_FEATURE_DOT``)
give the gated cells on this machine? The forward pass and forward+backward of ``gr.unroll``,
each compiled with the rule and without it (the plain ``x @ w_x``, which XLA rewrites as a
broadcast multiply fused into the gates), timed in turn in one process.

Command: ``python benchmarks/one_feature.py [--shape B T 1 H] [--kinds lstm gru ...]
[--repeats 9]``: about 30 seconds on a 2-core CPU at the default B=1, T=1000, H=128. Prints,
per cell, both programs' medians in ms and the largest relative difference of their gradients
(0 when, as intended, the differentiated programs are the same). Figures in docs/performance.md
("One input feature on the CPU") and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import gatedrnn as gr
from gatedrnn import cells

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.shapes import add_shape_option  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    compiled_with,
    interleaved,
    largest_relative_difference,
)

KINDS = ["lstm", "gru", "min_gru", "min_lstm"]


def programs(cell, params, xs) -> dict:
    """``"forward"`` and ``"forward+backward"``, each ``{"off": compiled, "on": compiled}``.
    The rule is read when a program is traced, so each is traced from a function of its own
    (JAX reuses a function's trace)."""
    def forward(p, xs):
        return gr.unroll(cell, p, xs)[1]

    def loss(p, xs):
        return jnp.sum(forward(p, xs) ** 2)

    out = {"forward": {}, "forward+backward": {}}
    for rule, backends in (("off", ()), ("on", (jax.default_backend(),))):
        for name, fn in (("forward", lambda *a: forward(*a)),
                         ("forward+backward", jax.grad(lambda *a: loss(*a)))):
            out[name][rule] = compiled_with(jax.jit(fn), (params, xs), cells, "ONE_FEATURE_DOT",
                                            backends)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    add_shape_option(parser, "the shape measured (I must be 1)", default=(1, 1000, 1, 128))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    B, T, I, H = args.shape
    if I != 1:
        parser.error(f"--shape: the rule is for one input feature, so I must be 1; got {I}")
    if args.repeats < 1:
        parser.error(f"--repeats must be positive; got {args.repeats}")
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    result = {}
    for kind in args.kinds:
        cell = getattr(gr, kind)(H)
        params = cell.init(jax.random.key(0), I)
        compiled = programs(cell, params, xs)
        grads = [compiled["forward+backward"][rule](params, xs) for rule in ("off", "on")]
        difference = largest_relative_difference(*grads)
        times = interleaved({(name, rule): (lambda f=f: jax.block_until_ready(f(params, xs)))
                             for name, by_rule in compiled.items()
                             for rule, f in by_rule.items()}, args.repeats)
        ms = {name: {rule: 1e3 * times[name, rule]["median"] for rule in ("off", "on")}
              for name in compiled}
        result[kind] = {"ms": ms, "gradient_difference": difference}
        print(f"{kind} B={B} T={T} I=1 H={H}, ms without -> with the rule: " + ", ".join(
            f"{name} {m['off']:.2f} -> {m['on']:.2f} ({m['off'] / m['on']:.2f}x)"
            for name, m in ms.items()) + f"; gradients differ by {difference:.1e}", flush=True)
    return result


if __name__ == "__main__":
    main()
