//! AVX-512F: one 512-bit register per 16-lane vector, masked loads and stores.

use std::arch::x86_64::*;

use super::{Kernel, LANES, Simd};

/// AVX-512F. A value of this type proves the CPU supports it: the only way to make one is
/// [`Avx512::detect`].
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    pub fn detect() -> Option<Avx512> {
        std::arch::is_x86_feature_detected!("avx512f").then_some(Avx512(()))
    }
}

#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    if n >= LANES { 0xffff } else { (1u16 << n) - 1 }
}

#[target_feature(enable = "avx512f")]
unsafe fn with_avx512<K: Kernel>(s: Avx512, k: K) -> K::Output {
    k.run(s)
}

impl Simd for Avx512 {
    type V = __m512;
    type M = __mmask16;
    const ROWS: usize = 16;
    #[inline(always)]
    fn vectorize<K: Kernel>(self, k: K) -> K::Output {
        // SAFETY: `self` exists only if the CPU supports AVX-512F (see `detect`).
        unsafe { with_avx512(self, k) }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: AVX-512F is present (the token); no memory is touched.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32], n: usize) -> __m512 {
        assert!(n <= LANES && s.len() >= n);
        // SAFETY: AVX-512F is present; the mask limits the read to s[..n], checked above.
        unsafe { _mm512_maskz_loadu_ps(mask(n), s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], n: usize, v: __m512) {
        assert!(n <= LANES && s.len() >= n);
        // SAFETY: AVX-512F is present; the mask limits the write to s[..n], checked above.
        unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), mask(n), v) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only. vmaxps returns its second operand (b)
        // when a is NaN.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn relu(self, a: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only. vmaxps returns its second operand (a)
        // when either is NaN, and when they are equal (-0 against +0): +0 added turns that -0
        // into +0. The trait's values, in two instructions instead of three (its compare and
        // select made training 1% slower).
        unsafe {
            let z = _mm512_setzero_ps();
            _mm512_add_ps(_mm512_max_ps(z, a), z)
        }
    }
    #[inline(always)]
    fn gt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: AVX-512F is present; register-only.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F is present; register-only. The blend takes its second vector
        // operand where the mask bit is set.
        unsafe { _mm512_mask_blend_ps(m, b, a) }
    }
}
