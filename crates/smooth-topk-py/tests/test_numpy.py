"""The NumPy API against subset enumeration, finite differences and the Rust CLI, and every bad
input raising."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import smooth_topk
from reference import cross_entropy, hard_svm, smooth_svm

RNG = np.random.default_rng(0)


def reference(loss, x, y, k, tau, alpha):
    """Per-sample losses and gradients from the subset enumeration, in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y)
    if loss == "svm":
        per = smooth_svm(xt, yt, k, tau, alpha)
    elif loss == "hard-svm":
        per = hard_svm(xt, yt, k, alpha)
    else:
        per = cross_entropy(xt, yt)
    grad = torch.autograd.grad(per.sum(), xt)[0]
    return per.detach().numpy(), grad.numpy()


@pytest.mark.parametrize("n,k", [(2, 1), (5, 1), (5, 2), (6, 3), (7, 6)])
@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_smooth_svm_matches_subset_enumeration(n, k, tau, scale):
    x = RNG.normal(size=(6, n)) * scale
    y = RNG.integers(0, n, 6)
    want, want_grad = reference("svm", x, y, k, tau, 1.0)
    got, grad = smooth_topk.per_sample(x, y, k=k, tau=tau, alpha=1.0, with_grad=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-14)
    # float32 scores are computed in float64 and rounded once.
    got32, grad32 = smooth_topk.per_sample(x.astype(np.float32), y, k=k, tau=tau, with_grad=True)
    assert got32.dtype == np.float32 and grad32.dtype == np.float32
    want32, want_grad32 = reference("svm", x.astype(np.float32).astype(np.float64), y, k, tau, 1.0)
    np.testing.assert_allclose(got32, want32, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad32, want_grad32, rtol=2e-6, atol=1e-7)


def test_hard_svm_and_cross_entropy_match_their_definitions():
    for n, k in [(4, 1), (6, 2), (7, 4)]:
        x = RNG.normal(size=(8, n))
        y = RNG.integers(0, n, 8)
        for loss in ["hard-svm", "ce"]:
            want, want_grad = reference(loss, x, y, k, 1.0, 0.7)
            got, grad = smooth_topk.per_sample(x, y, loss=loss, k=k, alpha=0.7, with_grad=True)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14)


def test_top1_gradient_is_right():
    # The reference package's k = 1 gradient through its top-k path is wrong; here it must be
    # the gradient of tau logsumexp((x + alpha [j != y] - x_y) / tau).
    x = RNG.normal(size=(5, 9)) * 2
    y = RNG.integers(0, 9, 5)
    tau, alpha = 0.5, 1.0
    z = (x + alpha * (np.arange(9)[None, :] != y[:, None]) - x[np.arange(5), y][:, None]) / tau
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = p.copy()
    want[np.arange(5), y] -= 1.0
    _, grad = smooth_topk.per_sample(x, y, k=1, tau=tau, alpha=alpha, with_grad=True)
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-14)


def test_gradient_matches_finite_differences_and_reductions_scale_it():
    x = RNG.normal(size=(4, 12))
    y = RNG.integers(0, 12, 4)
    w = np.array([0.5, 2.0, 1.0, 0.0])
    value, grad = smooth_topk.loss_and_grad(x, y, k=3, tau=0.7, weights=w)
    eps = 1e-6
    for i, j in [(0, 0), (1, 5), (3, 11), (2, int(y[2]))]:
        up, down = x.copy(), x.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (smooth_topk.loss(up, y, k=3, tau=0.7, weights=w) - smooth_topk.loss(down, y, k=3, tau=0.7, weights=w)) / (2 * eps)
        assert abs(numeric - grad[i, j]) < 1e-8, (i, j, numeric, grad[i, j])
    per, per_grad = smooth_topk.loss_and_grad(x, y, k=3, tau=0.7, reduction="none")
    total, total_grad = smooth_topk.loss_and_grad(x, y, k=3, tau=0.7, reduction="sum")
    np.testing.assert_allclose(total, per.sum(), rtol=1e-14)
    np.testing.assert_allclose(total_grad, per_grad, rtol=1e-14)
    assert value == pytest.approx((per * w).mean(), rel=1e-14)
    np.testing.assert_allclose(grad, per_grad * w[:, None] / 4, rtol=1e-14)


def test_rows_are_valid_gradients_and_views_are_read_correctly():
    x = RNG.normal(size=(50, 30)).astype(np.float32) * 10
    y = RNG.integers(0, 30, 50)
    _, grad = smooth_topk.loss_and_grad(x, y, k=5, tau=0.1, reduction="none")
    np.testing.assert_allclose(grad.sum(1), 0, atol=1e-5)
    assert np.all(np.abs(grad) <= 1 / 5 + 1e-6)
    # A transposed (non-contiguous) array and a half-precision one give the same losses.
    wide = np.ascontiguousarray(x.T)
    np.testing.assert_array_equal(smooth_topk.loss(wide.T, y, reduction="none"), smooth_topk.loss(x, y, reduction="none"))
    half = smooth_topk.loss(x.astype(np.float16), y, reduction="none")
    assert half.dtype == np.float32
    # Threads change nothing.
    np.testing.assert_array_equal(
        smooth_topk.loss(x, y, reduction="none", num_threads=1),
        smooth_topk.loss(x, y, reduction="none", num_threads=3),
    )


def test_topk_accuracy_counts_ties_against_the_label():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 5.0, 4.0, 3.0]])
    acc = smooth_topk.topk_accuracy(scores, [1, 0, 3], k=3)
    np.testing.assert_allclose(acc, [0.0, 1 / 3, 2 / 3])


def test_reference_hard_switch_applies_the_hard_loss_only_when_asked():
    x = np.array([[30.0, 0.0, 0.0, 0.0]])
    exact = smooth_topk.loss(x, [1], k=1, tau=1.0)
    hard = smooth_topk.loss(x, [1], loss="hard-svm", k=1)
    switched = smooth_topk.loss(x, [1], k=1, tau=1.0, reference_hard_switch=True)
    assert switched == hard and exact != hard


@pytest.mark.parametrize(
    "call,error,needle",
    [
        (lambda x, y: smooth_topk.loss(x, y, k=0), ValueError, "k = 0"),
        (lambda x, y: smooth_topk.loss(x, y, k=6), ValueError, "need at least 7 classes, got n = 6"),
        (lambda x, y: smooth_topk.loss(x, y, tau=0.0), ValueError, "tau = 0"),
        (lambda x, y: smooth_topk.loss(x, y, tau=float("nan")), ValueError, "tau = NaN"),
        (lambda x, y: smooth_topk.loss(x, y, alpha=-1.0), ValueError, "alpha = -1"),
        (lambda x, y: smooth_topk.loss(x, [0, 1, 6]), ValueError, "sample 2: label 6 is out of range"),
        (lambda x, y: smooth_topk.loss(x, [0, -1, 2]), ValueError, "sample 1: label -1 is negative"),
        (lambda x, y: smooth_topk.loss(np.where(np.eye(3, 6) > 0, np.nan, x), y), ValueError, "score 0 is NaN"),
        (lambda x, y: smooth_topk.loss(np.full_like(x, np.inf), y), ValueError, "score 0 is inf"),
        (lambda x, y: smooth_topk.loss(x[None], y), ValueError, "shape [batch, n]"),
        (lambda x, y: smooth_topk.loss(x, y[:2]), ValueError, "labels must have shape [3]"),
        (lambda x, y: smooth_topk.loss(x[:0], y[:0]), ValueError, "empty batch"),
        (lambda x, y: smooth_topk.loss(x.astype(np.int32), y), TypeError, "scores must be floats"),
        (lambda x, y: smooth_topk.loss(x, y.astype(np.float64)), TypeError, "labels must be integers"),
        (lambda x, y: smooth_topk.loss(x, y, k=2.5), TypeError, "k must be an integer"),
        (lambda x, y: smooth_topk.loss(x, y, loss="nope"), ValueError, "unknown"),
        (lambda x, y: smooth_topk.loss(x, y, reduction="avg"), ValueError, "reduction"),
        (lambda x, y: smooth_topk.loss(x, y, weights=[1.0, 2.0]), ValueError, "weights must have shape [3]"),
        (lambda x, y: smooth_topk.loss(x, y, num_threads=0), ValueError, "num_threads = 0"),
        (lambda x, y: smooth_topk.loss("text", y), TypeError, "floats"),
        (lambda x, y: smooth_topk.topk_accuracy(x, y, k=7), ValueError, "k = 7 is larger than the 6 classes"),
    ],
)
def test_bad_inputs_raise_and_name_the_value(call, error, needle):
    x = RNG.normal(size=(3, 6))
    y = np.array([0, 1, 2])
    with pytest.raises(error) as info:
        call(x, y)
    assert needle in str(info.value), str(info.value)


def cli_binary():
    """The `smooth-topk` binary of this checkout, when it has been built."""
    found = os.environ.get("SMOOTH_TOPK_BIN")
    if found:
        return found
    root = Path(__file__).resolve().parents[3]
    for profile in ["release", "debug"]:
        path = root / "target" / profile / "smooth-topk"
        if path.is_file():
            return str(path)
    return shutil.which("smooth-topk")


@pytest.mark.skipif(cli_binary() is None, reason="the smooth-topk CLI is not built")
def test_the_package_and_the_cli_give_the_same_bits():
    x = RNG.normal(size=(20, 17)) * 4
    y = RNG.integers(0, 17, 20)
    lines = "\n".join(json.dumps({"scores": row.tolist(), "label": int(label)}) for row, label in zip(x, y))
    out = subprocess.run(
        [cli_binary(), "loss", "--k", "4", "--tau", "0.3", "--alpha", "0.5", "--precision", "f64"],
        input=lines,
        capture_output=True,
        text=True,
        check=True,
    )
    records = [json.loads(line) for line in out.stdout.splitlines()]
    losses, grad = smooth_topk.per_sample(x, y, k=4, tau=0.3, alpha=0.5, with_grad=True)
    np.testing.assert_array_equal(losses, [r["loss"] for r in records])
    np.testing.assert_array_equal(grad, [r["grad"] for r in records])
