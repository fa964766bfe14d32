"""Every Python block of README.md runs as written, in a fresh process with the main job's
install (no PyTorch), so a wrong comment about a shape or a missing import fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_an_example():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_and_prints_what_its_comments_say(index, tmp_path):
    code = BLOCKS[index]
    # torch stays unimportable: the main job's install does not bring it
    blocker = tmp_path / "torch.py"
    blocker.write_text("raise ImportError('the README example must not need torch')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = iter(proc.stdout.splitlines())
    # a line `print(x)   # value: words` must print exactly `value`
    for line in code.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s*(.*)$", line)
        if match:
            assert next(printed) == match.group(1).split(": ")[0].strip(), line
