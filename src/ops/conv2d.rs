//! 2-D convolution (cross-correlation, as `torch.nn.functional.conv2d`) with stride and padding.
//!
//! Shapes: x (N, C, H, W), weight (OC, C, KH, KW), bias (OC), y (N, OC, OH, OW) with
//! OH = (H + 2P - KH) / S + 1 and OW likewise; CKK = C*KH*KW, OHW = OH*OW, and for a chunk of
//! B samples M = B*OHW output pixels. Hp = H + 2P, Wp = W + 2P.
//!
//! Method: implicit GEMM on channels-last data. The output is stored (N, OH, OW, OC) (the
//! tensor is marked channels-last) and x is read as (N, H, W, C), copied into a zero-padded
//! buffer xpad (B, Hp, Wp, C) per chunk. Patch value k = (ki, kj, c) of output pixel m is then
//! xpad[base(m) + koff(k)], so no im2col matrix is built:
//!   forward  y[m, oc]   = bias[oc] + sum_k xpad[base(m) + koff(k)] * Wt[k, oc]
//!   backward dWt[k, oc] = sum_m xpad[base(m) + koff(k)] * dy[m, oc]
//!            dxpad[base(m) + koff(k)] += sum_oc dy[m, oc] * W[oc, k]
//! with output channels in vector lanes and 16 pixels (or 16 patch values) in registers.
//! Chunks of [`CHUNK`] samples run in parallel; weight gradients are summed one partial per
//! chunk, in chunk order, so the result is the same for any number of threads.

use rayon::prelude::*;

use super::CHUNK;
use super::simd::{Kernel, LANES, Simd};
use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::Tensor;
use crate::tensor::pool::{self, Pooled};

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
    /// Multiply-adds per sample in the forward pass.
    pub fn macs(&self) -> usize {
        self.out_size() * self.ckk()
    }
}

/// Index tables of one convolution on the padded channels-last input.
struct Plan {
    g: ConvGeom,
    hp: usize,
    wp: usize,
    /// Offset of patch value k = (ki, kj, c) from its pixel's base, in xpad.
    koff: Vec<usize>,
    /// Offset of tap t = (ki, kj) from its pixel's base, in xpad.
    tapoff: Vec<usize>,
}

impl Plan {
    fn new(g: ConvGeom) -> Plan {
        let (hp, wp) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
        let tapoff: Vec<usize> = (0..g.kh * g.kw).map(|t| ((t / g.kw) * wp + t % g.kw) * g.c).collect();
        let koff = tapoff.iter().flat_map(|&o| (0..g.c).map(move |c| o + c)).collect();
        Plan {
            g,
            hp,
            wp,
            koff,
            tapoff,
        }
    }

    fn padded_size(&self) -> usize {
        self.hp * self.wp * self.g.c
    }

    /// base(m) for the M pixels of a chunk of `b` samples (a shorter chunk uses a prefix).
    fn bases(&self, b: usize) -> Vec<usize> {
        let g = &self.g;
        (0..b * g.ohw())
            .map(|m| {
                let (s, q) = (m / g.ohw(), m % g.ohw());
                let (oh, ow) = (q / g.ow, q % g.ow);
                ((s * self.hp + oh * g.stride) * self.wp + ow * g.stride) * g.c
            })
            .collect()
    }

    /// xpad (B, Hp, Wp, C) from a chunk of x, stored (B, H, W, C) or, if `nchw`, (B, C, H, W).
    fn pad(&self, x: &[f32], nchw: bool, xpad: &mut [f32]) {
        let g = &self.g;
        let (p, c) = (g.padding, g.c);
        let row_len = self.wp * c;
        for (xs, ps) in x.chunks(g.in_size()).zip(xpad.chunks_mut(self.padded_size())) {
            // Zero only the border: the top and bottom padding rows, and the left and right
            // padding of each image row; the interior is overwritten below.
            ps[..p * row_len].fill(0.0);
            ps[(p + g.h) * row_len..].fill(0.0);
            for ih in 0..g.h {
                let line = &mut ps[(ih + p) * row_len..][..row_len];
                line[..p * c].fill(0.0);
                line[(p + g.w) * c..].fill(0.0);
            }
            for ih in 0..g.h {
                let row = &mut ps[((ih + p) * self.wp + p) * c..][..g.w * c];
                if nchw && c > 1 {
                    for iw in 0..g.w {
                        for ch in 0..c {
                            row[iw * c + ch] = xs[(ch * g.h + ih) * g.w + iw];
                        }
                    }
                } else {
                    row.copy_from_slice(&xs[ih * g.w * c..][..g.w * c]);
                }
            }
        }
    }

    /// The inverse of `pad` for gradients: dx chunk from dxpad, dropping the padding.
    fn crop(&self, dxpad: &[f32], nchw: bool, dx: &mut [f32]) {
        let g = &self.g;
        let (p, c) = (g.padding, g.c);
        for (ds, ps) in dx.chunks_mut(g.in_size()).zip(dxpad.chunks(self.padded_size())) {
            for ih in 0..g.h {
                let row = &ps[((ih + p) * self.wp + p) * c..][..g.w * c];
                if nchw && c > 1 {
                    for iw in 0..g.w {
                        for ch in 0..c {
                            ds[(ch * g.h + ih) * g.w + iw] = row[iw * c + ch];
                        }
                    }
                } else {
                    ds[ih * g.w * c..][..g.w * c].copy_from_slice(row);
                }
            }
        }
    }
}

/// Weights as Wt (CKK, OC) with k = (ki, kj, c): the forward's and dW's layout.
fn weights_k_major(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
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

/// Weights as Wr (OC, KH, KW, C): the dx pass's layout.
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

/// The forward of one chunk: y (B*OHW, OC) from xpad.
struct ForwardChunk<'a> {
    plan: &'a Plan,
    xpad: &'a [f32],
    bases: &'a [usize],
    wt: &'a [f32],
    bias: &'a [f32],
    y: &'a mut [f32],
}

impl Kernel for ForwardChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let ForwardChunk {
            plan,
            xpad,
            bases,
            wt,
            bias,
            y,
        } = self;
        forward_chunk(s, plan, xpad, bases, wt, bias, y)
    }
}

#[inline(always)]
fn forward_chunk<S: Simd>(s: S, plan: &Plan, xpad: &[f32], bases: &[usize], wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let (oc, ckk) = (plan.g.oc, plan.g.ckk());
    let m_total = bases.len();
    let max_off = plan.koff.iter().copied().max().unwrap_or(0);
    assert!(
        bases.iter().all(|&b| b + max_off < xpad.len()),
        "conv2d: patch outside the padded input"
    );
    assert!(wt.len() >= ckk * oc && bias.len() >= oc && y.len() >= m_total * oc);
    for m0 in (0..m_total).step_by(MR) {
        let rows = MR.min(m_total - m0);
        // Rows past the end repeat the last pixel; their results are not stored.
        let base: [usize; MR] = std::array::from_fn(|r| bases[(m0 + r).min(m_total - 1)]);
        for oc0 in (0..oc).step_by(LANES) {
            let w = LANES.min(oc - oc0);
            let mut acc = [s.load(&bias[oc0..], w); MR];
            for (k, &off) in plan.koff.iter().enumerate() {
                let wv = s.load(&wt[k * oc + oc0..], w);
                for r in 0..MR {
                    // SAFETY: base[r] + off <= base[r] + max_off < xpad.len(), asserted above.
                    let xv = unsafe { *xpad.get_unchecked(base[r] + off) };
                    acc[r] = s.mul_add(s.splat(xv), wv, acc[r]);
                }
            }
            for (r, a) in acc.iter().enumerate().take(rows) {
                s.store(&mut y[(m0 + r) * oc + oc0..], w, *a);
            }
        }
    }
}

/// The weight gradient of one chunk: dWt (CKK, OC) and dbias (OC) from xpad and dy (M, OC).
struct WeightGradChunk<'a> {
    plan: &'a Plan,
    xpad: &'a [f32],
    bases: &'a [usize],
    dy: &'a [f32],
    dwt: &'a mut [f32],
    db: &'a mut [f32],
}

impl Kernel for WeightGradChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let WeightGradChunk {
            plan,
            xpad,
            bases,
            dy,
            dwt,
            db,
        } = self;
        weight_grad_chunk(s, plan, xpad, bases, dy, dwt, db)
    }
}

#[inline(always)]
fn weight_grad_chunk<S: Simd>(
    s: S,
    plan: &Plan,
    xpad: &[f32],
    bases: &[usize],
    dy: &[f32],
    dwt: &mut [f32],
    db: &mut [f32],
) {
    let (oc, ckk) = (plan.g.oc, plan.g.ckk());
    let max_off = plan.koff.iter().copied().max().unwrap_or(0);
    assert!(
        bases.iter().all(|&b| b + max_off < xpad.len()),
        "conv2d: patch outside the padded input"
    );
    assert!(dy.len() >= bases.len() * oc && dwt.len() >= ckk * oc && db.len() >= oc);
    for k0 in (0..ckk).step_by(MR) {
        let rows = MR.min(ckk - k0);
        let off: [usize; MR] = std::array::from_fn(|r| plan.koff[(k0 + r).min(ckk - 1)]);
        for oc0 in (0..oc).step_by(LANES) {
            let w = LANES.min(oc - oc0);
            let mut acc = [s.splat(0.0); MR];
            for (m, &base) in bases.iter().enumerate() {
                let dv = s.load(&dy[m * oc + oc0..], w);
                for r in 0..MR {
                    // SAFETY: base + off[r] <= base + max_off < xpad.len(), asserted above.
                    let xv = unsafe { *xpad.get_unchecked(base + off[r]) };
                    acc[r] = s.mul_add(s.splat(xv), dv, acc[r]);
                }
            }
            for (r, a) in acc.iter().enumerate().take(rows) {
                s.store(&mut dwt[(k0 + r) * oc + oc0..], w, *a);
            }
        }
    }
    for oc0 in (0..oc).step_by(LANES) {
        let w = LANES.min(oc - oc0);
        let mut acc = s.splat(0.0);
        for m in 0..bases.len() {
            acc = s.add(acc, s.load(&dy[m * oc + oc0..], w));
        }
        s.store(&mut db[oc0..], w, acc);
    }
}

/// The input gradient of one chunk: dxpad (B, Hp, Wp, C) = sum of patches of dy (M, OC) W.
struct InputGradChunk<'a> {
    plan: &'a Plan,
    bases: &'a [usize],
    dy: &'a [f32],
    wr: &'a [f32],
    dxpad: &'a mut [f32],
}

impl Kernel for InputGradChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let InputGradChunk {
            plan,
            bases,
            dy,
            wr,
            dxpad,
        } = self;
        input_grad_chunk(s, plan, bases, dy, wr, dxpad)
    }
}

#[inline(always)]
fn input_grad_chunk<S: Simd>(s: S, plan: &Plan, bases: &[usize], dy: &[f32], wr: &[f32], dxpad: &mut [f32]) {
    let g = &plan.g;
    let (oc, c, taps) = (g.oc, g.c, g.kh * g.kw);
    dxpad.fill(0.0);
    for (m, &base) in bases.iter().enumerate() {
        let dym = &dy[m * oc..][..oc];
        for (t, &toff) in plan.tapoff.iter().enumerate() {
            for c0 in (0..c).step_by(LANES) {
                let w = LANES.min(c - c0);
                let mut acc = s.splat(0.0);
                for (o, &d) in dym.iter().enumerate() {
                    acc = s.mul_add(s.splat(d), s.load(&wr[(o * taps + t) * c + c0..], w), acc);
                }
                let target = &mut dxpad[base + toff + c0..];
                let cur = s.load(target, w);
                s.store(target, w, s.add(cur, acc));
            }
        }
    }
}

/// Runs `f` on each work item, in parallel when there is more than one (a single chunk runs
/// on the calling thread, which keeps batch-1 latency low).
fn for_each_chunk<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if items.len() == 1 {
        items.into_iter().for_each(f);
    } else {
        items.into_par_iter().for_each(f);
    }
}

/// Forward. x (N, C, H, W) stored channels-last unless `x_nchw`; w (OC, C, KH, KW); bias (OC).
/// Writes y stored (N, OH, OW, OC). With `keep_padded`, returns the padded input of every
/// chunk, one after another, for the backward.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward<S: Simd>(
    s: S,
    g: &ConvGeom,
    x: &[f32],
    x_nchw: bool,
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    keep_padded: bool,
) -> Option<Pooled> {
    let plan = Plan::new(*g);
    let wt = weights_k_major(g, w);
    let zeros = vec![0.0; g.oc];
    let bias = bias.unwrap_or(&zeros);
    let n = x.len() / g.in_size();
    let bases = plan.bases(CHUNK.min(n));
    let run = |xc: &[f32], yc: &mut [f32], xpad: &mut [f32]| {
        let b = xc.len() / g.in_size();
        plan.pad(xc, x_nchw, xpad);
        s.vectorize(ForwardChunk {
            plan: &plan,
            xpad,
            bases: &bases[..b * g.ohw()],
            wt: &wt,
            bias,
            y: yc,
        });
    };
    let xs = x.chunks(CHUNK * g.in_size());
    let ys = y.chunks_mut(CHUNK * g.out_size());
    if keep_padded {
        let mut all = pool::take(n * plan.padded_size());
        let work: Vec<_> = xs.zip(ys).zip(all.chunks_mut(CHUNK * plan.padded_size())).collect();
        for_each_chunk(work, |((xc, yc), xpad)| run(xc, yc, xpad));
        Some(Pooled(all))
    } else {
        let work: Vec<_> = xs.zip(ys).collect();
        for_each_chunk(work, |(xc, yc)| {
            let mut xpad = pool::take(xc.len() / g.in_size() * plan.padded_size());
            run(xc, yc, &mut xpad);
            pool::recycle(xpad);
        });
        None
    }
}

/// Backward. From the forward's padded input `xpad` (all chunks) and dy stored
/// (N, OH, OW, OC): dw (OC, C, KH, KW) and dbias (OC), overwritten, and dx when asked for
/// (stored (N, C, H, W) if `x_nchw`, else channels-last).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<S: Simd>(
    s: S,
    g: &ConvGeom,
    xpad: &[f32],
    x_nchw: bool,
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: &mut [f32],
) {
    let plan = Plan::new(*g);
    let (ckk, oc) = (g.ckk(), g.oc);
    let wr = weights_oc_major(g, w);
    let n = dy.len() / g.out_size();
    let bases = plan.bases(CHUNK.min(n));
    let part_len = ckk * oc + oc;
    let mut partials = vec![0.0f32; n.div_ceil(CHUNK) * part_len];
    let per_chunk = |xpc: &[f32], dyc: &[f32], dxc: Option<&mut [f32]>, part: &mut [f32]| {
        let b = dyc.len() / g.out_size();
        let bases = &bases[..b * g.ohw()];
        let (pw, pb) = part.split_at_mut(ckk * oc);
        s.vectorize(WeightGradChunk {
            plan: &plan,
            xpad: xpc,
            bases,
            dy: dyc,
            dwt: pw,
            db: pb,
        });
        if let Some(dxc) = dxc {
            let mut dxpad = pool::take(xpc.len());
            s.vectorize(InputGradChunk {
                plan: &plan,
                bases,
                dy: dyc,
                wr: &wr,
                dxpad: &mut dxpad,
            });
            plan.crop(&dxpad, x_nchw, dxc);
            pool::recycle(dxpad);
        }
    };
    let xps = xpad.chunks(CHUNK * plan.padded_size());
    let dys = dy.chunks(CHUNK * g.out_size());
    let parts = partials.chunks_mut(part_len);
    match dx {
        Some(dx) => {
            let work: Vec<_> = xps
                .zip(dys)
                .zip(dx.chunks_mut(CHUNK * g.in_size()))
                .zip(parts)
                .collect();
            for_each_chunk(work, |(((xc, d), dxc), part)| per_chunk(xc, d, Some(dxc), part));
        }
        None => {
            let work: Vec<_> = xps.zip(dys).zip(parts).collect();
            for_each_chunk(work, |((xc, d), part)| per_chunk(xc, d, None, part));
        }
    }
    dw.fill(0.0);
    dbias.fill(0.0);
    for part in partials.chunks(part_len) {
        let (pw, pb) = part.split_at(ckk * oc);
        for o in 0..oc {
            for c in 0..g.c {
                for t in 0..g.kh * g.kw {
                    dw[(o * g.c + c) * g.kh * g.kw + t] += pw[(t * g.c + c) * oc + o];
                }
            }
        }
        dbias.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
}

/// `F.conv2d(x, weight, bias, stride, padding)`: x (N, C, H, W), weight (OC, C, KH, KW).
/// The result is stored channels-last (see the module header); x may be stored either way.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Tensor {
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
    let xpad = profile::time(
        || profile::label("conv2d", xs),
        Phase::Forward,
        || {
            let bias_data = bias.map(|b| b.data());
            let b = bias_data.as_deref().map(|v| &v[..]);
            simd_dispatch!(conv2d_forward(
                &g,
                &x.data(),
                x_nchw,
                &weight.data(),
                b,
                &mut y,
                needs_graph
            ))
        },
    );
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Tensor::from_op_channels_last(
        y,
        &[n, g.oc, g.oh, g.ow],
        "conv2d",
        inputs,
        Box::new(move |inp, _out, dy| {
            let xpad = xpad
                .as_ref()
                .expect("conv2d: padded input kept when the graph is recorded");
            let mut dx = inp[0].requires_grad().then(|| pool::take(inp[0].numel()));
            let mut dw = vec![0.0f32; inp[1].numel()];
            let mut db = vec![0.0f32; g.oc];
            let wd = inp[1].data();
            simd_dispatch!(conv2d_backward(
                &g,
                xpad,
                x_nchw,
                &wd,
                dy,
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
        check(
            &inputs,
            |t| conv2d(&t[0], &t[1], t.get(2), s, p),
            |v| naive(&v[0], &v[1], v.get(2).map(|b| &b[..]), n, &g),
            1e-4,
        );
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
