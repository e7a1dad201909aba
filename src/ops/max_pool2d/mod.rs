//! Max pooling with a KxK window, a stride and zero-size padding that never wins
//! (`F.max_pool2d(x, kernel_size, stride, padding)`, floor mode, no dilation).
//!
//! Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + 2P - K) / S + 1 (rounded down), the
//! same for OW. Padding acts as -inf. Works on either memory layout (plain, or channels-last);
//! the result keeps x's layout.
//!
//! Which input a window's maximum (and so its gradient) comes from is what PyTorch's CPU
//! kernel picks: scanning the in-bounds part of the window row by row, a value replaces the
//! current best when it is larger or NaN, starting from -inf at the first in-bounds position.
//! So ties go to the first, NaN propagates (the last NaN of a window wins), and a window of
//! nothing but -inf gives -inf from its first in-bounds position.
//!
//! The forward records, per output, the index (h * W + w) of the input it took (as an f32,
//! exact below 2^24); the backward adds each dy there. Both split the batch into chunks of
//! [`CHUNK`] samples. On channels-last data both run vector kernels (`kernels`, channels in
//! lanes; the backward when windows do not overlap, stride >= kernel size, else the scalar
//! scatter); the plain layout runs the scalar kernels here. Both layouts give the same bits.

pub(crate) mod kernels;

use crate::ops::simd::Simd;
use crate::ops::{CHUNK, for_each_chunk};
use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::{BackwardFn, Tensor, pool};

/// The geometry of one pooling: input (C, H, W), window K, stride S, padding P.
#[derive(Clone, Copy, Debug)]
pub struct PoolGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// Checks the settings as PyTorch does (panics: these are programming errors).
    pub fn new((c, h, w): (usize, usize, usize), k: usize, stride: usize, padding: usize) -> PoolGeom {
        assert!(
            k > 0 && stride > 0,
            "max_pool2d: kernel_size {k} and stride {stride} must be positive"
        );
        assert!(
            c * h * w > 0,
            "max_pool2d: C, H and W of x must be non-zero, got {:?}",
            (c, h, w)
        );
        assert!(
            padding <= k / 2,
            "max_pool2d: pad should be at most half of effective kernel size, but got pad={padding}, kernel_size={k}"
        );
        assert!(
            h + 2 * padding >= k && w + 2 * padding >= k,
            "max_pool2d: window {k} larger than the padded input {h}x{w} (padding {padding})"
        );
        assert!(
            h * w <= 1 << 24,
            "max_pool2d: H * W = {} is over 2^24, which the f32 indices cannot hold",
            h * w
        );
        let out = |n: usize| (n + 2 * padding - k) / stride + 1;
        PoolGeom {
            c,
            h,
            w,
            k,
            stride,
            padding,
            oh: out(h),
            ow: out(w),
        }
    }

    fn in_size(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_size(&self) -> usize {
        self.c * self.oh * self.ow
    }

    /// The in-bounds rows (or columns) of window `i`: [start, end).
    fn span(&self, i: usize, n: usize) -> (usize, usize) {
        let lo = (i * self.stride) as isize - self.padding as isize;
        let hi = (lo + self.k as isize).min(n as isize);
        (lo.max(0) as usize, hi as usize)
    }
}

/// PyTorch's rule: the candidate replaces the best when larger or NaN.
#[inline]
fn wins(v: f32, best: f32) -> bool {
    v > best || v.is_nan()
}

/// x (samples, C, H, W) -> y (samples, C, OH, OW); with `idx`, the index h * W + w of the input
/// each output took.
pub fn max_pool2d_forward(x: &[f32], g: &PoolGeom, y: &mut [f32], mut idx: Option<&mut [f32]>) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    for (p, (plane, out)) in x.chunks(hw).zip(y.chunks_mut(ohw)).enumerate() {
        for i in 0..g.oh {
            let (h0, h1) = g.span(i, g.h);
            for j in 0..g.ow {
                let (w0, w1) = g.span(j, g.w);
                let mut best = f32::NEG_INFINITY;
                let mut at = h0 * g.w + w0;
                for r in h0..h1 {
                    for (q, &v) in plane[r * g.w + w0..r * g.w + w1].iter().enumerate() {
                        if wins(v, best) {
                            best = v;
                            at = r * g.w + w0 + q;
                        }
                    }
                }
                out[i * g.ow + j] = best;
                if let Some(idx) = idx.as_deref_mut() {
                    idx[p * ohw + i * g.ow + j] = at as f32;
                }
            }
        }
    }
}

/// dy (samples, C, OH, OW) and the forward's indices -> dx (samples, C, H, W), overwritten.
pub fn max_pool2d_backward(dy: &[f32], idx: &[f32], g: &PoolGeom, dx: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    dx.fill(0.0);
    for ((plane, gy), ix) in dx.chunks_mut(hw).zip(dy.chunks(ohw)).zip(idx.chunks(ohw)) {
        for (&d, &at) in gy.iter().zip(ix) {
            plane[at as usize] += d;
        }
    }
}

/// x stored (samples, H, W, C) -> y stored (samples, OH, OW, C); `idx` in y's order.
pub fn max_pool2d_forward_nhwc<S: Simd>(s: S, x: &[f32], g: &PoolGeom, y: &mut [f32], idx: Option<&mut [f32]>) {
    s.vectorize(kernels::Forward { g, x, y, idx })
}

/// dy stored (samples, OH, OW, C) and the forward's indices -> dx stored (samples, H, W, C).
/// Vector kernel when windows do not overlap, else a scalar scatter.
pub fn max_pool2d_backward_nhwc<S: Simd>(s: S, dy: &[f32], idx: &[f32], g: &PoolGeom, dx: &mut [f32]) {
    if g.stride >= g.k {
        return s.vectorize(kernels::Backward { g, dy, idx, dx });
    }
    let c = g.c;
    dx.fill(0.0);
    for ((dxs, dys), ixs) in dx
        .chunks_mut(g.in_size())
        .zip(dy.chunks(g.out_size()))
        .zip(idx.chunks(g.out_size()))
    {
        for (gy, ix) in dys.chunks(c).zip(ixs.chunks(c)) {
            for (ch, (&d, &at)) in gy.iter().zip(ix).enumerate() {
                dxs[at as usize * c + ch] += d;
            }
        }
    }
}

/// The forward over a batch, in chunks of [`CHUNK`] samples (the backend is chosen by the
/// caller, on its thread).
fn forward_chunks<S: Simd>(s: S, x: &[f32], g: &PoolGeom, nhwc: bool, y: &mut [f32], idx: Option<&mut [f32]>) {
    let xs = x.chunks(CHUNK * g.in_size());
    let ys = y.chunks_mut(CHUNK * g.out_size());
    let run = |xc: &[f32], yc: &mut [f32], ic: Option<&mut [f32]>| {
        if nhwc {
            max_pool2d_forward_nhwc(s, xc, g, yc, ic)
        } else {
            max_pool2d_forward(xc, g, yc, ic)
        }
    };
    match idx {
        Some(ix) => {
            let work: Vec<_> = xs.zip(ys).zip(ix.chunks_mut(CHUNK * g.out_size())).collect();
            for_each_chunk(work, |((xc, yc), ic)| run(xc, yc, Some(ic)));
        }
        None => for_each_chunk(xs.zip(ys).collect(), |(xc, yc)| run(xc, yc, None)),
    }
}

/// The backward over a batch, in chunks of [`CHUNK`] samples.
fn backward_chunks<S: Simd>(s: S, dy: &[f32], idx: &[f32], g: &PoolGeom, nhwc: bool, dx: &mut [f32]) {
    let work: Vec<_> = dy
        .chunks(CHUNK * g.out_size())
        .zip(idx.chunks(CHUNK * g.out_size()))
        .zip(dx.chunks_mut(CHUNK * g.in_size()))
        .collect();
    for_each_chunk(work, |((d, i), dxc)| {
        if nhwc {
            max_pool2d_backward_nhwc(s, d, i, g, dxc)
        } else {
            max_pool2d_backward(d, i, g, dxc)
        }
    });
}

/// `F.max_pool2d(x, kernel_size, stride, padding)` on x (N, C, H, W), stored either way; the
/// result keeps x's layout. See the module header for which input takes the gradient.
pub fn max_pool2d(x: &Tensor, kernel_size: usize, stride: usize, padding: usize) -> Tensor {
    let s = x.shape().to_vec();
    assert_eq!(s.len(), 4, "max_pool2d: x must be (N, C, H, W), got {s:?}");
    let g = PoolGeom::new((s[1], s[2], s[3]), kernel_size, stride, padding);
    let n = s[0];
    let nhwc = x.is_channels_last();
    let needs_graph = crate::tensor::is_grad_enabled() && x.requires_grad();
    let mut y = pool::take(n * g.out_size());
    let mut idx = needs_graph.then(|| pool::take(n * g.out_size()));
    profile::time(
        || profile::label("max_pool2d", &s),
        Phase::Forward,
        || {
            simd_dispatch!(forward_chunks(&x.data(), &g, nhwc, &mut y, idx.as_deref_mut()));
        },
    );
    let idx = idx.unwrap_or_default();
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        let mut dx = pool::take(inp[0].numel());
        simd_dispatch!(backward_chunks(dy, &idx, &g, nhwc, &mut dx));
        vec![Some(dx)]
    });
    let shape = [n, g.c, g.oh, g.ow];
    Tensor::from_op_in_layout(y, &shape, nhwc, "max_pool2d", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests;
