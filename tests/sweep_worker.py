"""A toy sweep for test_sweeps, run in-process or in a fresh process: the device count and
jax.distributed must be fixed before JAX starts, so those tests start new interpreters.

python tests/sweep_worker.py OUT_DIR [--interrupt-after N] [--process I --processes P --port N]
"""

import argparse
import os
import signal

import jax

SEEDS = 3
GRID = {"learning_rate": [3e-3, 3e-2]}


def config():
    import gatedrnn as gr
    return gr.train.Config(cell=gr.gru(8), task=gr.tasks.adding(10), steps=40, batch_size=16,
                           eval_every=10, eval_batch_size=64)


def run(out_dir):
    import gatedrnn as gr
    return gr.sweep(config(), seeds=SEEDS, grid=GRID, out_dir=out_dir, chunk_evals=1,
                    progress=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--interrupt-after", type=int, default=0)
    parser.add_argument("--process", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # as tests/conftest.py, so results compare with the in-process run
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{args.port}", args.processes, args.process)
    if args.interrupt_after:
        import gatedrnn.sweeps as sweeps
        write = sweeps.write_json

        def write_then_die(path, payload):
            # a hard kill right after the record first counts chunk N done: its checkpoint is
            # written, the older one not yet deleted
            write(path, payload)
            if payload.get("evals_done") == args.interrupt_after:
                os.kill(os.getpid(), signal.SIGKILL)
        sweeps.write_json = write_then_die
    run(args.out_dir)
    print(f"devices={jax.device_count()} processes={jax.process_count()}")


if __name__ == "__main__":
    main()
