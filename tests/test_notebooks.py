"""The notebooks: each ``.ipynb`` matches its jupytext source and is stored with outputs, and
each executes end to end at toy size (``GATEDRNN_NOTEBOOK_TOY=1``) inside the checkout, by
``notebooks/execute.py``, the command that stores them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py") if p.stem != "execute")

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


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_stored_with_its_outputs(name):
    # so that a reader on GitHub sees the figures: python notebooks/execute.py stores them
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no figure"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_at_toy_size(name):
    pytest.importorskip("nbclient")
    sys.path.insert(0, str(NOTEBOOKS))
    import execute
    execute.execute(jupytext.read(NOTEBOOKS / f"{name}.py"), NOTEBOOKS)


_PRETEND_NOT_INSTALLED = """
import importlib.util, subprocess
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "gatedrnn" else real_find_spec(name, *a)
subprocess.check_call = lambda args: print("INSTALL", args[-1]) or 0
"""


def _first_cell_where_gatedrnn_is_missing(tmp_path, **env):
    import subprocess
    setup = next(c.source for c in jupytext.read(NOTEBOOKS / "quickstart.py").cells
                 if c.cell_type == "code")
    base = {k: v for k, v in os.environ.items() if k != "GATEDRNN_SOURCE"}
    return subprocess.run([sys.executable, "-c", _PRETEND_NOT_INSTALLED + setup],
                          cwd=tmp_path, env={**base, **env}, capture_output=True, text=True,
                          timeout=300)


def test_the_first_cell_installs_from_the_source_a_wheel_beside_it_or_says_both_ways(tmp_path):
    stopped = _first_cell_where_gatedrnn_is_missing(tmp_path)
    assert stopped.returncode != 0
    assert "Upload a wheel" in stopped.stderr and "GATEDRNN_SOURCE" in stopped.stderr
    wheel = tmp_path / "gatedrnn-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert f"INSTALL {wheel}" in _first_cell_where_gatedrnn_is_missing(tmp_path).stdout
    chosen = _first_cell_where_gatedrnn_is_missing(tmp_path, GATEDRNN_SOURCE="gatedrnn==0.2.0")
    assert "INSTALL gatedrnn==0.2.0" in chosen.stdout
