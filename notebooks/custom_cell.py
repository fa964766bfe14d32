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
# # A cell of your own, and its gradient flow against the LSTM
#
# `gr.make_cell(init, core, hidden_size=...)` is the one constructor the shipped cells are
# built with. Here: the minimalRNN of Chen et al. 2018, `z = tanh(W_x x + b_z)`,
# `u = σ(U_h h + U_z z + b_u)`, `h' = u ⊙ h + (1 - u) ⊙ z`, in a dozen lines; then everything
# the library does for its own cells (unroll, diagnostics, training) works on it.

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
import jax.numpy as jnp
import matplotlib.pyplot as plt


def minimal_rnn(hidden_size: int):
    def init(key, input_size):
        k_x, k_h, k_z = jax.random.split(key, 3)
        normal = jax.nn.initializers.lecun_normal()
        return {"w_x": normal(k_x, (input_size, hidden_size)), "b_z": jnp.zeros(hidden_size),
                "u_h": jax.nn.initializers.orthogonal()(k_h, (hidden_size, hidden_size)),
                "u_z": normal(k_z, (hidden_size, hidden_size)),
                "b_u": jnp.ones(hidden_size)}    # start by keeping the state

    def core(params, h, x):
        z = jnp.tanh(x @ params["w_x"] + params["b_z"])
        u = jax.nn.sigmoid(h @ params["u_h"] + z @ params["u_z"] + params["b_u"])
        h = u * h + (1 - u) * z
        return h, h, {"update": u}

    return gr.make_cell(init, core, hidden_size=hidden_size, kind="minimal_rnn")


cell = minimal_rnn(32)
params = cell.init(jax.random.key(0), 2)
_, ys = gr.unroll(cell, params, jnp.ones((1, 5, 2)))
print(gr.num_params(params), "params; output", ys.shape)

# %% [markdown]
# ## Its gradient flow at initialisation, against the LSTM's

# %%
T = 20 if TOY else 200
xs, _ = gr.tasks.adding(T).sample(jax.random.key(1), 32)
norms = {}
for name, c in {"minimalRNN": cell, "LSTM": gr.lstm(32)}.items():
    p = jax.vmap(lambda k, c=c: c.init(k, 2))(jax.random.split(jax.random.key(2), 3))
    norms[name] = jax.vmap(lambda p, c=c: gr.diagnostics.gradient_norms(
        c, p, xs, lambda ys: ys[:, -1].sum()).log10)(p)
gr.plots.gradient_norms(norms, title=f"Adding inputs, T={T}: gradient norm against lag")
plt.show()

# %% [markdown]
# ## Trained like any shipped cell

# %%
steps = 40 if TOY else 1500
config = gr.train.Config(cell=cell, task=gr.tasks.adding(T), steps=steps)
result = gr.sweep(config, seeds=2 if TOY else 4)
print("final test MSE per seed:", result.metrics["loss"][0, :, -1])
stats = gr.diagnostics.gate_activations(
    cell, jax.tree.map(lambda v: v[0, 0], result.params["rnn"]), xs)
gr.plots.gate_saturation({"update gate > 0.9": stats.saturated_high["update"]})
plt.show()
