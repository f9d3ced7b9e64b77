//! The two number systems of the smooth kernel's polynomial passes. A number is a pair
//! `(m, e)` so that one code path serves both; which one is a comptime flag, `ext`.
//!
//! * Linear (`ext = false`): the plain `f32` `m`; `e` is unused (never read). Fast, and exact to
//!   a few ulps while the weights are scaled by the largest score and the coefficients stay well
//!   inside f32's range.
//! * Extended (`ext = true`): `m * 2^e` with `m` in [1, 2) (or `m = 0` for zero) and an `i32`
//!   exponent. Multiplication multiplies mantissas and adds exponents exactly; addition aligns
//!   by an exact power of two. Every operation keeps f32's relative precision at any magnitude,
//!   with no `exp` or `ln` inside the passes. (A log-space system would carry, on a logarithm of
//!   size L, an absolute rounding of L ulps of 1: 1e-5 and more once L is in the hundreds.)

use cubecl::prelude::*;

/// The exponent of zero in the extended system: below every real exponent (see [`x_limit`]),
/// so that aligning a sum always keeps the nonzero term, and far enough from `i32::MIN` that
/// differences of exponents cannot overflow.
pub const EXP_ZERO: i32 = -(1 << 30);
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// Largest `|x|` (scaled score) turned into an extended weight for polynomials of degree `k`:
/// a coefficient is a product of at most `k + 1` weights (times a binomial), so its binary
/// exponent stays within `2^28`, far from [`EXP_ZERO`]. A weight `exp(-x_limit)` is below
/// `e^-10^6` for every practical k, so the clamp changes nothing a result can show.
pub fn x_limit(k: usize) -> f32 {
    (1u32 << 28) as f32 / (1.5 * (k + 1) as f32)
}

/// `2^d` for an integer `d`, exactly: an f32 built from its bit pattern for d in [-126, 127],
/// 0 below (GPUs flush subnormals anyway) and `f32::MAX` above. (`exp2` on an integer is not
/// specified to be exact on every runtime.)
#[cube]
pub fn pow2(d: i32) -> f32 {
    let low = d < -126i32;
    let high = d > 127i32;
    let inside = select(low || high, 0i32, d);
    let value = f32::reinterpret(u32::cast_from(inside + 127i32) << 23u32);
    select(low, f32::new(0.0), select(high, f32::max_value(), value))
}

/// `ln(1 + x)` for `x > -1`, accurate to a few f32 ulps. Shading languages have no `log1p`
/// (WGSL lowers it to `ln(1 + x)`, which loses all digits of a small `x`), and GPU `ln` is
/// specified with an absolute error near 1, so near zero this uses
/// `ln(1 + x) = 2 atanh(z)`, `z = x / (2 + x)`, summed to z^11 (|z| <= 0.23 here).
#[cube]
pub fn log1p(x: f32) -> f32 {
    let z = x / (f32::new(2.0) + x);
    let z2 = z * z;
    let tail = f32::new(1.0 / 9.0) + z2 * f32::new(1.0 / 11.0);
    let tail = f32::new(1.0 / 7.0) + z2 * tail;
    let tail = f32::new(1.0 / 5.0) + z2 * tail;
    let tail = f32::new(1.0 / 3.0) + z2 * tail;
    let series = f32::new(2.0) * z * (f32::new(1.0) + z2 * tail);
    select(
        x > f32::new(-0.3) && x < f32::new(0.6),
        series,
        (f32::new(1.0) + x).ln(),
    )
}

/// Cody and Waite's split of ln 2: `LN2_HI` has 9 significant bits, so `e * LN2_HI` is exact
/// for |e| < 2^15 and the reduction `x - e * LN2_HI` loses nothing (fused or not).
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `ln(q 2^e)` for a positive normal `q` and an integer `e`, to a few ulps of the result: `q` is
/// split into `m 2^f` with `m` in [0.75, 1.5) from its bits, `ln m` comes from [`log1p`] on
/// the exact `m - 1`, and `(e + f) ln 2` is formed from the split constant. (GPU `ln` is
/// specified only to 3 ulps, or 2^-21 absolute near 1.) `one` as at [`two_sum`]: it keeps the
/// compiler from factoring `t LN2_HI + t LN2_LO` back into a rounded `t ln 2`.
#[cube]
pub fn ln_scaled(q: f32, e: i32, one: f32) -> f32 {
    let bits = u32::reinterpret(q);
    let f = i32::cast_from((bits >> 23u32) & 0xFFu32) - 127i32;
    let m = f32::reinterpret((bits & 0x007F_FFFFu32) | 0x3F80_0000u32);
    let big = m >= f32::new(1.5);
    let m = select(big, m * f32::new(0.5), m);
    let total = f32::cast_from(e + f + select(big, 1i32, 0i32));
    total * LN2_HI + (log1p(m - f32::new(1.0)) + (total * one) * LN2_LO)
}

/// `exp(x + x_lo)` to a few ulps for any `x` and a small correction `x_lo` (0 below f32's normal
/// range, `f32::MAX` above): the integer part of `x / ln 2` becomes an exact power of two and
/// only `|r| <= ln 2 / 2` goes through GPU `exp`. (`exp(x)` computed as `exp2(x log2 e)`
/// carries the rounding of that product, a relative error of about `|x|` ulps; `x_lo` carries
/// what an f32 `x` of size 80 cannot, 4e-6.) `one` as at [`ln_scaled`].
#[cube]
pub fn exp_accurate(x: f32, x_lo: f32, one: f32) -> f32 {
    let x = x.max(f32::new(-200.0)).min(f32::new(200.0));
    let whole = (x * LOG2_E).round();
    // With `|x|` in the millions the pair's tail can be hundreds; the result is 0 or infinite
    // then anyway, and the clamp keeps `exp(r)` finite against a zero power of two.
    let r = (((x - whole * LN2_HI) - (whole * one) * LN2_LO) + x_lo)
        .max(f32::new(-1.0))
        .min(f32::new(1.0));
    let e = i32::cast_from(whole);
    // Two factors so that 2^e never leaves the range pow2 covers.
    let half = e / 2i32;
    r.exp() * pow2(half) * pow2(e - half)
}

/// `a + b` as an unevaluated pair `(s, err)` with `s + err == a + b` exactly (Knuth's
/// two-sum: additions only, so it survives contraction into FMAs). `one` is 1.0 passed at run
/// time: shader compilers may treat undecorated float ops as real-number algebra (Mesa folds
/// `(a + b) - a` to `b`, and factors `a b + a c` into `a (b + c)`), which would cancel the
/// error term; products with an unknown value stop that.
#[cube]
pub fn two_sum(a: f32, b: f32, one: f32) -> (f32, f32) {
    let s = (a + b) * one;
    let bb = (s - a) * one;
    (s, (a - (s - bb)) + (b - bb))
}

/// The leading 12 significant bits of `a` (by masking its bits); `a - high` is exact and
/// has at most 12 significant bits, so products of such halves are exact in f32.
#[cube]
pub fn high_bits(a: f32) -> f32 {
    f32::reinterpret(u32::reinterpret(a) & 0xFFFF_F000u32)
}

/// `margin + (p - s_y) / (k tau) + c` as an unevaluated pair `(hi, lo)`, to within about one
/// rounding of twice f32's precision, however much
/// the first two terms cancel (they do, by hundreds, when the label sits far above the top-k
/// boundary with a small tau: the loss is then `exp` of the sum, and every absolute error of
/// the sum is a relative error of the loss). `margin = margin_hi + margin_lo` and
/// `1 / (k tau) = inv[0] + inv[1] + inv[2]` come from the host in f64, `inv[0]` and `inv[1]`
/// with 12 significant bits each; products of 12-bit halves are exact, and the terms are
/// summed with [`two_sum`] (Ogita, Rump and Oishi's Sum2); `one` as there.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn log_ratio_sum(
    margin_hi: f32,
    margin_lo: f32,
    p: f32,
    s_y: f32,
    inv0: f32,
    inv1: f32,
    inv2: f32,
    c: f32,
    one: f32,
) -> (f32, f32) {
    let (d, d_err) = two_sum(p, f32::new(0.0) - s_y, one);
    let d0 = high_bits(d);
    let d1 = d - d0;
    let (s, e0) = two_sum(margin_hi, d0 * inv0, one);
    let (s, e1) = two_sum(s, d0 * inv1, one);
    let (s, e2) = two_sum(s, d1 * inv0, one);
    let (s, e3) = two_sum(s, c, one);
    let small = d1 * inv1 + d * inv2 + d_err * (inv0 + inv1);
    (s, ((e0 + e1) + (e2 + e3)) + (margin_lo + small))
}

/// Moves a mantissa in [1, 4) back into [1, 2).
#[cube]
fn normalize_down(m: f32, e: i32) -> (f32, i32) {
    let big = m >= f32::new(2.0);
    (select(big, m * f32::new(0.5), m), select(big, e + 1i32, e))
}

/// The additive identity.
#[cube]
pub fn zero(#[comptime] ext: bool) -> (f32, i32) {
    if comptime!(ext) {
        (f32::new(0.0), i32::new(EXP_ZERO as i64))
    } else {
        (f32::new(0.0), i32::new(0))
    }
}

/// The multiplicative identity (the same pair in both systems).
#[cube]
pub fn one() -> (f32, i32) {
    (f32::new(1.0), i32::new(0))
}

/// `exp(x)`. In the extended system `x` must be finite and within [`x_limit`]; the integer part
/// of `x / ln 2` goes to the exponent and only the reduced argument (Cody and Waite, so that it
/// carries no rounding of the product `x log2 e`) is exponentiated. Beyond `|x| ~ 2^15` the
/// reduction is no longer exact (`x`'s own ulp is then above 1e-3); the clamp keeps the mantissa
/// normal whatever happens. `one` as at [`ln_scaled`].
#[cube]
pub fn exp(x: f32, one: f32, #[comptime] ext: bool) -> (f32, i32) {
    if comptime!(ext) {
        let whole = (x * LOG2_E).floor();
        let r = ((x - whole * LN2_HI) - (whole * one) * LN2_LO)
            .max(f32::new(-0.5))
            .min(f32::new(1.0));
        let (m, e) = normalize_down(r.exp(), i32::cast_from(whole));
        let small = m < f32::new(1.0);
        (
            select(small, m * f32::new(2.0), m),
            select(small, e - 1i32, e),
        )
    } else {
        (x.exp(), 0i32)
    }
}

/// `a * b`.
#[cube]
pub fn mul(am: f32, ae: i32, bm: f32, be: i32, #[comptime] ext: bool) -> (f32, i32) {
    let m = am * bm;
    if comptime!(ext) {
        let (m, e) = normalize_down(m, ae + be);
        (m, select(m == f32::new(0.0), EXP_ZERO, e))
    } else {
        (m, 0i32)
    }
}

/// `a + b`.
#[cube]
pub fn add(am: f32, ae: i32, bm: f32, be: i32, #[comptime] ext: bool) -> (f32, i32) {
    if comptime!(ext) {
        let a_high = ae >= be;
        let (hm, he) = (select(a_high, am, bm), select(a_high, ae, be));
        let (lm, le) = (select(a_high, bm, am), select(a_high, be, ae));
        let shift = he - le;
        // Beyond 2^-60 the smaller term is below half an ulp of the larger (zero always is).
        let scale = select(shift > 60i32, f32::new(0.0), pow2(0i32 - shift));
        normalize_down(hm + lm * scale, he)
    } else {
        (am + bm, 0i32)
    }
}

/// `a * s` for a factor `s` in [0.5, 1].
#[cube]
pub fn scale(am: f32, ae: i32, s: f32, #[comptime] ext: bool) -> (f32, i32) {
    let m = am * s;
    if comptime!(ext) {
        let small = m < f32::new(1.0);
        (
            select(small, m * f32::new(2.0), m),
            select(small, ae - 1i32, ae),
        )
    } else {
        (m, 0i32)
    }
}

/// `a / b` as an f32, for a result of f32 range (a probability, here); `b > 0`.
#[cube]
pub fn ratio(am: f32, ae: i32, bm: f32, be: i32, #[comptime] ext: bool) -> f32 {
    let q = am / bm;
    if comptime!(ext) {
        q * pow2(ae - be)
    } else {
        q
    }
}

/// `ln(a / b)` for positive `a`, `b`; `one` as at [`ln_scaled`].
#[cube]
pub fn ln_ratio(am: f32, ae: i32, bm: f32, be: i32, one: f32, #[comptime] ext: bool) -> f32 {
    if comptime!(ext) {
        ln_scaled(am / bm, ae - be, one)
    } else {
        ln_scaled(am / bm, i32::new(0), one)
    }
}
