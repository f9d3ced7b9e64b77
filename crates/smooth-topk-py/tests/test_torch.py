"""The PyTorch modules: gradcheck, the subset-enumeration reference, the reference package's
signatures, devices and dtypes, torch.compile, bad inputs, and a training loop."""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import smooth_topk
from reference import hard_svm, smooth_svm
from smooth_topk.torch import MaxTop1SVM, MaxTopkSVM, SmoothTop1SVM, SmoothTopkSVM, topk_loss


def data(batch=6, n=7, scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, n, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, n, (batch,), generator=g)
    return x, y


@pytest.mark.parametrize(
    "module",
    [
        SmoothTopkSVM(7, alpha=1.0, tau=1.0, k=3),
        SmoothTopkSVM(7, alpha=0.5, tau=0.2, k=2),
        SmoothTop1SVM(7, tau=0.5),
        MaxTopkSVM(7, k=2),
        MaxTop1SVM(7, alpha=0.3),
    ],
)
def test_gradcheck_in_float64(module):
    x, y = data()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: module(x, y), (x,), eps=1e-6, atol=1e-8)
    for reduction in ["sum", "none"]:
        m = copy.deepcopy(module)
        m.reduction = reduction
        assert torch.autograd.gradcheck(lambda x: m(x, y), (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("k,tau,alpha", [(1, 1.0, 1.0), (2, 0.5, 1.0), (3, 2.0, 0.0), (6, 1.0, 1.0)])
def test_matches_the_subset_enumeration_with_its_gradient(k, tau, alpha):
    x, y = data(batch=5, n=7, scale=2.0)
    mine = x.clone().requires_grad_(True)
    ref = x.clone().requires_grad_(True)
    loss = SmoothTopkSVM(7, alpha=alpha, tau=tau, k=k)(mine, y)
    want = smooth_svm(ref, y, k, tau, alpha).mean()
    loss.backward()
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-11, atol=1e-14)
    hard = MaxTopkSVM(7, alpha=alpha, k=k)(x, y)
    torch.testing.assert_close(hard, hard_svm(x, y, k, alpha).mean(), rtol=1e-12, atol=1e-14)


def test_the_top1_modules_are_the_k1_losses():
    x, y = data()
    torch.testing.assert_close(SmoothTop1SVM(7, tau=0.3)(x, y), SmoothTopkSVM(7, tau=0.3, k=1)(x, y))
    torch.testing.assert_close(MaxTop1SVM(7)(x, y), MaxTopkSVM(7, k=1)(x, y))
    # tau logsumexp((x + alpha [j != y] - x_y) / tau), the smooth top-1 SVM's closed form.
    tau = 0.3
    margin = (torch.arange(7)[None] != y[:, None]).double()
    z = (x + margin - x.gather(1, y[:, None])) / tau
    torch.testing.assert_close(SmoothTop1SVM(7, tau=tau)(x, y), (tau * torch.logsumexp(z, 1)).mean())


def test_the_reference_signatures_and_defaults():
    m = SmoothTopkSVM(100)
    assert (m.n_classes, m.alpha, m.tau, m.k) == (100, 1.0, 1.0, 5)
    m = SmoothTopkSVM(100, 0.5, 0.1, 3)  # positional, in the reference's order
    assert (m.alpha, m.tau, m.k) == (0.5, 0.1, 3)
    assert (SmoothTop1SVM(10).k, SmoothTop1SVM(10, None, 2.0).tau) == (1, 2.0)
    assert (MaxTopkSVM(10).k, MaxTopkSVM(10, 0.2, 3).alpha) == (5, 0.2)
    assert MaxTop1SVM(10).k == 1
    assert "tau=1.0" in repr(SmoothTopkSVM(10))
    # tau can be annealed, and is validated.
    m.tau = 0.05
    assert m.tau == 0.05
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        m.tau = -1.0
    assert m.tau == 0.05


def test_modules_hold_no_device_state():
    m = SmoothTopkSVM(7, k=2)
    assert list(m.state_dict()) == [] and list(m.buffers()) == [] and list(m.parameters()) == []
    assert m.to("cpu") is m and m.cpu() is m and m.to(torch.float16) is m
    copy.deepcopy(m)
    restored = pickle.loads(pickle.dumps(m))
    x, y = data()
    torch.testing.assert_close(restored(x, y), m(x, y))
    parallel = torch.nn.DataParallel(m)
    torch.testing.assert_close(parallel(x, y), m(x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_and_layouts(dtype):
    x, y = data(batch=8, n=20, scale=3.0, dtype=dtype)
    x.requires_grad_(True)
    loss = SmoothTopkSVM(20, k=5)(x, y)
    assert loss.dtype == dtype
    loss.backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape
    # Computed in float32 (float64 for float64) from the same values.
    want = smooth_topk.loss(x.detach().double().numpy() if dtype == torch.float64 else x.detach().float().numpy(), y.numpy(), k=5)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6)
    # A transposed (non-contiguous) input gives the same loss.
    xt = x.detach().t().contiguous().t()
    assert not xt.is_contiguous()
    torch.testing.assert_close(SmoothTopkSVM(20, k=5)(xt, y), loss.detach())


def test_weights_and_reductions():
    x, y = data(batch=4)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    per = SmoothTopkSVM(7, k=2, reduction="none")(x, y)
    assert per.shape == (4,)
    torch.testing.assert_close(SmoothTopkSVM(7, k=2, reduction="sum")(x, y), per.sum())
    torch.testing.assert_close(SmoothTopkSVM(7, k=2)(x, y, w), (per * w).mean())
    g = torch.Generator().manual_seed(1)
    upstream = torch.rand(4, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    topk_loss(x, y, k=2, reduction="none").backward(upstream)
    mine = x.grad.clone()
    _, per_grad = smooth_topk.per_sample(x.detach().numpy(), y.numpy(), k=2, with_grad=True)
    torch.testing.assert_close(mine, upstream[:, None] * torch.from_numpy(per_grad))


def test_torch_compile_treats_the_loss_as_one_operator():
    m = SmoothTopkSVM(7, k=2)

    def step(x, y):
        x = x * 2.0
        return m(x, y)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x, y = data()
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    eager = step(a, y)
    eager.backward()
    got = compiled(b, y)
    got.backward()
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(b.grad, a.grad)
    # The custom operators are registered.
    assert hasattr(torch.ops.smooth_topk, "loss_and_grad") and hasattr(torch.ops.smooth_topk, "loss")
    torch.library.opcheck(torch.ops.smooth_topk.loss_and_grad.default, (x, y, "svm", 2, 1.0, 1.0, False))


@pytest.mark.parametrize(
    "make,error,needle",
    [
        (lambda: SmoothTopkSVM(0), ValueError, "n_classes must be a positive integer"),
        (lambda: SmoothTopkSVM(10, k=10), ValueError, "1 <= k < n_classes = 10"),
        (lambda: SmoothTopkSVM(10, k=0), ValueError, "1 <= k"),
        (lambda: SmoothTopkSVM(10, tau=0.0), ValueError, "tau must be a finite number > 0"),
        (lambda: SmoothTopkSVM(10, tau=float("inf")), ValueError, "tau"),
        (lambda: SmoothTopkSVM(10, alpha=-0.1), ValueError, "alpha must be a finite number >= 0"),
        (lambda: MaxTopkSVM(10, reduction="avg"), ValueError, "reduction"),
        (lambda: SmoothTopkSVM(2.5), ValueError, "n_classes"),
    ],
)
def test_bad_settings_raise(make, error, needle):
    with pytest.raises(error, match=needle):
        make()


@pytest.mark.parametrize(
    "inputs,error,needle",
    [
        (lambda x, y: (x[:, :6], y), ValueError, "x has 6 classes, the loss was built for 7"),
        (lambda x, y: (x, y[:3]), ValueError, "y must have shape [6]"),
        (lambda x, y: (x[None], y), ValueError, "shape [batch, n_classes]"),
        (lambda x, y: (x, y.double()), TypeError, "integer tensor"),
        (lambda x, y: (x.long(), y), TypeError, "float tensor"),
        (lambda x, y: (x, torch.where(y == y[0], 7, y)), ValueError, "label 7 is out of range"),
        (lambda x, y: (x, torch.where(y == y[0], -1, y)), ValueError, "is negative"),
        (lambda x, y: (torch.where(x > 1, float("nan"), x), y), ValueError, "is NaN"),
        (lambda x, y: (x[:0], y[:0]), ValueError, "empty batch"),
    ],
)
def test_bad_inputs_raise(inputs, error, needle):
    x, y = data()
    x, y = inputs(x, y)
    with pytest.raises(error) as info:
        SmoothTopkSVM(7, k=2)(x, y)
    assert needle in str(info.value), str(info.value)


def test_a_training_loop_improves_top5():
    # 50 classes in 10 dimensions: Gaussian clusters too close for top-1, separable enough for
    # top-5; a linear model trained with the smooth top-5 SVM.
    g = torch.Generator().manual_seed(3)
    classes, dims = 50, 10
    centres = torch.randn(classes, dims, generator=g) * 1.5
    y = torch.randint(0, classes, (2000,), generator=g)
    x = centres[y] + torch.randn(2000, dims, generator=g)
    model = torch.nn.Linear(dims, classes)
    criterion = SmoothTopkSVM(classes, alpha=1.0, tau=1.0, k=5)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

    def top5():
        with torch.no_grad():
            return float(smooth_topk.topk_accuracy(model(x).numpy(), y.numpy(), k=5)[4])

    before = top5()
    for epoch in range(30):
        for batch in torch.split(torch.arange(2000), 100):
            optimiser.zero_grad()
            criterion(model(x[batch]), y[batch]).backward()
            optimiser.step()
    after = top5()
    assert after > before + 0.3, (before, after)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_give_the_cpu_results():
    x, y = data(batch=64, n=100, scale=3.0, dtype=torch.float32)
    m = SmoothTopkSVM(100, k=5)
    cpu = x.clone().requires_grad_(True)
    gpu = x.cuda().requires_grad_(True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        loss = m.cuda()(gpu, y.cuda())
        loss.backward()
    want = m.cpu()(cpu, y)
    want.backward()
    assert loss.device.type == "cuda" and gpu.grad.device.type == "cuda"
    torch.testing.assert_close(loss.cpu(), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gpu.grad.cpu(), cpu.grad, rtol=1e-6, atol=1e-7)


def test_no_grad_computes_the_loss_only():
    x, y = data()
    with torch.no_grad():
        loss = SmoothTopkSVM(7, k=2)(x.requires_grad_(True), y)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, SmoothTopkSVM(7, k=2)(x.detach(), y))
    assert np.isfinite(float(loss))


def _load_example():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_torch.py"
    spec = importlib.util.spec_from_file_location("train_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_both_losses_past_chance():
    results = _load_example().main(["--epochs", "3", "--train", "2000"])
    for name, (top1, top5) in results.items():
        # 100 classes: chance is 1% top-1 and 5% top-5.
        assert top1 > 5 and top5 > 20, (name, top1, top5)


def test_the_benchmark_runs_and_reports_every_side(tmp_path, capsys):
    from smooth_topk import bench

    out = tmp_path / "bench.jsonl"
    assert bench.main(["--n", "50", "--threads", "1", "--rounds", "1", "--reps", "2", "--devices", "cpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| cpu | 1 | 50 | 256 |" in printed
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and set(rows[0]["ms"]) == {"ce", "ours"} and rows[0]["ours_over_ce"] > 0
    with pytest.raises(SystemExit):
        bench.main(["--reference", str(tmp_path)])  # no topk/ package there
