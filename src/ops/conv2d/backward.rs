//! conv2d's backward: per chunk of samples, from what the forward saved (patches, or x for
//! whole-tap layers) and dy: dWt (CKK, OC) = A^T dy, dbias = column sums of dy (only for a
//! convolution with a bias: `bncnn`'s have none, their batch norms shift), and dx from dA
//! (M, CKK) = dy Wr (through row2im, or straight into the image). Weight gradients are summed
//! one partial per chunk, in chunk order.
//!
//! Shapes (see the module header): dy stored (N, OH, OW, OC), dw (OC, C, KH, KW), dbias (OC),
//! dx (N, C, H, W) stored either way; per chunk of B samples M = B*OHW.

use super::ConvGeom;
use super::forward::as_nhwc;
use super::kernels::{
    MR, SUM_BLOCK, columns_times_matrix, fold_block, rows_times_matrix, rows_times_matrix_into_image,
    tap_columns_times_matrix, taps_columns_times_matrix,
};
use super::layout::{
    Taps, WeightOrder, copy, for_each_weight, patch_stride, pixel_taps, row2im, weights_oc_major, zero,
};
use super::plan::Plan;
use crate::ops::simd::{Kernel, LANES, Simd};
use crate::ops::{CHUNK, for_each_chunk};
use crate::tensor::nhwc_to_nchw;
use crate::tensor::pool;
use std::borrow::Cow;

/// Backward of one chunk: dWt (CKK, OC) = A^T dy, with `db` dbias = column sums of dy, and
/// with `dx`, dA (M, CKK) = dy Wr then dx = row2im(dA).
struct BackwardChunk<'a> {
    g: &'a ConvGeom,
    plan: Plan,
    a: &'a [f32],
    dy: &'a [f32],
    /// With a fused ReLU: the forward's output, so that dy is first masked to where y > 0.
    y: Option<&'a [f32]>,
    wr: &'a [f32],
    dwt: &'a mut [f32],
    /// None when the convolution has no bias (its sums would be thrown away).
    db: Option<&'a mut [f32]>,
    dx: Option<(&'a mut [f32], &'a mut [f32])>,
}

impl Kernel for BackwardChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let BackwardChunk {
            g,
            plan,
            a,
            dy,
            y,
            wr,
            dwt,
            db,
            dx,
        } = self;
        let (ckk, oc) = (g.ckk(), g.oc);
        if let (Plan::Planes { single_block: true }, None) = (plan, &dx) {
            // One pass over dy: the ReLU mask, the bias and the weight gradients together.
            let t = Taps::for_chunk(g);
            let koff: &[usize; MR] = t.koff[..MR].try_into().expect("16 offsets");
            let base = t.bases(dy.len() / oc);
            taps_columns_times_matrix(s, a, (base, koff), oc, (dy, y), dwt, ckk, db);
            return;
        }
        let masked = y.map(|y| {
            let mut m = pool::take(dy.len());
            for ((mv, dv), yv) in m.chunks_mut(LANES).zip(dy.chunks(LANES)).zip(y.chunks(LANES)) {
                let n = mv.len();
                s.store(mv, n, s.pass_where_positive(s.load(yv, n), s.load(dv, n)));
            }
            m
        });
        let dy: &[f32] = masked.as_deref().unwrap_or(dy);
        weight_grads(s, g, plan, a, dy, dwt);
        if let Some(db) = db {
            bias_grads(s, oc, dy, db);
        }
        if let Some((dx, da)) = dx {
            input_grads(s, g, plan, (dy, wr), dx, da);
        }
        if let Some(m) = masked {
            pool::recycle(m);
        }
    }
}

/// dWt (CKK, OC) = A^T dy, 16 columns of A at a time, A read as the plan holds it: from the
/// planes, from x's pixels, or from the patch matrix.
#[inline(always)]
fn weight_grads<S: Simd>(s: S, g: &ConvGeom, plan: Plan, a: &[f32], dy: &[f32], dwt: &mut [f32]) {
    let (ckk, oc) = (g.ckk(), g.oc);
    let m_total = dy.len() / oc;
    match plan {
        Plan::Planes { .. } => {
            let t = Taps::for_chunk(g);
            for k0 in (0..ckk).step_by(MR) {
                let (dwb, rows) = (&mut dwt[k0 * oc..], MR.min(ckk - k0));
                let koff: &[usize; MR] = t.koff[k0..][..MR].try_into().expect("16 offsets");
                taps_columns_times_matrix(s, a, (t.bases(m_total), koff), oc, (dy, None), dwb, rows, None);
            }
        }
        Plan::WholeTaps { .. } => {
            let pix = pixel_taps(g);
            for k0 in (0..ckk).step_by(MR) {
                let (t, cb) = (k0 / g.c, k0 % g.c);
                tap_columns_times_matrix(s, g, (a, &pix), (m_total, t, cb), dy, &mut dwt[k0 * oc..]);
            }
        }
        Plan::PatchMatrix => {
            let l = patch_stride(ckk);
            for k0 in (0..ckk).step_by(MR) {
                let (dwb, rows) = (&mut dwt[k0 * oc..], MR.min(ckk - k0));
                columns_times_matrix(s, a, l, (m_total, k0, oc), dy, oc, dwb, oc, rows);
            }
        }
    }
}

/// dbias (OC) = the column sums of dy (M, OC), in blocks of [`SUM_BLOCK`] rows.
#[inline(always)]
fn bias_grads<S: Simd>(s: S, oc: usize, dy: &[f32], db: &mut [f32]) {
    let m_total = dy.len() / oc;
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
}

/// dx (B, H, W, C) from dy (M, OC) and Wr (OC, CKK), 16 output pixels at a time: dA = dy Wr
/// into the dA matrix `da` then dx = row2im(dA), or each block straight into the image.
#[inline(always)]
fn input_grads<S: Simd>(s: S, g: &ConvGeom, plan: Plan, (dy, wr): (&[f32], &[f32]), dx: &mut [f32], da: &mut [f32]) {
    let (ckk, oc, l) = (g.ckk(), g.oc, patch_stride(g.ckk()));
    let m_total = dy.len() / oc;
    // dy rows copied 16 at a time to a block of fixed stride (output channels padded).
    let ocp = oc.next_multiple_of(LANES);
    let mut block = vec![0.0f32; MR * ocp];
    match plan {
        Plan::WholeTaps { dx_into_image: true } => {
            let pix = pixel_taps(g);
            zero(s, dx);
            for m0 in (0..m_total).step_by(MR) {
                let rows = MR.min(m_total - m0);
                dy_block(s, (dy, oc), (m0, rows), &mut block);
                // The block's stride (OC rounded up to 16) as a constant.
                match ocp {
                    16 => rows_times_matrix_into_image::<S, 16>(s, g, (&block, wr), &pix, (m0, rows), dx),
                    32 => rows_times_matrix_into_image::<S, 32>(s, g, (&block, wr), &pix, (m0, rows), dx),
                    48 => rows_times_matrix_into_image::<S, 48>(s, g, (&block, wr), &pix, (m0, rows), dx),
                    _ => rows_times_matrix_into_image::<S, 64>(s, g, (&block, wr), &pix, (m0, rows), dx),
                }
            }
        }
        Plan::Planes { .. } | Plan::WholeTaps { dx_into_image: false } | Plan::PatchMatrix => {
            for m0 in (0..m_total).step_by(MR) {
                let rows = MR.min(m_total - m0);
                dy_block(s, (dy, oc), (m0, rows), &mut block);
                let dab = &mut da[m0 * l..];
                // The block's stride as a constant for the common widths: the 16 rows then sit
                // at constant offsets (a runtime stride costs a register per row).
                match ocp {
                    16 => {
                        rows_times_matrix::<S, 16, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false))
                    }
                    32 => {
                        rows_times_matrix::<S, 32, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false))
                    }
                    64 => {
                        rows_times_matrix::<S, 64, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false))
                    }
                    _ => rows_times_matrix::<S, 0, MR>(s, &block, ocp, (oc, ckk), wr, ckk, None, dab, l, (rows, false)),
                }
            }
            row2im(s, g, da, l, dx);
        }
    }
}

/// Copies dy's rows m0..m0+rows (of OC values) into the first OC values of the rows of
/// `block` (16 rows of stride OC rounded up to 16); the rows past `rows` are zeroed.
#[inline(always)]
fn dy_block<S: Simd>(s: S, (dy, oc): (&[f32], usize), (m0, rows): (usize, usize), block: &mut [f32]) {
    let ocp = oc.next_multiple_of(LANES);
    for r in 0..MR {
        let dst = &mut block[r * ocp..][..oc];
        if r < rows {
            copy(s, &dy[(m0 + r) * oc..][..oc], dst);
        } else {
            zero(s, dst);
        }
    }
}

/// What [`conv2d_backward`] reads: the patches [`conv2d_forward`](super::conv2d_forward) kept,
/// or for whole-tap layers (C a multiple of 16) x stored channels-last.
pub fn saved_for_backward<'a>(g: &ConvGeom, patches: Option<&'a [f32]>, x: &'a [f32], x_nchw: bool) -> Cow<'a, [f32]> {
    match patches {
        Some(p) => Cow::Borrowed(p),
        None => {
            assert!(
                matches!(Plan::for_geometry(g), Plan::WholeTaps { .. }),
                "conv2d: patches kept when the graph is recorded"
            );
            as_nhwc(g, x, x_nchw)
        }
    }
}

/// Backward. From what the forward saved (see [`saved_for_backward`]) and dy stored
/// (N, OH, OW, OC) (with a fused ReLU, also its output y, to mask dy where y <= 0): dw
/// (OC, C, KH, KW) and dbias (OC) when asked for (a convolution with a bias), overwritten, and
/// dx when asked for (stored (N, C, H, W) if `x_nchw`, else channels-last). Without dbias the
/// column sums of dy are not made; dw and dx have the same bits either way.
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
    dbias: Option<&mut [f32]>,
) {
    let (ckk, oc) = (g.ckk(), g.oc);
    let plan = Plan::for_geometry(g);
    let wr = weights_oc_major(g, w);
    let n = dy.len() / g.out_size();
    let with_db = dbias.is_some();
    let part_len = ckk * oc + if with_db { oc } else { 0 };
    // Every value of a partial is stored by its chunk's kernels (the first block of each sum
    // stores, see `fold_block`) before it is read: a pooled buffer, not zeroed.
    let mut partials = pool::take(n.div_ceil(CHUNK) * part_len);
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
        let db = with_db.then_some(db);
        let b = dyc.len() / g.out_size();
        let mut da = dxc.is_some().then(|| pool::take(plan.da_len(g, b)));
        let dx = dxc.zip(da.as_deref_mut());
        s.vectorize(BackwardChunk {
            g,
            plan,
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
    let as_ = patches.chunks(plan.chunk_saved_len(g, CHUNK));
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
    pool::recycle(partials);
    let (pw, pb) = sum.split_at(ckk * oc);
    for_each_weight(g, WeightOrder::KMajor, |i, j| dw[i] = pw[j]);
    if let Some(d) = dbias {
        d.copy_from_slice(pb);
    }
}
