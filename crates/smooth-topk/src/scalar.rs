//! Storage precisions accepted by the public API. All arithmetic runs in `f64`; `f32` inputs are
//! widened on read and results rounded once on write, which is what keeps the float32 error at
//! the level of a single rounding.

/// A floating-point storage type for scores, losses and gradients (`f32` or `f64`).
pub trait Scalar: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    /// Widens to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Rounds an `f64` result to this type.
    fn from_f64(v: f64) -> Self;
}

impl Scalar for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Scalar for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}
