"""Training as one pure program: ``make_train(config)(key) -> Result``.

The whole run is a ``lax.scan`` over evaluation chunks of a ``lax.scan`` over optimiser
steps, so ``jax.jit(jax.vmap(make_train(config)))(keys)`` trains several seeds in one program
(the purejaxrl pattern). Scalar hyperparameters (``learning_rate``, ``clip_norm``,
``weight_decay``) may be traced arrays, so a grid can be vmapped too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gatedrnn.cells import Cell
from gatedrnn.diagnostics import gradient_norms, tree_norm
from gatedrnn.models import sequence_model
from gatedrnn.tasks import Task

OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run needs.

    Attributes:
        cell: the recurrent layer (a cell, stack or bidirectional layer).
        task: a :class:`gatedrnn.tasks.Task`.
        steps: optimiser steps; a multiple of ``eval_every``.
        batch_size: training batch size.
        optimizer: ``"adam"`` (AdamW when ``weight_decay > 0``), ``"rmsprop"`` or ``"sgd"``.
        learning_rate: a scalar (may be traced, to vmap over it) or an optax schedule.
        clip_norm: global-norm gradient clipping threshold; ``None`` disables it.
        weight_decay: decoupled weight decay.
        eval_every: steps between evaluations (each records one entry of every metric).
        eval_batch_size: size of the fixed evaluation batch.
        gradient_flow: also record ``log10 ||dL/d carry_t||`` on the evaluation batch at every
            evaluation (``metrics["grad_flow_log10"] [E, T]``; cells only).
    """

    cell: Any
    task: Task
    steps: int = 1000
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: Any = 1e-3
    clip_norm: Any = 1.0
    weight_decay: Any = 0.0
    eval_every: int = 100
    eval_batch_size: int = 512
    gradient_flow: bool = False


class Result(NamedTuple):
    """A run's trained params and its metrics, ``name -> [E]`` over evaluation points.

    ``initial`` holds the evaluation metrics of the initial params (step 0), without the
    training-only entries.

    Metrics: ``"step"``, the task's metrics on the evaluation batch (``"loss"`` ...),
    ``"train_loss"`` and ``"grad_norm"`` (means over the chunk), ``"first_nonfinite_step"``
    (``-1`` while every loss and gradient has been finite; steps with a non-finite loss or
    gradient are skipped, never applied), and ``"grad_flow_log10"`` when asked.
    """

    params: Any
    metrics: dict
    initial: dict


def _validate(config: Config) -> None:
    for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config.{name} must be a positive int; got {value!r}")
    if config.steps % config.eval_every:
        raise ValueError(f"config.steps ({config.steps}) must be a multiple of "
                         f"config.eval_every ({config.eval_every})")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.optimizer must be one of {OPTIMIZERS}; got "
                         f"{config.optimizer!r}")
    if not isinstance(config.task, Task):
        raise TypeError(f"config.task must be a gatedrnn.tasks.Task; got "
                        f"{type(config.task).__name__}")
    if config.gradient_flow and not isinstance(config.cell, Cell):
        raise ValueError("config.gradient_flow needs a single cell (the diagnostic follows one "
                         f"cell's carry); got a {type(config.cell).__name__}")


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Clipping (if any) followed by the configured optimiser."""
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adam":
        base = optax.adamw(lr, weight_decay=wd)
    else:
        base = optax.chain(optax.add_decayed_weights(wd),
                           optax.rmsprop(lr) if config.optimizer == "rmsprop" else optax.sgd(lr))
    if config.clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), base)


def make_train(config: Config):
    """Returns the pure function ``train(key) -> Result`` for ``config``.

    ``key`` fixes everything: the init, every training batch, dropout masks and the
    evaluation batch. The config is checked here, before anything compiles.
    """
    _validate(config)
    task = config.task
    model = sequence_model(config.cell, task.output_size, readout=task.readout)
    tx = make_optimizer(config)
    num_evals = config.steps // config.eval_every

    def evaluate(params, xs, targets):
        metrics = task.metrics(model.apply(params, xs), targets)
        if config.gradient_flow:
            def loss_fn(ys):
                return task.loss(model.head(params, ys), targets)
            metrics["grad_flow_log10"] = gradient_norms(
                config.cell, params["rnn"], xs, loss_fn).log10
        return metrics

    def step(state, inp):
        params, opt_state, first_bad = state
        key, i = inp
        k_data, k_drop = jax.random.split(key)
        xs, targets = task.sample(k_data, config.batch_size)
        loss, grads = jax.value_and_grad(
            lambda p: task.loss(model.apply(p, xs, key=k_drop), targets))(params)
        grad_norm = tree_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, new_params, params)
        opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        first_bad = jnp.where((first_bad < 0) & ~finite, i, first_bad)
        return (params, opt_state, first_bad), (loss, grad_norm)

    def train(key) -> Result:
        k_init, k_train, k_eval = jax.random.split(key, 3)
        params = model.init(k_init, task.input_size)
        eval_xs, eval_targets = task.sample(k_eval, config.eval_batch_size)
        initial = evaluate(params, eval_xs, eval_targets)
        state = (params, tx.init(params), jnp.asarray(-1, jnp.int32))

        def chunk(state, inp):
            key, c = inp
            idx = (c * config.eval_every + jnp.arange(config.eval_every)).astype(jnp.int32)
            state, (losses, grad_norms) = jax.lax.scan(
                step, state, (jax.random.split(key, config.eval_every), idx))
            metrics = evaluate(state[0], eval_xs, eval_targets)
            metrics.update(step=(c + 1) * config.eval_every, train_loss=jnp.mean(losses),
                           grad_norm=jnp.mean(grad_norms), first_nonfinite_step=state[2])
            return state, metrics

        state, metrics = jax.lax.scan(
            chunk, state, (jax.random.split(k_train, num_evals), jnp.arange(num_evals)))
        return Result(state[0], metrics, initial)

    return train


__all__ = ["Config", "OPTIMIZERS", "Result", "make_optimizer", "make_train"]
