"""The notebooks: each ``.ipynb`` matches its jupytext source, and each executes end to end
at toy size (``GATEDRNN_NOTEBOOK_TOY=1``) inside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))

jupytext = pytest.importorskip("jupytext")


def test_every_notebook_is_paired():
    assert NAMES == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert {"quickstart", "gradient_flow", "seed_sweep_tpu", "custom_cell"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_matches_its_source(name):
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    paired = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(paired) == cells(source), (
        f"notebooks/{name}.ipynb differs from {name}.py: run jupytext --sync notebooks/*.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_at_toy_size(name, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GATEDRNN_NOTEBOOK_TOY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=dict(os.environ))
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
