"""Every experiment's ``--scale paper`` configuration builds and trains a few steps.

A file of its own so that pytest-xdist (``--dist loadfile``) runs it beside
``test_experiments.py`` rather than after it. Each run keeps the paper's sizes but trains
fewer cells, two learning rates and, where the paper's settings would take minutes of
evaluation on 2 cores, a smaller one (the shortest gap or length, one hidden size,
gradient_flow's sequences of 25 steps and diagnostics on 8 of them, state tracking's
test lengths up to 100 and parity alone): what the test shows is that the paper's
configuration is valid and trains, not its results. Its cost is XLA compiling one program
per cell, task and length, so fewer of those is what shortens it, not fewer steps.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from experiments import report  # noqa: E402

TWO_RATES = ["--learning-rates", "1e-3", "1e-2"]
PAPER_FLAGS = {
    # at T=200 its evaluations take every step's gradient norms: 18 minutes on a shared core
    "gradient_flow": ["--cells", "rnn", "lstm", "--diag-batch", "8", "--seq-len", "25",
                      *TWO_RATES],
    "adding_problem": ["--cells", "lstm", "--seq-lens", "100", *TWO_RATES],
    "copy_task": ["--cells", "lstm", "--hidden", "40", "--seq-lens", "100", *TWO_RATES],
    "counting": ["--architectures", "wide", *TWO_RATES],
    # one tune per condition, compiling (not training) is its cost: the copy task's 5 of 9
    "init_ablation": ["--tasks", "copy", *TWO_RATES, "--copy-len", "10"],
    "sensitivity": ["--cells", "lstm", "--hidden-sizes", "32", *TWO_RATES],
    "cost": ["--cells", "lstm", "gru", "--repeats", "2", "--hidden-sizes", "128",
             *TWO_RATES],
    "digits": ["--models", "rnn", "lstm", *TWO_RATES],
    "state_tracking": ["--cells", "rnn", "min_gru_neg", "--test-batch", "8", "--test-edges",
                       "41", "100", "--tasks", "parity", *TWO_RATES],
    "char_lm": ["--cells", "lstm", "gru", *TWO_RATES],
    "descendants": ["--cells", "mlstm", "--test-batch", "8", "--test-edges", "41", "100",
                    "--tasks", "parity", "--flow-len", "20",
                    "--flow-seeds", "2", *TWO_RATES],
}


def test_every_experiment_has_a_paper_scale_check():
    assert sorted(PAPER_FLAGS) == sorted(report.EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name, flags", PAPER_FLAGS.items())
def test_paper_scale_configurations_build_and_train_a_few_steps(tmp_path, name, flags):
    module = importlib.import_module(f"experiments.{name}")
    payload = module.main(["--scale", "paper", "--steps", "2", "--seeds", "2",
                           "--out-dir", str(tmp_path), *flags])
    paper = {**module.SIZES["cpu"], **module.SIZES["paper"]}
    given = {flag[2:].replace("-", "_") for flag in flags if flag.startswith("--")}
    for key in module.SIZES["paper"]:
        if key not in ("steps", "seeds", *given):
            assert payload["settings"][key] == paper[key], key
    assert payload["scale"] == "paper" and payload["claims"]
