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
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gatedrnn import checks
from gatedrnn.diagnostics import gradient_norms
from gatedrnn.models import sequence_model
from gatedrnn.scan import ScanOptions, check_layer

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


class Batch(NamedTuple):
    """One batch of a task: ``xs [B, T, I]``, ``targets`` and optional ``lengths [B]``."""

    xs: Any
    targets: Any
    lengths: Any = None


def _as_batch(sampled: Any, where: str) -> Batch:
    if not isinstance(sampled, tuple) or len(sampled) not in (2, 3):
        raise TypeError(f"{where} must be (xs, targets) or (xs, targets, lengths); got "
                        f"{type(sampled).__name__}")
    return Batch(*sampled)


def default_eval_every(steps: int) -> int:
    """The divisor of ``steps`` nearest ``steps // 10`` (the smaller on a tie): about ten
    evaluations, and always a whole number of chunks."""
    target = max(1, steps // 10)
    return min((d for d in range(1, steps + 1) if steps % d == 0),
               key=lambda d: (abs(d - target), d))


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run needs.

    Attributes:
        cell: the recurrent layer (a cell, stack, bidirectional or user layer), wrapped in
            :func:`gatedrnn.models.sequence_model`; or ``None`` with ``model``.
        task: a :class:`gatedrnn.tasks.Task`, or any object with its fields (``sample`` may
            return ``(xs, targets, lengths)``; ``lengths`` then reaches the model).
        steps: optimiser steps; a multiple of ``eval_every``.
        batch_size: training batch size.
        optimizer: ``"adam"`` (AdamW when ``weight_decay > 0``), ``"rmsprop"``, ``"sgd"``, or
            any ``optax.GradientTransformation`` (``optax.lion(3e-4)``, a chain of your own).
            A transformation holds its own learning rate, schedule and weight decay: then
            ``learning_rate`` must stay ``None``, ``schedule`` ``"constant"``,
            ``warmup_steps`` 0 and ``weight_decay`` 0; ``clip_norm`` still clips first.
        learning_rate: the peak rate for a named optimiser (``None``: 1e-3), a scalar (may be
            traced, to vmap over it), or an optax schedule ``step -> rate`` (then ``schedule``
            must be ``"constant"`` and ``warmup_steps`` 0).
        schedule: ``"constant"``, ``"cosine"`` (half-cosine decay to 0 at ``steps``) or
            ``"linear"`` (linear decay to 0), after the warmup.
        warmup_steps: steps of linear warmup from ``learning_rate / warmup_steps``.
        clip_norm: global-norm gradient clipping threshold; ``None`` disables it.
        weight_decay: decoupled weight decay.
        dropout: rate on the recurrent layer's outputs before the readout during training
            (see :class:`gatedrnn.models.SequenceModel`); may be traced.
        embed: width of a dense input layer before the recurrent layer, or ``None``.
        eval_every: steps between evaluations (each records one entry of every metric);
            ``None``: :func:`default_eval_every` (about ten evaluations).
        eval_batch_size: size of the fixed evaluation batch of synthetic tasks (tasks with a
            held-out ``task.test`` evaluate on all of it).
        gradient_flow: also record ``log10 ||dL/d carry_t||`` on the evaluation batch at every
            evaluation (``metrics["grad_flow_log10"] [E, T]``; with ``cell``, not ``model``).
        model: instead of ``cell``, any object with ``init(key, input_size) -> params`` and
            ``apply(params, xs, *, key, lengths) -> predictions`` (``key`` is ``None`` at
            evaluation, where dropout is off); the task's loss and metrics read its
            predictions.
        loss_fn: ``loss_fn(params, model, batch, key) -> (loss, aux)`` replacing the task's
            loss in training (a penalty on the params or the carry, a head of your own, an
            autoregressive loss); ``batch`` is a :class:`Batch`, ``key`` the step's dropout
            key, ``aux`` a dict of scalars recorded as ``metrics["train_<name>"]`` (means
            over each evaluation interval). Evaluation still uses the task's metrics.
        options: how the recurrent layer is unrolled in training and evaluation, a
            :class:`gatedrnn.ScanOptions` (``method="parallel"`` trains the mLSTM in its
            whole-sequence form); ``None``: :func:`gatedrnn.unroll`'s defaults.
    """

    cell: Any = None
    task: Any = None
    steps: int = 1000
    batch_size: int = 64
    optimizer: Any = "adam"
    learning_rate: Any = None
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: Any = 1.0
    weight_decay: Any = 0.0
    dropout: Any = 0.0
    embed: int | None = None
    eval_every: int | None = None
    eval_batch_size: int = 512
    gradient_flow: bool = False
    model: Any = None
    loss_fn: Callable | None = None
    options: Any = None

    def __post_init__(self):
        steps = self.steps
        if self.eval_every is None and isinstance(steps, int) and not isinstance(steps, bool) \
                and steps >= 1:
            object.__setattr__(self, "eval_every", default_eval_every(steps))


class Result(NamedTuple):
    """A run's trained params and its metrics, ``name -> [E]`` over evaluation points.

    ``initial`` holds the evaluation metrics of the initial params (step 0), without the
    training-only entries.

    Metrics: ``"step"``, the task's metrics on the evaluation batch (``"loss"`` ...),
    ``"train_loss"`` and ``"grad_norm"`` (means over the chunk), ``"train_<name>"`` for each
    entry of a custom ``loss_fn``'s aux, ``"first_nonfinite_step"`` (``-1`` while every loss,
    gradient and update has been finite) and ``"nonfinite_steps"`` (how many steps so far had
    a non-finite one; such steps are skipped, never applied), and ``"grad_flow_log10"`` when
    asked. A step counts as non-finite by its entries, not its norms: a finite gradient
    whose squared norm overflows float32 (a norm above about 1.8e19) is not skipped, and its
    ``"grad_norm"`` is ``+inf`` (``optax.clip_by_global_norm``, in the default optimiser,
    then scales it to zero).
    """

    params: Any
    metrics: dict
    initial: dict


TASK_FIELDS = ("name", "sample", "loss", "metrics", "input_size", "output_size", "readout",
               "solved")


def _is_transformation(optimizer: Any) -> bool:
    return not isinstance(optimizer, str) and hasattr(optimizer, "init") and hasattr(
        optimizer, "update")


def _validate(config: Config) -> None:
    for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
        checks.size(getattr(config, name), f"config.{name}")
    if config.learning_rate is not None and not callable(config.learning_rate):
        checks.real(config.learning_rate, "config.learning_rate", above=0.0)
    if config.clip_norm is not None:
        checks.real(config.clip_norm, "config.clip_norm", above=0.0)
    checks.real(config.weight_decay, "config.weight_decay", at_least=0.0)
    if config.steps % config.eval_every:
        raise ValueError(f"config.steps ({config.steps}) must be a multiple of "
                         f"config.eval_every ({config.eval_every})")
    if _is_transformation(config.optimizer):
        fixed = {"learning_rate": None, "schedule": "constant", "warmup_steps": 0,
                 "weight_decay": 0.0}
        for name, value in fixed.items():
            if getattr(config, name) != value:
                raise ValueError(f"config.optimizer is an optax transformation, which holds its "
                                 f"own learning rate, schedule and weight decay: leave "
                                 f"config.{name} at {value!r}; got {getattr(config, name)!r}")
    elif config.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.optimizer must be one of {OPTIMIZERS} or an "
                         f"optax.GradientTransformation; got {config.optimizer!r}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"config.schedule must be one of {SCHEDULES}; got {config.schedule!r}")
    if (not isinstance(config.warmup_steps, int) or config.warmup_steps < 0
            or config.warmup_steps > config.steps):
        raise ValueError(f"config.warmup_steps must be an int in [0, config.steps="
                         f"{config.steps}]; got {config.warmup_steps!r}")
    if callable(config.learning_rate) and (config.schedule != "constant" or config.warmup_steps):
        raise ValueError("config.learning_rate is already a schedule; leave config.schedule "
                         "'constant' and config.warmup_steps 0")
    checks.rate(config.dropout, "config.dropout")
    if config.options is not None and not isinstance(config.options, ScanOptions):
        raise TypeError(f"config.options must be a gr.ScanOptions or None; got "
                        f"{type(config.options).__name__} {config.options!r}")
    missing = [f for f in TASK_FIELDS if not hasattr(config.task, f)]
    if missing:
        raise TypeError(f"config.task must be a gatedrnn.tasks.Task or have its fields; got "
                        f"{type(config.task).__name__}, which lacks {', '.join(missing)}")
    if (config.cell is None) == (config.model is None):
        given = "both" if config.cell is not None else "neither"
        raise ValueError("give exactly one of config.cell (wrapped in a sequence model) and "
                         f"config.model; got {given}")
    if config.cell is not None:
        check_layer(config.cell, "config.cell")
    else:
        for method in ("init", "apply"):
            if not callable(getattr(config.model, method, None)):
                raise TypeError(f"config.model must have init(key, input_size) and "
                                f"apply(params, xs, *, key, lengths); got "
                                f"{type(config.model).__name__} without {method}")
        if (config.embed is not None or not checks.is_zero(config.dropout)
                or config.options is not None):
            raise ValueError("config.embed, config.dropout and config.options configure the "
                             "sequence model around config.cell; a config.model brings its own")
    if config.gradient_flow and config.model is not None:
        raise ValueError("config.gradient_flow follows config.cell's carry: it needs "
                         "config.cell, not config.model")
    if config.loss_fn is not None and not callable(config.loss_fn):
        raise TypeError(f"config.loss_fn must be a callable (params, model, batch, key) -> "
                        f"(loss, aux); got {type(config.loss_fn).__name__}")


def learning_rate_schedule(config: Config) -> Callable:
    """``step -> rate``: linear warmup over ``warmup_steps``, then the configured decay.

    ``rate(s) = lr * min(1, (s + 1) / warmup_steps) * d(p)`` with ``p`` the fraction of the
    post-warmup steps done, ``d = 1`` (constant), ``(1 + cos(pi p)) / 2`` (cosine) or
    ``1 - p`` (linear). ``lr`` may be traced.
    """
    if callable(config.learning_rate):
        return config.learning_rate
    lr = 1e-3 if config.learning_rate is None else config.learning_rate
    warmup, steps = config.warmup_steps, config.steps

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
    """Clipping (if any) followed by the configured optimiser and learning-rate schedule (or
    the given optax transformation)."""
    if _is_transformation(config.optimizer):
        base = config.optimizer
    else:
        base = _named_optimizer(config)
    if config.clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), base)


def _named_optimizer(config: Config) -> optax.GradientTransformation:
    lr, wd = learning_rate_schedule(config), config.weight_decay
    if config.optimizer == "adam":
        base = optax.adamw(lr, weight_decay=wd)
    else:
        base = optax.chain(optax.add_decayed_weights(wd),
                           optax.rmsprop(lr) if config.optimizer == "rmsprop" else optax.sgd(lr))
    return base


class TrainState(NamedTuple):
    """Where a run stands between chunks: everything :meth:`Trainer.run` needs to go on.

    ``key`` is the run's key (chunk ``c`` draws its batches from ``fold_in(k_train, c)``, so a
    run split into chunks equals the run in one piece); ``evals_done`` counts finished
    evaluation chunks; ``first_nonfinite_step`` is ``-1`` until a step's loss, gradient or
    update is not finite; ``nonfinite_steps`` counts such (skipped) steps.
    """

    params: Any
    opt_state: Any
    key: Any
    evals_done: Any
    first_nonfinite_step: Any
    nonfinite_steps: Any


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
    model: Any


def _run_keys(key):
    """The run key's three uses, ``(k_init, k_train, k_eval)``; every piece derives them here."""
    return jax.random.split(key, 3)


def _check_task_lengths(task, batch_size: int) -> None:
    """Draws one training batch (and takes the test set, if any) and checks the ``lengths``
    a task returns: integers of shape ``xs.shape[:-2]`` in ``[0, T]``. Inside the training
    program a length outside would be clamped without a word, so this looks before it
    compiles (one batch: a probe, not a proof)."""
    with jax.ensure_compile_time_eval():
        batches = [("task.sample(key, batch_size)",
                    _as_batch(task.sample(jax.random.key(0), batch_size),
                              "task.sample(key, batch_size)"))]
        if getattr(task, "test", None) is not None:
            batches.append(("task.test", _as_batch(task.test, "task.test")))
        for where, batch in batches:
            lengths = batch.lengths
            if lengths is None or isinstance(lengths, jax.core.Tracer):
                continue
            xs_shape = tuple(jnp.shape(batch.xs))
            if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
                raise TypeError(f"{where} returned lengths of dtype "
                                f"{jnp.result_type(lengths)}; they must be integers")
            if tuple(jnp.shape(lengths)) != xs_shape[:-2]:
                raise ValueError(f"{where} returned lengths of shape {jnp.shape(lengths)} for "
                                 f"inputs of shape {xs_shape}; they must have shape "
                                 f"{xs_shape[:-2]}")
            low, high = int(jnp.min(lengths)), int(jnp.max(lengths))
            if low < 0 or high > xs_shape[-2]:
                raise ValueError(f"{where} returned lengths from {low} to {high}; they must "
                                 f"lie in [0, {xs_shape[-2]}] (the inputs have {xs_shape[-2]} "
                                 "steps): training would clamp them without a word")


def make_trainer(config: Config) -> Trainer:
    """The pieces of a training run (see :class:`Trainer`); the config is checked here,
    and one batch of the task is drawn to check the lengths it returns."""
    _validate(config)
    task = config.task
    _check_task_lengths(task, config.batch_size)
    if config.model is None:
        model = sequence_model(config.cell, task.output_size, readout=task.readout,
                               embed=config.embed, dropout=config.dropout,
                               options=config.options)
    else:
        model = config.model
    tx = make_optimizer(config)
    loss_fn = config.loss_fn or _task_loss(task)

    def evaluate(params, key):
        k_eval = _run_keys(key)[2]
        test = getattr(task, "test", None)
        batch = _as_batch(test if test is not None else task.sample(k_eval,
                                                                     config.eval_batch_size),
                          "task.test" if test is not None else "task.sample(key, batch_size)")
        predictions = model.apply(params, batch.xs, key=None, lengths=batch.lengths)
        metrics = dict(task.metrics(_checked_predictions(predictions, task, batch.xs),
                                    batch.targets))
        if config.gradient_flow:
            def head_loss(ys):
                return task.loss(model.head(params, ys, batch.lengths), batch.targets)
            metrics["grad_flow_log10"] = gradient_norms(
                config.cell, params["rnn"], batch.xs, head_loss, lengths=batch.lengths).log10
        return metrics

    def objective(params, batch, key):
        out = loss_fn(params, model, batch, key)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise TypeError(f"config.loss_fn must return (loss, aux) with aux a dict of "
                            f"scalars; got {type(out).__name__}")
        loss, aux = out
        if jnp.shape(loss) != ():
            raise ValueError(f"config.loss_fn's loss must be a scalar; got shape "
                             f"{jnp.shape(loss)}")
        return loss, aux

    def step(state, inp):
        params, opt_state, first_bad, bad_count = state
        key, i = inp
        k_data, k_drop = jax.random.split(key)
        batch = _as_batch(task.sample(k_data, config.batch_size),
                          "task.sample(key, batch_size)")
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params, batch, k_drop)
        # plain, as optax.clip_by_global_norm computes it: diagnostics.tree_norm's scaled
        # norm (a max pass, then a pass that depends on it) made the whole step 1.16x as
        # long as a hand-written loop's (benchmarks/RESULTS.md)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.real(leaf * jnp.conj(leaf)))
                                 for leaf in jax.tree.leaves(grads)))
        updates, new_opt_state = tx.update(grads, opt_state, params)
        # a finite gradient can still give a non-finite update (an overflowing second
        # moment), and a finite update non-finite params (huge params plus a huge update):
        # none of it may reach the params
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, new_params, params)
        opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        first_bad = jnp.where((first_bad < 0) & ~finite, i, first_bad)
        bad_count = bad_count + (~finite).astype(jnp.int32)
        return (params, opt_state, first_bad, bad_count), (loss, grad_norm, aux)

    def init(key):
        params = model.init(_run_keys(key)[0], task.input_size)
        state = TrainState(params, tx.init(params), key, jnp.asarray(0, jnp.int32),
                           jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32))
        return state, evaluate(params, key)

    def run(state: TrainState, num_evals: int):
        k_train = _run_keys(state.key)[1]

        def chunk(inner, c):
            idx = (c * config.eval_every + jnp.arange(config.eval_every)).astype(jnp.int32)
            keys = jax.random.split(jax.random.fold_in(k_train, c), config.eval_every)
            inner, (losses, grad_norms, aux) = jax.lax.scan(step, inner, (keys, idx))
            metrics = evaluate(inner[0], state.key)
            metrics.update(step=(c + 1) * config.eval_every, train_loss=jnp.mean(losses),
                           grad_norm=jnp.mean(grad_norms), first_nonfinite_step=inner[2],
                           nonfinite_steps=inner[3])
            metrics.update({f"train_{name}": jnp.mean(v) for name, v in aux.items()})
            return inner, metrics

        inner = (state.params, state.opt_state, state.first_nonfinite_step,
                 state.nonfinite_steps)
        chunks = state.evals_done + jnp.arange(num_evals, dtype=jnp.int32)
        (params, opt_state, first_bad, bad_count), metrics = jax.lax.scan(chunk, inner, chunks)
        return TrainState(params, opt_state, state.key, state.evals_done + num_evals,
                          first_bad, bad_count), metrics

    return Trainer(init, run, evaluate, model)


def _all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf is finite (an independent reduction per leaf, which
    XLA fuses with the leaf's producer)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
                             or [jnp.array(True)]))


def _task_loss(task) -> Callable:
    """The default ``loss_fn``: the task's loss of the model's predictions, no aux."""
    def loss_fn(params, model, batch, key):
        predictions = model.apply(params, batch.xs, key=key, lengths=batch.lengths)
        return task.loss(_checked_predictions(predictions, task, batch.xs), batch.targets), {}
    return loss_fn


def _checked_predictions(predictions, task, xs):
    """``predictions`` when their shape is the task's (``[*B, O]`` for readout ``"last"``,
    ``[*B, T, O]`` for ``"all"``, ``O = task.output_size``); else a ValueError at trace
    time, since a task's loss would often broadcast a wrong shape without a word."""
    shape = tuple(jnp.shape(predictions))
    lead = tuple(jnp.shape(xs))[:-2] if task.readout == "last" else tuple(jnp.shape(xs))[:-1]
    if task.readout in ("last", "all") and shape != (*lead, task.output_size):
        raise ValueError(
            f"the model's predictions have shape {shape}; task {task.name} (readout "
            f"{task.readout!r}, output_size {task.output_size}) needs {(*lead, task.output_size)}"
            f" for inputs of shape {tuple(jnp.shape(xs))}: check the model's output width")
    return predictions


def nonfinite_runs(metrics: dict) -> list[tuple[tuple[int, ...], int, int]]:
    """Host-side: ``(run index, first non-finite step, skipped steps)`` of every run whose
    loss, gradient or update was not finite at some step, from metrics with any leading run
    axes (``[E]`` for one run, ``[S, E]`` for vmapped seeds, ``[G, S, E]`` for a sweep)."""
    first = np.asarray(metrics["first_nonfinite_step"])[..., -1]
    count = np.asarray(metrics["nonfinite_steps"])[..., -1]
    return [(tuple(int(i) for i in index), int(first[index]), int(count[index]))
            for index in zip(*np.nonzero(first >= 0))] if first.ndim else (
        [((), int(first), int(count))] if first >= 0 else [])


def warn_nonfinite(result: Result) -> list[tuple[tuple[int, ...], int, int]]:
    """Host-side, after a run: a ``RuntimeWarning`` for every run (seed) of ``result`` that
    skipped non-finite steps, as :func:`gatedrnn.sweep` warns; returns
    :func:`nonfinite_runs`. ``train`` itself is pure and cannot warn."""
    runs = nonfinite_runs(result.metrics)
    for index, first, count in runs:
        warnings.warn(f"run {index or ''} had a non-finite loss, gradient or update first at "
                      f"step {first}; {count} such steps were skipped", RuntimeWarning,
                      stacklevel=2)
    return runs


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


__all__ = ["Batch", "Config", "OPTIMIZERS", "Result", "SCHEDULES", "TASK_FIELDS", "TrainState",
           "Trainer", "default_eval_every", "learning_rate_schedule", "make_optimizer",
           "make_train", "make_trainer", "nonfinite_runs", "warn_nonfinite"]
