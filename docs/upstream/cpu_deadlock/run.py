"""Standalone reproducer of a hang in JAX 0.10.2's CPU runtime, for an upstream report.

Needs only ``jax`` and ``flatbuffers`` (for ``jax.export`` deserialisation):

    python run.py                                                          # hangs, often
    XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false python run.py   # completes

It replays ``program.bin`` (an 8-seed vmapped LSTM training program exported with
``jax.export``; ``make_program.py`` made it) six times. A call that does not return within
``--timeout`` seconds is reported by a watchdog thread (the main thread is blocked inside
XLA; ``py-spy dump`` or gdb then shows every XLA worker idle and the caller waiting in
``tsl::BlockUntilReady``), which prints the Python stacks and exits with status 3.

Seen on a 2-core x86_64 CPU, JAX/jaxlib 0.10.2, Python 3.11 (2026-11-22): without the flag 4
of 7 runs hung (on the first call twice, on the third twice); with the flag 3 of 3 runs
completed all six calls (about 3 s each after the first). A simpler hand-written LSTM training
loop of the same sizes (no evaluation step, no gatedrnn) did not hang in 4 runs of 5-12
calls, hence the export of the real program.
"""

import argparse
import faulthandler
import os
import threading
import time
from pathlib import Path

import jax


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}",
          flush=True)
    exported = jax.export.deserialize(
        bytearray(Path(__file__).with_name("program.bin").read_bytes()))
    key_data = jax.random.key_data(jax.random.split(jax.random.key(0), 8))
    for call in range(args.calls):
        done = threading.Event()

        def watchdog(call=call, done=done):
            if not done.wait(args.timeout):
                print(f"call {call}: no result after {args.timeout:.0f} s: HANG", flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)

        threading.Thread(target=watchdog, daemon=True).start()
        start = time.perf_counter()
        losses = jax.block_until_ready(exported.call(key_data))
        done.set()
        print(f"call {call}: {time.perf_counter() - start:.1f} s, losses {losses.shape}",
              flush=True)
    print("completed without a hang")


if __name__ == "__main__":
    main()
