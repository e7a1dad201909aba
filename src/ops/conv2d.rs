//! 2-D convolution (cross-correlation, as `torch.nn.functional.conv2d`) with stride and padding.
//!
//! Shapes: x (N, C, H, W), weight (OC, C, KH, KW), bias (OC), y (N, OC, OH, OW) with
//! OH = (H + 2P - KH) / S + 1 and OW likewise; CKK = C*KH*KW, OHW = OH*OW, and for a chunk of
//! B samples M = B*OHW output pixels. Hp = H + 2P, Wp = W + 2P.
//!
//! Method: GEMM on channels-last data. The output is stored (N, OH, OW, OC) (the tensor is
//! marked channels-last) and x is read as (N, H, W, C). Per chunk, the patch matrix A (M, CKK)
//! holds row m = output pixel, column k = (ki, kj, c); in channels-last order each kernel row
//! of a patch is one contiguous run of KW*C input values, so building A is a few vector copies
//! per pixel (not the scalar strided gathers of NCHW im2col). Then
//!   forward  y (M, OC)    = A Wt + bias          (16 pixels in registers, OC in vector lanes)
//!   backward dWt (CKK, OC) = A^T dy              (16 patch columns in registers; when C is a
//!                             multiple of 16 these are read straight from x, and the forward
//!                             keeps no patch matrix)
//!            dA (M, CKK)   = dy Wr, dx = row2im(dA)   (when C is a multiple of 16, each 16-column
//!                             block of dA goes straight into dx instead: no dA matrix)
//! A's rows have a fixed stride (16 or 160), so the kernels address the 16 register rows with
//! constant offsets and read each broadcast operand straight from memory.
//! Narrow layers (KW*C < 16: the first layer, one channel) skip the patch matrix: each sample
//! is kept as a zero-padded plane (Hp, Wp, C), which the kernels read at precomputed offsets,
//! and their backward makes one pass over dy (ReLU mask, dbias and dW together).
//! Chunks of [`CHUNK`] samples run in parallel; weight gradients are summed one partial per
//! chunk, in chunk order, so the result is the same for any number of threads.

use super::simd::{Kernel, LANES, Simd};
use super::{CHUNK, for_each_chunk};
use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::pool::{self, Pooled};
use crate::tensor::{Tensor, nchw_to_nhwc, nhwc_to_nchw};
use std::cell::RefCell;
use std::rc::Rc;

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(
        (c, h, w): (usize, usize, usize),
        (oc, kh, kw): (usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> ConvGeom {
        assert!(stride > 0, "conv2d: stride must be positive");
        assert!(
            h + 2 * padding >= kh && w + 2 * padding >= kw,
            "conv2d: kernel {kh}x{kw} larger than padded input {h}x{w} (+2*{padding})"
        );
        let oh = (h + 2 * padding - kh) / stride + 1;
        let ow = (w + 2 * padding - kw) / stride + 1;
        ConvGeom {
            c,
            h,
            w,
            oc,
            kh,
            kw,
            stride,
            padding,
            oh,
            ow,
        }
    }
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_size(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_size(&self) -> usize {
        self.oc * self.ohw()
    }
}

/// Row stride of the patch matrix: 16 for CKK <= 16, 160 for CKK <= 160 (the kernels are
/// compiled for these two strides), else CKK rounded up to a multiple of 16.
fn patch_stride(ckk: usize) -> usize {
    match ckk {
        0..=16 => 16,
        17..=160 => 160,
        _ => ckk.next_multiple_of(LANES),
    }
}

/// Patch-matrix rows for a chunk of `b` samples: M = b*OHW rounded up to the register block.
fn patch_rows(g: &ConvGeom, b: usize) -> usize {
    (b * g.ohw()).next_multiple_of(MR)
}

/// Narrow kernel rows (KW*C < 16, such as the first layer's single channel) are not copied
/// into a patch matrix, where each value would be a scalar copy: each sample is kept as a
/// zero-padded plane (Hp, Wp, C), and the kernels read patch value (m, k) straight from it
/// at offset base(m) + koff(k).
fn uses_planes(g: &ConvGeom) -> bool {
    g.kw * g.c < LANES
}

/// Values of one padded plane (Hp, Wp, C).
fn plane_len(g: &ConvGeom) -> usize {
    (g.h + 2 * g.padding) * (g.w + 2 * g.padding) * g.c
}

/// Length of the patches of a chunk of `b` samples: planes or a patch matrix.
fn chunk_patch_len(g: &ConvGeom, b: usize) -> usize {
    if uses_planes(g) {
        b * plane_len(g)
    } else {
        patch_rows(g, b) * patch_stride(g.ckk())
    }
}

/// Length of what the backward reads of a chunk of `b` samples: x itself for
/// [`whole_tap_blocks`] layers, else the forward's patches.
fn chunk_saved_len(g: &ConvGeom, b: usize) -> usize {
    if whole_tap_blocks(g) {
        b * g.in_size()
    } else {
        chunk_patch_len(g, b)
    }
}

/// Where patch values sit in a chunk's planes: `koff[k]` is column k's offset from a pixel's
/// base (k = (ki, kj, c); padded to a multiple of 16 with column 0's offset, so a 16-column
/// block always reads valid values, of which only the real columns are stored), `base[m]` is
/// output pixel m's offset (m = (s, oh, ow) over the chunk).
struct Taps {
    koff: Vec<usize>,
    base: Vec<usize>,
}

impl Taps {
    /// The offsets for a chunk of [`CHUNK`] samples (a smaller chunk uses a prefix of `base`),
    /// made once per geometry and thread.
    fn for_chunk(g: &ConvGeom) -> Rc<Taps> {
        thread_local! {
            static CACHE: PerGeometry<Rc<Taps>> = const { RefCell::new(Vec::new()) };
        }
        CACHE.with(|c| cached(c, g, || Rc::new(Taps::new(g, CHUNK))))
    }

    /// Output pixel m's base for the first `m_total` pixels of a chunk.
    fn bases(&self, m_total: usize) -> &[usize] {
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

/// Weights (OC, C, KH, KW) as Wt (CKK, OC) with k = (ki, kj, c): the forward's layout.
pub fn weights_k_major(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let mut wt = vec![0.0; g.ckk() * g.oc];
    for o in 0..g.oc {
        for c in 0..g.c {
            for t in 0..g.kh * g.kw {
                wt[(t * g.c + c) * g.oc + o] = w[(o * g.c + c) * g.kh * g.kw + t];
            }
        }
    }
    wt
}

/// Weights as Wr (OC, CKK) with k = (ki, kj, c): the dx pass's layout.
fn weights_oc_major(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let mut wr = vec![0.0; g.ckk() * g.oc];
    for o in 0..g.oc {
        for c in 0..g.c {
            for t in 0..g.kh * g.kw {
                wr[(o * g.kh * g.kw + t) * g.c + c] = w[(o * g.c + c) * g.kh * g.kw + t];
            }
        }
    }
    wr
}

/// Rows of results held in registers at once.
const MR: usize = 16;

/// dst = src (same length): whole vectors, then a masked tail.
#[inline(always)]
fn copy<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
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
fn add_to<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    for (d, x) in dst.chunks_mut(LANES).zip(src.chunks(LANES)) {
        let n = d.len();
        s.store(d, n, s.add(s.load(d, n), s.load(x, n)));
    }
}

#[inline(always)]
fn zero<S: Simd>(s: S, dst: &mut [f32]) {
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
fn im2row<S: Simd>(s: S, g: &ConvGeom, x: &[f32], l: usize, a: &mut [f32]) {
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

/// The padded planes (B, Hp, Wp, C) of x (B, H, W, C), for [`uses_planes`] geometries.
#[inline(always)]
fn fill_planes<S: Simd>(s: S, g: &ConvGeom, x: &[f32], planes: &mut [f32]) {
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
fn row2im<S: Simd>(s: S, g: &ConvGeom, da: &[f32], l: usize, dx: &mut [f32]) {
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

/// C (R x N; rows < `rows` stored) = A (R x K, row stride AS, or `st` when AS = 0) B (K x N),
/// plus bias, then max(., 0) with `relu`. With AS fixed, the R rows of A sit at constant offsets, so each multiply-add reads
/// its broadcast operand straight from memory.
/// On backends with fewer register rows than R ([`Simd::ROWS`]), the rows are computed
/// [`GROUP`] at a time: each row's sum is the same, so the bits are too.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_times_matrix<S: Simd, const AS: usize, const R: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    (rows, relu): (usize, bool),
) {
    if S::ROWS >= R {
        return rows_times_matrix_block::<S, AS, R>(s, a, st, (k, n), b, ldb, bias, c, ldc, (rows, relu));
    }
    assert!(R.is_multiple_of(GROUP));
    let stride = if AS > 0 { AS } else { st };
    for r0 in (0..rows).step_by(GROUP) {
        let (ag, cg, rg) = (&a[r0 * stride..], &mut c[r0 * ldc..], GROUP.min(rows - r0));
        rows_times_matrix_block::<S, AS, GROUP>(s, ag, st, (k, n), b, ldb, bias, cg, ldc, (rg, relu));
    }
}

/// Register rows of the backends whose vector takes several registers (see [`Simd::ROWS`]).
const GROUP: usize = 4;

/// Rows per block of the reductions over pixels (weight and bias gradients): each block is
/// summed in registers from zero, and the block sums are added in order into the result in
/// memory. Shorter running sums than one over all of a chunk's pixels (1,568 for the first
/// layer) keep the rounding error of the sum smaller.
const SUM_BLOCK: usize = 128;

/// Adds the first `rows` of the block sums `acc` into C (rows of stride ldc, columns n0..n0+w),
/// or stores them there for the first block; then zeroes `acc` for the next block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fold_block<S: Simd, const G: usize>(
    s: S,
    acc: &mut [S::V; G],
    c: &mut [f32],
    (ldc, n0, w): (usize, usize, usize),
    rows: usize,
    first: bool,
) {
    for (r, v) in acc.iter().enumerate().take(rows) {
        let dst = &mut c[r * ldc + n0..];
        let sum = if first { *v } else { s.add(s.load(dst, w), *v) };
        s.store(dst, w, sum);
    }
    *acc = [s.zero(); G];
}

/// [`rows_times_matrix`] with all R rows in registers at once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_times_matrix_block<S: Simd, const AS: usize, const R: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    (rows, relu): (usize, bool),
) {
    let st = if AS > 0 { AS } else { st };
    assert!(
        R > 0 && k <= st && a.len() >= (R - 1) * st + k,
        "rows_times_matrix: A too short"
    );
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        let mut acc = [bias.map_or(s.splat(0.0), |b| s.load(&b[n0..], w)); R];
        for p in 0..k {
            let bv = s.load(&b[p * ldb + n0..], w);
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * st + p <= (R - 1) * st + k - 1 < a.len(), asserted above.
                let av = unsafe { *a.get_unchecked(r * st + p) };
                *acc = s.mul_add(s.splat(av), bv, *acc);
            }
        }
        for (r, v) in acc.iter().enumerate().take(rows) {
            s.store(&mut c[r * ldc + n0..], w, if relu { s.relu(*v) } else { *v });
        }
    }
}

/// C (16 x N; rows < `rows` stored) = sum over m < M of A[m, k0..k0+16]^T D[m, ..N] (summed in
/// blocks of [`SUM_BLOCK`] rows, see [`fold_block`]): the
/// transposed product, 16 columns of A in registers (or [`GROUP`] at a time, see
/// [`Simd::ROWS`]: the same sums), reduced over the rows of A and D.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn columns_times_matrix<S: Simd>(
    s: S,
    a: &[f32],
    lda: usize,
    (m, k0, n): (usize, usize, usize),
    d: &[f32],
    ldd: usize,
    c: &mut [f32],
    ldc: usize,
    rows: usize,
) {
    if S::ROWS >= MR {
        return columns_times_matrix_block::<S, MR>(s, a, lda, (m, k0, n), d, ldd, c, ldc, rows);
    }
    for c0 in (0..rows).step_by(GROUP) {
        let (cg, rg) = (&mut c[c0 * ldc..], GROUP.min(rows - c0));
        columns_times_matrix_block::<S, GROUP>(s, a, lda, (m, k0 + c0, n), d, ldd, cg, ldc, rg);
    }
}

/// [`columns_times_matrix`] for the G columns k0.. of A.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn columns_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    a: &[f32],
    lda: usize,
    (m, k0, n): (usize, usize, usize),
    d: &[f32],
    ldd: usize,
    c: &mut [f32],
    ldc: usize,
    rows: usize,
) {
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        let mut acc = [s.splat(0.0); G];
        for mm in 0..m {
            let dv = s.load(&d[mm * ldd + n0..], w);
            let ar: &[f32; G] = a[mm * lda + k0..][..G].try_into().expect("G values");
            for (v, &x) in acc.iter_mut().zip(ar) {
                *v = s.mul_add(s.splat(x), dv, *v);
            }
            if (mm + 1) % SUM_BLOCK == 0 || mm + 1 == m {
                fold_block(s, &mut acc, c, (ldc, n0, w), rows, mm < SUM_BLOCK);
            }
        }
        if m == 0 {
            fold_block(s, &mut acc, c, (ldc, n0, w), rows, true);
        }
    }
}

/// The forward's product for one block of up to 16 output pixels, y (rows x OC) = A Wt + bias:
/// a last, partial block (a single image's 49 pixels leave 1) is computed with 4 or 8 rows in
/// registers instead of 16. Each row's sum is the same either way.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block_times_matrix<S: Simd, const AS: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    wt: &[f32],
    bias: &[f32],
    y: &mut [f32],
    (rows, relu): (usize, bool),
) {
    match rows {
        0..=4 => rows_times_matrix::<S, AS, 4>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
        5..=8 => rows_times_matrix::<S, AS, 8>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
        _ => rows_times_matrix::<S, AS, MR>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
    }
}

/// [`columns_times_matrix`] for the column block k0 = t*C + cb of a [`whole_tap_blocks`]
/// layer, A's rows read from x (B, H, W, C): A[m, k0..k0+16] = the 16 channels from cb of the
/// pixel that output pixel m reads through tap t (offsets `pix`, from [`pixel_taps`]), zeros in
/// the padding. The same multiply-adds in the same order, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), [`GROUP`] channels at a time.
#[inline(always)]
fn tap_columns_times_matrix<S: Simd>(
    s: S,
    g: &ConvGeom,
    (x, pix): (&[f32], &[usize]),
    (m, t, cb): (usize, usize, usize),
    d: &[f32],
    c: &mut [f32],
) {
    if S::ROWS >= MR {
        return tap_columns_times_matrix_block::<S, MR>(s, g, (x, pix), (m, t, cb), d, c);
    }
    for c0 in (0..MR).step_by(GROUP) {
        tap_columns_times_matrix_block::<S, GROUP>(s, g, (x, pix), (m, t, cb + c0), d, &mut c[c0 * g.oc..]);
    }
}

/// [`tap_columns_times_matrix`] for the G channels from cb.
#[inline(always)]
fn tap_columns_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    g: &ConvGeom,
    (x, pix): (&[f32], &[usize]),
    (m, t, cb): (usize, usize, usize),
    d: &[f32],
    c: &mut [f32],
) {
    let (n, kk) = (g.oc, g.kh * g.kw);
    let zeros = [0.0f32; G];
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        let mut acc = [s.splat(0.0); G];
        let (mut base, mut o) = (0, 0);
        for (mm, drow) in d.chunks(n).take(m).enumerate() {
            let dv = s.load(&drow[n0..], w);
            let off = pix[o * kk + t];
            let ar: &[f32; G] = if off == usize::MAX {
                &zeros
            } else {
                x[base + off + cb..][..G].try_into().expect("G values")
            };
            for (v, &xv) in acc.iter_mut().zip(ar) {
                *v = s.mul_add(s.splat(xv), dv, *v);
            }
            o += 1;
            if o == g.ohw() {
                (o, base) = (0, base + g.in_size());
            }
            if (mm + 1) % SUM_BLOCK == 0 || mm + 1 == m {
                fold_block(s, &mut acc, c, (n, n0, w), G, mm < SUM_BLOCK);
            }
        }
        if m == 0 {
            fold_block(s, &mut acc, c, (n, n0, w), G, true);
        }
    }
}

/// [`rows_times_matrix`] with A read from planes: A[r, p] = planes[rb[r] + koff[p]]. The same
/// multiply-adds in the same order, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), [`GROUP`] rows at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_times_matrix<S: Simd>(
    s: S,
    planes: &[f32],
    (rb, koff): (&[usize; MR], &[usize]),
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: &[f32],
    c: &mut [f32],
    (rows, relu): (usize, bool),
) {
    if S::ROWS >= MR {
        return taps_times_matrix_block::<S, MR>(s, planes, (rb, koff), (k, n), b, ldb, bias, c, (rows, relu));
    }
    for r0 in (0..rows).step_by(GROUP) {
        let rbg: &[usize; GROUP] = rb[r0..][..GROUP].try_into().expect("GROUP rows");
        let (cg, rg) = (&mut c[r0 * n..], GROUP.min(rows - r0));
        taps_times_matrix_block::<S, GROUP>(s, planes, (rbg, koff), (k, n), b, ldb, bias, cg, (rg, relu));
    }
}

/// [`taps_times_matrix`] for G rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    planes: &[f32],
    (rb, koff): (&[usize; G], &[usize]),
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: &[f32],
    c: &mut [f32],
    (rows, relu): (usize, bool),
) {
    let koff = &koff[..k];
    let reach = rb.iter().max().unwrap_or(&0) + koff.iter().max().unwrap_or(&0);
    assert!(reach < planes.len(), "taps_times_matrix: planes too short");
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        let mut acc = [s.load(&bias[n0..], w); G];
        for (p, &o) in koff.iter().enumerate() {
            let bv = s.load(&b[p * ldb + n0..], w);
            for (acc, &base) in acc.iter_mut().zip(rb) {
                // SAFETY: base + o <= max(rb) + max(koff) < planes.len(), asserted above.
                let av = unsafe { *planes.get_unchecked(base + o) };
                *acc = s.mul_add(s.splat(av), bv, *acc);
            }
        }
        for (r, v) in acc.iter().enumerate().take(rows) {
            s.store(&mut c[r * n + n0..], w, if relu { s.relu(*v) } else { *v });
        }
    }
}

/// [`columns_times_matrix`] with A read from planes: C (16 x N) = sum over pixels m of
/// A[m, k0..k0+16]^T D[m, ..N], A[m, k] = planes[base[m] + koff[k]]. With `y`, D is first
/// masked to where y > 0 (a fused ReLU's backward); with `db`, the column sums of D go there.
/// The same operations in the same order as the separate passes, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), [`GROUP`] columns at a time (the
/// first group also sums dbias).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_columns_times_matrix<S: Simd>(
    s: S,
    planes: &[f32],
    (base, koff): (&[usize], &[usize; MR]),
    n: usize,
    (d, y): (&[f32], Option<&[f32]>),
    c: &mut [f32],
    rows: usize,
    mut db: Option<&mut [f32]>,
) {
    if S::ROWS >= MR {
        return taps_columns_times_matrix_block::<S, MR>(s, planes, (base, koff), n, (d, y), c, rows, db);
    }
    for c0 in (0..rows).step_by(GROUP) {
        let kg: &[usize; GROUP] = koff[c0..][..GROUP].try_into().expect("GROUP columns");
        let (cg, rg) = (&mut c[c0 * n..], GROUP.min(rows - c0));
        taps_columns_times_matrix_block::<S, GROUP>(s, planes, (base, kg), n, (d, y), cg, rg, db.take());
    }
}

/// [`taps_columns_times_matrix`] for G columns.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_columns_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    planes: &[f32],
    (base, koff): (&[usize], &[usize; G]),
    n: usize,
    (d, y): (&[f32], Option<&[f32]>),
    c: &mut [f32],
    rows: usize,
    mut db: Option<&mut [f32]>,
) {
    let reach = base.iter().max().unwrap_or(&0) + koff.iter().max().unwrap_or(&0);
    assert!(
        reach < planes.len() && d.len() >= base.len() * n,
        "taps_columns_times_matrix: planes or dy too short"
    );
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        let mut acc = [s.splat(0.0); G];
        let mut sum = [s.splat(0.0)];
        let m = base.len();
        for (mm, &b) in base.iter().enumerate() {
            let mut dv = s.load(&d[mm * n + n0..], w);
            if let Some(y) = y {
                dv = s.pass_where_positive(s.load(&y[mm * n + n0..], w), dv);
            }
            sum[0] = s.add(sum[0], dv);
            for (v, &o) in acc.iter_mut().zip(koff) {
                // SAFETY: b + o <= max(base) + max(koff) < planes.len(), asserted above.
                let x = unsafe { *planes.get_unchecked(b + o) };
                *v = s.mul_add(s.splat(x), dv, *v);
            }
            if (mm + 1) % SUM_BLOCK == 0 || mm + 1 == m {
                let first = mm < SUM_BLOCK;
                fold_block(s, &mut acc, c, (n, n0, w), rows, first);
                if let Some(db) = db.as_deref_mut() {
                    fold_block(s, &mut sum, db, (0, n0, w), 1, first);
                }
            }
        }
        if m == 0 {
            fold_block(s, &mut acc, c, (n, n0, w), rows, true);
            if let Some(db) = db.as_deref_mut() {
                fold_block(s, &mut sum, db, (0, n0, w), 1, true);
            }
        }
    }
}

/// Whether C is a multiple of 16, so that each 16-column block of a patch row is one kernel
/// tap's channels. Then the backward needs no patch matrix: dW reads the rows of A straight
/// from x's pixels (see [`tap_columns_times_matrix`]), and dx gets each block of dy W as soon
/// as it is computed, without a dA matrix (see [`rows_times_matrix_into_image`]). The forward
/// keeps no patches for it, only x.
fn whole_tap_blocks(g: &ConvGeom) -> bool {
    g.c.is_multiple_of(LANES)
}

/// Whether dx skips the dA matrix ([`rows_times_matrix_into_image`]): whole tap blocks, and
/// the output channels fit one vector (the dy block's fixed stride of 16).
fn dx_into_image(g: &ConvGeom) -> bool {
    whole_tap_blocks(g) && g.oc <= LANES
}

/// For each output pixel o of a sample and kernel tap t = ki*KW + kj: the offset in the
/// sample's x of the input pixel it reads, or `usize::MAX` in the padding. Indexed o*KH*KW + t.
/// Made once per geometry and thread, then reused.
fn pixel_taps(g: &ConvGeom) -> Rc<[usize]> {
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

/// dx += row2im(dy W) for one block of 16 output pixels m0.. (rows < `rows` real), without the
/// dA matrix: the products of [`rows_times_matrix`] (dy rows `blk` of stride BS, times Wr), each
/// 16-column result added straight into the input pixel it belongs to (`pix`, from
/// [`pixel_taps`]). Taps run in reverse order, so every dx value receives its terms in the order
/// of row2im (output pixels ascending: of two pixels of a block that feed one input pixel, the
/// earlier one does so through the later tap), and the result has the same bits.
#[inline(always)]
fn rows_times_matrix_into_image<S: Simd, const BS: usize>(
    s: S,
    g: &ConvGeom,
    (blk, wr): (&[f32], &[f32]),
    pix: &[usize],
    (m0, rows): (usize, usize),
    dx: &mut [f32],
) {
    let (c, ckk, oc, kk) = (g.c, g.ckk(), g.oc, g.kh * g.kw);
    assert!(
        rows > 0 && blk.len() >= MR * BS && BS >= oc && wr.len() >= oc * ckk,
        "rows_times_matrix_into_image: block or weights too short"
    );
    // Per row: its sample's offset in dx, and where its taps start in `pix`.
    let at: [(usize, usize); MR] = std::array::from_fn(|r| {
        let m = m0 + r.min(rows - 1);
        ((m / g.ohw()) * g.in_size(), (m % g.ohw()) * kk)
    });
    for t in (0..kk).rev() {
        for cb in (0..c).step_by(LANES) {
            let n0 = t * c + cb;
            if S::ROWS >= MR {
                into_image_rows::<S, BS, MR>(s, (blk, wr), (oc, ckk, n0), (&at, 0, rows), (pix, t, cb), dx);
            } else {
                // GROUP rows at a time, in order: each dx value gets its terms in the same order.
                for r0 in (0..rows).step_by(GROUP) {
                    into_image_rows::<S, BS, GROUP>(s, (blk, wr), (oc, ckk, n0), (&at, r0, rows), (pix, t, cb), dx);
                }
            }
        }
    }
}

/// One tap and 16-channel block of [`rows_times_matrix_into_image`], for the G rows from r0
/// (those below `rows` stored).
#[inline(always)]
fn into_image_rows<S: Simd, const BS: usize, const G: usize>(
    s: S,
    (blk, wr): (&[f32], &[f32]),
    (oc, ckk, n0): (usize, usize, usize),
    (at, r0, rows): (&[(usize, usize); MR], usize, usize),
    (pix, t, cb): (&[usize], usize, usize),
    dx: &mut [f32],
) {
    assert!(
        r0 + G <= MR && blk.len() >= MR * BS && BS >= oc,
        "into_image_rows: block too short"
    );
    let mut acc = [s.splat(0.0); G];
    for p in 0..oc {
        let bv = s.load(&wr[p * ckk + n0..], LANES);
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: (r0 + r) * BS + p < MR * BS <= blk.len(), as r0 + G <= MR and p < oc <= BS
            // (asserted above).
            let av = unsafe { *blk.get_unchecked((r0 + r) * BS + p) };
            *acc = s.mul_add(s.splat(av), bv, *acc);
        }
    }
    for (&(base, first), v) in at[r0..].iter().zip(&acc).take(rows - r0) {
        let o = pix[first + t];
        if o != usize::MAX {
            let d = &mut dx[base + o + cb..][..LANES];
            s.store(d, LANES, s.add(s.load(d, LANES), *v));
        }
    }
}

/// Forward of one chunk: A = im2row(x), y (M, OC) = A Wt + bias.
struct ForwardChunk<'a> {
    g: &'a ConvGeom,
    relu: bool,
    x: &'a [f32],
    wt: &'a [f32],
    bias: &'a [f32],
    a: &'a mut [f32],
    y: &'a mut [f32],
}

impl Kernel for ForwardChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let ForwardChunk {
            g,
            relu,
            x,
            wt,
            bias,
            a,
            y,
        } = self;
        let (ckk, oc, l) = (g.ckk(), g.oc, patch_stride(g.ckk()));
        let m_total = y.len() / oc;
        if uses_planes(g) {
            fill_planes(s, g, x, a);
            let taps = Taps::for_chunk(g);
            let base = taps.bases(m_total);
            for (m0, yb) in (0..m_total).step_by(MR).zip(y.chunks_mut(MR * oc)) {
                let rows = MR.min(m_total - m0);
                // Rows past the end repeat the last pixel; they are computed, not stored.
                let rb: [usize; MR] = std::array::from_fn(|r| base[m0 + r.min(rows - 1)]);
                taps_times_matrix(s, a, (&rb, &taps.koff), (ckk, oc), wt, oc, bias, yb, (rows, relu));
            }
            return;
        }
        im2row(s, g, x, l, a);
        for m0 in (0..m_total).step_by(MR) {
            let (ab, yb, rows) = (&a[m0 * l..], &mut y[m0 * oc..], MR.min(m_total - m0));
            match l {
                16 => block_times_matrix::<S, 16>(s, ab, l, (ckk, oc), wt, bias, yb, (rows, relu)),
                160 => block_times_matrix::<S, 160>(s, ab, l, (ckk, oc), wt, bias, yb, (rows, relu)),
                _ => block_times_matrix::<S, 0>(s, ab, l, (ckk, oc), wt, bias, yb, (rows, relu)),
            }
        }
    }
}

/// Backward of one chunk: dWt (CKK, OC) = A^T dy, dbias = column sums of dy, and with `dx`,
/// dA (M, CKK) = dy Wr then dx = row2im(dA).
struct BackwardChunk<'a> {
    g: &'a ConvGeom,
    a: &'a [f32],
    dy: &'a [f32],
    /// With a fused ReLU: the forward's output, so that dy is first masked to where y > 0.
    y: Option<&'a [f32]>,
    wr: &'a [f32],
    dwt: &'a mut [f32],
    db: &'a mut [f32],
    dx: Option<(&'a mut [f32], &'a mut [f32])>,
}

impl Kernel for BackwardChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let BackwardChunk {
            g,
            a,
            dy,
            y,
            wr,
            dwt,
            db,
            dx,
        } = self;
        let (ckk, oc, l) = (g.ckk(), g.oc, patch_stride(g.ckk()));
        if uses_planes(g) && ckk <= MR && dx.is_none() {
            // One pass over dy: the ReLU mask, the bias and the weight gradients together.
            let t = Taps::for_chunk(g);
            let koff: &[usize; MR] = t.koff[..MR].try_into().expect("16 offsets");
            let base = t.bases(dy.len() / oc);
            taps_columns_times_matrix(s, a, (base, koff), oc, (dy, y), dwt, ckk, Some(db));
            return;
        }
        let mut masked = y.map(|y| {
            let mut m = pool::take(dy.len());
            for ((mv, dv), yv) in m.chunks_mut(LANES).zip(dy.chunks(LANES)).zip(y.chunks(LANES)) {
                let n = mv.len();
                s.store(mv, n, s.pass_where_positive(s.load(yv, n), s.load(dv, n)));
            }
            m
        });
        let dy: &[f32] = masked.as_deref().unwrap_or(dy);
        let m_total = dy.len() / oc;
        let taps = uses_planes(g).then(|| Taps::for_chunk(g));
        let pix = whole_tap_blocks(g).then(|| pixel_taps(g));
        for k0 in (0..ckk).step_by(MR) {
            let rows = MR.min(ckk - k0);
            let dwb = &mut dwt[k0 * oc..];
            if let Some(pix) = &pix {
                let (t, cb) = (k0 / g.c, k0 % g.c);
                tap_columns_times_matrix(s, g, (a, pix), (m_total, t, cb), dy, dwb);
                continue;
            }
            match &taps {
                Some(t) => {
                    let koff: &[usize; MR] = t.koff[k0..][..MR].try_into().expect("16 offsets");
                    taps_columns_times_matrix(s, a, (t.bases(m_total), koff), oc, (dy, None), dwb, rows, None);
                }
                None => columns_times_matrix(s, a, l, (m_total, k0, oc), dy, oc, dwb, oc, rows),
            }
        }
        for oc0 in (0..oc).step_by(LANES) {
            let w = LANES.min(oc - oc0);
            let mut acc = [s.splat(0.0)];
            for m in 0..m_total {
                acc[0] = s.add(acc[0], s.load(&dy[m * oc + oc0..], w));
                if (m + 1) % SUM_BLOCK == 0 || m + 1 == m_total {
                    fold_block(s, &mut acc, db, (0, oc0, w), 1, m < SUM_BLOCK);
                }
            }
            if m_total == 0 {
                fold_block(s, &mut acc, db, (0, oc0, w), 1, true);
            }
        }
        let Some((dx, da)) = dx else {
            if let Some(m) = masked.take() {
                pool::recycle(m);
            }
            return;
        };
        // dy rows copied 16 at a time to a block of fixed stride (output channels padded).
        let ocp = oc.next_multiple_of(LANES);
        let mut block = vec![0.0f32; MR * ocp];
        // With dx into the image: the tap offsets (pix is made for every whole-tap layer).
        let direct = pix.filter(|_| dx_into_image(g));
        if direct.is_some() {
            zero(s, dx);
        }
        for m0 in (0..m_total).step_by(MR) {
            let rows = MR.min(m_total - m0);
            for r in 0..MR {
                let dst = &mut block[r * ocp..][..oc];
                if r < rows {
                    copy(s, &dy[(m0 + r) * oc..][..oc], dst);
                } else {
                    zero(s, dst);
                }
            }
            if let Some(pix) = &direct {
                rows_times_matrix_into_image::<S, LANES>(s, g, (&block, wr), pix, (m0, rows), dx);
                continue;
            }
            let dab = &mut da[m0 * l..];
            match ocp {
                16 => rows_times_matrix::<S, 16, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false)),
                _ => rows_times_matrix::<S, 0, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false)),
            }
        }
        if direct.is_none() {
            row2im(s, g, da, l, dx);
        }
        if let Some(m) = masked.take() {
            pool::recycle(m);
        }
    }
}

/// The values of `x` (N, C, H, W) stored channels-last: borrowed when they already are (or
/// C = 1), else a converted copy.
fn as_nhwc<'a>(g: &ConvGeom, x: &'a [f32], x_nchw: bool) -> std::borrow::Cow<'a, [f32]> {
    if !x_nchw || g.c == 1 {
        return std::borrow::Cow::Borrowed(x);
    }
    let mut out = vec![0.0; x.len()];
    nchw_to_nhwc(x, (x.len() / g.in_size(), g.c, g.h, g.w), &mut out);
    std::borrow::Cow::Owned(out)
}

/// Forward. x (N, C, H, W) stored channels-last unless `x_nchw`; the weights as Wt (CKK, OC)
/// (see [`weights_k_major`]); bias (OC).
/// Writes y stored (N, OH, OW, OC), or relu(y) with `relu`. With `keep_patches`, returns the
/// patches of all chunks, one after another, for the backward; except for `whole_tap_blocks`
/// layers, whose backward reads x instead (see [`saved_for_backward`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward<S: Simd>(
    s: S,
    g: &ConvGeom,
    x: &[f32],
    x_nchw: bool,
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (keep_patches, relu): (bool, bool),
) -> Option<Pooled> {
    let x = as_nhwc(g, x, x_nchw);
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0.0; g.oc];
            &zeros
        }
    };
    let n = x.len() / g.in_size();
    let run = |xc: &[f32], yc: &mut [f32], a: &mut [f32]| {
        s.vectorize(ForwardChunk {
            g,
            relu,
            x: xc,
            wt,
            bias,
            a,
            y: yc,
        });
    };
    let xs = x.chunks(CHUNK * g.in_size());
    let ys = y.chunks_mut(CHUNK * g.out_size());
    let chunk_a = chunk_patch_len(g, CHUNK);
    if keep_patches && !whole_tap_blocks(g) {
        let total = (n / CHUNK) * chunk_a + chunk_patch_len(g, n % CHUNK);
        let mut all = pool::take(total);
        let work: Vec<_> = xs.zip(ys).zip(all.chunks_mut(chunk_a)).collect();
        for_each_chunk(work, |((xc, yc), a)| run(xc, yc, a));
        Some(Pooled(all))
    } else {
        let work: Vec<_> = xs.zip(ys).collect();
        for_each_chunk(work, |(xc, yc)| {
            let mut a = pool::take(chunk_patch_len(g, xc.len() / g.in_size()));
            run(xc, yc, &mut a);
            pool::recycle(a);
        });
        None
    }
}

/// What [`conv2d_backward`] reads: the patches [`conv2d_forward`] kept, or for
/// `whole_tap_blocks` layers x stored channels-last.
pub fn saved_for_backward<'a>(
    g: &ConvGeom,
    patches: Option<&'a [f32]>,
    x: &'a [f32],
    x_nchw: bool,
) -> std::borrow::Cow<'a, [f32]> {
    match patches {
        Some(p) => std::borrow::Cow::Borrowed(p),
        None => {
            assert!(whole_tap_blocks(g), "conv2d: patches kept when the graph is recorded");
            as_nhwc(g, x, x_nchw)
        }
    }
}

/// Backward. From what the forward saved (see [`saved_for_backward`]) and dy stored
/// (N, OH, OW, OC) (with a fused ReLU, also its output y, to mask dy where y <= 0): dw
/// (OC, C, KH, KW) and dbias (OC), overwritten, and dx when asked for (stored (N, C, H, W) if
/// `x_nchw`, else channels-last).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<S: Simd>(
    s: S,
    g: &ConvGeom,
    patches: &[f32],
    x_nchw: bool,
    w: &[f32],
    (dy, y): (&[f32], Option<&[f32]>),
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: &mut [f32],
) {
    let (ckk, oc, l) = (g.ckk(), g.oc, patch_stride(g.ckk()));
    let wr = weights_oc_major(g, w);
    let n = dy.len() / g.out_size();
    let part_len = ckk * oc + oc;
    let mut partials = vec![0.0f32; n.div_ceil(CHUNK) * part_len];
    // An NCHW input with several channels gets its gradient in channels-last first.
    let (mut dx_direct, mut dx_tmp) = match dx {
        Some(d) if x_nchw && g.c > 1 => {
            let t = pool::take(d.len());
            (None, Some((d, t)))
        }
        other => (other, None),
    };
    let per_chunk = |a: &[f32], (dyc, yc): (&[f32], Option<&[f32]>), dxc: Option<&mut [f32]>, part: &mut [f32]| {
        let (dwt, db) = part.split_at_mut(ckk * oc);
        let b = dyc.len() / g.out_size();
        let da_len = if dx_into_image(g) { 0 } else { patch_rows(g, b) * l };
        let mut da = dxc.is_some().then(|| pool::take(da_len));
        let dx = dxc.zip(da.as_deref_mut());
        s.vectorize(BackwardChunk {
            g,
            a,
            dy: dyc,
            y: yc,
            wr: &wr,
            dwt,
            db,
            dx,
        });
        if let Some(da) = da {
            pool::recycle(da);
        }
    };
    let as_ = patches.chunks(chunk_saved_len(g, CHUNK));
    let ys: Vec<Option<&[f32]>> = match y {
        Some(y) => y.chunks(CHUNK * g.out_size()).map(Some).collect(),
        None => vec![None; n.div_ceil(CHUNK)],
    };
    let dys = dy.chunks(CHUNK * g.out_size()).zip(ys);
    let parts = partials.chunks_mut(part_len);
    let dx_target: Option<&mut [f32]> = match (&mut dx_direct, &mut dx_tmp) {
        (Some(d), _) => Some(&mut **d),
        (None, Some((_, t))) => Some(&mut t[..]),
        (None, None) => None,
    };
    match dx_target {
        Some(dxt) => {
            let work: Vec<_> = as_
                .zip(dys)
                .zip(dxt.chunks_mut(CHUNK * g.in_size()))
                .zip(parts)
                .collect();
            for_each_chunk(work, |(((a, d), dxc), part)| per_chunk(a, d, Some(dxc), part));
        }
        None => {
            let work: Vec<_> = as_.zip(dys).zip(parts).collect();
            for_each_chunk(work, |((a, d), part)| per_chunk(a, d, None, part));
        }
    }
    if let Some((d, t)) = dx_tmp {
        nhwc_to_nchw(&t, (n, g.c, g.h, g.w), d);
        pool::recycle(t);
    }
    // The partials summed in chunk order (each value 0 + p0 + p1 + ...), then laid out as
    // (OC, C, KH, KW).
    let mut sum = vec![0.0f32; part_len];
    for part in partials.chunks(part_len) {
        sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    let (pw, pb) = sum.split_at(ckk * oc);
    for o in 0..oc {
        for c in 0..g.c {
            for t in 0..g.kh * g.kw {
                dw[(o * g.c + c) * g.kh * g.kw + t] = pw[(t * g.c + c) * oc + o];
            }
        }
    }
    dbias.copy_from_slice(pb);
}

/// `F.conv2d(x, weight, bias, stride, padding)`: x (N, C, H, W), weight (OC, C, KH, KW).
/// The result is stored channels-last (see the module header); x may be stored either way.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Tensor {
    conv2d_op(x, weight, bias, (stride, padding), false)
}

/// `F.relu(F.conv2d(x, weight, bias, stride, padding))` as one op: the ReLU is applied as the
/// results are stored, and its backward masks dy inside the convolution's backward. Values and
/// gradients are bit-identical to the two ops, with two fewer passes over the activations.
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Tensor {
    conv2d_op(x, weight, bias, (stride, padding), true)
}

fn conv2d_op(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (stride, padding): (usize, usize),
    relu: bool,
) -> Tensor {
    let (xs, ws) = (x.shape(), weight.shape());
    assert!(
        xs.len() == 4 && ws.len() == 4,
        "conv2d: x {xs:?} and weight {ws:?} must be 4-d"
    );
    assert_eq!(
        xs[1], ws[1],
        "conv2d: x has {} channels, weight expects {}",
        xs[1], ws[1]
    );
    if let Some(b) = bias {
        assert_eq!(b.shape(), &[ws[0]], "conv2d: bias shape");
    }
    let g = ConvGeom::new((xs[1], xs[2], xs[3]), (ws[0], ws[2], ws[3]), stride, padding);
    let n = xs[0];
    let x_nchw = !x.is_channels_last();
    let mut y = pool::take(n * g.out_size());
    let needs_graph = crate::tensor::is_grad_enabled()
        && (x.requires_grad() || weight.requires_grad() || bias.is_some_and(|b| b.requires_grad()));
    let name = if relu { "conv2d_relu" } else { "conv2d" };
    let x_version = x.version();
    let patches = profile::time(
        || profile::label(name, xs),
        Phase::Forward,
        || {
            let bias_data = bias.map(|b| b.data());
            let b = bias_data.as_deref().map(|v| &v[..]);
            let wt = weight.derived("conv2d.k_major", |w| weights_k_major(&g, w));
            simd_dispatch!(conv2d_forward(
                &g,
                &x.data(),
                x_nchw,
                &wt,
                b,
                &mut y,
                (needs_graph, relu)
            ))
        },
    );
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Tensor::from_op_in_layout(
        y,
        &[n, g.oc, g.oh, g.ow],
        true,
        name,
        inputs,
        Box::new(move |inp, out, dy| {
            // Layers that keep no patches read x again: it must be the x of the forward.
            assert!(
                patches.is_some() || inp[0].version() == x_version,
                "conv2d: the input was modified in place after the forward, which the backward needs"
            );
            let xd = inp[0].data();
            let patches = saved_for_backward(&g, patches.as_deref(), &xd, x_nchw);
            let mut dx = inp[0].requires_grad().then(|| pool::take(inp[0].numel()));
            let mut dw = vec![0.0f32; inp[1].numel()];
            let mut db = vec![0.0f32; g.oc];
            let (wd, yd) = (inp[1].data(), out.data());
            let y = relu.then_some(&yd[..]);
            simd_dispatch!(conv2d_backward(
                &g,
                &patches,
                x_nchw,
                &wd,
                (dy, y),
                dx.as_deref_mut(),
                &mut dw,
                &mut db
            ));
            let mut grads = vec![dx, Some(dw)];
            if inp.len() == 3 {
                grads.push(Some(db));
            }
            grads
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};
    use crate::ops::simd::{Backend, on_each_backend};

    /// Plain f64 convolution: the reference.
    fn naive(x: &[f64], w: &[f64], b: Option<&[f64]>, n: usize, g: &ConvGeom) -> Vec<f64> {
        let mut y = vec![0.0; n * g.out_size()];
        for s in 0..n {
            for o in 0..g.oc {
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let mut acc = b.map_or(0.0, |b| b[o]);
                        for c in 0..g.c {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let ih = (i * g.stride + ki) as isize - g.padding as isize;
                                    let iw = (j * g.stride + kj) as isize - g.padding as isize;
                                    if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                        continue;
                                    }
                                    let xv = x[((s * g.c + c) * g.h + ih as usize) * g.w + iw as usize];
                                    acc += xv * w[((o * g.c + c) * g.kh + ki) * g.kw + kj];
                                }
                            }
                        }
                        y[((s * g.oc + o) * g.oh + i) * g.ow + j] = acc;
                    }
                }
            }
        }
        y
    }

    fn gradcheck_case(
        n: usize,
        (c, h, w): (usize, usize, usize),
        (oc, k): (usize, usize),
        s: usize,
        p: usize,
        bias: bool,
        x_grad: bool,
    ) {
        let g = ConvGeom::new((c, h, w), (oc, k, k), s, p);
        let mut inputs = vec![
            input(random(n * c * h * w, 1), &[n, c, h, w], x_grad),
            input(random(oc * c * k * k, 2), &[oc, c, k, k], true),
        ];
        if bias {
            inputs.push(input(random(oc, 3), &[oc], true));
        }
        on_each_backend("conv2d gradcheck", |_| {
            check(
                &inputs,
                |t| conv2d(&t[0], &t[1], t.get(2), s, p),
                |v| naive(&v[0], &v[1], v.get(2).map(|b| &b[..]), n, &g),
                1e-4,
            );
        });
    }

    #[test]
    fn gradients_match_finite_differences_stride2_pad1() {
        // More samples than CHUNK, so several chunks and a partial one are summed.
        gradcheck_case(11, (2, 7, 6), (3, 3), 2, 1, true, true);
    }

    #[test]
    fn gradients_match_finite_differences_other_geometries() {
        gradcheck_case(3, (1, 5, 5), (2, 3), 1, 0, true, true);
        gradcheck_case(2, (3, 4, 4), (2, 2), 2, 0, false, true);
        gradcheck_case(9, (1, 6, 6), (4, 3), 2, 1, true, false);
    }

    /// relu(conv2d) fused or as two ops: (y, dw, db, dx if x requires grad), as bits. The
    /// input is made channels-last by a first layer when it has several channels, as in the model.
    fn relu_of_conv_bits(fused: bool, (n, c, hw): (usize, usize, usize), x_grad: bool) -> [Vec<u32>; 4] {
        let (xv, xs) = (random(n * c * hw * hw, 3), [n, c, hw, hw]);
        let x = if x_grad {
            Tensor::parameter(xv, &xs)
        } else {
            Tensor::from_vec(xv, &xs)
        };
        let w = Tensor::parameter(random(10 * c * 9, 4), &[10, c, 3, 3]);
        let b = Tensor::parameter(random(10, 5), &[10]);
        let x1 = if c > 1 {
            conv2d(&x, &Tensor::parameter(random(c * c, 6), &[c, c, 1, 1]), None, 1, 0)
        } else {
            x.clone()
        };
        let y = if fused {
            conv2d_relu(&x1, &w, Some(&b), 2, 1)
        } else {
            crate::ops::relu(&conv2d(&x1, &w, Some(&b), 2, 1))
        };
        let r: Vec<f32> = (0..y.numel()).map(|i| (i as f32 * 0.7).sin()).collect();
        y.contiguous().backward_with(r);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let yb = bits(y.to_vec());
        assert!(yb.contains(&0) && yb.iter().any(|&v| v != 0), "some units off, some on");
        [
            yb,
            bits(w.grad().unwrap()),
            bits(b.grad().unwrap()),
            bits(x.grad().unwrap_or_default()),
        ]
    }

    #[test]
    fn fused_relu_is_bit_identical_to_relu_of_conv() {
        // A 16-channel layer (patch matrix), and a 1-channel first layer (planes, the one-pass
        // backward that masks dy, sums dbias and dw together), over several chunks.
        on_each_backend("conv2d fused relu", |b| {
            for (shape, x_grad) in [((9, 16, 7), true), ((11, 1, 12), false), ((3, 1, 12), true)] {
                assert_eq!(
                    relu_of_conv_bits(true, shape, x_grad),
                    relu_of_conv_bits(false, shape, x_grad),
                    "{b} {shape:?}"
                );
            }
        });
    }

    /// Runs the forward and backward kernels with backend `s`: (y, dw, db, dx), y and dx in
    /// logical (N, C, H, W) order.
    fn kernels<S: crate::ops::simd::Simd>(
        s: S,
        g: &ConvGeom,
        n: usize,
        (x, w, b, dy): (&[f32], &[f32], &[f32], &[f32]),
        relu: bool,
    ) -> [Vec<f32>; 4] {
        let wt = weights_k_major(g, w);
        let mut y = vec![0.0; n * g.out_size()];
        let kept = conv2d_forward(s, g, x, true, &wt, Some(b), &mut y, (true, relu));
        let kept = saved_for_backward(g, kept.as_deref(), x, true);
        let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; g.oc], vec![0.0; x.len()]);
        let yk = relu.then_some(&y[..]);
        conv2d_backward(s, g, &kept, true, w, (dy, yk), Some(&mut dx), &mut dw, &mut db);
        let mut y_nchw = vec![0.0; y.len()];
        crate::tensor::nhwc_to_nchw(&y, (n, g.oc, g.oh, g.ow), &mut y_nchw);
        [y_nchw, dw, db, dx]
    }

    /// Every backend against plain f64 loops (forward) and against each other (everything):
    /// the vector backends (all fused multiply-add, same order) give the same bits, the
    /// portable path (two roundings) is close. On the tutorial's geometries and on ones that
    /// take the kernels' other branches: more than 160 patch values (run-time row stride), more
    /// than 16 output channels (two vector blocks), several input channels in (N, C, H, W)
    /// order, a fused ReLU.
    #[test]
    fn every_backend_agrees_with_the_reference_and_the_others() {
        let cases = [
            (3, (1, 28, 28), (16, 3), 2, 1),
            (9, (16, 14, 14), (16, 3), 2, 1),
            (9, (16, 7, 7), (10, 3), 2, 1),
            (3, (20, 6, 5), (20, 3), 1, 1),
            (2, (3, 9, 9), (5, 4), 3, 0),
        ];
        for (n, (c, h, w), (oc, k), st, pad) in cases {
            let g = ConvGeom::new((c, h, w), (oc, k, k), st, pad);
            let x = random(n * c * h * w, 1);
            let wv = random(oc * c * k * k, 2);
            let b = random(oc, 3);
            let dy = random(n * g.out_size(), 4);
            let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
            let want = naive(&to64(&x), &to64(&wv), Some(&to64(&b)), n, &g);
            for relu in [false, true] {
                let mut results: Vec<(Backend, [Vec<f32>; 4])> = Vec::new();
                crate::for_each_backend!(|backend, s| {
                    results.push((backend, kernels(s, &g, n, (&x, &wv, &b, &dy), relu)));
                });
                for (backend, p) in &results {
                    for (i, (a, r)) in p[0].iter().zip(&want).enumerate() {
                        let r = if relu { r.max(0.0) } else { *r };
                        assert!(
                            (*a as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                            "{backend} {g:?} y[{i}]: {a} vs {r}"
                        );
                    }
                }
                let (first, p0) = &results[0];
                for (backend, p) in &results[1..] {
                    for (name, (pa, va)) in ["y", "dw", "db", "dx"].iter().zip(p.iter().zip(p0)) {
                        if *backend != Backend::Portable {
                            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert_eq!(bits(pa), bits(va), "{g:?} {name}: {backend} vs {first} bits");
                        }
                        for (i, (a, b)) in pa.iter().zip(va).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{g:?} {name}[{i}]: {backend} {a} vs {first} {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "modified in place after the forward")]
    fn backward_refuses_an_input_changed_since_the_forward() {
        // 16 input channels: the backward reads x again instead of kept patches.
        let x = Tensor::parameter(random(2 * 16 * 5 * 5, 1), &[2, 16, 5, 5]);
        let w = Tensor::parameter(random(4 * 16 * 9, 2), &[4, 16, 3, 3]);
        let y = conv2d(&x, &w, None, 2, 1);
        x.data_mut()[0] += 1.0;
        y.contiguous().backward_with(vec![1.0; y.numel()]);
    }

    /// dx through dA and row2im, and straight into the image: the same bits, for the
    /// tutorial's two 16-channel geometries and one with an odd size and a partial last block.
    #[test]
    fn dx_into_image_is_bit_identical_to_row2im() {
        fn both<S: Simd>(s: S, g: &ConvGeom, n: usize) -> (Vec<u32>, Vec<u32>) {
            let (ckk, l) = (g.ckk(), patch_stride(g.ckk()));
            let m_total = n * g.ohw();
            let dy = random(m_total * g.oc, 7);
            let wr = weights_oc_major(g, &random(g.oc * ckk, 8));
            let mut block = vec![0.0f32; MR * LANES];
            let mut da = vec![0.0f32; patch_rows(g, n) * l];
            let (mut via_da, mut direct) = (vec![0.0f32; n * g.in_size()], vec![0.0f32; n * g.in_size()]);
            let pix = pixel_taps(g);
            for m0 in (0..m_total).step_by(MR) {
                let rows = MR.min(m_total - m0);
                block.fill(0.0);
                for r in 0..rows {
                    block[r * LANES..][..g.oc].copy_from_slice(&dy[(m0 + r) * g.oc..][..g.oc]);
                }
                let dab = &mut da[m0 * l..];
                rows_times_matrix::<S, 0, MR>(s, &block, LANES, (g.oc, ckk), &wr, ckk, None, dab, l, (rows, false));
                rows_times_matrix_into_image::<S, LANES>(s, g, (&block, &wr), &pix, (m0, rows), &mut direct);
            }
            row2im(s, g, &da, l, &mut via_da);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect();
            (bits(via_da), bits(direct))
        }
        let cases = [
            (3, (16, 14, 14), (16, 3, 3), 2, 1),
            (2, (16, 7, 7), (10, 3, 3), 2, 1),
            (1, (32, 5, 5), (3, 3, 3), 2, 1),
            (2, (16, 6, 9), (5, 3, 2), 1, 0),
            (1, (16, 7, 5), (7, 2, 3), 3, 2),
        ];
        for (n, chw, kernel, stride, pad) in cases {
            let g = ConvGeom::new(chw, kernel, stride, pad);
            assert!(dx_into_image(&g));
            crate::for_each_backend!(|backend, s| {
                let (a, b) = both(s, &g, n);
                assert!(a.iter().any(|&v| v != 0));
                assert_eq!(a, b, "{backend} {g:?}");
            });
        }
    }

    #[test]
    fn gradients_match_finite_differences_wide_layers() {
        // 20 channels: 180 patch values (run-time stride) and 20 outputs (two vector blocks).
        gradcheck_case(2, (20, 4, 4), (20, 3), 1, 1, true, true);
    }

    #[test]
    fn gradients_match_finite_differences_16_channel_and_plane_paths() {
        // 16 input channels: dW from x and dx straight into the image; stride 1, no padding,
        // a non-square image.
        gradcheck_case(3, (16, 5, 6), (4, 3), 1, 0, true, true);
        // 16 input channels and 20 outputs: dW from x, dx through dA and row2im.
        gradcheck_case(2, (16, 5, 5), (20, 3), 2, 1, true, true);
        // One channel and a 5x5 kernel: planes with 25 patch values (two column blocks), dx.
        gradcheck_case(2, (1, 7, 7), (3, 5), 1, 2, true, true);
    }

    /// FNV-1a over the bits of y, dw, db and dx of the tutorial's three layers (fused ReLU,
    /// 11 samples: a full chunk and a partial one), on the active backend.
    fn tutorial_layer_hashes() -> Vec<u64> {
        let hash = |v: &[f32]| {
            v.iter().fold(0xcbf29ce484222325u64, |h, x| {
                (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
            })
        };
        let mut out = Vec::new();
        for (i, (c, hw, oc)) in [(1, 28, 16), (16, 14, 16), (16, 7, 10)].into_iter().enumerate() {
            let n = 11;
            let seed = 10 * i as u64;
            let x0 = Tensor::parameter(random(n * c * hw * hw, seed + 1), &[n, c, hw, hw]);
            // The model's layers 2 and 3 get channels-last input from the layer before.
            let x = if c > 1 {
                conv2d(
                    &x0,
                    &Tensor::parameter(random(c * c, seed + 2), &[c, c, 1, 1]),
                    None,
                    1,
                    0,
                )
            } else {
                x0.clone()
            };
            let w = Tensor::parameter(random(oc * c * 9, seed + 3), &[oc, c, 3, 3]);
            let b = Tensor::parameter(random(oc, seed + 4), &[oc]);
            let y = conv2d_relu(&x, &w, Some(&b), 2, 1);
            let r = random(y.numel(), seed + 5);
            y.contiguous().backward_with(r);
            for v in [y.to_vec(), w.grad().unwrap(), b.grad().unwrap(), x0.grad().unwrap()] {
                out.push(hash(&v));
            }
        }
        out
    }

    /// The tutorial's three layers give the recorded bits on every backend. The vector
    /// backends (AVX-512, AVX2, NEON: fused multiply-add, same order) share one set of hashes,
    /// the portable path has its own. Recorded by running this function: y and dx as recorded
    /// on commit 1d974c3 (AVX-512); dw and db of conv1 and conv2 re-recorded when the
    /// reductions over pixels became blocked sums (SUM_BLOCK; conv3's 128 pixels per chunk are
    /// one block, so its hashes did not change).
    #[test]
    fn tutorial_layers_bit_identical_to_the_recorded_kernels() {
        let fused: [u64; 12] = [
            0x3c15e7ca63b85671,
            0x6f33f5ddc860f1d6,
            0x7428ad15d51702ea,
            0x460cf66e7fb86d64,
            0xe3a57461c49368f1,
            0xe67b2e66bf45efa0,
            0x5f7ca4ad2b5774ef,
            0x229e9714d8576d05,
            0x2261e8be9b297947,
            0x06258e93d932304e,
            0x01871b03497f6158,
            0x00004017cc718a5d,
        ];
        let portable: [u64; 12] = [
            0x0cba999a4eb6bb93,
            0x99d890da6bcdd489,
            0x7428ad15d51702ea,
            0xcd666c2d13f8db0d,
            0x55f9f83e05fc240f,
            0xaed6d1ed516ea99f,
            0x5f7ca4ad2b5774ef,
            0x23cb1344a6ce8954,
            0xcb4cc3d261aa0467,
            0x535efbadf0d52ad5,
            0x01871b03497f6158,
            0xd977983b436e8990,
        ];
        on_each_backend("conv2d tutorial layer hashes", |b| {
            let want = if b == Backend::Portable { portable } else { fused };
            let got = tutorial_layer_hashes();
            assert_eq!(
                got, want,
                "{b}: y, dw, db, dx of conv1, conv2, conv3 (got {got:#018x?})"
            );
        });
    }

    #[test]
    fn tutorial_shapes_28_14_7_4() {
        let x = Tensor::zeros(&[2, 1, 28, 28]);
        let mk = |oc, c| Tensor::zeros(&[oc, c, 3, 3]);
        let y1 = conv2d(&x, &mk(16, 1), None, 2, 1);
        let y2 = conv2d(&y1, &mk(16, 16), None, 2, 1);
        let y3 = conv2d(&y2, &mk(10, 16), None, 2, 1);
        assert_eq!(y1.shape(), &[2, 16, 14, 14]);
        assert_eq!(y2.shape(), &[2, 16, 7, 7]);
        assert_eq!(y3.shape(), &[2, 10, 4, 4]);
    }

    /// Golden values written by `scripts/torch_golden.py` (PyTorch 2.15, float32):
    /// x = arange(2*2*5*5)/50 - 1 as (2,2,5,5), w = sin(arange(3*2*3*3)) as (3,2,3,3),
    /// b = [0.1, -0.2, 0.3]; y = F.conv2d(x, w, b, stride=2, padding=1);
    /// L = (y * cos(arange(y.numel())).view_as(y)).sum(); L.backward().
    #[test]
    fn matches_pytorch_golden_values() {
        on_each_backend("conv2d pytorch golden", |_| golden_case());
    }

    fn golden_case() {
        let x: Vec<f32> = (0..100).map(|i| i as f32 / 50.0 - 1.0).collect();
        let w: Vec<f32> = (0..54).map(|i| (i as f32).sin()).collect();
        let xt = Tensor::parameter(x, &[2, 2, 5, 5]);
        let wt = Tensor::parameter(w, &[3, 2, 3, 3]);
        let bt = Tensor::parameter(vec![0.1, -0.2, 0.3], &[3]);
        let y = conv2d(&xt, &wt, Some(&bt), 2, 1);
        assert_eq!(y.shape(), &[2, 3, 3, 3]);
        let r: Vec<f32> = (0..y.numel()).map(|i| (i as f32).cos()).collect();
        y.contiguous().backward_with(r);
        let close = |got: &[f32], want: &[f32], what: &str| {
            assert_eq!(got.len(), want.len(), "{what}");
            for (k, (a, b)) in got.iter().zip(want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}[{k}]: {a} vs torch {b}");
            }
        };
        close(&y.to_vec(), &golden::Y, "y");
        close(&bt.grad().unwrap(), &golden::DB, "db");
        close(&wt.grad().unwrap(), &golden::DW, "dw");
        close(&xt.grad().unwrap(), &golden::DX, "dx");
    }

    #[allow(clippy::excessive_precision)]
    mod golden {
        include!("../../tests/golden/conv2d.rs");
    }
}
