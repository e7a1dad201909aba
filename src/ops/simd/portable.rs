//! Plain Rust on 16-value arrays: every CPU, the compiler vectorises it for the baseline
//! target. Multiply-add rounds twice here (a fused multiply-add in software would be far slower
//! on CPUs without one).

use super::{Kernel, LANES, Simd};

/// The portable backend (no CPU requirement).
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    type M = [bool; LANES];
    const ROWS: usize = 16;
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
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        // b when a is NaN, as the vector backends' max.
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn gt(self, a: Self::V, b: Self::V) -> Self::M {
        std::array::from_fn(|i| a[i] > b[i])
    }
    #[inline(always)]
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| if m[i] { a[i] } else { b[i] })
    }
}
