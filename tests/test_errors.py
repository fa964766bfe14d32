"""Bad input and faults: a clear error naming the argument, never a silent wrong result and
never a deleted or overwritten file of the user's (issue classes of the reliability work)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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
