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
//!   forward  y (M, OC)    = A Wt + bias          (16 pixels in registers, OC in vector lanes;
//!                             when C is a multiple of 16, A's rows are read straight from x,
//!                             each tap's 16 channels through a per-pixel offset: no matrix;
//!                             then on AVX-512, with OC a multiple of 32, 8 pixels by 32
//!                             channels at a time)
//!   backward dWt (CKK, OC) = A^T dy              (16 patch columns in registers; when C is a
//!                             multiple of 16 these are read straight from x too)
//!            dA (M, CKK)   = dy Wr, dx = row2im(dA)   (when C is a multiple of 16, each 16-column
//!                             block of dA goes straight into dx instead: no dA matrix)
//! A's rows have a fixed stride (16 or 160), so the kernels address the 16 register rows with
//! constant offsets and read each broadcast operand straight from memory.
//! Narrow layers (KW*C < 16: the first layer, one channel) skip the patch matrix: each sample
//! is kept as a zero-padded plane (Hp, Wp, C), which the kernels read at precomputed offsets,
//! and their backward makes one pass over dy (ReLU mask, dbias and dW together).
//! Chunks of [`CHUNK`](super::CHUNK) samples run in parallel; weight gradients are summed one
//! partial per chunk, in chunk order, so the result is the same for any number of threads.
//!
//! How the pieces fit:
//! - `plan`: [`ConvGeom`], the sizes of one convolution, and the strategy chosen once from
//!   them (`Plan`: planes, whole-tap blocks or a patch matrix), which the forward and backward
//!   `match` on.
//! - `layout`: where the data sits: im2row and row2im, the padded planes and their tap
//!   offsets, the whole-tap pixel offsets, and the weights in GEMM order ([`weights_k_major`]).
//! - `kernels`: the register-blocked microkernels, and all the `unsafe` code.
//! - `forward`: [`conv2d_forward`], one `Kernel` per chunk over flat buffers.
//! - `backward`: [`conv2d_backward`] and [`saved_for_backward`], one `Kernel` per chunk.
//! - here: the [`Tensor`] ops [`conv2d`] and [`conv2d_relu`], which record the backward.

mod backward;
mod forward;
mod kernels;
mod layout;
mod plan;
#[cfg(test)]
mod tests;
pub mod winograd;

pub use backward::{conv2d_backward, saved_for_backward};
pub use forward::{conv2d_forward, conv2d_relu_max_pool_forward};
pub use layout::weights_k_major;
pub use plan::ConvGeom;
pub use winograd::winograd_relu_forward;

use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::Tensor;
use crate::tensor::pool;

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

/// The geometry of `F.conv2d(x, weight, bias, stride, padding)`, with PyTorch's shape checks
/// (panics: these are programming errors).
fn geometry(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, (stride, padding): (usize, usize)) -> ConvGeom {
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
    ConvGeom::new((xs[1], xs[2], xs[3]), (ws[0], ws[2], ws[3]), stride, padding)
}

/// Whether a convolution of these inputs records a backward.
fn records_graph(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> bool {
    crate::tensor::is_grad_enabled()
        && (x.requires_grad() || weight.requires_grad() || bias.is_some_and(|b| b.requires_grad()))
}

/// `F.max_pool2d(F.relu(F.conv2d(x, weight, bias, stride, padding)), 2, 2)` as one op for
/// inference: without a graph to record, the pooling reads each chunk's activations while they
/// are still in the cache (see [`conv2d_relu_max_pool_forward`]); the same bits as the ops one
/// after the other, which it runs when gradients are recorded. The result is stored
/// channels-last.
pub fn conv2d_relu_max_pool2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Tensor {
    if records_graph(x, weight, bias) {
        return crate::ops::max_pool2d(&conv2d_relu(x, weight, bias, stride, padding), 2, 2, 0);
    }
    let xs = x.shape();
    let g = geometry(x, weight, bias, (stride, padding));
    let pg = crate::ops::max_pool2d::PoolGeom::new((g.oc, g.oh, g.ow), 2, 2, 0);
    let n = xs[0];
    let mut out = pool::take(n * g.oc * pg.oh * pg.ow);
    profile::time(
        || profile::label("conv2d_relu_max_pool2d", xs),
        Phase::Forward,
        || {
            let zeros = vec![0.0; g.oc];
            let bias_data = bias.map(|b| b.data());
            let b = bias_data.as_deref().unwrap_or(&zeros);
            let wt = weight.derived("conv2d.k_major", |w| weights_k_major(&g, w));
            simd_dispatch!(conv2d_relu_max_pool_forward(
                &g,
                &x.data(),
                !x.is_channels_last(),
                &wt,
                b,
                &pg,
                &mut out
            ))
        },
    );
    Tensor::from_op_in_layout(
        out,
        &[n, g.oc, pg.oh, pg.ow],
        true,
        "conv2d_relu_max_pool2d",
        vec![],
        Box::new(|_, _, _| unreachable!("conv2d_relu_max_pool2d records no graph")),
    )
}

/// [`conv2d_relu`], or with `pooled` [`conv2d_relu_max_pool2d`], for inference by Winograd
/// ([`winograd`]) where it applies: no graph to record, x stored channels-last, a 3x3
/// convolution of stride 1 or 2 and padding 1 with channels in and out a multiple of 16, x and
/// the weights finite. There it takes 36 (stride 1) or 81 (stride 2) multiplications for every
/// 144 of the direct convolution, whose values it gives up to rounding (the sums are taken in
/// another order); elsewhere it runs the direct op, with its bits. The result is stored
/// channels-last.
pub fn conv2d_relu_winograd(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (stride, padding): (usize, usize),
    pooled: bool,
) -> Tensor {
    let direct = || match pooled {
        true => conv2d_relu_max_pool2d(x, weight, bias, stride, padding),
        false => conv2d_relu(x, weight, bias, stride, padding),
    };
    let g = geometry(x, weight, bias, (stride, padding));
    if records_graph(x, weight, bias) || !x.is_channels_last() || !winograd::applies(&g, pooled) {
        return direct();
    }
    // The transformed weights, made and checked once per weight tensor (and again after it
    // changes): empty when one is not finite.
    let key = if stride == 1 {
        "conv2d.winograd"
    } else {
        "conv2d.winograd_stride2"
    };
    let u = weight.derived(key, |w| {
        let u = winograd::winograd_weights(&g, w);
        if winograd::all_finite(&u) { u } else { Vec::new() }
    });
    let bias_data = bias.map(|b| b.data().to_vec()).unwrap_or_else(|| vec![0.0; g.oc]);
    if u.is_empty() || !winograd::all_finite(&x.data()) || !winograd::all_finite(&bias_data) {
        return direct();
    }
    let n = x.shape()[0];
    let (oh, ow) = if pooled { (g.oh / 2, g.ow / 2) } else { (g.oh, g.ow) };
    let mut out = pool::take(n * g.oc * oh * ow);
    let name = if pooled {
        "conv2d_relu_max_pool2d_winograd"
    } else {
        "conv2d_relu_winograd"
    };
    profile::time(
        || profile::label(name, x.shape()),
        Phase::Forward,
        || simd_dispatch!(winograd_relu_forward(&g, &x.data(), &u, &bias_data, pooled, &mut out)),
    );
    Tensor::from_op_in_layout(
        out,
        &[n, g.oc, oh, ow],
        true,
        name,
        vec![],
        Box::new(|_, _, _| unreachable!("conv2d_relu_winograd records no graph")),
    )
}

fn conv2d_op(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (stride, padding): (usize, usize),
    relu: bool,
) -> Tensor {
    let xs = x.shape();
    let g = geometry(x, weight, bias, (stride, padding));
    let n = xs[0];
    let x_nchw = !x.is_channels_last();
    let mut y = pool::take(n * g.out_size());
    let needs_graph = records_graph(x, weight, bias);
    let name = if relu { "conv2d_relu" } else { "conv2d" };
    let x_version = x.version();
    let patches = profile::time(
        || profile::label(name, xs),
        Phase::Forward,
        || {
            let bias_data = bias.map(|b| b.data());
            let b = bias_data.as_deref();
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
            let mut dw = pool::take(inp[1].numel());
            // Only a convolution with a bias gets dbias made.
            let mut db = (inp.len() == 3).then(|| vec![0.0f32; g.oc]);
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
                db.as_deref_mut()
            ));
            let mut grads = vec![dx, Some(dw)];
            if let Some(db) = db {
                grads.push(Some(db));
            }
            grads
        }),
    )
}
