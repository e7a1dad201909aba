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
//! The forward records, per output, the index (h * W + w) of the input it took; the backward
//! adds each dy there. Both split the batch into chunks of [`CHUNK`] samples.

use crate::ops::{CHUNK, for_each_chunk};
use crate::profile::{self, Phase};
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
pub fn max_pool2d_forward(x: &[f32], g: &PoolGeom, y: &mut [f32], mut idx: Option<&mut [u32]>) {
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
                    idx[p * ohw + i * g.ow + j] = at as u32;
                }
            }
        }
    }
}

/// dy (samples, C, OH, OW) and the forward's indices -> dx (samples, C, H, W), overwritten.
pub fn max_pool2d_backward(dy: &[f32], idx: &[u32], g: &PoolGeom, dx: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    dx.fill(0.0);
    for ((plane, gy), ix) in dx.chunks_mut(hw).zip(dy.chunks(ohw)).zip(idx.chunks(ohw)) {
        for (&d, &at) in gy.iter().zip(ix) {
            plane[at as usize] += d;
        }
    }
}

/// x stored (samples, H, W, C) -> y stored (samples, OH, OW, C); `idx` in y's order.
pub fn max_pool2d_forward_nhwc(x: &[f32], g: &PoolGeom, y: &mut [f32], mut idx: Option<&mut [u32]>) {
    let c = g.c;
    for (s, (xs, ys)) in x.chunks(g.in_size()).zip(y.chunks_mut(g.out_size())).enumerate() {
        for i in 0..g.oh {
            let (h0, h1) = g.span(i, g.h);
            for j in 0..g.ow {
                let (w0, w1) = g.span(j, g.w);
                let o = (i * g.ow + j) * c;
                let out = &mut ys[o..o + c];
                out.fill(f32::NEG_INFINITY);
                let mut at = idx.as_deref_mut().map(|ix| &mut ix[s * g.out_size() + o..][..c]);
                if let Some(at) = at.as_deref_mut() {
                    at.fill((h0 * g.w + w0) as u32);
                }
                for r in h0..h1 {
                    for q in w0..w1 {
                        let pos = r * g.w + q;
                        let px = &xs[pos * c..][..c];
                        match at.as_deref_mut() {
                            Some(at) => {
                                for ((b, a), &v) in out.iter_mut().zip(at.iter_mut()).zip(px) {
                                    if wins(v, *b) {
                                        *b = v;
                                        *a = pos as u32;
                                    }
                                }
                            }
                            None => {
                                for (b, &v) in out.iter_mut().zip(px) {
                                    if wins(v, *b) {
                                        *b = v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dy stored (samples, OH, OW, C) and the forward's indices -> dx stored (samples, H, W, C).
pub fn max_pool2d_backward_nhwc(dy: &[f32], idx: &[u32], g: &PoolGeom, dx: &mut [f32]) {
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
    let mut idx = needs_graph.then(|| vec![0u32; n * g.out_size()]);
    profile::time(
        || profile::label("max_pool2d", &s),
        Phase::Forward,
        || {
            let xd = x.data();
            let xs = xd.chunks(CHUNK * g.in_size());
            let ys = y.chunks_mut(CHUNK * g.out_size());
            let run = |xc: &[f32], yc: &mut [f32], ic: Option<&mut [u32]>| {
                if nhwc {
                    max_pool2d_forward_nhwc(xc, &g, yc, ic)
                } else {
                    max_pool2d_forward(xc, &g, yc, ic)
                }
            };
            match idx.as_deref_mut() {
                Some(ix) => {
                    let work: Vec<_> = xs.zip(ys).zip(ix.chunks_mut(CHUNK * g.out_size())).collect();
                    for_each_chunk(work, |((xc, yc), ic)| run(xc, yc, Some(ic)));
                }
                None => for_each_chunk(xs.zip(ys).collect(), |(xc, yc)| run(xc, yc, None)),
            }
        },
    );
    let idx = idx.unwrap_or_default();
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        let mut dx = pool::take(inp[0].numel());
        let work: Vec<_> = dy
            .chunks(CHUNK * g.out_size())
            .zip(idx.chunks(CHUNK * g.out_size()))
            .zip(dx.chunks_mut(CHUNK * g.in_size()))
            .collect();
        for_each_chunk(work, |((d, i), dxc)| {
            if nhwc {
                max_pool2d_backward_nhwc(d, i, &g, dxc)
            } else {
                max_pool2d_backward(d, i, &g, dxc)
            }
        });
        vec![Some(dx)]
    });
    let shape = [n, g.c, g.oh, g.ow];
    Tensor::from_op_in_layout(y, &shape, nhwc, "max_pool2d", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, check_golden_both_layouts, input, random, to_channels_last};

    /// Plain f64 max pooling over the in-bounds part of each window (padding never wins).
    fn naive(x: &[f64], planes: usize, (h, w): (usize, usize), k: usize, s: usize, p: usize) -> Vec<f64> {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut y = vec![f64::NEG_INFINITY; planes * oh * ow];
        for pl in 0..planes {
            for i in 0..oh {
                for j in 0..ow {
                    for a in 0..k {
                        for b in 0..k {
                            let (r, q) = ((i * s + a) as isize - p as isize, (j * s + b) as isize - p as isize);
                            if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                                continue;
                            }
                            let v = x[(pl * h + r as usize) * w + q as usize];
                            let o = &mut y[(pl * oh + i) * ow + j];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
        y
    }

    const SETTINGS: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
        // (n, c, h, w, k, stride, padding)
        (2, 3, 7, 7, 2, 2, 0),
        (2, 3, 7, 6, 3, 2, 1),
        (3, 2, 5, 8, 3, 1, 1),
        (CHUNK + 3, 2, 4, 4, 2, 2, 1),
    ];

    #[test]
    fn forward_and_gradient_match_the_f64_reference() {
        for (n, c, h, w, k, s, p) in SETTINGS {
            check(
                &[input(random(n * c * h * w, 11), &[n, c, h, w], true)],
                |t| max_pool2d(&t[0], k, s, p),
                |v| naive(&v[0], n * c, (h, w), k, s, p),
                1e-5,
            );
        }
    }

    #[test]
    fn channels_last_matches_the_reference_and_the_plain_layout_bit_for_bit() {
        for (n, c, h, w, k, s, p) in SETTINGS {
            let x = random(n * c * h * w, 12);
            check(
                &[input(x.clone(), &[n, c, h, w], true)],
                |t| {
                    let y = max_pool2d(&to_channels_last(&t[0]), k, s, p);
                    assert!(y.is_channels_last());
                    y
                },
                |v| naive(&v[0], n * c, (h, w), k, s, p),
                1e-5,
            );
            let run = |cl: bool| {
                let xt = Tensor::parameter(x.clone(), &[n, c, h, w]);
                let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
                let y = max_pool2d(&xin, k, s, p);
                y.contiguous().backward_with(random(y.numel(), 13));
                (y.to_vec(), xt.grad().unwrap())
            };
            assert_eq!(run(true), run(false), "settings {:?}", (n, c, h, w, k, s, p));
        }
    }

    /// Ties go to the first position in the window, -inf padding never wins, and a window of
    /// nothing but -inf gives -inf with its gradient at the first in-bounds position.
    #[test]
    fn ties_go_to_the_first_and_padding_never_wins() {
        for cl in [false, true] {
            #[rustfmt::skip]
            let x = Tensor::parameter(vec![
                -5.0, -5.0, 1.0,
                -5.0, -5.0, 1.0,
                2.0, 1.0, f32::NEG_INFINITY,
            ], &[1, 1, 3, 3]);
            let xin = if cl { to_channels_last(&x) } else { x.clone() };
            // k=2, s=2, p=1: windows over rows (and columns) {-1, 0} and {1, 2}, so the in-bounds
            // parts are {0} and {1, 2}. The last window holds -5, 1 / 1, -inf: a tie of 1s.
            let y = max_pool2d(&xin, 2, 2, 1);
            assert_eq!(y.to_vec(), vec![-5.0, 1.0, 2.0, 1.0]);
            y.contiguous().backward_with(vec![1.0, 10.0, 100.0, 1000.0]);
            let g = x.grad().unwrap();
            #[rustfmt::skip]
            assert_eq!(g, vec![
                1.0, 0.0, 10.0,
                0.0, 0.0, 1000.0,
                100.0, 0.0, 0.0,
            ], "layout channels_last={cl}");
        }
        let x = Tensor::parameter(vec![f32::NEG_INFINITY; 4], &[1, 1, 2, 2]);
        let y = max_pool2d(&x, 3, 2, 1);
        assert_eq!(y.to_vec(), vec![f32::NEG_INFINITY]);
        y.backward_with(vec![1.0]);
        assert_eq!(x.grad().unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn nan_propagates_and_takes_the_gradient() {
        let x = Tensor::parameter(vec![1.0, f32::NAN, 7.0, f32::NAN], &[1, 1, 2, 2]);
        let y = max_pool2d(&x, 2, 2, 0);
        assert!(y.item().is_nan());
        y.backward_with(vec![1.0]);
        assert_eq!(x.grad().unwrap(), vec![0.0, 0.0, 0.0, 1.0], "the last NaN, as PyTorch");
    }

    #[test]
    fn an_empty_batch_gives_an_empty_result() {
        let y = max_pool2d(&Tensor::zeros(&[0, 2, 5, 5]), 3, 2, 1);
        assert_eq!(y.shape(), &[0, 2, 3, 3]);
    }

    #[test]
    #[should_panic(expected = "pad should be at most half")]
    fn rejects_padding_over_half_the_window() {
        max_pool2d(&Tensor::zeros(&[1, 1, 4, 4]), 2, 2, 2);
    }

    #[test]
    fn matches_pytorch_golden_values() {
        let cases = [
            ("k2s2p0_7", 2, 2, 0),
            ("k3s2p1_7", 3, 2, 1),
            ("k2s2p0_6", 2, 2, 0),
            ("k3s2p1_6", 3, 2, 1),
            ("k3s1p1_6", 3, 1, 1),
            ("ties_k3s2p1", 3, 2, 1),
            ("ties_k2s1p1", 2, 1, 1),
        ];
        for (name, k, s, p) in cases {
            // Max pooling picks values: exact, NaN and -inf included.
            check_golden_both_layouts(&format!("max_pool2d/{name}"), |x| max_pool2d(x, k, s, p), 0.0);
        }
    }
}
