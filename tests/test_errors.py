"""Bad input and faults: a clear error naming the argument, never a silent wrong result and
never a deleted or overwritten file of the user's (issue classes of the reliability work)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import scan_kw
from user_cells import indrnn

import gatedrnn as gr

I, H = 3, 4


def _tiny_config():
    return gr.train.Config(cell=gr.rnn(2), task=gr.tasks.adding(4), steps=2, batch_size=4,
                           eval_every=1, eval_batch_size=8)


def _sweep(out_dir, **kw):
    return gr.sweep(_tiny_config(), seeds=1, out_dir=out_dir, progress=False, **kw)


def _users_files(root):
    (root / "params").mkdir(parents=True)
    (root / "params" / "weights.npy").write_text("mine")
    (root / "state").mkdir()
    (root / "state" / "4").mkdir()
    (root / "summary.json").write_text('{"mine": true}')
    (root / "notes.txt").write_text("my notes")
    return {p: p.read_text() for p in root.rglob("*") if p.is_file()}


def test_a_sweep_refuses_a_directory_of_the_users_files_and_leaves_them_untouched(tmp_path):
    before = _users_files(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"holds \['notes.txt', 'params', 'state', "
                                         r"'summary.json'\] and no record of a sweep"):
        _sweep(tmp_path / "mine")
    after = {p: p.read_text() for p in (tmp_path / "mine").rglob("*") if p.is_file()}
    assert after == before and (tmp_path / "mine" / "state" / "4").is_dir()


def test_a_sweep_deletes_only_what_its_record_says_it_wrote(tmp_path):
    out = tmp_path / "sweep"
    _sweep(out)
    record = gr.sweeps.load(out)
    assert sorted(record["written"]) == ["params", "summary.json"]
    assert not (out / "state").exists()  # its own checkpoints, removed when done
    # files a user puts beside a finished sweep survive loading it
    (out / "notes.txt").write_text("mine")
    _sweep(out)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_record_that_does_not_list_a_file_keeps_the_sweep_from_overwriting_it(tmp_path):
    out = tmp_path / "sweep"
    _sweep(out)
    (out / "summary.json").write_text("mine")
    record = gr.sweeps.load(out)
    record["written"] = []  # as if the user made summary.json after the sweep
    (out / "sweep.json").write_text(__import__("json").dumps(record))
    with pytest.raises(ValueError, match=r"holds \['params', 'summary.json'\], which its "
                                         "sweep record does not say the sweep wrote"):
        _sweep(out)
    assert (out / "summary.json").read_text() == "mine"


def test_out_dir_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _sweep("~/expanded")
    assert (tmp_path / "expanded" / "sweep.json").is_file()
    assert not (tmp_path / "~").exists()


def test_an_unwritable_out_dir_is_refused_before_anything_compiles(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("mine")
    compiled = []
    monkeypatch.setattr(gr.sweeps, "fingerprint", lambda *a: compiled.append(1))
    with pytest.raises(ValueError, match="a_file is a file, not a directory"):
        _sweep(tmp_path / "a_file")
    with pytest.raises(ValueError, match="is not writable"):
        _sweep(tmp_path / "a_file" / "below")
    assert compiled == [] and (tmp_path / "a_file").read_text() == "mine"


@pytest.mark.parametrize("content", ["", '{"config": {"cell"'])
def test_an_empty_or_truncated_record_names_the_file_and_the_way_out(tmp_path, content):
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(ValueError, match=r"sweep.json is not a readable sweep record .* "
                                         "checkpoints in .* are intact"):
        _sweep(tmp_path)
    with pytest.raises(ValueError, match="is not a readable sweep record"):
        gr.sweeps.load(tmp_path)


@pytest.mark.parametrize("edit, match", [
    (lambda r: {**r, "written": ["state/../../victim"]}, r"names \['state/../../victim'\]"),
    (lambda r: {**r, "written": ["/tmp/victim"]}, r"names \['/tmp/victim'\]"),
    (lambda r: {**r, "written": "params"}, "written list is 'params', not a list"),
    (lambda r: {**r, "evals_done": "2"}, "evals_done is '2', not a count"),
    (lambda r: {}, "evals_done is None"),
    (lambda r: [], "holds a JSON list, not an object"),
], ids=["escapes", "absolute", "not-a-list", "evals-text", "empty-object", "list"])
def test_a_record_the_sweep_did_not_write_is_refused_and_nothing_is_deleted(tmp_path, edit,
                                                                            match):
    import json
    out = tmp_path / "deep" / "sweep"
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "data.txt").write_text("mine")
    _sweep(out)
    (out / "sweep.json").write_text(json.dumps(edit(json.loads(
        (out / "sweep.json").read_text()))))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for again in (lambda: _sweep(out), lambda: gr.sweeps.load(out)):
        with pytest.raises(ValueError, match=r"sweep.json is not a readable sweep record: "
                                             ".*" + match + ".*nothing in the directory was "
                                             "deleted"):
            again()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("init", [
    lambda k: gr.lstm(H).init(k, I),
    lambda k: indrnn(H).init(k, I),  # a user's cell, through gr.make_cell
    lambda k: gr.stack([gr.lstm(H), gr.gru(H)]).init(k, I),
    lambda k: gr.bidirectional(gr.gru(H), gr.gru(H)).init(k, I),
    lambda k: gr.models.sequence_model(gr.lstm(H), 1).init(k, I),
], ids=["lstm", "user-cell", "stack", "bidirectional", "sequence-model"])
def test_an_int_or_missing_key_says_to_use_jax_random_key(init):
    for bad in (0, np.int64(3), None):
        with pytest.raises(TypeError, match=r"key must be a PRNG key from "
                                            r"jax.random.key\(seed\); got "):
            init(bad)
    assert jax.tree.leaves(init(jax.random.PRNGKey(0)))  # raw key data is a key too


def test_a_sweep_takes_numpy_ints_and_refuses_an_int_key(tmp_path):
    result = gr.sweep(_tiny_config(), seeds=np.int64(2), chunk_evals=np.int32(1),
                      progress=False)
    assert np.asarray(result.metrics["loss"]).shape[1] == 2
    with pytest.raises(TypeError, match=r"key must be a PRNG key from jax.random.key"):
        _sweep(tmp_path / "s", key=0)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("stop_in", ["_finish", "_save_params"])
def test_a_sweep_stopped_after_its_last_chunk_finishes_from_its_checkpoint(tmp_path,
                                                                          monkeypatch, stop_in):
    """Stopped after the record counts every chunk done (the last checkpoint written) but
    before params/ is: the rerun finishes from that checkpoint, equal to an unbroken run."""
    whole = _sweep(tmp_path / "whole")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(gr.sweeps, stop_in, stop)
        with pytest.raises(KeyboardInterrupt):
            _sweep(tmp_path / "cut")
    assert not (tmp_path / "cut" / "params").exists()
    assert gr.sweeps.load(tmp_path / "cut")["evals_done"] == 2
    finished = _sweep(tmp_path / "cut")
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(finished.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.metrics["loss"], finished.metrics["loss"])
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == \
        ["params", "summary.json", "sweep.json"]  # the checkpoint, no longer needed, is gone
    for a, b in zip(jax.tree.leaves(whole.params),
                    jax.tree.leaves(gr.sweeps.load_params(tmp_path / "cut", whole.params))):
        np.testing.assert_array_equal(a, b)


def test_damaged_or_missing_checkpoints_are_named_with_the_way_out(tmp_path, monkeypatch):
    import json
    config = dataclasses.replace(_tiny_config(), steps=4)
    remove_written = gr.sweeps._remove_written

    def stop_after(*args, **kwargs):  # stopped once the first chunk is on record
        remove_written(*args, **kwargs)
        raise KeyboardInterrupt

    for name in ("gone", "edited"):
        with monkeypatch.context() as patch:
            patch.setattr(gr.sweeps, "_remove_written", stop_after)
            with pytest.raises(KeyboardInterrupt):
                gr.sweep(config, out_dir=tmp_path / name, chunk_evals=2, progress=False)
    import shutil
    shutil.rmtree(tmp_path / "gone" / "state")
    record = json.loads((tmp_path / "edited" / "sweep.json").read_text())
    (tmp_path / "edited" / "sweep.json").write_text(json.dumps({**record, "evals_done": 1}))
    for name, missing in (("gone", "state/2"), ("edited", "state/1")):
        with pytest.raises(FileNotFoundError, match=rf"{missing} is missing: the sweep in .* "
                                                    "needs it as the checkpoint its record "
                                                    "says to resume from.*move the directory"):
            gr.sweep(config, out_dir=tmp_path / name, chunk_evals=2, progress=False)

    _sweep(tmp_path / "overwritten")
    for file in (tmp_path / "overwritten" / "params").rglob("*"):
        if file.is_file():
            file.write_text("overwritten")
    for load in (lambda: _sweep(tmp_path / "overwritten"),
                 lambda: gr.sweeps.load_params(tmp_path / "overwritten")):
        with pytest.raises(ValueError, match=r"params \(its trained params\) cannot be read: "
                                             ".*damaged or overwritten"):
            load()


def test_a_finished_sweep_whose_params_were_removed_says_so(tmp_path):
    import shutil
    _sweep(tmp_path)
    shutil.rmtree(tmp_path / "params")
    with pytest.raises(FileNotFoundError, match="finished, but its params .* are gone; its "
                                                "metrics are still in sweep.json"):
        _sweep(tmp_path)


LSTM_PARAMS = gr.lstm(H).init(jax.random.key(0), I)
GRU_PARAMS = gr.gru(H).init(jax.random.key(0), I)


@pytest.mark.parametrize("cell, params, match", [
    (gr.gru(H), LSTM_PARAMS, r"params\['b'\] has shape \(16,\), but gru.init\(key, "
                             r"input_size=3\) makes \(12,\)"),
    (gr.lstm(H), GRU_PARAMS, r"params\['b'\] has shape \(12,\), but lstm.init"),
    (gr.gru(H, reset_after=False), GRU_PARAMS, r"params hold \['b_hn'\], which gru.init"),
    (gr.gru(H), {k: v for k, v in GRU_PARAMS.items() if k != "b"},
     "params lack the entry 'b' that gru.init"),
    (gr.gru(H), {**GRU_PARAMS, "b": jnp.zeros(1)}, r"params\['b'\] has shape \(1,\)"),
    (indrnn(H), GRU_PARAMS, r"params\['b'\] has shape \(12,\), but indrnn.init"),
    (gr.stack([gr.gru(H), gr.gru(H)]), (GRU_PARAMS, GRU_PARAMS),
     r"params\['1.w_x'\] has shape \(3, 12\), but stack.init"),
])
@pytest.mark.parametrize("where", ["unroll", "diagnostics"])
def test_params_of_another_cell_or_size_are_refused_naming_the_entry(cell, params, match,
                                                                     where):
    xs = jnp.ones((2, 5, I))
    with pytest.raises(ValueError, match=match):
        if where == "unroll":
            gr.unroll(cell, params, xs)
        else:
            gr.diagnostics.gradient_norms(cell, params, xs, lambda ys: ys.sum())


def test_params_restored_from_a_checkpoint_as_lists_are_accepted(tmp_path):
    import orbax.checkpoint as ocp
    net = gr.stack([gr.lstm(H), gr.learned_initial_carry(gr.gru(3))])
    params = net.init(jax.random.key(0), I)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "p", params)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "p")
    assert isinstance(restored, list)
    xs = jnp.ones((2, 5, I))
    np.testing.assert_allclose(gr.unroll(net, restored, xs)[1], gr.unroll(net, params, xs)[1])


def _train_config(**changes):
    base = dict(cell=gr.gru(4), task=gr.tasks.adding(5), steps=10, batch_size=4,
                eval_every=5, eval_batch_size=8)
    return gr.train.Config(**{**base, **changes})


@pytest.mark.parametrize("changes, error, match", [
    (dict(learning_rate=-1e-3), ValueError, "config.learning_rate must be greater than 0"),
    (dict(learning_rate=float("nan")), ValueError, "config.learning_rate must be finite"),
    (dict(learning_rate="1e-3"), TypeError, "config.learning_rate must be a number; got str"),
    (dict(clip_norm=0.0), ValueError, "config.clip_norm must be greater than 0"),
    (dict(clip_norm=-1.0), ValueError, "config.clip_norm must be greater than 0"),
    (dict(clip_norm="1.0"), TypeError, "config.clip_norm must be a number"),
    (dict(weight_decay=-0.5), ValueError, "config.weight_decay must be at least 0"),
    (dict(cell="lstm"), TypeError, "config.cell must be a layer .* got str"),
    (dict(cell=gr.lstm), TypeError, "config.cell must be a layer .*a factory: call it"),
    (dict(dropout=np.float32(1.0)), ValueError, r"config.dropout must be in \[0, 1\)"),
    (dict(dropout=jnp.array(-0.5)), ValueError, r"config.dropout must be in \[0, 1\)"),
    (dict(task="adding"), TypeError, "config.task must be a gatedrnn.tasks.Task or have its "
                                     "fields; got str, which lacks name, sample"),
    (dict(options="parallel"), TypeError, "config.options must be a gr.ScanOptions or None; "
                                          "got str 'parallel'"),
])
def test_training_values_that_would_train_wrongly_are_refused_before_compiling(changes, error,
                                                                               match):
    with pytest.raises(error, match=match):
        gr.train.make_train(_train_config(**changes))


def test_training_options_a_cell_cannot_run_are_refused_when_traced_and_a_model_has_none():
    train = gr.train.make_train(_train_config(options=gr.ScanOptions(method="parallel")))
    with pytest.raises(ValueError, match="method='parallel' needs a cell with a whole-sequence "
                                         "form .* cell 'gru' has none"):
        jax.eval_shape(train, jax.random.key(0))
    model = gr.models.sequence_model(gr.gru(4), 1)
    with pytest.raises(ValueError, match="config.options configure the sequence model around "
                                         "config.cell; a config.model brings its own"):
        gr.train.make_train(_train_config(cell=None, model=model,
                                          options=gr.ScanOptions(method="associative")))


def test_a_negative_learning_rate_in_a_sweep_grid_is_refused():
    with pytest.raises(ValueError, match="config.learning_rate must be greater than 0"):
        gr.sweep(_train_config(), seeds=1, grid={"learning_rate": [1e-3, -1e-3]})


@pytest.mark.parametrize("make, error, match", [
    (lambda: gr.lstm(8, dtype="float33"), ValueError, "dtype must be a floating-point dtype"),
    (lambda: gr.lstm(8, dtype="bf16"), ValueError, "dtype must be a floating-point dtype"),
    (lambda: gr.lstm(8, dtype="int32"), ValueError, "dtype must be a floating-point dtype; "
                                                    "got int32"),
    (lambda: gr.gru(8, param_dtype=jnp.int8), ValueError, "param_dtype must be a floating"),
    (lambda: gr.lstm(8, forget_bias=float("nan")), ValueError, "forget_bias must be finite"),
    (lambda: gr.lstm(8, chrono_t_max=float("inf")), ValueError, "chrono_t_max must be finite"),
    (lambda: gr.gru(8, chrono_t_max=2.0), ValueError, "chrono_t_max must be greater than 2"),
    (lambda: gr.rnn(8, recurrent_scale="1"), TypeError, "recurrent_scale must be a number"),
    (lambda: gr.stack([gr.gru(3)], dropout=jnp.array(1.0)), ValueError, r"dropout must be in"),
    (lambda: gr.stack([gr.gru(3)], dropout=np.float32(-0.5)), ValueError, r"dropout must be"),
    (lambda: gr.recurrent_dropout(gr.gru(3), "0.1"), TypeError, r"rate must be a number"),
    (lambda: gr.lru(4, r_min=0.95, r_max=0.9), ValueError, "need 0 <= r_min < r_max < 1"),
    (lambda: gr.lstm(4, proj_size=0), ValueError, "proj_size must be a positive int"),
])
def test_bad_cell_options_are_refused_when_the_cell_is_made(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_numpy_integers_are_valid_sizes():
    cell = gr.lstm(np.int64(8))
    params = cell.init(jax.random.key(0), np.int64(3))
    assert params["w_x"].shape == (3, 32) and cell.hidden_size == 8
    result = gr.sweep(_train_config(), seeds=1, progress=False,
                      grid={"learning_rate": np.array([1e-3, 2e-3])})  # as a NumPy array
    assert result.metrics["loss"].shape == (2, 1, 2)


def test_diagnostics_report_nan_as_nan_never_as_a_zero_gradient():
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (2, 6, I))
    nan_loss = gr.diagnostics.gradient_norms(cell, params, xs, lambda ys: jnp.nan * ys.sum())
    assert np.isnan(nan_loss.log10).all()
    nan_input = gr.diagnostics.gradient_norms(cell, params, xs.at[0, 3, 0].set(jnp.nan),
                                              lambda ys: ys.sum())
    assert np.isnan(nan_input.log10[:5]).all()  # every step whose gradient meets the NaN
    assert not np.isneginf(nan_input.log10).any()


@pytest.mark.parametrize("loss_fn, got", [
    (lambda ys: ys.sum(1), r"float32\[2, 4\]|float64\[2, 4\]"),
    (lambda ys: (ys.sum(), 1), r"\("),
    (lambda ys: 1, "int"),
])
def test_a_loss_fn_that_is_not_a_float_scalar_is_refused(loss_fn, got):
    cell = gr.gru(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(TypeError, match=f"loss_fn must return a float scalar .* got .*{got}"):
        gr.diagnostics.gradient_norms(cell, params, jnp.ones((2, 6, I)), loss_fn)


def test_diagnostics_refuse_empty_sequences_and_inverted_thresholds():
    cell = gr.gru(H)
    params = cell.init(jax.random.key(0), I)
    for diagnostic in (gr.diagnostics.jacobian_norms, gr.diagnostics.lyapunov_exponents):
        with pytest.raises(ValueError, match="xs must have at least one time step"):
            diagnostic(cell, params, jnp.ones((2, 0, I)))
    with pytest.raises(ValueError, match="low must be below high; got low=0.9, high=0.1"):
        gr.diagnostics.gate_activations(cell, params, jnp.ones((2, 3, I)), low=0.9, high=0.1)


def test_a_gradient_whose_square_overflows_is_not_a_false_nonfinite_alarm():
    big = {"a": jnp.full((4,), 1e20, jnp.float32)}
    np.testing.assert_allclose(gr.diagnostics.tree_norm(big), 2e20, rtol=1e-6)
    assert np.isnan(gr.diagnostics.tree_norm({"a": jnp.array([1.0, jnp.nan])}))


def test_a_training_step_whose_gradient_norm_overflows_is_not_counted_as_nonfinite():
    # every gradient entry is finite, and its square overflows the params' dtype
    def loss_fn(params, model, batch, key):
        leaves = jax.tree.leaves(params["readout"])
        big = 10 * float(jnp.finfo(leaves[0].dtype).max) ** 0.5
        return big * sum(jnp.sum(leaf) for leaf in leaves), {}

    metrics = jax.jit(gr.train.make_train(_train_config(loss_fn=loss_fn)))(
        jax.random.key(0)).metrics
    np.testing.assert_array_equal(metrics["nonfinite_steps"], [0, 0])
    assert np.isposinf(metrics["grad_norm"]).all()


def test_skipped_steps_are_counted():
    result = jax.jit(gr.train.make_train(_train_config()))(jax.random.key(0))
    np.testing.assert_array_equal(result.metrics["nonfinite_steps"], [0, 0])
    poisoned = gr.train.make_train(_train_config(loss_fn=lambda p, m, b, k: (
        jnp.where(jax.random.uniform(k) < 0.5, jnp.nan, 0.0) + jnp.mean(
            (m.apply(p, b.xs, key=k, lengths=b.lengths) - b.targets) ** 2), {})))
    result = jax.jit(poisoned)(jax.random.key(0))
    counts = np.asarray(result.metrics["nonfinite_steps"])
    assert 0 < counts[-1] < 10 and counts[0] <= counts[-1]
    assert int(result.metrics["first_nonfinite_step"][-1]) >= 0


def test_task_arguments_and_data_that_would_give_nan_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 0.5\) \(as much again "
                                         r"is held out for validation\); got 0.6"):
        gr.tasks.char_lm(test_fraction=0.6)
    with pytest.raises(ValueError, match="split must be 'blocks' or 'tail'; got 'end'"):
        gr.tasks.char_lm(split="end")
    with pytest.raises(ValueError, match="block_size must be an int >= 52; got 40"):
        gr.tasks.char_lm(seq_len=50, block_size=40)
    with pytest.raises(ValueError, match="max_len must be an int >= 5; got 3"):
        gr.tasks.modular_sum(3, min_len=5)
    with pytest.raises(ValueError, match="modulus must be an int >= 2; got 1"):
        gr.tasks.modular_sum(10, modulus=1)
    with pytest.raises(ValueError, match="max_test_windows must be"):
        gr.tasks.char_lm(max_test_windows=0)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="weights.bin' is not UTF-8 text"):
        gr.tasks.char_lm(binary)
    with pytest.raises(ValueError, match="series values must be finite; got 1 NaN"):
        gr.tasks.series(np.r_[np.arange(400.0), np.nan])
    with pytest.raises(ValueError, match="is constant over its training part"):
        gr.tasks.series(np.ones(400))


def test_full_unrolling_of_a_long_sequence_is_refused_instead_of_compiling_for_minutes():
    cell = gr.gru(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="unroll=True copies the step 2000 times"):
        gr.unroll(cell, params, jnp.ones((1, 2000, I)), options=gr.ScanOptions(unroll=True))
    gr.unroll(cell, params, jnp.ones((1, 8, I)), options=gr.ScanOptions(unroll=True))  # short: fine


def test_interop_accepts_subclasses_and_low_precision_and_names_wrong_variables():
    torch = pytest.importorskip("torch")
    flax_nn = pytest.importorskip("flax.linen")

    class MyLSTM(torch.nn.LSTM):
        pass

    cell, params = gr.interop.from_torch(MyLSTM(I, H))
    assert cell.kind == "lstm"
    bf16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params)
    module = gr.interop.to_torch(cell, bf16)
    assert module.weight_ih_l0.dtype == torch.float32
    gru_vars = flax_nn.GRUCell(H).init(jax.random.key(0), jnp.ones((1, H)), jnp.ones((1, I)))
    with pytest.raises(ValueError, match=r"variables do not hold the params of a LSTMCell: "
                                         r"expected entries \['hf', 'hg'"):
        gr.interop.from_flax(flax_nn.LSTMCell(H), gru_vars)


def test_a_checked_run_raises_on_traced_values_the_library_cannot_see_under_jit():
    from jax.experimental.checkify import JaxRuntimeError
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jnp.ones((3, 6, I))
    run = gr.checks.checked(jax.jit(lambda p, x, n: gr.unroll(cell, p, x, lengths=n,
                                                              checks=True)))
    np.testing.assert_allclose(run(params, xs, jnp.array([1, 2, 6]))[1],
                               gr.unroll(cell, params, xs, lengths=jnp.array([1, 2, 6]))[1])
    with pytest.raises(JaxRuntimeError, match=r"lengths must lie in \[0, 6\]; got values "
                                              "from 1 to 9"):
        run(params, xs, jnp.array([1, 2, 9]))
    with pytest.raises(JaxRuntimeError, match="xs holds 1 non-finite values"):
        run(params, xs.at[0, 0, 0].set(jnp.nan), jnp.array([1, 2, 3]))
    with pytest.raises(JaxRuntimeError, match=r"params\['b'\] holds 1 non-finite values"):
        run({**params, "b": params["b"].at[0].set(jnp.inf)}, xs, jnp.array([1, 2, 3]))


def test_a_checked_training_run_stops_at_the_first_nan():
    from jax.experimental.checkify import JaxRuntimeError
    train = gr.checks.checked(jax.jit(gr.train.make_train(_train_config())))
    assert np.isfinite(train(jax.random.key(0)).metrics["loss"]).all()
    poisoned = _train_config(loss_fn=lambda p, m, b, k: (jnp.log(-jnp.mean(b.targets)), {}))
    with pytest.raises(JaxRuntimeError, match="nan generated by primitive: log"):
        gr.checks.checked(jax.jit(gr.train.make_train(poisoned)))(jax.random.key(0))


@pytest.mark.parametrize("kw, error, match", [
    (dict(reverse="yes"), TypeError, "reverse must be True or False; got str 'yes'"),
    (dict(time_major=1), TypeError, "time_major must be True or False"),
    (dict(hoist="yes"), TypeError,
     "hoist must be True, False or 'auto'; got str 'yes'"),
    (dict(unroll=0), ValueError, "unroll must be a positive int, True or 'auto'; got 0"),
    (dict(unroll="fast"), ValueError, "unroll must be a positive int, True or 'auto'; got 'fast'"),
    (dict(unroll=2.0), ValueError, "unroll must be a positive int, True or 'auto'; got 2.0"),
    (dict(remat=0), ValueError, r"remat must be True, False, a positive int \(steps between "
                                r"saved carries\) or 'auto'; got int 0"),
    (dict(remat="sqrt"), ValueError, "remat must be .* or 'auto'; got str 'sqrt'"),
    (dict(key=3), TypeError, r"key must be a PRNG key from jax.random.key\(seed\); got int"),
])
def test_unroll_options_of_the_wrong_kind_are_refused(kw, error, match):
    cell = gr.gru(H)
    with pytest.raises(error, match=match):
        gr.unroll(cell, cell.init(jax.random.key(0), I), jnp.ones((2, 5, I)), **scan_kw(**kw))


def test_composition_flags_and_sizes_of_the_wrong_kind_are_refused_and_int_batches_work():
    with pytest.raises(TypeError, match="residual must be True or False; got str"):
        gr.stack([gr.gru(H), gr.gru(H)], residual="no")
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size=4"):
        gr.lstm(4, proj_size=8)
    assert gr.lstm(H).initial_carry(3).h.shape == (3, H)
    with pytest.raises(ValueError, match="batch_shape must be a tuple of ints >= 0"):
        gr.gru(H).initial_carry((2, -1))


def test_make_train_users_get_the_same_warning_as_sweep_users():
    poisoned = gr.train.make_train(_train_config(loss_fn=lambda p, m, b, k: (
        jnp.where(jax.random.uniform(k) < 0.5, jnp.nan, 0.0) + jnp.mean(
            (m.apply(p, b.xs, key=k, lengths=b.lengths) - b.targets) ** 2), {})))
    result = jax.jit(jax.vmap(poisoned))(jax.random.split(jax.random.key(0), 2))
    with pytest.warns(RuntimeWarning, match=r"run \(\d,\) had a non-finite loss, gradient or "
                                            r"update first at step \d+; \d+ such steps"):
        runs = gr.train.warn_nonfinite(result)
    assert [index for index, _, _ in runs] == [(0,), (1,)]
    clean = jax.jit(gr.train.make_train(_train_config()))(jax.random.key(0))
    assert gr.train.warn_nonfinite(clean) == []


@pytest.mark.parametrize("cell", [gr.lstm(H), indrnn(H)], ids=["lstm", "user-cell"])
def test_the_diagnostics_name_a_bad_loss_fn_or_carry(cell):
    params = cell.init(jax.random.key(0), I)
    xs = jnp.ones((2, 5, I))
    norms = gr.diagnostics.gradient_norms
    with pytest.raises(TypeError, match="loss_fn must be a callable ys .* got NoneType"):
        norms(cell, params, xs, None)
    with pytest.raises(TypeError, match=r"loss_fn must take one argument, the outputs ys "
                                        r"\[B, T, H\]; got <lambda>\(ys, targets\)"):
        norms(cell, params, xs, lambda ys, targets: ys.sum())
    carry = cell.initial_carry((2,))
    wrong = jnp.zeros((2, H)) if isinstance(carry, tuple) else (carry, carry)
    for call in (lambda: norms(cell, params, xs, lambda ys: ys.sum(), carry=wrong),
                 lambda: gr.diagnostics.jacobian_norms(cell, params, xs, carry=wrong)):
        with pytest.raises(ValueError, match=r"carry must have the structure and shapes of "
                                             r"the cell's initial_carry\(\(2,\)\)"):
            call()
    # the right ones run
    assert norms(cell, params, xs, lambda ys, scale=2.0: scale * ys.sum(),
                 carry=carry).log10.shape == (5,)


def test_make_cell_shape_slips_name_the_function_and_both_shapes():
    def init(key, input_size):
        return {"w": jax.nn.initializers.lecun_normal()(key, (input_size, 8))}

    def core(params, h, u_t):
        h = jnp.tanh(u_t + h)
        return h, h

    def core_doubling(params, h, u_t):
        h = jnp.concatenate([h, h], axis=-1)
        return h, h

    project = lambda p, x: x @ p["w"]  # noqa: E731
    params, xs = init(jax.random.key(0), I), jnp.ones((2, 5, I))
    with pytest.raises(ValueError, match=r"core of cell 'custom' returned a carry of shapes "
                                         r"\[2, 16\] for a carry \[2, 8\] \(hidden_size 8\)"):
        gr.unroll(gr.make_cell(init, core_doubling, hidden_size=8, project=project), params, xs)
    with pytest.raises(TypeError, match=r"core of cell 'custom' \(hidden_size 6\) failed on a "
                                        r"carry \[2, 6\] and u_t \[2, 8\]: .*Check hidden_size"):
        gr.unroll(gr.make_cell(init, core, hidden_size=6, project=project), params, xs)
    with pytest.raises(TypeError, match=r"init must be init\(key, input_size\); got "
                                        r"core\(params, h, u_t\); init and core may be swapped"):
        gr.make_cell(core, init, hidden_size=8, project=project)
    with pytest.raises(TypeError, match=r"core must be core\(params, carry, u_t\); got "
                                        r"<lambda>\(params, h\)$"):
        gr.make_cell(init, lambda params, h: (h, h), hidden_size=8)
    # JAX's own errors from inside core pass unchanged
    with pytest.raises(jax.errors.TracerBoolConversionError):
        gr.unroll(gr.make_cell(init, lambda p, h, u: (h, h) if u.sum() > 0 else (h, h),
                               hidden_size=8, project=project), params, xs)


def test_numpy_and_jax_scalars_and_arrays_are_grid_values(tmp_path):
    lists = gr.sweep(_tiny_config(), progress=False, grid={"learning_rate": [1e-3, 1e-2]})
    for grid in ([jnp.asarray(1e-3), np.float32(1e-2)], jnp.asarray([1e-3, 1e-2]),
                 np.asarray([1e-3, 1e-2])):
        result = gr.sweep(_tiny_config(), progress=False, grid={"learning_rate": grid})
        np.testing.assert_array_equal(result.metrics["loss"], lists.metrics["loss"])
    with pytest.raises(ValueError, match="grid axis 'learning_rate' must be a non-empty list"):
        gr.sweep(_tiny_config(), progress=False, grid={"learning_rate": np.float32(1e-3)})


def test_a_last_step_readout_of_no_steps_is_refused():
    model = gr.models.sequence_model(gr.lstm(H), 2)
    params = model.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="xs has no time steps .* readout 'last' needs at "
                                         "least one step"):
        model.apply(params, jnp.ones((2, 0, I)))
    every = gr.models.sequence_model(gr.lstm(H), 2, readout="all")
    assert every.apply(params, jnp.ones((2, 0, I))).shape == (2, 0, 2)


def _declared_linear(core):
    def init(key, input_size):
        return {"w": jax.random.normal(key, (input_size, H)),
                "A": 0.3 * jax.random.normal(jax.random.fold_in(key, 1), (H, H))}

    return gr.make_cell(init, core, hidden_size=H, project=lambda p, x: x @ p["w"],
                        linear=True), init(jax.random.key(0), I)


def _dense(params, h, u_t):
    h = h @ params["A"] + u_t
    return h, h


def _nonlinear(params, h, u_t):
    h = jnp.tanh(0.5 * h + u_t)
    return h, h


def _other_readout(params, h, u_t):
    h = 0.5 * h + u_t
    return h, jnp.tanh(h)


@pytest.mark.parametrize("core, match", [
    (_dense, "its new carry is not a \\* carry \\+ b elementwise.*a dense h @ A is not one"),
    (_nonlinear, "its new carry is not a \\* carry \\+ b elementwise"),
    (_other_readout, "core's h_t .* is not output\\(carry\\)"),
], ids=["dense", "nonlinear", "readout"])
def test_a_false_linear_declaration_is_refused_not_computed_wrongly(core, match):
    cell, params = _declared_linear(core)
    xs = jax.random.normal(jax.random.key(1), (2, 6, I))
    for run in (lambda: gr.unroll(cell, params, xs, options=gr.ScanOptions(method="associative")),
                lambda: jax.jit(lambda p: gr.unroll(cell, p, xs,
                                                    options=gr.ScanOptions(method="associative")))(params)):
        with pytest.raises(ValueError, match=match):
            run()
    gr.unroll(cell, params, xs)  # the sequential path runs it as written


def test_a_true_linear_declaration_runs_both_ways_alike():
    def core(params, h, u_t):  # a diagonal recurrence with input-dependent decay
        h = jax.nn.sigmoid(u_t) * h + u_t
        return h, h

    cell, params = _declared_linear(core)
    xs = jax.random.normal(jax.random.key(1), (2, 6, I))
    np.testing.assert_allclose(gr.unroll(cell, params, xs,
                                         options=gr.ScanOptions(method="associative"))[1],
                               gr.unroll(cell, params, xs)[1], atol=1e-5)


def test_models_and_diagnostics_take_numpy_integers():
    model = gr.models.sequence_model(gr.lstm(H), np.int64(2), embed=np.int32(3))
    xs = jnp.ones((2, 5, I))
    assert model.apply(model.init(jax.random.key(0), I), xs).shape == (2, 2)
    net = gr.stack([gr.lstm(H), gr.gru(H)])
    params = net.init(jax.random.key(0), I)
    np.testing.assert_array_equal(
        gr.diagnostics.gradient_norms(net, params, xs, jnp.sum, layer=np.int64(1)).log10,
        gr.diagnostics.gradient_norms(net, params, xs, jnp.sum, layer=1).log10)
    with pytest.raises(ValueError, match="output_size must be a positive int; got True"):
        gr.models.sequence_model(gr.lstm(H), True)


def test_tasks_take_numpy_integer_sizes():
    for make, size in ((gr.tasks.adding, np.int64(5)), (gr.tasks.copy, np.int32(5)),
                       (gr.tasks.counting, np.int64(4)), (gr.tasks.parity, np.int64(6))):
        plain = make(int(size)).sample(jax.random.key(0), 3)
        numpy = make(size).sample(jax.random.key(0), 3)
        jax.tree.map(np.testing.assert_array_equal, numpy, plain)


def test_a_grid_as_keywords_is_deprecated_and_a_grid_axis_may_be_named_like_an_option():
    config = _tiny_config()
    with pytest.warns(DeprecationWarning, match=r"pass grid=\{'learning_rate': \.\.\.\}"):
        old = gr.sweep(config, progress=False, learning_rate=[1e-3, 1e-2])
    new = gr.sweep(config, progress=False, grid={"learning_rate": [1e-3, 1e-2]})
    np.testing.assert_array_equal(old.metrics["loss"], new.metrics["loss"])
    with pytest.raises(TypeError, match="either as grid="):
        gr.sweep(config, progress=False, grid={}, learning_rate=[1e-3])
    with pytest.raises(TypeError, match="grid must be a dict"):
        gr.sweep(config, progress=False, grid=[1e-3])
    # an axis called like one of sweep's own options is an axis, refused as an unknown one
    with pytest.raises(ValueError, match="'seeds'"):
        gr.sweep(config, progress=False, grid={"seeds": [1.0]})
