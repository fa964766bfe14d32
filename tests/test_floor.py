"""The declared lower bounds are the versions CI's floor job installs: pyproject.toml's
``name>=v`` for every dependency, and ``name==v`` in .ci/floor.txt, the same ``v``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).parents[1]


def _floor_pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "floor.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_every_declared_lower_bound_is_the_version_the_floor_job_tests():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _floor_pins()
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement!r}: declare a lower bound (name>=version) CI can test"
        name, version = match.groups()
        assert pins.get(name) == version, (
            f"{name}: pyproject.toml says >={version}, .ci/floor.txt tests {pins.get(name)}")
