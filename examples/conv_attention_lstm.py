"""A Conv1D front end, an LSTM and attention pooling, built in Flax linen around gatedrnn.

Question: how does a gatedrnn cell sit inside a model built with Flax? The model reads the 64
pixels of scikit-learn's 8x8 digits (``gr.tasks.digits``, one pixel per step): a strided 1-D
convolution (kernel 8, stride 4) turns them into 16 steps of local features,
``gr.modules.Recurrent(gr.lstm(H))`` runs over those, and
attention pooling (a learned score per step, softmax over time; Bahdanau et al. 2015's
weighting, with the query learned rather than a decoder state) replaces reading the last
step. Trained with optax Adam.

Command: ``python examples/conv_attention_lstm.py`` (about 15 s on a 2-core CPU).
Expected: held-out accuracy rises from chance (0.1) to about 0.9 in the 600 default steps
(seed 0: 0.735 after 100 steps, 0.911 after 600). Steps run in jitted chunks of 100.
"""

from __future__ import annotations

import argparse
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import gatedrnn as gr


class ConvAttentionLSTM(nn.Module):
    """``xs [B, T, I] -> Conv1D (stride s) -> ReLU -> LSTM -> attention pooling -> [B, C]``."""

    hidden: int = 32
    channels: int = 32
    kernel: int = 8
    stride: int = 4
    classes: int = 10

    @nn.compact
    def __call__(self, xs, *, deterministic: bool = True) -> Any:
        # a strided convolution: local features, and 4x fewer steps for the LSTM to carry
        conv = nn.Conv(self.channels, (self.kernel,), strides=(self.stride,), padding="SAME")
        features = nn.relu(conv(xs))
        ys = gr.modules.Recurrent(gr.lstm(self.hidden))(features, deterministic=deterministic)
        weights = jax.nn.softmax(nn.Dense(1)(jnp.tanh(ys))[..., 0], axis=-1)  # [B, T]
        pooled = jnp.einsum("bt,bth->bh", weights, ys)
        return nn.Dense(self.classes)(pooled)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    task = gr.tasks.digits()
    model = ConvAttentionLSTM(hidden=args.hidden)
    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = model.init(k_init, task.test[0][:1])
    tx = optax.adam(args.learning_rate)

    def loss_fn(params, xs, labels):
        return task.loss(model.apply(params, xs), labels)

    @jax.jit
    def train_chunk(params, opt_state, key):
        def step(carry, key):
            params, opt_state = carry
            xs, labels = task.sample(key, args.batch_size)
            loss, grads = jax.value_and_grad(loss_fn)(params, xs, labels)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                                   jax.random.split(key, 100))
        return params, opt_state, losses.mean()

    evaluate = jax.jit(lambda p: task.metrics(model.apply(p, task.test[0]), task.test[1]))
    opt_state = tx.init(params)
    history = {"step": [], "train_loss": [], "test_accuracy": []}
    for chunk in range(-(-args.steps // 100)):
        params, opt_state, loss = train_chunk(params, opt_state, jax.random.fold_in(k_train,
                                                                                    chunk))
        accuracy = float(evaluate(params)["accuracy"])
        history["step"].append((chunk + 1) * 100)
        history["train_loss"].append(float(loss))
        history["test_accuracy"].append(accuracy)
        print(f"step {(chunk + 1) * 100:5d}  train loss {float(loss):.3f}  "
              f"test accuracy {accuracy:.3f}", flush=True)
    return history


if __name__ == "__main__":
    main()
