"""Forward + backward through autograd: ``smooth_topk.torch`` against PyTorch's cross-entropy
(and the reference package ``topk`` when given a checkout of it), on the same tensors, device and
thread count, in alternating rounds::

    python -m smooth_topk.bench                                # CPU at 1 and all threads; CUDA if present
    python -m smooth_topk.bench --reference ~/src/smooth-topk  # also the reference package
    python -m smooth_topk.bench --n 1000 --batch 4096 --threads 2 --json out.jsonl

Each timed call is ``loss = criterion(x, y); loss.backward()`` on a fresh ``x.grad``, for

* ``ce``: ``torch.nn.functional.cross_entropy(x, y)``,
* ``ours``: ``smooth_topk.torch.SmoothTopkSVM(n, alpha, tau, k)`` (the loss and its exact
  gradient from one pass of the Rust core; it runs on ``torch.get_num_threads()`` threads),
* ``reference``: ``topk.svm.SmoothTopkSVM(n, alpha, tau, k)`` from ``--reference PATH``.

A round times every side once (the median of ``--reps`` calls after one warm-up call); the
figure printed is the median over ``--rounds`` rounds, so a slow spell of a shared machine
touches all sides alike. CUDA timings synchronise the device after each call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch

from .torch import SmoothTopkSVM


def _median_ms(call: Callable[[], None], reps: int, sync: Callable[[], None]) -> float:
    call()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _reference_class(path: Optional[str]):
    if path is None:
        return None
    if not os.path.isdir(os.path.join(path, "topk")):
        raise SystemExit(f"--reference {path}: no topk/ package there (give a checkout of oval-group/smooth-topk)")
    sys.path.insert(0, os.path.abspath(path))
    try:
        from topk.svm import SmoothTopkSVM as Reference  # type: ignore[import-not-found]
    except ImportError as e:
        raise SystemExit(f"--reference {path}: cannot import topk.svm ({e}); it needs the `future` package") from e
    return Reference


def _sides(x, y, n, args, reference):
    def step(criterion):
        def call():
            x.grad = None
            criterion(x, y).backward()

        return call

    sides = {
        "ce": step(torch.nn.functional.cross_entropy),
        "ours": step(SmoothTopkSVM(n, alpha=args.alpha, tau=args.tau, k=args.k)),
    }
    if reference is not None:
        ref = reference(n, alpha=args.alpha, tau=args.tau, k=args.k)
        if x.device.type == "cuda":
            ref = ref.cuda()
        sides["reference"] = step(ref)
    return sides


def _csv(kind, text):
    try:
        return [kind(part) for part in text.split(",") if part]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from e


def _threads(text):
    return [os.cpu_count() or 1 if part == "all" else int(part) for part in text.split(",") if part]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smooth_topk.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=lambda s: _csv(int, s), default=[100, 1000, 10000], help="class counts")
    parser.add_argument("--batch", type=lambda s: _csv(int, s), default=[256], help="batch sizes")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=1.0, help="scores are scale * N(0, 1)")
    parser.add_argument("--threads", type=_threads, default=None, help="CPU thread counts (default: 1,all)")
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, and cuda when present)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--reference", metavar="PATH", help="a checkout of oval-group/smooth-topk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write one JSON line per shape here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps must be at least 1")
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    if any(t < 1 for t in threads):
        parser.error("--threads must be at least 1")
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if device not in ("cpu", "cuda"):
            parser.error(f"--devices {device!r}: use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            parser.error("--devices cuda: torch sees no CUDA device")
    reference = _reference_class(args.reference)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    print(
        f"# forward + backward through autograd, k = {args.k}, tau = {args.tau}, alpha = {args.alpha}, "
        f"scores {args.scale} * N(0, 1), {args.dtype}; torch {torch.__version__}; "
        f"median of {args.rounds} rounds x {args.reps} calls"
    )
    header = "| device | threads | n | batch | CE ms | ours ms | ours / CE |" + (" reference ms | reference / ours |" if reference else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for device in devices:
        for t in threads if device == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(t)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            for n in args.n:
                for batch in args.batch:
                    x = (torch.randn(batch, n, generator=generator, dtype=dtype) * args.scale).to(device)
                    x.requires_grad_(True)
                    y = torch.randint(0, n, (batch,), generator=generator).to(device)
                    sides = _sides(x, y, n, args, reference)
                    times: dict[str, list[float]] = {name: [] for name in sides}
                    for _ in range(args.rounds):
                        for name, call in sides.items():
                            times[name].append(_median_ms(call, args.reps, sync))
                    ms = {name: statistics.median(v) for name, v in times.items()}
                    row = {"device": device, "threads": t, "n": n, "batch": batch, "k": args.k, "tau": args.tau,
                           "scale": args.scale, "dtype": args.dtype, "ms": ms, "ours_over_ce": ms["ours"] / ms["ce"]}
                    line = f"| {device} | {t} | {n} | {batch} | {ms['ce']:.3f} | {ms['ours']:.3f} | {ms['ours'] / ms['ce']:.2f} |"
                    if reference:
                        row["reference_over_ours"] = ms["reference"] / ms["ours"]
                        line += f" {ms['reference']:.3f} | {ms['reference'] / ms['ours']:.1f} |"
                    print(line, flush=True)
                    rows.append(row)
    if args.json:
        tmp = f"{args.json}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
