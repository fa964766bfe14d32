"""The shapes the suite measures and the ``--shape B T I H`` option of the benchmark scripts:
repeatable in those that measure several (``run.py``, ``memory_reuse.py``), single with a
default in the others. Free of JAX, so a script can read its arguments before it decides what
its process imports."""

from __future__ import annotations

import argparse

# (B, T, I, H): issue 11's two throughput shapes and its latency-bound one
SUITE = [(64, 256, 64, 256), (256, 100, 128, 512), (1, 1000, 1, 128)]
QUICK = [(8, 16, 8, 16), (1, 40, 1, 8)]


def label(batch: int) -> str:
    """``"latency"`` for one sequence (reported per step), else ``"throughput"``."""
    return "latency" if batch == 1 else "throughput"


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--shape takes four positive sizes B T I H; got "
                                         f"{text!r}")
    return value


def add_shape_option(parser: argparse.ArgumentParser, help: str,
                     default: tuple | None = None) -> None:
    """Adds ``--shape B T I H`` of positive sizes. Without ``default`` it is repeatable and
    ``args.shape`` is a list of 4-lists or None; with one, ``args.shape`` is one 4-list."""
    if default is None:
        parser.add_argument("--shape", type=_size, nargs=4, action="append",
                            metavar=("B", "T", "I", "H"), help=help)
    else:
        parser.add_argument("--shape", type=_size, nargs=4, default=list(default),
                            metavar=("B", "T", "I", "H"), help=f"{help} (default {default})")
