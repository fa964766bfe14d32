"""PyTorch's side of ``benchmarks/run.py``, timed in a process of its own.

In one process with JAX, PyTorch's and XLA's CPU thread pools compete: interleaved with
the JAX runs, ``torch.nn.RNN`` forward+backward at B=1, T=1000, H=128 took 3.5 s against
0.04 s alone. So ``run.py`` starts this script for each case and PyTorch runs as a
researcher would run it, alone, with its default threads.

Usage: ``python benchmarks/torch_peer.py [--device cuda] [--no-onednn] cell KIND B T I H
REPEATS`` or ``python benchmarks/torch_peer.py [--device cuda] [--no-onednn] bidirectional B
T I H REPEATS`` (the options in any order); prints one JSON line of median seconds (after one
warm-up call): ``{"forward": s, "forward+backward": s}`` for a cell, ``{"forward+backward":
s}`` for a 2-layer bidirectional LSTM over packed sequences with lengths spread evenly from
``T // 2`` to ``T``. On ``cuda`` the modules run through
cuDNN with PyTorch's defaults (``torch.backends.cudnn.allow_tf32`` is on, as XLA's default
float32 matmuls on the GPU use TF32 too), and every timed call ends with
``torch.cuda.synchronize()``.

On the CPU PyTorch runs ``nn.LSTM`` through oneDNN's fused LSTM primitive (its GRU and RNN
have no such path); ``--no-onednn`` turns oneDNN off (``torch.backends.mkldnn.flags``), to
see what that primitive is worth: at B=4, T=1000, I=8, H=256 the LSTM's forward+backward
took about 5x as long without it (benchmarks/RESULTS.md). ``run.py`` keeps PyTorch's
default.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch

DEVICE = torch.device("cpu")
ONEDNN = True


def median_seconds(fn, repeats: int) -> float:
    # not benchmarks.timing.time_run: that module imports JAX, whose threads this process
    # exists to keep away from PyTorch's
    def call():
        fn()
        if DEVICE.type == "cuda":  # kernels are asynchronous: wait for them
            torch.cuda.synchronize()

    times = []
    with torch.backends.mkldnn.flags(enabled=ONEDNN):
        call()
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(B: int, T: int, I: int) -> torch.Tensor:
    x = np.random.default_rng(0).standard_normal((B, T, I), np.float32)
    return torch.from_numpy(x).to(DEVICE)


def cell(kind: str, B: int, T: int, I: int, H: int, repeats: int) -> dict:
    torch.manual_seed(0)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, batch_first=True).to(DEVICE)
    x = _inputs(B, T, I)

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
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True,
                           batch_first=True).to(DEVICE)
    x = _inputs(B, T, I)
    lengths = torch.from_numpy(np.linspace(T // 2, T, B).astype(np.int64))  # on the CPU

    def backward():
        module.zero_grad()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        ys, _ = pad_packed_sequence(module(packed)[0], batch_first=True, total_length=T)
        (ys ** 2).sum().backward()

    return {"forward+backward": median_seconds(backward, repeats)}


if __name__ == "__main__":
    args = sys.argv[1:]
    usage = f"usage: {__doc__.split('Usage: ')[1].split('; prints')[0]}; got {args}"
    while args and args[0] in ("--device", "--no-onednn"):
        if args[0] == "--no-onednn":
            ONEDNN, args = False, args[1:]
        elif len(args) < 2:
            sys.exit(usage)
        else:
            DEVICE, args = torch.device(args[1]), args[2:]
    sizes = {"cell": 6, "bidirectional": 5}
    if not args or args[0] not in sizes or len(args) != 1 + sizes[args[0]]:
        sys.exit(usage)
    what, *rest = args
    numbers = rest[1:] if what == "cell" else rest
    if not all(n.isdigit() and int(n) > 0 for n in numbers):
        sys.exit(usage)
    numbers = [int(n) for n in numbers]
    result = cell(rest[0], *numbers) if what == "cell" else bidirectional(*numbers)
    print(json.dumps(result))
