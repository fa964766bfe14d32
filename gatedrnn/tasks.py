"""Tasks: batches generated on device from a key, a loss, metrics and known baselines.

A :class:`Task` is a value like a cell: pure functions plus static fields. ``sample(key,
batch_size) -> (xs [B, T, I], targets)`` runs under jit with no host loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Task(NamedTuple):
    """A supervised sequence task.

    Attributes:
        name: e.g. ``"adding(T=100)"``.
        sample: ``sample(key, batch_size) -> (xs [B, T, I], targets)``.
        loss: ``loss(predictions, targets) -> scalar``; predictions come from the model's
            readout (``[B, O]`` for ``readout="last"``).
        metrics: ``metrics(predictions, targets) -> dict`` of scalars (includes ``"loss"``).
        input_size: I; output_size: O; seq_len: T.
        readout: ``"last"`` (predict from the last step) or ``"all"`` (every step).
        baselines: name -> the metric value of a known trivial solution.
        solved: ``solved(metrics) -> bool`` array: the task's success criterion.
    """

    name: str
    sample: Callable
    loss: Callable
    metrics: Callable
    input_size: int
    output_size: int
    seq_len: int
    readout: str
    baselines: Mapping[str, float]
    solved: Callable


def adding(seq_len: int, *, variant: str = "arjovsky") -> Task:
    """The adding problem: remember two marked values over ``seq_len`` steps and add them.

    Two input channels: values and markers. ``variant="arjovsky"`` (Le et al. 2015, Arjovsky
    et al. 2016): values ``U[0, 1]``, one marker in each half, target the sum of the two marked
    values; predicting the mean 1 gives MSE ``1/6`` (the ``"constant"`` baseline). ``variant=
    "hochreiter"`` (Hochreiter & Schmidhuber 1997): values ``U[-1, 1]``, the first marker in the
    first 10 steps, the second in the first half, target ``0.5 + (x_1 + x_2) / 4``; a
    sequence is correct when its error is below 0.04 (metric ``"accuracy"``); predicting 0.5
    gives MSE ``1/24``.

    The loss is the mean squared error of a scalar prediction from the last step. The task is
    ``solved`` when the MSE is below a tenth of the constant baseline.
    """
    if not isinstance(seq_len, int) or seq_len < (20 if variant == "hochreiter" else 2):
        raise ValueError(f"seq_len must be an int >= 2 (>= 20 for 'hochreiter'); got {seq_len!r}")
    if variant not in ("arjovsky", "hochreiter"):
        raise ValueError(f"variant must be 'arjovsky' or 'hochreiter'; got {variant!r}")
    half = seq_len // 2

    def sample(key, batch_size):
        k_v, k_1, k_2 = jax.random.split(key, 3)
        if variant == "arjovsky":
            values = jax.random.uniform(k_v, (batch_size, seq_len))
            first = jax.random.randint(k_1, (batch_size,), 0, half)
            second = jax.random.randint(k_2, (batch_size,), half, seq_len)
        else:
            values = jax.random.uniform(k_v, (batch_size, seq_len), minval=-1.0, maxval=1.0)
            first = jax.random.randint(k_1, (batch_size,), 0, 10)
            # the second marker is anywhere else in the first half
            second = jax.random.randint(k_2, (batch_size,), 0, half - 1)
            second = second + (second >= first)
        steps = jnp.arange(seq_len)
        markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
        total = jnp.sum(values * markers, axis=1)
        target = total if variant == "arjovsky" else 0.5 + total / 4.0
        return jnp.stack([values, markers], axis=-1), target[:, None]

    def loss(pred, target):
        return jnp.mean(jnp.square(pred - target))

    def metrics(pred, target):
        out = {"loss": loss(pred, target)}
        if variant == "hochreiter":
            out["accuracy"] = jnp.mean(jnp.abs(pred - target) < 0.04)
        return out

    constant = 1.0 / 6.0 if variant == "arjovsky" else 1.0 / 24.0

    def solved(m):
        return m["loss"] < 0.1 * constant

    return Task(f"adding(T={seq_len}, {variant})", sample, loss, metrics, 2, 1, seq_len, "last",
                {"constant": constant}, solved)


__all__ = ["Task", "adding"]
