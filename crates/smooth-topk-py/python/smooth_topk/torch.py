"""PyTorch modules of the top-k losses, with the arguments of the reference package ``topk``
(oval-group/smooth-topk), so that changing the import is the whole migration::

    # from topk.svm import SmoothTopkSVM
    from smooth_topk.torch import SmoothTopkSVM

    criterion = SmoothTopkSVM(n_classes=1000, alpha=1.0, tau=0.1, k=5)
    loss = criterion(logits, targets)      # logits [batch, n_classes], targets [batch]
    loss.backward()

The exact gradient is computed with the loss in the forward pass (one pass of the Rust core);
backward scales it by the upstream gradient. The computation is one PyTorch custom operator
(``torch.ops.smooth_topk.loss_and_grad``, ``torch.ops.smooth_topk.loss``), which
``torch.compile`` treats as opaque. The modules hold no tensors and no device state, so
``.to()``, ``.cuda()``, ``.cpu()``, ``DataParallel`` and ``DistributedDataParallel`` need nothing
from them.

Threads: the core runs on ``torch.get_num_threads()`` threads, as PyTorch's own CPU operators
do (``torch.set_num_threads`` sets both).

Devices: CPU tensors are read in place. Tensors on other devices (CUDA, MPS) are copied to the
host, computed there and the results copied back; a warning says so once. Gradients of second
order are not supported.
"""

import json
import math
import numbers
import warnings
from typing import Optional

import numpy as np
import torch

from . import LOSSES, REDUCTIONS, _core, _options

__all__ = [
    "SmoothTopkSVM",
    "SmoothTop1SVM",
    "MaxTopkSVM",
    "MaxTop1SVM",
    "TruncatedTopkEntropy",
    "BalNoisedTopK",
    "ImbalNoisedTopK",
    "TopKCrossEntropyLoss",
    "topk_loss",
]

#: The losses that take settings beyond k, tau and alpha (one operator pair for them).
_OTHER = ("entr", "noised", "topk-ce")

_warned_devices: set[str] = set()


def _host(x: torch.Tensor) -> np.ndarray:
    """``x`` as a C-contiguous float32 / float64 numpy array on the host."""
    if x.device.type != "cpu" and x.device.type not in _warned_devices:
        _warned_devices.add(x.device.type)
        warnings.warn(
            f"smooth_topk: {x.device.type} tensors are copied to the host and back for the loss "
            "(the device kernel is not in this build)",
            RuntimeWarning,
            stacklevel=4,
        )
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    return x.cpu().contiguous().numpy()


def _compute(x, y, kind, k, tau, alpha, switch, with_grad, options=None, seed=0):
    scores = _host(x)
    labels = y.detach().cpu().to(torch.int64).contiguous().numpy()
    threads = max(1, min(torch.get_num_threads(), 1024))
    extra = _options(dict(json.loads(options), seed=seed)) if options is not None else {}
    losses, grad = _core.per_sample(scores, labels, kind, k, tau, alpha, switch, with_grad, threads, **extra)
    losses = torch.from_numpy(losses).to(device=x.device, dtype=x.dtype)
    if grad is not None:
        grad = torch.from_numpy(grad).to(device=x.device, dtype=x.dtype)
    return losses, grad


@torch.library.custom_op("smooth_topk::loss_and_grad", mutates_args=())
def _loss_and_grad(
    x: torch.Tensor, y: torch.Tensor, kind: str, k: int, tau: float, alpha: float, switch: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    losses, grad = _compute(x, y, kind, k, tau, alpha, switch, True)
    return losses, grad


@_loss_and_grad.register_fake
def _(x, y, kind, k, tau, alpha, switch):
    return x.new_empty(x.shape[0]), torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward_of(inputs: int):
    """Backward of an operator with `inputs` arguments: the saved gradient scaled per row."""

    def backward(ctx, upstream, _upstream_grad):
        (grad,) = ctx.saved_tensors
        return (upstream.unsqueeze(1) * grad,) + (None,) * (inputs - 1)

    return backward


_loss_and_grad.register_autograd(_backward_of(7), setup_context=_setup_context)


@torch.library.custom_op("smooth_topk::loss", mutates_args=())
def _loss_only(
    x: torch.Tensor, y: torch.Tensor, kind: str, k: int, tau: float, alpha: float, switch: bool
) -> torch.Tensor:
    losses, _ = _compute(x, y, kind, k, tau, alpha, switch, False)
    return losses


@_loss_only.register_fake
def _(x, y, kind, k, tau, alpha, switch):
    return x.new_empty(x.shape[0])


@torch.library.custom_op("smooth_topk::other_loss_and_grad", mutates_args=())
def _other_loss_and_grad(
    x: torch.Tensor, y: torch.Tensor, kind: str, k: int, tau: float, options: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    losses, grad = _compute(x, y, kind, k, tau, 1.0, False, True, options, seed)
    return losses, grad


@_other_loss_and_grad.register_fake
def _(x, y, kind, k, tau, options, seed):
    return x.new_empty(x.shape[0]), torch.empty_like(x)


_other_loss_and_grad.register_autograd(_backward_of(7), setup_context=_setup_context)


@torch.library.custom_op("smooth_topk::other_loss", mutates_args=())
def _other_loss_only(
    x: torch.Tensor, y: torch.Tensor, kind: str, k: int, tau: float, options: str, seed: int
) -> torch.Tensor:
    losses, _ = _compute(x, y, kind, k, tau, 1.0, False, False, options, seed)
    return losses


@_other_loss_only.register_fake
def _(x, y, kind, k, tau, options, seed):
    return x.new_empty(x.shape[0])


def _settings_json(options: dict) -> str:
    """The other losses' settings (``noise`` and ``seed`` excepted), checked for their types and
    names, as the JSON text the operators take."""
    if "noise" in options:
        raise TypeError("noise is not an option of the tensor loss: give a seed")
    checked = _options(options)
    return json.dumps({name: v for name, v in checked.items() if name not in ("noise", "seed")})


def _other(x, y, kind, k, tau, settings: str, seed: int, reduction, weight):
    """One of the other losses through its operator, on settings already checked."""
    _check_inputs(x, y, None)
    args = (x, y, kind, int(k), float(tau), settings, int(seed))
    if x.requires_grad and torch.is_grad_enabled():
        losses = _other_loss_and_grad(*args)[0]
    else:
        losses = _other_loss_only(*args)
    return _reduce_tensor(losses, x, reduction, weight)


def _reduce_tensor(losses, x, reduction, weight):
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or weight.shape != (x.shape[0],):
            raise ValueError(f"weight must be a tensor of shape [{x.shape[0]}]")
        losses = losses * weight.to(device=losses.device, dtype=losses.dtype)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _check_inputs(x: torch.Tensor, y: torch.Tensor, n_classes: Optional[int]):
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be tensors")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"y must be an integer tensor of labels, got {y.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape [batch, n_classes], got {tuple(x.shape)}")
    if n_classes is not None and x.shape[1] != n_classes:
        raise ValueError(f"x has {x.shape[1]} classes, the loss was built for {n_classes}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")


def topk_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "svm",
    k: int = 5,
    tau: float = 1.0,
    alpha: float = 1.0,
    reduction: str = "mean",
    weight: Optional[torch.Tensor] = None,
    reference_hard_switch: bool = False,
    **options,
) -> torch.Tensor:
    """The loss of a batch of logits ``x [batch, n]`` against labels ``y [batch]``: ``mean``
    (default), ``sum`` or ``none`` (per sample). ``weight [batch]`` multiplies the per-sample
    losses before the reduction (``mean`` still divides by the batch size). The losses
    ``"entr"``, ``"noised"`` and ``"topk-ce"`` take the settings of ``smooth_topk.OPTIONS`` as
    keywords (``noise`` excepted: a tensor operator takes its seed)."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is unknown: use one of {LOSSES}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is unknown: use one of {REDUCTIONS}")
    if loss in _OTHER:
        seed = options.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        return _other(x, y, loss, k, tau, _settings_json(options), seed, reduction, weight)
    if options:
        raise TypeError(f"loss {loss!r} takes no options, got {sorted(options)}")
    _check_inputs(x, y, None)
    args = (x, y, loss, int(k), float(tau), float(alpha), bool(reference_hard_switch))
    tracked = x.requires_grad and torch.is_grad_enabled()
    losses = _loss_and_grad(*args)[0] if tracked else _loss_only(*args)
    return _reduce_tensor(losses, x, reduction, weight)


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes <= 0:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    return int(n_classes)


def _check_alpha(alpha) -> float:
    alpha = 1.0 if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0 (or None for 1), got {alpha!r}")
    return float(alpha)


def _check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    return float(tau)


def _check_k(k, n_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < n_classes:
        raise ValueError(f"k must be an integer with 1 <= k < n_classes = {n_classes}, got {k!r}")
    return int(k)


class _TopkLoss(torch.nn.Module):
    """Common parts: the class count, the margin, the reduction; no tensors."""

    _kind = "svm"

    def __init__(self, n_classes, alpha=None, k=1, reduction="mean", reference_hard_switch=False):
        super().__init__()
        self.n_classes = _check_n_classes(n_classes)
        self.alpha = _check_alpha(alpha)
        self.k = _check_k(k, self.n_classes)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction {reduction!r} is unknown: use one of {REDUCTIONS}")
        self.reduction = reduction
        self.reference_hard_switch = bool(reference_hard_switch)
        self._tau = 1.0

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_inputs(x, y, self.n_classes)
        return topk_loss(
            x,
            y,
            loss=self._kind,
            k=self.k,
            tau=self._tau,
            alpha=self.alpha,
            reduction=self.reduction,
            weight=weight,
            reference_hard_switch=self.reference_hard_switch,
        )

    def extra_repr(self) -> str:
        parts = [f"n_classes={self.n_classes}", f"k={self.k}", f"alpha={self.alpha}"]
        if self._kind == "svm":
            parts.append(f"tau={self._tau}")
        parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class _SmoothLoss(_TopkLoss):
    @property
    def tau(self) -> float:
        """The temperature; assignments are validated (annealing schedules set it per epoch)."""
        return self._tau

    @tau.setter
    def tau(self, tau) -> None:
        self._tau = _check_tau(tau)


class SmoothTopkSVM(_SmoothLoss):
    """The smooth top-k SVM ``L_{k,tau}`` (Berrada et al., ICLR 2018) with margin ``alpha``:
    ``tau log(1 + exp(alpha/tau) sigma_k(e') / (e_y sigma_{k-1}(e')))`` with
    ``e_j = exp(x_j / (k tau))`` and ``e'`` the entries other than the label's. Arguments as the
    reference's ``topk.svm.SmoothTopkSVM(n_classes, alpha=None, tau=1., k=5)``; ``alpha=None``
    means 1. The reference switches samples to the hard loss when their top scores are far
    apart; here that is ``reference_hard_switch=True`` (off: the exact loss needs no switch)."""

    _kind = "svm"

    def __init__(self, n_classes, alpha=None, tau=1.0, k=5, *, reduction="mean", reference_hard_switch=False):
        super().__init__(n_classes, alpha, k, reduction, reference_hard_switch)
        self.tau = tau


class SmoothTop1SVM(SmoothTopkSVM):
    """The smooth top-1 SVM: ``SmoothTopkSVM`` with ``k = 1``, i.e.
    ``tau logsumexp((x + alpha [j != y] - x_y) / tau)``. Arguments as the reference's
    ``topk.svm.SmoothTop1SVM(n_classes, alpha=None, tau=1.)``."""

    def __init__(self, n_classes, alpha=None, tau=1.0, *, reduction="mean", reference_hard_switch=False):
        super().__init__(n_classes, alpha, tau, 1, reduction=reduction, reference_hard_switch=reference_hard_switch)


class MaxTopkSVM(_TopkLoss):
    """The hard top-k SVM ``max(0, alpha + (x_[k] - x_y) / k)`` (``x_[k]``: the k-th largest score
    of the other classes) with its subgradient. Arguments as the reference's
    ``topk.svm.MaxTopkSVM(n_classes, alpha=None, k=5)``."""

    _kind = "hard-svm"

    def __init__(self, n_classes, alpha=None, k=5, *, reduction="mean"):
        super().__init__(n_classes, alpha, k, reduction)


class MaxTop1SVM(MaxTopkSVM):
    """The hard top-1 SVM (the multiclass hinge loss). Arguments as the reference's
    ``topk.svm.MaxTop1SVM(n_classes, alpha=None)``."""

    def __init__(self, n_classes, alpha=None, *, reduction="mean"):
        super().__init__(n_classes, alpha, 1, reduction=reduction)


def _reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is unknown: use one of {REDUCTIONS}")
    return reduction


def _torch_seed() -> int:
    """A seed from PyTorch's default generator: ``torch.manual_seed`` makes the noise repeat."""
    return int(torch.randint(0, 2**62, (1,)).item())


class TruncatedTopkEntropy(torch.nn.Module):
    """The truncated top-k entropy (Lapin, Hein and Schiele, CVPR 2016):
    ``log(1 + sum_{j in R} exp(x_j - x_y))`` with ``R`` the classes other than ``y`` without the
    ``k - 1`` highest-scoring ones (``k = 1``: cross-entropy), with its exact gradient."""

    def __init__(self, n_classes, k=5, *, reduction="mean"):
        super().__init__()
        self.n_classes = _check_n_classes(n_classes)
        self.k = _check_k(k, self.n_classes)
        self.reduction = _reduction(reduction)

    def forward(self, x, y, weight=None):
        _check_inputs(x, y, self.n_classes)
        return _other(x, y, "entr", self.k, 1.0, "{}", 0, self.reduction, weight)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, k={self.k}, reduction={self.reduction!r}"


class BalNoisedTopK(torch.nn.Module):
    """The balanced noised top-k hinge of Garcin et al. (ICML 2022),
    ``max(0, 1 + mean_d top_{k+1}(x + epsilon Z_d) - x_y)`` with Gaussian ``Z_d``, and its
    gradient estimator. Arguments as ``pytopk.BalNoisedTopK(k, epsilon, n_sample=5)``. Each
    call draws new noise, from a seed taken from PyTorch's default generator (so
    ``torch.manual_seed`` repeats it), or from ``seed`` when given."""

    def __init__(self, k, epsilon, n_sample=5, *, reduction="mean"):
        super().__init__()
        self.k = _count_arg("k", k, 1)
        self.epsilon = float(epsilon)
        self.n_sample = _count_arg("n_sample", n_sample, 1)
        self.reduction = _reduction(reduction)
        # Checked once; settings are fixed at construction.
        self._json = _settings_json(BalNoisedTopK._settings(self))

    def _settings(self) -> dict:
        return dict(epsilon=self.epsilon, n_sample=self.n_sample)

    def forward(self, s, y, weight=None, *, seed: Optional[int] = None):
        seed = _torch_seed() if seed is None else seed
        return _other(s, y, "noised", self.k, 1.0, self._json, seed, self.reduction, weight)

    def extra_repr(self) -> str:
        return f"k={self.k}, epsilon={self.epsilon}, n_sample={self.n_sample}, reduction={self.reduction!r}"


class ImbalNoisedTopK(BalNoisedTopK):
    """The imbalanced noised top-k hinge of Garcin et al.:
    ``scale * max(0, m_y + mean_d top_{k+1}(x + epsilon Z_d) - x_y)`` with per-class margins
    ``m_c = max_m * n_c^(-1/4) / max n^(-1/4)`` from the training-set class counts. Arguments as
    ``pytopk.ImbalNoisedTopK(k, epsilon, max_m, cls_num_list, scale=50, n_sample=5)`` (``scale``
    50 assumes normalised logits; use 1 otherwise)."""

    def __init__(self, k, epsilon, max_m, cls_num_list, scale=50, n_sample=5, *, reduction="mean"):
        super().__init__(k, epsilon, n_sample, reduction=reduction)
        counts = [_count_arg("class count", c, 1) for c in cls_num_list]
        self.margins = _core.ldam_margins(counts, float(max_m))
        self.scale = float(scale)
        self._json = _settings_json(self._settings())

    def _settings(self) -> dict:
        return dict(epsilon=self.epsilon, n_sample=self.n_sample, margins=self.margins, scale=self.scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, classes={len(self.margins)}, scale={self.scale}"


class TopKCrossEntropyLoss(torch.nn.Module):
    """The top-k cross-entropy of Petersen et al. (ICML 2022) over NeuralSort:
    ``-log(f + (1 - 2f) D)`` with ``D`` the ``p_k``-weighted relaxed probability that the label
    is among the top k. Arguments as ``difftopk.TopKCrossEntropyLoss(diffsort_method,
    inverse_temperature, p_k, n, m=None, distribution=None, art_lambda=0.25, device='cpu',
    top1_mode='sm')``; only ``diffsort_method="neuralsort"`` is implemented (every top-1 mode:
    ``"sm"``, ``"sort"``, ``"smce"``) (``distribution``, ``art_lambda`` belong to the sorting networks;
    ``device`` is not needed: the module holds no tensors)."""

    def __init__(
        self,
        diffsort_method,
        inverse_temperature,
        p_k,
        n,
        m=None,
        distribution=None,
        art_lambda=0.25,
        device="cpu",
        top1_mode="sm",
        *,
        reduction="mean",
        floor=1e-7,
    ):
        super().__init__()
        del distribution, art_lambda, device
        if diffsort_method != "neuralsort":
            raise ValueError(f"diffsort_method {diffsort_method!r} is not implemented: only 'neuralsort'")
        if top1_mode not in ("sm", "sort", "smce"):
            raise ValueError(f"top1_mode {top1_mode!r} is unknown: use 'sm', 'sort' or 'smce'")
        inverse_temperature = float(inverse_temperature)
        if not (math.isfinite(inverse_temperature) and inverse_temperature > 0):
            raise ValueError(f"inverse_temperature must be finite and > 0, got {inverse_temperature!r}")
        self.inverse_temperature = inverse_temperature
        self.p_k = [float(p) for p in p_k]
        self.n = _check_n_classes(n)
        self.m = None if m is None else _count_arg("m", m, 1)
        self.top1_mode = top1_mode
        self.floor = float(floor)
        self.reduction = _reduction(reduction)
        self._settings = _settings_json(dict(p_k=self.p_k, m=self.m, top1_mode=top1_mode, floor=self.floor))

    def forward(self, outputs, labels, weight=None):
        _check_inputs(outputs, labels, self.n)
        tau = 1.0 / self.inverse_temperature
        return _other(outputs, labels, "topk-ce", 1, tau, self._settings, 0, self.reduction, weight)

    def extra_repr(self) -> str:
        return (
            f"p_k={self.p_k}, inverse_temperature={self.inverse_temperature}, n={self.n}, m={self.m}, "
            f"top1_mode={self.top1_mode!r}, reduction={self.reduction!r}"
        )


def _count_arg(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
