//! `smooth_topk._core`: the numeric core of `smooth-topk` for Python.
//!
//! Two functions, both over C-contiguous `float32` or `float64` arrays of shape
//! `[batch, n]` read in place (no copy) and `int64` labels:
//!
//! * `per_sample(scores, labels, kind, k, tau, alpha, ...)`: per-sample losses `[batch]` and,
//!   when asked, their gradients `[batch, n]`, in the dtype of the scores, for every loss of
//!   the core (the smooth and hard SVMs, cross-entropy, the truncated top-k entropy, the noised
//!   top-k hinge, the top-k cross-entropy);
//! * `topk_correct(scores, labels, max_k, ...)`: how many labels are among the top 1..=max_k
//!   scores.
//!
//! The interpreter lock is released while the core computes, on rayon threads (all cores, or
//! `num_threads`). Every invalid input raises `ValueError` or `TypeError` with the core's
//! message (the bad value and where it is); nothing is written before the input is checked.
//! The Python package `smooth_topk` (NumPy helpers, reductions, the PyTorch modules) wraps these.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use numpy::{
    Element, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyReadonlyArray3, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use smooth_topk::{
    AnyLoss, CrossEntropy, HardTopkSvm, Loss, NoisedTopkHinge, Scalar, SmoothTopkSvm, Top1Mode,
    TopkCrossEntropy, TopkError, TruncatedTopkEntropy,
};

/// Most threads a call may ask for.
const MAX_THREADS: usize = 1024;

fn value_error(e: TopkError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Settings of the field's other losses (each reads those that apply to it).
struct Options {
    epsilon: f64,
    n_sample: usize,
    margins: Option<Vec<f64>>,
    scale: f64,
    seed: u64,
    p_k: Option<Vec<f64>>,
    m: Option<usize>,
    top1_mode: String,
    floor: f64,
}

/// The loss named `kind` (`svm`, `hard-svm`, `ce`, `entr`, `noised`, `topk-ce`), validated.
fn build(
    kind: &str,
    k: usize,
    tau: f64,
    alpha: f64,
    switch: bool,
    o: &Options,
) -> PyResult<AnyLoss> {
    Ok(match kind {
        "svm" => SmoothTopkSvm::new(k, tau, alpha)
            .map_err(value_error)?
            .with_reference_hard_switch(switch)
            .into(),
        "hard-svm" => HardTopkSvm::new(k, alpha).map_err(value_error)?.into(),
        "ce" => CrossEntropy.into(),
        "entr" => TruncatedTopkEntropy::new(k).map_err(value_error)?.into(),
        "noised" => match &o.margins {
            None => NoisedTopkHinge::balanced(k, o.epsilon, o.n_sample),
            Some(m) => NoisedTopkHinge::imbalanced(k, o.epsilon, o.n_sample, m.clone(), o.scale),
        }
        .map_err(value_error)?
        .with_seed(o.seed)
        .into(),
        "topk-ce" => {
            let top1 = match o.top1_mode.as_str() {
                "sm" => Top1Mode::Softmax,
                "sort" => Top1Mode::Sort,
                "smce" => Top1Mode::SoftmaxCe,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "top1_mode {other:?} is unknown: use \"sm\", \"sort\" or \"smce\""
                    )))
                }
            };
            let p_k = match &o.p_k {
                Some(p) => p.clone(),
                None => return Err(PyValueError::new_err("the top-k cross-entropy needs p_k")),
            };
            TopkCrossEntropy::new(&p_k, tau, o.m)
                .and_then(|l| l.with_top1(top1).with_floor(o.floor))
                .map_err(value_error)?
                .into()
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "loss {other:?} is unknown: use \"svm\", \"hard-svm\", \"ce\", \"entr\", \"noised\" or \"topk-ce\""
            )))
        }
    })
}

/// Labels as indices; a negative label is refused with its position.
fn labels(labels: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<usize>> {
    let values = labels
        .as_slice()
        .map_err(|_| PyValueError::new_err("labels must be a contiguous 1-D int64 array"))?;
    values
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l)
                .map_err(|_| PyValueError::new_err(format!("sample {i}: label {l} is negative")))
        })
        .collect()
}

/// Runs `f` on a rayon pool of `threads` threads (the global pool when `None`); pools are
/// built once per size and kept. One thread means the calling thread itself: handing the work
/// to a sleeping pool thread and waiting for it would cost tens of microseconds per call.
fn on_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    let Some(threads) = threads else {
        return Ok(f());
    };
    if threads == 0 || threads > MAX_THREADS {
        return Err(PyValueError::new_err(format!(
            "num_threads = {threads} is invalid: need 1 to {MAX_THREADS}"
        )));
    }
    if threads == 1 {
        thread_local! {
            // A pool whose only worker is this thread: `install` runs inline.
            static HERE: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .build()
                .ok();
        }
        return HERE.with(|pool| match pool {
            Some(pool) => Ok(pool.install(f)),
            None => Err(PyValueError::new_err(
                "cannot run on this thread alone (it belongs to a thread pool)",
            )),
        });
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pool = {
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| PyValueError::new_err("thread pool cache poisoned"))?;
        match pools.get(&threads) {
            Some(pool) => pool.clone(),
            None => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| PyValueError::new_err(format!("cannot start threads: {e}")))?;
                let pool = Arc::new(pool);
                pools.insert(threads, pool.clone());
                pool
            }
        }
    };
    Ok(pool.install(f))
}

/// A 2-D float32 or float64 array, C-contiguous.
enum Scores<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

fn scores<'py>(array: &Bound<'py, PyAny>) -> PyResult<Scores<'py>> {
    if let Ok(a) = array.cast::<PyArray2<f32>>() {
        return Ok(Scores::F32(a.readonly()));
    }
    if let Ok(a) = array.cast::<PyArray2<f64>>() {
        return Ok(Scores::F64(a.readonly()));
    }
    Err(PyTypeError::new_err(
        "scores must be a 2-D float32 or float64 numpy array of shape [batch, n]",
    ))
}

/// Per-sample losses and, with `with_grad`, gradients, in the scores' dtype.
fn run<'py, T: Scalar + Element>(
    py: Python<'py>,
    scores: PyReadonlyArray2<'py, T>,
    labels: &[usize],
    loss: AnyLoss,
    noise: Option<&[f64]>,
    with_grad: bool,
    threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let [batch, n] = [scores.shape()[0], scores.shape()[1]];
    let values = scores.as_slice().map_err(|_| {
        PyValueError::new_err("scores must be C-contiguous (np.ascontiguousarray makes a copy)")
    })?;
    let losses = PyArray1::<T>::zeros(py, batch, false);
    let grad = with_grad.then(|| PyArray2::<T>::zeros(py, [batch, n], false));
    {
        let mut losses_rw = losses.readwrite();
        let loss_out = losses_rw
            .as_slice_mut()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut grad_rw = grad.as_ref().map(|g| g.readwrite());
        let grad_out = match grad_rw.as_mut() {
            Some(g) => Some(
                g.as_slice_mut()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            ),
            None => None,
        };
        py.detach(|| {
            on_pool(threads, || match (&loss, noise, grad_out) {
                (AnyLoss::NoisedHinge(l), Some(z), Some(g)) => {
                    l.loss_and_grad_per_sample_with_noise(values, labels, n, z, loss_out, g)
                }
                (AnyLoss::NoisedHinge(l), Some(z), None) => {
                    l.loss_per_sample_with_noise(values, labels, n, z, loss_out)
                }
                (_, _, Some(g)) => loss.loss_and_grad_per_sample(values, labels, n, loss_out, g),
                (_, _, None) => loss.loss_per_sample(values, labels, n, loss_out),
            })
        })?
        .map_err(value_error)?;
    }
    Ok((losses.into_any(), grad.map(|g| g.into_any())))
}

/// Per-sample losses `[batch]` and, with `with_grad`, their gradients `[batch, n]`, in the
/// dtype of `scores`. The keyword settings after `num_threads` belong to the field's other
/// losses; `noise` (float64 `[batch, n, n_sample]`, C-contiguous) replaces the seeded noise of
/// the noised hinge.
#[pyfunction]
#[pyo3(signature = (
    scores, labels, kind, k, tau, alpha, reference_hard_switch=false, with_grad=true,
    num_threads=None, *, epsilon=1.0, n_sample=5, margins=None, scale=1.0, seed=0, noise=None,
    p_k=None, m=None, top1_mode="sm".to_string(), floor=1e-7
))]
#[allow(clippy::too_many_arguments)]
fn per_sample<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    labels: PyReadonlyArray1<'py, i64>,
    kind: &str,
    k: usize,
    tau: f64,
    alpha: f64,
    reference_hard_switch: bool,
    with_grad: bool,
    num_threads: Option<usize>,
    epsilon: f64,
    n_sample: usize,
    margins: Option<Vec<f64>>,
    scale: f64,
    seed: u64,
    noise: Option<PyReadonlyArray3<'py, f64>>,
    p_k: Option<Vec<f64>>,
    m: Option<usize>,
    top1_mode: String,
    floor: f64,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let options = Options {
        epsilon,
        n_sample,
        margins,
        scale,
        seed,
        p_k,
        m,
        top1_mode,
        floor,
    };
    let loss = build(kind, k, tau, alpha, reference_hard_switch, &options)?;
    let labels = self::labels(&labels)?;
    let scores = self::scores(scores)?;
    let shape = match &scores {
        Scores::F32(s) => [s.shape()[0], s.shape()[1], n_sample],
        Scores::F64(s) => [s.shape()[0], s.shape()[1], n_sample],
    };
    let noise = match &noise {
        Some(_) if kind != "noised" => {
            return Err(PyValueError::new_err(
                "noise applies to the noised hinge only",
            ));
        }
        Some(z) if z.shape() != shape => {
            return Err(PyValueError::new_err(format!(
                "noise has shape {:?}, expected [batch, n, n_sample] = {shape:?}",
                z.shape()
            )))
        }
        Some(z) => Some(z.as_slice().map_err(|_| {
            PyValueError::new_err("noise must be a C-contiguous float64 array [batch, n, n_sample]")
        })?),
        None => None,
    };
    match scores {
        Scores::F32(s) => run(py, s, &labels, loss, noise, with_grad, num_threads),
        Scores::F64(s) => run(py, s, &labels, loss, noise, with_grad, num_threads),
    }
}

/// For each k in 1..=max_k, how many samples have their label among the top k scores (ties
/// count against the label).
#[pyfunction]
#[pyo3(signature = (scores, labels, max_k, num_threads=None))]
fn topk_correct<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    labels: PyReadonlyArray1<'py, i64>,
    max_k: usize,
    num_threads: Option<usize>,
) -> PyResult<Vec<usize>> {
    fn count<T: Scalar + Element>(
        py: Python<'_>,
        scores: PyReadonlyArray2<'_, T>,
        labels: &[usize],
        max_k: usize,
        threads: Option<usize>,
    ) -> PyResult<Vec<usize>> {
        let n = scores.shape()[1];
        if max_k > n {
            return Err(PyValueError::new_err(format!(
                "k = {max_k} is larger than the {n} classes"
            )));
        }
        let values = scores
            .as_slice()
            .map_err(|_| PyValueError::new_err("scores must be C-contiguous"))?;
        py.detach(|| {
            on_pool(threads, || {
                smooth_topk::topk_correct(values, labels, n, max_k)
            })
        })?
        .map_err(value_error)
    }
    let labels = self::labels(&labels)?;
    match self::scores(scores)? {
        Scores::F32(s) => count(py, s, &labels, max_k, num_threads),
        Scores::F64(s) => count(py, s, &labels, max_k, num_threads),
    }
}

/// The imbalanced noised hinge's per-class margins from training-set class counts (see
/// `NoisedTopkHinge::ldam_margins`).
#[pyfunction]
fn ldam_margins(class_counts: Vec<u64>, max_m: f64) -> PyResult<Vec<f64>> {
    NoisedTopkHinge::ldam_margins(&class_counts, max_m).map_err(value_error)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(per_sample, m)?)?;
    m.add_function(wrap_pyfunction!(ldam_margins, m)?)?;
    m.add_function(wrap_pyfunction!(topk_correct, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
