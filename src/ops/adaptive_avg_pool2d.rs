//! Adaptive average pooling to a fixed output size (`F.adaptive_avg_pool2d(x, (OH, OW))`).
//!
//! Shapes: x (N, C, H, W) -> y (N, C, OH, OW). Output row i averages input rows
//! [floor(i * H / OH), ceil((i + 1) * H / OH)), PyTorch's bins (the same for columns), so
//! bins may differ in size and overlap, and an output larger than the input repeats values.
//! Works on either memory layout (plain, or channels-last); the result keeps x's layout.
//! Both passes split the batch into chunks of [`CHUNK`] samples; channels-last data runs
//! vector kernels (channels in lanes), the plain layout scalar ones, with the same bits.

use crate::ops::simd::{Kernel, LANES, Simd};
use crate::ops::{CHUNK, for_each_chunk};
use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::{BackwardFn, Tensor, pool};

/// The input rows [start, end) of output row `i` of `out` rows over `n` input rows.
pub fn bin(i: usize, out: usize, n: usize) -> (usize, usize) {
    (i * n / out, ((i + 1) * n).div_ceil(out))
}

/// Input (C, H, W) and output (OH, OW) sizes.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl AdaptiveGeom {
    fn in_size(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_size(&self) -> usize {
        self.c * self.oh * self.ow
    }

    /// Rows, columns and 1 / (number of values) of output (i, j).
    fn window(&self, i: usize, j: usize) -> ((usize, usize), (usize, usize), f32) {
        let (r, q) = (bin(i, self.oh, self.h), bin(j, self.ow, self.w));
        (r, q, 1.0 / ((r.1 - r.0) * (q.1 - q.0)) as f32)
    }
}

/// x (samples, C, H, W) -> y (samples, C, OH, OW).
pub fn adaptive_avg_pool2d_forward(x: &[f32], g: &AdaptiveGeom, y: &mut [f32]) {
    for (plane, out) in x.chunks(g.h * g.w).zip(y.chunks_mut(g.oh * g.ow)) {
        for i in 0..g.oh {
            for j in 0..g.ow {
                let ((h0, h1), (w0, w1), scale) = g.window(i, j);
                let mut acc = 0.0f32;
                for r in h0..h1 {
                    plane[r * g.w + w0..r * g.w + w1].iter().for_each(|v| acc += v);
                }
                out[i * g.ow + j] = acc * scale;
            }
        }
    }
}

/// dy (samples, C, OH, OW) -> dx (samples, C, H, W), overwritten: each input of a bin gets
/// dy / (bin size), summed over the bins that hold it.
pub fn adaptive_avg_pool2d_backward(dy: &[f32], g: &AdaptiveGeom, dx: &mut [f32]) {
    dx.fill(0.0);
    for (plane, gy) in dx.chunks_mut(g.h * g.w).zip(dy.chunks(g.oh * g.ow)) {
        for i in 0..g.oh {
            for j in 0..g.ow {
                let ((h0, h1), (w0, w1), scale) = g.window(i, j);
                let v = gy[i * g.ow + j] * scale;
                for r in h0..h1 {
                    plane[r * g.w + w0..r * g.w + w1].iter_mut().for_each(|d| *d += v);
                }
            }
        }
    }
}

/// The channels-last kernels: channels c0..c0+16 of a pixel in one vector; per channel the
/// same operations in the same order as the plain kernels (sums from 0 row by row, then times
/// 1 / size; no multiply-add), so both layouts and every backend give the same bits.
struct Nhwc<'a> {
    g: &'a AdaptiveGeom,
    /// Forward: (x, y); backward: (dy, dx).
    src: &'a [f32],
    dst: &'a mut [f32],
    backward: bool,
}

impl Kernel for Nhwc<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Nhwc { g, src, dst, backward } = self;
        let c = g.c;
        let (xs_len, ys_len) = (g.in_size(), g.out_size());
        if backward {
            dst.fill(0.0);
        }
        let samples = if backward {
            src.len() / ys_len
        } else {
            dst.len() / ys_len
        };
        for sm in 0..samples {
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let ((h0, h1), (w0, w1), scale) = g.window(i, j);
                    let o = sm * ys_len + (i * g.ow + j) * c;
                    for c0 in (0..c).step_by(LANES) {
                        let n = LANES.min(c - c0);
                        let px = |r: usize, q: usize| sm * xs_len + (r * g.w + q) * c + c0;
                        if backward {
                            let v = s.mul(s.load(&src[o + c0..], n), s.splat(scale));
                            for r in h0..h1 {
                                for q in w0..w1 {
                                    let d = &mut dst[px(r, q)..];
                                    s.store(d, n, s.add(s.load(d, n), v));
                                }
                            }
                        } else {
                            let mut acc = s.zero();
                            for r in h0..h1 {
                                for q in w0..w1 {
                                    acc = s.add(acc, s.load(&src[px(r, q)..], n));
                                }
                            }
                            s.store(&mut dst[o + c0..], n, s.mul(acc, s.splat(scale)));
                        }
                    }
                }
            }
        }
    }
}

/// x stored (samples, H, W, C) -> y stored (samples, OH, OW, C).
pub fn adaptive_avg_pool2d_forward_nhwc<S: Simd>(s: S, x: &[f32], g: &AdaptiveGeom, y: &mut [f32]) {
    s.vectorize(Nhwc {
        g,
        src: x,
        dst: y,
        backward: false,
    })
}

/// dy stored (samples, OH, OW, C) -> dx stored (samples, H, W, C), overwritten.
pub fn adaptive_avg_pool2d_backward_nhwc<S: Simd>(s: S, dy: &[f32], g: &AdaptiveGeom, dx: &mut [f32]) {
    s.vectorize(Nhwc {
        g,
        src: dy,
        dst: dx,
        backward: true,
    })
}

/// Forward or backward over a batch in chunks of [`CHUNK`] samples: `(src, dst)` is (x, y) or
/// (dy, dx). The backend is chosen by the caller, on its thread.
fn run_chunks<S: Simd>(s: S, g: &AdaptiveGeom, nhwc: bool, backward: bool, src: &[f32], dst: &mut [f32]) {
    let (src_step, dst_step) = if backward {
        (CHUNK * g.out_size(), CHUNK * g.in_size())
    } else {
        (CHUNK * g.in_size(), CHUNK * g.out_size())
    };
    let work: Vec<_> = src.chunks(src_step).zip(dst.chunks_mut(dst_step)).collect();
    for_each_chunk(work, |(a, b)| match (nhwc, backward) {
        (true, false) => adaptive_avg_pool2d_forward_nhwc(s, a, g, b),
        (true, true) => adaptive_avg_pool2d_backward_nhwc(s, a, g, b),
        (false, false) => adaptive_avg_pool2d_forward(a, g, b),
        (false, true) => adaptive_avg_pool2d_backward(a, g, b),
    });
}

/// `F.adaptive_avg_pool2d(x, output_size)` on x (N, C, H, W), stored either way; the result
/// keeps x's layout.
pub fn adaptive_avg_pool2d(x: &Tensor, output_size: (usize, usize)) -> Tensor {
    let s = x.shape().to_vec();
    assert_eq!(s.len(), 4, "adaptive_avg_pool2d: x must be (N, C, H, W), got {s:?}");
    let (oh, ow) = output_size;
    assert!(
        s[1] * s[2] * s[3] > 0 && oh > 0 && ow > 0,
        "adaptive_avg_pool2d: C, H, W of x {s:?} and the output size {output_size:?} must be non-zero"
    );
    let g = AdaptiveGeom {
        c: s[1],
        h: s[2],
        w: s[3],
        oh,
        ow,
    };
    let n = s[0];
    let nhwc = x.is_channels_last();
    let mut y = pool::take(n * g.out_size());
    profile::time(
        || profile::label("adaptive_avg_pool2d", &s),
        Phase::Forward,
        || {
            simd_dispatch!(run_chunks(&g, nhwc, false, &x.data(), &mut y));
        },
    );
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        let mut dx = pool::take(inp[0].numel());
        simd_dispatch!(run_chunks(&g, nhwc, true, dy, &mut dx));
        vec![Some(dx)]
    });
    let shape = [n, g.c, oh, ow];
    Tensor::from_op_in_layout(y, &shape, nhwc, "adaptive_avg_pool2d", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, check_golden_both_layouts, input, random, to_channels_last};

    /// Plain f64 adaptive average pooling with the bins written out.
    fn naive(x: &[f64], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f64> {
        let mut y = vec![0.0; planes * oh * ow];
        for p in 0..planes {
            for i in 0..oh {
                let h0 = ((i * h) as f64 / oh as f64).floor() as usize;
                let h1 = (((i + 1) * h) as f64 / oh as f64).ceil() as usize;
                for j in 0..ow {
                    let w0 = ((j * w) as f64 / ow as f64).floor() as usize;
                    let w1 = (((j + 1) * w) as f64 / ow as f64).ceil() as usize;
                    let mut acc = 0.0;
                    for r in h0..h1 {
                        for q in w0..w1 {
                            acc += x[(p * h + r) * w + q];
                        }
                    }
                    y[(p * oh + i) * ow + j] = acc / ((h1 - h0) * (w1 - w0)) as f64;
                }
            }
        }
        y
    }

    /// ((n, c, h, w), (oh, ow))
    type Setting = ((usize, usize, usize, usize), (usize, usize));

    const SETTINGS: [Setting; 6] = [
        ((2, 3, 7, 7), (1, 1)),
        ((2, 3, 7, 7), (3, 3)),
        ((2, 3, 6, 6), (2, 5)),
        ((1, 2, 3, 2), (5, 4)), // output larger than the input
        ((CHUNK + 2, 2, 5, 4), (4, 4)),
        ((2, 1, 9, 5), (9, 5)), // the identity
    ];

    #[test]
    fn forward_and_gradient_match_the_f64_reference() {
        for ((n, c, h, w), out) in SETTINGS {
            check(
                &[input(random(n * c * h * w, 21), &[n, c, h, w], true)],
                |t| adaptive_avg_pool2d(&t[0], out),
                |v| naive(&v[0], n * c, (h, w), out),
                1e-5,
            );
        }
    }

    #[test]
    fn channels_last_matches_the_reference_and_the_plain_layout_bit_for_bit() {
        for ((n, c, h, w), out) in SETTINGS {
            let x = random(n * c * h * w, 22);
            check(
                &[input(x.clone(), &[n, c, h, w], true)],
                |t| {
                    let y = adaptive_avg_pool2d(&to_channels_last(&t[0]), out);
                    assert!(y.is_channels_last());
                    y
                },
                |v| naive(&v[0], n * c, (h, w), out),
                1e-5,
            );
            let run = |cl: bool| {
                let xt = Tensor::parameter(x.clone(), &[n, c, h, w]);
                let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
                let y = adaptive_avg_pool2d(&xin, out);
                y.contiguous().backward_with(random(y.numel(), 23));
                (y.to_vec(), xt.grad().unwrap())
            };
            assert_eq!(run(true), run(false), "settings {:?}", ((n, c, h, w), out));
        }
    }

    /// On every backend, the channels-last vector kernels give the plain layout's bits
    /// (C = 20 fills vectors partly; a global pool, overlapping bins, and a larger output).
    #[test]
    fn every_backend_gives_the_plain_layouts_bits() {
        crate::ops::simd::on_each_backend("adaptive_avg_pool2d", |b| {
            for ((h, w), out) in [((4, 4), (1, 1)), ((7, 7), (3, 3)), ((3, 2), (5, 4))] {
                let (n, c) = (CHUNK + 1, 20);
                let x = random(n * c * h * w, 24);
                let run = |cl: bool| {
                    let xt = Tensor::parameter(x.clone(), &[n, c, h, w]);
                    let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
                    let y = adaptive_avg_pool2d(&xin, out);
                    y.contiguous().backward_with(random(y.numel(), 25));
                    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    (bits(y.to_vec()), bits(xt.grad().unwrap()))
                };
                assert_eq!(run(true), run(false), "{b} {h}x{w} -> {out:?}");
            }
        });
    }

    #[test]
    fn bins_are_pytorchs() {
        // 7 -> 3: [0, 3), [2, 5), [4, 7); 2 -> 5 (output larger): [0,1) [0,1) [0,2) [1,2) [1,2).
        assert_eq!(
            (0..3).map(|i| bin(i, 3, 7)).collect::<Vec<_>>(),
            [(0, 3), (2, 5), (4, 7)]
        );
        assert_eq!(
            (0..5).map(|i| bin(i, 5, 2)).collect::<Vec<_>>(),
            [(0, 1), (0, 1), (0, 2), (1, 2), (1, 2)]
        );
    }

    #[test]
    fn matches_pytorch_golden_values() {
        let cases = [
            ("7_to_1x1", (1, 1)),
            ("7_to_3x3", (3, 3)),
            ("7_to_2x5", (2, 5)),
            ("6_to_1x1", (1, 1)),
            ("6_to_3x3", (3, 3)),
            ("6_to_2x5", (2, 5)),
            ("3x2_to_5x4", (5, 4)),
        ];
        for (name, out) in cases {
            let case = format!("adaptive_avg_pool2d/{name}");
            check_golden_both_layouts(&case, |x| adaptive_avg_pool2d(x, out), 1e-6);
        }
    }
}
