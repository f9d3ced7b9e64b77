//! The one error type of the library: every variant names the value that was rejected.

use thiserror::Error;

/// Why a loss, metric or polynomial could not be computed. Inputs are checked before anything
/// is written, so an `Err` leaves the caller's output buffers untouched.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TopkError {
    /// `k` must satisfy `1 <= k < n` (the loss compares the label with k other classes).
    #[error("k = {k} is invalid for {n} classes: need 1 <= k < n")]
    InvalidK { k: usize, n: usize },
    /// `k = 0` is rejected when a configuration is built, before `n` is known.
    #[error("k = 0 is invalid: need k >= 1")]
    ZeroK,
    /// The temperature must be finite and strictly positive.
    #[error("tau = {0} is invalid: need a finite tau > 0")]
    InvalidTau(f64),
    /// The margin must be finite and non-negative.
    #[error("alpha = {0} is invalid: need a finite alpha >= 0")]
    InvalidAlpha(f64),
    /// A label outside `0..n`.
    #[error("sample {sample}: label {label} is out of range for {n} classes")]
    LabelOutOfRange {
        sample: usize,
        label: usize,
        n: usize,
    },
    /// A NaN or infinite score.
    #[error("sample {sample}: score {index} is {value}, scores must be finite")]
    NonFiniteScore {
        sample: usize,
        index: usize,
        value: f64,
    },
    /// A batch needs at least one sample and at least `min` classes.
    #[error("need at least {min} classes, got n = {n}")]
    TooFewClasses { n: usize, min: usize },
    /// No samples at all.
    #[error("empty batch: no samples")]
    EmptyBatch,
    /// A buffer whose length does not fit the batch shape.
    #[error("{what} has length {got}, expected {expected}")]
    ShapeMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = TopkError> = std::result::Result<T, E>;
