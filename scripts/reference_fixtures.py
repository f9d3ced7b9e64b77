#!/usr/bin/env python3
"""Runs the reference smooth top-k SVM package (`topk`, a checkout of oval-group/smooth-topk) on
fixed inputs and writes its losses and gradients as a JSON fixture, which
`crates/smooth-topk/tests/reference_fixtures.rs` checks this project against.

    python3 scripts/reference_fixtures.py --reference PATH \
        --out crates/smooth-topk/tests/fixtures/reference.json

Needs torch, numpy and the `future` package (the reference imports it). The inputs are float64,
from a fixed seed, one sample per call (so each sample's loss and gradient are its own), for:

* `smooth`: `topk.svm.SmoothTopkSVM(n, alpha, tau, k)` as users call it, with its switch to the
  hard loss for samples whose k-th and (k+1)-th scores are far apart;
* `smooth_no_switch`: the smooth loss alone (`topk.functional.Topk_Smooth_SVM`);
* `top1`: `topk.svm.SmoothTop1SVM(n, alpha, tau)` (its separate k = 1 path);
* `hard`: `topk.svm.MaxTopkSVM(n, alpha, k)`.

A configuration the reference refuses (it asserts `k + 1 + floor(k / 5) <= n - 1`) is recorded
with `"refused": true` and the error it raised.
"""

import argparse
import contextlib
import io
import json
import os
import sys

CONFIGS = [
    # n, k, tau, alpha, score scale
    (5, 1, 1.0, 1.0, 1.0),
    (10, 2, 1.0, 1.0, 1.0),
    (10, 3, 0.5, 0.5, 2.0),
    (20, 5, 1.0, 1.0, 1.0),
    (20, 5, 0.1, 1.0, 1.0),
    (50, 5, 1.0, 1.0, 5.0),
    (100, 5, 0.1, 1.0, 3.0),
    (100, 10, 1.0, 2.0, 1.0),
    (12, 10, 1.0, 1.0, 1.0),
    (30, 3, 0.05, 1.0, 10.0),
]
BATCH = 6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, metavar="PATH")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    sys.path.insert(0, os.path.abspath(a.reference))
    import numpy as np
    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints "Setting tau to ..."
        import topk.functional as F
        from topk.svm import MaxTopkSVM, SmoothTop1SVM, SmoothTopkSVM

    rng = np.random.default_rng(a.seed)

    def per_sample(make, scores, labels):
        losses, grads = [], []
        for s, y in zip(scores, labels):
            x = torch.tensor(np.array([s]), dtype=torch.float64, requires_grad=True)
            t = torch.tensor([y], dtype=torch.int64)
            with contextlib.redirect_stdout(io.StringIO()):
                loss = make()(x, t)
            loss = loss.sum() if loss.dim() else loss
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append(x.grad[0].tolist())
        return {"loss": losses, "grad": grads}

    cases = []
    for n, k, tau, alpha, scale in CONFIGS:
        scores = (rng.standard_normal((BATCH, n)) * scale).tolist()
        # Ties at the top in one row, a confident row, a hopeless one.
        scores[1][: k + 1] = [max(scores[1])] * (k + 1)
        labels = rng.integers(0, n, BATCH).tolist()
        scores[2][labels[2]] = max(scores[2]) + 4 * scale
        scores[3][labels[3]] = min(scores[3]) - 4 * scale
        case = {"n": n, "k": k, "tau": tau, "alpha": alpha, "scores": scores, "labels": labels}
        labels_t = torch.arange(n)

        def smooth_only(x, y, k=k, tau=tau, alpha=alpha):
            return F.Topk_Smooth_SVM(labels_t, k, tau, alpha)(x, y)

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                case["smooth"] = per_sample(lambda: SmoothTopkSVM(n, alpha=alpha, tau=tau, k=k), scores, labels)
                case["smooth_no_switch"] = per_sample(lambda: smooth_only, scores, labels)
        except Exception as e:  # noqa: BLE001 - the refusal is what is recorded
            case["refused"] = True
            case["error"] = f"{type(e).__name__}: {e}"
        if k == 1:
            case["top1"] = per_sample(lambda: SmoothTop1SVM(n, alpha=alpha, tau=tau), scores, labels)
        case["hard"] = per_sample(lambda: MaxTopkSVM(n, alpha=alpha, k=k), scores, labels)
        cases.append(case)
    out = {
        "generator": "scripts/reference_fixtures.py",
        "reference": "oval-group/smooth-topk (package topk), float64, one sample per call",
        "torch": torch.__version__,
        "seed": a.seed,
        "cases": cases,
    }
    tmp = a.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, a.out)
    print(f"{len(cases)} configurations written to {a.out}")


if __name__ == "__main__":
    main()
