"""Character-level language modelling: bits per character per cell.

Question: on text, how far apart are the tanh RNN, the LSTM and the GRU in bits per
character at the same width? Chung et al. 2014: the gated units beat tanh units, the GRU is
comparable to the LSTM (the order between the two varies with the task; independent
reproductions found it fragile). Karpathy et al. 2015 and Jozefowicz et al. 2015 agree that
gating, not the particular gate set, is what matters.

Command:

    python experiments/char_lm.py                         # Python's own stdlib as text
    python experiments/char_lm.py --path my_corpus.txt --steps 5000

Runtime: 26 minutes on a 2-core CPU on 2026-12-04, with up to three other experiments
sharing the cores (not yet timed alone), with the defaults (hidden 64, sequences of 50
characters, batch 32, 1500 Adam steps with clipping 1, 5 seeds x 4 learning rates from 1e-3
to 3e-2 per cell, the rate chosen on validation text). The default corpus is a few modules
of the Python standard library (offline, always present), cut into blocks of 4096
characters: every tenth block is test text and another tenth validation text, so both are
of the same kind as the training text (the test text was once the corpus's last module,
``textwrap``, which made a cell's test score depend on how well it fitted one module).

Expected outcome: the LSTM and GRU well below the tanh RNN and the unigram baseline; the GRU
and LSTM within a few hundredths of a bit of each other (Chung et al. 2014; Jozefowicz et
al. 2015). Train and test bits per character are both reported. The Conv1D + attention
hybrid of ``examples/`` is not a row here: it pools a whole sequence into one class and its
convolution looks ahead, so it is no language model.

Writes ``results/char_lm/``: ``config.json``, ``results.json`` (train and test bits per
character per cell and seed at the tuned rate, validation curves, the tuning),
``bits_per_char.png``, ``tuning.png``, ``report.md``.
"""

from __future__ import annotations

import jax
import numpy as np

import gatedrnn as gr

try:
    from experiments import common
except ImportError:  # run as a script: experiments/ is on sys.path
    import common

SIZES = {
    "quick": dict(hidden=4, seeds=2, steps=20, seq_len=8, learning_rates=[1e-3, 1e-2]),
    "cpu": dict(hidden=64, seeds=5, steps=1500, batch_size=32, seq_len=50,
                learning_rates=[1e-3, 3e-3, 1e-2, 3e-2], clip_norm=1.0,
                cells=["rnn", "lstm", "gru"], path="", block_size=4096, seed=0),
    "paper": dict(hidden=512, seeds=5, steps=50000, seq_len=128, batch_size=64),
}
BAND = 0.05  # bits per character within which two cells count as comparable
OBJECTIVE = common.Objective("bits_per_char", log=False, tolerance=0.02)


def main(argv=None) -> dict:
    run = common.start("char_lm", __doc__, SIZES, argv)
    s = run.settings
    task = gr.tasks.char_lm(s["path"] or None, s["seq_len"], block_size=s["block_size"])
    tuned, results = {}, {}
    for name in s["cells"]:
        config = gr.train.Config(cell=common.CELLS[name](s["hidden"]), task=task,
                                 steps=s["steps"], batch_size=s["batch_size"],
                                 clip_norm=s["clip_norm"])
        t = tuned[name] = run.tune("char LM", name, config, OBJECTIVE)
        # the training batches' mean loss over the last evaluation interval, in bits
        train = t.chosen("train_loss")[:, -1] / np.log(2)
        results[name] = {"bits_per_char": t.test["bits_per_char"], "train_bits_per_char": train,
                         "rate": t.rate, "converged": t.converged, "steps": t.steps,
                         "curve": t.curves}
    run.results = {"baselines": dict(task.baselines), "cells": results}

    fig = gr.plots.learning_curves(
        next(iter(results.values()))["steps"],
        {f"{common.label(n)} (lr {r['rate']:g})": r["curve"] for n, r in results.items()},
        baselines={f"{k} ({v:.2f})": v for k, v in task.baselines.items()},
        ylabel="validation bits per character",
        title=f"Character LM ({task.name}), each cell at its tuned rate")
    common.savefig(fig, run.out / "bits_per_char.png")

    def diff(a, b):
        return common.interval(np.asarray(results[a]["bits_per_char"])
                               - np.asarray(results[b]["bits_per_char"]))

    for gated in ("lstm", "gru"):
        if gated in results and "rnn" in results:
            iv = diff("rnn", gated)
            run.claim(f"char-{gated}-vs-rnn", source="Chung et al. 2014; Jozefowicz et al. 2015",
                      claim=f"the {common.label(gated)} models text better than the tanh RNN",
                      measure="test bits per character, tanh RNN minus "
                              f"{common.label(gated)} (same seed)",
                      value=common.fmt(iv), verdict=common.verdict_above(iv, 0.0),
                      note="positive: the gated cell is better", figure="bits_per_char.png",
                      cells=[tuned["rnn"], tuned[gated]])
    if "lstm" in results and "gru" in results:
        iv = diff("lstm", "gru")
        finite = np.isfinite(iv["mean"])
        inside = finite and -BAND < iv["low"] and iv["high"] < BAND
        outside = finite and (iv["low"] > BAND or iv["high"] < -BAND)
        run.claim("char-gru-vs-lstm", source="Chung et al. 2014; Jozefowicz et al. 2015",
                  claim="the GRU is comparable to the LSTM",
                  measure="test bits per character, LSTM minus GRU (same seed)",
                  value=common.fmt(iv),
                  verdict="agrees" if inside else "differs" if outside else "inconclusive",
                  note=f"comparable: the interval within +-{BAND} bits",
                  figure="bits_per_char.png", cells=[tuned["lstm"], tuned["gru"]])

    rows = ["| cell | params | learning rate | train bits per character | test bits per "
            "character | converged |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        params = common.CELLS[name](s["hidden"]).init(jax.random.key(0), task.input_size)
        rows.append(f"| {common.label(name)} | {gr.num_params(params)} | {r['rate']:g} | "
                    f"{common.fmt(common.interval(r['train_bits_per_char']), 3)} | "
                    f"{common.fmt(common.interval(r['bits_per_char']), 3)} | "
                    f"{'yes' if r['converged'] else 'no'} |")
    body = [f"Corpus: {task.name}: blocks of {s['block_size']} characters, every tenth for "
            "test and another tenth for validation, spread over the whole text; baselines "
            + ", ".join(f"{k} {v:.2f}" for k, v in task.baselines.items())
            + " bits per character. Train: the mean over the training batches of the last "
            "evaluation interval.", "", *rows, "", "![bits per character](bits_per_char.png)",
            ""]
    return run.finish("Character-level language modelling", body)


if __name__ == "__main__":
    main()
