"""What a vmapped multi-seed training run costs per seed, against one seed alone.

Question: does ``jax.jit(jax.vmap(make_train(config)))(keys)`` cost at most one single run
per seed (the bound on a CPU, where XLA has little per-step overhead to share), and how much
less where one run is overhead-bound (a GPU)? The run: an LSTM (hidden 32) trained on the
adding problem (T=100, batch 16) with Adam, one evaluation at the end.

Command: ``python benchmarks/seeds.py`` (about 2 minutes on a 2-core CPU); ``--seeds 1 2 4 8``
``--steps 200 --repeats 3``. Prints a markdown table and writes ``benchmarks/seeds.json``.
Compile time is excluded: each program is compiled and run once before timing, then the
median of ``--repeats`` runs is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import jax

# gatedrnn avoids JAX 0.10's CPU deadlock on import (gr.workarounds); --keep-cpu-scheduler
# opts out, to measure what that costs (use at most 4 seeds then: more can hang)
if "--keep-cpu-scheduler" in sys.argv:
    os.environ["GATEDRNN_KEEP_CPU_SCHEDULER"] = "1"

import gatedrnn as gr  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.timing import time_run  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).with_name("seeds.json")))
    parser.add_argument("--keep-cpu-scheduler", action="store_true",
                        help="run without gr.workarounds.avoid_cpu_deadlock() (can hang "
                             "beyond 4 seeds on JAX 0.10 CPUs)")
    argv = sys.argv[1:] if argv is None else list(argv)  # recorded as the command
    args = parser.parse_args(argv)

    config = gr.train.Config(cell=gr.lstm(args.hidden), task=gr.tasks.adding(args.seq_len),
                             steps=args.steps, batch_size=args.batch_size,
                             eval_every=args.steps, eval_batch_size=args.batch_size)
    train = gr.train.make_train(config)
    rows = []
    for seeds in sorted({1, *args.seeds}):  # one seed alone is the reference
        keys = jax.random.split(jax.random.key(0), seeds)
        fn = jax.jit(train) if seeds == 1 else jax.jit(jax.vmap(train))
        seconds = time_run(fn, keys[0] if seeds == 1 else keys, repeats=args.repeats)
        per_step = seconds / args.steps
        if seeds == 1:
            base = per_step
        rows.append({"seeds": seeds, "seconds": seconds, "ms_per_step": 1e3 * per_step,
                     "vs_one_seed": per_step / base,
                     "per_seed_vs_one_seed": per_step / seeds / base})
        print(f"{seeds} seeds: {seconds:.2f} s for {args.steps} steps", flush=True)

    device = jax.devices()[0]
    record = {"command": " ".join(["python benchmarks/seeds.py", *argv]),
              "device": f"{device.platform}: {getattr(device, 'device_kind', '')}",
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "config": vars(args), "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=1))
    print("\n| seeds | ms / step | cost vs one seed | per seed vs one seed |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seeds']} | {r['ms_per_step']:.2f} | {r['vs_one_seed']:.2f}x | "
              f"{r['per_seed_vs_one_seed']:.2f}x |")
    return record


if __name__ == "__main__":
    main()
