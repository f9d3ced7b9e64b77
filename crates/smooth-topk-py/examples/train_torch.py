"""Train one small PyTorch model with cross-entropy and one with the smooth top-5 SVM on the
same generated data, and print test top-1 / top-5 of each.

    pip install ./crates/smooth-topk-py
    python crates/smooth-topk-py/examples/train_torch.py            # a few seconds on 2 cores
    python crates/smooth-topk-py/examples/train_torch.py --epochs 2 --noise 0.4

The data: 100 classes in 20 groups of 5 confusable ones (class means close within a group), 64
features, Gaussian samples; `--noise` replaces that fraction of the training labels with a
random class of the same group, the regime in which the paper expects the top-5 SVM to help.
"""

import argparse

import torch

from smooth_topk.torch import SmoothTopkSVM


def make_data(n_train, n_test, noise, generator):
    classes, groups, dim = 100, 20, 64
    group_means = torch.randn(groups, dim, generator=generator) * 0.6
    means = group_means.repeat_interleave(classes // groups, 0) + torch.randn(classes, dim, generator=generator) * 0.4

    def sample(count):
        y = torch.randint(0, classes, (count,), generator=generator)
        return means[y] + torch.randn(count, dim, generator=generator) * 2.0, y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    flip = torch.rand(n_train, generator=generator) < noise
    same_group = (y_train // 5) * 5 + torch.randint(0, 5, (n_train,), generator=generator)
    y_noisy = torch.where(flip, same_group, y_train)
    return x_train, y_noisy, x_test, y_test


def topk_accuracy(logits, y, k):
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).float().mean().item() * 100


def train(criterion, data, epochs, seed):
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 100))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            optimizer.zero_grad()
            loss = criterion(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = model(x_test)
    return topk_accuracy(logits, y_test, 1), topk_accuracy(logits, y_test, 5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    data = make_data(a.train, 5000, a.noise, torch.Generator().manual_seed(a.seed))
    results = {
        "cross-entropy": train(torch.nn.CrossEntropyLoss(), data, a.epochs, a.seed),
        "smooth top-5 SVM": train(SmoothTopkSVM(n_classes=100, alpha=1.0, tau=1.0, k=5), data, a.epochs, a.seed),
    }
    for name, (top1, top5) in results.items():
        print(f"{name:>18}: test top-1 {top1:5.2f}%  top-5 {top5:5.2f}%")
    return results


if __name__ == "__main__":
    main()
