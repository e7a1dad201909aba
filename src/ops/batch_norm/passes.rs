//! batch norm's passes over a whole batch: each splits the batch into chunks of [`CHUNK`]
//! samples (run in parallel by [`for_each_chunk`]), runs a vector kernel of `kernels` on each
//! chunk, and adds per-chunk results in chunk order, so the results do not depend on the number
//! of threads. Plain-layout (NCHW) chunks are transposed to channels-last for the kernels and
//! back (the slow path, but the same arithmetic, so both layouts give the same bits).
//!
//! Shapes: x, y, dy, dx (N, C, H, W) stored either way (see [`Planes`]); per-channel values (C).

use std::borrow::Cow;

use super::kernels::{ChannelSums, Forward, InputGrad, Normalize, Sums};
use crate::ops::simd::Simd;
use crate::ops::{CHUNK, for_each_chunk};
use crate::tensor::{nchw_to_nhwc, nhwc_to_nchw};

/// How x is stored: channels C, values per channel per sample HW, and the layout.
#[derive(Clone, Copy, Debug)]
pub struct Planes {
    pub c: usize,
    pub hw: usize,
    pub nhwc: bool,
}

impl Planes {
    pub fn sample(&self) -> usize {
        self.c * self.hw
    }

    /// Values per chunk of [`CHUNK`] samples.
    fn step(&self) -> usize {
        CHUNK * self.sample()
    }

    /// Whether the stored order is already (samples, HW, C) (also true when C or HW is 1).
    fn is_nhwc(&self) -> bool {
        self.nhwc || self.c == 1 || self.hw == 1
    }

    fn dims(&self, len: usize) -> (usize, usize, usize, usize) {
        (len / self.sample(), self.c, self.hw, 1)
    }

    /// A chunk's values stored (samples, HW, C): borrowed, or a transposed copy.
    fn nhwc<'a>(&self, v: &'a [f32]) -> Cow<'a, [f32]> {
        if self.is_nhwc() {
            return Cow::Borrowed(v);
        }
        let mut t = vec![0.0; v.len()];
        nchw_to_nhwc(v, self.dims(v.len()), &mut t);
        Cow::Owned(t)
    }

    /// Runs `f` on a channels-last buffer for `out`'s chunk: `out` itself, or a buffer
    /// transposed into `out` afterwards.
    fn write(&self, out: &mut [f32], f: impl FnOnce(&mut [f32])) {
        if self.is_nhwc() {
            return f(out);
        }
        let mut t = vec![0.0; out.len()];
        f(&mut t);
        nhwc_to_nchw(&t, self.dims(out.len()), out);
    }
}

/// `partial`'s `width` sums of each chunk (x, and dy when given), run in parallel; the caller
/// adds them in chunk order.
fn sum_chunks<'a>(
    chunks: Vec<(&'a [f32], Option<&'a [f32]>)>,
    width: usize,
    partial: impl Fn(&[f32], Option<&[f32]>, &mut [f64]) + Sync + Send,
) -> Vec<Vec<f64>> {
    let mut parts = vec![vec![0f64; width]; chunks.len()];
    let work: Vec<_> = chunks.into_iter().zip(parts.iter_mut()).collect();
    for_each_chunk(work, |((x, rest), out)| partial(x, rest, out));
    parts
}

/// Per-channel (mean, biased variance) of x over the batch, in f64.
///
/// Numerics: per chunk, two passes over the chunk's values while they are in cache: the sum
/// gives the chunk mean, rounded to f32 (m); then d = x - m gives sum d and sum d^2, so the
/// chunk's mean is m + sum d / n and its sum of squared deviations M2 = sum d^2 - (sum d)^2 / n
/// (the shifted-data formula, with a shift within rounding of the mean: no cancellation
/// between large terms). The f32 sums are taken in blocks (see `kernels`). The chunks' (n,
/// mean, M2) are merged in f64 in chunk order (Chan et al.'s pairwise update).
pub fn batch_stats<S: Simd>(s: S, x: &[f32], pl: &Planes) -> (Vec<f64>, Vec<f64>) {
    let c = pl.c;
    let chunks = x.chunks(pl.step()).map(|xc| (xc, None)).collect();
    let parts = sum_chunks(chunks, 2 * c, |xc, _, out| {
        let x = pl.nhwc(xc);
        let n = (x.len() / c) as f64;
        let mut sums = vec![0f64; c];
        s.vectorize(ChannelSums {
            x: &x,
            c,
            what: Sums::X,
            out: &mut sums,
        });
        let negm: Vec<f32> = sums.iter().map(|v| -((v / n) as f32)).collect();
        s.vectorize(ChannelSums {
            x: &x,
            c,
            what: Sums::Centered { negm: &negm },
            out,
        });
        let (sd, sd2) = out.split_at_mut(c);
        for ((a, b), &nm) in sd.iter_mut().zip(sd2.iter_mut()).zip(&negm) {
            let (sum_d, sum_d2) = (*a, *b);
            *a = -(nm as f64) + sum_d / n;
            *b = (sum_d2 - sum_d * sum_d / n).max(0.0);
        }
    });
    let (mut n_tot, mut mean, mut m2) = (0f64, vec![0f64; c], vec![0f64; c]);
    for (xc, p) in x.chunks(pl.step()).zip(&parts) {
        let n = (xc.len() / c) as f64;
        let total = n_tot + n;
        for ch in 0..c {
            let delta = p[ch] - mean[ch];
            mean[ch] += delta * n / total;
            m2[ch] += p[c + ch] + delta * delta * n_tot * n / total;
        }
        n_tot = total;
    }
    let var = m2.iter().map(|v| v / n_tot).collect();
    (mean, var)
}

/// The forward's per-channel f32 coefficients: y = (x + negm) * scale + shift, or
/// x * scale + shift when `negm` is `None`.
pub struct Coefficients {
    pub negm: Option<Vec<f32>>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Coefficients {
    /// The kernels' view of them.
    pub fn forward(&self) -> Forward<'_> {
        Forward {
            negm: self.negm.as_deref(),
            scale: &self.scale,
            shift: &self.shift,
        }
    }

    /// Training: negm = -m with m the mean rounded to f32, and the rounding's remainder
    /// (mean - m) folded into the shift, so the large parts cancel exactly in x - m.
    /// Evaluation (`centered` false): one multiply-add, shift = bias - mean * scale.
    pub fn new(mean: &[f64], invstd: &[f64], weight: &[f64], bias: &[f64], centered: bool) -> Coefficients {
        let scale64: Vec<f64> = invstd.iter().zip(weight).map(|(i, w)| i * w).collect();
        let m: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let shift = (0..mean.len())
            .map(|ch| {
                let off = if centered { mean[ch] - m[ch] as f64 } else { mean[ch] };
                (bias[ch] - off * scale64[ch]) as f32
            })
            .collect();
        Coefficients {
            negm: centered.then(|| m.iter().map(|v| -v).collect()),
            scale: scale64.iter().map(|&v| v as f32).collect(),
            shift,
        }
    }
}

/// y = x * scale + shift (see [`Coefficients`]), then max(y, 0) with `relu`.
pub fn normalize<S: Simd>(s: S, x: &[f32], pl: &Planes, k: &Coefficients, relu: bool, y: &mut [f32]) {
    let work: Vec<_> = x.chunks(pl.step()).zip(y.chunks_mut(pl.step())).collect();
    for_each_chunk(work, |(xc, yc)| {
        let x = pl.nhwc(xc);
        pl.write(yc, |y| {
            s.vectorize(Normalize {
                x: &x,
                c: pl.c,
                negm: k.negm.as_deref(),
                scale: &k.scale,
                shift: &k.shift,
                relu,
                y,
            })
        });
    });
}

/// Per-channel [sum g; sum g * (x - mean)] over the batch (2C values, f64), g = dy, or with
/// `relu` (the fused ReLU: the forward's coefficients) dy where the forward's value was
/// positive, recomputed from x (one buffer fewer to read than y). `mean` is subtracted as in
/// [`Coefficients`]: x - m in f32, then the remainder (mean - m) * sum g in f64.
pub fn grad_sums<S: Simd>(
    s: S,
    x: &[f32],
    dy: &[f32],
    relu: Option<&Coefficients>,
    pl: &Planes,
    mean: &[f64],
) -> Vec<f64> {
    let c = pl.c;
    let m: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let negm: Vec<f32> = m.iter().map(|v| -v).collect();
    let chunks = x
        .chunks(pl.step())
        .zip(dy.chunks(pl.step()))
        .map(|(xc, dc)| (xc, Some(dc)))
        .collect();
    let parts = sum_chunks(chunks, 2 * c, |xc, rest, out| {
        let dc = rest.expect("dy chunk");
        let (x, dy) = (pl.nhwc(xc), pl.nhwc(dc));
        s.vectorize(ChannelSums {
            x: &x,
            c,
            what: Sums::Grads {
                dy: &dy,
                relu: relu.map(Coefficients::forward),
                negm: &negm,
            },
            out,
        });
    });
    let mut total = vec![0f64; 2 * c];
    for p in &parts {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    let (sg, sgd) = total.split_at_mut(c);
    for ch in 0..c {
        sgd[ch] -= (mean[ch] - m[ch] as f64) * sg[ch];
    }
    total
}

/// dx of the batch norm (masked as in [`grad_sums`] with `relu`). Training, with the batch's
/// per-channel sums [sum g; sum g * xhat] (`sums`) over M values per channel:
/// dx = weight * invstd * (g - sum g / M - xhat * sum(g * xhat) / M), computed as
/// a * g + (q * (x - m) + k) with m the mean rounded to f32 and the rest of the mean in k.
/// Evaluation (`sums` None): dx = weight * invstd * g.
#[allow(clippy::too_many_arguments)]
pub fn input_grad<S: Simd>(
    s: S,
    x: &[f32],
    dy: &[f32],
    relu: Option<&Coefficients>,
    pl: &Planes,
    (mean, invstd, weight): (&[f64], &[f64], &[f64]),
    sums: Option<(&[f64], usize)>,
    dx: &mut [f32],
) {
    let c = pl.c;
    let a64: Vec<f64> = invstd.iter().zip(weight).map(|(i, w)| i * w).collect();
    let a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
    let train = sums.map(|(sums, count)| {
        let (sg, sgx) = sums.split_at(c);
        let mf = count as f64;
        let m: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let q64: Vec<f64> = (0..c).map(|ch| -a64[ch] * invstd[ch] * sgx[ch] / mf).collect();
        let k: Vec<f32> = (0..c)
            .map(|ch| (-a64[ch] * sg[ch] / mf - q64[ch] * (mean[ch] - m[ch] as f64)) as f32)
            .collect();
        let negm: Vec<f32> = m.iter().map(|v| -v).collect();
        (negm, q64.iter().map(|&v| v as f32).collect::<Vec<f32>>(), k)
    });
    let step = pl.step();
    let work: Vec<_> = x.chunks(step).zip(dy.chunks(step)).zip(dx.chunks_mut(step)).collect();
    for_each_chunk(work, |((xc, dc), dxc)| {
        let (x, dy) = (pl.nhwc(xc), pl.nhwc(dc));
        pl.write(dxc, |dx| {
            s.vectorize(InputGrad {
                x: &x,
                dy: &dy,
                relu: relu.map(Coefficients::forward),
                c,
                a: &a,
                train: train.as_ref().map(|(negm, q, k)| (&negm[..], &q[..], &k[..])),
                dx,
            })
        });
    });
}
