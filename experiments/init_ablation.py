"""Initialisation ablation: gate biases and recurrent init on long adding and copy tasks.

Question: how much of a gated cell's long-range learning comes from its initialisation?
LSTM forget bias 0 / 1 / 3 and chrono (Jozefowicz et al. 2015: a forget bias of 1 closes most
of the LSTM-GRU gap; Tallec & Ollivier 2018: chrono initialisation, ``b_f ~ log U[1,
T_max - 1]``, helps on long dependencies), GRU update bias 0 against chrono, and the IRNN
(relu with identity recurrent init, Le et al. 2015) against the tanh RNN.

Command:

    python experiments/init_ablation.py                   # adding T=100, copy T=20
    python experiments/init_ablation.py --scale paper     # adding T=400, copy T=200

Runtime: about 8 minutes on a 2-core CPU with the defaults (hidden 32, batch 32, 2000 Adam
steps at lr 3e-3 with clipping 1, 5 seeds; the three forget biases are one ``gr.sweep`` grid
over the cell option ``forget_bias``). A first run with a copy gap of 50, 1200 steps at lr
1e-3 left every LSTM above the copy baseline (nothing learned, so nothing to compare); the
copy settings follow ``copy_task.py``'s, where the LSTM learns at T = 20.

Expected outcome: forget bias 0 is worst among the LSTMs on both tasks; chrono is at least as
good as bias 1 and better on the copy task's long gap; the IRNN learns the adding problem
where the tanh RNN does not (Le et al.; Arjovsky et al. found the IRNN at the baseline too at
T >= 100, so this one is expected to be fragile).

Writes ``results/init_ablation/``: ``config.json``, ``results.json`` (final loss per
condition, task and seed), ``ablation.png``, ``report.md``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import gatedrnn as gr

try:
    from experiments import common
except ImportError:  # run as a script: experiments/ is on sys.path
    import common

SIZES = {
    "quick": dict(adding_len=6, copy_len=3, hidden=4, seeds=2, steps=20),
    "cpu": dict(adding_len=100, copy_len=20, hidden=32, seeds=5, steps=2000, batch_size=32,
                learning_rate=3e-3, clip_norm=1.0, seed=0),
    "paper": dict(adding_len=400, copy_len=200, hidden=128, seeds=10, steps=20000,
                  learning_rate=1e-3),
}


def conditions(H: int, t_max: float) -> list[tuple[str, object, dict]]:
    """(sweep label, cell, grid): the LSTM forget biases share one sweep."""
    return [
        ("lstm forget bias", gr.lstm(H), {"forget_bias": [0.0, 1.0, 3.0]}),
        ("lstm chrono", gr.lstm(H, chrono_t_max=t_max), {}),
        ("gru", gr.gru(H), {}),
        ("gru chrono", gr.gru(H, chrono_t_max=t_max), {}),
        ("tanh rnn", gr.rnn(H), {}),
        ("irnn", gr.rnn(H, activation="relu", recurrent_init="identity"), {}),
    ]


def main(argv=None) -> dict:
    run = common.start("init_ablation", __doc__, SIZES, argv)
    s = run.settings
    tasks = {"adding": gr.tasks.adding(s["adding_len"]), "copy": gr.tasks.copy(s["copy_len"])}
    baseline = {"adding": "constant", "copy": "memoryless"}
    results = {}
    for task_name, task in tasks.items():
        results[task_name] = {}
        for label, cell, grid in conditions(s["hidden"], float(task.seq_len)):
            config = gr.train.Config(cell=cell, task=task, steps=s["steps"],
                                     batch_size=s["batch_size"],
                                     learning_rate=s["learning_rate"], clip_norm=s["clip_norm"])
            result = run.sweep(f"{task_name}-{label.replace(' ', '_')}", config, **grid)
            loss = common.finals(result, task)["loss"]  # [G, S]
            names = [f"lstm forget bias {b:g}" for b in grid["forget_bias"]] if grid else [label]
            for name, row in zip(names, loss):
                results[task_name][name] = {"loss": row,
                                            "relative": row / task.baselines[baseline[task_name]]}
    run.results = results

    fig, axes = plt.subplots(1, len(tasks), figsize=(14, 4.8), layout="constrained")
    for ax, (task_name, r) in zip(axes, results.items()):
        names = list(r)
        for i, name in enumerate(names):
            v = np.log10(np.asarray(r[name]["relative"], np.float64))
            ax.scatter(np.full(v.shape, i), v, color=f"C{i}", alpha=0.7)
            ax.plot([i - 0.3, i + 0.3], [np.median(v)] * 2, color="k", lw=2)
        ax.axhline(0.0, color="k", ls="--", lw=1, label="baseline")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(ylabel="log10 final loss / baseline", title=f"{tasks[task_name].name}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    fig.suptitle(f"Initialisation ablation: one dot per seed, bar at the median "
                 f"({s['steps']} steps, hidden {s['hidden']})")
    common.savefig(fig, run.out / "ablation.png")

    def better(task_name, worse, better_name, claim_id, source, claim):
        r = results[task_name]
        diff = common.interval(np.log10(r[worse]["loss"]) - np.log10(r[better_name]["loss"]))
        run.claim(claim_id, source=source, claim=claim,
                  measure=f"{tasks[task_name].name}: log10 final loss, {worse} minus "
                          f"{better_name} (same seed)",
                  value=common.fmt(diff), verdict=common.verdict_above(diff, 0.0),
                  note="positive: the second is better" + (
                      f"; {diff['nonfinite']} seed(s) diverged to a non-finite loss at lr "
                      f"{s['learning_rate']:g} (Le et al. ran the IRNN at far smaller rates)"
                      if diff.get("nonfinite") else ""), figure="ablation.png")

    better("adding", "lstm forget bias 0", "lstm forget bias 1", "forget-bias-adding",
           "Jozefowicz et al. 2015", "a forget bias of 1 beats 0 (adding)")
    better("copy", "lstm forget bias 0", "lstm forget bias 1", "forget-bias-copy",
           "Jozefowicz et al. 2015", "a forget bias of 1 beats 0 (copy)")
    better("copy", "lstm forget bias 1", "lstm chrono", "chrono-lstm-copy",
           "Tallec & Ollivier 2018", "chrono initialisation beats forget bias 1 on a long copy")
    better("copy", "gru", "gru chrono", "chrono-gru-copy", "Tallec & Ollivier 2018",
           "chrono initialisation of the update gate helps the GRU on a long copy")
    better("adding", "tanh rnn", "irnn", "irnn-adding", "Le et al. 2015",
           "the IRNN learns the adding problem better than the tanh RNN")

    rows = ["| condition | " + " | ".join(f"{t.name}: final loss / baseline" for t in
                                            tasks.values()) + " |", "|---|---|---|"]
    for name in results["adding"]:
        rows.append(f"| {name} | " + " | ".join(
            common.fmt(common.interval(results[t][name]["relative"])) for t in tasks) + " |")
    body = ["Final test loss divided by the task's trivial baseline (1: no better than "
            "predicting 1 / guessing after the delimiter), mean [95% interval] over seeds:",
            "", *rows, "", "![ablation](ablation.png)", "",
            "The tanh RNN and IRNN use the same Adam rate and clipping as the gated cells; Le "
            "et al. tuned the IRNN's rate separately, so its row is a lower bound."]
    return run.finish("Initialisation ablation: gate biases and recurrent init", body)


if __name__ == "__main__":
    main()
