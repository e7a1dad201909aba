//! 2-D convolution (cross-correlation, as `torch.nn.functional.conv2d`) with stride and padding.
//!
//! Shapes: x (N, C, H, W), weight (OC, C, KH, KW), bias (OC), y (N, OC, OH, OW) with
//! OH = (H + 2P - KH) / S + 1 and OW likewise; CKK = C*KH*KW, OHW = OH*OW.
//!
//! Method: im2col + GEMM over a chunk of [`CHUNK`] samples at once. For a chunk of B samples,
//! cols (CKK, B*OHW) holds the input patches, and y = W (OC, CKK) * cols. Backward:
//! dW += dY (OC, B*OHW) * cols^T, dcols = W^T * dY, then col2im scatters dcols into dx.
//! Chunks run in parallel; weight gradients are summed one partial per chunk, in chunk order.

use rayon::prelude::*;

use super::{CHUNK, gemm};
use crate::tensor::Tensor;

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

    /// For each (kernel offset, output position) the input offset inside one channel plane,
    /// or None where the patch reads padding.
    fn src_index(&self, ki: usize, kj: usize, o_i: usize, o_j: usize) -> Option<usize> {
        let ih = (o_i * self.stride + ki).checked_sub(self.padding)?;
        let iw = (o_j * self.stride + kj).checked_sub(self.padding)?;
        (ih < self.h && iw < self.w).then_some(ih * self.w + iw)
    }
}

/// cols (CKK, B*OHW) from x (B, C, H, W).
fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let b = x.len() / g.in_size();
    let (ohw, row_len) = (g.ohw(), b * g.ohw());
    for c in 0..g.c {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &mut cols[r * row_len..(r + 1) * row_len];
                for s in 0..b {
                    let plane = &x[(s * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for o_i in 0..g.oh {
                        for o_j in 0..g.ow {
                            row[s * ohw + o_i * g.ow + o_j] =
                                g.src_index(ki, kj, o_i, o_j).map_or(0.0, |p| plane[p]);
                        }
                    }
                }
            }
        }
    }
}

/// dx (B, C, H, W) = sum of dcols (CKK, B*OHW) over the patches each input value fed.
fn col2im(g: &ConvGeom, dcols: &[f32], dx: &mut [f32]) {
    let b = dx.len() / g.in_size();
    let (ohw, row_len) = (g.ohw(), b * g.ohw());
    dx.fill(0.0);
    for c in 0..g.c {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &dcols[r * row_len..(r + 1) * row_len];
                for s in 0..b {
                    let plane = &mut dx[(s * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for o_i in 0..g.oh {
                        for o_j in 0..g.ow {
                            if let Some(p) = g.src_index(ki, kj, o_i, o_j) {
                                plane[p] += row[s * ohw + o_i * g.ow + o_j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward. x (N, C, H, W), w (OC, CKK), bias (OC) -> y (N, OC, OH, OW).
/// Also returns the im2col buffer, chunk after chunk, when `keep_cols` (for the backward).
pub fn conv2d_forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    keep_cols: bool,
) -> Option<Vec<f32>> {
    let n = x.len() / g.in_size();
    let cols_per_chunk = g.ckk() * CHUNK * g.ohw();
    let mut kept = keep_cols.then(|| vec![0.0f32; g.ckk() * n * g.ohw()]);
    let run = |(xc, yc): (&[f32], &mut [f32]), cols: &mut [f32]| {
        let b = xc.len() / g.in_size();
        im2col(g, xc, cols);
        let mut tmp = vec![0.0f32; g.oc * b * g.ohw()];
        gemm(
            g.oc,
            g.ckk(),
            b * g.ohw(),
            w,
            false,
            cols,
            false,
            0.0,
            &mut tmp,
        );
        // tmp (OC, B*OHW) -> y (B, OC, OHW), adding the bias.
        let ohw = g.ohw();
        for s in 0..b {
            for o in 0..g.oc {
                let src = &tmp[o * b * ohw + s * ohw..][..ohw];
                let dst = &mut yc[(s * g.oc + o) * ohw..][..ohw];
                let bo = bias.map_or(0.0, |bb| bb[o]);
                dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + bo);
            }
        }
    };
    let work = x
        .par_chunks(CHUNK * g.in_size())
        .zip(y.par_chunks_mut(CHUNK * g.out_size()));
    match kept.as_mut() {
        Some(all) => work
            .zip(all.par_chunks_mut(cols_per_chunk))
            .for_each(|(xy, cols)| run(xy, &mut cols[..])),
        None => work.for_each(|xy| {
            let b = xy.0.len() / g.in_size();
            let mut cols = vec![0.0f32; g.ckk() * b * g.ohw()];
            run(xy, &mut cols)
        }),
    }
    kept
}

/// Backward. From dy (N, OC, OH, OW) and the forward's cols: dw (OC, CKK) and dbias (OC),
/// overwritten, and dx (N, C, H, W) when asked for.
pub fn conv2d_backward(
    g: &ConvGeom,
    cols: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: &mut [f32],
) {
    let ohw = g.ohw();
    let cols_per_chunk = g.ckk() * CHUNK * ohw;
    // One (dW, db) partial per chunk, in chunk order.
    let per_chunk = |dyc: &[f32], colc: &[f32], dxc: Option<&mut [f32]>| {
        let b = dyc.len() / g.out_size();
        // dY (B, OC, OHW) -> (OC, B*OHW)
        let mut dyt = vec![0.0f32; g.oc * b * ohw];
        for s in 0..b {
            for o in 0..g.oc {
                dyt[o * b * ohw + s * ohw..][..ohw]
                    .copy_from_slice(&dyc[(s * g.oc + o) * ohw..][..ohw]);
            }
        }
        let mut pw = vec![0.0f32; g.oc * g.ckk()];
        gemm(
            g.oc,
            b * ohw,
            g.ckk(),
            &dyt,
            false,
            colc,
            true,
            0.0,
            &mut pw,
        );
        let pb: Vec<f32> = dyt.chunks(b * ohw).map(|r| r.iter().sum()).collect();
        if let Some(dxc) = dxc {
            let mut dcols = vec![0.0f32; g.ckk() * b * ohw];
            gemm(
                g.ckk(),
                g.oc,
                b * ohw,
                w,
                true,
                &dyt,
                false,
                0.0,
                &mut dcols,
            );
            col2im(g, &dcols, dxc);
        }
        (pw, pb)
    };
    let dys = dy.par_chunks(CHUNK * g.out_size());
    let colss = cols.par_chunks(cols_per_chunk);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = match dx {
        Some(dx) => dys
            .zip(colss)
            .zip(dx.par_chunks_mut(CHUNK * g.in_size()))
            .map(|((d, c), x)| per_chunk(d, c, Some(x)))
            .collect(),
        None => dys.zip(colss).map(|(d, c)| per_chunk(d, c, None)).collect(),
    };
    dw.fill(0.0);
    dbias.fill(0.0);
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        dbias.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
}

/// `F.conv2d(x, weight, bias, stride, padding)`: x (N, C, H, W), weight (OC, C, KH, KW).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
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
    let g = ConvGeom::new(
        (xs[1], xs[2], xs[3]),
        (ws[0], ws[2], ws[3]),
        stride,
        padding,
    );
    let n = xs[0];
    let mut y = vec![0.0f32; n * g.out_size()];
    let needs_graph = crate::tensor::is_grad_enabled()
        && (x.requires_grad() || weight.requires_grad() || bias.is_some_and(|b| b.requires_grad()));
    let cols = {
        let bias_data = bias.map(|b| b.data());
        conv2d_forward(
            &g,
            &x.data(),
            &weight.data(),
            bias_data.as_deref().map(|v| &v[..]),
            &mut y,
            needs_graph,
        )
    };
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Tensor::from_op(
        y,
        &[n, g.oc, g.oh, g.ow],
        "conv2d",
        inputs,
        Box::new(move |inp, _out, dy| {
            let cols = cols
                .as_ref()
                .expect("conv2d: cols kept when the graph is recorded");
            let mut dx = inp[0].requires_grad().then(|| vec![0.0f32; inp[0].numel()]);
            let mut dw = vec![0.0f32; inp[1].numel()];
            let mut db = vec![0.0f32; g.oc];
            conv2d_backward(
                &g,
                cols,
                &inp[1].data(),
                dy,
                dx.as_deref_mut(),
                &mut dw,
                &mut db,
            );
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
                                    if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((s * g.c + c) * g.h + ih as usize) * g.w + iw as usize];
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
        y.backward_with(r);
        let close = |got: &[f32], want: &[f32], what: &str| {
            assert_eq!(got.len(), want.len(), "{what}");
            for (k, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{what}[{k}]: {a} vs torch {b}"
                );
            }
        };
        close(&y.data(), &golden::Y, "y");
        close(&bt.grad().unwrap(), &golden::DB, "db");
        close(&wt.grad().unwrap(), &golden::DW, "dw");
        close(&xt.grad().unwrap(), &golden::DX, "dx");
    }

    #[allow(clippy::excessive_precision)]
    mod golden {
        include!("../../tests/golden/conv2d.rs");
    }
}
