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
//! loads and stores). Only selects and compares make the results (the forward's sums only
//! detect NaN), so every backend gives the same bits.
//!
//! The forward first scans without NaN's rule, which is PyTorch's scan whenever no value is NaN,
//! and scans again with it only the chunks where one may be (see `forward`). In `bncnn`'s first
//! block (convolution, ReLU and this pooling fused, batch 16, one thread), block 1 took 6.8 ->
//! 5.7 us per image on AVX-512 and 9.1 -> 7.5 on AVX2.

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
        // Compiled apart without the indices (inference), which then cost nothing. First the
        // scan without NaN's rule; again with it (over the same outputs) only when a value of
        // the chunk may be NaN.
        let Forward { g, x, y, mut idx } = self;
        let clean = match idx.as_deref_mut() {
            Some(i) => forward::<S, true, false>(s, g, x, y, Some(i)),
            None => forward::<S, false, false>(s, g, x, y, None),
        };
        if !clean {
            match idx {
                Some(i) => forward::<S, true, true>(s, g, x, y, Some(i)),
                None => forward::<S, false, true>(s, g, x, y, None),
            };
        }
    }
}

/// [`Forward`], tracking the indices when `IDX`. With `NAN`, PyTorch's scan (see [`wins`]);
/// without, a value replaces the best only when it is larger (a compare and a select instead of
/// [`wins`]' seven operations), which is the same scan unless a value is NaN: then it returns
/// false (the sum of all values read is NaN; an overflow to infinities can make it NaN too),
/// and the caller runs the scan with `NAN` over the same outputs. So the bits are the scan's.
#[inline(always)]
fn forward<S: Simd, const IDX: bool, const NAN: bool>(
    s: S,
    g: &PoolGeom,
    x: &[f32],
    y: &mut [f32],
    mut idx: Option<&mut [f32]>,
) -> bool {
    let (c, ins, outs) = (g.c, g.in_size(), g.out_size());
    let mut sum = s.zero();
    let samples = y.len() / outs;
    assert!(x.len() == samples * ins && idx.as_ref().is_none_or(|i| i.len() == y.len()));
    if !NAN && g.k == 2 && g.padding == 0 {
        return no_nan_in(s, forward_2x2::<S, IDX>(s, g, x, y, idx));
    }
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
                    let load = |pos: usize| s.load(&xs[pos * c + c0..], n);
                    let (mut best, mut at) = start::<S, IDX, NAN>(s, load(first), first, &mut sum);
                    for r in h0..h1 {
                        for q in w0..w1 {
                            let pos = r * g.w + q;
                            if pos != first {
                                step::<S, IDX, NAN>(s, (load(pos), pos), (&mut best, &mut at), &mut sum);
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
    NAN || no_nan_in(s, sum)
}

/// A window's scan from its first value `v` (at pixel `first`): the best so far and, with
/// `IDX`, its index; without `NAN`, `v` added to the chunk's sum (see [`forward`]).
#[inline(always)]
fn start<S: Simd, const IDX: bool, const NAN: bool>(s: S, v: S::V, first: usize, sum: &mut S::V) -> (S::V, S::V) {
    if !NAN {
        *sum = s.add(*sum, v);
    }
    (v, if IDX { s.splat(first as f32) } else { s.zero() })
}

/// One more value `v` (at pixel `pos`) of a window's scan: it replaces the best (and its index)
/// when larger, or with `NAN` also when NaN ([`wins`]); without `NAN`, it is added to the
/// chunk's sum.
#[inline(always)]
fn step<S: Simd, const IDX: bool, const NAN: bool>(
    s: S,
    (v, pos): (S::V, usize),
    (best, at): (&mut S::V, &mut S::V),
    sum: &mut S::V,
) {
    let m = if NAN {
        wins(s, v, *best)
    } else {
        *sum = s.add(*sum, v);
        s.gt(v, *best)
    };
    *best = s.select(m, v, *best);
    if IDX {
        *at = s.select(m, s.splat(pos as f32), *at);
    }
}

/// Whether no lane of `v` is NaN.
#[inline(always)]
fn no_nan_in<S: Simd>(s: S, v: S::V) -> bool {
    let mut lanes = [0.0f32; LANES];
    s.store(&mut lanes, LANES, v);
    !lanes.iter().any(|v| v.is_nan())
}

/// [`forward`] without NaN's rule for 2x2 windows without padding (every window whole: the
/// pooling of the accuracy model), the four positions at fixed offsets, in the scan's order;
/// returns the sum of the values read (see [`forward`]).
#[inline(always)]
fn forward_2x2<S: Simd, const IDX: bool>(
    s: S,
    g: &PoolGeom,
    x: &[f32],
    y: &mut [f32],
    mut idx: Option<&mut [f32]>,
) -> S::V {
    let (c, ins, outs) = (g.c, g.in_size(), g.out_size());
    let mut sum = s.zero();
    // The window's positions after its first, in the scan's order, as pixel offsets.
    let steps = [1, g.w, g.w + 1];
    for (sm, (xs, ys)) in x.chunks_exact(ins).zip(y.chunks_exact_mut(outs)).enumerate() {
        for i in 0..g.oh {
            for j in 0..g.ow {
                let first = i * g.stride * g.w + j * g.stride;
                let o = (i * g.ow + j) * c;
                for c0 in (0..c).step_by(LANES) {
                    let n = LANES.min(c - c0);
                    let load = |pos: usize| s.load(&xs[pos * c + c0..], n);
                    let (mut best, mut at) = start::<S, IDX, false>(s, load(first), first, &mut sum);
                    for pos in steps.map(|d| first + d) {
                        step::<S, IDX, false>(s, (load(pos), pos), (&mut best, &mut at), &mut sum);
                    }
                    s.store(&mut ys[o + c0..], n, best);
                    if let (true, Some(idx)) = (IDX, idx.as_deref_mut()) {
                        s.store(&mut idx[sm * outs + o + c0..], n, at);
                    }
                }
            }
        }
    }
    sum
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
