# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Seed sweeps on every core: TPU, GPU or CPU
#
# `gr.sweep` vmaps seeds x grid points into one program and shards the runs over
# `jax.devices()`: on a Colab TPU every core trains its share. The sizes below are chosen from
# the device kind, so the same notebook runs unchanged on a CPU, a GPU or a TPU.

# %%
# Set-up: installs gatedrnn when it is not importable (Colab): from GATEDRNN_SOURCE (any pip
# target) when set, else from a wheel uploaded beside the notebook (gatedrnn-*.whl in
# /content or the working directory), else from the checkout the notebook sits in.
import importlib.util
import os
import pathlib
import subprocess
import sys

if importlib.util.find_spec("gatedrnn") is None:
    here = pathlib.Path.cwd()
    wheels = sorted([*pathlib.Path("/content").glob("gatedrnn-*.whl"),
                     *here.glob("gatedrnn-*.whl")])
    checkout = next((p for p in (here, *here.parents) if (p / "gatedrnn").is_dir()
                     and (p / "pyproject.toml").is_file()), None)
    source = (os.environ.get("GATEDRNN_SOURCE") or (wheels and str(wheels[-1]))
              or (checkout and str(checkout)))
    if not source:
        raise SystemExit("gatedrnn is not installed. Upload a wheel (`pip wheel --no-deps -w "
                         "dist .` in a checkout) beside this notebook and rerun this cell,\n"
                         "or set GATEDRNN_SOURCE to a pip target of gatedrnn first.")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])

import jax

import gatedrnn as gr

# CI runs every notebook at toy size; a person gets the real one
TOY = os.environ.get("GATEDRNN_NOTEBOOK_TOY") == "1"
print(jax.devices(), "toy size" if TOY else "")

# %%
import matplotlib.pyplot as plt
import numpy as np

devices = jax.devices()
platform = devices[0].platform
print(f"{len(devices)} x {devices[0].device_kind} ({platform})")
if TOY:
    seeds, hidden, steps, T = 2, 8, 20, 10
elif platform == "tpu":
    seeds, hidden, steps, T = 8 * len(devices), 128, 3000, 200
elif platform == "gpu":
    seeds, hidden, steps, T = 16, 128, 3000, 200
else:
    seeds, hidden, steps, T = 4, 32, 1000, 50
print(f"{seeds} seeds x 2 learning rates, hidden {hidden}, adding T={T}, {steps} steps")

# %%
config = gr.train.Config(cell=gr.lstm(hidden), task=gr.tasks.adding(T), steps=steps)
result = gr.sweep(config, seeds=seeds, grid={"learning_rate": [1e-3, 3e-3]})
print("runs:", result.metrics["loss"].shape[:2], "(grid points, seeds)")

# %%
steps_axis = result.metrics["step"][0, 0]
fig = gr.plots.learning_curves(
    steps_axis, {f"LSTM lr {lr:g}": result.metrics["loss"][g]
                 for g, lr in enumerate(result.grid["learning_rate"])},
    baselines={"predict 1": 1 / 6}, ylabel="test MSE",
    title=f"{seeds} seeds per rate, sharded over {len(devices)} device(s)")
plt.show()
print("solved rate per learning rate:", np.asarray(result.summary["solved_rate"]))
