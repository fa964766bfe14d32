"""The claims report: ``docs/results.md`` from the experiments' ``results.json``.

Command:

    python experiments/report.py                       # reads results/*, writes docs/results.md
    python experiments/report.py --results-dir R --out docs/results.md

One row per claim (the paper's statement, what we measured, our mean with its 95% interval
over seeds, agrees / differs / inconclusive, the learning rate chosen for each cell, whether
each converged, the scale and device, and a note), then each experiment's figures,
copied next to the report (``docs/figures/<experiment>/``) so the page renders on GitHub.

``results/`` is not kept in the repository, so each experiment's claims are also recorded
beside the report (``docs/claims/<experiment>.json``: scale, settings, machine, minutes,
claims, figures). An experiment with no ``results.json`` this time is reported from its
record, as its last run left it; so rerunning one experiment and the report changes that
experiment's rows and no other's. A run with fewer rows than its record (a partial rerun,
``--tasks adding``) replaces the record all the same, with a warning that names the rows
that leave the report. An experiment with neither is listed with the command
that makes it; nothing is invented for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path

try:
    from experiments import common
except ImportError:  # run as a script: experiments/ is on sys.path
    import common

EXPERIMENTS = ("gradient_flow", "adding_problem", "copy_task", "counting", "init_ablation",
               "sensitivity", "cost", "digits", "char_lm", "state_tracking", "descendants")


def _claims(payload: dict) -> list[dict]:
    """The payload's claims as the report shows them: rows recorded before the protocol
    settled by :func:`common.settle`, with the run's scale and device where a row lacks
    them."""
    env = payload["environment"]
    device = env.get("device") or env["machine"].split()[1]
    return [{"scale": f"{payload['scale']}, {device}", **common.settle(c)}
            for c in payload["claims"]]


def _count(claims: list[dict]) -> str:
    counts = {v: sum(c["verdict"] == v for c in claims)
              for v in ("agrees", "differs", "inconclusive")}
    return (f"{counts['agrees']} agree, {counts['differs']} differ, "
            f"{counts['inconclusive']} inconclusive")


RECORD_KEYS = ("experiment", "scale", "settings", "environment", "minutes", "sweeps_loaded",
               "claims")


def _figures(payload: dict, results_dir: Path, dest: Path) -> list[str]:
    """Copies a run's figures to ``dest`` and returns their names: the claims' own figures
    first, then every other PNG the run wrote."""
    name = payload["experiment"]
    shown = []
    for claim in payload["claims"]:
        figure = claim.get("figure")
        if figure and figure not in shown:
            shown.append(figure)
    for png in sorted((results_dir / name).glob("*.png")):
        if png.name not in shown:
            shown.append(png.name)
    kept = []
    for figure in shown:
        source = results_dir / name / figure
        if source.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / figure)
            kept.append(figure)
    return kept


def _warn_of_dropped_rows(name: str, payload: dict, record: Path) -> None:
    """Warns when a run has no row that the experiment's record has (a partial rerun, as
    ``--tasks adding``, or a claim renamed): the record is replaced by the run, so those rows
    leave the report. Not silent; the old record stays in git."""
    if not record.is_file():
        return
    had = {c["id"] for c in json.loads(record.read_text()).get("claims", [])}
    dropped = sorted(had - {c["id"] for c in payload["claims"]})
    if dropped:
        warnings.warn(f"{name}: its last run made no row {dropped}, which its record "
                      f"{record} had; the record is replaced by that run, so they leave the "
                      "report (run the whole experiment to keep them; the old record is in "
                      "git)", stacklevel=3)


def build(results_dir: Path, out: Path, *, experiments=EXPERIMENTS) -> str:
    """Writes the report to ``out`` and returns its text; records each experiment found in
    ``results_dir`` under ``out``'s folder (``claims/<name>.json``) and reports the others
    from their records."""
    figures, records = out.parent / "figures", out.parent / "claims"
    found, missing, shown = {}, [], {}
    for name in experiments:
        path, record = results_dir / name / "results.json", records / f"{name}.json"
        if path.is_file():
            payload = json.loads(path.read_text())
            _warn_of_dropped_rows(name, payload, record)
            shown[name] = _figures(payload, results_dir, figures / name)
            found[name] = {k: payload.get(k) for k in RECORD_KEYS}
            records.mkdir(parents=True, exist_ok=True)
            common.write_json(record, {**found[name], "figures": shown[name]})
        elif record.is_file():
            found[name] = json.loads(record.read_text())
            shown[name] = [f for f in found[name]["figures"] if (figures / name / f).is_file()]
        else:
            missing.append(name)
    claims = [c for payload in found.values() for c in _claims(payload)]
    in_setting = [c for c in claims if c.get("paper_setting", True)]
    untuned = [c for c in claims if c["protocol"] == "not applied"]
    lines = [
        "# Results: the claims of the literature, checked",
        "",
        "Generated by `python experiments/report.py` from each experiment's "
        "`results/<name>/results.json`; do not edit by hand. Each row is one claim: the "
        "source's statement, what we measured, our mean with a 95% interval over seeds (t "
        "interval; Wilson for proportions), and whether our numbers agree with it, differ, "
        "or cannot tell at this size. Every comparison follows one protocol "
        "(`experiments/common.py`): each cell at its own learning rate, chosen on a "
        "validation split that is not the test data (the rate per cell is in the row); a "
        "convergence check on the validation curve; and a verdict that rests on a cell "
        "failing (\"differs\", or \"agrees\" with a claim that a cell fails) only when every "
        "cell was tuned and converged over at least 5 seeds. A row recorded at one learning "
        "rate, before the protocol, says so and cannot carry such a verdict; one about how much "
        "the learning rate matters is measured over the whole grid of rates (its rate column "
        "says \"swept\"). A row whose "
        "setting departs from the paper's in a way that matters says so, and is not counted "
        "as a test of the paper. The scale column names the size (the CPU defaults of each "
        "script; `--scale paper` reruns at the papers' sizes) and the device.",
        "",
        f"{len(claims)} claims: {_count(claims)}; {len(in_setting)} tested in the paper's "
        f"setting ({_count(in_setting)}); {len(untuned)} recorded at one learning rate, "
        "before the protocol" + (f" ({', '.join(sorted({c['experiment'] for c in untuned}))})"
                                 if untuned else "") + ".",
        "",
        *common.claims_table(claims, link=True),
        "",
    ]
    if missing:
        lines += ["Not run yet (no results.json): " + ", ".join(
            f"`python experiments/{n}.py`" for n in missing) + ".", ""]
    for name, payload in found.items():
        s = payload["settings"]
        env = payload["environment"]
        # the record is written from a run's results too, so a reader of the docs (who
        # has no results/ folder) is pointed at a file in the repository either way
        where = (f"recorded in `{os.path.relpath(records / name, out.parent)}.json` by "
                 "its last run" + (f" ({payload['recovered']})" if "recovered" in payload
                                   else ""))
        lines += [f"## {name}", "",
                  f"`python experiments/{name}.py`" + ("" if payload["scale"] == "cpu" else
                                                      f" (scale {payload['scale']})")
                  + f": {payload['minutes']:.1f} min on {env['machine']}"
                  f"{common.loaded_note(payload.get('sweeps_loaded', 0))}, gatedrnn "
                  f"{env['gatedrnn']}, JAX {env['jax']}; {s['seeds']} seeds; {where}.", ""]
        for figure in shown[name]:
            rel = os.path.relpath(figures / name / figure, out.parent)
            lines += [f"![{name}: {figure}]({rel})", ""]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", default="docs/results.md")
    args = parser.parse_args(argv)
    text = build(Path(args.results_dir), Path(args.out))
    print(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
