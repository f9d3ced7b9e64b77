#!/usr/bin/env python3
"""PyTorch cross-entropy forward+backward on the shapes of `gpu_check`, timed the same way:
two seconds of GPU work first, then per shape 10 unmeasured calls, device synchronisation after
every call, median of the repetitions.

Run on the GPU machine (torch with CUDA): python3 scripts/torch_ce_bench.py [--targets]
(`--targets`: the acceptance shapes only, n in {1000, 10000}).
"""

import json
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[reps // 2]


def main():
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    # Two seconds of work first, as gpu_check does: an idle GPU runs its first calls slower.
    warm_x = torch.randn(4096, 10000, device=dev, generator=gen).requires_grad_(True)
    warm_y = torch.randint(0, 10000, (4096,), device=dev, generator=gen)
    start = time.perf_counter()
    while time.perf_counter() - start < 2.0:
        for _ in range(10):
            warm_x.grad = None
            F.cross_entropy(warm_x, warm_y).backward()
        torch.cuda.synchronize()
    del warm_x, warm_y
    # The per-call floor: the same calls on a [1, 10] batch (launch + synchronisation).
    tiny_x = torch.randn(1, 10, device=dev, generator=gen).requires_grad_(True)
    tiny_y = torch.tensor([3], device=dev)

    def tiny():
        tiny_x.grad = None
        F.cross_entropy(tiny_x, tiny_y).backward()

    floor = median_ms(tiny, 100)
    print(f"per-call floor (ce fwd+bwd on [1, 10]): {floor:.4f} ms")
    print("JSON " + json.dumps({"impl": "torch-cross-entropy", "floor_forward_backward_ms": floor}))
    print(f"{'n':>7} {'batch':>6} {'ce fwd':>10} {'ce fwd+bwd':>12}")
    ns = (1000, 10000) if "--targets" in sys.argv else (100, 1000, 10000, 100000)
    for n in ns:
        for batch in (256, 4096):
            x = torch.randn(batch, n, device=dev, generator=gen).requires_grad_(True)
            y = torch.randint(0, n, (batch,), device=dev, generator=gen)
            reps = 20 if batch * n >= 100_000_000 else 50

            def forward():
                with torch.no_grad():
                    F.cross_entropy(x, y)

            def forward_backward():
                x.grad = None
                F.cross_entropy(x, y).backward()

            fwd = median_ms(forward, reps)
            both = median_ms(forward_backward, reps)
            print(f"{n:>7} {batch:>6} {fwd:>10.4f} {both:>12.4f}")
            print("JSON " + json.dumps({"impl": "torch-cross-entropy", "n": n, "batch": batch,
                                        "ce_forward_ms": fwd, "ce_forward_backward_ms": both}))
            del x, y
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
