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
# # Gradient flow: the main study, interactively
#
# Trains a tanh RNN, an LSTM and a GRU on the adding problem with `gr.sweep` (several seeds
# in one program) and compares the gradient's reach at initialisation and after training,
# with the one-step Jacobian spectra and the gates. The script version with the claims
# report is `experiments/gradient_flow.py`.

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

T, HIDDEN, SEEDS, STEPS = (8, 8, 2, 40) if TOY else (100, 64, 5, 1000)
task = gr.tasks.adding(T)
cells = {"tanh RNN": gr.rnn(HIDDEN), "LSTM": gr.lstm(HIDDEN), "GRU": gr.gru(HIDDEN)}
results = {}
for name, cell in cells.items():
    config = gr.train.Config(cell=cell, task=task, steps=STEPS, gradient_flow=True)
    results[name] = gr.sweep(config, seeds=SEEDS)       # out_dir=... to keep and resume

# %% [markdown]
# ## Gradient norm against lag, before and after training

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
gr.plots.gradient_norms({n: r.initial["grad_flow_log10"][0] for n, r in results.items()},
                        ax=axes[0], title="at initialisation")
gr.plots.gradient_norms({n: r.metrics["grad_flow_log10"][0, :, -1] for n, r in results.items()},
                        ax=axes[1], title=f"after {STEPS} steps")
plt.show()

# %%
fig = gr.plots.learning_curves(
    results["LSTM"].metrics["step"][0, 0], {n: r.metrics["loss"][0] for n, r in results.items()},
    baselines={"predict 1": 1 / 6, "solved": 1 / 60}, ylabel="test MSE")
plt.show()

# %% [markdown]
# ## Why: one-step Jacobians and gates of the trained cells
# Singular values below 1 shrink the gradient at every step; a forget or update gate near 1
# keeps it.

# %%
xs, _ = task.sample(jax.random.key(1), 16)
spectra, gates = {}, {}
for name, cell in cells.items():
    trained = jax.tree.map(lambda v: v[0, 0], results[name].params["rnn"])
    spectra[name] = gr.diagnostics.jacobian_spectrum(cell, trained, xs)
    stats = gr.diagnostics.gate_activations(cell, trained, xs)
    gates.update({f"{name} {g} > 0.9": v for g, v in stats.saturated_high.items()
                  if g in ("forget", "update")})
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
gr.plots.jacobian_spectrum(spectra, ax=axes[0], title="trained, seed 0")
gr.plots.gate_saturation(gates, ax=axes[1])
plt.show()
print({n: float(np.median(r.metrics["loss"][0, :, -1])) for n, r in results.items()})
