//! Winograd F(4x4, 3x3): 3x3 convolutions of stride 1 and padding 1 for inference, with 36
//! multiplications for each 4x4 block of outputs where the direct convolution takes 144.
//!
//! Shapes: x (N, H, W, C) channels-last, weight (OC, C, 3, 3) as PyTorch stores it, y
//! (N, H, W, OC) channels-last, or (N, H/2, W/2, OC) with the 2x2 max pooling fused. The output
//! is cut into T = ceil(H/4) * ceil(W/4) tiles of 4x4; tile t reads the 6x6 input patch around
//! it (zeros outside the image). With p = 6i + j an entry of a 6x6 transformed tile, over the
//! R = n T tiles of a group of n images (enough images that R reaches `GROUP_ROWS`, 16):
//! ```text
//!   U[p] (C, OC) = G w G^T             the weights, once per weight tensor (`winograd_weights`)
//!   V[p] (R, C)  = B^T d B             each tile's input patch d
//!   M[p] (R, OC) = V[p] U[p]           36 products, by the forward's GEMM kernel
//!   y (4x4)      = A^T M A + bias      then ReLU (and the 2x2 maxima when pooled)
//! ```
//! with the interpolation points 0, 1, -1, 2, -2 and infinity (Lavin and Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016):
//! ```text
//!   B^T = [4  0 -5  0 1 0;  0 -4 -4  1 1 0;  0 4 -4 -1 1 0;  0 -2 -1  2 1 0;  0 2 -1 -2 1 0;
//!          0  4  0 -5 0 1]
//!   G   = [1/4 0 0;  -1/6 -1/6 -1/6;  -1/6 1/6 -1/6;  1/24 1/12 1/6;  1/24 -1/12 1/6;  0 0 1]
//!   A^T = [1 1 1 1 1 0;  0 1 -1 2 -2 0;  0 1 1 4 4 0;  0 1 -1 8 -8 1]
//! ```
//! The transforms run over 16 channels at a time in vector lanes, as fused multiply-adds in a
//! fixed order.
//!
//! The values differ from the direct convolution's by rounding only (the sums are taken in
//! another order, through the transforms' larger intermediate values; the tests bound the
//! difference): `bncnn`'s blocks use it in inference (see `ConvBn`), training never does. Only
//! finite inputs and weights take it, so a NaN or an infinity spreads exactly as through the
//! direct convolution, which runs for them instead. Each tile's sums are the same whichever
//! images share its group, so an image gets the same bits alone as in any batch and on every
//! thread count; the vector backends give the same bits as each other, as everywhere in the
//! kernels.

use super::ConvGeom;
use super::kernels::{MR, rows_times_matrix};
use crate::ops::simd::{Kernel, LANES, Simd};
use crate::ops::{CHUNK, for_each_chunk};
use crate::tensor::pool;

/// Side of an output tile, and of the input patch it reads.
const TILE: usize = 4;
const PATCH: usize = TILE + 2;
/// Entries of a transformed tile.
const P: usize = PATCH * PATCH;
/// The products' rows (tiles) a group of images should reach: with fewer, each product reads
/// its block of transformed weights (16 KB for 64 x 64 channels) for only a few rows; with
/// more, the group's transformed tiles leave the cache before they are used. `bncnn`'s whole
/// forward (a batch of 16, one thread, medians per image): 4, 8, 16, 32 and 64 rows took
/// 48.0-48.5, 48.8-49.4, 47.7-48.3, 49.9-50.4 and 50.1-50.6 us on AVX2; 16 is also
/// AVX-512's best.
const GROUP_ROWS: usize = 16;

/// Whether a convolution can run as Winograd F(4x4, 3x3) here: 3x3, stride 1, padding 1, and
/// channels in and out a multiple of 16 (the transforms' vector width). With `pooled`, the
/// output's sides must be even (each 2x2 pooling window then lies in one tile).
pub fn applies(g: &ConvGeom, pooled: bool) -> bool {
    (g.kh, g.kw, g.stride, g.padding) == (3, 3, 1, 1)
        && g.c.is_multiple_of(LANES)
        && g.oc.is_multiple_of(LANES)
        && (!pooled || (g.oh.is_multiple_of(2) && g.ow.is_multiple_of(2)))
}

/// Whether every value is finite (no NaN, no infinity): 0 x v is 0 for a finite v and NaN
/// otherwise, summed lane by lane.
pub fn all_finite(v: &[f32]) -> bool {
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += x * 0.0;
        }
    }
    chunks.remainder().iter().all(|x| x.is_finite()) && acc.iter().all(|a| *a == 0.0)
}

/// `U[p][c][oc] = (G w[oc][c] G^T)[p]`, from weights (OC, C, 3, 3), computed in f64 and rounded
/// once.
pub fn winograd_weights(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    const GM: [[f64; 3]; PATCH] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let (c, oc) = (g.c, g.oc);
    assert_eq!(w.len(), oc * c * 9, "winograd_weights: weights (OC, C, 3, 3)");
    let mut u = vec![0.0; P * c * oc];
    for (o, wo) in w.chunks_exact(c * 9).enumerate() {
        for (ci, k) in wo.chunks_exact(9).enumerate() {
            // G k (6x3), then (G k) G^T (6x6).
            let gk: [[f64; 3]; PATCH] =
                std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|l| GM[i][l] * k[l * 3 + j] as f64).sum()));
            for i in 0..PATCH {
                for j in 0..PATCH {
                    let v: f64 = (0..3).map(|l| gk[i][l] * GM[j][l]).sum();
                    u[((i * PATCH + j) * c + ci) * oc + o] = v as f32;
                }
            }
        }
    }
    u
}

/// Tiles of one image's output: (rows, columns).
fn tiles(g: &ConvGeom) -> (usize, usize) {
    (g.oh.div_ceil(TILE), g.ow.div_ceil(TILE))
}

/// The forward: y = relu(conv(x, w) + bias), stored (N, OH, OW, OC), or with `pooled` its 2x2
/// maximum, stored (N, OH/2, OW/2, OC). `u` from [`winograd_weights`]; x (N, H, W, C). The
/// caller checks [`applies`] (and that x and the weights are finite, see the module header).
pub fn winograd_relu_forward<S: Simd>(
    s: S,
    g: &ConvGeom,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    pooled: bool,
    y: &mut [f32],
) {
    assert!(
        applies(g, pooled),
        "winograd: a 3x3 convolution of stride 1 and padding 1"
    );
    let out_size = if pooled {
        g.oh / 2 * (g.ow / 2) * g.oc
    } else {
        g.out_size()
    };
    let n = x.len() / g.in_size();
    assert!(
        x.len() == n * g.in_size() && y.len() == n * out_size && u.len() == P * g.c * g.oc && bias.len() == g.oc,
        "winograd: buffer sizes"
    );
    let (th, tw) = tiles(g);
    let t = th * tw;
    // Images per group: at least GROUP_ROWS tiles, at most a chunk.
    let per = GROUP_ROWS.div_ceil(t).clamp(1, CHUNK);
    let work: Vec<_> = x
        .chunks(CHUNK * g.in_size())
        .zip(y.chunks_mut(CHUNK * out_size))
        .collect();
    for_each_chunk(work, |(xc, yc)| {
        // Room for a last block of MR rows read past the end (computed, not stored).
        let mut v = pool::take(P * per * t * g.c + MR * g.c);
        let mut m = pool::take(P * per * t * g.oc);
        for (xg, yg) in xc.chunks(per * g.in_size()).zip(yc.chunks_mut(per * out_size)) {
            s.vectorize(Group {
                g,
                x: xg,
                u,
                bias,
                pooled,
                v: &mut v,
                m: &mut m,
                y: yg,
            });
        }
        pool::recycle(m);
        pool::recycle(v);
    });
}

/// A group of images: input transforms, the 36 products over all their tiles, output
/// transforms.
struct Group<'a> {
    g: &'a ConvGeom,
    x: &'a [f32],
    u: &'a [f32],
    bias: &'a [f32],
    pooled: bool,
    v: &'a mut [f32],
    m: &'a mut [f32],
    y: &'a mut [f32],
}

/// c * a + b, rounded once on the vector backends (fused).
#[inline(always)]
fn fma<S: Simd>(s: S, a: S::V, c: f32, b: S::V) -> S::V {
    s.mul_add(a, s.splat(c), b)
}

impl Kernel for Group<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Group {
            g,
            x,
            u,
            bias,
            pooled,
            v,
            m,
            y,
        } = self;
        let (c, oc, (th, tw)) = (g.c, g.oc, tiles(g));
        let n = x.len() / g.in_size();
        let out_size = y.len() / n;
        let rows = n * th * tw;
        // The pooled output's sides.
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        // `V[p][r][c] = (B^T d B)[p]` of tile r's input patch d, 16 channels at a time: column j
        // of B^T d from column j of d, then each row of it times B. (No closures in the
        // kernels: they would not be compiled with the backend's instructions.)
        for (img, xi) in x.chunks_exact(g.in_size()).enumerate() {
            for ty in 0..th {
                for tx in 0..tw {
                    let r = (img * th + ty) * tw + tx;
                    for c0 in (0..c).step_by(LANES) {
                        let mut btd = [[s.zero(); PATCH]; PATCH];
                        for j in 0..PATCH {
                            let mut col = [s.zero(); PATCH];
                            for (i, dv) in col.iter_mut().enumerate() {
                                let (yy, xx) = ((TILE * ty + i).wrapping_sub(1), (TILE * tx + j).wrapping_sub(1));
                                if yy < g.h && xx < g.w {
                                    *dv = s.load(&xi[(yy * g.w + xx) * c + c0..], LANES);
                                }
                            }
                            for (row, v) in btd.iter_mut().zip(input_transform(s, &col)) {
                                row[j] = v;
                            }
                        }
                        for (i, row) in btd.iter().enumerate() {
                            for (j, vv) in input_transform(s, row).into_iter().enumerate() {
                                s.store(&mut v[((i * PATCH + j) * rows + r) * c + c0..], LANES, vv);
                            }
                        }
                    }
                }
            }
        }
        // M[p] = V[p] U[p], as the forward's patch-matrix product.
        match c {
            16 => products::<S, 16>(s, (v, u, m), (rows, c, oc)),
            32 => products::<S, 32>(s, (v, u, m), (rows, c, oc)),
            _ => products::<S, 0>(s, (v, u, m), (rows, c, oc)),
        }
        // y = A^T M A + bias, ReLU, per tile and 16 output channels: column j of A^T M from
        // column j of M, then each row of it times A.
        for (img, yi) in y.chunks_exact_mut(out_size).enumerate() {
            for ty in 0..th {
                for tx in 0..tw {
                    let r = (img * th + ty) * tw + tx;
                    for o0 in (0..oc).step_by(LANES) {
                        let b = s.load(&bias[o0..], LANES);
                        let mut atm = [[s.zero(); PATCH]; TILE];
                        for j in 0..PATCH {
                            let mut col = [s.zero(); PATCH];
                            for (i, mv) in col.iter_mut().enumerate() {
                                *mv = s.load(&m[((i * PATCH + j) * rows + r) * oc + o0..], LANES);
                            }
                            for (row, v) in atm.iter_mut().zip(output_transform(s, &col)) {
                                row[j] = v;
                            }
                        }
                        let mut out = [[s.zero(); TILE]; TILE];
                        for (i, row) in atm.iter().enumerate() {
                            for (j, val) in output_transform(s, row).into_iter().enumerate() {
                                out[i][j] = s.relu(s.add(val, b));
                            }
                        }
                        if pooled {
                            for i in 0..TILE / 2 {
                                for j in 0..TILE / 2 {
                                    let (yy, xx) = (TILE / 2 * ty + i, TILE / 2 * tx + j);
                                    if yy < ph && xx < pw {
                                        let top = s.max(out[2 * i][2 * j], out[2 * i][2 * j + 1]);
                                        let bottom = s.max(out[2 * i + 1][2 * j], out[2 * i + 1][2 * j + 1]);
                                        s.store(&mut yi[(yy * pw + xx) * oc + o0..], LANES, s.max(top, bottom));
                                    }
                                }
                            }
                            continue;
                        }
                        for (i, row) in out.iter().enumerate() {
                            for (j, val) in row.iter().enumerate() {
                                let (yy, xx) = (TILE * ty + i, TILE * tx + j);
                                if yy < g.oh && xx < g.ow {
                                    s.store(&mut yi[(yy * g.ow + xx) * oc + o0..], LANES, *val);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `M[p] (R, OC) = V[p] (R, C) U[p] (C, OC)` for the 36 entries p: as many tiles at a time as
/// the backend holds in registers (16; 6 on AVX2, 4 on NEON), each tile's sum over the C
/// channels in order (so the same bits whatever the blocking). AS: V's row stride C when it is
/// a constant the kernel is compiled for, else 0.
#[inline(always)]
fn products<S: Simd, const AS: usize>(
    s: S,
    (v, u, m): (&[f32], &[f32], &mut [f32]),
    (t_all, c, oc): (usize, usize, usize),
) {
    let step = if S::ROWS >= MR { MR } else { S::ROWS.min(6) };
    for p in 0..P {
        let (vp, up) = (&v[p * t_all * c..], &u[p * c * oc..(p + 1) * c * oc]);
        let mp = &mut m[p * t_all * oc..(p + 1) * t_all * oc];
        for t0 in (0..t_all).step_by(step) {
            let rows = step.min(t_all - t0);
            let (a, out, k) = (&vp[t0 * c..], &mut mp[t0 * oc..], (c, oc));
            match rows {
                0..=4 => rows_times_matrix::<S, AS, 4>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                5..=6 if step == 6 => rows_times_matrix::<S, AS, 6>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                5..=8 => rows_times_matrix::<S, AS, 8>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                _ => rows_times_matrix::<S, AS, MR>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
            }
        }
    }
}

/// B^T d of a column d of 6 (or, applied to a row of B^T d, that row times B), sharing the
/// sums that rows 1-2 and 3-4 of B^T have in common.
#[inline(always)]
fn input_transform<S: Simd>(s: S, d: &[S::V; PATCH]) -> [S::V; PATCH] {
    let a = fma(s, d[2], -4.0, d[4]); // d4 - 4 d2
    let b = fma(s, d[1], -4.0, d[3]); // d3 - 4 d1
    let c = fma(s, d[2], -1.0, d[4]); // d4 - d2
    let e = fma(s, d[1], -1.0, d[3]); // d3 - d1
    [
        fma(s, d[0], 4.0, fma(s, d[2], -5.0, d[4])),
        s.add(a, b),
        fma(s, b, -1.0, a),
        fma(s, e, 2.0, c),
        fma(s, e, -2.0, c),
        fma(s, d[1], 4.0, fma(s, d[3], -5.0, d[5])),
    ]
}

/// A^T m of a column m of 6 (or, applied to a row of A^T m, that row times A).
#[inline(always)]
fn output_transform<S: Simd>(s: S, m: &[S::V; PATCH]) -> [S::V; TILE] {
    let sum12 = s.add(m[1], m[2]);
    let dif12 = fma(s, m[2], -1.0, m[1]);
    let sum34 = s.add(m[3], m[4]);
    let dif34 = fma(s, m[4], -1.0, m[3]);
    [
        s.add(s.add(m[0], sum12), sum34),
        fma(s, dif34, 2.0, dif12),
        fma(s, sum34, 4.0, sum12),
        s.add(fma(s, dif34, 8.0, dif12), m[5]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// relu(conv(x, w) + b) in f64, x (H, W, C) channels-last, w (OC, C, 3, 3), stride 1,
    /// padding 1; y (OH, OW, OC).
    fn direct(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let mut y = vec![0.0; g.out_size()];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for o in 0..g.oc {
                    let mut acc = b[o] as f64;
                    for c in 0..g.c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (yy, xx) = ((oy + ki).wrapping_sub(1), (ox + kj).wrapping_sub(1));
                                if yy < g.h && xx < g.w {
                                    acc += x[(yy * g.w + xx) * g.c + c] as f64
                                        * w[((o * g.c + c) * 3 + ki) * 3 + kj] as f64;
                                }
                            }
                        }
                    }
                    y[(oy * g.ow + ox) * g.oc + o] = acc.max(0.0);
                }
            }
        }
        y
    }

    fn case(
        rng: &mut Rng,
        n: usize,
        (c, h, w): (usize, usize, usize),
        oc: usize,
    ) -> (ConvGeom, Vec<f32>, Vec<f32>, Vec<f32>) {
        let g = ConvGeom::new((c, h, w), (oc, 3, 3), 1, 1);
        let x = (0..n * g.in_size()).map(|_| rng.uniform(-0.5, 1.5)).collect();
        let wt = (0..oc * c * 9).map(|_| rng.uniform(-0.2, 0.2)).collect();
        let b = (0..oc).map(|_| rng.uniform(-0.5, 0.5)).collect();
        (g, x, wt, b)
    }

    fn run<S: Simd>(s: S, g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], pooled: bool) -> Vec<f32> {
        let n = x.len() / g.in_size();
        let per = if pooled {
            g.oh / 2 * (g.ow / 2) * g.oc
        } else {
            g.out_size()
        };
        let mut y = vec![f32::NAN; n * per];
        winograd_relu_forward(s, g, x, &winograd_weights(g, w), b, pooled, &mut y);
        y
    }

    /// bncnn's blocks 2 and 3, odd sides (a last row and column of tiles cut in half), and
    /// more channels: within 1e-5 of the f64 convolution, relative to the sum of the products'
    /// magnitudes (the bound of a sum's rounding), on every backend.
    #[test]
    fn matches_the_direct_convolution_within_rounding() {
        let mut rng = Rng::new(7);
        for (n, chw, oc) in [
            (3, (16, 14, 14), 32),
            (2, (32, 7, 7), 64),
            (2, (16, 5, 9), 16),
            (1, (48, 3, 4), 32),
        ] {
            let (g, x, w, b) = case(&mut rng, n, chw, oc);
            let mag: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let wabs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            let (want, scale): (Vec<_>, Vec<_>) = (0..n)
                .map(|i| {
                    let at = i * g.in_size()..(i + 1) * g.in_size();
                    (
                        direct(&g, &x[at.clone()], &w, &b),
                        direct(&g, &mag[at], &wabs, &vec![0.0; oc]),
                    )
                })
                .unzip();
            let (want, scale) = (want.concat(), scale.concat());
            crate::for_each_backend!(|backend, s| {
                let y = run(s, &g, &x, &w, &b, false);
                for (k, &got) in y.iter().enumerate() {
                    let tol = 1e-5 * (scale[k] + 1.0);
                    assert!(
                        (got as f64 - want[k]).abs() <= tol,
                        "{backend:?} {chw:?}->{oc} value {k}: {got} against {}",
                        want[k]
                    );
                }
            });
        }
    }

    /// The pooled output is the maximum of the unpooled one over each 2x2 window, bit for bit.
    #[test]
    fn pooling_takes_the_maximum_of_each_tile() {
        let mut rng = Rng::new(8);
        let (g, x, w, b) = case(&mut rng, 2, (16, 14, 14), 32);
        crate::for_each_backend!(|backend, s| {
            let (y, p) = (run(s, &g, &x, &w, &b, false), run(s, &g, &x, &w, &b, true));
            for (i, &got) in p.iter().enumerate() {
                let (o, px, py, n) = (i % 32, i / 32 % 7, i / 32 / 7 % 7, i / (32 * 49));
                let at = |dy: usize, dx: usize| y[n * g.out_size() + ((2 * py + dy) * 14 + 2 * px + dx) * 32 + o];
                let want = at(0, 0).max(at(0, 1)).max(at(1, 0).max(at(1, 1)));
                assert_eq!(got.to_bits(), want.to_bits(), "{backend:?} pooled value {i}");
            }
        });
    }

    /// The vector backends give the same bits (fused multiply-adds in the same order); each
    /// tile's sums are the same whichever images share its group (4 of block 3's shape, 1 of
    /// block 2's), so any split of the batch gives them too.
    #[test]
    fn same_bits_on_every_vector_backend_and_any_batch_split() {
        let mut rng = Rng::new(9);
        for (chw, oc) in [((32, 7, 7), 64), ((16, 14, 14), 32)] {
            same_bits_for(&mut rng, chw, oc);
        }
    }

    fn same_bits_for(rng: &mut Rng, chw: (usize, usize, usize), oc: usize) {
        let (g, x, w, b) = case(rng, 11, chw, oc);
        let mut seen: Option<Vec<u32>> = None;
        crate::for_each_backend!(|backend, s| {
            let y: Vec<u32> = run(s, &g, &x, &w, &b, false).iter().map(|v| v.to_bits()).collect();
            // Each image alone gives the bits it gets within the batch.
            for i in [0, 5, 10] {
                let one = run(s, &g, &x[i * g.in_size()..(i + 1) * g.in_size()], &w, &b, false);
                let bits: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
                assert_eq!(
                    bits,
                    y[i * g.out_size()..(i + 1) * g.out_size()],
                    "{backend:?} image {i} alone"
                );
            }
            match &seen {
                _ if backend == crate::ops::simd::Backend::Portable => {}
                Some(first) => assert_eq!(first, &y, "{backend:?} against the first vector backend"),
                None => seen = Some(y),
            }
        });
    }

    #[test]
    fn finiteness_is_told_in_every_position() {
        for len in [0, 1, 15, 16, 17, 40] {
            let v = vec![1.5f32; len];
            assert!(all_finite(&v));
            for i in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut w = v.clone();
                    w[i] = bad;
                    assert!(!all_finite(&w), "{bad} at {i} of {len}");
                }
            }
        }
        assert!(all_finite(&[f32::MAX, -f32::MAX, f32::MIN_POSITIVE]));
    }

    #[test]
    fn applies_only_where_it_is_defined() {
        let g = |c, h, oc, k, s, p| ConvGeom::new((c, h, h), (oc, k, k), s, p);
        assert!(applies(&g(16, 14, 32, 3, 1, 1), true));
        assert!(applies(&g(32, 7, 64, 3, 1, 1), false));
        assert!(!applies(&g(32, 7, 64, 3, 1, 1), true), "odd sides are not pooled here");
        assert!(!applies(&g(64, 7, 64, 3, 2, 1), false), "stride 2");
        assert!(!applies(&g(1, 28, 16, 3, 1, 1), false), "one input channel");
        assert!(!applies(&g(16, 14, 32, 5, 1, 2), false), "5x5");
        assert!(!applies(&g(16, 14, 32, 3, 1, 0), false), "no padding");
    }

    /// The op on tensors: close to the direct convolution's values for finite ones; for a NaN
    /// or an infinity in x or a NaN in the weights, the direct convolution's bits (the op runs
    /// it instead); the same for x stored (N, C, H, W), which it does not take.
    #[test]
    fn the_op_runs_the_direct_convolution_where_winograd_does_not_apply() {
        use crate::ops::{conv2d_relu, conv2d_relu_max_pool2d, conv2d_relu_winograd};
        use crate::tensor::{Tensor, no_grad};
        let mut rng = Rng::new(10);
        let (g, x, w, b) = case(&mut rng, 2, (16, 6, 6), 16);
        let shape = [2, g.c, g.h, g.w];
        let (wt, bt) = (Tensor::from_vec(w, &[16, 16, 3, 3]), Tensor::from_vec(b, &[16]));
        let nhwc = |v: Vec<f32>| Tensor::from_op_in_layout(v, &shape, true, "x", vec![], Box::new(|_, _, _| vec![]));
        let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        no_grad(|| {
            for pooled in [false, true] {
                let direct = |x: &Tensor| match pooled {
                    true => conv2d_relu_max_pool2d(x, &wt, Some(&bt), 1, 1),
                    false => conv2d_relu(x, &wt, Some(&bt), 1, 1),
                };
                let xt = nhwc(x.clone());
                let (got, want) = (conv2d_relu_winograd(&xt, &wt, Some(&bt), (1, 1), pooled), direct(&xt));
                assert_ne!(bits(&got), bits(&want), "Winograd ran (pooled: {pooled})");
                for (a, b) in got.to_vec().iter().zip(want.to_vec()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "pooled {pooled}: {a} against {b}"
                    );
                }
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut xb = x.clone();
                    xb[37] = bad;
                    let xt = nhwc(xb);
                    let got = conv2d_relu_winograd(&xt, &wt, Some(&bt), (1, 1), pooled);
                    assert_eq!(bits(&got), bits(&direct(&xt)), "{bad} in x (pooled: {pooled})");
                }
                // A weight that is not finite: the direct convolution too.
                let mut wb = wt.to_vec();
                wb[100] = f32::NAN;
                let wbt = Tensor::from_vec(wb, &[16, 16, 3, 3]);
                let xt = nhwc(x.clone());
                let got = conv2d_relu_winograd(&xt, &wbt, Some(&bt), (1, 1), pooled);
                let want = match pooled {
                    true => conv2d_relu_max_pool2d(&xt, &wbt, Some(&bt), 1, 1),
                    false => conv2d_relu(&xt, &wbt, Some(&bt), 1, 1),
                };
                assert_eq!(bits(&got), bits(&want), "NaN in the weights (pooled: {pooled})");
                let xc = Tensor::from_vec(x.clone(), &shape);
                let got = conv2d_relu_winograd(&xc, &wt, Some(&bt), (1, 1), pooled);
                assert_eq!(
                    bits(&got),
                    bits(&direct(&xc)),
                    "x stored (N, C, H, W) (pooled: {pooled})"
                );
            }
        });
    }
}
