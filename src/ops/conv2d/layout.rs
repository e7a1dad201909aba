//! Where conv2d's data sits: the patch matrix (im2row and its adjoint row2im), the padded
//! planes of narrow layers and the tap offsets the kernels read them at, the tap offsets of
//! whole-tap layers, and the weights in the two GEMM orders.
//!
//! Shapes (see the module header): x (B, H, W, C) channels-last per chunk of B samples, patch
//! matrix A (M, CKK) with row m = output pixel (s, oh, ow) and column k = (ki, kj, c), planes
//! (B, Hp, Wp, C); weights (OC, C, KH, KW) as PyTorch stores them, Wt (CKK, OC) and
//! Wr (OC, CKK) in GEMM order.

use super::ConvGeom;
use super::kernels::MR;
use crate::ops::CHUNK;
use crate::ops::simd::{LANES, Simd};
use std::cell::RefCell;
use std::rc::Rc;

/// Row stride of the patch matrix: 16 for CKK <= 16, 160 for CKK <= 160 (the kernels are
/// compiled for these two strides), else CKK rounded up to a multiple of 16.
pub(super) fn patch_stride(ckk: usize) -> usize {
    match ckk {
        0..=16 => 16,
        17..=160 => 160,
        _ => ckk.next_multiple_of(LANES),
    }
}

/// Patch-matrix rows for a chunk of `b` samples: M = b*OHW rounded up to the register block.
pub(super) fn patch_rows(g: &ConvGeom, b: usize) -> usize {
    (b * g.ohw()).next_multiple_of(MR)
}

/// Values of one padded plane (Hp, Wp, C).
pub(super) fn plane_len(g: &ConvGeom) -> usize {
    (g.h + 2 * g.padding) * (g.w + 2 * g.padding) * g.c
}

/// Where patch values sit in a chunk's planes: `koff[k]` is column k's offset from a pixel's
/// base (k = (ki, kj, c); padded to a multiple of 16 with column 0's offset, so a 16-column
/// block always reads valid values, of which only the real columns are stored), `base[m]` is
/// output pixel m's offset (m = (s, oh, ow) over the chunk).
pub(super) struct Taps {
    pub(super) koff: Vec<usize>,
    base: Vec<usize>,
}

impl Taps {
    /// The offsets for a chunk of [`CHUNK`] samples (a smaller chunk uses a prefix of `base`),
    /// made once per geometry and thread.
    pub(super) fn for_chunk(g: &ConvGeom) -> Rc<Taps> {
        thread_local! {
            static CACHE: PerGeometry<Rc<Taps>> = const { RefCell::new(Vec::new()) };
        }
        CACHE.with(|c| cached(c, g, || Rc::new(Taps::new(g, CHUNK))))
    }

    /// Output pixel m's base for the first `m_total` pixels of a chunk.
    pub(super) fn bases(&self, m_total: usize) -> &[usize] {
        &self.base[..m_total]
    }

    fn new(g: &ConvGeom, b: usize) -> Taps {
        let (c, wp) = (g.c, g.w + 2 * g.padding);
        let mut koff: Vec<usize> = (0..g.kh)
            .flat_map(|ki| (0..g.kw).flat_map(move |kj| (0..c).map(move |ch| (ki * wp + kj) * c + ch)))
            .collect();
        koff.resize(g.ckk().next_multiple_of(MR), koff.first().copied().unwrap_or(0));
        let (len, step) = (plane_len(g), g.stride * c);
        let mut base = Vec::with_capacity(b * g.ohw());
        for s in 0..b {
            for oh in 0..g.oh {
                let row = s * len + oh * g.stride * wp * c;
                base.extend((0..g.ow).map(|ow| row + ow * step));
            }
        }
        Taps { koff, base }
    }
}

/// For each output pixel o of a sample and kernel tap t = ki*KW + kj: the offset in the
/// sample's x of the input pixel it reads, or `usize::MAX` in the padding. Indexed o*KH*KW + t.
/// Made once per geometry and thread, then reused.
pub(super) fn pixel_taps(g: &ConvGeom) -> Rc<[usize]> {
    thread_local! {
        static CACHE: PerGeometry<Rc<[usize]>> = const { RefCell::new(Vec::new()) };
    }
    CACHE.with(|c| cached(c, g, || make_pixel_taps(g).into()))
}

/// A per-thread table of values derived from a layer's geometry (the 16 most recent).
type PerGeometry<T> = RefCell<Vec<(ConvGeom, T)>>;

/// The value for `g` in `cache`, made by `make` the first time.
fn cached<T: Clone>(cache: &PerGeometry<T>, g: &ConvGeom, make: impl FnOnce() -> T) -> T {
    let mut c = cache.borrow_mut();
    if let Some((_, t)) = c.iter().find(|(k, _)| k == g) {
        return t.clone();
    }
    let t = make();
    if c.len() >= 16 {
        c.remove(0);
    }
    c.push((*g, t.clone()));
    t
}

fn make_pixel_taps(g: &ConvGeom) -> Vec<usize> {
    let mut taps = Vec::with_capacity(g.ohw() * g.kh * g.kw);
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    taps.push(match (input_row(g, oh, ki), input_col(g, ow, kj)) {
                        (Some(ih), Some(iw)) => (ih * g.w + iw) * g.c,
                        _ => usize::MAX,
                    });
                }
            }
        }
    }
    taps
}

/// The order of the weights in a GEMM layout, with k = (ki, kj, c) = t*C + c for kernel tap
/// t = ki*KW + kj.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WeightOrder {
    /// Wt (CKK, OC): the forward's layout, and the weight gradient's partial sums.
    KMajor,
    /// Wr (OC, CKK): the dx pass's layout.
    OcMajor,
}

/// Calls `f(i, j)` for every weight (o, c, t): i its index in PyTorch's (OC, C, KH, KW), j its
/// index in `order`. The one permutation loop: each caller copies one way or the other.
#[inline]
pub(super) fn for_each_weight(g: &ConvGeom, order: WeightOrder, mut f: impl FnMut(usize, usize)) {
    let kk = g.kh * g.kw;
    for o in 0..g.oc {
        for c in 0..g.c {
            for t in 0..kk {
                let j = match order {
                    WeightOrder::KMajor => (t * g.c + c) * g.oc + o,
                    WeightOrder::OcMajor => (o * kk + t) * g.c + c,
                };
                f((o * g.c + c) * kk + t, j);
            }
        }
    }
}

/// Weights (OC, C, KH, KW) in GEMM order `order`.
fn weights_in_order(g: &ConvGeom, w: &[f32], order: WeightOrder) -> Vec<f32> {
    let mut out = vec![0.0; g.ckk() * g.oc];
    for_each_weight(g, order, |i, j| out[j] = w[i]);
    out
}

/// Weights (OC, C, KH, KW) as Wt (CKK, OC) with k = (ki, kj, c): the forward's layout.
pub fn weights_k_major(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    weights_in_order(g, w, WeightOrder::KMajor)
}

/// Weights as Wr (OC, CKK) with k = (ki, kj, c): the dx pass's layout.
pub(super) fn weights_oc_major(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    weights_in_order(g, w, WeightOrder::OcMajor)
}

/// dst = src (same length): whole vectors, then a masked tail.
#[inline(always)]
pub(super) fn copy<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    let (src, full) = (&src[..n], n / LANES * LANES);
    for o in (0..full).step_by(LANES) {
        s.store(&mut dst[o..o + LANES], LANES, s.load(&src[o..o + LANES], LANES));
    }
    if full < n {
        s.store(&mut dst[full..], n - full, s.load(&src[full..], n - full));
    }
}

/// dst += src (same length), a vector at a time.
#[inline(always)]
pub(super) fn add_to<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    for (d, x) in dst.chunks_mut(LANES).zip(src.chunks(LANES)) {
        let n = d.len();
        s.store(d, n, s.add(s.load(d, n), s.load(x, n)));
    }
}

#[inline(always)]
pub(super) fn zero<S: Simd>(s: S, dst: &mut [f32]) {
    for d in dst.chunks_mut(LANES) {
        s.store(d, d.len(), s.splat(0.0));
    }
}

/// For each output column: the kernel columns [lo, hi) that fall inside the image, and the
/// input column of kernel column lo.
fn col_taps(g: &ConvGeom) -> Vec<(usize, usize, usize)> {
    (0..g.ow)
        .map(|ow| {
            let iw0 = (ow * g.stride) as isize - g.padding as isize;
            let lo = (-iw0).clamp(0, g.kw as isize) as usize;
            let hi = (g.w as isize - iw0).clamp(lo as isize, g.kw as isize) as usize;
            (lo, hi, (iw0 + lo as isize) as usize)
        })
        .collect()
}

/// The input row of output row oh and kernel row ki, if inside the image.
#[inline(always)]
fn input_row(g: &ConvGeom, oh: usize, ki: usize) -> Option<usize> {
    (oh * g.stride + ki).checked_sub(g.padding).filter(|&ih| ih < g.h)
}

/// The input column of output column ow and kernel column kj, if inside the image.
#[inline(always)]
fn input_col(g: &ConvGeom, ow: usize, kj: usize) -> Option<usize> {
    (ow * g.stride + kj).checked_sub(g.padding).filter(|&iw| iw < g.w)
}

/// im2row: patch matrix A (rows of stride l) from x (B, H, W, C). Row m = (s, oh, ow) holds
/// x[s, oh*S + ki - P, ow*S + kj - P, c] at column (ki, kj, c), 0 in the padding; columns past
/// CKK up to a multiple of 16, and rows past B*OHW, are 0.
#[inline(always)]
pub(super) fn im2row<S: Simd>(s: S, g: &ConvGeom, x: &[f32], l: usize, a: &mut [f32]) {
    let (c, kwc, ckk) = (g.c, g.kw * g.c, g.ckk());
    let b = x.len() / g.in_size();
    let cols = col_taps(g);
    let mut rows = a.chunks_mut(l);
    for xs in x.chunks(g.in_size()).take(b) {
        for oh in 0..g.oh {
            for &(lo, hi, iw) in &cols {
                let row = rows.next().expect("patch rows");
                for ki in 0..g.kh {
                    let seg = &mut row[ki * kwc..][..kwc];
                    match input_row(g, oh, ki) {
                        None => zero(s, seg),
                        Some(ih) => {
                            if lo > 0 {
                                zero(s, &mut seg[..lo * c]);
                            }
                            copy(s, &xs[(ih * g.w + iw) * c..][..(hi - lo) * c], &mut seg[lo * c..hi * c]);
                            if hi < g.kw {
                                zero(s, &mut seg[hi * c..]);
                            }
                        }
                    }
                }
                if ckk % LANES != 0 {
                    zero(s, &mut row[ckk..ckk.next_multiple_of(LANES)]);
                }
            }
        }
    }
    for row in rows {
        zero(s, row);
    }
}

/// The padded planes (B, Hp, Wp, C) of x (B, H, W, C), for
/// [`Plan::Planes`](super::plan::Plan::Planes) layers.
#[inline(always)]
pub(super) fn fill_planes<S: Simd>(s: S, g: &ConvGeom, x: &[f32], planes: &mut [f32]) {
    let (c, p, wp) = (g.c, g.padding, g.w + 2 * g.padding);
    zero(s, planes);
    for (xs, plane) in x.chunks(g.in_size()).zip(planes.chunks_mut(plane_len(g))) {
        for ih in 0..g.h {
            copy(
                s,
                &xs[ih * g.w * c..][..g.w * c],
                &mut plane[((ih + p) * wp + p) * c..][..g.w * c],
            );
        }
    }
}

/// row2im: dx (B, H, W, C) = for each input value, the sum of the dA entries it fed.
#[inline(always)]
pub(super) fn row2im<S: Simd>(s: S, g: &ConvGeom, da: &[f32], l: usize, dx: &mut [f32]) {
    let (c, kwc) = (g.c, g.kw * g.c);
    let cols = col_taps(g);
    zero(s, dx);
    let mut rows = da.chunks(l);
    for xs in dx.chunks_mut(g.in_size()) {
        for oh in 0..g.oh {
            for &(lo, hi, iw) in &cols {
                let row = rows.next().expect("patch rows");
                for ki in 0..g.kh {
                    if let Some(ih) = input_row(g, oh, ki) {
                        let src = &row[ki * kwc + lo * c..ki * kwc + hi * c];
                        add_to(s, src, &mut xs[(ih * g.w + iw) * c..][..(hi - lo) * c]);
                    }
                }
            }
        }
    }
}
