"""Gradient flow in a vanilla RNN, an LSTM, a GRU and the parallel-scan cells: at
initialisation and after training on the adding problem.

Question: how does ``||dL/dh_t||`` fall with the lag ``T - 1 - t`` in each cell (Pascanu et al.
2013; Arjovsky et al. 2016, Fig. 4), what do the one-step Jacobian spectra, the Lyapunov
exponents and the gates' saturation say about why, and does the cell that keeps its gradient
at initialisation also learn the long dependency?

Command (the README's main job):

    python experiments/gradient_flow.py                      # the defaults below
    python experiments/gradient_flow.py --tune               # tune every cell on the grid
    python experiments/gradient_flow.py --seq-len 200 --steps 3000 --seeds 8
    python experiments/gradient_flow.py --scale paper        # T=200, hidden 128, a GPU/TPU

Runtime: 6.9 minutes on a 2-core CPU on 2026-12-04 with the defaults (T=100, hidden 64, 5
seeds, 1000 Adam steps, batch 64; seven cells, each cell's seeds one vmapped ``gr.sweep`` program),
each cell at the learning rate recorded in ``experiments/tuned/gradient_flow.json`` by
``--tune``, which trains every cell at each rate of the grid (1e-3 to 3e-2) and picks the
best on the validation batches (57 minutes, with other experiments sharing the cores). A
run with other settings than the record's tunes on the grid itself.

Expected outcome (REFERENCES.md sections 2-3): at initialisation the tanh RNN's and the
zero-bias GRU's gradient at lag 99 is around 1e-10 of its value at the loss, the LSTM's
(forget bias 1) around 1e-5; after training the GRU and LSTM solve the task (test MSE far
below the 1/6 baseline) while the tanh RNN stays near the baseline. The gradient at
initialisation does not predict trainability: the GRU loses as many decades as the tanh RNN
there and still learns fastest. At one rate of 1e-3 one layer of minGRU or minLSTM failed
(0/5 seeds) and two stacked minGRU layers solved it; each at its tuned rate (3e-2), one layer
of either solves it too (the tuning of 2026-12-04, 5/5 seeds): its update gates see only the
input, but units with different gates keep different mixtures of the two marked values,
from which a linear readout can form their sum. The LRU fails at every rate.

Writes ``results/gradient_flow/`` (or ``--out-dir``): ``config.json``, ``results.json`` (per
cell: parameter count, learning curves, final MSE and solved flag per seed, log10 gradient
norms by step at initialisation and after training, median one-step Jacobian singular
values, Lyapunov exponents, gate saturation over time), ``gradient_norms.png``,
``learning_curves.png``, ``spectra.png``, ``gates.png`` and ``report.md``. The sweeps live in
``sweeps/``: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gatedrnn as gr

try:
    from experiments import common
except ImportError:  # run as a script: experiments/ is on sys.path
    import common

# "min_gru_x2": two stacked minGRU layers, Feng et al.'s remedy for gates that see only x_t
ALL_CELLS = ["rnn", "gru", "lstm", "min_gru", "min_gru_x2", "min_lstm", "lru"]
SIZES = {
    # the quick run (CI's end-to-end check) trains the classic cells and one parallel-scan
    # cell, enough to exercise every code path; the CPU and paper scales train them all
    "quick": dict(seq_len=6, hidden=4, seeds=2, steps=20, diag_batch=3,
                  learning_rates=[1e-3, 1e-2], cells=["rnn", "gru", "lstm", "min_gru"]),
    "cpu": dict(seq_len=100, hidden=64, seeds=5, steps=1000, batch_size=64,
                learning_rates=[1e-3, 3e-3, 1e-2, 3e-2], clip_norm=1.0, lstm_forget_bias=1.0,
                cells=ALL_CELLS, diag_batch=8, seed=0),
    "paper": dict(seq_len=200, hidden=128, seeds=10, steps=10000, diag_batch=64),
}
OBJECTIVE = common.Objective("loss", log=True, tolerance=0.1)  # as adding_problem's
# the per-cell rates of `python experiments/gradient_flow.py --tune` (all of the grid, every
# cell), so the main job trains each cell at its rate alone; a run whose settings differ from
# the record's tunes on the grid itself
RECORD = Path(__file__).parent / "tuned" / "gradient_flow.json"
RECORD_KEYS = ("seq_len", "hidden", "seeds", "steps", "batch_size", "learning_rates",
               "clip_norm", "lstm_forget_bias", "seed")


def make_cell(name: str, s: dict):
    if name == "lstm":
        return gr.lstm(s["hidden"], forget_bias=s["lstm_forget_bias"])
    if name.endswith("_x2"):  # start() accepts only known cells and their _x2 stacks
        return gr.stack([common.CELLS[name[:-3]](s["hidden"]) for _ in range(2)])
    return common.CELLS[name](s["hidden"])


def train_config(name: str, s: dict) -> gr.train.Config:
    return gr.train.Config(
        cell=make_cell(name, s), task=gr.tasks.adding(s["seq_len"]), steps=s["steps"],
        batch_size=s["batch_size"], clip_norm=s["clip_norm"], gradient_flow=True)


def recorded(s: dict) -> dict | None:
    """The recorded tuning's cells, when it was made with these settings."""
    if not RECORD.is_file():
        return None
    record = json.loads(RECORD.read_text())
    if record["settings"] != {k: s[k] for k in RECORD_KEYS}:
        return None
    source = f"experiments/tuned/{RECORD.name}"
    return {name: {**cell, "source": source} for name, cell in record["cells"].items()}


def write_record(run: common.Run) -> None:
    """Writes the rates this run chose on the whole grid to :data:`RECORD`."""
    s = run.settings
    cells = {name: {k: v for k, v in common.tuning_record(t).items()
                    if k not in ("curves", "test", "steps", "source")}
             for name, t in zip(s["cells"], run.tuning[f"T={s['seq_len']}"].values())}
    RECORD.parent.mkdir(exist_ok=True)
    common.write_json(RECORD, {
        "command": "python experiments/gradient_flow.py --tune",
        "date": datetime.date.today().isoformat(), "environment": common.environment(),
        "minutes": round(run.minutes(), 1), "settings": {k: s[k] for k in RECORD_KEYS},
        "cells": cells})
    print(f"[gradient_flow] wrote {RECORD}", flush=True)


def decay(log10_by_step) -> np.ndarray:
    """Decades lost from the loss (lag 0) to the first step (lag T-1), per seed."""
    g = np.asarray(log10_by_step)
    return g[..., -1] - g[..., 0]


def inspector(cell, xs):
    """A compiled ``params -> dict`` (params with a leading seed axis): per seed, the median
    over examples and steps of each sorted one-step Jacobian singular value ``[S, N]``, the
    Lyapunov exponents averaged over examples ``[S, N]``, and each gate's fraction of units
    above 0.9 (``gates_high``) and below 0.1 (``gates_low``) over time ``[S, T]``."""
    def one(p):
        spectrum = gr.diagnostics.jacobian_spectrum(cell, p, xs)
        gates = gr.diagnostics.gate_activations(cell, p, xs)
        return {"spectrum": jnp.median(spectrum.reshape(-1, spectrum.shape[-1]), axis=0),
                "lyapunov": gr.diagnostics.lyapunov_exponents(cell, p, xs).mean(axis=0),
                "gates_high": gates.saturated_high, "gates_low": gates.saturated_low}

    return jax.jit(jax.vmap(one))


def run_cell(run: common.Run, name: str, xs, record: dict | None) -> dict:
    s = run.settings
    config = train_config(name, s)
    tuned = run.tune(f"T={s['seq_len']}", name, config, OBJECTIVE,
                     record=None if record is None else record[name])
    result, at = tuned.result, tuned.at
    # the keys gr.sweep gives its seeds (a split of the sweep key), to rebuild initial params
    keys = jax.random.split(jax.random.key(s["seed"]), s["seeds"])
    trainer = gr.train.make_trainer(config)
    initial = jax.vmap(lambda k: trainer.init(k)[0].params["rnn"])(keys)
    trained = tuned.params()["rnn"]
    inspect = inspector(config.cell, xs)
    mse = tuned.test["loss"]
    return {
        "tuned": tuned,
        "num_params": gr.num_params(jax.tree.map(lambda v: v[0], initial)),
        "rate": tuned.rate,
        "steps": np.asarray(tuned.steps).tolist(),
        "validation_mse": tuned.curves,
        "final_test_mse": mse,
        "solved": mse < 0.1 * config.task.baselines["constant"],
        "grad_log10_init": result.initial["grad_flow_log10"][at],
        "grad_log10_trained": result.metrics["grad_flow_log10"][at, :, -1],
        # one program for both: the initial and trained params have the same shapes
        **{when: jax.device_get(inspect(p)) for when, p in (("init", initial),
                                                             ("trained", trained))},
    }


def figures(run: common.Run, r: dict) -> None:
    s, out = run.settings, run.out
    names = {common.label(n): v for n, v in r.items()}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True,
                                      layout="constrained")
    for ax, when, title in zip(axes, ("init", "trained"),
                               ("At initialisation", f"After {s['steps']} training steps")):
        gr.plots.gradient_norms({n: v[f"grad_log10_{when}"] for n, v in names.items()},
                                ax=ax, title=title)
    fig.suptitle(f"Adding problem, T={s['seq_len']}: gradient of the loss w.r.t. each step's "
                 f"carry (hidden {s['hidden']}, {s['seeds']} seeds)")
    common.savefig(fig, out / "gradient_norms.png")

    fig = gr.plots.learning_curves(
        next(iter(r.values()))["steps"],
        {f"{n} (lr {v['rate']:g})": v["validation_mse"] for n, v in names.items()},
        baselines={"predict 1 (MSE 1/6)": 1 / 6, "solved (MSE < 1/60)": 1 / 60},
        ylabel="validation MSE",
        title=f"Adding problem, T={s['seq_len']}: learning curves at each cell's tuned rate")
    common.savefig(fig, out / "learning_curves.png")

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    for col, when in enumerate(("init", "trained")):
        gr.plots.jacobian_spectrum({n: v[when]["spectrum"] for n, v in names.items()},
                                   ax=axes[0, col], title=f"One-step Jacobian spectrum ({when})")
        gr.plots.lyapunov_spectrum({n: v[when]["lyapunov"] for n, v in names.items()},
                                   ax=axes[1, col], title=f"Lyapunov exponents ({when})")
    common.savefig(fig, out / "spectra.png")

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True,
                                      layout="constrained")
    for ax, when in zip(axes, ("init", "trained")):
        fractions = {}
        for name, v in r.items():
            # minGRU's update gate admits the candidate (h' = (1-z) h + z h~): it keeps the
            # state when low; the GRU's and the forget gates keep it when high
            side = "low" if name.startswith("min_gru") else "high"
            for gate, frac in v[when][f"gates_{side}"].items():
                if gate.endswith(("forget", "update")):  # "layer 1 update" in a stack
                    fractions[f"{common.label(name)} {gate} "
                              f"{'< 0.1' if side == 'low' else '> 0.9'}"] = frac
        gr.plots.gate_saturation(fractions, ax=ax,
                                 title=f"Units whose gate keeps the state ({when})")
    common.savefig(fig, out / "gates.png")


def claims(run: common.Run, r: dict) -> None:
    T = run.settings["seq_len"]
    lost = {n: common.interval(decay(v["grad_log10_init"])) for n, v in r.items()}
    if "rnn" in r:
        run.claim(
            "vanishing-at-init", source="Pascanu et al. 2013; Arjovsky et al. 2016 Fig. 4",
            claim="a tanh RNN's gradient vanishes exponentially with the lag",
            measure=f"decades of ||dL/dh_t|| lost over {T - 1} steps at initialisation",
            value=common.fmt(lost["rnn"]), verdict=common.verdict_above(lost["rnn"], 3.0),
            note="more than 3 decades counts as vanished", figure="gradient_norms.png",
            cells=())
    if "rnn" in r and "lstm" in r:
        gap = common.interval(decay(r["rnn"]["grad_log10_init"])
                              - decay(r["lstm"]["grad_log10_init"]))
        run.claim(
            "lstm-keeps-gradient", source="Hochreiter & Schmidhuber 1997; Gers et al. 2000",
            claim="the LSTM's cell state (forget bias 1) carries the gradient further than the "
                  "tanh RNN's state",
            measure="decades lost at init, tanh RNN minus LSTM (same seed)",
            value=common.fmt(gap), verdict=common.verdict_above(gap, 0.0),
            note=f"LSTM loses {common.fmt(lost['lstm'])} decades", figure="gradient_norms.png",
            cells=())
    solved = {n: common.rate_interval(v["solved"]) for n, v in r.items()}
    if "gru" in r:
        gru_lost, gru_solved = lost["gru"], solved["gru"]
        holds = gru_lost["low"] > 3 and gru_solved["low"] > 0.5
        fails = gru_lost["high"] < 3 or gru_solved["high"] < 0.5
        run.claim(
            "init-gradient-not-trainability", source="REFERENCES.md section 2 (measured here)",
            claim="the gradient at initialisation does not predict trainability: the zero-bias "
                  "GRU loses as many decades as the tanh RNN yet solves the task",
            measure=f"GRU decades lost at init; GRU seeds solving T={T} (MSE < 1/60)",
            value=f"{common.fmt(gru_lost)}; {common.fmt(gru_solved)}",
            verdict="agrees" if holds else "differs" if fails else "inconclusive",
            note="decades > 3 and a solved rate above one half", figure="learning_curves.png",
            cells=[r["gru"]["tuned"]])
    notes = {"min_gru_x2": "the second layer's gates see the first layer's state, so it can "
                           "tell the markers apart (Feng et al.: stacking matters)"}
    for name in ("min_gru", "min_lstm", "min_gru_x2"):
        if name in r:
            run.claim(
                f"{name}-solves-adding", source="Feng et al. 2024",
                claim=f"{common.label(name)} (gates from the input only, a parallel scan) "
                      "learns long dependencies as the classic gated cells do",
                measure=f"seeds solving adding T={T}", value=common.fmt(solved[name]),
                verdict=common.verdict_above(solved[name], 0.5),
                note=notes.get(name, "its gates see only x_t, so both markers look alike "
                                     "to each unit" + (
                                         "; solved at its tuned rate all the same (units "
                                         "with different gates keep different mixtures of "
                                         "the two values)" if solved[name]["low"] > 0.5
                                         else "")),
                figure="learning_curves.png", cells=[r[name]["tuned"]],
                setting=None if name.endswith("_x2") else "one layer, where Feng et al. stack "
                                                           "layers")


def report(run: common.Run, r: dict) -> list[str]:
    s = run.settings
    lines = [
        f"Adding problem T={s['seq_len']}, hidden {s['hidden']}, {s['seeds']} seeds, "
        f"{s['steps']} Adam steps (each cell at its tuned rate, below; clip {s['clip_norm']}, "
        f"batch {s['batch_size']}); LSTM forget bias {s['lstm_forget_bias']}, GRU biases 0, tanh "
        "RNN orthogonal recurrent init. Gradient norms are `log10 ||dL/d carry_t||` on the "
        "fixed evaluation batch (512), from renormalised products (finite at any lag).",
        "",
        "| cell | params | learning rate | final test MSE | solved (MSE < 1/60) | decades lost "
        "at init | after training | top Lyapunov exponent, trained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r.items():
        lines.append(
            f"| {common.label(name)} | {v['num_params']} | {v['rate']:g} | "
            f"{common.fmt(common.interval(v['final_test_mse']))} | "
            f"{common.fmt(common.rate_interval(v['solved']))} | "
            f"{common.fmt(common.interval(decay(v['grad_log10_init'])), 2)} | "
            f"{common.fmt(common.interval(decay(v['grad_log10_trained'])), 2)} | "
            f"{common.fmt(common.interval(np.asarray(v['trained']['lyapunov'])[:, 0]), 2)} |")
    lines += [
        "", "Baseline: predicting 1 gives MSE 1/6 = 0.167. Intervals are 95% t intervals of "
        "the mean over seeds (Wilson for rates).", "",
        "![gradient norms](gradient_norms.png)", "",
        "A line that falls by k decades over the lag axis means the loss's gradient reaches "
        "the first input 10^-k times weaker than the last; a flat line means the signal from "
        "the first marker still arrives.", "",
        "![learning curves](learning_curves.png)", "",
        "![spectra](spectra.png)", "",
        "Top: the median singular values of the one-step Jacobian `d carry_t / d carry_t-1`; "
        "values below 1 shrink a gradient at every step. Bottom: Lyapunov exponents (nats "
        "per step); an exponent near 0 is a direction along which perturbations, and "
        "gradients, neither die nor grow: the memory the task needs.", "",
        "![gates](gates.png)", "",
        "The LRU keeps its gradient almost perfectly (its exponents sit at 0) and still fails: "
        "one LRU layer is linear in its inputs, so no readout of it can form value x marker; "
        "Orvieto et al. put a nonlinear block between LRU layers.", "",
        "Fraction of units whose gate keeps the state: forget (LSTM, minLSTM) or update "
        "(GRU) above 0.9, minGRU's update below 0.1 (its z admits the candidate). A keep-gate "
        "near 1 is what lets `d c_t / d c_t-1 = diag(f_t) + ...` stay near the identity.",
    ]
    return lines


def main(argv=None) -> dict:
    run = common.start("gradient_flow", __doc__, SIZES, argv,
                       cells=[*common.CELLS, *(f"{c}_x2" for c in common.CELLS)],
                       switches={"tune": f"tune every cell on the whole learning-rate grid "
                                         f"and write the rates to experiments/tuned/"
                                         f"{RECORD.name} (about 4x the default's time)"})
    s = run.settings
    record = None if run.switches["tune"] else recorded(s)
    if record is not None and not set(s["cells"]) <= set(record):
        record = None
    task = gr.tasks.adding(s["seq_len"])
    xs, _ = task.sample(jax.random.key(s["seed"] + 1), s["diag_batch"])
    results = {name: run_cell(run, name, xs, record) for name in s["cells"]}
    if run.switches["tune"]:
        write_record(run)
    run.results = {n: {k: v for k, v in e.items() if k != "tuned"} for n, e in results.items()}
    figures(run, results)
    claims(run, results)
    where = (f"each cell trained at the rate of the recorded tuning `experiments/tuned/"
             f"{RECORD.name}` (`python experiments/gradient_flow.py --tune`)" if record else
             "each cell tuned on the whole grid in this run")
    return run.finish(f"Gradient flow on the adding problem (T={s['seq_len']})",
                      [f"Learning rates: {where}.", ""] + report(run, results))


if __name__ == "__main__":
    main()
