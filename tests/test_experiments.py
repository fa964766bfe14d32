"""The study's scripts end to end at ``--quick`` size, the claims report built from them,
and the shared statistics checked against known values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from experiments import common, report, sensitivity  # noqa: E402

EXPERIMENTS = report.EXPERIMENTS


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Every experiment run once at ``--quick`` into one results folder."""
    import importlib

    root = tmp_path_factory.mktemp("results")
    for name in EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        module.main(["--quick", "--out-dir", str(root / name)])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_writes_its_files_and_a_report_that_matches_them(quick_results, name):
    out = quick_results / name
    for file in ("config.json", "results.json", "report.md"):
        assert (out / file).stat().st_size > 0
    assert list(out.glob("*.png")), "no figure"
    payload = json.loads((out / "results.json").read_text())
    assert payload["settings"]["seeds"] >= 2 and payload["scale"] == "quick"
    text = (out / "report.md").read_text()
    for claim in payload["claims"]:
        assert claim["verdict"] in ("agrees", "differs", "inconclusive")
        assert claim["value"] in text.replace("\\|", "|")
    for png in out.glob("*.png"):
        assert png.name in text or any(png.name == c["figure"] for c in payload["claims"]) \
            or name == "cost", f"{png.name} is not shown in the report"


@pytest.mark.slow
def test_a_cell_given_its_own_budget_is_tuned_and_trained_with_it(quick_results):
    from experiments import state_tracking

    payload = json.loads((quick_results / "state_tracking" / "results.json").read_text())
    common_budget, tuning = payload["settings"], payload["tuning"]["parity"]
    own = state_tracking.SIZES["quick"]["budgets"]["min_gru_neg"]
    assert own["steps"] != common_budget["steps"]
    for label, budget in (("minGRU (-1, 1)", own), ("minGRU", common_budget)):
        assert tuning[label]["rates"] == budget["learning_rates"], label
        assert tuning[label]["steps"][-1] == budget["steps"], label
    text = (quick_results / "state_tracking" / "report.md").read_text()
    assert f"given their own budget: minGRU (-1, 1) {own['steps']} steps" in text


@pytest.mark.slow
def test_the_claims_report_lists_every_claim_with_its_numbers(quick_results, tmp_path):
    out = tmp_path / "docs" / "results.md"
    text = report.main(["--results-dir", str(quick_results), "--out", str(out)])
    assert out.read_text() == text
    total = 0
    for name in EXPERIMENTS:
        payload = json.loads((quick_results / name / "results.json").read_text())
        for claim in payload["claims"]:
            row = [line for line in text.splitlines() if claim["value"].replace("|", "\\|")
                   in line and claim["claim"] in line]
            assert row and f"**{claim['verdict']}**" in row[0]
            total += 1
        assert f"## {name}" in text
    assert f"{total} claims" in text
    assert (out.parent / "figures" / "gradient_flow" / "gradient_norms.png").is_file()

    # results/ is not kept: the report rebuilt from its records alone says the same, and
    # one experiment rerun changes only its own rows
    table = lambda t: [line for line in t.splitlines() if line.startswith("| [")]  # noqa: E731
    assert table(report.build(tmp_path / "none", out)) == table(text)
    only = tmp_path / "one"
    (only / "cost").mkdir(parents=True)
    payload = json.loads((quick_results / "cost" / "results.json").read_text())
    payload["claims"] = payload["claims"][:1]
    (only / "cost" / "results.json").write_text(json.dumps(payload))
    with pytest.warns(UserWarning, match="cost: its last run made no row"):
        rebuilt = report.build(only, out)  # a partial run replaces the record, not silently
    assert [r for r in table(rebuilt) if "[cost]" not in r] == \
        [r for r in table(text) if "[cost]" not in r]
    assert len([r for r in table(rebuilt) if "[cost]" in r]) == 1
    assert "recorded in `claims/gradient_flow.json`" in rebuilt


@pytest.mark.slow
def test_a_finished_experiment_loads_its_sweeps_instead_of_training_again(quick_results,
                                                                          capsys):
    from experiments import adding_problem

    before = json.loads((quick_results / "adding_problem" / "results.json").read_text())
    adding_problem.main(["--quick", "--out-dir", str(quick_results / "adding_problem")])
    after = json.loads((quick_results / "adding_problem" / "results.json").read_text())
    assert after["results"] == before["results"]
    assert after["minutes"] == before["minutes"]  # the running time of the run that trained
    printed = capsys.readouterr()
    assert "step/s" not in printed.err  # no training progress bar
    s = before["settings"]
    assert printed.out.count("finished earlier: loading") == len(s["seq_lens"]) * len(s["cells"])


def test_report_without_results_names_the_commands(tmp_path):
    text = report.build(tmp_path / "none", tmp_path / "results.md")
    assert "0 claims" in text and "`python experiments/gradient_flow.py`" in text


def test_t_interval_matches_the_t_table():
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    iv = common.interval(v)
    half = 2.776445 * v.std(ddof=1) / np.sqrt(5)
    assert iv["mean"] == 3.0 and iv["low"] == pytest.approx(3 - half, rel=1e-5)
    bad = common.interval([1.0, np.nan, 2.0])
    assert np.isnan(bad["mean"]) and bad["nonfinite"] == 1
    assert common.fmt(bad).startswith("non-finite (1 of 3")


def test_wilson_interval_at_the_edges():
    none = common.rate_interval([False] * 5)
    assert none["mean"] == 0 and none["low"] == 0
    assert none["high"] == pytest.approx(0.4345, abs=1e-3)  # 1.96^2 / (5 + 1.96^2)
    some = common.rate_interval([True, False, True, True])
    assert some["k"] == 3 and some["low"] < 0.75 < some["high"]
    # Wilson's interval by its formula, z = 1.959964
    z, k, n = 1.959964, 3, 4
    centre, half = (k + z * z / 2) / (n + z * z), z * np.sqrt(k * (n - k) / n + z * z / 4) / (
        n + z * z)
    assert (some["low"], some["high"]) == pytest.approx((centre - half, centre + half), abs=1e-5)


def test_the_json_writer_keeps_non_finite_values_as_numbers(tmp_path):
    import json
    path = tmp_path / "x.json"
    common.write_json(path, {"loss": np.array([1.0, np.nan, np.inf]), 3: (np.int64(2),)})
    back = json.loads(path.read_text())
    assert back["3"] == [2] and np.isnan(back["loss"][1]) and back["loss"][2] == np.inf
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is gone


def test_verdicts_follow_where_the_interval_lies():
    iv = {"mean": 0.5, "low": 0.4, "high": 0.6}
    assert common.verdict_below(iv, 1.0, expected=True) == "agrees"
    assert common.verdict_below(iv, 1.0, expected=False) == "differs"
    assert common.verdict_below(iv, 0.5, expected=True) == "inconclusive"
    assert common.verdict_above(iv, 0.0) == "agrees"
    assert common.verdict_above({"mean": float("nan"), "low": 0, "high": 0}, 0) == \
        "inconclusive"


def test_variance_shares_of_additive_and_interacting_tables():
    a, b, c = np.meshgrid([0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.5], indexing="ij")
    shares = sensitivity.variance_shares(a + b + c)
    assert sum(shares.values()) == pytest.approx(1.0)
    for key in ("0x1", "0x2", "1x2", "rest"):
        assert shares[key] == pytest.approx(0.0, abs=1e-12)
    # var(a) = 1, var(b) = 2/3, var(c) = 1/16
    total = 1 + 2 / 3 + 1 / 16
    assert shares["0"] == pytest.approx(1 / total) and shares["2"] == pytest.approx(
        1 / 16 / total)
    x, y = np.meshgrid([-1.0, 1.0], [-1.0, 1.0], indexing="ij")
    pure = sensitivity.variance_shares(x * y)
    assert pure["0x1"] == pytest.approx(1.0) and pure["0"] == pytest.approx(0.0)


def test_unroll_flops_counts_every_step():
    import jax

    import gatedrnn as gr
    from benchmarks import timing

    B, T, I, H = 4, 10, 64, 64  # big enough for the matmuls to dominate
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    forward = timing.unroll_flops(cell, params, B, T, I, backward=False)
    matmuls = 2 * B * T * (I + H) * 4 * H  # x @ w_x and h @ w_h at every step
    assert matmuls <= forward <= 1.2 * matmuls  # plus the gates' elementwise work
    both = timing.unroll_flops(cell, params, B, T, I)
    assert 2.5 * matmuls <= both <= 3.6 * matmuls  # the backward pass: two more matmuls each
    # a user's cell that does not know its input size: minGRU, two [I, H] matmuls a step
    from user_cells import min_gru_in_six_lines

    mine = min_gru_in_six_lines(H)
    count = timing.unroll_flops(mine, mine.init(jax.random.key(0), I), B, T, I, backward=False)
    assert 2 * B * T * I * 2 * H <= count <= 1.2 * 2 * B * T * I * 2 * H


def test_plots_against_draws_the_median_over_seeds_on_a_log_scale():
    import gatedrnn as gr

    runs = np.array([[1e-1, 1e-2, 1e-3], [1e-1, 1e-4, 1e-3], [1e-3, 1e-2, 1e-1]])  # [S, K]
    fig = gr.plots.against([10, 20, 40], {"LSTM": runs}, xlabel="T", ylabel="MSE", log_x=True,
                           baselines={"chance": 0.5})
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), np.log10(np.median(runs, axis=0)))
    np.testing.assert_allclose(line.get_xdata(), [10, 20, 40])
    assert line.get_color() == "tab:blue"  # the LSTM's colour in every figure
    assert fig.axes[0].get_lines()[1].get_ydata()[0] == pytest.approx(np.log10(0.5))


def test_bad_flags_are_refused_before_anything_is_written(tmp_path):
    from experiments import adding_problem, descendants, gradient_flow, init_ablation

    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"--cells: unknown \['lsmt'\]; choose from"):
        adding_problem.main(["--quick", "--cells", "lsmt", "--out-dir", str(out)])
    for module, known in ((init_ablation, "'adding', 'copy'"), (descendants, "'parity', 'mod5'")):
        with pytest.raises(SystemExit,
                           match=rf"--tasks: unknown \['nope'\]; choose from \[{known}\]"):
            module.main(["--quick", "--tasks", "nope", "--out-dir", str(out)])
    with pytest.raises(SystemExit, match="--seeds must be at least 2"):
        gradient_flow.main(["--quick", "--seeds", "1", "--out-dir", str(out)])
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    with pytest.raises(SystemExit, match=r"holds \['report.md'\] and no record of a "
                                         "gradient_flow run"):
        gradient_flow.main(["--quick", "--out-dir", str(mine)])
    assert (mine / "report.md").read_text() == "my notes"
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        gradient_flow.main(["--quick", "--out-dir", str(tmp_path / "file")])
