"""The field's other top-k losses from Python: against references written here from their
definitions in PyTorch (sorting, kthvalue, the NeuralSort matrix), autograd's gradcheck, the
authors' argument lists, seeds, and bad inputs."""

import numpy as np
import pytest
import torch

import smooth_topk
from smooth_topk.torch import BalNoisedTopK, ImbalNoisedTopK, TopKCrossEntropyLoss, TruncatedTopkEntropy

RNG = np.random.default_rng(5)


def entr_reference(x, y, k):
    """ln(1 + sum over the others without the k - 1 largest of exp(x_j - x_y))."""
    out = []
    for row, label in zip(x, y):
        others = torch.cat([row[:label], row[label + 1 :]])
        kept = torch.sort(others, descending=True).values[k - 1 :]
        out.append(torch.logsumexp(torch.cat([row[label : label + 1], kept]), 0) - row[label])
    return torch.stack(out)


def noised_reference(x, y, k, eps, z, margins=None, scale=1.0):
    """The (k+1)-th largest of each noised draw, averaged, in a hinge."""
    noised = x.unsqueeze(-1) + eps * z
    kth = torch.sort(noised, dim=1, descending=True).values[:, k, :].mean(-1)
    m = torch.ones_like(kth) if margins is None else torch.tensor(margins, dtype=x.dtype)[y]
    return scale * torch.relu(m + kth - x[torch.arange(len(y)), y])


def topk_ce_reference(x, y, p_k, tau, m=None, top1="sm", floor=1e-7):
    """NeuralSort's matrix entry by entry on the label and the m - 1 largest other scores."""
    out = []
    for row, label in zip(x, y):
        others = torch.cat([row[:label], row[label + 1 :]])
        if m is not None and m < len(row):
            others = torch.sort(others, descending=True).values[: m - 1]
        v = torch.cat([row[label : label + 1], others])
        d = len(v)
        pairwise = (v.unsqueeze(0) - v.unsqueeze(1)).abs().sum(0)
        ranks = torch.arange(len(p_k), dtype=v.dtype)
        logits = ((d - 1 - 2 * ranks).unsqueeze(1) * v.unsqueeze(0) - pairwise.unsqueeze(0)) / tau
        p = torch.softmax(logits, dim=1)[:, 0]  # P[label, q] for q < K
        dist = 0
        for i, pk in enumerate(p_k):
            if i == 0 and top1 == "sm":
                dist = dist + pk * torch.softmax(v, 0)[0]
            elif i > 0 or top1 == "sort":
                dist = dist + pk * p[: i + 1].sum()
        ranked = -torch.log(dist * (1 - 2 * floor) + floor)
        if top1 == "smce":
            # Two losses: p_1 cross-entropy and the rest's weight times the ranked part.
            ranked = p_k[0] * (torch.logsumexp(v, 0) - v[0]) + sum(p_k[1:]) * ranked
        out.append(ranked)
    return torch.stack(out)


def check(got, grad, want_fn, x):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    want = want_fn(xt)
    (want_grad,) = torch.autograd.grad(want.sum(), xt)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grad, want_grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n,k", [(3, 1), (6, 2), (20, 5)])
def test_truncated_entropy_matches_its_definition(n, k):
    x = RNG.normal(size=(5, n)) * 2
    y = RNG.integers(0, n, 5)
    got, grad = smooth_topk.per_sample(x, y, loss="entr", k=k, with_grad=True)
    check(got, grad, lambda xt: entr_reference(xt, torch.tensor(y), k), x)


@pytest.mark.parametrize("n,k,eps,draws", [(4, 1, 1.0, 3), (10, 3, 0.2, 5), (30, 5, 2.0, 8)])
def test_noised_hinge_under_given_noise_matches_its_definition(n, k, eps, draws):
    x = RNG.normal(size=(6, n))
    y = RNG.integers(0, n, 6)
    z = RNG.normal(size=(6, n, draws))
    got, grad = smooth_topk.per_sample(x, y, loss="noised", k=k, with_grad=True, epsilon=eps, n_sample=draws, noise=z)
    check(got, grad, lambda xt: noised_reference(xt, torch.tensor(y), k, eps, torch.tensor(z)), x)
    margins = list(RNG.uniform(0, 1, n))
    got, grad = smooth_topk.per_sample(
        x, y, loss="noised", k=k, with_grad=True, epsilon=eps, n_sample=draws, noise=z, margins=margins, scale=3.0
    )
    check(got, grad, lambda xt: noised_reference(xt, torch.tensor(y), k, eps, torch.tensor(z), margins, 3.0), x)


@pytest.mark.parametrize(
    "n,p_k,tau,m,top1",
    [
        (5, [1.0], 1.0, None, "sm"),
        (8, [0.5, 0.5], 0.5, None, "sort"),
        (12, [0.2] * 5, 1.0, 7, "sm"),
        (30, [0.25, 0, 0, 0, 0.75], 0.1, 16, "sm"),
        (12, [0.5, 0, 0.5], 1.0, 8, "smce"),
    ],
)
def test_topk_cross_entropy_matches_neuralsort_by_definition(n, p_k, tau, m, top1):
    x = RNG.normal(size=(4, n))
    y = RNG.integers(0, n, 4)
    got, grad = smooth_topk.per_sample(x, y, loss="topk-ce", tau=tau, with_grad=True, p_k=p_k, m=m, top1_mode=top1)
    check(got, grad, lambda xt: topk_ce_reference(xt, torch.tensor(y), p_k, tau, m, top1), x)


def test_modules_pass_gradcheck_and_take_the_authors_arguments():
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (4,))
    for module in [
        TruncatedTopkEntropy(9, k=3),
        TopKCrossEntropyLoss("neuralsort", 2.0, [0.5, 0, 0.5], 9, m=6),
        TopKCrossEntropyLoss(diffsort_method="neuralsort", inverse_temperature=1.0, p_k=[0.2] * 5, n=9, top1_mode="sort"),
    ]:
        assert torch.autograd.gradcheck(lambda v: module(v, y), (x,), eps=1e-6, atol=1e-7), module
    # pytopk's positional order: k, epsilon, n_sample / k, epsilon, max_m, cls_num_list, scale, n_sample.
    bal = BalNoisedTopK(2, 0.5, 7)
    imbal = ImbalNoisedTopK(2, 0.1, 0.3, [10] * 8 + [1], 50, 4)
    assert (bal.k, bal.epsilon, bal.n_sample) == (2, 0.5, 7)
    assert imbal.scale == 50 and max(imbal.margins) == pytest.approx(0.3) and len(imbal.margins) == 9
    loss = imbal(x, y)
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None


def test_noised_modules_follow_torch_seeds():
    x = torch.randn(16, 20)
    y = torch.randint(0, 20, (16,))
    module = BalNoisedTopK(k=3, epsilon=1.0)
    torch.manual_seed(1)
    a, b = module(x, y), module(x, y)
    torch.manual_seed(1)
    assert module(x, y) == a and a != b
    # An explicit seed is the NumPy API's seeded loss.
    want = smooth_topk.loss(x.numpy(), y.numpy(), loss="noised", k=3, epsilon=1.0, n_sample=5, seed=42)
    assert module(x, y, seed=42).item() == pytest.approx(want, rel=1e-6)


def test_a_training_loop_with_the_topk_cross_entropy_improves_top5():
    torch.manual_seed(0)
    n, d = 20, 10
    centres = torch.randn(n, d) * 2
    y = torch.randint(0, n, (400,))
    x = centres[y] + torch.randn(400, d)
    model = torch.nn.Linear(d, n)
    criterion = TopKCrossEntropyLoss("neuralsort", 1.0, [0.5, 0, 0, 0, 0.5], n, m=10)
    before = smooth_topk.topk_accuracy(model(x).detach().numpy(), y.numpy(), 5)[4]
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(60):
        optim.zero_grad()
        criterion(model(x), y).backward()
        optim.step()
    after = smooth_topk.topk_accuracy(model(x).detach().numpy(), y.numpy(), 5)[4]
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize(
    "call,error,needle",
    [
        (lambda x, y: smooth_topk.loss(x, y, loss="noised", epsilon=-1.0), ValueError, "epsilon"),
        (lambda x, y: smooth_topk.loss(x, y, loss="noised", n_sample=0), ValueError, "n_sample"),
        (lambda x, y: smooth_topk.loss(x, y, loss="noised", margins=[0.1] * 3), ValueError, "margins"),
        (lambda x, y: smooth_topk.loss(x, y, loss="noised", noise=np.zeros((4, 6, 2))), ValueError, "noise"),
        (lambda x, y: smooth_topk.loss(x, y, loss="entr", noise=np.zeros((4, 6, 5))), ValueError, "noise"),
        (lambda x, y: smooth_topk.loss(x, y, loss="topk-ce"), ValueError, "p_k"),
        (lambda x, y: smooth_topk.loss(x, y, loss="topk-ce", p_k=[0.3, 0.3]), ValueError, "p_k"),
        (lambda x, y: smooth_topk.loss(x, y, loss="topk-ce", p_k=[1.0], m=1), ValueError, "m"),
        (lambda x, y: smooth_topk.loss(x, y, loss="topk-ce", p_k=[1.0], top1_mode="soft"), ValueError, "top1_mode"),
        (lambda x, y: smooth_topk.loss(x, y, loss="entr", k=6), ValueError, "classes"),
        (lambda x, y: smooth_topk.loss(x, y, loss="entr", colour=1), TypeError, "unknown option"),
        (lambda x, y: smooth_topk.loss(x, y, loss="noised", seed=-1), ValueError, "seed"),
        (lambda x, y: TopKCrossEntropyLoss("bitonic", 1.0, [1.0], 6), ValueError, "neuralsort"),
        (lambda x, y: ImbalNoisedTopK(1, 0.1, 0.3, [0, 3]), ValueError, "class count"),
    ],
)
def test_bad_settings_raise(call, error, needle):
    x = RNG.normal(size=(4, 6))
    y = RNG.integers(0, 6, 4)
    with pytest.raises(error, match=needle):
        call(x, y)


def test_torch_compile_keeps_the_other_losses_as_one_operator():
    module = TopKCrossEntropyLoss("neuralsort", 1.0, [0.5, 0.5], 8, m=5)

    def step(x, y):
        return module(x * 2.0, y)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = torch.randn(6, 8, dtype=torch.float64)
    y = torch.randint(0, 8, (6,))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    step(a, y).backward()
    compiled(b, y).backward()
    torch.testing.assert_close(b.grad, a.grad)
    options = '{"p_k": [0.5, 0.5], "m": 5}'
    torch.library.opcheck(torch.ops.smooth_topk.other_loss_and_grad.default, (x, y, "topk-ce", 5, 1.0, options, 0))
