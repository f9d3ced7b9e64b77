//! `smooth_topk._core`: the numeric core of `smooth-topk` for Python.
//!
//! Two functions, both over C-contiguous `float32` or `float64` arrays of shape
//! `[batch, n]` read in place (no copy) and `int64` labels:
//!
//! * `per_sample(scores, labels, kind, k, tau, alpha, ...)`: per-sample losses `[batch]` and,
//!   when asked, their gradients `[batch, n]`, in the dtype of the scores;
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
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use smooth_topk::{AnyLoss, CrossEntropy, HardTopkSvm, Loss, Scalar, SmoothTopkSvm, TopkError};

/// Most threads a call may ask for.
const MAX_THREADS: usize = 1024;

fn value_error(e: TopkError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The loss named `kind` (`svm`, `hard-svm`, `ce`), validated.
fn build(kind: &str, k: usize, tau: f64, alpha: f64, switch: bool) -> PyResult<AnyLoss> {
    Ok(match kind {
        "svm" => SmoothTopkSvm::new(k, tau, alpha)
            .map_err(value_error)?
            .with_reference_hard_switch(switch)
            .into(),
        "hard-svm" => HardTopkSvm::new(k, alpha).map_err(value_error)?.into(),
        "ce" => CrossEntropy.into(),
        other => {
            return Err(PyValueError::new_err(format!(
                "loss {other:?} is unknown: use \"svm\", \"hard-svm\" or \"ce\""
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
            on_pool(threads, || match grad_out {
                Some(g) => loss.loss_and_grad_per_sample(values, labels, n, loss_out, g),
                None => loss.loss_per_sample(values, labels, n, loss_out),
            })
        })?
        .map_err(value_error)?;
    }
    Ok((losses.into_any(), grad.map(|g| g.into_any())))
}

/// Per-sample losses `[batch]` and, with `with_grad`, their gradients `[batch, n]`, in the
/// dtype of `scores`.
#[pyfunction]
#[pyo3(signature = (scores, labels, kind, k, tau, alpha, reference_hard_switch=false, with_grad=true, num_threads=None))]
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
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let loss = build(kind, k, tau, alpha, reference_hard_switch)?;
    let labels = self::labels(&labels)?;
    match self::scores(scores)? {
        Scores::F32(s) => run(py, s, &labels, loss, with_grad, num_threads),
        Scores::F64(s) => run(py, s, &labels, loss, with_grad, num_threads),
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(per_sample, m)?)?;
    m.add_function(wrap_pyfunction!(topk_correct, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
