"""The study's protocol (experiments/common.py): the rate chosen on validation, the
convergence flag, the verdict rule, and a tuning run checked against independent
evaluations of its trained params."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gatedrnn as gr

sys.path.insert(0, str(Path(__file__).parents[1]))

from experiments import common  # noqa: E402

LOSS = common.Objective("loss", log=True, tolerance=0.05)
ACCURACY = common.Objective("accuracy", maximize=True, log=False, tolerance=0.01)


def fake_tuned(label="LSTM", *, tuned=True, edge=False, converged=True) -> common.Tuned:
    return common.Tuned(label, np.array([1e-3, 3e-3, 1e-2, 3e-2]), 1, 3e-3,
                        np.ones((4, 5)), np.ones((5, 10)), np.arange(1, 11), {}, converged,
                        0.0, tuned, edge, LOSS, None, 1)


def test_the_rate_is_chosen_by_the_mean_validation_score_and_a_diverged_seed_loses():
    validation = np.array([[0.1, 0.1, 0.1],     # geometric mean 0.1
                           [0.01, 0.01, 0.5],   # 0.037: best in decades, though not in mean
                           [0.001, np.nan, 0.001],  # best values, but one seed diverged
                           [0.2, 0.2, 0.2]])
    assert common.select_rate(validation, LOSS) == 1
    arithmetic = dataclasses.replace(LOSS, log=False)
    assert common.select_rate(validation, arithmetic) == 0  # mean 0.1 < 0.173
    accuracy = np.array([[0.5, 0.6], [0.9, 0.95], [0.9, 0.95]])
    assert common.select_rate(accuracy, ACCURACY) == 1  # a tie goes to the smaller rate


def test_convergence_reads_the_last_fifth_of_the_median_curve():
    flat = np.tile(np.r_[np.geomspace(0.2, 0.01, 8), 0.0099, 0.0098], (5, 1))
    ok, gain = common.convergence(flat, LOSS)
    assert ok and gain == pytest.approx(np.log10(0.01 / 0.0098), rel=1e-6)
    falling = np.tile(np.geomspace(0.2, 0.001, 10), (5, 1))  # still 0.46 decade in 2 evals
    ok, gain = common.convergence(falling, LOSS)
    assert not ok and gain == pytest.approx(2 * np.log10(0.2 / 0.001) / 9, rel=1e-6)
    # the median over seeds: one seed still improving does not make the cell unconverged
    mixed = np.vstack([flat[:4], falling[:1]])
    assert common.convergence(mixed, LOSS)[0]
    # a plateau that was left late is not converged; too few evaluations never are
    late = np.tile(np.r_[[0.5] * 8, 0.5, 0.9], (3, 1))
    assert not common.convergence(late, ACCURACY)[0]
    assert not common.convergence(np.ones((3, 1)), ACCURACY)[0]
    assert not common.convergence(np.full((3, 10), np.nan), LOSS)[0]


def test_a_grid_tunes_with_four_rates_over_tenfold_and_an_edge_needs_a_margin():
    assert common.grid_tunes([1e-3, 3e-3, 1e-2, 3e-2])
    assert not common.grid_tunes([1e-3, 3e-3, 1e-2])
    assert not common.grid_tunes([1e-3, 1.5e-3, 2e-3, 2.9e-3])
    rising = np.array([[0.1] * 3, [0.01] * 3, [0.001] * 3])
    assert common.at_edge(rising, 2, LOSS)
    flat = np.full((3, 3), 0.17)  # a cell that fails at every rate
    assert not common.at_edge(flat, 0, LOSS)
    assert not common.at_edge(rising, 1, LOSS)


def test_a_cell_with_its_own_budget_gets_its_steps_and_rates_and_the_others_the_runs():
    settings = {"steps": 100, "learning_rates": [1e-3, 1e-2],
                "budgets": {"rnn": {"steps": 500, "learning_rates": [1e-2, 1e-1]},
                            "gru": {"steps": 300}}}
    assert common.budget(settings, "rnn") == {"steps": 500, "learning_rates": [1e-2, 1e-1]}
    assert common.budget(settings, "gru") == {"steps": 300, "learning_rates": [1e-3, 1e-2]}
    assert common.budget(settings, "lstm") == {"steps": 100, "learning_rates": [1e-3, 1e-2]}
    assert common.budget({**settings, "budgets": {}}, "rnn")["steps"] == 100
    note = common.budgets_note(settings, ["rnn", "lstm"])  # the GRU is not in this run
    assert note == "; given their own budget: tanh RNN 500 steps, rates [0.01, 0.1]"
    assert common.budgets_note(settings, ["lstm"]) == ""


def test_a_budget_for_one_task_applies_there_only_and_wins_over_the_cells_own():
    settings = {"steps": 100, "learning_rates": [1e-3, 1e-2],
                "budgets": {"rnn": {"steps": 500}, "mod5/rnn": {"steps": 4000},
                            "mod5/lstm": {"learning_rates": [1e-4, 1e-3]}}}
    assert common.budget(settings, "rnn", "mod5") == {"steps": 4000,
                                                      "learning_rates": [1e-3, 1e-2]}
    assert common.budget(settings, "rnn", "parity")["steps"] == 500
    assert common.budget(settings, "rnn")["steps"] == 500
    assert common.budget(settings, "lstm", "mod5") == {"steps": 100,
                                                       "learning_rates": [1e-4, 1e-3]}
    assert common.budget(settings, "lstm", "parity") == {"steps": 100,
                                                         "learning_rates": [1e-3, 1e-2]}
    assert common.budgets_note(settings, ["rnn"]) == (
        "; given their own budget: tanh RNN 500 steps, rates [0.001, 0.01]; "
        "tanh RNN on mod5 4000 steps, rates [0.001, 0.01]")


@pytest.mark.parametrize("budgets", [
    {"lsmt": {"steps": 5}}, {"rnn": {"step": 5}}, {"mod7/rnn": {"steps": 5}},
    {"mod5/lsmt": {"steps": 5}}, {"rnn": 5000}, {"rnn": {"steps": 0}},
    {"rnn": {"steps": 2.5}}, {"rnn": {"learning_rates": []}},
    {"rnn": {"learning_rates": 1e-3}}, {"rnn": {"learning_rates": [1e-3, -1e-2]}}])
def test_a_budget_for_an_unknown_cell_task_or_setting_is_refused_before_anything_is_written(
        tmp_path, budgets):
    sizes = {"quick": {}, "paper": {},
             "cpu": {"seeds": 2, "steps": 1, "learning_rates": [1e-3], "budgets": budgets}}
    with pytest.raises(ValueError, match="budgets: .* a budget names one of"):
        common.start("x", "doc", sizes, ["--quick", "--out-dir", str(tmp_path / "out")],
                     tasks=("parity", "mod5"))
    assert not (tmp_path / "out").exists()


def test_a_budget_for_a_known_task_and_cell_is_accepted(tmp_path):
    budgets = {"rnn": {"steps": 5}, "mod5/rnn": {"steps": 7, "learning_rates": [1e-2]}}
    sizes = {"quick": {}, "paper": {},
             "cpu": {"seeds": 2, "steps": 1, "learning_rates": [1e-3], "budgets": budgets}}
    run = common.start("x", "doc", sizes, ["--quick", "--out-dir", str(tmp_path / "out")],
                       tasks=("parity", "mod5"))
    assert common.budget(run.settings, "rnn", "mod5")["steps"] == 7


def test_a_comparison_with_an_unconverged_untuned_or_edge_cell_can_never_differ():
    for tuned, edge, converged, seeds in itertools.product([True, False], [True, False],
                                                           [True, False], [3, 5, 10]):
        cells = [fake_tuned("GRU"), fake_tuned("LSTM", tuned=tuned, edge=edge,
                                               converged=converged)]
        verdict, why = common.protocol_verdict("differs", cells, seeds)
        sound = tuned and not edge and converged and seeds >= 5
        assert verdict == ("differs" if sound else "inconclusive")
        if not sound:
            assert why.startswith("would differ, but")
        if not converged:
            assert "not converged at this budget: LSTM" in why
    # the other verdicts stand; a claim that a cell fails guards its "agrees" instead
    assert common.protocol_verdict("agrees", [fake_tuned(converged=False)], 5) == ("agrees", "")
    verdict, why = common.protocol_verdict("agrees", [fake_tuned(converged=False)], 5,
                                           negative=True)
    assert verdict == "inconclusive" and why.startswith("would agree, but not converged")
    assert common.protocol_verdict("differs", [fake_tuned(converged=False)], 5,
                                   negative=True) == ("differs", "")
    # outside the protocol (one rate) nothing guarded stands; without training all do
    assert common.protocol_verdict("differs", None, 10)[0] == "inconclusive"
    assert common.protocol_verdict("differs", (), 10) == ("differs", "")


def test_a_row_recorded_before_the_protocol_cannot_differ():
    old = {"verdict": "differs", "note": "Adam lr 0.001", "claim": "c"}
    settled = common.settle(old)
    assert settled["verdict"] == "inconclusive" and settled["protocol"] == "not applied"
    assert settled["note"].startswith("Adam lr 0.001; would differ, but at one learning rate")
    assert common.settle({**old, "verdict": "agrees"})["verdict"] == "agrees"
    rates, converged = common._protocol_cells(settled)
    assert rates == "one rate, not tuned" and converged == "not checked"


def _run(tmp_path, **settings) -> common.Run:
    base = dict(seeds=2, seed=3, learning_rates=[3e-3, 3e-2])
    return common.Run("protocol_test", {**base, **settings}, tmp_path, "quick")


def test_tune_picks_the_rate_on_validation_and_tests_once_on_a_batch_no_run_drew(tmp_path):
    run = _run(tmp_path)
    task = gr.tasks.adding(8)
    config = gr.train.Config(cell=gr.gru(4), task=task, steps=6, batch_size=8,
                             eval_batch_size=16)
    tuned = run.tune("T=8", "gru", config, LOSS)
    result = tuned.result
    final = np.asarray(result.metrics["loss"])[:, :, -1]
    assert tuned.index == int(np.argmin(np.log10(final).mean(axis=1)))
    assert tuned.rate == run.settings["learning_rates"][tuned.index]
    np.testing.assert_array_equal(tuned.validation, final)
    # the test batch: drawn from the seed folded with TEST_SALT, evaluated with the params
    # trained at the chosen rate, independently of the protocol's code
    xs, ys = task.sample(jax.random.fold_in(jax.random.key(3), common.TEST_SALT), 16)
    model = gr.models.sequence_model(gr.gru(4), 1)
    for s in range(2):
        params = jax.tree.map(lambda v: v[tuned.index, s], result.params)
        mse = float(jnp.mean((model.apply(params, xs) - ys) ** 2))
        assert tuned.test["loss"][s] == pytest.approx(mse, rel=1e-5)
        assert tuned.test["loss"][s] != pytest.approx(final[tuned.index, s], rel=1e-3)
    assert run.tuning == {"T=8": {"GRU": tuned}}


def test_tune_validates_a_data_task_on_its_validation_set_and_refuses_one_without(tmp_path):
    text = "".join(chr(97 + (i * 7) % 13) for i in range(6000))
    path = tmp_path / "text.txt"
    path.write_text(text)
    task = gr.tasks.char_lm(path, seq_len=8, block_size=200, max_test_windows=20)
    run = _run(tmp_path / "out")
    config = gr.train.Config(cell=gr.rnn(4), task=task, steps=4, batch_size=4)
    tuned = run.tune("char", "rnn", config, common.Objective("bits_per_char", log=False))
    model = gr.models.sequence_model(gr.rnn(4), task.output_size, readout="all")
    params = jax.tree.map(lambda v: v[tuned.index, 0], tuned.result.params)
    on = {name: float(task.metrics(model.apply(params, data[0]), data[1])["bits_per_char"])
          for name, data in (("validation", task.validation), ("test", task.test))}
    assert tuned.validation[tuned.index, 0] == pytest.approx(on["validation"], rel=1e-5)
    assert tuned.test["bits_per_char"][0] == pytest.approx(on["test"], rel=1e-5)
    with pytest.raises(ValueError, match="has a test set but no validation set"):
        run.tune("char", "rnn", dataclasses.replace(
            config, task=task._replace(validation=None)))


def test_claim_rows_carry_the_rates_convergence_and_scale_and_the_report_counts_them(
        tmp_path):
    from experiments import report

    (tmp_path / "protocol_test").mkdir()
    run = _run(tmp_path / "protocol_test")
    run.scale = "cpu"
    run.settings["seeds"] = 5
    lstm, gru = fake_tuned("LSTM", converged=False), fake_tuned("GRU")
    run.claim("a", source="s", claim="the LSTM solves it", measure="m", value="v1",
              verdict="differs", note="n", cells=[lstm, gru])
    run.claim("b", source="s", claim="one layer", measure="m", value="v2", verdict="differs",
              note="n", cells=[gru], setting="one layer where the paper stacks")
    run.claim("c", source="s", claim="params", measure="m", value="v3", verdict="agrees",
              note="n", cells=())
    # a claim about the rate itself, over the whole grid: its verdict stands, the row names
    # the grid
    run.claim("d", source="s", claim="the rate matters most", measure="m", value="v4",
              verdict="differs", note="n", cells=(), swept="1e-4 to 1e-2 (3 rates)")
    first, second, third, fourth = run.claims
    assert first["verdict"] == "inconclusive" and first["rates"] == {"LSTM": 3e-3,
                                                                     "GRU": 3e-3}
    assert first["converged"] == {"LSTM": False, "GRU": True}
    assert "not converged at this budget: LSTM" in first["note"]
    assert second["verdict"] == "differs" and not second["paper_setting"]
    assert third["protocol"] == "no training"
    rows = common.claims_table(run.claims)
    assert "| LSTM 0.003, GRU 0.003 | LSTM no, GRU yes | cpu, cpu |" in rows[2]
    assert "| no training | n/a |" in rows[4]
    assert fourth["verdict"] == "differs" and fourth["protocol"] == "swept"
    assert "| **differs** | swept: 1e-4 to 1e-2 (3 rates) | n/a |" in rows[5]
    run.finish("t", [])
    text = report.build(tmp_path, tmp_path / "docs" / "results.md",
                        experiments=("protocol_test",))
    assert ("4 claims: 1 agree, 2 differ, 1 inconclusive; 3 tested in the paper's setting "
            "(1 agree, 1 differ, 1 inconclusive); 0 recorded at one learning rate, before "
            "the protocol.") in text

    # a later run that makes fewer rows (a partial rerun) replaces the record, and says so
    results = tmp_path / "protocol_test" / "results.json"
    payload = json.loads(results.read_text())
    results.write_text(json.dumps({**payload, "claims": payload["claims"][:2]}))
    with pytest.warns(UserWarning, match=r"protocol_test: its last run made no row \['c', 'd'\]"):
        text = report.build(tmp_path, tmp_path / "docs" / "results.md",
                            experiments=("protocol_test",))
    assert text.count("| **differs** |") == 1 and "2 claims" in text


def test_the_tuning_table_and_figure_put_each_cell_on_its_own_grid(tmp_path):
    run = _run(tmp_path)
    gated = fake_tuned("LSTM")._replace(validation=np.full((4, 5), 0.01),
                                        test={"loss": np.full(5, 0.01)})
    small = common.Tuned("tanh RNN", np.array([1e-4, 3e-4, 1e-3]), 0, 1e-4,
                         np.array([[0.1] * 5, [0.2] * 5, [np.inf] * 5]), np.ones((5, 10)),
                         np.arange(1, 11), {"loss": np.full(5, 0.1)}, True, 0.0, False,
                         False, LOSS, None, 0)
    run.tuning["adding"] = {"LSTM": gated, "tanh RNN": small}
    lines = common.tuning_section(run)
    assert lines[6].startswith("| cell | 0.0001 | 0.0003 | 0.001 | 0.003 | 0.01 | 0.03 | chosen |")
    assert lines[8].startswith("| LSTM | - | - | 0.01 | **0.01** | 0.01 | 0.01 | 0.003 |")
    assert lines[9].startswith("| tanh RNN | **0.1** | 0.2 | non-finite | - | - | - | 0.0001, "
                               "grid too narrow |")
    assert (tmp_path / "tuning.png").stat().st_size > 0
