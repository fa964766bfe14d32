"""What every experiment shares: sizes and flags, sweeps under ``out_dir``, the tuning
protocol, intervals over seeds, claims with verdicts, and the files each run writes.

An experiment is a module with a docstring (question, command, runtime, expected outcome),
a ``SIZES`` dict (``"quick"``: the toy size the tests run; ``"cpu"``: the default, minutes on
2 cores; ``"paper"``: the published sizes, for a GPU or TPU) and a ``main(argv)`` that calls
:func:`start`, trains through :func:`sweep` and ends with :func:`finish`. Every size key is
also a command-line flag (``--seq-lens 50 100``), so any setting can be changed without
editing the script.

The protocol every comparison between cells follows (DESIGN.md, "Experiments"):

1. **Tuned per cell.** :meth:`Run.tune` trains one ``gr.sweep`` over seeds x a log-spaced
   learning-rate grid (``settings["learning_rates"]``), evaluated on a *validation* split
   (a data task's ``validation`` set; fresh batches for a synthetic task), and picks the
   rate whose seeds' mean final validation score is best (:func:`select_rate`). The test
   data (a data task's ``test``; a fixed batch from a key no training or validation batch
   uses, for a synthetic task) is evaluated once, at the chosen rate.
2. **Converged or labelled.** :func:`convergence`: a cell converged when, on the median
   validation curve over seeds, the best value in the last 20% of training improves on the
   value at 80% by less than the objective's tolerance.
3. **Verdicts.** :func:`protocol_verdict`: "differs" stands only when every cell was tuned
   (at least 4 rates spanning at least 10x, the best not at a grid edge it beats its
   neighbour by more than the tolerance), converged, over at least 5 seeds; otherwise the
   row is "inconclusive" and says why. A claim about trained cells that did not go through
   the protocol cannot be "differs" either (:func:`settle`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from scipy import stats

import gatedrnn as gr
from gatedrnn.sweeps import to_json, write_json

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
          "min_gru_x2": "minGRU x2", "lstm_chrono": "LSTM (chrono)",
          "min_gru_neg": "minGRU (-1, 1)", "min_lstm_neg": "minLSTM (-1, 1)",
          "slstm": "sLSTM", "mlstm": "mLSTM", "rg_lru": "RG-LRU", "rg_lru_neg": "RG-LRU (-1, 1)"}


# ------------------------------------------------------------------------- the protocol

MIN_RATES, MIN_SPAN, MIN_SEEDS = 4, 10.0, 5  # what "tuned" and "differs" need
TEST_SALT = 0x7E57  # folded into the experiment's seed for a synthetic task's test batch


@dataclasses.dataclass(frozen=True)
class Objective:
    """What tuning optimises on the validation split, and when a run counts as converged.

    Attributes:
        metric: the validation metric (a key of the task's metrics).
        maximize: higher is better (accuracy); else lower (loss, bits per character).
        log: compare values in decades (``log10``; losses spanning decades, such as MSE),
            else in the metric's own units.
        tolerance: converged when the best of the last ``window`` of training improves on
            the value at its start by less than this (decades when ``log``).
        window: the final fraction of the evaluations that convergence looks at.
    """

    metric: str = "loss"
    maximize: bool = False
    log: bool = True
    tolerance: float = 0.05
    window: float = 0.2

    def score(self, values) -> np.ndarray:
        """``values`` as scores where higher is better, in the tolerance's units; a
        non-finite value scores ``-inf`` (a diverged run is never the best)."""
        v = np.asarray(values, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.log10(v) if self.log else v
        score = score if self.maximize else -score
        return np.where(np.isfinite(score), score, -np.inf)

    def describe(self) -> str:
        unit = " decades" if self.log else ""
        return (f"validation {self.metric} ({'higher' if self.maximize else 'lower'} is "
                f"better); converged: improves by < {self.tolerance:g}{unit} over the last "
                f"{self.window:.0%} of steps")


def select_rate(validation, objective: Objective) -> int:
    """The index of the best grid point, from the final validation metric ``[G, S]``: the
    highest mean score over seeds (a point where any seed diverged scores ``-inf``); the
    smaller rate on a tie."""
    return int(np.argmax(objective.score(validation).mean(axis=1)))


def convergence(curves, objective: Objective) -> tuple[bool, float]:
    """``(converged, improvement)`` of validation curves ``[S, E]`` (evaluation ``e`` after
    ``(e + 1) / E`` of the steps): on the median score over seeds, ``improvement`` is the
    best score after the evaluation at ``1 - window`` of the steps minus the score there.
    Fewer than two evaluations, or a non-finite median, never count as converged."""
    median = np.median(objective.score(curves), axis=0)
    start = round((1 - objective.window) * median.size) - 1
    if start < 0 or start >= median.size - 1:
        return False, float("nan")
    with np.errstate(invalid="ignore"):  # -inf - -inf: a diverged median, not converged
        improvement = float(np.max(median[start + 1:]) - median[start])
    return bool(np.isfinite(improvement) and improvement < objective.tolerance), improvement


def budget(settings: dict, name: str, task: str | None = None) -> dict:
    """Cell ``name``'s ``steps`` and ``learning_rates`` on ``task``: the run's, unless
    ``settings["budgets"]`` gives the cell its own, under ``name`` (on every task) or under
    ``"<task>/<name>"`` (on that task only; it wins over the cell's own). A cell that the
    common budget leaves unconverged at the grid's top rate is given the steps and rates it
    needs rather than judged at them; the report names its budget."""
    own = settings.get("budgets", {})
    return {"steps": settings["steps"], "learning_rates": settings["learning_rates"],
            **own.get(name, {}), **(own.get(f"{task}/{name}", {}) if task else {})}


def budgets_note(settings: dict, names) -> str:
    """``"; given their own budget: X 5000 steps, rates [...]"`` for those of ``names`` with
    one (see :func:`budget`; a task's own one says "on <task>"), else ``""``: for a report's
    description of its training."""
    own = []
    for key in settings.get("budgets", {}):
        task, _, name = key.rpartition("/")
        if name in names:
            b = budget(settings, name, task)
            own.append(f"{label(name)}{f' on {task}' if task else ''} {b['steps']} steps, "
                       f"rates {b['learning_rates']}")
    return f"; given their own budget: {'; '.join(own)}" if own else ""


def grid_tunes(rates) -> bool:
    """Whether a learning-rate grid is wide enough to call a cell tuned: at least
    ``MIN_RATES`` values spanning at least ``MIN_SPAN`` times."""
    rates = np.asarray(rates, np.float64)
    return rates.size >= MIN_RATES and rates.max() / rates.min() >= MIN_SPAN


def at_edge(validation, index: int, objective: Objective) -> bool:
    """Whether the chosen point is the first or last of the grid and beats its neighbour
    by more than the tolerance (the best rate may lie beyond the grid). A flat score (a cell
    that fails at every rate) is not at an edge."""
    mean = objective.score(validation).mean(axis=1)
    if mean.size < 2 or index not in (0, mean.size - 1):
        return False
    neighbour = mean[1] if index == 0 else mean[-2]
    return bool(mean[index] - neighbour > objective.tolerance)


class Tuned(NamedTuple):
    """One cell through the protocol: a sweep over seeds x learning rates, the rate chosen
    on validation, and the test metrics there.

    Attributes:
        label: the cell's name in tables and figures.
        rates: ``[G]`` the learning-rate grid.
        index: the chosen grid point; ``rate`` its value.
        validation: ``[G, S]`` the final validation metric (the objective's) at every rate.
        curves: ``[S, E]`` the validation metric over training at the chosen rate.
        steps: ``[E]`` the step of each evaluation.
        test: name -> ``[S]`` the test metrics of the trained params at the chosen rate.
        converged, improvement: :func:`convergence` at the chosen rate.
        tuned: :func:`grid_tunes` of the grid; edge: :func:`at_edge` of the choice.
        objective: the :class:`Objective`.
        result: the whole ``gr.SweepResult`` (validation metrics, params), for the
            experiment's own diagnostics; ``at`` is the chosen rate's point in it (0 when
            the rate came from a recorded tuning and only it was trained).
        source: where the rate was chosen: ``"this run"`` or the recorded tuning's file.
    """

    label: str
    rates: np.ndarray
    index: int
    rate: float
    validation: np.ndarray
    curves: np.ndarray
    steps: np.ndarray
    test: dict
    converged: bool
    improvement: float
    tuned: bool
    edge: bool
    objective: Objective
    result: Any
    at: int
    source: str = "this run"

    def chosen(self, metric: str) -> np.ndarray:
        """``[S, E]``: a validation metric's curves at the chosen rate."""
        return np.asarray(self.result.metrics[metric])[self.at]

    def params(self):
        """The trained params at the chosen rate, with a leading seed axis ``[S, ...]``."""
        return jax.tree.map(lambda v: v[self.at], self.result.params)


def protocol_verdict(verdict: str, cells, seeds: int, *, negative: bool = False
                     ) -> tuple[str, str]:
    """The verdict a row may carry, and why it was lowered.

    The verdict that a cell's failure would give, which tuning or a longer budget could
    overturn, is guarded: "differs", or "agrees" for a ``negative`` claim (one saying a cell
    fails: "the tanh RNN does not solve T=100"). It stands only when every cell in ``cells``
    (:class:`Tuned`) was tuned, its best rate not at a grid edge, and converged, over at
    least ``MIN_SEEDS`` seeds; otherwise it becomes "inconclusive". ``cells=None`` marks a
    claim about trained cells outside the protocol (one rate), whose guarded verdict never
    stands; ``cells=()`` a claim with no training in it (a parameter count, the gradient at
    initialisation) or one about the whole grid of rates (how much the rate matters), which
    keeps its verdict."""
    if verdict != ("agrees" if negative else "differs"):
        return verdict, ""
    would = "would agree" if negative else "would differ"
    if cells is None:
        return "inconclusive", f"{would}, but at one learning rate, not tuned"
    reasons = []
    for what, failed in (
            ("not tuned (fewer than 4 rates spanning 10x)", [c for c in cells if not c.tuned]),
            ("best rate at the grid's edge", [c for c in cells if c.edge]),
            ("not converged at this budget", [c for c in cells if not c.converged])):
        if failed:
            reasons.append(f"{what}: {', '.join(c.label for c in failed)}")
    if cells and seeds < MIN_SEEDS:
        reasons.append(f"{seeds} seeds (at least {MIN_SEEDS} needed)")
    if not reasons:
        return verdict, ""
    return "inconclusive", f"{would}, but " + "; ".join(reasons)


def settle(claim: dict) -> dict:
    """A claim row as the report shows it: one recorded before the protocol (no
    ``"protocol"`` entry) gets :func:`protocol_verdict` with ``cells=None``."""
    if "protocol" in claim:
        return claim
    verdict, why = protocol_verdict(claim["verdict"], None, 0,
                                    negative=claim.get("negative", False))
    note = "; ".join(n for n in (claim.get("note", ""), why) if n)
    return {**claim, "verdict": verdict, "note": note, "protocol": "not applied"}


class Run:
    """One invocation of an experiment: its name, settings, output folder and results."""

    def __init__(self, name: str, settings: dict, out: Path, scale: str):
        self.name, self.settings, self.out, self.scale = name, settings, out, scale
        self.results: dict = {}
        self.claims: list[dict] = []
        self.started = time.perf_counter()
        self._sweeps = 0
        self.loaded = 0  # sweeps finished by an earlier invocation: their time is not in ours
        self.tuning: dict[str, dict[str, Tuned]] = {}  # group -> label -> the cell's tuning
        self.switches: dict[str, bool] = {}

    def sweep(self, label: str, config: gr.train.Config,
              grid: dict | None = None) -> gr.SweepResult:
        """``gr.sweep`` of ``config`` over ``settings["seeds"]`` seeds and ``grid``, stored in
        ``out/sweeps/<label>-<hash>``: the hash covers the config, seeds and grid, so a run
        with other settings trains anew while the same run resumes or loads its results."""
        self._sweeps += 1
        grid = grid or {}
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
        return gr.sweep(config, seeds=seeds, grid=grid, out_dir=out_dir,
                        key=jax.random.key(self.settings["seed"]))

    def tune(self, group: str, name: str, config: gr.train.Config,
             objective: Objective = Objective(), *, rates=None,
             record: dict | None = None) -> Tuned:
        """The protocol's step 1 for one cell: ``config`` swept over seeds x ``rates``
        (default ``settings["learning_rates"]``) on the validation split, the rate chosen
        there, and the test metrics of its trained params. Recorded under ``group`` (one
        comparison: the cells that share a task, "T=100") for the report's tuning table and
        ``tuning.png``.

        ``record`` (a :func:`tuning_record` of an earlier tuning of the same config, with
        ``"source"``, the file it came from) trains only its chosen rate; the grid, its
        validation values and the edge flag are the record's, convergence is this run's.

        A data task must carry a ``validation`` set besides its ``test`` set; a synthetic
        task validates on its fresh evaluation batches and is tested on a batch drawn from
        the experiment's seed folded with ``TEST_SALT``, a key no run draws from.
        """
        rates = [float(r) for r in (self.settings["learning_rates"] if rates is None
                                    else rates)]
        task, seed = config.task, self.settings["seed"]
        validation = getattr(task, "validation", None)
        if validation is not None:
            tuning_task, test_task = task._replace(test=validation), task
        elif getattr(task, "test", None) is not None:
            raise ValueError(f"task {task.name} has a test set but no validation set: the "
                             "protocol never tunes on test data")
        else:
            test_batch = task.sample(jax.random.fold_in(jax.random.key(seed), TEST_SALT),
                                     config.eval_batch_size)
            tuning_task, test_task = task, task._replace(test=test_batch)
        config = dataclasses.replace(config, task=tuning_task, learning_rate=None)
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "", f"{name}-{group}")
        if record is not None:
            rates = [float(record["chosen_rate"])]
        result = self.sweep(tag, config, grid={"learning_rate": rates})
        metric = np.asarray(result.metrics[objective.metric], np.float64)  # [G, S, E]
        at = select_rate(metric[:, :, -1], objective)
        keys = jax.random.split(jax.random.key(seed), self.settings["seeds"])
        trainer = gr.train.make_trainer(dataclasses.replace(config, task=test_task,
                                                            gradient_flow=False))
        params = jax.tree.map(lambda v: v[at], result.params)
        test = jax.device_get(jax.jit(jax.vmap(trainer.evaluate))(params, keys))
        converged, improvement = convergence(metric[at], objective)
        if record is None:
            grid, validation, index, source = np.asarray(rates), metric[:, :, -1], at, \
                "this run"
            edge = at_edge(validation, index, objective)
        else:
            grid, validation = np.asarray(record["rates"]), np.asarray(record["validation"])
            index, edge, source = int(np.argmin(np.abs(grid - rates[0]))), record["edge"], \
                record["source"]
        tuned = Tuned(label(name), grid, index, float(grid[index]), validation, metric[at],
                      np.asarray(result.metrics["step"])[at, 0],
                      {k: np.asarray(v) for k, v in test.items()}, converged, improvement,
                      grid_tunes(grid), edge, objective, result, at, source)
        self.tuning.setdefault(group, {})[tuned.label] = tuned
        return tuned

    def claim(self, claim_id: str, *, source: str, claim: str, measure: str, value: str,
              verdict: str, note: str, figure: str | None = None, cells=None,
              negative: bool = False, setting: str | None = None,
              swept: str | None = None) -> None:
        """Records one row of the claims table.

        ``verdict`` (agrees, differs, inconclusive) is what the numbers say;
        :func:`protocol_verdict` over ``cells`` (the :class:`Tuned` cells the claim
        compares; ``()`` for a claim with no training in it; ``None`` outside the protocol)
        decides what the row may say; ``negative`` marks a claim that a cell fails.
        ``swept`` (with ``cells=()``) marks a claim about the learning rate itself, measured
        over a whole grid of rates rather than at a chosen one (how much the rate matters):
        the text names the grid and goes in the row's rate column.
        ``setting`` says how the experiment departs from the
        paper's setting, when it does in a way that matters to the claim (one layer where the
        paper stacks): such a row is not counted as a test of the paper.
        """
        if verdict not in ("agrees", "differs", "inconclusive"):
            raise ValueError(f"verdict must be agrees, differs or inconclusive; got {verdict!r}")
        verdict, why = protocol_verdict(verdict, cells, self.settings["seeds"],
                                        negative=negative)
        if setting:
            why = "; ".join(w for w in (why, f"not the paper's setting: {setting}") if w)
        cells = None if cells is None else list(cells)
        self.claims.append(dict(
            id=claim_id, experiment=self.name, source=source, claim=claim, measure=measure,
            value=value, verdict=verdict, note="; ".join(n for n in (note, why) if n),
            figure=figure, scale=f"{self.scale}, {environment()['device']}",
            protocol=("not applied" if cells is None else "applied" if cells else
                      "swept" if swept else "no training"), swept=swept,
            rates={c.label: c.rate for c in cells or ()},
            converged={c.label: c.converged for c in cells or ()},
            negative=negative, paper_setting=not setting))

    def minutes(self) -> float:
        """Minutes since :func:`start`."""
        return (time.perf_counter() - self.started) / 60

    def finish(self, title: str, body: list[str]) -> dict:
        """Writes ``results.json`` (settings, results, claims) and ``report.md`` (title, the
        settings, the claims table, then ``body``), and returns the results payload."""
        minutes = self.minutes()
        loaded = self.loaded
        previous = self.out / "results.json"
        if self._sweeps and loaded == self._sweeps and previous.is_file():
            # every sweep came from the run that wrote these files: keep its running time
            before = json.loads(previous.read_text())
            if before.get("settings") == to_json(self.settings) and "minutes" in before:
                minutes, loaded = before["minutes"], before.get("sweeps_loaded", 0)
        if self.tuning:
            body = tuning_section(self) + body
        payload = {"experiment": self.name, "scale": self.scale, "settings": self.settings,
                   "environment": environment(), "minutes": round(minutes, 2),
                   "sweeps": self._sweeps, "sweeps_loaded": loaded,
                   "results": to_json(self.results), "claims": self.claims,
                   "tuning": {group: {name: tuning_record(t) for name, t in cells.items()}
                              for group, cells in self.tuning.items()}}
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


def start(name: str, doc: str, sizes: dict, argv=None, *, cells=tuple(CELLS), tasks=(),
          switches: dict[str, str] | None = None) -> Run:
    """Parses the command line: ``--quick`` or ``--scale {cpu,paper}`` picks a column of
    ``sizes``; ``--out-dir`` (default ``results/<name>``); one flag per size key overrides
    it; ``--cells`` must name entries of ``cells`` and ``--tasks`` of ``tasks`` (checked
    before anything is written); each of ``switches`` (name -> help) is an
    on/off flag, read back from ``run.switches``. Writes ``config.json`` and returns the
    :class:`Run`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for switch, text in (switches or {}).items():
        parser.add_argument("--" + switch.replace("_", "-"), action="store_true", help=text)
    parser.add_argument("--scale", choices=[s for s in sizes if s != "quick"], default="cpu",
                        help="cpu: minutes on 2 cores (default); paper: the published sizes")
    parser.add_argument("--quick", action="store_true", help="a toy size, for the tests")
    parser.add_argument("--out-dir", default=None, help=f"default results/{name}")
    for key, value in sizes["cpu"].items():
        if isinstance(value, dict):  # a per-cell table: set in the script, not on the line
            continue
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
    for flag, known in (("cells", cells), ("tasks", tasks)):
        unknown = [c for c in settings.get(flag, []) if c not in known]
        if unknown:
            raise SystemExit(f"--{flag}: unknown {unknown}; choose from {list(known)}")
    _check_budgets(settings.get("budgets", {}), cells, tasks)
    out = Path(args["out_dir"] or f"results/{name}").expanduser()
    _check_out_dir(out, name)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"experiment": name, "scale": scale, "settings": settings,
                                     "command": " ".join([f"python experiments/{name}.py",
                                                          *(sys.argv[1:] if argv is None
                                                            else argv)]),
                                     "environment": environment()})
    run = Run(name, settings, out, scale)
    run.switches = {k: args[k] for k in switches or {}}
    return run


def _check_budgets(budgets: dict, cells, tasks) -> None:
    """Refuses (``ValueError`` naming ``budgets``) an entry that :func:`budget` would
    misread: a key that is not a cell of ``cells`` or ``"<task>/<cell>"`` with a task of
    ``tasks``, or a value that is not a dict of a positive whole ``steps`` and a non-empty
    list of positive ``learning_rates``."""
    for key, own in budgets.items():
        task, _, cell = key.rpartition("/")
        steps = own.get("steps", 1) if isinstance(own, dict) else None
        rates = own.get("learning_rates", [1.0]) if isinstance(own, dict) else None
        if (cell not in cells or (task and task not in tasks)
                or not isinstance(own, dict) or not set(own) <= {"steps", "learning_rates"}
                or not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
                or not isinstance(rates, (list, tuple)) or not rates
                or not all(isinstance(r, (int, float)) and r > 0 for r in rates)):
            raise ValueError(f"budgets: {key!r}: {own!r}; a budget names one of {list(cells)} "
                             f"(or '<task>/<cell>', a task of {list(tasks)}) and sets only "
                             "'steps' (a positive whole number) and 'learning_rates' (a "
                             "non-empty list of positive numbers)")


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
                       f"x{jax.device_count()}", "device": jax.devices()[0].device_kind,
            "gatedrnn": gr.__version__, "jax": jax.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------- numbers

def final(result: gr.SweepResult, metric: str) -> np.ndarray:
    """The last evaluation of ``metric``: ``[G, S, ...]`` (metrics are ``[G, S, E, ...]``)."""
    return np.asarray(result.metrics[metric])[:, :, -1]


def finals(result: gr.SweepResult, task) -> dict:
    """Every metric's last evaluation ``[G, S]``, plus ``"solved"`` by ``task.solved``."""
    last = {k: final(result, k) for k in result.metrics}
    return {**last, "solved": np.asarray(task.solved(last), bool)}


def interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` (one per seed) and its t interval. A non-finite value makes every
    entry NaN and sets ``nonfinite``: a diverged seed is never averaged away."""
    v = np.asarray(values, np.float64).ravel()
    n = int(v.size)
    if not np.all(np.isfinite(v)) or n < 2:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": n,
                "nonfinite": int(np.sum(~np.isfinite(v)))}
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return {"mean": float(v.mean()), "low": float(v.mean() - half),
            "high": float(v.mean() + half), "n": n, "nonfinite": 0}


def rate_interval(successes, level: float = 0.95) -> dict:
    """A proportion and its Wilson score interval (good at 0/n and n/n, unlike the t one)."""
    s = np.asarray(successes, bool).ravel()
    n, k = int(s.size), int(s.sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return {"mean": k / n, "low": float(ci.low), "high": float(ci.high), "n": n, "k": k}


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


# ----------------------------------------------------------------------------------- report

def tuning_record(t: Tuned) -> dict:
    """What ``results.json`` keeps of a :class:`Tuned` cell (and what :meth:`Run.tune`'s
    ``record`` reads back)."""
    return to_json({"objective": dataclasses.asdict(t.objective), "rates": t.rates,
                    "validation": t.validation, "chosen_rate": t.rate,
                    "converged": t.converged, "improvement": t.improvement, "tuned": t.tuned,
                    "edge": t.edge, "source": t.source, "curves": t.curves, "steps": t.steps,
                    "test": t.test})


def tuning_section(run: Run) -> list[str]:
    """The report's account of the tuning: per group, the mean final validation metric at
    every rate, the chosen rate, the test metric there and the convergence check; and
    ``tuning.png``, the final validation metric against the rate, one panel per group."""
    groups = list(run.tuning.items())
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2),
                             layout="constrained", squeeze=False)
    for ax, (group, cells) in zip(axes[0], groups):
        _tuning_panel(ax, group, cells)
    savefig(fig, run.out / "tuning.png")
    lines = ["## Tuning", "", "Each cell at its own learning rate, chosen on the validation "
             "split (never the test data) by the best mean over seeds of the final "
             f"{next(iter(groups[0][1].values())).objective.describe()}. Values are means over "
             f"{run.settings['seeds']} seeds; the test column is at the chosen rate.", ""]
    for group, cells in groups:
        # cells of one comparison may have grids of their own (a tanh RNN's smaller rates)
        rates = sorted({float(r) for t in cells.values() for r in t.rates})
        metric = next(iter(cells.values())).objective.metric
        lines += [f"**{group}**", "", "| cell | " + " | ".join(f"{r:g}" for r in rates)
                  + f" | chosen | test {metric} | converged (last-20% gain) |",
                  "|---|" + "---|" * (len(rates) + 3)]
        for name, t in cells.items():
            mean = dict(zip(map(float, t.rates), np.mean(t.validation, axis=1)))
            means = [fmt_value(mean[r]) if r in mean else "-" for r in rates]
            chosen = rates.index(float(t.rate))
            means[chosen] = f"**{means[chosen]}**"
            flags = ("" if t.tuned else ", grid too narrow") + (
                ", at the grid's edge" if t.edge else "") + (
                "" if t.source == "this run" else f", from `{t.source}`")
            lines.append(f"| {name} | " + " | ".join(means) + f" | {t.rate:g}{flags} | "
                         f"{fmt(interval(t.test[metric]))} | "
                         f"{'yes' if t.converged else 'no'} ({t.improvement:.3g}) |")
        lines.append("")
    return lines + ["![validation metric against learning rate](tuning.png)", ""]


def _tuning_panel(ax, group: str, cells: dict) -> None:
    """The final validation metric against the learning rate, each cell on its own grid:
    the median over seeds and the 10-90% band (a diverged seed leaves a gap)."""
    objective = next(iter(cells.values())).objective
    for i, (name, t) in enumerate(cells.items()):
        values = np.asarray(t.validation, np.float64)  # [G, S]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log10(values) if objective.log else values
        values = np.where(np.isfinite(values), values, np.nan)
        with warnings.catch_warnings():  # a rate where every seed diverged: a gap
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(values, axis=1)
            low, high = np.nanpercentile(values, [10, 90], axis=1)
        ax.plot(t.rates, median, "o-", color=f"C{i}", lw=2, label=f"{name} (median of "
                f"{values.shape[1]})")
        ax.fill_between(t.rates, low, high, color=f"C{i}", alpha=0.2, lw=0)
        ax.plot([t.rate], [median[t.index]], "*", color=f"C{i}", ms=14, mec="k")
    rates = sorted({float(r) for t in cells.values() for r in t.rates})
    ax.set_xscale("log")
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="learning rate (star: chosen)", title=group,
           ylabel=("log10 " if objective.log else "") + f"final validation {objective.metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def fmt_value(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "non-finite"


def _protocol_cells(c: dict) -> tuple[str, str]:
    """The rate and convergence cells of a claim row."""
    protocol = c.get("protocol", "not applied")
    if protocol == "no training":
        return "no training", "n/a"
    if protocol == "swept":
        return f"swept: {c['swept']}", "n/a"
    if protocol != "applied":
        return "one rate, not tuned", "not checked"
    rates = ", ".join(f"{n} {r:g}" for n, r in c["rates"].items())
    done = ", ".join(f"{n} {'yes' if ok else 'no'}" for n, ok in c["converged"].items())
    return rates, done


def claims_table(claims: list[dict], *, link: bool = False) -> list[str]:
    """Markdown rows: claim (source), measure, our value, verdict, the learning rate chosen
    per cell, whether each converged, the scale, note; ``link`` adds a first column naming
    each claim's experiment, linked to its section."""
    head = ("| claim (source) | measure | ours (mean [95% interval] over seeds) | verdict | "
            "learning rate per cell | converged | scale | note |")
    rows = [("| experiment " if link else "") + head,
            ("|---" if link else "") + "|---" * 8 + "|"]
    for c in claims:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        first = f"| [{c['experiment']}](#{c['experiment']}) " if link else ""
        rates, done = _protocol_cells(c)
        rows.append(f"{first}| {cell(c['claim'])} ({cell(c['source'])}) | {cell(c['measure'])} | "
                    f"{cell(c['value'])} | **{c['verdict']}** | {rates} | {done} | "
                    f"{cell(c.get('scale', ''))} | {cell(c['note'])} |")
    return rows


def savefig(fig, path: Path) -> str:
    gr.plots.save(fig, path)
    return path.name


def label(name: str) -> str:
    return LABELS.get(name, name)
