"""Sweeps: each run equals a single run, sharded over host devices and processes equals
unsharded, an interrupted sweep resumes, results and params are written and reload."""

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sweep_worker

import gatedrnn as gr

WORKER = Path(sweep_worker.__file__)
SHARD_TOL = 1e-6  # a sharded vmap computes each run alone; only fusion order may differ
# float32 params: a vmapped batch and a single run round differently, and 40 Adam steps
# compound it to a few 1e-6 relative
VMAP_TOL = 1e-5
# and near zero an absolute term: params of order one, where a GPU's rounding reached 1.8e-7
VMAP_ATOL = 1e-6


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def reference(reference_dir):
    return sweep_worker.run(reference_dir)


def _start(args, *, devices=1):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def _assert_same(result, reference, tol=SHARD_TOL):
    for name in reference.metrics:
        np.testing.assert_allclose(result.metrics[name], reference.metrics[name], rtol=tol,
                                   atol=tol, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol),
                 result.params, reference.params)


def test_every_run_of_a_sweep_equals_a_single_run_and_results_are_written(tmp_path, reference):
    config = sweep_worker.config()
    grid = {"learning_rate": [1e-2], "forget_bias": [0.0, 2.0]}
    config = gr.train.Config(**{**config.__dict__, "cell": gr.lstm(6)})
    result = gr.sweep(config, seeds=2, grid=grid, out_dir=tmp_path, progress=False)
    keys = jax.random.split(jax.random.key(0), 2)
    for g, bias in enumerate([0.0, 2.0]):
        single_config = gr.train.Config(**{**config.__dict__, "learning_rate": 1e-2,
                                           "cell": gr.lstm(6, forget_bias=bias)})
        train = jax.jit(gr.train.make_train(single_config))
        for s in range(2):
            single = train(keys[s])
            for name, values in single.metrics.items():
                np.testing.assert_allclose(result.metrics[name][g, s], values, rtol=VMAP_TOL,
                                           atol=VMAP_ATOL, err_msg=name)
            np.testing.assert_allclose(result.params["rnn"]["w_h"][g, s],
                                       single.params["rnn"]["w_h"], rtol=VMAP_TOL,
                                       atol=VMAP_ATOL)
    np.testing.assert_array_equal(result.grid["forget_bias"], [0.0, 2.0])
    loss = result.metrics["loss"]
    assert loss.shape == (2, 2, 4)
    np.testing.assert_allclose(result.summary["loss"]["mean"], loss.mean(1))
    np.testing.assert_allclose(result.summary["loss"]["low"],
                               np.percentile(loss, 2.5, axis=1))
    assert result.summary["solved_rate"].shape == (2,) and result.summary["nonfinite"] == []

    record = gr.sweeps.load(tmp_path)
    assert record["evals_done"] == 4
    np.testing.assert_allclose(np.asarray(record["metrics"]["loss"]).reshape(2, 2, 4), loss)
    summary = json.loads((tmp_path / "summary.json").read_text())
    np.testing.assert_allclose(summary["loss"]["median"], np.median(loss, 1))
    reloaded = gr.sweeps.load_params(tmp_path, like=result.params)
    jax.tree.map(np.testing.assert_array_equal, reloaded, result.params)
    # a finished sweep is loaded, not rerun
    again = gr.sweep(config, seeds=2, grid=grid, out_dir=tmp_path, progress=False)
    jax.tree.map(np.testing.assert_array_equal, again.metrics, result.metrics)
    jax.tree.map(np.testing.assert_array_equal, again.params, result.params)
    # reloaded params go straight into the diagnostics
    params = jax.tree.map(lambda v: v[1, 0], reloaded["rnn"])
    xs = jnp.ones((2, 10, 2))
    norms = gr.diagnostics.gradient_norms(config.cell, params, xs, lambda ys: ys[:, -1].sum())
    assert norms.log10.shape == (10,)


@pytest.mark.parametrize("cell", [gr.lstm(6, param_dtype=jnp.float64),
                                  gr.gru(6, reset_after=False, param_dtype=jnp.float64)],
                         ids=["lstm", "gru-reset-before"])
def test_a_float64_sweep_equals_its_single_runs_to_float64_rounding(cell):
    # XLA:CPU computes vmap(grad) of a scanned LSTM wrongly in float64 in some programs
    # (docs/upstream/vmap_grad_float64): a sweep vmaps exactly that, so its runs are held
    # to float64 rounding against single runs, for the cells that reproducer affects
    config = gr.train.Config(**{**sweep_worker.config().__dict__, "cell": cell,
                                "learning_rate": 1e-2})
    result = gr.sweep(config, seeds=2, progress=False)
    train = jax.jit(gr.train.make_train(config))
    for s, key in enumerate(jax.random.split(jax.random.key(0), 2)):
        single = train(key)
        assert single.params["rnn"]["w_h"].dtype == jnp.float64
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0, s], b, rtol=1e-12,
                                                             atol=1e-12),
                     result.params, single.params)
        for name, values in single.metrics.items():
            np.testing.assert_allclose(result.metrics[name][0, s], values, rtol=1e-12,
                                       atol=1e-12, err_msg=name)


# XLA forces several host devices on the CPU backend only; on a one-GPU machine the worker
# would see one device (and two processes would share one GPU, which NCCL refuses)
ON_CPU = pytest.mark.skipif(jax.default_backend() != "cpu",
                            reason="several devices are forced on the CPU backend only")


@ON_CPU
def test_a_sharded_sweep_over_four_host_devices_equals_the_unsharded_one(tmp_path, reference):
    out = _finish(_start([tmp_path], devices=4))
    assert "devices=4 processes=1" in out
    _assert_same(sweep_worker.run(tmp_path), reference)  # loads the finished sweep


@ON_CPU
def test_a_sweep_over_two_processes_with_jax_distributed_equals_one_process(tmp_path,
                                                                            reference):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [_start([tmp_path, "--process", i, "--processes", 2, "--port", port], devices=2)
             for i in range(2)]
    outs = [_finish(p) for p in procs]
    assert "devices=4 processes=2" in outs[0]
    _assert_same(sweep_worker.run(tmp_path), reference)


def test_an_interrupted_sweep_resumes_without_losing_or_redoing_work(tmp_path, reference,
                                                                     capsys):
    proc = _start([tmp_path, "--interrupt-after", 2])
    proc.communicate(timeout=300)
    assert proc.returncode == -9  # killed hard after its second chunk
    record = gr.sweeps.load(tmp_path)
    assert record["evals_done"] == 2 and len(record["metrics"]["loss"][0]) == 2
    assert (tmp_path / "state" / "2").is_dir()  # the checkpoint the record names
    result = sweep_worker.run(tmp_path)
    assert "at step 20 of 40" in capsys.readouterr().err
    _assert_same(result, reference)


def test_nonfinite_runs_are_named_with_grid_point_seed_and_step(tmp_path):
    config = sweep_worker.config()
    with pytest.warns(RuntimeWarning) as caught:  # a rate of 1e38 overflows float32 params
        result = gr.sweep(config, seeds=2, progress=False, grid={"learning_rate": [1e-3, 1e38]})
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    entries = result.summary["nonfinite"]
    for seed, (message, entry) in enumerate(zip(messages, entries)):
        assert message == (f"sweep: seed {seed} at {entry['point']} had a non-finite loss, "
                           f"gradient or update first at step {entry['step']}; "
                           f"{entry['skipped']} such steps were skipped")
        assert entry["point"]["learning_rate"] > 1e37 and entry["seed"] == seed
        # once the params overflow, every later step is skipped too
        assert entry["step"] + entry["skipped"] == config.steps
    # no non-finite update ever reaches the params (their loss may still overflow)
    assert all(np.isfinite(v).all() for v in jax.tree.leaves(result.params))


@pytest.mark.parametrize("grid, match", [
    (dict(batch_size=[8, 16]), "grid axis 'batch_size' is neither one of .* nor an option"),
    (dict(update_bias=[1.0]), "lstm has no option 'update_bias'"),
    (dict(hidden_size=[8.0]), "grid axis 'hidden_size': the cell's option is 4; only"),
    (dict(**{"layers.0.forget_bias": [1.0]}), "lstm has no option 'layers'"),
    (dict(learning_rate=[]), "must be a non-empty list of numbers"),
    (dict(dropout=[0.1, 1.5]), r"config.dropout must be in \[0, 1\); got 1.5"),
])
def test_bad_grids_are_rejected_before_compiling(grid, match):
    config = gr.train.Config(**{**sweep_worker.config().__dict__, "cell": gr.lstm(4)})
    with pytest.raises(ValueError, match=match):
        gr.sweep(config, seeds=2, grid=grid)


def test_a_sweep_in_another_out_dir_setup_is_refused(reference_dir, reference):
    with pytest.raises(ValueError, match="holds a different sweep"):
        gr.sweep(sweep_worker.config(), seeds=2, out_dir=reference_dir, progress=False)


def test_cpu_deadlock_workaround_appends_its_flag_once_and_keeps_others(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    gr.workarounds.avoid_cpu_deadlock()
    gr.workarounds.avoid_cpu_deadlock()
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                               gr.workarounds.CPU_SCHEDULER_FLAG]


def _refused_as_another_program(config, reference_dir):
    with pytest.raises(ValueError, match=r"holds a different sweep; what differs: program"):
        gr.sweep(config, seeds=sweep_worker.SEEDS, out_dir=reference_dir, chunk_evals=1,
                 progress=False, grid=sweep_worker.GRID)


def test_a_finished_sweep_is_not_returned_for_a_task_with_another_sampler(reference_dir,
                                                                         reference):
    config = sweep_worker.config()
    task = config.task

    def sample(key, batch_size):  # same name, other data: targets doubled
        xs, targets = task.sample(key, batch_size)
        return xs, 2.0 * targets

    other = gr.train.Config(**{**config.__dict__, "task": task._replace(sample=sample)})
    _refused_as_another_program(other, reference_dir)
    # the same program is recognised and loaded, not rerun
    again = gr.sweep(config, seeds=sweep_worker.SEEDS, out_dir=reference_dir, chunk_evals=1,
                     progress=False, grid=sweep_worker.GRID)
    np.testing.assert_array_equal(again.metrics["loss"], reference.metrics["loss"])


def test_a_finished_sweep_is_not_returned_for_a_cell_with_other_equations(reference_dir,
                                                                         reference):
    config = sweep_worker.config()
    real = config.cell

    def core(params, h, u_t):  # same kind, size and options; another recurrence
        h, _ = real.recur(params, h, u_t)
        return 0.5 * h, 0.5 * h

    fake = gr.make_cell(real.init, core, hidden_size=real.hidden_size, kind=real.kind,
                        project=real.project, input_size=real.input_size, config=real.config)
    assert gr.sweeps.describe_config(gr.train.Config(**{**config.__dict__, "cell": fake})) == \
        gr.sweeps.describe_config(config)
    _refused_as_another_program(gr.train.Config(**{**config.__dict__, "cell": fake}),
                                reference_dir)


def _import_in_a_fresh_process(code, **env):
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], env={**base, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.skipif(not gr.workarounds._hang_possible(), reason="JAX < 0.10: no known hang")
def test_importing_gatedrnn_avoids_the_cpu_deadlock_unless_told_not_to():
    show = "import os, gatedrnn; print(os.environ.get('XLA_FLAGS', ''))"
    flag = gr.workarounds.CPU_SCHEDULER_FLAG
    assert flag in _import_in_a_fresh_process(show).stdout
    assert flag not in _import_in_a_fresh_process(show, JAX_PLATFORMS="cuda").stdout
    assert flag not in _import_in_a_fresh_process(
        show, GATEDRNN_KEEP_CPU_SCHEDULER="1").stdout
    late = "import jax; jax.numpy.ones(1).block_until_ready(); import gatedrnn"
    assert "imported after JAX's CPU backend started" in _import_in_a_fresh_process(
        late, JAX_PLATFORMS="cpu").stderr  # the warning is for the CPU backend alone


def test_the_cpu_scheduler_flag_is_left_alone_on_jax_without_the_known_hang(monkeypatch):
    import jax
    monkeypatch.setattr(jax, "__version__", "0.9.2")
    assert not gr.workarounds._hang_possible()
    monkeypatch.setattr(jax, "__version__", "0.10.2")
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert not gr.workarounds._hang_possible()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert gr.workarounds._hang_possible()


_FAULTS_OF_A_CALL = """
import resource, jax, jax.numpy as jnp, gatedrnn as gr
cell = gr.lstm(256)
params, xs = cell.init(jax.random.key(0), 64), jnp.ones((64, 128, 64))
grad = jax.jit(jax.grad(lambda p: jnp.sum(gr.unroll(cell, p, xs)[1] ** 2)))
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(grad(params))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# not the first call's (compiling); the least, as a call can start before the previous
# one's temporaries are freed, and take a block of its own
print(min(faults[1:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_reuse_cpu_memory_keeps_xla_temporaries_resident_between_calls():
    # this gradient's temporaries are about 80 MB: glibc's default maps them afresh at every
    # call and each 4 KiB page faults in; kept, a later call touches no new page
    default = int(_import_in_a_fresh_process(_FAULTS_OF_A_CALL, JAX_PLATFORMS="cpu").stdout)
    reused = int(_import_in_a_fresh_process(_FAULTS_OF_A_CALL, JAX_PLATFORMS="cpu",
                                            GATEDRNN_REUSE_CPU_MEMORY="1").stdout)
    assert default > 10_000 and reused < default / 20, (default, reused)


def test_compile_small_loops_whole_appends_its_option_once_and_keeps_yours(monkeypatch):
    workarounds = gr.workarounds
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    # JAX's backend runs in this process, so the flag is read too late here: it says so
    with pytest.warns(RuntimeWarning, match="after JAX's backend started"):
        workarounds.compile_small_loops_whole(max_bytes=123)
        workarounds.compile_small_loops_whole()
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        f"--xla_backend_extra_options={workarounds.SMALL_LOOP_OPTION}=123"]
    for bad in (0, -5, 1.5, True, "2MB"):
        with pytest.raises(ValueError, match="max_bytes must be a positive int"):
            workarounds.compile_small_loops_whole(max_bytes=bad)


_SMALL_LOOP_GRADIENT = """
import json, jax, jax.numpy as jnp, numpy as np, gatedrnn as gr
xs = jax.random.normal(jax.random.key(1), (1, 50, 3))
# a cell of one's own, with nested params: a leaky tanh unit
user = gr.make_cell(
    lambda key, i: {"in": {"w": jax.random.normal(key, (i, 32))}, "rec": jnp.eye(32) * 0.5},
    lambda p, h, u: ((h := 0.9 * h + 0.1 * jnp.tanh(u + h @ p["rec"])), h),
    hidden_size=32, project=lambda p, x: x @ p["in"]["w"])
for cell in (gr.lstm(32), user):
    params = cell.init(jax.random.key(0), 3)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(gr.unroll(cell, p, xs)[1] ** 2)))
    print(grad.lower(params).compile().as_text().count("xla_cpu_small_call="))
    print(json.dumps([float(np.sum(np.abs(g))) for g in jax.tree.leaves(grad(params))]))
"""


@pytest.mark.skipif(gr.checks.jax_version() < (0, 10),
                    reason="which loops XLA builds whole was measured on JAX 0.10's XLA")
def test_small_cpu_loops_opt_in_builds_a_single_sequence_loop_whole_with_equal_gradients():
    default = _import_in_a_fresh_process(_SMALL_LOOP_GRADIENT, JAX_PLATFORMS="cpu")
    whole = _import_in_a_fresh_process(_SMALL_LOOP_GRADIENT, JAX_PLATFORMS="cpu",
                                       GATEDRNN_SMALL_CPU_LOOPS="1")
    for first in (0, 2):  # the LSTM's lines, then a user cell's
        (calls_default, sums_default), (calls_whole, sums_whole) = (
            p.stdout.split("\n")[first:first + 2] for p in (default, whole))
        # the gradient's two loops (forward and backward), each one function when opted in
        assert (int(calls_default), int(calls_whole)) == (0, 2)
        np.testing.assert_allclose(json.loads(sums_whole), json.loads(sums_default),
                                   rtol=1e-6)


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def test_reuse_cpu_memory_sets_glibc_options_and_says_when_it_is_late_or_cannot(monkeypatch):
    workarounds = gr.workarounds
    libc = _FakeLibc()  # the real one would change this test process's allocator
    monkeypatch.setattr(workarounds.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(workarounds.platform, "system", lambda: "Linux")
    monkeypatch.setattr(workarounds.platform, "libc_ver", lambda: ("glibc", "2.36"))
    # JAX's backend runs in this process: XLA's threads may keep their own heaps
    with pytest.warns(RuntimeWarning, match="after JAX's backend started"):
        assert workarounds.reuse_cpu_memory(keep_bytes=2**20) is True
    assert libc.calls == [(-8, 1), (-4, 0), (-1, 2**20)]  # arenas, mmap count, trim
    for bad in (-1, 2**31, 1.5, True, "1G"):
        with pytest.raises(ValueError, match=r"keep_bytes must be an int from 0 to 2\*\*31"):
            workarounds.reuse_cpu_memory(keep_bytes=bad)
    monkeypatch.setattr(workarounds.platform, "libc_ver", lambda: ("", ""))
    with pytest.warns(RuntimeWarning, match="not glibc"):
        assert workarounds.reuse_cpu_memory() is False
    assert len(libc.calls) == 3
