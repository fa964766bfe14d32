"""Executes notebooks at toy size and stores each ``.ipynb`` with its outputs.

    python notebooks/execute.py                  # every notebook, from its .py source
    python notebooks/execute.py custom_cell      # one
    python notebooks/execute.py --check custom_cell.ipynb --cwd DIR   # run a stored .ipynb

Each notebook's source is its jupytext ``.py`` file; this runs it with
``GATEDRNN_NOTEBOOK_TOY=1`` (toy sizes, a minute or two each on a CPU) and writes the paired
``.ipynb`` with the outputs, so a reader on GitHub sees the figures. The tests execute the
notebooks with :func:`execute`, the same function. ``--check`` runs a stored ``.ipynb`` in
``--cwd`` without writing it back (CI runs one there from an installed wheel).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).parent


def execute(notebook, cwd: Path, timeout: int = 900):
    """Runs ``notebook`` (an ``nbformat`` notebook, changed in place) at toy size with
    ``cwd`` as its working directory; raises ``RuntimeError`` naming the first cell that
    failed."""
    import nbclient

    # no MPLBACKEND: the kernel's inline backend stores the figures in the notebook
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["GATEDRNN_NOTEBOOK_TOY"] = "1"
    # coalesce_streams: a progress bar's updates are stored as the last line they drew
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     coalesce_streams=True,
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as error:
        raise RuntimeError(f"a cell failed:\n{error}") from None
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks (default: all)")
    parser.add_argument("--check", help="an .ipynb to run without storing it")
    parser.add_argument("--cwd", default=None, help="the working directory for --check")
    args = parser.parse_args(argv)
    if args.check:
        import nbformat
        path = Path(args.check)
        execute(nbformat.read(path, as_version=4), Path(args.cwd or path.parent))
        print(f"{path.name}: ran without error")
        return 0
    import jupytext

    names = args.names or sorted(p.stem for p in NOTEBOOKS.glob("*.py") if p.stem != "execute")
    for name in names:
        notebook = execute(jupytext.read(NOTEBOOKS / f"{name}.py"), NOTEBOOKS)
        jupytext.write(notebook, NOTEBOOKS / f"{name}.ipynb", fmt="ipynb")
        print(f"{name}.ipynb: executed and stored", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
