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
# # gatedrnn quickstart
#
# Compose cells, run them over sequences with `gr.unroll`, convert a PyTorch LSTM, and look
# at one gradient-flow diagnostic. Runs on CPU, GPU or TPU unchanged.

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

# %% [markdown]
# ## Cells are values; params are plain pytrees
# A cell holds pure functions (`init`, `step`, ...); `gr.unroll` scans it over time.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt

cell = gr.lstm(32)
params = cell.init(jax.random.key(0), input_size=8)
print({k: v.shape for k, v in params.items()})
xs = jax.random.normal(jax.random.key(1), (4, 50, 8))        # [batch, time, features]
carry, ys = gr.unroll(cell, params, xs, lengths=jnp.array([50, 40, 30, 20]))
print(ys.shape, "outputs past each length are zero:", float(jnp.abs(ys[3, 20:]).max()))

# %% [markdown]
# ## Composition: stacks and bidirectional layers are layers too

# %%
net = gr.stack([gr.bidirectional(gr.gru(16), gr.gru(16)), gr.lstm(8)], dropout=0.1)
net_params = net.init(jax.random.key(2), input_size=8)
_, ys = jax.jit(lambda p, x: gr.unroll(net, p, x))(net_params, xs)
print("stack output:", ys.shape)

# %% [markdown]
# ## From PyTorch: the same function, in JAX
# (skipped when PyTorch is not installed: `pip install torch`)

# %%
try:
    import numpy as np
    import torch
except ImportError:
    print("PyTorch not installed: skipping the conversion")
else:
    module = torch.nn.LSTM(8, 32, num_layers=2, batch_first=True)
    converted, converted_params = gr.interop.from_torch(module)
    _, ours = gr.unroll(converted, converted_params, xs)
    theirs = module(torch.from_numpy(np.asarray(xs)))[0].detach().numpy()
    print("largest difference from torch:", float(np.abs(np.asarray(ours) - theirs).max()))

# %% [markdown]
# ## One diagnostic: how far back does the gradient reach?
# `gradient_norms` gives `log10 ||dL/dh_t||` for every step in one backward pass.

# %%
T = 30 if TOY else 200
xs = jax.random.normal(jax.random.key(3), (16, T, 8))
norms = {}
for name, c in {"tanh RNN": gr.rnn(32), "LSTM": gr.lstm(32), "GRU": gr.gru(32)}.items():
    p = jax.vmap(lambda k, c=c: c.init(k, 8))(jax.random.split(jax.random.key(4), 3))
    norms[name] = jax.vmap(lambda p, c=c: gr.diagnostics.gradient_norms(
        c, p, xs, lambda ys: ys[:, -1].sum()).log10)(p)
fig = gr.plots.gradient_norms(norms, title=f"Gradient norm against lag at init (T={T})")
plt.show()
