"""Writes ``program.bin``: the exported (``jax.export``) StableHLO of gatedrnn's 8-seed
vmapped LSTM training program, the one that hangs, so ``run.py`` can replay it with JAX alone.

    pip install -e . flatbuffers && python docs/upstream/cpu_deadlock/make_program.py

The program: ``jax.vmap(gr.train.make_train(config))`` over 8 seed keys (as raw ``uint32
[8, 2]`` key data), an LSTM of 32 units trained with Adam and clipping for 200 steps on the
adding problem (T=100, batch 16), returning the final evaluation loss of each seed.
"""

import os
from pathlib import Path

os.environ["GATEDRNN_KEEP_CPU_SCHEDULER"] = "1"  # the flag changes nothing in the export

import jax  # noqa: E402

import gatedrnn as gr  # noqa: E402

config = gr.train.Config(cell=gr.lstm(32), task=gr.tasks.adding(100), steps=200,
                         batch_size=16, eval_every=200, eval_batch_size=16)
train = gr.train.make_train(config)


def program(key_data):
    return jax.vmap(train)(jax.random.wrap_key_data(key_data)).metrics["loss"]


key_data = jax.random.key_data(jax.random.split(jax.random.key(0), 8))
exported = jax.export.export(jax.jit(program))(key_data)
path = Path(__file__).with_name("program.bin")
path.write_bytes(exported.serialize())
print(f"wrote {path} ({path.stat().st_size} bytes)")
