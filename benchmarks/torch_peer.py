"""PyTorch's side of ``benchmarks/run.py``, timed in a process of its own.

In one process with JAX, PyTorch's and XLA's CPU thread pools compete: interleaved with
the JAX runs, ``torch.nn.RNN`` forward+backward at B=1, T=1000, H=128 took 3.5 s against
0.04 s alone. So ``run.py`` starts this script for each case and PyTorch runs as a
researcher would run it, alone, with its default threads.

Usage: ``python benchmarks/torch_peer.py cell KIND B T I H REPEATS`` or
``python benchmarks/torch_peer.py bidirectional B T I H REPEATS``; prints one JSON line of
median seconds (after one warm-up call): ``{"forward": s, "forward+backward": s}`` for a
cell, ``{"forward+backward": s}`` for a 2-layer bidirectional LSTM over packed sequences
with lengths spread evenly from ``T // 2`` to ``T``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch


def median_seconds(fn, repeats: int) -> float:
    # not benchmarks.timing.time_run: that module imports JAX, whose threads this process
    # exists to keep away from PyTorch's
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cell(kind: str, B: int, T: int, I: int, H: int, repeats: int) -> dict:
    torch.manual_seed(0)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, batch_first=True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((B, T, I), np.float32))

    def forward():
        with torch.no_grad():
            module(x)

    def backward():
        module.zero_grad()
        (module(x)[0] ** 2).sum().backward()

    return {"forward": median_seconds(forward, repeats),
            "forward+backward": median_seconds(backward, repeats)}


def bidirectional(B: int, T: int, I: int, H: int, repeats: int) -> dict:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((B, T, I), np.float32))
    lengths = torch.from_numpy(np.linspace(T // 2, T, B).astype(np.int64))

    def backward():
        module.zero_grad()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        ys, _ = pad_packed_sequence(module(packed)[0], batch_first=True, total_length=T)
        (ys ** 2).sum().backward()

    return {"forward+backward": median_seconds(backward, repeats)}


if __name__ == "__main__":
    what, *rest = sys.argv[1:]
    if what == "cell":
        result = cell(rest[0], *map(int, rest[1:]))
    else:
        result = bidirectional(*map(int, rest))
    print(json.dumps(result))
