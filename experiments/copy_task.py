"""The copy task: recall 10 symbols after a gap of T steps, against the memoryless baseline.

Question: for which gaps does each cell beat the memoryless baseline ``10 log 8 / (T + 20)``
(the cross-entropy of outputting blanks and then guessing uniformly), and does chrono
initialisation (Tallec & Ollivier 2018) help the LSTM at the longest gap? Arjovsky et al. 2016
(about 6.5K parameters: tanh RNN 80 units, LSTM 40): the LSTM beats the baseline only at
short lags, the tanh RNN never.

Command:

    python experiments/copy_task.py                        # T = 10, 40
    python experiments/copy_task.py --scale paper          # T = 100, 200, 300, 500

Runtime: 19.7 minutes on a 2-core CPU on 2026-12-06, with tests sharing the cores, with
the defaults (parameter-matched cells: tanh RNN 80, LSTM 40, GRU 42, chrono LSTM 40; batch
32, 3000 Adam steps, clip 1, 5 seeds x 4 learning rates, 1e-3 to 3e-2, at two gaps). A
first try at T = 25, 50, 100 with 1500 steps at lr 1e-3 left every cell at the baseline
(recall at chance), so the CPU default uses shorter gaps and a larger budget.

Protocol (``common.py``): each cell and gap at its own learning rate, chosen by the final
validation cross-entropy on fresh batches; the test batch is one no run draws. A verdict
that rests on a cell failing stands only when it was tuned and converged. The gaps the CPU
allows are short: a claim the papers make about gaps of 100 (Arjovsky et al.) or hundreds
(Tallec & Ollivier) is marked as not tested in their setting when the longest gap here is
shorter.

Expected outcome: every cell reaches the baseline quickly (it is easy to learn the blanks);
the LSTM goes below it at T = 10 (recall about one half after 3000 steps); as T grows the
cells stay nearer it; the chrono LSTM leaves it sooner at long gaps. Through the protocol
(2026-12-06): the tanh RNN stays at the baseline at both gaps at every rate (recall at
chance); at T = 40 the LSTM recalls 0.20 of the symbols, the GRU 0.47 and the chrono LSTM
0.58. The GRU and the chrono LSTM chose the grid's largest rate (3e-2) at T = 10, and the
chrono LSTM at T = 40 too: their numbers are lower bounds, which only strengthens the
claims they support.

Writes ``results/copy_task/``: ``config.json``, ``results.json`` (final cross-entropy and
recall accuracy per cell, T and seed; learning curves), ``loss_vs_length.png``,
``learning_curves.png``, ``report.md``.
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
    "quick": dict(seq_lens=[5], hidden=[4, 4, 4, 4], seeds=2, steps=20,
                  learning_rates=[1e-3, 1e-2]),
    "cpu": dict(seq_lens=[10, 40], cells=["rnn", "lstm", "gru", "lstm_chrono"],
                hidden=[80, 40, 42, 40], seeds=5, steps=3000, batch_size=32,
                learning_rates=[1e-3, 3e-3, 1e-2, 3e-2], clip_norm=1.0, seed=0),
    "paper": dict(seq_lens=[100, 200, 300, 500], steps=20000, batch_size=20, seeds=10),
}
# cross-entropy near the baseline: compared in nats
OBJECTIVE = common.Objective("loss", log=False, tolerance=0.01)


def make_cell(name: str, hidden: int, T: int):
    if name == "lstm_chrono":
        # chrono: forget-gate time constants spread up to the whole sequence
        return gr.lstm(hidden, chrono_t_max=float(T + 20))
    return common.CELLS[name](hidden)


def main(argv=None) -> dict:
    run = common.start("copy_task", __doc__, SIZES, argv, cells=[*common.CELLS, "lstm_chrono"])
    s = run.settings
    if len(s["hidden"]) != len(s["cells"]):
        raise SystemExit(f"--hidden needs one size per cell ({s['cells']}); got {s['hidden']}")
    results, tuned = {}, {}
    for name, hidden in zip(s["cells"], s["hidden"]):
        results[name], tuned[name] = {}, {}
        for T in s["seq_lens"]:
            task = gr.tasks.copy(T)
            config = gr.train.Config(
                cell=make_cell(name, hidden, T), task=task, steps=s["steps"],
                batch_size=s["batch_size"], clip_norm=s["clip_norm"])
            t = tuned[name][T] = run.tune(f"T={T}", name, config, OBJECTIVE)
            results[name][T] = {"loss": t.test["loss"], "recall": t.test["recall_accuracy"],
                                "baseline": task.baselines["memoryless"], "rate": t.rate,
                                "steps": t.steps, "curve": t.curves}
        results[name]["num_params"] = gr.num_params(
            gr.models.sequence_model(make_cell(name, hidden, 1), 10, readout="all").init(
                jax.random.key(0), 10))
    run.results = results
    Ts = s["seq_lens"]
    by_cell = {n: {T: r[T] for T in Ts} for n, r in results.items()}

    # relative to the baseline, so lengths share one axis
    fig = gr.plots.against(
        Ts, {common.label(n): np.stack([r[T]["loss"] / r[T]["baseline"] for T in Ts], axis=1)
             for n, r in by_cell.items()},
        xlabel="gap T", ylabel="cross-entropy / memoryless baseline", log_x=True,
        baselines={"memoryless baseline": 1.0},
        title=f"Copy task: final test loss relative to the baseline, each cell at its tuned "
              f"rate ({s['steps']} steps)")
    common.savefig(fig, run.out / "loss_vs_length.png")
    T_max = max(Ts)
    fig = gr.plots.learning_curves(
        by_cell[s["cells"][0]][T_max]["steps"],
        {f"{common.label(n)} (lr {r[T_max]['rate']:g})": r[T_max]["curve"]
         for n, r in by_cell.items()},
        baselines={"memoryless": by_cell[s["cells"][0]][T_max]["baseline"]},
        ylabel="validation cross-entropy",
        title=f"Copy task T={T_max}: learning curves at each cell's tuned rate")
    common.savefig(fig, run.out / "learning_curves.png")

    def below_baseline(name, T, expected, claim, note, setting=None):
        r = by_cell[name][T]
        iv = common.interval(r["loss"])
        run.claim(f"copy-{name}-T{T}", source="Arjovsky et al. 2016", claim=claim,
                  measure=f"final test cross-entropy at T={T} (baseline {r['baseline']:.4f})",
                  value=common.fmt(iv), verdict=common.verdict_below(iv, r["baseline"],
                                                                     expected),
                  note=note, figure="loss_vs_length.png", cells=[tuned[name][T]],
                  negative=not expected, setting=setting)

    T_min = min(Ts)
    if "lstm" in by_cell:
        below_baseline("lstm", T_min, True, f"the LSTM beats the memoryless baseline at a "
                       f"short gap (T={T_min})", "recall accuracy "
                       + common.fmt(common.interval(by_cell["lstm"][T_min]["recall"])))
        if T_max >= 200:  # Arjovsky et al.'s long gaps: the LSTM stayed at the baseline
            below_baseline("lstm", T_max, False, f"the LSTM does not beat it at a long gap "
                           f"(T={T_max})", f"{s['steps']} steps")
        elif T_max > T_min:  # their T=100 result: the LSTM beats it up to that gap
            below_baseline("lstm", T_max, True, f"the LSTM beats it up to T=100 (here T={T_max})",
                           "recall accuracy " + common.fmt(common.interval(
                               by_cell["lstm"][T_max]["recall"])) + "; gaps of 200 and more "
                           "(where the paper's LSTM fails) run at --scale paper",
                           None if T_max >= 100 else f"a gap of {T_max}, where the paper's "
                           "is 100")
    if "rnn" in by_cell:
        below_baseline("rnn", T_max, False, f"the tanh RNN never beats it (T={T_max})",
                       "80 units, orthogonal init",
                       None if T_max >= 100 else f"a gap of {T_max}, where the paper's "
                       "shortest is 100")
    if "lstm" in by_cell and "lstm_chrono" in by_cell:
        gap = common.interval(np.asarray(by_cell["lstm"][T_max]["loss"])
                              - np.asarray(by_cell["lstm_chrono"][T_max]["loss"]))
        v = common.verdict_below(gap, 0.0, expected=False)
        run.claim(f"copy-chrono-T{T_max}", source="Tallec & Ollivier 2018",
                  claim="chrono initialisation helps the LSTM on long copy tasks",
                  measure=f"final cross-entropy at T={T_max}, default minus chrono (same seed)",
                  value=common.fmt(gap), verdict=v,
                  note="positive: chrono lower", figure="loss_vs_length.png",
                  cells=[tuned["lstm"][T_max], tuned["lstm_chrono"][T_max]],
                  setting=None if T_max >= 100 else f"a gap of {T_max}, where Tallec & "
                  "Ollivier use hundreds of steps")

    rows = ["| cell | params | " + " | ".join(f"T={T}: CE / baseline, recall (rate)" for T in Ts)
            + " |", "|---|---|" + "---|" * len(Ts)]
    for n, r in by_cell.items():
        rows.append(f"| {common.label(n)} | {results[n]['num_params']} | " + " | ".join(
            f"{np.mean(r[T]['loss']) / r[T]['baseline']:.2f}, "
            f"{common.fmt(common.interval(r[T]['recall']), 2)} ({r[T]['rate']:g})"
            for T in Ts) + " |")
    body = ["Final test cross-entropy relative to the memoryless baseline (mean over seeds) "
            "and recall accuracy of the 10 symbols (chance 1/8), mean [95% interval], each "
            "cell at its tuned rate:", "", *rows,
            "", "![loss against gap](loss_vs_length.png)", "",
            "![learning curves](learning_curves.png)"]
    return run.finish("The copy task against the gap length", body)


if __name__ == "__main__":
    main()
