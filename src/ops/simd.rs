//! Vector backends for the kernels: AVX-512 when the CPU has it, portable Rust otherwise.
//!
//! Kernels are written once, generic over [`Simd`], and run through `simd_dispatch!`, which
//! picks the backend at run time. A vector holds 16 f32 lanes; `load`/`store` take a count
//! n <= 16 and touch only the first n values (the rest of a loaded vector is zero).
//!
//! Soundness: an [`Avx512`] value can only be made by [`Avx512::detect`], which checks the CPU,
//! so every AVX-512 instruction below runs on a CPU that has it; loads and stores check
//! their slice holds n values and are masked to those n lanes.

pub const LANES: usize = 16;

/// A kernel body, generic over the backend. `run` must be `#[inline(always)]`, so that it is
/// compiled inside [`Simd::vectorize`] with the backend's instructions enabled.
pub trait Kernel {
    type Output;
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// The operations kernels use.
pub trait Simd: Copy + Send + Sync {
    type V: Copy;
    /// Runs kernel `k` with this backend's target features enabled.
    fn vectorize<K: Kernel>(self, k: K) -> K::Output;
    fn splat(self, x: f32) -> Self::V;
    /// The first n values of `s` (n <= 16), zeros in the other lanes.
    fn load(self, s: &[f32], n: usize) -> Self::V;
    /// Writes the first n lanes of `v` to `s`.
    fn store(self, s: &mut [f32], n: usize, v: Self::V);
    /// a * b + c (fused on AVX-512; two roundings on the portable path).
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// max(a, 0) per lane (0 for NaN, as `f32::max`): ReLU.
    fn relu(self, a: Self::V) -> Self::V;
    /// v where y > 0, else 0, per lane: ReLU's backward.
    fn pass_where_positive(self, y: Self::V, v: Self::V) -> Self::V;
}

/// Plain Rust on 16-value arrays (the compiler vectorises it for the baseline CPU).
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    #[inline(always)]
    fn vectorize<K: Kernel>(self, k: K) -> K::Output {
        k.run(self)
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [x; LANES]
    }
    #[inline(always)]
    fn load(self, s: &[f32], n: usize) -> Self::V {
        let mut v = [0.0; LANES];
        v[..n].copy_from_slice(&s[..n]);
        v
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], n: usize, v: Self::V) {
        s[..n].copy_from_slice(&v[..n]);
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut out = c;
        for i in 0..LANES {
            out[i] += a[i] * b[i];
        }
        out
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        let mut out = a;
        for i in 0..LANES {
            out[i] += b[i];
        }
        out
    }
    #[inline(always)]
    fn relu(self, a: Self::V) -> Self::V {
        a.map(|x| x.max(0.0))
    }
    #[inline(always)]
    fn pass_where_positive(self, y: Self::V, v: Self::V) -> Self::V {
        std::array::from_fn(|i| if y[i] > 0.0 { v[i] } else { 0.0 })
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::Avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Kernel, LANES, Simd};

    /// AVX-512F. A value of this type proves the CPU supports it.
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
        fn relu(self, a: __m512) -> __m512 {
            // SAFETY: AVX-512F is present; register-only. vmaxps returns the second operand
            // (0) when a is NaN, as f32::max(a, 0) does.
            unsafe { _mm512_max_ps(a, _mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn pass_where_positive(self, y: __m512, v: __m512) -> __m512 {
            // SAFETY: AVX-512F is present; register-only.
            unsafe { _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps()), v) }
        }
    }
}

/// Calls `$f(backend, args...)` with the best backend of this CPU.
#[macro_export]
#[doc(hidden)]
macro_rules! simd_dispatch {
    ($f:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $crate::ops::simd::Avx512::detect() {
                Some(s) => $f(s, $($arg),*),
                None => $f($crate::ops::simd::Portable, $($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($crate::ops::simd::Portable, $($arg),*)
        }
    }};
}

/// The name of the backend this CPU uses.
pub fn backend_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if Avx512::detect().is_some() {
        return "avx512";
    }
    "portable"
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Exercise;
    impl Kernel for Exercise {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> Vec<f32> {
            let a: Vec<f32> = (0..20).map(|i| i as f32).collect();
            let v = s.load(&a[3..], 5);
            let r = s.mul_add(v, s.splat(2.0), s.add(s.splat(1.0), s.splat(0.5)));
            let mut out = vec![-1.0f32; 10];
            s.store(&mut out, 6, r);
            let signs: Vec<f32> = (0..16).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
            let y = s.load(&signs, 16);
            let r2 = s.pass_where_positive(y, s.relu(s.mul_add(y, s.splat(3.0), s.splat(0.0))));
            s.store(&mut out[6..], 4, r2);
            out
        }
    }

    fn exercise<S: Simd>(s: S) -> Vec<f32> {
        s.vectorize(Exercise)
    }

    #[test]
    fn backends_agree_and_respect_counts() {
        // lanes 0..5 = 2*(3..8) + 1.5; lane 5 was loaded as 0 -> 1.5; then relu(3y) where y > 0.
        let want = vec![7.5, 9.5, 11.5, 13.5, 15.5, 1.5, 3.0, 0.0, 3.0, 0.0];
        assert_eq!(exercise(Portable), want);
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = Avx512::detect() {
            assert_eq!(exercise(s), want);
        }
    }
}
