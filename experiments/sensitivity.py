"""Hyperparameter sensitivity: learning rate x dropout x hidden size, over seeds, per cell.

Question: which hyperparameter decides how well each cell learns, and do they interact?
Greff et al. 2017 (LSTM: A Search Space Odyssey), with fANOVA over random search of the
learning rate, hidden size, input noise and momentum: the learning rate is by far the most
important, then the hidden size, and the hyperparameters are nearly independent
(interactions explain little of the variance). Here the grid is Greff et al.'s two most
important hyperparameters and dropout (the regulariser this library's users tune), at one
task length.

Command:

    python experiments/sensitivity.py
    python experiments/sensitivity.py --learning-rates 1e-4 1e-3 1e-2 1e-1 --seeds 8

Runtime: 8.6 minutes on a 2-core CPU on 2026-12-06 with the defaults (adding problem at T = 50,
batch 32, 500 Adam steps, clip 1; learning rate 1e-4 / 1e-3 / 1e-2 x output dropout 0 /
0.25 / 0.5 x hidden size 16 / 32 / 64, 5 seeds: for each cell and hidden size one
``gr.sweep`` whose grid is the nine (rate, dropout) points; 45 runs vmapped in one program).

The learning rate is a factor of the study here, not tuned away: each claim's rate column
names the grid it was measured over. The budget is fixed (Greff et al. stopped early on
validation): the shares say what matters within 500 steps.

Expected outcome: the learning rate explains most of the variance of the log final loss for
every cell, dropout and hidden size less, interactions little; the tanh RNN is more
sensitive to the rate than the gated cells.

The decomposition is a functional ANOVA on the full grid (the exact form of fANOVA's when the
grid is factorial): the grid means of ``log10 loss`` split into a grand mean, main effects and
interactions; a factor's share is its effect's variance over the total. Intervals come from
resampling seeds within each grid point (200 bootstrap draws).

Writes ``results/sensitivity/``: ``config.json``, ``results.json`` (final loss per cell,
length, grid point and seed; the variance shares), ``heatmaps.png``, ``shares.png``,
``report.md``.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np

import gatedrnn as gr

try:
    from experiments import common
except ImportError:  # run as a script: experiments/ is on sys.path
    import common

SIZES = {
    "quick": dict(seq_len=6, hidden_sizes=[4, 8], seeds=2, steps=10,
                  learning_rates=[1e-3, 1e-2], dropouts=[0.0, 0.5]),
    "cpu": dict(seq_len=50, hidden_sizes=[16, 32, 64], seeds=5, steps=500, batch_size=32,
                learning_rates=[1e-4, 1e-3, 1e-2], dropouts=[0.0, 0.25, 0.5],
                cells=["rnn", "lstm", "gru"], bootstrap=200, seed=0),
    "paper": dict(seq_len=100, hidden_sizes=[32, 64, 128, 256], seeds=10, steps=5000,
                  learning_rates=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
}
FACTORS = ("learning rate", "dropout", "hidden size")


def variance_shares(y: np.ndarray) -> dict:
    """Functional ANOVA of a full factorial table ``y [n_1, ..., n_k]`` (one factor per
    axis): the share of the variance of ``y`` explained by each factor's main effect
    (``"0"``, ``"1"``, ...), each pair's interaction (``"0x1"``), and everything of higher
    order (``"rest"``). Shares sum to 1."""
    y = np.asarray(y, np.float64)
    total = np.mean((y - y.mean()) ** 2)
    if total == 0:
        return {}
    k = y.ndim
    mean_over = lambda keep: y.mean(  # noqa: E731
        axis=tuple(a for a in range(k) if a not in keep), keepdims=True)
    main = {a: mean_over((a,)) - y.mean() for a in range(k)}
    shares = {str(a): float(np.mean(np.broadcast_to(main[a], y.shape) ** 2)) / total
              for a in range(k)}
    for a, b in itertools.combinations(range(k), 2):
        effect = mean_over((a, b)) - main[a] - main[b] - y.mean()
        shares[f"{a}x{b}"] = float(np.mean(np.broadcast_to(effect, y.shape) ** 2)) / total
    shares["rest"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def _basic_interval(estimate: float, draws) -> list[float]:
    """The basic bootstrap interval ``[2 est - q97.5, 2 est - q2.5]`` in [0, 1]: resampling
    seeds adds noise variance, which biases every draw's share down, and the basic interval
    corrects for that bias where the percentile interval would not contain the estimate."""
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(np.clip(2 * estimate - hi, 0, 1)), float(np.clip(2 * estimate - lo, 0, 1))]


def named(shares: dict) -> dict:
    def name(key):
        if key == "rest":
            return "higher-order"
        return " x ".join(FACTORS[int(i)] for i in key.split("x"))
    return {name(k): v for k, v in shares.items()}


def main(argv=None) -> dict:
    run = common.start("sensitivity", __doc__, SIZES, argv)
    s = run.settings
    lrs, drops, Hs = s["learning_rates"], s["dropouts"], s["hidden_sizes"]
    task = gr.tasks.adding(s["seq_len"])
    results = {}
    for name in s["cells"]:
        losses = []  # [H][G, S]
        for H in Hs:
            config = gr.train.Config(cell=common.CELLS[name](H), task=task,
                                     steps=s["steps"], batch_size=s["batch_size"])
            result = run.sweep(f"{name}-H{H}", config,
                               grid={"learning_rate": lrs, "dropout": drops})
            losses.append(common.final(result, "loss"))
        # [lr, dropout, H, seed]; the grid's first axis (learning rate) varies slowest
        loss = np.stack(losses, axis=1).reshape(len(lrs), len(drops), len(Hs), -1)
        finite = np.isfinite(loss)
        y = np.log10(np.where(finite, loss, np.nan))
        # a diverged run is the worst outcome, not a missing one: the largest loss seen
        y = np.where(finite, y, np.nanmax(y))
        rng = np.random.default_rng(s["seed"])
        draws = [variance_shares(np.take_along_axis(
            y, rng.integers(0, y.shape[-1], y.shape), -1).mean(-1))
            for _ in range(s["bootstrap"])]
        shares = variance_shares(y.mean(-1))
        results[name] = {
            "loss": loss, "nonfinite_runs": int((~finite).sum()), "shares": named(shares),
            "share_intervals": named({k: _basic_interval(shares[k], [d[k] for d in draws])
                                      for k in shares})}
    run.results = results

    fig, axes = plt.subplots(len(results), len(Hs), figsize=(4.2 * len(Hs), 3.6 * len(results)),
                             layout="constrained", squeeze=False)
    for row, (name, r) in enumerate(results.items()):
        mean = np.log10(np.asarray(r["loss"], np.float64)).mean(-1)
        for col, H in enumerate(Hs):
            ax = axes[row, col]
            image = ax.imshow(mean[:, :, col], cmap="viridis_r", aspect="auto")
            for i, j in itertools.product(range(len(lrs)), range(len(drops))):
                ax.text(j, i, f"{mean[i, j, col]:.2f}", ha="center", va="center", color="w")
            ax.set_xticks(range(len(drops)), [f"{d:g}" for d in drops])
            ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs])
            ax.set(xlabel="output dropout", ylabel="learning rate",
                   title=f"{common.label(name)}, hidden {H}")
            fig.colorbar(image, ax=ax, label="mean log10 final MSE")
    common.savefig(fig, run.out / "heatmaps.png")

    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    keys = list(next(iter(results.values()))["shares"])
    width = 0.8 / len(results)
    for i, (name, r) in enumerate(results.items()):
        x = np.arange(len(keys)) + i * width
        values = [r["shares"][k] for k in keys]
        lo_hi = np.asarray([r["share_intervals"][k] for k in keys]).T
        ax.bar(x, values, width, label=common.label(name), color=f"C{i}")
        ax.errorbar(x, values, yerr=[np.maximum(0, values - lo_hi[0]),
                                     np.maximum(0, lo_hi[1] - values)], fmt="none", color="k")
    ax.set_xticks(np.arange(len(keys)) + width * (len(results) - 1) / 2, keys, rotation=20,
                  ha="right")
    ax.set(ylabel="share of variance of log10 final MSE", ylim=(0, 1),
           title=f"What the final loss on adding T={s['seq_len']} depends on (functional "
                 "ANOVA, 95% bootstrap intervals)")
    ax.legend()
    common.savefig(fig, run.out / "shares.png")

    for name, r in results.items():
        sh, iv = r["shares"], r["share_intervals"]
        lr = sh["learning rate"]
        others = max(v for k, v in sh.items() if k != "learning rate")
        interactions = sum(v for k, v in sh.items() if " x " in k or k == "higher-order")
        lr_low = iv["learning rate"][0]
        holds = lr_low > max(iv[k][1] for k in sh if k != "learning rate")
        run.claim(
            f"lr-dominates-{name}", source="Greff et al. 2017",
            claim=f"the learning rate is the most important hyperparameter ({common.label(name)})",
            measure="share of the variance of log10 final MSE explained by the learning rate",
            value=f"{lr:.2f} [{iv['learning rate'][0]:.2f}, {iv['learning rate'][1]:.2f}]",
            verdict="agrees" if holds else "differs" if lr < others else "inconclusive",
            note=f"next largest share {others:.2f}; all interactions together "
                 f"{interactions:.2f}; a fixed budget of {s['steps']} steps",
            figure="shares.png", cells=(),
            swept=f"{min(lrs):g} to {max(lrs):g} ({len(lrs)} rates)")

    rows = ["| cell | " + " | ".join(keys) + " | runs diverged |",
            "|---|" + "---|" * (len(keys) + 1)]
    for name, r in results.items():
        rows.append(f"| {common.label(name)} | " + " | ".join(
            f"{r['shares'][k]:.2f} [{r['share_intervals'][k][0]:.2f}, "
            f"{r['share_intervals'][k][1]:.2f}]" for k in keys) + f" | {r['nonfinite_runs']} |")
    body = ["Share of the variance of the mean log10 final MSE over the grid explained by each "
            "factor and interaction, [95% bootstrap interval over seeds]:", "", *rows, "",
            "![shares](shares.png)", "", "![heatmaps](heatmaps.png)", "",
            "Dropout here is on the recurrent layer's outputs before the readout (Zaremba et "
            "al. 2014); the adding problem has no noise to regularise against, so dropout can "
            "only hurt, and its share says how much."]
    return run.finish("Hyperparameter sensitivity: learning rate, dropout, hidden size", body)


if __name__ == "__main__":
    main()
