"""What each cell costs: parameters, FLOPs, time per step, and time to reach a solution.

Question: the common claim "the GRU has fewer parameters and trains faster than the LSTM"
(Chung et al. 2014 match parameter counts for that reason): by how much, per step and per
unit of accuracy reached? And what do the parallel-scan cells (minGRU, minLSTM, LRU; Feng et
al. 2024, Orvieto et al. 2023) cost beside them?

Command:

    python experiments/cost.py
    python experiments/cost.py --hidden-sizes 128 512 --repeats 9

Runtime: 10.6 minutes on a 2-core CPU on 2026-12-06 with the defaults (forward+backward of
``gr.unroll`` at B=32, T=100, I=32 and H = 64, 256, 7 interleaved repetitions; then 5 seeds
x 4 learning rates (1e-3 to 3e-2) of each cell trained on the adding problem, T=50, hidden
64, 1000 Adam steps, evaluated every 50 steps).

Protocol (``common.py``): the parameter counts and times per step involve no training. Time
to solve is measured at each cell's own learning rate, the one with the lowest final
validation MSE, on its validation curves (fresh batches); a verdict that rests on the LSTM
or the GRU being slower stands only when both were tuned and converged. As a check on that
choice, the row's note also gives the ratio at the rate where each cell solves soonest.

Expected outcome: parameter ratio GRU / LSTM = 3/4 exactly (``3H(I+H)`` against ``4H(I+H)``
plus biases); time per step in about the same ratio at large H, closer to 1 at small H where
per-step overhead dominates; minGRU has ``2HI`` weights (no recurrent matrix). Time to solve
depends more on how many steps a cell needs than on its per-step cost.

Times come from ``benchmarks/timing.py`` (the benchmark suite's own helpers: medians of
interleaved repetitions after a warm-up); FLOPs are XLA's count for one step's forward and
backward times T (XLA counts a scan's body once, so the whole program's count is T times too
small).

Writes ``results/cost/``: ``config.json``, ``results.json``, ``cost.png``, ``report.md``.
"""

from __future__ import annotations

import sys
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import timing  # noqa: E402

SIZES = {
    "quick": dict(hidden_sizes=[4, 8], batch=2, seq_len=5, input_size=3, repeats=2, seeds=2,
                  train_seq_len=5, train_hidden=4, steps=20, learning_rates=[1e-3, 1e-2],
                  cells=["rnn", "lstm", "gru", "min_gru"]),
    "cpu": dict(hidden_sizes=[64, 256], batch=32, seq_len=100, input_size=32, repeats=7,
                cells=["rnn", "lstm", "gru", "min_gru", "min_lstm", "lru"], seeds=5,
                train_seq_len=50, train_hidden=64, steps=1000,
                learning_rates=[1e-3, 3e-3, 1e-2, 3e-2], seed=0),
    "paper": dict(hidden_sizes=[128, 512, 1024], batch=64, seq_len=256, input_size=128),
}


def step_costs(names, H, s) -> dict:
    """Per cell at hidden size H: params, forward+backward FLOPs and median seconds."""
    xs = jax.random.normal(jax.random.key(1), (s["batch"], s["seq_len"], s["input_size"]))
    fns, out = {}, {}
    for name in names:
        cell = common.CELLS[name](H)
        params = cell.init(jax.random.key(0), s["input_size"])

        def loss(p, xs, cell=cell):
            return jnp.mean(gr.unroll(cell, p, xs)[1] ** 2)

        grad = jax.jit(jax.grad(loss))
        fns[name] = lambda grad=grad, params=params: grad(params, xs)
        out[name] = {"params": gr.num_params(params),
                     "flops": timing.unroll_flops(cell, params, s["batch"], s["seq_len"],
                                                  s["input_size"])}
    times = timing.interleaved(fns, s["repeats"])
    for name in names:
        out[name].update(seconds=times[name]["median"], times=times[name]["times"],
                         gflops=out[name]["flops"] / times[name]["median"] / 1e9)
    return out


# MSE spans decades, as in adding_problem.py
OBJECTIVE = common.Objective("loss", log=True, tolerance=0.1)


def time_to_solve(run, names, s) -> tuple[dict, dict]:
    """Per cell at its tuned learning rate: seconds per training step (one seed, compiled)
    and the first evaluated step at which each seed's validation MSE solved the adding
    problem (NaN: never); and the :class:`common.Tuned` cells."""
    task = gr.tasks.adding(s["train_seq_len"])
    out, tuned = {}, {}
    for name in names:
        config = gr.train.Config(cell=common.CELLS[name](s["train_hidden"]), task=task,
                                 steps=s["steps"], eval_every=max(1, s["steps"] // 20))
        t = tuned[name] = run.tune(f"adding T={s['train_seq_len']}", name, config, OBJECTIVE)
        first = _first_solved(task, t.curves, t.steps)
        # a check on the choice: the rate at which the cell solves soonest (median over seeds)
        every = _first_solved(task, np.asarray(t.result.metrics["loss"]), t.steps)  # [G, S]
        fastest = int(np.argmin(np.median(np.nan_to_num(every, nan=np.inf), axis=1)))
        short = gr.train.make_train(
            gr.train.Config(cell=config.cell, task=task, steps=config.eval_every,
                            eval_every=config.eval_every))
        seconds = timing.time_run(jax.jit(short), jax.random.key(0), repeats=s["repeats"])
        per_step = seconds / config.eval_every
        out[name] = {"rate": t.rate, "steps_to_solve": first, "seconds_per_step": per_step,
                     "seconds_to_solve": first * per_step,
                     "fastest_rate": float(t.rates[fastest]),
                     "seconds_to_solve_fastest": every[fastest] * per_step}
    return out, tuned


def _first_solved(task, curves, steps) -> np.ndarray:
    """The first evaluated step whose validation MSE solves the task, per curve ``[..., E]``
    (NaN: never)."""
    solved = np.asarray(task.solved({"loss": curves}))
    return np.where(solved.any(-1), np.asarray(steps)[np.argmax(solved, -1)], np.nan)


def _log_ratio(a, b) -> tuple[dict, int]:
    """The t interval of ``log10(a / b)`` over the seeds where both are finite (NaN with
    fewer than two), and their count."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return common.interval(np.log10(a[both] / b[both])), int(both.sum())


def main(argv=None) -> dict:
    run = common.start("cost", __doc__, SIZES, argv)
    s = run.settings
    names = s["cells"]
    peak = timing.matmul_peak(256 if run.scale == "quick" else 1024)
    per_size = {H: step_costs(names, H, s) for H in s["hidden_sizes"]}
    solve, tuned = time_to_solve(run, names, s)
    run.results = {"matmul_peak_gflops": peak / 1e9, "per_size": per_size, "training": solve}

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
    width = 0.8 / len(s["hidden_sizes"])
    for k, H in enumerate(s["hidden_sizes"]):
        x = np.arange(len(names)) + k * width
        axes[0].bar(x, [per_size[H][n]["params"] for n in names], width, label=f"H={H}")
        axes[1].bar(x, [1e3 * per_size[H][n]["seconds"] for n in names], width, label=f"H={H}")
    for ax, ylabel in zip(axes[:2], ("parameters", "ms per forward+backward")):
        ax.set_xticks(np.arange(len(names)) + width * (len(s["hidden_sizes"]) - 1) / 2,
                      [common.label(n) for n in names])
        ax.set(ylabel=ylabel, yscale="log")
        ax.legend()
    axes[0].set_title(f"Parameters (I={s['input_size']})")
    axes[1].set_title(f"gr.unroll forward+backward, B={s['batch']}, T={s['seq_len']}")
    for i, n in enumerate(names):
        v = np.asarray(solve[n]["seconds_to_solve"], np.float64)
        axes[2].scatter(np.full(v.shape, i), np.where(np.isfinite(v), v, np.nan), color=f"C{i}")
        never = int(np.sum(~np.isfinite(v)))
        if never:
            axes[2].annotate(f"{never} never", (i, 0.02), xycoords=("data", "axes fraction"),
                             ha="center")
    axes[2].set_xticks(range(len(names)), [common.label(n) for n in names])
    axes[2].set(ylabel="seconds of training to MSE < 1/60",
                yscale="log" if any(np.isfinite(solve[n]["seconds_to_solve"]).any()
                                    for n in names) else "linear",
                title=f"Time to solve adding T={s['train_seq_len']} at each cell's tuned rate "
                      "(one dot per seed)")
    common.savefig(fig, run.out / "cost.png")

    if "gru" in names and "lstm" in names:
        for H in s["hidden_sizes"]:
            ratio = per_size[H]["gru"]["params"] / per_size[H]["lstm"]["params"]
            run.claim(f"gru-params-H{H}", source="Chung et al. 2014; Cho et al. 2014",
                      claim="the GRU has fewer parameters than the LSTM (3 gate blocks "
                            "against 4)", measure=f"parameters GRU / LSTM at H={H}, "
                                                  f"I={s['input_size']}",
                      value=f"{ratio:.3f} (exact count)",
                      verdict="agrees" if ratio < 1 else "differs",
                      note="3/4 of the weights; the GRU's extra b_hn makes it slightly more",
                      figure="cost.png", cells=())
            t_gru = np.asarray(per_size[H]["gru"]["times"])
            t_lstm = np.asarray(per_size[H]["lstm"]["times"])
            iv = common.interval(t_lstm / t_gru)
            run.claim(f"gru-faster-H{H}", source="common claim (Chung et al. 2014)",
                      claim="the GRU trains faster per step than the LSTM",
                      measure=f"LSTM / GRU forward+backward time at H={H} (interleaved "
                              "repetitions)", value=common.fmt(iv),
                      verdict=common.verdict_above(iv, 1.0),
                      note=f"{s['repeats']} repetitions; intervals are over repetitions, "
                           "not machines",
                      figure="cost.png", cells=())
        a, b = (np.asarray(solve[n]["seconds_to_solve"], np.float64) for n in ("lstm", "gru"))
        iv, both = _log_ratio(a, b)
        fast, n_fast = _log_ratio(solve["lstm"]["seconds_to_solve_fastest"],
                                  solve["gru"]["seconds_to_solve_fastest"])
        run.claim("gru-faster-to-solve", source="common claim",
                  claim="the GRU reaches a given accuracy in less training time than the LSTM",
                  measure=f"log10(LSTM / GRU seconds to solve adding T={s['train_seq_len']}), "
                          "seeds where both solved",
                  value=f"{common.fmt(iv)} ({both} seeds both solved; never: LSTM "
                        f"{int((~np.isfinite(a)).sum())}, GRU {int((~np.isfinite(b)).sum())})",
                  verdict=common.verdict_above(iv, 0.0),
                  note="positive: the GRU is faster; at the rate where each solves soonest "
                       f"(LSTM {solve['lstm']['fastest_rate']:g}, GRU "
                       f"{solve['gru']['fastest_rate']:g}): {common.fmt(fast)} ({n_fast} "
                       "seeds)",
                  figure="cost.png", cells=[tuned["lstm"], tuned["gru"]])

    rows = ["| cell | H | params | GFLOP per fwd+bwd | ms | GFLOP/s | % of matmul peak |",
            "|---|---|---|---|---|---|---|"]
    for H, per in per_size.items():
        for n, c in per.items():
            rows.append(f"| {common.label(n)} | {H} | {c['params']} | {c['flops'] / 1e9:.3f} | "
                        f"{1e3 * c['seconds']:.1f} | {c['gflops']:.1f} | "
                        f"{100 * c['gflops'] / (peak / 1e9):.0f}% |")
    rows += ["", "| cell | learning rate | ms per training step (one seed) | steps to solve | "
             "seconds to solve |", "|---|---|---|---|---|"]
    for n, t in solve.items():
        rows.append(f"| {common.label(n)} | {t['rate']:g} | {1e3 * t['seconds_per_step']:.2f} | "
                    f"{common.fmt(common.interval(t['steps_to_solve']))} | "
                    f"{common.fmt(common.interval(t['seconds_to_solve']))} |")
    body = [f"Matmul peak of this machine: {peak / 1e9:.0f} GFLOP/s (float32 `jnp.dot`, "
            "1024^3).", "", *rows, "", "![cost](cost.png)", "",
            "A cell that never solved within the budget has no time to solve (non-finite "
            "rows); the parallel-scan cells run here with the sequential scan, the faster "
            "path on a CPU."]
    return run.finish("Cost: parameters, FLOPs, time per step and time to solve", body)


if __name__ == "__main__":
    main()
