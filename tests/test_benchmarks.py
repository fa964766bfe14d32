"""The benchmark suite runs end to end at toy size and its report agrees with its numbers.

Speed is never asserted here: only that every case was measured and reported faithfully.
"""

import importlib
import json
import math
from pathlib import Path

import jax
import pytest

from benchmarks import run


def test_write_section_replaces_its_own_block_and_keeps_the_rest(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\nA hand-written section.\n")
    run.write_section(path, "first")
    run.write_section(path, "second")
    text = path.read_text()
    assert "A hand-written section." in text
    assert text.count(run.BEGIN) == 1 and "second" in text and "first" not in text
    run.write_section(tmp_path / "new.md", "only")
    assert "only" in (tmp_path / "new.md").read_text()


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_the_recorded_report_states_its_json_and_an_unmeasured_memory_is_a_dash(backend):
    recorded = Path(run.__file__).parent
    name, figure, begin, end = run.outputs(backend)
    results = json.loads((recorded / name).read_text())
    text = (recorded / "RESULTS.md").read_text()
    assert f"{begin}\n{run.report(results)}\n{end}" in text
    assert f"]({figure})" in run.report(results) and (recorded / figure).exists()
    results["memory"]["torch"]["peak_mib"] = None  # no /proc to sample, as on macOS
    assert any(line.startswith("| torch | - | - |")
               for line in run.report(results).splitlines())


def test_an_out_dir_with_files_of_someone_else_is_refused_before_anything_runs(tmp_path):
    name = run.outputs(jax.default_backend())[0]  # results_gpu.json on a GPU
    mine = tmp_path / name
    mine.write_text('{"my": "numbers"}')
    with pytest.raises(SystemExit, match=rf"holds \['{name}'\], not written by"):
        run.main(["--quick", "--out-dir", str(tmp_path)])
    assert mine.read_text() == '{"my": "numbers"}'
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        run.main(["--quick", "--out-dir", str(tmp_path / "file")])
    with pytest.raises(SystemExit):
        run.main(["--quick", "--repeats", "0", "--out-dir", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


# the quick sizes, with the cells at shapes given by --shape (one of them a B=1 shape
# that is not --quick's own), as a reviewer measures shapes of their own
SHAPE_ARGS = ["--shape", "8", "16", "8", "16", "--shape", "1", "24", "2", "8"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run.main(["--quick", *SHAPE_ARGS, "--out-dir", str(out)])


def test_shapes_of_ones_own_need_an_out_dir_and_positive_sizes(capsys):
    for argv, message in (
            (["--shape", "2", "8", "3", "4"], "--shape needs --out-dir"),
            (["--shape", "2", "0", "3", "4", "--out-dir", "x"], "four positive sizes"),
            (["--shape", "2", "8", "3"], "expected 4 arguments")):
        with pytest.raises(SystemExit) as error:
            run.main(argv)
        assert error.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_quick_suite_measures_every_case_and_peer(quick):
    out, results = quick
    results_name, figure_name = run.outputs(results["backend"])[:2]
    assert json.loads((out / results_name).read_text()) == json.loads(json.dumps(results))
    assert (out / figure_name).stat().st_size > 0
    cases = {(r["cell"], r["B"], r["T"], r["I"], r["H"], r["label"]) for r in results["cells"]}
    assert cases == {(kind, *shape) for kind in run.KINDS
                     for shape in [(8, 16, 8, 16, "throughput"), (1, 24, 2, 8, "latency")]}
    assert results["command"] == " ".join(["python benchmarks/run.py --quick", *SHAPE_ARGS])
    for row in results["cells"]:
        for mode in ("forward", "forward+backward"):
            ms = row[mode]["ms"]
            assert {"gatedrnn", "gatedrnn hoisted", "gatedrnn not hoisted"} <= set(ms)
            assert any(name.startswith("flax") for name in ms)
            assert ("torch" in results["missing"]) != any(n.startswith("torch") for n in ms)
            assert all(math.isfinite(v) and v > 0 for v in ms.values())
            assert row[mode]["flops"] > 0
    cases = {(r["cell"], r["B"], r["T"], r["I"], r["H"]) for r in results["parallel"]}
    assert cases == {(kind, *shape) for kind in run.PARALLEL_KINDS
                     for shape in [(8, 16, 8, 16), (1, 24, 2, 8)]}
    for row in results["parallel"]:
        for mode in ("forward", "forward+backward"):
            ms = row[mode]["ms"]
            assert set(ms) == set(run.METHODS)
            assert all(math.isfinite(v) and v > 0 for v in ms.values())
            assert row[mode]["flops"] > 0
    assert set(results["compile"]) == {"16", "256"}
    assert {"default", "remat=False", "remat=True"} <= set(results["memory"])
    assert results["train_step"]["ms_per_step"]["gr.train"] > 0


@pytest.mark.slow
def test_quick_suite_report_states_the_numbers_of_results_json(quick):
    out, results = quick
    text = (out / "RESULTS.md").read_text()
    assert text.count(run.outputs(results["backend"])[2]) == 1
    for row in results["cells"]:
        ms = row["forward+backward"]["ms"]
        peer, peer_ms, ratio = run._ratio_text(ms)
        assert ratio == pytest.approx(ms[peer] / ms["gatedrnn"])
        line = next(line for line in text.splitlines()
                    if line.startswith(f"| {row['cell']} | {row['B']}, {row['T']},"))
        assert f"| {peer} | {peer_ms} | {ratio:.2f}x |" in line
    for row in results["parallel"]:
        ms = row["forward+backward"]["ms"]
        line = next(line for line in text.splitlines()
                    if line.startswith(f"| {row['cell']} | {row['B']}, {row['T']},"))
        speedup = ms["sequential"] / ms["associative"]
        gru = next(r for r in results["cells"] if r["cell"] == "gru" and r["B"] == row["B"]
                   and r["T"] == row["T"])["forward+backward"]["ms"]["gatedrnn"]
        assert f"| {ms['associative']:.1f} | {speedup:.2f}x |" in line
        assert line.endswith(f"| {gru:.1f} |")
    assert f"{results['peak_gflops']:.0f} GFLOP/s" in text


def test_backward_paths_measures_each_path_and_each_equals_jax_grad():
    from benchmarks.backward_paths import main

    result = main(["--kinds", "gru", "--shape", "2", "5", "3", "4", "--repeats", "1"])
    assert result["errors"]["gru"] < 1e-5
    assert set(result["ms"]["gru"]) == {"jax.grad", "unroll=2", "unroll=4", "deferred",
                                        "carry only", "jax.grad, h @ w", "deferred, h @ w",
                                        "deferred, folded"}
    assert all(math.isfinite(ms) and ms > 0 for ms in result["ms"]["gru"].values())
    sums = result["accumulation"]["gru"]
    assert set(sums) == {"in the loop", "in the loop, h^T first", "after the loop"}
    assert all(math.isfinite(ms) and ms > 0 for ms in sums.values())


def test_the_weight_gradient_sums_agree_with_numpy():
    import numpy as np

    from benchmarks.backward_paths import accumulation_paths

    fns = accumulation_paths(5, 3, 4, 12)
    hs, gs = (np.asarray(a, np.float64) for a in fns["after the loop"].args)
    expected = np.einsum("tbh,tbw->hw", hs, gs)
    for fn in fns.values():
        np.testing.assert_allclose(fn(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("script, argv", [
    ("backward_paths", ["--shape", "1", "0", "1", "4"]), ("backward_paths", ["--repeats", "0"]),
    ("backward_paths", ["--kinds", "lru"]), ("one_feature", ["--shape", "1", "10", "2", "4"]),
    ("one_feature", ["--repeats", "0"]), ("one_feature", ["--kinds", "rnn"])])
def test_refuses_a_bad_argument_before_measuring(script, argv, capsys):
    main = importlib.import_module(f"benchmarks.{script}").main
    with pytest.raises(SystemExit):
        main(argv)
    assert "--" in capsys.readouterr().err


def test_unroll_factors_measures_every_factor_and_refuses_a_bad_argument(capsys):
    from benchmarks import unroll_factors

    out = unroll_factors.main(["--factors", "1", "3", "--kinds", "gru", "--shapes", "2,5,3,4",
                               "--repeats", "1"])
    row = out["gru", (2, 5, 3, 4)]
    assert set(row) == {"unroll=1", "unroll=3"}
    assert all(v > 0 for r in row.values() for v in r.values())
    assert "| gru |" in capsys.readouterr().out
    out = unroll_factors.main(["--factors", "2", "--hoist", "both", "--kinds", "lstm",
                               "--shapes", "1,4,2,3", "--repeats", "1"])
    assert set(out["lstm", (1, 4, 2, 3)]) == {"unroll=2, hoisted", "unroll=2, per step"}
    for argv in (["--shapes", "2,5,3"], ["--factors", "0"], ["--repeats", "0"],
                 ["--hoist", "yes"]):
        with pytest.raises(SystemExit):
            unroll_factors.main(argv)


def test_seeds_times_each_seed_count_against_one_and_records_its_command(tmp_path):
    from benchmarks import seeds

    out = tmp_path / "seeds.json"
    argv = ["--seeds", "2", "--steps", "2", "--hidden", "3", "--batch-size", "2",
            "--seq-len", "4", "--repeats", "1", "--out", str(out)]
    seeds.main(argv)
    record = json.loads(out.read_text())
    assert record["command"] == "python benchmarks/seeds.py " + " ".join(argv)
    assert [row["seeds"] for row in record["rows"]] == [1, 2]
    assert record["rows"][0]["vs_one_seed"] == 1.0
    assert all(row["ms_per_step"] > 0 for row in record["rows"])


def test_remat_projection_measures_each_place_of_the_projection(capsys):
    from benchmarks import remat_projection

    out = remat_projection.main(["--kinds", "gru", "--shape", "2", "16", "3", "4",
                                 "--repeats", "1"])["gru"]
    assert set(out) == {"default", "hoisted per segment", "per step", "remat=False"}
    assert all(r["temp_mib"] >= 0 and r["ms"] > 0 for r in out.values())
    assert "| gru | hoisted per segment |" in capsys.readouterr().out
    for argv in (["--shape", "2", "16", "3"], ["--shape", "2", "0", "3", "4"], ["--remat", "1"],
                 ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            remat_projection.main(argv)


def test_memory_reuse_times_both_allocator_settings_in_fresh_processes(tmp_path, capsys):
    from benchmarks import memory_reuse

    out = tmp_path / "memory_reuse.json"
    argv = ["--rounds", "1", "--repeats", "1", "--kinds", "lstm", "--shape", "2", "8", "3",
            "4", "--out", str(out)]
    record = memory_reuse.main(argv)
    assert json.loads(out.read_text()) == record
    assert record["command"] == "python benchmarks/memory_reuse.py " + " ".join(argv)
    (row,) = record["rows"]
    assert row["case"] == "lstm 2,8,3,4"
    for name in memory_reuse.SETTINGS:
        assert row[f"gatedrnn forward+backward, {name}"] > 0
        assert row[f"torch forward+backward, {name}"] > 0
        assert row[f"gatedrnn faults, {name}"] >= 0
    assert "| lstm 2,8,3,4 |" in capsys.readouterr().out
    for bad in (["--rounds", "0"], ["--repeats", "0"], ["--shape", "2", "8", "0", "4"],
                ["--kinds", "lru"]):
        with pytest.raises(SystemExit):
            memory_reuse.main(bad)


def test_memory_reuse_refuses_a_system_without_glibc(monkeypatch, capsys):
    from benchmarks import memory_reuse
    from gatedrnn import workarounds

    monkeypatch.setattr(workarounds.platform, "libc_ver", lambda: ("", ""))
    with pytest.raises(SystemExit):
        memory_reuse.main(["--rounds", "1"])
    assert "glibc" in capsys.readouterr().err


def _torch_peer(*argv):
    """``benchmarks/torch_peer.py`` run with ``argv`` in a process of its own, as run.py runs it."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = Path(__file__).parents[1] / "benchmarks" / "torch_peer.py"
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)


@pytest.mark.parametrize("flags", [[], ["--no-onednn"], ["--no-onednn", "--device", "cpu"]])
def test_torch_peer_times_a_cell_with_and_without_onednn(flags):
    done = _torch_peer(*flags, "cell", "lstm", "2", "5", "3", "4", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"forward", "forward+backward"}
    assert all(math.isfinite(s) and s > 0 for s in result.values())


@pytest.mark.parametrize("argv", [[], ["--no-onednn"], ["cell", "lstm", "2", "5"],
                                  ["sideways", "2", "5", "3", "4", "1"], ["--device"],
                                  ["cell", "lstm", "2", "x", "3", "4", "1"],
                                  ["bidirectional", "2", "0", "3", "4", "1"]])
def test_torch_peer_refuses_bad_arguments_with_its_usage(argv):
    done = _torch_peer(*argv)
    assert done.returncode != 0 and "usage: " in done.stderr and "--no-onednn" in done.stderr


def test_one_feature_times_both_programs_whose_gradients_are_the_same():
    import gatedrnn as gr
    from benchmarks.one_feature import main, programs

    cell = gr.gru(4)
    compiled = programs(cell, cell.init(jax.random.key(0), 1), jax.numpy.ones((2, 5, 1)))
    # the rule's forward program keeps the input product a dot; without, XLA fuses it away
    dots = {rule: c.as_text().count(" dot(") for rule, c in compiled["forward"].items()}
    assert dots["on"] == dots["off"] + 1

    result = main(["--kinds", "gru", "min_lstm", "--shape", "2", "5", "1", "4", "--repeats", "1"])
    for kind in ("gru", "min_lstm"):
        assert result[kind]["gradient_difference"] == 0
        assert all(math.isfinite(ms) and ms > 0 for by_rule in result[kind]["ms"].values()
                   for ms in by_rule.values())


def test_import_time_reports_jax_gatedrnn_and_every_lazy_module():
    import gatedrnn as gr
    from benchmarks.import_time import main

    result = main(["--repeats", "1"])
    assert set(result["lazy"]) == set(gr._LAZY_MODULES)
    assert all(seconds >= 0 for seconds in (result["jax"], result["gatedrnn"],
                                            *result["lazy"].values()))
    # what import gatedrnn leaves for later is really not imported yet in a fresh process
    import subprocess
    import sys
    code = ("import sys, gatedrnn; print(sorted(m for m in ('flax', 'optax', 'orbax', "
            "'matplotlib') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_descendants_benchmark_times_each_pair_in_one_run():
    from benchmarks.descendants import main

    result = main(["--quick", "--repeats", "1"])
    rows = result["rows"]
    assert set(rows) == {"slstm_vs_lstm", "mlstm_parallel_vs_recurrent",
                         "rg_lru_associative_vs_sequential"}
    for row in (r for group in rows.values() for r in group):
        assert row["reference_s"] > 0 and row["other_s"] > 0
        assert row["ratio"] == row["other_s"] / row["reference_s"]
