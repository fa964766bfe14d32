"""Training as one pure program: ``make_train(config)(key) -> Result``.

The whole run is a ``lax.scan`` over evaluation chunks of a ``lax.scan`` over optimiser
steps, so ``jax.jit(jax.vmap(make_train(config)))(keys)`` trains several seeds in one program
(the purejaxrl pattern). Scalar hyperparameters (``learning_rate``, ``clip_norm``,
``weight_decay``, ``dropout``) may be traced arrays, so a grid can be vmapped too.
:func:`make_trainer` exposes the same run in resumable pieces (``init``, then ``run`` for any
number of evaluation chunks at a time), which :func:`gatedrnn.sweep` jits chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gatedrnn.cells import Cell
from gatedrnn.diagnostics import gradient_norms, tree_norm
from gatedrnn.models import SequenceModel, sequence_model
from gatedrnn.tasks import Task
from gatedrnn.unroll import _check_dropout

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run needs.

    Attributes:
        cell: the recurrent layer (a cell, stack or bidirectional layer).
        task: a :class:`gatedrnn.tasks.Task`.
        steps: optimiser steps; a multiple of ``eval_every``.
        batch_size: training batch size.
        optimizer: ``"adam"`` (AdamW when ``weight_decay > 0``), ``"rmsprop"`` or ``"sgd"``.
        learning_rate: the peak rate, a scalar (may be traced, to vmap over it), or an optax
            schedule ``step -> rate`` (then ``schedule`` must be ``"constant"`` and
            ``warmup_steps`` 0).
        schedule: ``"constant"``, ``"cosine"`` (half-cosine decay to 0 at ``steps``) or
            ``"linear"`` (linear decay to 0), after the warmup.
        warmup_steps: steps of linear warmup from ``learning_rate / warmup_steps``.
        clip_norm: global-norm gradient clipping threshold; ``None`` disables it.
        weight_decay: decoupled weight decay.
        dropout: rate on the recurrent layer's outputs before the readout during training
            (see :class:`gatedrnn.models.SequenceModel`); may be traced.
        embed: width of a dense input layer before the recurrent layer, or ``None``.
        eval_every: steps between evaluations (each records one entry of every metric).
        eval_batch_size: size of the fixed evaluation batch of synthetic tasks (tasks with a
            held-out ``task.test`` evaluate on all of it).
        gradient_flow: also record ``log10 ||dL/d carry_t||`` on the evaluation batch at every
            evaluation (``metrics["grad_flow_log10"] [E, T]``; cells only).
    """

    cell: Any
    task: Task
    steps: int = 1000
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: Any = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: Any = 1.0
    weight_decay: Any = 0.0
    dropout: Any = 0.0
    embed: int | None = None
    eval_every: int = 100
    eval_batch_size: int = 512
    gradient_flow: bool = False


class Result(NamedTuple):
    """A run's trained params and its metrics, ``name -> [E]`` over evaluation points.

    ``initial`` holds the evaluation metrics of the initial params (step 0), without the
    training-only entries.

    Metrics: ``"step"``, the task's metrics on the evaluation batch (``"loss"`` ...),
    ``"train_loss"`` and ``"grad_norm"`` (means over the chunk), ``"first_nonfinite_step"``
    (``-1`` while every loss, gradient and update has been finite; steps with a non-finite
    one are skipped, never applied), and ``"grad_flow_log10"`` when asked.
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
    if config.schedule not in SCHEDULES:
        raise ValueError(f"config.schedule must be one of {SCHEDULES}; got {config.schedule!r}")
    if (not isinstance(config.warmup_steps, int) or config.warmup_steps < 0
            or config.warmup_steps > config.steps):
        raise ValueError(f"config.warmup_steps must be an int in [0, config.steps="
                         f"{config.steps}]; got {config.warmup_steps!r}")
    if callable(config.learning_rate) and (config.schedule != "constant" or config.warmup_steps):
        raise ValueError("config.learning_rate is already a schedule; leave config.schedule "
                         "'constant' and config.warmup_steps 0")
    _check_dropout(config.dropout, "config.dropout")
    if not isinstance(config.task, Task):
        raise TypeError(f"config.task must be a gatedrnn.tasks.Task; got "
                        f"{type(config.task).__name__}")
    if config.gradient_flow and not isinstance(config.cell, Cell):
        raise ValueError("config.gradient_flow needs a single cell (the diagnostic follows one "
                         f"cell's carry); got a {type(config.cell).__name__}")


def learning_rate_schedule(config: Config) -> Callable:
    """``step -> rate``: linear warmup over ``warmup_steps``, then the configured decay.

    ``rate(s) = lr * min(1, (s + 1) / warmup_steps) * d(p)`` with ``p`` the fraction of the
    post-warmup steps done, ``d = 1`` (constant), ``(1 + cos(pi p)) / 2`` (cosine) or
    ``1 - p`` (linear). ``lr`` may be traced.
    """
    if callable(config.learning_rate):
        return config.learning_rate
    lr, warmup, steps = config.learning_rate, config.warmup_steps, config.steps

    def rate(count):
        count = jnp.asarray(count, jnp.float32)
        scale = jnp.minimum(1.0, (count + 1.0) / warmup) if warmup else 1.0
        progress = jnp.clip((count - warmup) / max(steps - warmup, 1), 0.0, 1.0)
        if config.schedule == "cosine":
            scale = scale * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        elif config.schedule == "linear":
            scale = scale * (1.0 - progress)
        return lr * scale

    return rate


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Clipping (if any) followed by the configured optimiser and learning-rate schedule."""
    lr, wd = learning_rate_schedule(config), config.weight_decay
    if config.optimizer == "adam":
        base = optax.adamw(lr, weight_decay=wd)
    else:
        base = optax.chain(optax.add_decayed_weights(wd),
                           optax.rmsprop(lr) if config.optimizer == "rmsprop" else optax.sgd(lr))
    if config.clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), base)


class TrainState(NamedTuple):
    """Where a run stands between chunks: everything :meth:`Trainer.run` needs to go on.

    ``key`` is the run's key (chunk ``c`` draws its batches from ``fold_in(k_train, c)``, so a
    run split into chunks equals the run in one piece); ``evals_done`` counts finished
    evaluation chunks; ``first_nonfinite_step`` is ``-1`` until a step's loss, gradient or
    update is not finite.
    """

    params: Any
    opt_state: Any
    key: Any
    evals_done: Any
    first_nonfinite_step: Any


class Trainer(NamedTuple):
    """A run in resumable pieces; made by :func:`make_trainer`.

    ``init(key) -> (TrainState, initial metrics)``; ``run(state, num_evals) -> (state,
    metrics)`` trains ``num_evals * eval_every`` more steps (``num_evals`` is static) and
    returns ``name -> [num_evals]`` metrics. ``evaluate(params, key)`` gives the evaluation
    metrics of ``params`` on the run's evaluation data.
    """

    init: Callable
    run: Callable
    evaluate: Callable
    model: SequenceModel


def _run_keys(key):
    """The run key's three uses, ``(k_init, k_train, k_eval)``; every piece derives them here."""
    return jax.random.split(key, 3)


def make_trainer(config: Config) -> Trainer:
    """The pieces of a training run (see :class:`Trainer`); the config is checked here."""
    _validate(config)
    task = config.task
    model = sequence_model(config.cell, task.output_size, readout=task.readout,
                           embed=config.embed, dropout=config.dropout)
    tx = make_optimizer(config)

    def evaluate(params, key):
        k_eval = _run_keys(key)[2]
        xs, targets = task.test if task.test is not None else task.sample(
            k_eval, config.eval_batch_size)
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
        updates, new_opt_state = tx.update(grads, opt_state, params)
        # a finite gradient can still give a non-finite update (a NaN learning rate, an
        # overflowing second moment): neither may reach the params
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(tree_norm(updates))
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, new_params, params)
        opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        first_bad = jnp.where((first_bad < 0) & ~finite, i, first_bad)
        return (params, opt_state, first_bad), (loss, grad_norm)

    def init(key):
        params = model.init(_run_keys(key)[0], task.input_size)
        state = TrainState(params, tx.init(params), key, jnp.asarray(0, jnp.int32),
                           jnp.asarray(-1, jnp.int32))
        return state, evaluate(params, key)

    def run(state: TrainState, num_evals: int):
        k_train = _run_keys(state.key)[1]

        def chunk(inner, c):
            idx = (c * config.eval_every + jnp.arange(config.eval_every)).astype(jnp.int32)
            keys = jax.random.split(jax.random.fold_in(k_train, c), config.eval_every)
            inner, (losses, grad_norms) = jax.lax.scan(step, inner, (keys, idx))
            metrics = evaluate(inner[0], state.key)
            metrics.update(step=(c + 1) * config.eval_every, train_loss=jnp.mean(losses),
                           grad_norm=jnp.mean(grad_norms), first_nonfinite_step=inner[2])
            return inner, metrics

        inner = (state.params, state.opt_state, state.first_nonfinite_step)
        chunks = state.evals_done + jnp.arange(num_evals, dtype=jnp.int32)
        (params, opt_state, first_bad), metrics = jax.lax.scan(chunk, inner, chunks)
        return TrainState(params, opt_state, state.key, state.evals_done + num_evals,
                          first_bad), metrics

    return Trainer(init, run, evaluate, model)


def make_train(config: Config):
    """Returns the pure function ``train(key) -> Result`` for ``config``.

    ``key`` fixes everything: the init, every training batch, dropout masks and the
    evaluation batch. The config is checked here, before anything compiles. ``train`` equals
    ``make_trainer(config).init`` followed by one ``run`` over all evaluation chunks.
    """
    trainer = make_trainer(config)
    num_evals = config.steps // config.eval_every

    def train(key) -> Result:
        state, initial = trainer.init(key)
        state, metrics = trainer.run(state, num_evals)
        return Result(state.params, metrics, initial)

    return train


__all__ = ["Config", "OPTIMIZERS", "Result", "SCHEDULES", "TrainState", "Trainer",
           "learning_rate_schedule", "make_optimizer", "make_train", "make_trainer"]
