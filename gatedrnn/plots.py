"""Matplotlib figures for the diagnostics. Each function takes ``label -> array`` dicts (one
entry per cell or condition, with a leading seed axis where there is a band to draw) and
returns the figure; ``save(fig, path)`` writes a PNG.

Host code: call it on concrete results, outside jit.
"""

from __future__ import annotations

# no matplotlib.use(...): a notebook keeps its inline backend, and matplotlib itself picks
# Agg where there is no display
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib import colors as mcolors

# one colour per cell family, whichever way a label spells it ("tanh RNN", "min_gru", ...)
_COLORS = (("mingru", "tab:orange"), ("minlstm", "tab:purple"), ("lru", "tab:brown"),
           ("lstm", "tab:blue"), ("gru", "tab:green"), ("tanhrnn", "tab:red"),
           ("rnn", "tab:red"), ("irnn", "tab:pink"))


def _family_color(label: str) -> str | None:
    key = label.lower().replace("_", "").replace(" ", "")
    for prefix, color in _COLORS:
        if key.startswith(prefix):
            return color
    return None


def _palette(labels) -> list[str]:
    """One colour per label: its cell family's the first time a family appears (the LSTM is
    blue in every figure), then colours no other label of the figure uses."""
    spare = list(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    taken = {mcolors.to_hex(c) for c in (_family_color(label) for label in labels) if c}
    spare = [c for c in spare if mcolors.to_hex(c) not in taken]
    out, used = [], set()
    for label in labels:
        color = _family_color(label)
        if color is None or mcolors.to_hex(color) in used:
            color = spare.pop(0) if spare else f"C{len(out) % 10}"
        used.add(mcolors.to_hex(color))
        out.append(color)
    return out


def _band(ax, x, runs, label, color):
    """Median line and 10-90% band over the leading (seed) axis of ``runs [S, N]``."""
    runs = np.atleast_2d(np.asarray(runs, np.float64))
    finite = np.where(np.isfinite(runs), runs, np.nan)
    median = np.nanmedian(finite, axis=0)
    ax.plot(x, median, color=color, lw=2, label=f"{label} (median of {runs.shape[0]})"
            if runs.shape[0] > 1 else label)
    if runs.shape[0] > 1:
        lo, hi = np.nanpercentile(finite, [10, 90], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def gradient_norms(log10_norms: dict, *, title: str = "Gradient norm against lag",
                   ylabel: str = r"$\log_{10}\,\|\partial L / \partial h_t\|$", ax=None):
    """Gradient norm against lag ``T - 1 - t`` on a log scale, median and band over seeds.

    Args:
        log10_norms: label -> ``[S, T]`` (or ``[T]``) ``log10`` norms indexed by step ``t``
            (as :func:`gatedrnn.diagnostics.gradient_norms` returns them, stacked over seeds).
    """
    fig, ax = _figure(ax)
    colors = _palette(list(log10_norms))
    for i, (label, runs) in enumerate(log10_norms.items()):
        runs = np.atleast_2d(np.asarray(runs))[:, ::-1]  # index by lag, not by step
        _band(ax, np.arange(runs.shape[1]), runs, label, colors[i])
    ax.set(xlabel="lag T - 1 - t (steps back from the loss)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def jacobian_spectrum(singular_values: dict, *, title: str = "One-step Jacobian spectra",
                      ax=None):
    """Singular values of the one-step Jacobians, sorted, median and band over all steps.

    Args:
        singular_values: label -> ``[..., N]`` singular values (e.g. ``[B, T, N]`` from
            :func:`gatedrnn.diagnostics.jacobian_spectrum`); all leading axes pool into the band.
    """
    fig, ax = _figure(ax)
    colors = _palette(list(singular_values))
    for i, (label, values) in enumerate(singular_values.items()):
        values = np.asarray(values, np.float64)
        values = values.reshape(-1, values.shape[-1])
        _band(ax, np.arange(1, values.shape[1] + 1), values, label, colors[i])
    ax.axhline(1.0, color="k", lw=1, ls="--", label="1 (norm-preserving)")
    ax.set(xlabel="singular value index", ylabel="singular value of d carry_t / d carry_{t-1}",
           yscale="log", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def gate_saturation(fractions: dict, *, title: str = "Gate saturation over time", ax=None):
    """Fraction of saturated gate units over time.

    Args:
        fractions: label -> ``[T]`` (or ``[S, T]``) fraction of units saturated, e.g.
            ``{"LSTM forget > 0.9": stats.saturated_high["forget"], ...}``.
    """
    fig, ax = _figure(ax)
    colors = _palette(list(fractions))
    for i, (label, runs) in enumerate(fractions.items()):
        runs = np.atleast_2d(np.asarray(runs))
        _band(ax, np.arange(runs.shape[1]), runs, label, colors[i])
    ax.set(xlabel="time step t", ylabel="fraction of units", ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    if fractions:  # no gated cell: an empty panel, not a warning
        ax.legend()
    return fig


def lyapunov_spectrum(exponents: dict, *, title: str = "Lyapunov spectra", ax=None):
    """Lyapunov exponents (nats per step) by index, median and band over seeds or examples.

    Args:
        exponents: label -> ``[S, k]`` exponents in descending order.
    """
    fig, ax = _figure(ax)
    colors = _palette(list(exponents))
    for i, (label, runs) in enumerate(exponents.items()):
        runs = np.atleast_2d(np.asarray(runs))
        _band(ax, np.arange(1, runs.shape[1] + 1), runs, label, colors[i])
    ax.axhline(0.0, color="k", lw=1, ls="--", label="0 (neutral)")
    ax.set(xlabel="exponent index", ylabel="Lyapunov exponent (nats per step)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def learning_curves(steps, runs: dict, *, baselines: dict | None = None,
                    ylabel: str = "loss", title: str = "Learning curves", ax=None):
    """A metric against training step on a log scale, median and band over seeds.

    Args:
        steps: ``[E]`` training steps of the evaluation points.
        runs: label -> ``[S, E]`` metric values (positive).
        baselines: label -> value, drawn as horizontal lines (e.g. a task's trivial solution).
    """
    fig, ax = _figure(ax)
    colors = _palette(list(runs))
    for i, (label, values) in enumerate(runs.items()):
        _band(ax, np.asarray(steps), np.log10(np.asarray(values, np.float64)), label,
              colors[i])
    for j, (label, value) in enumerate((baselines or {}).items()):
        ax.axhline(np.log10(value), color="k" if j == 0 else "grey", ls="--" if j == 0 else ":",
                   lw=1, label=label)
    ax.set(xlabel="training step", ylabel=f"log10 {ylabel}", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def against(x, runs: dict, *, xlabel: str, ylabel: str, title: str = "",
            baselines: dict | None = None, log_y: bool = True, log_x: bool = False, ax=None):
    """A final metric against a setting (sequence length, learning rate, n), median line and
    10-90% band over seeds, one line per cell or condition.

    Args:
        x: ``[K]`` the setting's values.
        runs: label -> ``[S, K]`` the metric per seed at each value.
        baselines: label -> value, drawn as horizontal lines.
        log_y: plot ``log10`` of the metric (for losses spanning decades).
    """
    fig, ax = _figure(ax)
    f = np.log10 if log_y else np.asarray
    colors = _palette(list(runs))
    for i, (label, values) in enumerate(runs.items()):
        _band(ax, np.asarray(x), f(np.asarray(values, np.float64)), label, colors[i])
    for j, (label, value) in enumerate((baselines or {}).items()):
        ax.axhline(f(value), color="k" if j == 0 else "grey", ls="--" if j == 0 else ":",
                   lw=1, label=label)
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [f"{v:g}" for v in x])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the x values
    ax.set(xlabel=xlabel, ylabel=f"log10 {ylabel}" if log_y else ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _figure(ax):
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        return fig, ax
    return ax.figure, ax


def save(fig, path) -> None:
    """Writes ``fig`` as a PNG at ``path`` and closes it."""
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "against", "gate_saturation", "gradient_norms", "jacobian_spectrum", "learning_curves",
    "lyapunov_spectrum", "save",
]
