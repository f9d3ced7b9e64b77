#!/usr/bin/env python3
"""Times PyTorch's cross-entropy (and, given a checkout, the reference smooth top-k SVM package
``topk`` of oval-group/smooth-topk) on given scores: forward, and forward + backward through
autograd, on the CPU with a given number of threads.

`smooth-topk bench` runs this script itself when a Python with torch is at hand, on the very
scores it times its own losses on (raw float32 files), so that the ratios it prints compare the
same tensors on the same machine and thread count in one run. It can also be run alone:

    python3 scripts/bench_reference.py --batch 256 --n 1000 --threads 1
    python3 scripts/bench_reference.py --batch 256 --n 1000 --threads 1 --reference ~/src/smooth-topk
    python3 scripts/bench_reference.py --scores S.f32 --labels L.i64 --batch 256 --n 1000 ...

Output: one JSON object per line on stdout: {"impl": "torch-ce" | "reference-svm", "pass":
"forward" | "forward+backward", "n", "batch", "threads", "median_ms", "torch"}; a line
{"error": "..."} and exit status 2 if torch (or the reference) cannot be imported.
Each figure is the median of at least 5 calls and `--min-time-ms`, after one warm-up call.
"""

import argparse
import json
import os
import statistics
import sys
import time


def median_ms(call, min_time_s):
    call()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < min_time_s and len(times) < 1000):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def fail(message):
    print(json.dumps({"error": message}), flush=True)
    sys.exit(2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scores", help="raw little-endian float32 scores, batch x n (default: N(0, 1))")
    p.add_argument("--labels", help="raw little-endian int64 labels, batch (default: uniform)")
    p.add_argument("--min-time-ms", type=float, default=150.0)
    p.add_argument("--reference", metavar="PATH", help="a checkout of oval-group/smooth-topk")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=1.0)
    a = p.parse_args()
    if a.batch < 1 or a.n < 2 or a.threads < 1:
        fail("--batch, --threads must be >= 1 and --n >= 2")
    try:
        import numpy as np
        import torch
    except ImportError as e:
        fail(f"cannot import torch and numpy: {e}")
    torch.set_num_threads(a.threads)
    if a.scores:
        scores = np.fromfile(a.scores, dtype="<f4")
        labels = np.fromfile(a.labels, dtype="<i8")
        if scores.size != a.batch * a.n or labels.size != a.batch:
            fail(f"{a.scores} / {a.labels}: expected {a.batch}x{a.n} scores and {a.batch} labels")
        x = torch.from_numpy(scores.reshape(a.batch, a.n).copy())
        y = torch.from_numpy(labels.copy())
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(a.batch, a.n, generator=g)
        y = torch.randint(0, a.n, (a.batch,), generator=g)
    min_time = a.min_time_ms / 1e3
    sides = {"torch-ce": torch.nn.functional.cross_entropy}
    if a.reference:
        sys.path.insert(0, os.path.abspath(a.reference))
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # it prints "Setting tau to ..."
                from topk.svm import SmoothTopkSVM

                sides["reference-svm"] = SmoothTopkSVM(a.n, alpha=a.alpha, tau=a.tau, k=a.k)
        except Exception as e:  # noqa: BLE001 - any import failure of the user's checkout
            fail(f"cannot import topk.svm from {a.reference}: {e} (it needs the `future` package)")
    leaf = x.clone().requires_grad_(True)
    for name, loss in sides.items():

        def forward():
            with torch.no_grad():
                loss(x, y)

        def both():
            leaf.grad = None
            loss(leaf, y).backward()

        for pass_name, call in (("forward", forward), ("forward+backward", both)):
            print(
                json.dumps(
                    {
                        "impl": name,
                        "pass": pass_name,
                        "n": a.n,
                        "batch": a.batch,
                        "threads": a.threads,
                        "median_ms": median_ms(call, min_time),
                        "torch": torch.__version__,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
