//! The one error type of the library: every variant names the value that was rejected.

use thiserror::Error;

/// Why a loss, metric or polynomial could not be computed. Inputs are checked before anything
/// is written, so an `Err` about an input leaves the caller's output buffers untouched; only
/// [`TopkError::NotRepresentable`] is found while computing.
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
    /// Another setting out of its range (the newer losses' `epsilon`, `n_sample`, margins,
    /// `scale`, `p_k`, `m`, floor; caller-given noise).
    #[error("{name} = {value} is invalid: need {need}")]
    InvalidSetting {
        name: &'static str,
        value: f64,
        need: &'static str,
    },
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
    /// A finite input whose loss cannot be represented: it overflows the output type (e.g.
    /// float32), or the scores are so far apart, relative to `k tau`, that the weights
    /// `exp((s_i - s_y) / (k tau))` leave even the extended range. The outputs of the batch are
    /// unspecified then (this is found while computing, unlike the input errors).
    #[error("sample {sample}: the loss is not representable (it overflows the output type, or the scores are too far apart for k tau)")]
    NotRepresentable { sample: usize },
    /// A requested output too large to allocate.
    #[error("{what} = {value} is too large: its output cannot be allocated")]
    TooLarge { what: &'static str, value: usize },
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
