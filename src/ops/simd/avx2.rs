//! AVX2 with FMA: a 16-lane vector is two 256-bit registers; partial loads and stores use
//! `vmaskmovps`, which touches only the lanes its mask selects.

use std::arch::x86_64::*;

use super::{Kernel, LANES, Simd};

/// AVX2 and FMA. A value of this type proves the CPU supports both: the only way to make one
/// is [`Avx2::detect`].
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    pub fn detect() -> Option<Avx2> {
        (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }
}

/// Eight all-ones lanes then eight zero lanes: the 8 values from index 8 - n are the mask of
/// the first n lanes (n <= 8).
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The `vmaskmovps` mask of the first n lanes, n <= 8.
#[inline(always)]
fn mask(_: Avx2, n: usize) -> __m256i {
    let m = &MASKS[8 - n..][..8];
    // SAFETY: the token proves AVX is present; `m` is 8 i32 values
    // (32 bytes) in bounds, and loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<K: Kernel>(s: Avx2, k: K) -> K::Output {
    k.run(s)
}

impl Simd for Avx2 {
    type V = [__m256; 2];
    type M = [__m256; 2];
    /// 16 registers of 256 bits: 6 rows of two-register accumulators (12 registers) leave room
    /// for the shared row (2) and the broadcast operand; 16 rows would spill.
    const ROWS: usize = 6;
    #[inline(always)]
    fn vectorize<K: Kernel>(self, k: K) -> K::Output {
        // SAFETY: `self` exists only if the CPU supports AVX2 and FMA (see `detect`).
        unsafe { with_avx2(self, k) }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        // SAFETY: AVX is present (AVX2 implies it); no memory is touched.
        unsafe { [_mm256_set1_ps(x); 2] }
    }
    #[inline(always)]
    fn load(self, s: &[f32], n: usize) -> Self::V {
        assert!(n <= LANES && s.len() >= n);
        let p = s.as_ptr();
        // SAFETY: AVX2 is present. Full loads read s[..8] or s[8..16] only when n covers them
        // (checked above: s holds n values); masked loads read only the first n (resp. n - 8)
        // lanes and do not fault on the masked-off ones.
        unsafe {
            if n >= LANES {
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
            } else if n > 8 {
                [_mm256_loadu_ps(p), _mm256_maskload_ps(p.add(8), mask(self, n - 8))]
            } else {
                [_mm256_maskload_ps(p, mask(self, n)), _mm256_setzero_ps()]
            }
        }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], n: usize, v: Self::V) {
        assert!(n <= LANES && s.len() >= n);
        let p = s.as_mut_ptr();
        // SAFETY: AVX2 is present. As in `load`: full stores write s[..8] or s[8..16] only when
        // s holds those values; masked stores write only the first n (resp. n - 8) lanes.
        unsafe {
            if n >= LANES {
                _mm256_storeu_ps(p, v[0]);
                _mm256_storeu_ps(p.add(8), v[1]);
            } else if n > 8 {
                _mm256_storeu_ps(p, v[0]);
                _mm256_maskstore_ps(p.add(8), mask(self, n - 8), v[1]);
            } else {
                _mm256_maskstore_ps(p, mask(self, n), v[0]);
            }
        }
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: FMA is present (the token); register-only.
        unsafe { [_mm256_fmadd_ps(a[0], b[0], c[0]), _mm256_fmadd_ps(a[1], b[1], c[1])] }
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: AVX is present; register-only.
        unsafe { [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])] }
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: AVX is present; register-only.
        unsafe { [_mm256_mul_ps(a[0], b[0]), _mm256_mul_ps(a[1], b[1])] }
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: AVX is present; register-only. vmaxps returns its second operand (b) when a
        // is NaN.
        unsafe { [_mm256_max_ps(a[0], b[0]), _mm256_max_ps(a[1], b[1])] }
    }
    #[inline(always)]
    fn relu(self, a: Self::V) -> Self::V {
        // SAFETY: AVX is present; register-only. vmaxps returns its second operand (a) when
        // either is NaN, and when they are equal (-0 against +0): +0 added turns that -0 into
        // +0. The trait's values, in two instructions a register instead of three (its compare
        // and select made training 1% slower on AVX-512).
        unsafe {
            let z = _mm256_setzero_ps();
            [
                _mm256_add_ps(_mm256_max_ps(z, a[0]), z),
                _mm256_add_ps(_mm256_max_ps(z, a[1]), z),
            ]
        }
    }
    #[inline(always)]
    fn gt(self, a: Self::V, b: Self::V) -> Self::M {
        // SAFETY: AVX is present; register-only.
        unsafe {
            [
                _mm256_cmp_ps::<_CMP_GT_OQ>(a[0], b[0]),
                _mm256_cmp_ps::<_CMP_GT_OQ>(a[1], b[1]),
            ]
        }
    }
    #[inline(always)]
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: AVX is present; register-only. blendv takes its second operand where the
        // mask lane's sign bit is set (compare results are all ones or all zeros).
        unsafe { [_mm256_blendv_ps(b[0], a[0], m[0]), _mm256_blendv_ps(b[1], a[1], m[1])] }
    }
}
