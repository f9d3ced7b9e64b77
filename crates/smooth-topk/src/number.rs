//! The two number systems the symmetric-polynomial passes run in.
//!
//! * `f64` on weights `exp(x_i - max x)`: every weight is in (0, 1], every polynomial
//!   coefficient is a sum of positive products, so nothing cancels and nothing overflows until
//!   binomial growth passes 1e308. This is the fast path.
//! * [`ExtFloat`]: an `f64` mantissa with an `f64` binary exponent of its own, for score ranges
//!   where products of k weights leave the `f64` range. Multiplication adds exponents exactly and
//!   addition aligns by a power of two, so it keeps `f64` relative precision at any magnitude
//!   without a single `exp` or `ln` inside the passes (a log-space recursion would need two per
//!   multiply-add).

/// The operations the polynomial passes need: a commutative semiring on non-negative numbers
/// plus conversions. All values are `>= 0`.
pub(crate) trait PolyNum: Copy + Send + Sync {
    const ZERO: Self;
    const ONE: Self;
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// `1 / self` for a positive value.
    fn recip(self) -> Self;
    /// The value as an `f64` (may underflow to 0; only used on quantities known to be <= C(n,k)).
    fn to_f64(self) -> f64;
    /// `ln(self / other)` for positive values, exact in the exponent.
    fn ln_ratio(self, other: Self) -> f64;
}

impl PolyNum for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        self * other
    }
    #[inline(always)]
    fn recip(self) -> Self {
        1.0 / self
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn ln_ratio(self, other: Self) -> f64 {
        (self / other).ln()
    }
}

/// A non-negative number `m * 2^e` with `m` in [0.5, 1) (or `m = 0` for zero) and an
/// integer-valued `f64` exponent, so its range is effectively unbounded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ExtFloat {
    m: f64,
    e: f64,
}

/// High and low parts of ln 2 (Cody and Waite): `LN2_HI` has 32 significant bits, so `E * LN2_HI`
/// is exact for |E| < 2^21 and the argument reduction in [`ExtFloat::exp`] loses nothing there.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// 2^-d for an integer d in 0..=1022, built from its bit pattern.
#[inline(always)]
fn pow2_neg(d: u32) -> f64 {
    f64::from_bits(u64::from(1023 - d) << 52)
}

impl ExtFloat {
    /// Normalises a positive, normal `f64` mantissa into [0.5, 1), moving its binary exponent
    /// into `e`.
    #[inline(always)]
    fn normalized(m: f64, e: f64) -> Self {
        let bits = m.to_bits();
        let exp_field = ((bits >> 52) & 0x7ff) as i64;
        let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022u64 << 52));
        ExtFloat {
            m,
            e: e + (exp_field - 1022) as f64,
        }
    }

    /// `exp(u)` for any finite `u`, with the relative accuracy of `f64::exp`: the integer part of
    /// `u / ln 2` goes to the exponent exactly and only the reduced argument is exponentiated.
    #[inline]
    pub(crate) fn exp(u: f64) -> Self {
        let big = u * std::f64::consts::LOG2_E;
        let e = big.round();
        // For |u| beyond 2^50 the reduced argument carries only rounding noise (the input's own
        // ulp exceeds 1e-3 there); the clamp keeps it a normal mantissa whatever happens.
        let r = ((u - e * LN2_HI) - e * LN2_LO).clamp(-1.0, 1.0);
        Self::normalized(r.exp(), e)
    }

    /// The exact binary logarithm scale of the value, for tests.
    #[cfg(test)]
    pub(crate) fn ln(self) -> f64 {
        self.m.ln() + self.e * std::f64::consts::LN_2
    }
}

impl PolyNum for ExtFloat {
    const ZERO: Self = ExtFloat {
        m: 0.0,
        e: f64::NEG_INFINITY,
    };
    const ONE: Self = ExtFloat { m: 0.5, e: 1.0 };

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        if other.m == 0.0 {
            return self;
        }
        if self.m == 0.0 {
            return other;
        }
        let (hi, lo) = if self.e >= other.e {
            (self, other)
        } else {
            (other, self)
        };
        let d = hi.e - lo.e;
        // Beyond 2^-60 the smaller term is below half an ulp of the larger one.
        if d > 60.0 {
            return hi;
        }
        let m = hi.m + lo.m * pow2_neg(d as u32);
        if m >= 1.0 {
            ExtFloat {
                m: m * 0.5,
                e: hi.e + 1.0,
            }
        } else {
            ExtFloat { m, e: hi.e }
        }
    }

    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        if self.m == 0.0 || other.m == 0.0 {
            return Self::ZERO;
        }
        let m = self.m * other.m;
        let e = self.e + other.e;
        if m < 0.5 {
            ExtFloat {
                m: m * 2.0,
                e: e - 1.0,
            }
        } else {
            ExtFloat { m, e }
        }
    }

    #[inline(always)]
    fn recip(self) -> Self {
        // 1/m is in (1, 2]; renormalise.
        Self::normalized(1.0 / self.m, -self.e)
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        if self.m == 0.0 {
            return 0.0;
        }
        // Clamp the exponent so powi neither overflows nor loops over huge values; outside
        // [-1100, 1100] the result is 0 or infinity either way.
        let e = self.e.clamp(-1100.0, 1100.0) as i32;
        // Split the scaling so that 2^e itself stays representable.
        let half = e / 2;
        self.m * 2f64.powi(half) * 2f64.powi(e - half)
    }

    #[inline(always)]
    fn ln_ratio(self, other: Self) -> f64 {
        (self.m / other.m).ln() + (self.e - other.e) * std::f64::consts::LN_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_in_range_and_extends_beyond() {
        for &u in &[-700.0, -20.5, -1.0, 0.0, 1e-9, 0.3, 5.0, 700.0] {
            let x = ExtFloat::exp(u);
            let want = f64::exp(u);
            assert!(
                (x.to_f64() - want).abs() <= 4.0 * f64::EPSILON * want,
                "u={u}"
            );
        }
        for &u in &[-1e7, -12345.678, 2000.0, 1e9] {
            let x = ExtFloat::exp(u);
            assert!(
                (x.ln() - u).abs() <= 1e-15 * u.abs().max(1.0),
                "u={u}: {}",
                x.ln()
            );
        }
    }

    #[test]
    fn semiring_ops_agree_with_f64() {
        let a = ExtFloat::exp(3.25);
        let b = ExtFloat::exp(-2.5);
        let close = |x: f64, y: f64| (x - y).abs() <= 4.0 * f64::EPSILON * y.abs();
        assert!(close(a.add(b).to_f64(), 3.25f64.exp() + (-2.5f64).exp()));
        assert!(close(a.mul(b).to_f64(), (0.75f64).exp()));
        assert!(close(a.recip().to_f64(), (-3.25f64).exp()));
        assert!(close(a.ln_ratio(b), 5.75));
        assert_eq!(a.add(ExtFloat::ZERO), a);
        assert_eq!(ExtFloat::ZERO.add(b), b);
        assert_eq!(a.mul(ExtFloat::ZERO).to_f64(), 0.0);
        assert_eq!(ExtFloat::ONE.to_f64(), 1.0);
        // Numbers far outside the f64 range keep exact ratios.
        let huge = ExtFloat::exp(1e6);
        let tiny = ExtFloat::exp(-1e6);
        assert!((huge.mul(tiny).to_f64() - 1.0).abs() < 1e-9);
        assert!((huge.add(huge).ln_ratio(huge) - std::f64::consts::LN_2).abs() < 1e-15);
    }
}
