#!/usr/bin/env python3
"""Runs the authors' packages of two other top-k losses on fixed inputs and writes their losses
and gradients as a JSON fixture, which `crates/smooth-topk/tests/other_fixtures.rs` checks this
project against.

    python3 -m pip install torch numpy pytopk difftopk diffsort
    python3 scripts/other_losses_fixtures.py --out crates/smooth-topk/tests/fixtures/other_losses.json

* `noised`: `pytopk` (Garcin et al., ICML 2022). Its loss draws `Z ~ N(0, 1)` of shape
  `[batch, n, n_sample]` inside `forward`; the script draws `Z` itself and calls the package's
  functional form (`bal_noised_topk_loss` / `imbal_noised_topk_loss` with `_noised_topk`), so the
  noise is part of the fixture. Margins of the imbalanced loss come from the package's own
  `ImbalNoisedTopK` (float32, as it stores them); the class counts and `max_m` are recorded too.
* `topk_ce`: `difftopk.TopKCrossEntropyLoss` (Petersen et al., ICML 2022) with
  `diffsort_method="neuralsort"`, each `top1_mode` (`"sm"`, `"sort"`, `"smce"`), with and
  without `m`.
  The package's NeuralSort hard-codes float32 (`torch.FloatTensor`) for two constants; the
  script maps that name to float64 so the whole computation runs in float64 (the constants are
  small integers, exact in both).

Every loss is the batch mean (both packages return it); gradients are of that mean. Inputs are
float64 from a fixed seed.
"""

import argparse
import json

import torch

torch.FloatTensor = torch.DoubleTensor  # see the module docstring: NeuralSort in float64
import difftopk  # noqa: E402
import pytopk  # noqa: E402
from pytopk.functional import bal_noised_topk_loss, imbal_noised_topk_loss  # noqa: E402
from pytopk.noised_topk import _noised_topk  # noqa: E402

NOISED = [
    # batch, n, k, epsilon, n_sample, score scale
    (4, 5, 1, 1.0, 5, 1.0),
    (4, 10, 2, 0.1, 5, 1.0),
    (3, 20, 5, 0.5, 10, 2.0),
    (3, 100, 5, 1.0, 3, 3.0),
    (2, 7, 3, 0.0, 2, 1.0),
]
IMBALANCED = [
    # batch, n, k, epsilon, n_sample, max_m, scale, score scale
    (4, 6, 1, 0.1, 5, 0.3, 50.0, 0.05),
    (3, 12, 3, 0.5, 4, 0.5, 1.0, 1.0),
]
TOPK_CE = [
    # batch, n, p_k, inverse temperature, m, top1 mode, score scale
    (3, 6, [1.0], 1.0, None, "sm", 1.0),
    (3, 10, [0.5, 0.5], 1.0, None, "sm", 1.0),
    (3, 10, [0.2, 0.2, 0.2, 0.2, 0.2], 2.0, None, "sm", 1.0),
    (3, 10, [0.2, 0.2, 0.2, 0.2, 0.2], 2.0, None, "sort", 1.0),
    (3, 50, [0.2, 0.2, 0.2, 0.2, 0.2], 1.0, 16, "sm", 3.0),
    (3, 100, [0.0, 0.0, 0.0, 0.0, 1.0], 0.5, 16, "sort", 2.0),
    (2, 100, [0.25, 0.0, 0.0, 0.0, 0.75], 10.0, 8, "sm", 1.0),
    (3, 10, [0.2, 0.2, 0.2, 0.2, 0.2], 2.0, None, "smce", 1.0),
    (3, 60, [0.5, 0.0, 0.0, 0.0, 0.5], 1.0, 16, "smce", 2.0),
]


def run(fn, s):
    s = s.clone().requires_grad_(True)
    loss = fn(s)
    loss.backward()
    return loss.item(), s.grad.flatten().tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    cases = {"noised": [], "imbalanced": [], "topk_ce": []}

    def inputs(batch, n, scale):
        s = torch.randn(batch, n, generator=g, dtype=torch.float64) * scale
        y = torch.randint(0, n, (batch,), generator=g)
        return s, y

    for batch, n, k, eps, draws, scale in NOISED:
        s, y = inputs(batch, n, scale)
        z = torch.randn(batch, n, draws, generator=g, dtype=torch.float64)
        loss, grad = run(lambda v: bal_noised_topk_loss(v, y, k, eps, _noised_topk, z), s)
        cases["noised"].append(dict(
            n=n, k=k, epsilon=eps, n_sample=draws, scores=s.flatten().tolist(),
            labels=y.tolist(), noise=z.flatten().tolist(), loss=loss, grad=grad))

    for batch, n, k, eps, draws, max_m, lscale, scale in IMBALANCED:
        s, y = inputs(batch, n, scale)
        z = torch.randn(batch, n, draws, generator=g, dtype=torch.float64)
        counts = torch.randint(1, 1000, (n,), generator=g).tolist()
        module = pytopk.ImbalNoisedTopK(k=k, epsilon=eps, max_m=max_m, cls_num_list=counts,
                                        scale=lscale, n_sample=draws)
        margins = module.m_list.double()
        loss, grad = run(lambda v: imbal_noised_topk_loss(
            v, y, k, margins, eps, _noised_topk, z, lscale), s)
        cases["imbalanced"].append(dict(
            n=n, k=k, epsilon=eps, n_sample=draws, max_m=max_m, scale=lscale,
            class_counts=counts, margins=margins.tolist(), scores=s.flatten().tolist(),
            labels=y.tolist(), noise=z.flatten().tolist(), loss=loss, grad=grad))

    for batch, n, p_k, inv_t, m, mode, scale in TOPK_CE:
        s, y = inputs(batch, n, scale)
        module = difftopk.TopKCrossEntropyLoss(
            diffsort_method="neuralsort", inverse_temperature=inv_t, p_k=p_k, n=n, m=m,
            top1_mode=mode)
        loss, grad = run(lambda v: module(v, y), s)
        cases["topk_ce"].append(dict(
            n=n, p_k=p_k, inverse_temperature=inv_t, m=m, top1_mode=mode,
            scores=s.flatten().tolist(), labels=y.tolist(), loss=loss, grad=grad))

    meta = dict(
        generator="scripts/other_losses_fixtures.py", seed=args.seed, torch=torch.__version__,
        pytopk=getattr(pytopk, "__version__", "?"), difftopk="0.2.0 (neuralsort)")
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, **cases), f)
        f.write("\n")


if __name__ == "__main__":
    main()
