"""Exact, fast top-k classification losses: the smooth top-k SVM of Berrada, Zisserman and
Kumar (ICLR 2018), the hard top-k SVM and cross-entropy, computed by the Rust core of
`smooth-topk` (exact O(nk) losses and gradients, stable in float32 and float64); and the
field's other top-k losses: the truncated top-k entropy (Lapin et al., CVPR 2016), the noised
top-k hinge (Garcin et al., ICML 2022) and the top-k cross-entropy over NeuralSort (Petersen et
al., ICML 2022).

NumPy functions (this module)::

    import numpy as np, smooth_topk
    scores = np.random.randn(256, 1000).astype(np.float32)
    labels = np.random.randint(0, 1000, 256)
    value = smooth_topk.loss(scores, labels, k=5, tau=1.0, alpha=1.0)
    value, grad = smooth_topk.loss_and_grad(scores, labels, k=5)
    top1_to_top5 = smooth_topk.topk_accuracy(scores, labels, k=5)

PyTorch modules: :mod:`smooth_topk.torch` (``SmoothTopkSVM``, ``SmoothTop1SVM``, ``MaxTopkSVM``,
``MaxTop1SVM``, with the reference package's arguments; ``TruncatedTopkEntropy``;
``BalNoisedTopK`` and ``ImbalNoisedTopK`` with ``pytopk``'s; ``TopKCrossEntropyLoss`` with
``difftopk``'s).

Scores are ``[batch, n]`` arrays of float32 or float64 (other float dtypes are computed in
float32); C-contiguous arrays are read in place. Labels are integers in ``0..n``. Every invalid
input raises ``ValueError`` (a value: k, tau, alpha, a label, a non-finite score, with its
position) or ``TypeError`` (a type or dtype); the computation releases the interpreter lock and
runs on all cores, or on ``num_threads``.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core

__version__ = _core.__version__

__all__ = ["loss", "loss_and_grad", "per_sample", "topk_accuracy", "LOSSES", "OPTIONS", "REDUCTIONS"]

#: The losses by name: the smooth top-k SVM, the hard top-k SVM, cross-entropy, the truncated
#: top-k entropy, the noised top-k hinge, the top-k cross-entropy.
LOSSES = ("svm", "hard-svm", "ce", "entr", "noised", "topk-ce")

#: Settings of the other losses, with their defaults: ``epsilon``, ``n_sample``, ``margins``
#: (per class; the imbalanced hinge), ``scale``, ``seed``, ``noise`` (``[batch, n, n_sample]``
#: float64, instead of the seeded noise) for ``"noised"``; ``p_k``, ``m``, ``top1_mode``
#: (``"sm"``, ``"sort"`` or ``"smce"``), ``floor`` for ``"topk-ce"`` (whose NeuralSort temperature is
#: ``tau``).
OPTIONS = {
    "epsilon": 1.0,
    "n_sample": 5,
    "margins": None,
    "scale": 1.0,
    "seed": 0,
    "noise": None,
    "p_k": None,
    "m": None,
    "top1_mode": "sm",
    "floor": 1e-7,
}
#: How per-sample losses are combined.
REDUCTIONS = ("mean", "sum", "none")


def _scores(scores) -> np.ndarray:
    """A C-contiguous float32 / float64 view (or copy) of ``scores``, checked to be 2-D."""
    if not isinstance(scores, np.ndarray):
        try:
            scores = np.asarray(scores)
        except Exception as e:  # noqa: BLE001 - any conversion failure is a type error here
            raise TypeError(f"scores must be an array of floats, got {type(scores).__name__}") from e
    if not np.issubdtype(scores.dtype, np.floating):
        raise TypeError(f"scores must be floats, got dtype {scores.dtype}")
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape [batch, n], got {scores.ndim} dimensions {scores.shape}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float32)
    return np.ascontiguousarray(scores)


def _labels(labels, batch: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape [{batch}] (one per row of scores), got {labels.shape}")
    if labels.dtype == np.uint64 and labels.size and labels.max() > np.iinfo(np.int64).max:
        raise ValueError(f"label {labels.max()} is out of range")
    return np.ascontiguousarray(labels, dtype=np.int64)


def _count(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} = {value} is invalid: need {name} >= {minimum}")
    return int(value)


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _threads(num_threads):
    return None if num_threads is None else _count("num_threads", num_threads, 1)


def _options(options: dict) -> dict:
    """The other losses' settings, checked for their types (their values by the core)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}: the options are {sorted(OPTIONS)}")
    out = dict(OPTIONS, **options)
    for name in ("epsilon", "scale", "floor"):
        out[name] = _real(name, out[name])
    out["n_sample"] = _count("n_sample", out["n_sample"], 1)
    seed = out["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    out["seed"] = int(seed)
    for name in ("margins", "p_k"):
        if out[name] is not None:
            values = np.asarray(out[name])
            if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
                raise TypeError(f"{name} must be numbers, got dtype {values.dtype}")
            if values.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
            out[name] = [float(v) for v in values]
    if out["m"] is not None:
        out["m"] = _count("m", out["m"], 1)
    if out["top1_mode"] not in ("sm", "sort", "smce"):
        raise ValueError(f"top1_mode {out['top1_mode']!r} is unknown: use 'sm', 'sort' or 'smce'")
    if out["noise"] is not None:
        noise = np.asarray(out["noise"])
        if not np.issubdtype(noise.dtype, np.floating):
            raise TypeError(f"noise must be floats, got dtype {noise.dtype}")
        out["noise"] = np.ascontiguousarray(noise, dtype=np.float64)
    return out


def per_sample(
    scores,
    labels,
    *,
    loss: str = "svm",
    k: int = 5,
    tau: float = 1.0,
    alpha: float = 1.0,
    reference_hard_switch: bool = False,
    with_grad: bool = False,
    num_threads: int | None = None,
    **options,
):
    """Per-sample losses ``[batch]`` (and, with ``with_grad``, each sample's gradient
    ``[batch, n]``), in the dtype of ``scores`` (float32 or float64).

    ``loss``: ``"svm"`` (smooth top-k SVM ``L_{k,tau}`` with margin ``alpha``), ``"hard-svm"``
    (``max(0, alpha + (s_[k] - s_y) / k)``), ``"ce"`` (cross-entropy; ``k``, ``tau``,
    ``alpha`` unused), ``"entr"`` (truncated top-k entropy), ``"noised"`` (noised top-k hinge),
    ``"topk-ce"`` (top-k cross-entropy over NeuralSort at temperature ``tau``; ``k`` unused,
    ``p_k`` required); the last two take the settings of :data:`OPTIONS` as keywords.
    ``reference_hard_switch`` applies the PyTorch reference's switch to the hard loss when
    ``s_[k] - s_[k+1] >= k tau ln 1000`` (for parity studies only).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is unknown: use one of {LOSSES}")
    scores = _scores(scores)
    labels = _labels(labels, scores.shape[0])
    losses, grad = _core.per_sample(
        scores,
        labels,
        loss,
        _count("k", k, 1),
        _real("tau", tau),
        _real("alpha", alpha),
        bool(reference_hard_switch),
        bool(with_grad),
        _threads(num_threads),
        **_options(options),
    )
    return (losses, grad) if with_grad else losses


def _weights(weights, batch: int, dtype) -> np.ndarray | None:
    if weights is None:
        return None
    weights = np.asarray(weights)
    if not (np.issubdtype(weights.dtype, np.floating) or np.issubdtype(weights.dtype, np.integer)):
        raise TypeError(f"weights must be numbers, got dtype {weights.dtype}")
    if weights.shape != (batch,):
        raise ValueError(f"weights must have shape [{batch}], got {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite")
    return weights.astype(dtype, copy=False)


def _reduce(losses: np.ndarray, grad, reduction: str, weights):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is unknown: use one of {REDUCTIONS}")
    batch = losses.shape[0]
    if weights is not None:
        losses = losses * weights
        if grad is not None:
            grad = grad * weights[:, None]
    if reduction == "none":
        return losses, grad
    scale = 1.0 if reduction == "sum" else 1.0 / batch
    value = losses.sum(dtype=np.float64) * scale
    if grad is not None:
        grad = grad * np.asarray(scale, dtype=grad.dtype)
    return value, grad


def _reduced(scores, labels, with_grad, loss, k, tau, alpha, reduction, weights, switch, num_threads, options):
    """:func:`per_sample`, weighted and reduced: ``(value, grad or None)``."""
    out = per_sample(
        scores,
        labels,
        loss=loss,
        k=k,
        tau=tau,
        alpha=alpha,
        reference_hard_switch=switch,
        with_grad=with_grad,
        num_threads=num_threads,
        **options,
    )
    losses, grad = out if with_grad else (out, None)
    w = _weights(weights, losses.shape[0], losses.dtype)
    value, grad = _reduce(losses, grad, reduction, w)
    return (value if reduction == "none" else float(value)), grad


def loss(
    scores,
    labels,
    *,
    loss: str = "svm",
    k: int = 5,
    tau: float = 1.0,
    alpha: float = 1.0,
    reduction: str = "mean",
    weights=None,
    reference_hard_switch: bool = False,
    num_threads: int | None = None,
    **options,
):
    """The loss of a batch: a float for ``reduction="mean"`` (default) or ``"sum"``, the
    per-sample losses for ``"none"``. ``weights`` (one per sample) multiply the per-sample
    losses before the reduction; ``"mean"`` then divides by the batch size."""
    value, _ = _reduced(
        scores, labels, False, loss, k, tau, alpha, reduction, weights, reference_hard_switch, num_threads, options
    )
    return value


def loss_and_grad(
    scores,
    labels,
    *,
    loss: str = "svm",
    k: int = 5,
    tau: float = 1.0,
    alpha: float = 1.0,
    reduction: str = "mean",
    weights=None,
    reference_hard_switch: bool = False,
    num_threads: int | None = None,
    **options,
):
    """``(value, grad)``: the loss as :func:`loss` returns it and its exact gradient with respect
    to ``scores`` (``[batch, n]``, the dtype of the scores; for ``"none"``, row ``i`` is the
    gradient of sample ``i``'s loss)."""
    return _reduced(
        scores, labels, True, loss, k, tau, alpha, reduction, weights, reference_hard_switch, num_threads, options
    )


def topk_accuracy(scores, labels, k: int = 5, *, num_threads: int | None = None) -> np.ndarray:
    """Top-1 .. top-k accuracy in [0, 1] (float64 array of length k); ties count against the
    label."""
    scores = _scores(scores)
    labels = _labels(labels, scores.shape[0])
    correct = _core.topk_correct(scores, labels, _count("k", k, 1), _threads(num_threads))
    return np.asarray(correct, dtype=np.float64) / scores.shape[0]
