//! NEON (aarch64): a 16-lane vector is four 128-bit registers; partial loads and stores go
//! through a 16-value buffer on the stack (a safe tail path).

use std::arch::aarch64::*;

use super::{Kernel, LANES, Simd};

/// NEON with fused multiply-add (every aarch64 CPU). A value of this type proves the CPU
/// supports it: the only way to make one is [`Neon::detect`].
#[derive(Clone, Copy, Debug)]
pub struct Neon(());

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
}

#[target_feature(enable = "neon")]
unsafe fn with_neon<K: Kernel>(s: Neon, k: K) -> K::Output {
    k.run(s)
}

type V4 = [float32x4_t; 4];

#[inline(always)]
fn map2(a: V4, b: V4, f: impl Fn(float32x4_t, float32x4_t) -> float32x4_t) -> V4 {
    [f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2]), f(a[3], b[3])]
}

#[inline(always)]
fn load16(p: &[f32; LANES]) -> V4 {
    let p = p.as_ptr();
    // SAFETY: NEON is present (the token of every caller); `p` points to 16 readable f32.
    unsafe {
        [
            vld1q_f32(p),
            vld1q_f32(p.add(4)),
            vld1q_f32(p.add(8)),
            vld1q_f32(p.add(12)),
        ]
    }
}

#[inline(always)]
fn store16(p: &mut [f32; LANES], v: V4) {
    let p = p.as_mut_ptr();
    // SAFETY: NEON is present; `p` points to 16 writable f32.
    unsafe {
        vst1q_f32(p, v[0]);
        vst1q_f32(p.add(4), v[1]);
        vst1q_f32(p.add(8), v[2]);
        vst1q_f32(p.add(12), v[3]);
    }
}

impl Simd for Neon {
    type V = V4;
    type M = [uint32x4_t; 4];
    /// 32 registers of 128 bits: 4 rows of four-register accumulators (16 registers), plus the
    /// shared row (4) and the broadcast operand; 16 rows would spill.
    const ROWS: usize = 4;
    #[inline(always)]
    fn vectorize<K: Kernel>(self, k: K) -> K::Output {
        // SAFETY: `self` exists only if the CPU supports NEON (see `detect`).
        unsafe { with_neon(self, k) }
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn splat(self, x: f32) -> V4 {
        // SAFETY: NEON is present; register-only.
        unsafe { [vdupq_n_f32(x); 4] }
    }
    #[inline(always)]
    fn load(self, s: &[f32], n: usize) -> V4 {
        assert!(n <= LANES && s.len() >= n);
        match s.first_chunk::<LANES>() {
            Some(full) if n == LANES => load16(full),
            _ => {
                let mut buf = [0.0f32; LANES];
                buf[..n].copy_from_slice(&s[..n]);
                load16(&buf)
            }
        }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], n: usize, v: V4) {
        assert!(n <= LANES && s.len() >= n);
        match s.first_chunk_mut::<LANES>() {
            Some(full) if n == LANES => store16(full, v),
            _ => {
                let mut buf = [0.0f32; LANES];
                store16(&mut buf, v);
                s[..n].copy_from_slice(&buf[..n]);
            }
        }
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn mul_add(self, a: V4, b: V4, c: V4) -> V4 {
        // SAFETY: NEON is present; register-only. vfmaq_f32(c, a, b) = c + a*b, fused.
        unsafe {
            [
                vfmaq_f32(c[0], a[0], b[0]),
                vfmaq_f32(c[1], a[1], b[1]),
                vfmaq_f32(c[2], a[2], b[2]),
                vfmaq_f32(c[3], a[3], b[3]),
            ]
        }
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn add(self, a: V4, b: V4) -> V4 {
        // SAFETY: NEON is present; register-only.
        map2(a, b, |x, y| unsafe { vaddq_f32(x, y) })
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn mul(self, a: V4, b: V4) -> V4 {
        // SAFETY: NEON is present; register-only.
        map2(a, b, |x, y| unsafe { vmulq_f32(x, y) })
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn max(self, a: V4, b: V4) -> V4 {
        // SAFETY: NEON is present; register-only. fmaxnm returns the number when one operand
        // is NaN, so max(NaN, b) = b as on the other backends (b is never NaN in the kernels).
        map2(a, b, |x, y| unsafe { vmaxnmq_f32(x, y) })
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn gt(self, a: V4, b: V4) -> Self::M {
        // SAFETY: NEON is present; register-only.
        unsafe {
            [
                vcgtq_f32(a[0], b[0]),
                vcgtq_f32(a[1], b[1]),
                vcgtq_f32(a[2], b[2]),
                vcgtq_f32(a[3], b[3]),
            ]
        }
    }
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn select(self, m: Self::M, a: V4, b: V4) -> V4 {
        // SAFETY: NEON is present; register-only. vbslq takes a's bits where the mask is set.
        unsafe {
            [
                vbslq_f32(m[0], a[0], b[0]),
                vbslq_f32(m[1], a[1], b[1]),
                vbslq_f32(m[2], a[2], b[2]),
                vbslq_f32(m[3], a[3], b[3]),
            ]
        }
    }
}
