"""What every experiment shares: sizes and flags, sweeps under ``out_dir``, intervals over
seeds, claims with verdicts, and the files each run writes.

An experiment is a module with a docstring (question, command, runtime, expected outcome),
a ``SIZES`` dict (``"quick"``: the toy size the tests run; ``"cpu"``: the default, minutes on
2 cores; ``"paper"``: the published sizes, for a GPU or TPU) and a ``main(argv)`` that calls
:func:`start`, trains through :func:`sweep` and ends with :func:`finish`. Every size key is
also a command-line flag (``--seq-lens 50 100``), so any setting can be changed without
editing the script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import gatedrnn as gr

# the cells the study compares, by the names its figures and tables use
CELLS = {
    "rnn": lambda h, **kw: gr.rnn(h, **kw),
    "lstm": lambda h, **kw: gr.lstm(h, **kw),
    "gru": lambda h, **kw: gr.gru(h, **kw),
    "min_gru": lambda h, **kw: gr.min_gru(h, **kw),
    "min_lstm": lambda h, **kw: gr.min_lstm(h, **kw),
    "lru": lambda h, **kw: gr.lru(h, **kw),
}
LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU", "min_gru": "minGRU",
          "min_lstm": "minLSTM", "lru": "LRU",
          "min_gru_x2": "minGRU x2", "lstm_chrono": "LSTM (chrono)"}


class Run:
    """One invocation of an experiment: its name, settings, output folder and results."""

    def __init__(self, name: str, settings: dict, out: Path, scale: str):
        self.name, self.settings, self.out, self.scale = name, settings, out, scale
        self.results: dict = {}
        self.claims: list[dict] = []
        self.started = time.perf_counter()
        self._sweeps = 0
        self.loaded = 0  # sweeps finished by an earlier invocation: their time is not in ours

    def sweep(self, label: str, config: gr.train.Config, **grid) -> gr.SweepResult:
        """``gr.sweep`` of ``config`` over ``settings["seeds"]`` seeds and ``grid``, stored in
        ``out/sweeps/<label>-<hash>``: the hash covers the config, seeds and grid, so a run
        with other settings trains anew while the same run resumes or loads its results."""
        self._sweeps += 1
        seeds = self.settings["seeds"]
        identity = json.dumps([gr.sweeps.describe_config(config), seeds,
                               {k: list(map(float, v)) for k, v in grid.items()},
                               self.settings["seed"]], sort_keys=True, default=str)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
        out_dir = self.out / "sweeps" / f"{label}-{digest}"
        finished = (out_dir / "summary.json").is_file()
        self.loaded += finished
        print(f"[{self.name} {self._sweeps}] {label}: {seeds} seeds"
              + "".join(f" x {len(v)} {k}" for k, v in grid.items())
              + f", {config.steps} steps" + (" (finished earlier: loading)" if finished else ""),
              flush=True)
        return gr.sweep(config, seeds=seeds, out_dir=out_dir,
                        key=jax.random.key(self.settings["seed"]), **grid)

    def claim(self, claim_id: str, *, source: str, claim: str, measure: str, value: str,
              verdict: str, note: str, figure: str | None = None) -> None:
        """Records one row of the claims table (``verdict``: agrees, differs, inconclusive)."""
        if verdict not in ("agrees", "differs", "inconclusive"):
            raise ValueError(f"verdict must be agrees, differs or inconclusive; got {verdict!r}")
        self.claims.append(dict(id=claim_id, experiment=self.name, source=source, claim=claim,
                                measure=measure, value=value, verdict=verdict, note=note,
                                figure=figure))

    def finish(self, title: str, body: list[str]) -> dict:
        """Writes ``results.json`` (settings, results, claims) and ``report.md`` (title, the
        settings, the claims table, then ``body``), and returns the results payload."""
        minutes = (time.perf_counter() - self.started) / 60
        loaded = self.loaded
        previous = self.out / "results.json"
        if self._sweeps and loaded == self._sweeps and previous.is_file():
            # every sweep came from the run that wrote these files: keep its running time
            before = json.loads(previous.read_text())
            if before.get("settings") == to_json(self.settings) and "minutes" in before:
                minutes, loaded = before["minutes"], before.get("sweeps_loaded", 0)
        payload = {"experiment": self.name, "scale": self.scale, "settings": self.settings,
                   "environment": environment(), "minutes": round(minutes, 2),
                   "sweeps": self._sweeps, "sweeps_loaded": loaded,
                   "results": to_json(self.results), "claims": self.claims}
        write_json(self.out / "results.json", payload)
        lines = [f"# {title}", "", "Settings: " + ", ".join(
            f"{k} {v}" for k, v in self.settings.items()) + f" ({self.scale} scale; "
            f"{minutes:.1f} min on {environment()['machine']}{loaded_note(loaded)}).", ""]
        if self.claims:
            lines += claims_table(self.claims) + [""]
        (self.out / "report.md").write_text("\n".join(lines + body) + "\n")
        print(f"[{self.name}] wrote {self.out}/report.md and results.json "
              f"({minutes:.1f} min)", flush=True)
        return payload


def loaded_note(loaded: int) -> str:
    return f", {loaded} sweeps loaded from an earlier run, not timed" if loaded else ""


def start(name: str, doc: str, sizes: dict, argv=None, *, cells=tuple(CELLS)) -> Run:
    """Parses the command line: ``--quick`` or ``--scale {cpu,paper}`` picks a column of
    ``sizes``; ``--out-dir`` (default ``results/<name>``); one flag per size key overrides
    it; ``--cells`` must name entries of ``cells``. Writes ``config.json`` and returns the
    :class:`Run`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=[s for s in sizes if s != "quick"], default="cpu",
                        help="cpu: minutes on 2 cores (default); paper: the published sizes")
    parser.add_argument("--quick", action="store_true", help="a toy size, for the tests")
    parser.add_argument("--out-dir", default=None, help=f"default results/{name}")
    for key, value in sizes["cpu"].items():
        kind = type(value[0]) if isinstance(value, (list, tuple)) else type(value)
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=None,
                            nargs="+" if isinstance(value, (list, tuple)) else None,
                            help=f"default {value} (paper {sizes['paper'].get(key, value)})")
    args = vars(parser.parse_args(argv))
    scale = "quick" if args["quick"] else args["scale"]
    settings = dict(sizes["cpu"], **sizes[scale])
    settings.update({k: v for k, v in args.items() if k in settings and v is not None})
    if settings["seeds"] < 2:
        raise SystemExit("--seeds must be at least 2: the intervals are over seeds")
    unknown = [c for c in settings.get("cells", []) if c not in cells]
    if unknown:
        raise SystemExit(f"--cells: unknown {unknown}; choose from {list(cells)}")
    out = Path(args["out_dir"] or f"results/{name}").expanduser()
    _check_out_dir(out, name)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"experiment": name, "scale": scale, "settings": settings,
                                     "command": " ".join([f"python experiments/{name}.py",
                                                          *(sys.argv[1:] if argv is None
                                                            else argv)]),
                                     "environment": environment()})
    return Run(name, settings, out, scale)


def _check_out_dir(out: Path, name: str) -> None:
    """An experiment writes only into a new or empty folder or one an earlier run of the same
    experiment made (its ``config.json`` says so), so no file of anyone else's is
    overwritten."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out-dir {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        owner = json.loads((out / "config.json").read_text()).get("experiment")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != name:
        present = sorted(p.name for p in out.iterdir())[:5]
        raise SystemExit(f"--out-dir {out} holds {present} and no record of a {name} run "
                         "(config.json); an experiment writes only into a new or empty folder "
                         "or its own earlier one. Choose another --out-dir")


def environment() -> dict:
    return {"machine": f"{platform.machine()} {jax.devices()[0].device_kind} "
                       f"x{jax.device_count()}",
            "gatedrnn": gr.__version__, "jax": jax.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------- numbers

def final(result: gr.SweepResult, metric: str) -> np.ndarray:
    """The last evaluation of ``metric``: ``[G, S, ...]`` (metrics are ``[G, S, E, ...]``)."""
    return np.asarray(result.metrics[metric])[:, :, -1]


def finals(result: gr.SweepResult, task) -> dict:
    """Every metric's last evaluation ``[G, S]``, plus ``"solved"`` by ``task.solved``."""
    last = {k: final(result, k) for k in result.metrics}
    return {**last, "solved": np.asarray(task.solved(last), bool)}


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile, by bisection on the CDF ``1 - I_{df/(df+t^2)}(df/2, 1/2) / 2``
    (so no SciPy is needed)."""
    from jax.scipy.special import betainc
    lo, hi = 0.0, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = 1 - 0.5 * float(betainc(df / 2, 0.5, df / (df + mid * mid)))
        lo, hi = (mid, hi) if cdf < p else (lo, mid)
    return (lo + hi) / 2


def interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` (one per seed) and its t interval. A non-finite value makes every
    entry NaN and sets ``nonfinite``: a diverged seed is never averaged away."""
    v = np.asarray(values, np.float64).ravel()
    n = int(v.size)
    if not np.all(np.isfinite(v)) or n < 2:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": n,
                "nonfinite": int(np.sum(~np.isfinite(v)))}
    half = t_quantile(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return {"mean": float(v.mean()), "low": float(v.mean() - half),
            "high": float(v.mean() + half), "n": n, "nonfinite": 0}


def rate_interval(successes, level: float = 0.95) -> dict:
    """A proportion and its Wilson score interval (good at 0/n and n/n, unlike the t one)."""
    s = np.asarray(successes, bool).ravel()
    n, k = int(s.size), int(s.sum())
    z = t_quantile(0.5 + level / 2, 10**6)
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return {"mean": k / n, "low": max(0.0, centre - half), "high": min(1.0, centre + half),
            "n": n, "k": k}


def fmt(iv: dict, digits: int = 3) -> str:
    """``mean [low, high]`` (``k/n`` first for a rate); NaN as ``non-finite``."""
    if "k" in iv:
        return f"{iv['k']}/{iv['n']} [{iv['low']:.2f}, {iv['high']:.2f}]"
    if not math.isfinite(iv["mean"]):
        if iv["n"] < 2:
            return f"too few values ({iv['n']})"
        return f"non-finite ({iv.get('nonfinite', 0)} of {iv['n']} seeds)"
    return f"{iv['mean']:.{digits}g} [{iv['low']:.{digits}g}, {iv['high']:.{digits}g}]"


def verdict_below(iv: dict, threshold: float, expected: bool) -> str:
    """agrees / differs / inconclusive for the claim "the mean is below ``threshold``"
    (``expected``) or "it is not" (``not expected``), from where the interval lies."""
    if not math.isfinite(iv["mean"]):
        return "inconclusive"
    below, above = iv["high"] < threshold, iv["low"] > threshold
    if not (below or above):
        return "inconclusive"
    return "agrees" if below == expected else "differs"


def verdict_above(iv: dict, threshold: float) -> str:
    """agrees when the interval lies above ``threshold``, differs when below."""
    return {"agrees": "differs", "differs": "agrees"}.get(
        verdict_below(iv, threshold, expected=True), "inconclusive")


def to_json(tree):
    """NumPy and JAX values as lists and floats; NaN and inf as strings (JSON has neither)."""
    if isinstance(tree, dict):
        return {str(k): to_json(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_json(v) for v in tree]
    if hasattr(tree, "tolist") and not isinstance(tree, (str, bytes)):
        return to_json(np.asarray(tree).tolist())
    if isinstance(tree, float) and not math.isfinite(tree):
        return str(tree)
    return tree


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(payload), indent=1))
    tmp.replace(path)  # never a half-written file


# ----------------------------------------------------------------------------------- report

def claims_table(claims: list[dict], *, link: bool = False) -> list[str]:
    """Markdown rows: claim (source), measure, our value, verdict, note; ``link`` adds a first
    column naming each claim's experiment, linked to its section."""
    head = "| claim (source) | measure | ours (mean [95% interval] over seeds) | verdict | note |"
    rows = [("| experiment " if link else "") + head,
            ("|---" if link else "") + "|---|---|---|---|---|"]
    for c in claims:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        first = f"| [{c['experiment']}](#{c['experiment']}) " if link else ""
        rows.append(f"{first}| {cell(c['claim'])} ({cell(c['source'])}) | {cell(c['measure'])} | "
                    f"{cell(c['value'])} | **{c['verdict']}** | {cell(c['note'])} |")
    return rows


def savefig(fig, path: Path) -> str:
    gr.plots.save(fig, path)
    return path.name


def label(name: str) -> str:
    return LABELS.get(name, name)
