"""Which ``unroll`` factor of ``gr.unroll`` is fastest on this backend, cell and shape, and
what does each cost in compile time? With ``--hoist both``, each factor is measured with the
input projection hoisted out of the scan and projected per step.

``lax.scan``'s loop unrolling trades a longer program (compile time) for fewer loop
iterations. On a 2-core CPU it pays only for single-sequence gated cells
(``backward_paths.py``); on a GPU every iteration of XLA's while loop adds a fixed cost
(its kernel launches and the loop's own bookkeeping), which a short step cannot hide.
This script measures forward and forward+backward (``jax.grad`` of ``sum(ys ** 2)`` in the
params) for each factor, interleaved, with everything else at its default, and the
seconds of the first call of each (compiling, then one run).

Command: ``python benchmarks/unroll_factors.py [--factors 1 2 4 8 16] [--kinds rnn lstm gru]
[--shapes 64,256,64,256 256,100,128,512 1,1000,1,128] [--hoist auto|both] [--repeats 7]``:
about 4 minutes on an H100 with the defaults. Prints one markdown table per shape (ms; the
first-call seconds in brackets). Figures and conclusions are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.run import gatedrnn_fns  # noqa: E402
from benchmarks.timing import interleaved  # noqa: E402


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is four positive integers B,T,I,H; got "
                                         f"{text!r}")
    return shape


def variants(factors: list[int], hoist: str) -> dict[str, dict]:
    """``{column label: gr.unroll options}``: each factor, and with ``hoist="both"`` each
    factor hoisted and projected per step."""
    if hoist == "auto":
        return {f"unroll={k}": {"unroll": k} for k in factors}
    return {f"unroll={k}, {label}": {"unroll": k, "hoist": value}
            for k in factors for label, value in (("hoisted", True), ("per step", False))}


def measure(kind: str, shape: tuple, columns: dict[str, dict], repeats: int) -> dict:
    """``{label: {"forward": ms, "forward+backward": ms, "first call": s}}`` of
    ``gr.<kind>(H)`` over ``[B, T, I]`` inputs, one entry per ``columns`` label and its
    options."""
    B, T, I, H = shape
    key = jax.random.key(0)
    xs = jax.random.normal(key, (B, T, I), jnp.float32)
    fns, first = {}, {}
    for k, options in columns.items():
        for mode, fn in zip(("forward", "forward+backward"),
                            gatedrnn_fns(kind, xs, key, H, **options)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            first[k, mode] = time.perf_counter() - start
            fns[k, mode] = fn
    times = interleaved(fns, repeats)
    return {k: {**{mode: 1e3 * times[k, mode]["median"]
                   for mode in ("forward", "forward+backward")},
                "first call": first[k, "forward+backward"]} for k in columns}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"],
                        choices=["rnn", "lstm", "gru"])
    parser.add_argument("--shapes", type=_shape, nargs="+",
                        default=[(64, 256, 64, 256), (256, 100, 128, 512), (1, 1000, 1, 128)],
                        metavar="B,T,I,H")
    parser.add_argument("--hoist", choices=["auto", "both"], default="auto",
                        help="'both': each factor with the input projection hoisted and per "
                             "step (default: hoist='auto')")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if min(args.factors) < 1 or args.repeats < 1:
        parser.error(f"--factors and --repeats must be positive; got --factors "
                     f"{' '.join(map(str, args.factors))} --repeats {args.repeats}")
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})", flush=True)
    columns = variants(args.factors, args.hoist)
    out = {}
    for shape in args.shapes:
        print(f"\nB, T, I, H = {', '.join(map(str, shape))}: forward / forward+backward, ms "
              "(first call of forward+backward, s)\n")
        print("| cell | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns), flush=True)
        for kind in args.kinds:
            row = measure(kind, shape, columns, args.repeats)
            out[kind, shape] = row
            print(f"| {kind} | " + " | ".join(
                f"{r['forward']:.2f} / {r['forward+backward']:.2f} ({r['first call']:.1f})"
                for r in row.values()) + " |", flush=True)
    return out


if __name__ == "__main__":
    main()
