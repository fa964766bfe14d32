"""Tasks, the pure training program, and the main experiment at toy size."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import x64

import gatedrnn as gr

STAT_TOL = 0.005  # Monte Carlo error of a mean over 20000 samples


def test_adding_task_markers_targets_and_baseline():
    task = gr.tasks.adding(50)
    xs, target = task.sample(jax.random.key(0), 20000)
    assert xs.shape == (20000, 50, 2) and target.shape == (20000, 1)
    markers = np.asarray(xs[..., 1])
    np.testing.assert_array_equal(markers.sum(1), 2)
    np.testing.assert_array_equal(markers[:, :25].sum(1), 1)
    np.testing.assert_allclose(target[:, 0], (xs[..., 0] * xs[..., 1]).sum(1), rtol=1e-6)
    assert abs(float(task.loss(jnp.ones_like(target), target)) - 1 / 6) < STAT_TOL
    assert task.baselines["constant"] == pytest.approx(1 / 6)


def test_adding_task_hochreiter_form():
    task = gr.tasks.adding(40, variant="hochreiter")
    xs, target = task.sample(jax.random.key(1), 20000)
    markers = np.asarray(xs[..., 1])
    np.testing.assert_array_equal(markers.sum(1), 2)
    assert markers[:, :10].sum(1).min() >= 1 and markers[:, 20:].sum() == 0
    np.testing.assert_allclose(target[:, 0], 0.5 + (xs[..., 0] * xs[..., 1]).sum(1) / 4,
                               rtol=1e-6)
    assert abs(float(task.loss(jnp.full_like(target, 0.5), target)) - 1 / 24) < STAT_TOL
    assert float(task.metrics(target, target)["accuracy"]) == 1.0


def test_task_sampling_is_a_pure_function_of_the_key():
    task = gr.tasks.adding(30)
    a, b = task.sample(jax.random.key(3), 8), task.sample(jax.random.key(3), 8)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _config(cell=None, **kw):
    base = dict(cell=cell if "model" in kw else cell or gr.gru(8), task=gr.tasks.adding(10),
                steps=20, batch_size=16, eval_every=10, eval_batch_size=64)
    return gr.train.Config(**{**base, **kw})


def test_same_key_gives_identical_results_and_seed_i_of_vmap_equals_single_run():
    train = gr.train.make_train(_config(gradient_flow=True))
    keys = jax.random.split(jax.random.key(0), 3)
    batch = jax.jit(jax.vmap(train))(keys)
    for i in range(3):
        single = jax.jit(train)(keys[i])
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                     batch.metrics, single.metrics)
    again = jax.jit(jax.vmap(train))(keys)
    jax.tree.map(np.testing.assert_array_equal, batch.metrics, again.metrics)
    assert batch.metrics["grad_flow_log10"].shape == (3, 2, 10)
    assert batch.initial["grad_flow_log10"].shape == (3, 10)
    np.testing.assert_array_equal(batch.metrics["step"][0], [10, 20])


def test_learning_rate_vmaps_as_an_array():
    config = _config()
    lrs = jnp.array([1e-3, 3e-2])

    def run(key, lr):
        return gr.train.make_train(dataclasses.replace(config, learning_rate=lr))(key).metrics

    grid = jax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.key(0), lrs)
    for i, lr in enumerate([1e-3, 3e-2]):
        single = jax.jit(gr.train.make_train(dataclasses.replace(config, learning_rate=lr)))(
            jax.random.key(0)).metrics
        np.testing.assert_allclose(grid["loss"][i], single["loss"], rtol=1e-5)


@pytest.mark.parametrize("cell", [gr.gru(16), gr.lstm(16)], ids=["gru", "lstm"])
def test_lstm_and_gru_learn_the_adding_task_at_a_short_length(cell):
    with x64(False):
        config = _config(cell, task=gr.tasks.adding(10), steps=600, batch_size=32,
                         eval_every=300, learning_rate=1e-2, eval_batch_size=256)
        result = jax.jit(gr.train.make_train(config))(jax.random.key(0))
    final = float(result.metrics["loss"][-1])
    assert final < 0.1 * (1 / 6), final
    assert bool(config.task.solved({"loss": result.metrics["loss"][-1]}))


def test_a_run_in_chunks_equals_the_run_in_one_piece():
    config = _config(steps=30, dropout=0.2)
    whole = jax.jit(gr.train.make_train(config))(jax.random.key(4))
    trainer = gr.train.make_trainer(config)
    run = jax.jit(trainer.run, static_argnums=1)
    state, initial = jax.jit(trainer.init)(jax.random.key(4))
    state, first = run(state, 1)
    state, rest = run(state, 2)
    chunked = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, rest)
    # bit for bit on the CPU; a GPU may order a reduction differently in the two programs
    same = (np.testing.assert_array_equal if jax.default_backend() == "cpu"
            else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7))
    jax.tree.map(same, chunked, whole.metrics)
    jax.tree.map(same, initial, whole.initial)
    jax.tree.map(same, state.params, whole.params)
    assert int(state.evals_done) == 3


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_learning_rate_schedule_follows_its_formula(schedule):
    config = _config(steps=100, eval_every=10, learning_rate=0.1, schedule=schedule,
                     warmup_steps=20)
    rate = gr.train.learning_rate_schedule(config)
    for s in [0, 9, 19, 20, 50, 99, 100]:
        p = min(max((s - 20) / 80, 0.0), 1.0)
        decay = {"constant": 1.0, "cosine": 0.5 * (1 + np.cos(np.pi * p)), "linear": 1 - p}
        expected = 0.1 * min(1.0, (s + 1) / 20) * decay[schedule]
        # the schedule counts in float32: 1 - cos near pi loses digits, hence the abs term
        assert float(rate(s)) == pytest.approx(expected, rel=1e-5, abs=1e-7), s


def test_dropout_vmaps_as_an_array_and_is_off_at_evaluation():
    config = _config()

    def run(key, rate):
        return gr.train.make_train(dataclasses.replace(config, dropout=rate))(key)

    grid = jax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.key(0), jnp.array([0.0, 0.5]))
    plain = jax.jit(gr.train.make_train(config))(jax.random.key(0))
    np.testing.assert_allclose(grid.metrics["loss"][0], plain.metrics["loss"], rtol=1e-5)
    assert not np.allclose(grid.metrics["train_loss"][1], plain.metrics["train_loss"])
    # evaluation is deterministic: the initial metrics do not depend on the rate
    np.testing.assert_allclose(grid.initial["loss"][1], plain.initial["loss"], rtol=1e-6)


def test_tasks_with_a_held_out_set_evaluate_on_all_of_it():
    task = gr.tasks.digits(pad=2)
    config = _config(gr.lstm(8), task=task, steps=10, eval_every=10, embed=4)
    trainer = gr.train.make_trainer(config)
    state, initial = trainer.init(jax.random.key(0))
    assert state.params["embed"]["w"].shape == (1, 4)
    logits = trainer.model.apply(state.params, task.test[0])
    assert logits.shape == (359, 10)
    np.testing.assert_allclose(initial["accuracy"], task.metrics(logits, task.test[1])["accuracy"])


def test_nonfinite_steps_are_reported_and_skipped():
    # a concrete NaN rate is refused before compiling; a traced one (a sweep's) reaches the run
    result = jax.jit(lambda lr, key: gr.train.make_train(_config(learning_rate=lr))(key))(
        jnp.nan, jax.random.key(0))
    assert int(result.metrics["first_nonfinite_step"][-1]) == 0  # the first update is NaN
    assert int(result.metrics["nonfinite_steps"][-1]) == 20  # and every one after it
    init = jax.jit(gr.train.make_trainer(_config()).init)(jax.random.key(0))[0]
    jax.tree.map(np.testing.assert_array_equal, result.params, init.params)  # nothing applied


@pytest.mark.parametrize("changes, match", [
    (dict(steps=25), r"config.steps \(25\) must be a multiple of config.eval_every \(10\)"),
    (dict(optimizer="adagrad"), "config.optimizer must be one of"),
    (dict(batch_size=0), "config.batch_size must be a positive int"),
    (dict(model=gr.models.sequence_model(gr.gru(4), 1), gradient_flow=True),
     "gradient_flow follows config.cell's carry"),
    (dict(model=gr.models.sequence_model(gr.gru(4), 1), cell=gr.gru(4)),
     "exactly one of config.cell .* got both"),
    (dict(optimizer="adagrad"), "config.optimizer must be one of"),
    (dict(schedule="exp"), "config.schedule must be one of"),
    (dict(warmup_steps=30), r"config.warmup_steps must be an int in \[0, config.steps=20\]"),
    (dict(dropout=1.5), r"config.dropout must be in \[0, 1\); got 1.5"),
    (dict(learning_rate=lambda s: 1e-3, schedule="cosine"), "already a schedule"),
])
def test_bad_config_is_rejected_before_compiling(changes, match):
    with pytest.raises(ValueError, match=match):
        gr.train.make_train(_config(**changes))


def test_an_optax_transformation_is_an_optimizer():
    named = jax.jit(gr.train.make_train(_config(optimizer="sgd", learning_rate=0.1,
                                                clip_norm=None)))(jax.random.key(0))
    given = jax.jit(gr.train.make_train(_config(optimizer=optax.sgd(0.1), clip_norm=None)))(
        jax.random.key(0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 given.params, named.params)
    lion = jax.jit(gr.train.make_train(_config(optimizer=optax.lion(1e-3))))(jax.random.key(0))
    assert np.isfinite(lion.metrics["loss"]).all()
    with pytest.raises(ValueError, match="optax transformation, which holds its own learning "
                                         "rate.*config.learning_rate at None; got 0.001"):
        gr.train.make_train(_config(optimizer=optax.adam(1e-3), learning_rate=1e-3))


def test_a_custom_loss_sees_params_model_batch_and_key_and_records_its_aux():
    task = gr.tasks.adding(10)

    def penalised(weight):
        def loss_fn(params, model, batch, key):
            carry, ys = gr.unroll(model.layer, params["rnn"], batch.xs, key=key)
            penalty = jnp.mean(carry**2)
            loss = task.loss(model.head(params, ys, key=key), batch.targets)
            return loss + weight * penalty, {"carry_penalty": penalty}
        return loss_fn

    plain = jax.jit(gr.train.make_train(_config()))(jax.random.key(0))
    zero = jax.jit(gr.train.make_train(_config(loss_fn=penalised(0.0))))(jax.random.key(0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 zero.params, plain.params)
    assert zero.metrics["train_carry_penalty"].shape == (2,)
    heavy = jax.jit(gr.train.make_train(_config(loss_fn=penalised(100.0), steps=60,
                                                learning_rate=1e-2)))(jax.random.key(0))
    light = jax.jit(gr.train.make_train(_config(loss_fn=penalised(0.0), steps=60,
                                                learning_rate=1e-2)))(jax.random.key(0))
    assert heavy.metrics["train_carry_penalty"][-1] < 0.5 * light.metrics[
        "train_carry_penalty"][-1]
    with pytest.raises(TypeError, match=r"loss_fn must return \(loss, aux\)"):
        jax.jit(gr.train.make_train(_config(
            loss_fn=lambda p, m, b, k: task.loss(m.apply(p, b.xs), b.targets))))(
            jax.random.key(0))


class LastValue(NamedTuple):
    """A task of the user's own (not gr.tasks.Task) with variable lengths: predict the last
    valid value of each sequence."""

    name: str = "last_value"
    input_size: int = 1
    output_size: int = 1
    readout: str = "last"
    seq_len: int = 8

    def sample(self, key, batch_size):
        k_x, k_n = jax.random.split(key)
        xs = jax.random.uniform(k_x, (batch_size, self.seq_len, 1))
        lengths = jax.random.randint(k_n, (batch_size,), 1, self.seq_len + 1)
        targets = jnp.take_along_axis(xs[..., 0], (lengths - 1)[:, None], 1)
        return xs, targets, lengths

    def loss(self, predictions, targets):
        return jnp.mean((predictions - targets) ** 2)

    def metrics(self, predictions, targets):
        return {"loss": self.loss(predictions, targets)}

    def solved(self, metrics):
        return metrics["loss"] < 0.01


def test_lengths_from_a_task_of_the_users_own_reach_the_model():
    config = _config(task=LastValue(), steps=300, eval_every=100, learning_rate=1e-2)
    result = jax.jit(gr.train.make_train(config))(jax.random.key(0))
    # the last valid value is visible only to a model that reads at the lengths:
    # reading the last padded step would stay near the variance 1/12 of a uniform value
    assert float(result.metrics["loss"][-1]) < 0.01


class BadLengths(LastValue):
    """LastValue with its lengths shifted by the class's ``shift``."""

    shift = 0

    def sample(self, key, batch_size):
        xs, targets, lengths = LastValue.sample(self, key, batch_size)
        return xs, targets, lengths + self.shift


@pytest.mark.parametrize("shift, match", [
    (3, r"returned lengths from \d+ to 11; they must lie in \[0, 8\]"),
    (-8, r"returned lengths from -7 to \d+; they must lie in \[0, 8\]"),
])
def test_lengths_outside_the_sequence_from_a_users_task_are_refused_before_training(shift,
                                                                                     match):
    task = type("Shifted", (BadLengths,), {"shift": shift})()
    with pytest.raises(ValueError, match=r"task.sample\(key, batch_size\) " + match):
        gr.train.make_train(_config(task=task))
    with pytest.raises(ValueError, match=match):
        gr.sweep(_config(task=task), seeds=1, progress=False)


def test_a_user_model_trains_like_the_built_in_one():
    model = gr.models.sequence_model(gr.gru(8), 1)
    built_in = jax.jit(gr.train.make_train(_config()))(jax.random.key(0))
    user = jax.jit(gr.train.make_train(_config(model=model)))(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, user.params, built_in.params)


def test_a_user_model_of_the_wrong_output_width_is_refused_before_it_trains():
    wide = gr.models.sequence_model(gr.gru(4), 3)  # the adding task predicts one number
    with pytest.raises(ValueError, match=r"predictions have shape \(4, 3\); task adding\(T=10, "
                                         r"arjovsky\) \(readout 'last', output_size 1\) needs "
                                         r"\(4, 1\)"):
        gr.train.make_train(_config(model=wide, batch_size=4, eval_batch_size=4))(
            jax.random.key(0))
    every_step = gr.models.sequence_model(gr.gru(4), 1, readout="all")
    with pytest.raises(ValueError, match=r"predictions have shape \(4, 10, 1\)"):
        gr.train.make_train(_config(model=every_step, batch_size=4, eval_batch_size=4))(
            jax.random.key(0))


def test_eval_every_defaults_to_a_divisor_of_steps():
    assert gr.train.Config(cell=gr.gru(4), task=gr.tasks.adding(5), steps=50).eval_every == 5
    assert gr.train.Config(cell=gr.gru(4), task=gr.tasks.adding(5), steps=1000).eval_every == 100
    assert gr.train.default_eval_every(97) == 1 and gr.train.default_eval_every(7) == 1
    assert gr.train.default_eval_every(120) == 12
