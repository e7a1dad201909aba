//! conv2d's forward: per chunk of samples, the patches (planes, the patch matrix A by im2row,
//! or for whole-tap layers x itself, read through the pixel taps) and y (M, OC) = A Wt + bias,
//! with the ReLU applied as y is stored when fused.
//!
//! Shapes (see the module header): x (N, C, H, W) read channels-last as (N, H, W, C), Wt
//! (CKK, OC), bias (OC), y stored (N, OH, OW, OC); per chunk of B samples M = B*OHW.

use super::ConvGeom;
use super::kernels::{MR, block_times_matrix, tap_rows_times_matrix, taps_times_matrix};
use super::layout::{Taps, fill_planes, im2row, patch_stride, pixel_taps};
use super::plan::Plan;
use crate::ops::max_pool2d::{PoolGeom, kernels::Forward as PoolForward};
use crate::ops::simd::{Kernel, Simd};
use crate::ops::{CHUNK, for_each_chunk};
use crate::tensor::nchw_to_nhwc;
use crate::tensor::pool::{self, Pooled};
use std::borrow::Cow;

/// Forward of one chunk: A = im2row(x) (or the planes of x, or x), y (M, OC) = A Wt + bias.
struct ForwardChunk<'a> {
    g: &'a ConvGeom,
    plan: Plan,
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
            plan,
            relu,
            x,
            wt,
            bias,
            a,
            y,
        } = self;
        let (ckk, oc, l) = (g.ckk(), g.oc, patch_stride(g.ckk()));
        let m_total = y.len() / oc;
        match plan {
            Plan::Planes { .. } => {
                fill_planes(s, g, x, a);
                let taps = Taps::for_chunk(g);
                let base = taps.bases(m_total);
                for (m0, yb) in (0..m_total).step_by(MR).zip(y.chunks_mut(MR * oc)) {
                    let rows = MR.min(m_total - m0);
                    // Rows past the end repeat the last pixel; they are computed, not stored.
                    let rb: [usize; MR] = std::array::from_fn(|r| base[m0 + r.min(rows - 1)]);
                    taps_times_matrix(s, a, (&rb, &taps.koff), (ckk, oc), wt, oc, bias, yb, (rows, relu));
                }
            }
            Plan::WholeTaps { .. } => {
                let pix = pixel_taps(g);
                for (m0, yb) in (0..m_total).step_by(MR).zip(y.chunks_mut(MR * oc)) {
                    let rows = MR.min(m_total - m0);
                    tap_rows_times_matrix(s, g, (x, &pix), (m0, rows), (wt, bias), yb, relu);
                }
            }
            Plan::PatchMatrix => {
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
    }
}

/// The values of `x` (N, C, H, W) stored channels-last: borrowed when they already are (or
/// C = 1), else a converted copy.
pub(super) fn as_nhwc<'a>(g: &ConvGeom, x: &'a [f32], x_nchw: bool) -> Cow<'a, [f32]> {
    if !x_nchw || g.c == 1 {
        return Cow::Borrowed(x);
    }
    let mut out = vec![0.0; x.len()];
    nchw_to_nhwc(x, (x.len() / g.in_size(), g.c, g.h, g.w), &mut out);
    Cow::Owned(out)
}

/// Forward. x (N, C, H, W) stored channels-last unless `x_nchw`; the weights as Wt (CKK, OC)
/// (see [`weights_k_major`](super::weights_k_major)); bias (OC).
/// Writes y stored (N, OH, OW, OC), or relu(y) with `relu`. With `keep_patches`, returns the
/// patches of all chunks, one after another, for the backward; except for layers with C a
/// multiple of 16 (whole-tap layers), whose backward reads x instead (see
/// [`saved_for_backward`](super::saved_for_backward)).
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
    let plan = Plan::for_geometry(g);
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
            plan,
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
    let chunk_a = plan.chunk_patch_len(g, CHUNK);
    if keep_patches && plan.keeps_patches() {
        let total = (n / CHUNK) * chunk_a + plan.chunk_patch_len(g, n % CHUNK);
        let mut all = pool::take(total);
        let work: Vec<_> = xs.zip(ys).zip(all.chunks_mut(chunk_a)).collect();
        for_each_chunk(work, |((xc, yc), a)| run(xc, yc, a));
        Some(Pooled(all))
    } else {
        let work: Vec<_> = xs.zip(ys).collect();
        for_each_chunk(work, |(xc, yc)| {
            let mut a = pool::take(plan.chunk_patch_len(g, xc.len() / g.in_size()));
            run(xc, yc, &mut a);
            pool::recycle(a);
        });
        None
    }
}

/// Forward with the ReLU and a max pooling after it, for inference (nothing is kept for a
/// backward): per chunk, relu(y) goes to a scratch buffer that stays in the cache, and the
/// pooling (`pg`: over (OC, OH, OW)) reads it from there into `out`, stored
/// (N, POH, POW, OC). The same bits as [`conv2d_forward`] with `relu` then `max_pool2d`, without
/// writing the full-size activations to memory and reading them back.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_max_pool_forward<S: Simd>(
    s: S,
    g: &ConvGeom,
    x: &[f32],
    x_nchw: bool,
    wt: &[f32],
    bias: &[f32],
    pg: &PoolGeom,
    out: &mut [f32],
) {
    assert!(
        (pg.c, pg.h, pg.w) == (g.oc, g.oh, g.ow),
        "conv2d_relu_max_pool: the pooling's input is the convolution's output"
    );
    let plan = Plan::for_geometry(g);
    let x = as_nhwc(g, x, x_nchw);
    let pooled = pg.c * pg.oh * pg.ow;
    let xs = x.chunks(CHUNK * g.in_size());
    let work: Vec<_> = xs.zip(out.chunks_mut(CHUNK * pooled)).collect();
    for_each_chunk(work, |(xc, oc)| {
        let b = xc.len() / g.in_size();
        let (a_len, y_len) = (plan.chunk_patch_len(g, b), b * g.out_size());
        let mut a = pool::take(a_len + pool::ALIGN_SLACK);
        let mut y = pool::take(y_len + pool::ALIGN_SLACK);
        let ya = pool::aligned(&mut y, y_len);
        s.vectorize(ForwardChunk {
            g,
            plan,
            relu: true,
            x: xc,
            wt,
            bias,
            a: pool::aligned(&mut a, a_len),
            y: ya,
        });
        s.vectorize(PoolForward {
            g: pg,
            x: ya,
            y: oc,
            idx: None,
        });
        pool::recycle(y);
        pool::recycle(a);
    });
}
