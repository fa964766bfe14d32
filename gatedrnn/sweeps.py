"""Multi-seed, multi-hyperparameter sweeps as one sharded, resumable program.

``sweep(config, seeds=8, grid={"learning_rate": [1e-3, 3e-3]}, out_dir="results/x")``
trains every (grid point, seed) pair vmapped in one program. The runs axis is sharded over
every device JAX sees (``jax.devices()``): all local devices, and every host's after
``jax.distributed.initialize()``. Training goes in jitted chunks; after each one the metrics
so far are written to ``out_dir/sweep.json`` and the training state to an orbax checkpoint,
so an interrupted sweep resumes from its last finished chunk. Finished sweeps leave
``sweep.json``, ``summary.json`` and the trained parameters (orbax, ``out_dir/params``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gatedrnn import checks
from gatedrnn.train import TASK_FIELDS, Config, _validate, make_trainer, nonfinite_runs

CONFIG_AXES = ("learning_rate", "clip_norm", "weight_decay", "dropout")
INTERVAL = (2.5, 97.5)


class SweepResult(NamedTuple):
    """A finished sweep. ``G`` grid points (the Cartesian product of the grid, first axis
    slowest), ``S`` seeds, ``E`` evaluations.

    Attributes:
        grid: name -> ``[G]`` the value of each axis at each grid point.
        metrics: name -> ``[G, S, E]`` (as :class:`gatedrnn.train.Result`).
        initial: name -> ``[G, S]``: metrics of the initial params.
        summary: see :func:`summarize`.
        params: trained params with leading ``[G, S]`` axes.
    """

    grid: dict
    metrics: dict
    initial: dict
    summary: dict
    params: Any


def grid_points(grid: dict[str, Sequence]) -> dict[str, np.ndarray]:
    """The Cartesian product of ``grid``, as ``name -> [G]`` (the first axis varies slowest)."""
    if not grid:
        return {}
    points = list(itertools.product(*grid.values()))
    return {name: np.asarray([p[i] for p in points], np.float32) for i, name in enumerate(grid)}


def _name(layer: Any) -> str:
    return getattr(layer, "kind", type(layer).__name__)


def get_option(layer: Any, path: str) -> Any:
    """The value of the option at ``path`` of a layer: ``"forget_bias"`` (an option of the
    layer's factory, from ``layer.config``), ``"layers.0.forget_bias"`` (layer 0 of a stack),
    ``"fwd.cell.rate"`` (a wrapper's option in a bidirectional pair)."""
    head, _, rest = path.partition(".")
    config = getattr(layer, "config", None)
    if not isinstance(config, Mapping) or head not in config:
        options = sorted(config) if isinstance(config, Mapping) else []
        raise ValueError(f"{_name(layer)} has no option {head!r} (in {path!r}); its options: "
                         f"{options}")
    value = config[head]
    if not rest:
        return value
    if isinstance(value, (tuple, list)) and not hasattr(value, "init"):
        index, _, rest = rest.partition(".")
        if not index.isdigit() or int(index) >= len(value) or not rest:
            raise ValueError(f"{path!r}: {head} holds {len(value)} layers; name one and its "
                             f"option, e.g. {head}.0.forget_bias")
        return get_option(value[int(index)], rest)
    return get_option(value, rest)


def set_option(layer: Any, path: str, value: Any) -> Any:
    """The layer rebuilt with the option at ``path`` (see :func:`get_option`) set to
    ``value``, which may be traced; every layer on the path is rebuilt with ``rebuild``."""
    get_option(layer, path)  # names a missing option before anything is rebuilt
    head, _, rest = path.partition(".")
    if not rest:
        return layer.rebuild(**{head: value})
    child = layer.config[head]
    if isinstance(child, (tuple, list)) and not hasattr(child, "init"):
        index, _, rest = rest.partition(".")
        items = list(child)
        items[int(index)] = set_option(items[int(index)], rest, value)
        return layer.rebuild(**{head: type(child)(items)})
    return layer.rebuild(**{head: set_option(child, rest, value)})


def configure(config: Config, point: dict) -> Config:
    """``config`` with one grid point's values: Config fields (``learning_rate``,
    ``clip_norm``, ``weight_decay``, ``dropout``) are replaced; any other name is an option
    path of ``config.cell`` (:func:`set_option`), rebuilt with its other options unchanged.
    Values may be traced, so a grid vmaps."""
    fields = {k: v for k, v in point.items() if k in CONFIG_AXES}
    cell = config.cell
    for path, value in point.items():
        if path not in CONFIG_AXES:
            cell = set_option(cell, path, value)
    if cell is not config.cell:
        fields["cell"] = cell
    return dataclasses.replace(config, **fields)


def _check_grid(config: Config, grid: dict) -> dict[str, list[float]]:
    """The grid with each axis as Python numbers (:func:`_grid_values`), every value checked
    against the config."""
    checked = {}
    for name, values in grid.items():
        if name not in CONFIG_AXES:
            if config.cell is None:
                raise ValueError(f"grid axis {name!r} is not one of {CONFIG_AXES}, so it names "
                                 "an option of config.cell, but the config has a model")
            try:
                current = get_option(config.cell, name)
            except ValueError as error:
                raise ValueError(f"grid axis {name!r} is neither one of {CONFIG_AXES} nor an "
                                 f"option of config.cell: {error}. Other settings change "
                                 "shapes or the program: run one sweep per value") from None
            if isinstance(current, bool) or not isinstance(current, (float, np.floating)):
                raise ValueError(f"grid axis {name!r}: the cell's option is {current!r}; only "
                                 "options whose value is a float can be swept (others may "
                                 "change shapes or the program: run one sweep per value)")
        checked[name] = _grid_values(name, values)
        for value in checked[name]:
            _validate(configure(config, {name: value}))
    return checked


def _grid_values(name: str, values) -> list[float]:
    """A grid axis as Python numbers: a list or tuple of numbers (Python, NumPy or 0-d JAX
    arrays) or a 1-d NumPy or JAX array; anything else is refused with the axis named."""
    if getattr(values, "ndim", None) == 1 and not isinstance(values, (str, bytes)):
        values = np.asarray(values).tolist()
    if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence)
            or len(values) == 0):
        raise ValueError(f"grid axis {name!r} must be a non-empty list of numbers; got "
                         f"{values!r}")
    numbers = []
    for value in values:
        if getattr(value, "ndim", None) == 0 and not isinstance(value, (str, bytes)):
            value = np.asarray(value).item()  # a NumPy or 0-d JAX scalar
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"grid axis {name!r} must hold numbers; got {value!r}")
        numbers.append(value)
    return numbers


def _describe(value: Any) -> Any:
    """A JSON description of a config value, equal across processes for equal configs."""
    if all(hasattr(value, field) for field in TASK_FIELDS):
        return value.name  # a task: its functions are in the program's fingerprint
    if isinstance(getattr(value, "config", None), Mapping) and hasattr(value, "init"):
        return {"kind": _name(value), **{k: _describe(v) for k, v in value.config.items()}}
    if hasattr(value, "_fields"):
        return {type(value).__name__: {k: _describe(getattr(value, k)) for k in value._fields}}
    if isinstance(value, (tuple, list)):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "__name__", None) or str(value)


def describe_config(config: Config) -> dict:
    """The config as JSON (part of a sweep's identity: resuming checks it is unchanged)."""
    return {f.name: _describe(getattr(config, f.name)) for f in dataclasses.fields(config)}


def fingerprint(config: Config, grid_names: Sequence[str], chunk_evals: int) -> str:
    """A hash of the whole training program one run of the sweep executes: the StableHLO
    text of ``init`` followed by one chunk of ``chunk_evals`` evaluation intervals, lowered
    for one run with the grid's values as arguments. Any change to what the program computes
    (a cell's, task's, model's or loss's functions, a constant, the JAX version's lowering)
    changes it; source locations and object addresses do not enter it."""
    def one(point, key_data):
        trainer = make_trainer(configure(config, point))
        state, initial = trainer.init(jax.random.wrap_key_data(key_data))
        return trainer.run(state, chunk_evals), initial

    scalar = jax.ShapeDtypeStruct((), np.float32)
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    text = jax.jit(one).lower({name: scalar for name in grid_names}, key_data).as_text()
    return hashlib.sha256(text.encode()).hexdigest()


def summarize(metrics: dict, solved: np.ndarray | None = None) -> dict:
    """Summaries over seeds of ``name -> [G, S, E]`` metrics.

    Returns ``name -> {"mean", "median", "low", "high"}`` each ``[G, E]`` (low/high: the
    2.5 and 97.5 percentiles of the seeds, a 95% interval), plus ``"solved_rate"`` ``[G]``
    (the fraction of seeds whose last evaluation solves the task) when ``solved [G, S]`` is
    given. Seeds with non-finite values are left out of each statistic.
    """
    out = {}
    for name, values in metrics.items():
        values = np.asarray(values, np.float64)
        if values.ndim != 3 or name in ("step", "first_nonfinite_step", "nonfinite_steps"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
            out[name] = {"mean": np.nanmean(values, 1), "median": np.nanmedian(values, 1),
                         "low": np.nanpercentile(values, INTERVAL[0], 1),
                         "high": np.nanpercentile(values, INTERVAL[1], 1)}
    if solved is not None:
        out["solved_rate"] = np.mean(np.asarray(solved, np.float64), axis=1)
    return out


def to_json(tree):
    """``tree`` with NumPy and JAX arrays and scalars as lists and numbers, tuples as lists
    and keys as strings. Non-finite floats stay floats: :func:`write_json` writes them as
    ``NaN``, ``Infinity`` and ``-Infinity``, which Python's ``json`` (and NumPy, pandas)
    read back as numbers, where strings would make a diverged run's metrics text."""
    if isinstance(tree, Mapping):
        return {str(k): to_json(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_json(v) for v in tree]
    if hasattr(tree, "tolist") and not isinstance(tree, (str, bytes)):
        return to_json(np.asarray(tree).tolist())
    return tree


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Writes :func:`to_json` of ``payload`` to ``path`` atomically (a kill never leaves a
    half-written file): the one JSON writer of the library and its experiments."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_json(payload), indent=1, allow_nan=True))
    os.replace(tmp, path)


def _fetch(tree, runs: int):
    """Host copies of ``[R_pad, ...]`` arrays, padding dropped (gathered across hosts)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(lambda v: np.asarray(v)[:runs], jax.device_get(tree))


def _default_chunk(num_evals: int) -> int:
    """The smallest divisor of ``num_evals`` giving at most 20 chunks (one compile)."""
    return next(d for d in range(1, num_evals + 1) if num_evals % d == 0 and num_evals // d <= 20)


def _grid_argument(grid: Any, deprecated: dict) -> dict:
    """``grid`` as a dict, or the deprecated keyword axes (warned)."""
    if grid is not None and not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a dict of axis name -> values; got "
                        f"{type(grid).__name__} {grid!r}")
    if not deprecated:
        return dict(grid or {})
    if grid is not None:
        raise TypeError(f"pass the grid either as grid={{...}} or as the deprecated keywords "
                        f"{sorted(deprecated)}, not both")
    warnings.warn(f"gr.sweep's grid as keywords ({', '.join(sorted(deprecated))}) is "
                  f"deprecated and will be removed in the next release; pass grid={{"
                  f"{', '.join(repr(k) + ': ...' for k in deprecated)}}}",
                  DeprecationWarning, stacklevel=3)
    return dict(deprecated)


def sweep(config: Config, *, seeds: int = 1, grid: Mapping[str, Sequence[float]] | None = None,
          out_dir: str | os.PathLike | None = None, key: Any = None,
          chunk_evals: int | None = None, progress: bool = True,
          **deprecated_grid: Sequence[float]) -> SweepResult:
    """Trains ``seeds`` seeds at every point of a hyperparameter grid, as one program.

    Run ``(g, s)`` equals ``make_train(configure(config, point g))(seed_keys[s])`` with
    ``seed_keys = jax.random.split(key, seeds)``: every grid point sees the same seeds (common
    random numbers), so differences between points are the hyperparameter's alone.

    Args:
        config: the base :class:`gatedrnn.train.Config`.
        seeds: S, seeds per grid point.
        out_dir: where results go (``None``: nowhere, and no resuming). If it holds an
            unfinished run of this same sweep, the sweep resumes from its last chunk; a
            finished one is loaded, not rerun; a different sweep there is an error.
        key: the sweep's key (default ``jax.random.key(0)``).
        chunk_evals: evaluation intervals per jitted chunk (default: at most 20 chunks).
            Each chunk ends with a progress update, a write of the metrics so far and a
            checkpoint.
        grid: axis name -> list of values: a field in ``CONFIG_AXES``, or the path of a
            float option of ``config.cell`` (``forget_bias``; ``layers.0.forget_bias`` in a
            stack; see :func:`get_option`), which rebuilds the cell with a traced value.
            ``None`` or ``{}``: the config alone.
        progress: show a progress bar (process 0 only).
        **deprecated_grid: the grid's axes as keywords, as before ``grid`` (a
            ``DeprecationWarning``; removed in the next release).

    A sweep's record in ``out_dir`` names the config, seeds, grid, key, chunking and a
    :func:`fingerprint` of the training program, with the library and JAX versions; a
    different sweep (the same names with other functions included) is refused, never
    answered with the stored results.

    Returns:
        A :class:`SweepResult`. A run whose loss, gradient or update became non-finite is
        named (grid point, seed, step) in a warning and in ``summary["nonfinite"]``.

    Sharding: the ``G * S`` runs (padded to a multiple of the device count) are sharded over
    a one-axis mesh of ``jax.devices()``; for several hosts call
    ``jax.distributed.initialize()`` first and run the same script on every host, with an
    ``out_dir`` that every host sees (process 0 writes the records, all write checkpoints).
    """
    seeds = checks.size(seeds, "seeds")
    checks.key(key, "key")
    _validate(config)
    grid = _check_grid(config, _grid_argument(grid, deprecated_grid))
    num_evals = config.steps // config.eval_every
    chunk = _default_chunk(num_evals) if chunk_evals is None else chunk_evals
    if isinstance(chunk, np.integer):
        chunk = int(chunk)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1 or num_evals % chunk:
        raise ValueError(f"chunk_evals must be a positive divisor of steps // eval_every = "
                         f"{num_evals}; got {chunk_evals!r}")
    points = grid_points(grid)
    num_points = len(next(iter(points.values()))) if points else 1
    runs = num_points * seeds
    key = jax.random.key(0) if key is None else key
    seed_keys = np.asarray(jax.random.key_data(jax.random.split(key, seeds)))
    identity = {"config": describe_config(config), "seeds": seeds,
                "grid": {k: list(map(float, v)) for k, v in grid.items()},
                "key": seed_keys.tolist(), "chunk_evals": chunk,
                "versions": {"gatedrnn": _version(), "jax": jax.__version__}}
    out = None if out_dir is None else Path(out_dir).expanduser().absolute()
    if out is not None:
        # the directory is checked before the program is even traced
        _check_out_dir(out, _read_record(out) if (out / "sweep.json").is_file() else None)
        identity["program"] = fingerprint(config, list(grid), chunk)

    devices = jax.devices()
    padded = -(-runs // len(devices)) * len(devices)
    sharding = NamedSharding(Mesh(np.asarray(devices), ("runs",)), PartitionSpec("runs"))
    pad = np.concatenate([np.arange(runs), np.zeros(padded - runs, int)])

    def put(host):  # a global [R_pad, ...] array from the same host data on every process
        host = np.asarray(host)[pad]
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    run_points = {k: put(np.repeat(v, seeds)) for k, v in points.items()}
    run_keys = put(np.tile(seed_keys, (num_points, 1)))

    def build(point):
        return make_trainer(configure(config, point))

    def init(point, key_data):
        state, initial = build(point).init(jax.random.wrap_key_data(key_data))
        return state._replace(key=key_data), initial

    def run(point, state, n):
        trainer = build(point)
        state, metrics = trainer.run(state._replace(key=jax.random.wrap_key_data(state.key)), n)
        return state._replace(key=jax.random.key_data(state.key)), metrics

    init = jax.jit(jax.vmap(init), out_shardings=sharding)
    run = jax.jit(jax.vmap(run, in_axes=(0, 0, None)), static_argnums=2,
                  out_shardings=sharding)

    main = jax.process_index() == 0
    record = _load_record(out, identity)
    if record is not None and record["evals_done"] == num_evals:
        last = f"state/{num_evals}"
        if not (out / "params").exists() and last in record["written"] \
                and (out / last).is_dir():
            # stopped after the last chunk's checkpoint, before params/ was written: the
            # checkpoint holds the final state, so finish from it
            state, _ = init(run_points, run_keys)
            return _finish(config, record, points, seeds, out, _restore(out / last, state),
                           num_points)
        if not (out / "params").exists():
            raise FileNotFoundError(
                f"the sweep in {out} finished, but its params ({out / 'params'}) are gone; its "
                "metrics are still in sweep.json (gr.sweeps.load). To train again, use "
                "another out_dir")
        return _finish(config, record, points, seeds, out, None, num_points)
    state, initial = init(run_points, run_keys)
    if record is not None and record["evals_done"] > 0:
        state = _restore(out / "state" / str(record["evals_done"]), state)
        if main:
            print(f"sweep: resuming {out} at step {record['evals_done'] * config.eval_every} "
                  f"of {config.steps}", file=sys.stderr)
    else:
        initial = _fetch(initial, runs)
        record = {**identity, "evals_done": 0, "metrics": {}, "initial": to_json(initial),
                  "written": (record or {}).get("written", [])}

    bar = _progress_bar(config.steps, record["evals_done"] * config.eval_every,
                        progress and main, config.task.name)
    while record["evals_done"] < num_evals:
        state, metrics = run(run_points, state, chunk)
        metrics = _fetch(metrics, runs)
        if out is not None:
            saved = _checkpoint(out, state, record, record["evals_done"] + chunk)
        record["evals_done"] += chunk
        for name, values in to_json(metrics).items():
            record["metrics"][name] = [a + b for a, b in
                                       zip(record["metrics"].get(name, [[]] * runs), values)]
        if out is not None:
            _remove_written(out, record, keep=saved)  # writes the record first
        if bar is not None:
            bar.update(chunk * config.eval_every)
            bar.set_postfix(loss=f"{np.nanmean(metrics['loss'][:, -1]):.4g}")
    if bar is not None:
        bar.close()
    return _finish(config, record, points, seeds, out, state, num_points)


def _progress_bar(total: int, done: int, show: bool, label: str):
    if not show:
        return None
    with warnings.catch_warnings():
        # in a notebook without ipywidgets tqdm.auto warns, then falls back to a text bar
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc=f"sweep {label}", unit="step", file=sys.stderr)


def _version() -> str:
    from gatedrnn import __version__
    return __version__


# every path a sweep writes, relative to its out_dir: a record naming anything else was not
# written by a sweep, and acting on it could delete files outside the folder
_WRITTEN = re.compile(r"state/[0-9]+|params|summary\.json")


def _read_record(out: Path) -> dict:
    """``out/sweep.json``, refused with a clear error when it is not a record a sweep wrote:
    unparsable, not an object, without a count of evaluations done, or listing a path a
    sweep never writes (``state/../../x``), so that nothing is deleted on its word."""
    path = out / "sweep.json"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable sweep record ({error}): it is empty or truncated. The "
            f"checkpoints in {out / 'state'} are intact, but the metrics so far are lost with "
            "the record: move the directory aside (or delete it) and run the sweep again"
        ) from None
    problem = _record_problem(record)
    if problem:
        raise ValueError(
            f"{path} is not a readable sweep record: {problem}. A sweep never writes that, so "
            "the file was edited or damaged; nothing in the directory was deleted or "
            "overwritten. Move the directory aside (or delete it) and run the sweep again")
    return record


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not an object"
    evals = record.get("evals_done")
    if not isinstance(evals, int) or isinstance(evals, bool) or evals < 0:
        return f"its evals_done is {evals!r}, not a count of evaluations"
    written = record.get("written", [])
    if not isinstance(written, list) or not all(isinstance(n, str) for n in written):
        return f"its written list is {written!r}, not a list of names"
    outside = [n for n in written if not _WRITTEN.fullmatch(n)]
    if outside:
        return (f"its written list names {outside[:3]}, not paths a sweep writes inside its "
                "folder (state/<evaluations>, params, summary.json)")
    return None


def _load_record(out: Path | None, identity: dict) -> dict | None:
    if out is None or not (out / "sweep.json").exists():
        return None
    record = _read_record(out)
    wanted = json.loads(json.dumps(identity))
    differ = [k for k in wanted if record.get(k) != wanted[k]]
    if not differ:
        return record
    if "config" in differ:
        fields = sorted(k for k in wanted["config"]
                        if (record.get("config") or {}).get(k) != wanted["config"][k])
        differ[differ.index("config")] = f"config ({', '.join(fields)})"
    if "program" in differ:
        differ[differ.index("program")] = (
            "program (the training program computes something else: a cell's, task's, "
            "model's or loss's functions changed, or the JAX version lowers it differently)")
    raise ValueError(f"{out} holds a different sweep; what differs: {'; '.join(differ)}. "
                     "Choose another out_dir, or delete this one to discard its results")


_PROBE = ".sweep-probe-"


def _check_out_dir(out: Path, record: dict | None) -> None:
    """Before anything compiles: ``out`` must be new, empty, or hold this sweep's record, and
    every name a sweep writes that is already there must be one the record says it wrote.
    Then a probe file shows that ``out`` is writable (only the probe is removed again)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file, not a directory")
    if out.exists():
        # another process's writability probe may come and go meanwhile
        present = sorted(p.name for p in out.iterdir() if not p.name.startswith(_PROBE))
        if record is None and present:
            raise ValueError(
                f"out_dir {out} holds {present[:10]}{' ...' if len(present) > 10 else ''} and "
                "no record of a sweep (sweep.json); a sweep writes only into a new or empty "
                "directory or one holding its own record, so nothing of yours is overwritten. "
                "Choose another out_dir")
        written = set((record or {}).get("written", []))
        foreign = [n for n in ("params", "summary.json") if n in present and n not in written]
        if foreign:
            raise ValueError(f"out_dir {out} holds {foreign}, which its sweep record does not "
                             "say the sweep wrote; move them away or choose another out_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{_PROBE}{os.getpid()}-{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"out_dir {out} is not writable ({error}); choose another out_dir") \
            from None


def _write_record(out: Path, record: dict) -> None:
    if jax.process_index() == 0:
        write_json(out / "sweep.json", record)


def _checkpointer():
    import orbax.checkpoint as ocp
    return ocp.StandardCheckpointer()


def _checkpoint(out: Path, state, record: dict, evals_done: int) -> str:
    """Saves ``state`` as ``out/state/<evals_done>`` and returns that name.

    The record lists every path the sweep writes (``written``), and says so before the path
    is written; the sweep deletes only paths listed there, and an older checkpoint only after
    the record names the new one, so a kill at any moment leaves the checkpoint the record
    names (and nothing of anyone else's is touched)."""
    name = f"state/{evals_done}"
    record["written"] = [*record.get("written", []), name]
    _write_record(out, record)
    checkpointer = _checkpointer()
    checkpointer.save(out / name, state, force=True)
    checkpointer.wait_until_finished()
    _sync("checkpoint")
    return name


def _remove_written(out: Path, record: dict, keep: str | None) -> None:
    """Writes the record, then deletes the checkpoints it lists but ``keep`` (and
    ``state/`` once empty), then writes the record without them."""
    if jax.process_index() != 0:
        return
    write_json(out / "sweep.json", record)
    for name in [n for n in record["written"] if n.startswith("state/") and n != keep]:
        shutil.rmtree(out / name, ignore_errors=True)
        record["written"].remove(name)
    if (out / "state").is_dir() and not any((out / "state").iterdir()):
        (out / "state").rmdir()
    write_json(out / "sweep.json", record)


def _restore(path: Path, like=None):
    """The checkpoint at ``path`` (a sweep's ``state/<n>`` or ``params``), as ``like``'s
    structure when given; a missing or damaged one is named with the way out, instead of
    orbax's own error."""
    import orbax.checkpoint as ocp
    params = path.name == "params"
    what = "its trained params" if params else "the checkpoint its record says to resume from"
    way_out = ("move the directory aside (or delete it) and run the sweep again; its metrics "
               "so far are in sweep.json (gr.sweeps.load)")
    if not path.is_dir():
        sweep_dir = path.parent if params else path.parent.parent
        raise FileNotFoundError(f"{path} is missing: the sweep in {sweep_dir} needs it as "
                                f"{what}. It was removed, or sweep.json was edited; {way_out}")
    try:
        if like is None:
            return _checkpointer().restore(path)
        return _checkpointer().restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                          like))
    except Exception as error:  # orbax raises many kinds for a damaged checkpoint
        raise ValueError(f"{path} ({what}) cannot be read: {type(error).__name__}: "
                         f"{str(error)[:300]}. It was damaged or overwritten; {way_out}"
                         ) from error


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _finish(config, record, points, seeds, out, state, num_points) -> SweepResult:
    """Reshapes runs to ``[G, S]``, summarises, names non-finite runs, saves params."""
    def split(values):
        values = np.asarray(values)
        return values.reshape(num_points, seeds, *values.shape[1:])

    metrics = {k: split(v) for k, v in record["metrics"].items()}
    initial = {k: split(v) for k, v in record["initial"].items()}
    last = jax.tree.map(lambda v: v[..., -1], metrics)
    solved = np.asarray(jax.vmap(jax.vmap(config.task.solved))(last))
    summary = summarize(metrics, solved)
    summary["nonfinite"] = [
        {"point": {k: float(v[g]) for k, v in points.items()}, "seed": s, "step": step,
         "skipped": skipped} for (g, s), step, skipped in nonfinite_runs(metrics)]
    for entry in summary["nonfinite"]:
        warnings.warn(f"sweep: seed {entry['seed']} at {entry['point'] or 'the config'} had a "
                      f"non-finite loss, gradient or update first at step {entry['step']}; "
                      f"{entry['skipped']} such steps were skipped", RuntimeWarning, stacklevel=3)
    params = None
    if out is not None and state is not None:
        params = _fetch(state.params, num_points * seeds)
        params = jax.tree.map(split, params)
        record["written"] = sorted({*record.get("written", []), "summary.json", "params"})
        _write_record(out, record)
        if jax.process_index() == 0:
            write_json(out / "summary.json", {"grid": to_json(points),
                                               **to_json(summary)})
        _save_params(out / "params", params)
        _remove_written(out, record, keep=None)
    elif out is not None:
        model_params = jax.eval_shape(lambda k: make_trainer(config).model.init(
            k, config.task.input_size), jax.random.key(0))
        params = load_params(out, jax.tree.map(
            lambda v: jax.ShapeDtypeStruct((num_points, seeds, *v.shape), v.dtype), model_params))
    elif state is not None:
        params = jax.tree.map(split, _fetch(state.params, num_points * seeds))
    return SweepResult(points, metrics, initial, summary, params)


def _save_params(path: Path, params) -> None:
    checkpointer = _checkpointer()
    checkpointer.save(path, params, force=True)
    checkpointer.wait_until_finished()
    _sync("params")


def load_params(out_dir: str | os.PathLike, like: Any = None):
    """A finished sweep's trained params, ``[G, S, ...]`` leaves, read with orbax.

    Without ``like`` the tree comes back as orbax stores it (dicts and lists of arrays);
    pass ``like`` (e.g. ``sweep(...).params`` or the structure from ``jax.eval_shape``) for the
    original containers. Seed ``s`` at grid point ``g`` is ``jax.tree.map(lambda v: v[g, s],
    params)``, ready for :mod:`gatedrnn.diagnostics`.
    """
    path = Path(out_dir).expanduser().absolute() / "params"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the sweep in {out_dir} has not finished")
    return _restore(path, like)


def load(out_dir: str | os.PathLike) -> dict:
    """A sweep's ``sweep.json`` record (finished or not): its identity, ``evals_done``, and
    ``metrics`` (name -> ``[G * S]`` lists over evaluations so far, run ``g * S + s``)."""
    return _read_record(Path(out_dir).expanduser())


__all__ = ["CONFIG_AXES", "SweepResult", "configure", "describe_config", "fingerprint",
           "get_option", "grid_points", "load", "load_params", "set_option", "summarize",
           "sweep"]
