//! max_pool2d's vector kernels on channels-last chunks, generic over the SIMD backend
//! ([`Simd`]): channels c0..c0+16 of a pixel are one vector, so each lane runs PyTorch's scan
//! of its channel's window on its own.
//!
//! Shapes: x stored (samples, H, W, C), y and the indices stored (samples, OH, OW, C). An index
//! is the pixel h * W + w of the input an output took, as an f32 (exact: H * W <= 2^24 is
//! checked by [`PoolGeom::new`]), so it can sit in a vector lane.
//!
//! Everything here is `#[inline(always)]` so that it is compiled inside the [`Kernel::run`]
//! that calls it, with the backend's target features enabled; no `unsafe` (the trait's checked
//! loads and stores). Only selects and compares touch values, so every backend gives the same
//! bits.

use super::PoolGeom;
use crate::ops::simd::{Kernel, LANES, Simd};

/// Per lane, whether `v` replaces `best` in PyTorch's scan: v > best, or v is NaN. (NaN is
/// what neither v > -inf nor +inf > v holds for; the trait has compares and selects only.)
#[inline(always)]
fn wins<S: Simd>(s: S, v: S::V, best: S::V) -> S::M {
    let (zero, one) = (s.zero(), s.splat(1.0));
    let nan_or_inf = s.select(s.gt(s.splat(f32::INFINITY), v), zero, one);
    let nan = s.select(s.gt(v, s.splat(f32::NEG_INFINITY)), zero, nan_or_inf);
    s.gt(s.select(s.gt(v, best), one, nan), s.splat(0.5))
}

/// Forward of a chunk: y and, with `idx`, the pixel each output took (see the module header).
pub struct Forward<'a> {
    pub g: &'a PoolGeom,
    pub x: &'a [f32],
    pub y: &'a mut [f32],
    pub idx: Option<&'a mut [f32]>,
}

impl Kernel for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        // Compiled apart without the indices (inference), which then cost nothing.
        if self.idx.is_some() {
            forward::<S, true>(s, self)
        } else {
            forward::<S, false>(s, self)
        }
    }
}

/// [`Forward`], tracking the indices when `IDX`.
#[inline(always)]
fn forward<S: Simd, const IDX: bool>(s: S, f: Forward) {
    let Forward { g, x, y, mut idx } = f;
    let (c, ins, outs) = (g.c, g.in_size(), g.out_size());
    let samples = y.len() / outs;
    assert!(x.len() == samples * ins && idx.as_ref().is_none_or(|i| i.len() == y.len()));
    for sm in 0..samples {
        let xs = &x[sm * ins..][..ins];
        for i in 0..g.oh {
            let (h0, h1) = g.span(i, g.h);
            for j in 0..g.ow {
                let (w0, w1) = g.span(j, g.w);
                let o = sm * outs + (i * g.ow + j) * c;
                for c0 in (0..c).step_by(LANES) {
                    let n = LANES.min(c - c0);
                    // The first in-bounds value always takes the place of the -inf start
                    // (it is larger, NaN, or -inf itself, at the same index).
                    let first = h0 * g.w + w0;
                    let mut best = s.load(&xs[first * c + c0..], n);
                    let mut at = if IDX { s.splat(first as f32) } else { s.zero() };
                    for r in h0..h1 {
                        for q in w0..w1 {
                            let pos = r * g.w + q;
                            if pos == first {
                                continue;
                            }
                            let v = s.load(&xs[pos * c + c0..], n);
                            let m = wins(s, v, best);
                            best = s.select(m, v, best);
                            if IDX {
                                at = s.select(m, s.splat(pos as f32), at);
                            }
                        }
                    }
                    s.store(&mut y[o + c0..], n, best);
                    if let (true, Some(idx)) = (IDX, idx.as_deref_mut()) {
                        s.store(&mut idx[o + c0..], n, at);
                    }
                }
            }
        }
    }
}

/// Backward of a chunk when windows do not overlap (stride >= kernel size): each input gets
/// the dy of the one window holding it where that window took it, else 0. dy and the indices
/// stored (samples, OH, OW, C), dx (samples, H, W, C), overwritten.
pub struct Backward<'a> {
    pub g: &'a PoolGeom,
    pub dy: &'a [f32],
    pub idx: &'a [f32],
    pub dx: &'a mut [f32],
}

impl Kernel for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Backward { g, dy, idx, dx } = self;
        assert!(g.stride >= g.k, "max_pool2d backward: overlapping windows");
        let (c, ins, outs) = (g.c, g.in_size(), g.out_size());
        let samples = dy.len() / outs;
        assert!(dx.len() == samples * ins && idx.len() == dy.len());
        // Inputs outside every window keep 0: only clear when some are.
        let covered = g.padding == 0 && g.stride == g.k && g.oh * g.k == g.h && g.ow * g.k == g.w;
        if !covered {
            dx.fill(0.0);
        }
        let zero = s.zero();
        for sm in 0..samples {
            let dxs = &mut dx[sm * ins..][..ins];
            for i in 0..g.oh {
                let (h0, h1) = g.span(i, g.h);
                for j in 0..g.ow {
                    let (w0, w1) = g.span(j, g.w);
                    let o = sm * outs + (i * g.ow + j) * c;
                    for c0 in (0..c).step_by(LANES) {
                        let n = LANES.min(c - c0);
                        let (d, at) = (s.load(&dy[o + c0..], n), s.load(&idx[o + c0..], n));
                        for r in h0..h1 {
                            for q in w0..w1 {
                                let pos = (r * g.w + q) as f32;
                                // at == pos, for whole numbers: at > pos - 1/2 and not at > pos + 1/2.
                                let v = s.select(s.gt(at, s.splat(pos - 0.5)), d, zero);
                                let v = s.select(s.gt(at, s.splat(pos + 0.5)), zero, v);
                                // 0 + v, as the scalar kernels' sums from 0 (a -0 dy gives +0).
                                s.store(&mut dxs[(r * g.w + q) * c + c0..], n, s.add(zero, v));
                            }
                        }
                    }
                }
            }
        }
    }
}
