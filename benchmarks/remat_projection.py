"""Where the input projection goes when ``remat`` checkpoints, and what each place costs.

With ``remat`` checkpointing segments of ``k`` steps, ``gr.unroll`` computes a hoisted
projection per segment, inside the checkpoint (``hoist=True``, and ``"auto"``
off the CPU), so it is recomputed with its segment instead of stored whole. This script
measures, for forward+backward (``jax.grad`` of ``sum(ys ** 2)`` in the params) at one shape,
XLA's planned temporaries and the median time of: the default, the projection hoisted per
segment, projected per step, and ``remat=False`` (every step's residuals stored, the
projection where ``"auto"`` puts it).

Command: ``python benchmarks/remat_projection.py [--kinds lstm gru] [--shape 64 4096 64 256]
[--remat K] [--repeats 7]`` (``--remat`` default ``ceil(sqrt(T))``, what ``"auto"`` picks at
this size). Figures are in benchmarks/RESULTS.md ("Peak memory at T=4096" on the GPU).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parents[1]))
import gatedrnn as gr  # noqa: E402
from benchmarks.shapes import add_shape_option  # noqa: E402
from benchmarks.timing import interleaved  # noqa: E402


def measure(kind: str, shape: tuple, remat: int, repeats: int) -> dict:
    """``{variant: {"temp_mib": XLA's planned temporaries, "ms": median}}`` for ``gr.<kind>``
    over ``[B, T, I]`` inputs."""
    B, T, I, H = shape
    cell = getattr(gr, kind)(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    variants = {"default": {}, "hoisted per segment": dict(remat=remat, hoist=True),
                "per step": dict(remat=remat, hoist=False),
                "remat=False": dict(remat=False)}
    compiled, out = {}, {}
    for name, options in variants.items():
        grad = jax.grad(lambda p, x, o=gr.ScanOptions(**options): jnp.sum(
            gr.unroll(cell, p, x, options=o)[1] ** 2))
        compiled[name] = jax.jit(grad).lower(params, xs).compile()
        out[name] = {"temp_mib": compiled[name].memory_analysis().temp_size_in_bytes / 2**20}
    times = interleaved({n: lambda c=c: c(params, xs) for n, c in compiled.items()}, repeats)
    for name in variants:
        out[name]["ms"] = 1e3 * times[name]["median"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["lstm", "gru"],
                        choices=["rnn", "lstm", "gru"])
    add_shape_option(parser, "the shape measured", default=(64, 4096, 64, 256))
    parser.add_argument("--remat", type=int, default=None,
                        help="steps per checkpointed segment (default ceil(sqrt(T)))")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.remat is not None and args.remat < 2):
        parser.error(f"--repeats must be positive and --remat at least 2; got --repeats "
                     f"{args.repeats} --remat {args.remat}")
    remat = args.remat or math.ceil(math.sqrt(args.shape[1]))
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); B, T, I, H = "
          f"{', '.join(map(str, args.shape))}; remat={remat}\n")
    print("| cell | variant | XLA temporaries, MiB | forward+backward, ms |")
    print("|---|---|---|---|", flush=True)
    out = {}
    for kind in args.kinds:
        out[kind] = measure(kind, tuple(args.shape), remat, args.repeats)
        for name, r in out[kind].items():
            print(f"| {kind} | {name} | {r['temp_mib']:.0f} | {r['ms']:.1f} |", flush=True)
    return out


if __name__ == "__main__":
    main()
