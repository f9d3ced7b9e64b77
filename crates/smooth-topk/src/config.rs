//! Validated loss hyper-parameters.

use crate::{Result, TopkError};

/// Checks `k >= 1`; the upper bound `k < n` is checked per batch.
pub(crate) fn check_k(k: usize) -> Result<usize> {
    if k == 0 {
        Err(TopkError::ZeroK)
    } else {
        Ok(k)
    }
}

/// Checks that the temperature is finite and positive.
pub(crate) fn check_tau(tau: f64) -> Result<f64> {
    if tau.is_finite() && tau > 0.0 {
        Ok(tau)
    } else {
        Err(TopkError::InvalidTau(tau))
    }
}

/// Checks that the margin is finite and non-negative.
pub(crate) fn check_alpha(alpha: f64) -> Result<f64> {
    if alpha.is_finite() && alpha >= 0.0 {
        Ok(alpha)
    } else {
        Err(TopkError::InvalidAlpha(alpha))
    }
}
