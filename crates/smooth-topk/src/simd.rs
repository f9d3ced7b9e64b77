//! The passes over whole rows (largest score, exponentials, gradient rows), written so that the
//! compiler turns them into SIMD code, and compiled for several instruction sets (AVX-512,
//! AVX2 + FMA, NEON, the baseline) with the choice made at run time, once per process.
//!
//! The exponential:
//! `exp(x) = 2^n exp(r)` with `n = round(x / ln 2)` and `r = x - n ln 2`, `|r| <= ln 2 / 2`; the
//! reduction subtracts `n ln 2` in two parts (Cody and Waite: `LN2_HI` has 32 significant bits,
//! so `n * LN2_HI` is exact), and `exp(r)` is its Taylor polynomial of degree 13 (evaluated by Estrin's scheme), whose truncation
//! error is below `r^14 / 14! < 4.1e-18` (0.04 ulp of a result in [0.7, 1.5]). The scale `2^n` is
//! applied as two powers of two of half the exponent each, so that results in the subnormal range
//! are rounded once, like the C library's. Measured against the C library's `exp` over
//! [-745, 709.7] (see the tests) the result differs by at most 2 ulp, which is the bound this
//! module states; the smooth SVM's error analysis needs only a relative error of a few ulps per
//! weight. Every operation is branch-free (no table, no early exit), so the same instructions
//! process all lanes.

use crate::Scalar;

/// The instruction sets the hot passes are compiled for, best first; one is chosen at run time
/// for the machine (the baseline build covers any other CPU).
macro_rules! simd_targets {
    ($item:item) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512dq+avx512vl+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
            "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
            "aarch64+neon",
        ))]
        $item
    };
}
pub(crate) use simd_targets;

const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5 * 2^52: adding it rounds a value below 2^51 in magnitude to an integer (ties to even) and
/// leaves that integer in the low bits of the sum.
const ROUNDER: f64 = 6_755_399_441_055_744.0;
/// Below this `exp` is zero in `f64` (it also keeps `n` within the range the scaling handles).
const X_MIN: f64 = -746.0;
/// Above this `exp` overflows to infinity in `f64`.
const X_MAX: f64 = 710.0;

/// `1 / j!` for `j = 0..=13`, highest degree first (Horner order).
const TAYLOR: [f64; 14] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `a * b + c`, fused into one rounding when `FMA` (the caller's instruction set has it; without
/// it, `mul_add` would be a slow library call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `exp(x)` for any `x` that is not NaN, within 2 ulp; branch-free, for use inside loops that
/// should vectorise. `FMA`: see [`madd`].
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f64) -> f64 {
    let x = x.clamp(X_MIN, X_MAX);
    let t = madd::<FMA>(x, std::f64::consts::LOG2_E, ROUNDER);
    let n = t - ROUNDER;
    // The integer n (|n| <= 1077) sits in the low bits of t's mantissa.
    let n_int = (t.to_bits() as i64).wrapping_sub(ROUNDER.to_bits() as i64);
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    // Estrin's scheme: independent pairs, then pairs of pairs, so the dependency chain is four
    // multiply-adds deep instead of Horner's thirteen (the loop is latency-bound otherwise).
    let c = &TAYLOR;
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let pair = |hi: f64, lo: f64| madd::<FMA>(hi, r, lo);
    let q0 = pair(c[12], c[13]);
    let q1 = pair(c[10], c[11]);
    let q2 = pair(c[8], c[9]);
    let q3 = pair(c[6], c[7]);
    let q4 = pair(c[4], c[5]);
    let q5 = pair(c[2], c[3]);
    let q6 = pair(c[0], c[1]);
    let u0 = madd::<FMA>(q1, r2, q0);
    let u1 = madd::<FMA>(q3, r2, q2);
    let u2 = madd::<FMA>(q5, r2, q4);
    let v0 = madd::<FMA>(u1, r4, u0);
    let v1 = madd::<FMA>(q6, r4, u2);
    let p = madd::<FMA>(v1, r8, v0);
    // 2^n as 2^a * 2^b with a = floor(n / 2), b = n - a, both within the normal range.
    let a = n_int >> 1;
    let b = n_int - a;
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    p * pow2(a) * pow2(b)
}

simd_targets! {
/// `out[i] = exp((v_i - shift) * scale)` over the scores `v` of a row without the one at
/// `skip`, in order (`out.len() = row.len() - 1`). Callers validate that the row is finite.
pub(crate) fn exp_excluding<T: Scalar>(
    row: &[T],
    skip: usize,
    shift: f64,
    scale: f64,
    out: &mut [f64],
) {
    #[inline(always)]
    fn fill<T: Scalar, const FMA: bool>(row: &[T], skip: usize, shift: f64, scale: f64, out: &mut [f64]) {
        let (before, after) = (&row[..skip], &row[skip + 1..]);
        let (out_before, out_after) = out.split_at_mut(skip);
        for (o, &v) in out_before.iter_mut().zip(before) {
            *o = exp::<FMA>((v.to_f64() - shift) * scale);
        }
        for (o, &v) in out_after.iter_mut().zip(after) {
            *o = exp::<FMA>((v.to_f64() - shift) * scale);
        }
    }
    // Decided when this version is compiled, not per call.
    const FMA: bool = multiversion::target::selected_target!().supports_feature_str("fma");
    if FMA {
        fill::<T, true>(row, skip, shift, scale, out);
    } else {
        fill::<T, false>(row, skip, shift, scale, out);
    }
}
}

simd_targets! {
/// `g[skip] = at_skip` and, on the other entries in order, `scale * (a_i - b_i)` (or `scale * a_i`
/// without `b`), for `a` and `b` indexed without `skip` (length `g.len() - 1`).
pub(crate) fn write_excluding<T: Scalar>(
    g: &mut [T],
    skip: usize,
    at_skip: f64,
    scale: f64,
    a: &[f64],
    b: Option<&[f64]>,
) {
    let (before, rest) = g.split_at_mut(skip);
    let (at, after) = rest.split_at_mut(1);
    at[0] = T::from_f64(at_skip);
    let (a_before, a_after) = a.split_at(skip);
    match b {
        Some(b) => {
            let (b_before, b_after) = b.split_at(skip);
            for (o, (&x, &y)) in before.iter_mut().zip(a_before.iter().zip(b_before)) {
                *o = T::from_f64(scale * (x - y));
            }
            for (o, (&x, &y)) in after.iter_mut().zip(a_after.iter().zip(b_after)) {
                *o = T::from_f64(scale * (x - y));
            }
        }
        None => {
            for (o, &x) in before.iter_mut().zip(a_before) {
                *o = T::from_f64(scale * x);
            }
            for (o, &x) in after.iter_mut().zip(a_after) {
                *o = T::from_f64(scale * x);
            }
        }
    }
}
}

simd_targets! {
/// `sum_i v_i` in eight running sums (so it vectorises; the order of additions differs from a
/// left-to-right sum by rounding only).
pub(crate) fn sum(v: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + tail
}
}

simd_targets! {
/// The largest score of a row other than the one at `skip` (`-inf` if there is none).
pub(crate) fn max_excluding<T: Scalar>(row: &[T], skip: usize) -> f64 {
    // Eight running maxima so that the reduction is not one serial chain.
    let mut acc = [f64::NEG_INFINITY; 8];
    for part in [&row[..skip], &row[skip + 1..]] {
        let chunks = part.chunks_exact(8);
        for &v in chunks.remainder() {
            acc[0] = acc[0].max(v.to_f64());
        }
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                let v = v.to_f64();
                *a = if v > *a { v } else { *a };
            }
        }
    }
    acc.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite non-negative doubles.
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn within_two_ulp_of_libm_over_the_whole_range() {
        let mut worst = (0u64, 0.0f64);
        let mut state = 7u64;
        let mut check = |x: f64| {
            let d = ulps(exp::<false>(x), x.exp()).max(ulps(exp::<true>(x), x.exp()));
            if d > worst.0 {
                worst = (d, x);
            }
        };
        // A uniform sweep of [-745, 709.7] and random points concentrated near 0, where the
        // smooth SVM's weights live.
        let steps = 2_000_000;
        for i in 0..=steps {
            check(-745.0 + (709.7 + 745.0) * i as f64 / steps as f64);
        }
        for _ in 0..1_000_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            check(-40.0 * u * u);
        }
        assert!(worst.0 <= 2, "{} ulp at x = {:e}", worst.0, worst.1);
    }

    #[test]
    fn edges_of_the_range() {
        edges::<false>();
        edges::<true>();
    }

    fn edges<const FMA: bool>() {
        let exp = exp::<FMA>;
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(-1e300), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        // The subnormal range is rounded once, as the C library does.
        for x in [-708.5, -720.0, -740.0, -744.4, -745.1] {
            assert!(
                ulps(exp(x), x.exp()) <= 2,
                "x = {x}: {:e} vs {:e}",
                exp(x),
                x.exp()
            );
        }
        assert!(ulps(exp(709.7), 709.7f64.exp()) <= 2);
        assert!(ulps(exp(1.0), std::f64::consts::E) <= 1);
    }

    #[test]
    fn rows_skip_one_entry() {
        let row = [0.5f32, -1.0, 2.0, 0.0, -3.5];
        let mut out = [0.0; 4];
        exp_excluding(&row, 2, 1.0, 0.5, &mut out);
        for (o, &v) in out.iter().zip(&[0.5f32, -1.0, 0.0, -3.5]) {
            let want = ((f64::from(v) - 1.0) * 0.5).exp();
            assert!(ulps(*o, want) <= 2);
        }
        assert_eq!(max_excluding(&row, 2), 0.5);
        assert_eq!(max_excluding(&row, 0), 2.0);
        let long: Vec<f64> = (0..37).map(|i| ((i * 17) % 37) as f64).collect();
        assert_eq!(max_excluding(&long, 0), 36.0);
        assert_eq!(
            max_excluding(&long, long.iter().position(|&v| v == 36.0).unwrap()),
            35.0
        );
        assert_eq!(max_excluding(&[1.0f64], 0), f64::NEG_INFINITY);
    }
}
