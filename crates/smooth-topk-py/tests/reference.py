"""Independent references for the tests: the losses by enumerating k-subsets in float64 (the
definition, not the O(nk) algorithm), differentiated by PyTorch's autograd."""

import itertools

import torch


def smooth_svm(x: torch.Tensor, y: torch.Tensor, k: int, tau: float, alpha: float) -> torch.Tensor:
    """Per-sample L_{k,tau}: tau LSE over k-subsets Y of (alpha [y not in Y] + mean(x_Y)) / tau,
    minus tau LSE over the k-subsets containing y of mean(x_Y) / tau."""
    n = x.shape[1]
    out = []
    for row, label in zip(x, y.tolist()):
        all_terms, with_y = [], []
        for subset in itertools.combinations(range(n), k):
            mean = row[list(subset)].mean()
            margin = 0.0 if label in subset else alpha
            all_terms.append((margin + mean) / tau)
            if label in subset:
                with_y.append(mean / tau)
        out.append(tau * (torch.logsumexp(torch.stack(all_terms), 0) - torch.logsumexp(torch.stack(with_y), 0)))
    return torch.stack(out)


def hard_svm(x: torch.Tensor, y: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    """Per-sample l_k: max over k-subsets of (alpha [y not in Y] + mean(x_Y)) minus the max over
    the k-subsets containing y of mean(x_Y)."""
    n = x.shape[1]
    out = []
    for row, label in zip(x, y.tolist()):
        best_all, best_y = None, None
        for subset in itertools.combinations(range(n), k):
            mean = row[list(subset)].mean()
            value = mean + (0.0 if label in subset else alpha)
            best_all = value if best_all is None else torch.maximum(best_all, value)
            if label in subset:
                best_y = mean if best_y is None else torch.maximum(best_y, mean)
        out.append(best_all - best_y)
    return torch.stack(out)


def cross_entropy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, 1) - x.gather(1, y[:, None])[:, 0]
