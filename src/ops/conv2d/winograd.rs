//! Winograd's minimal filtering for the 3x3 convolutions of inference (padding 1), each 4x4
//! block of outputs from products in a transformed domain:
//! - stride 1, F(4x4, 3x3): 36 products where the direct convolution takes 144;
//! - stride 2: 81 products where it takes 144. The stride-2 convolution is the sum of four
//!   stride-1 ones on the input's even and odd rows and columns (its polyphase parts): the even
//!   ones meet the kernel's rows (and columns) 0 and 2, by F(4, 2); the odd ones its row 1 alone,
//!   by plain products. Per side that is 5 + 4 = 9 points, of which the 4 plain ones share one
//!   transformed weight, so products that share it run as one, over more rows.
//!
//! Shapes: x (N, H, W, C) channels-last, weight (OC, C, 3, 3) as PyTorch stores it, y
//! (N, OH, OW, OC) channels-last, or (N, OH/2, OW/2, OC) with the 2x2 max pooling fused. The output
//! is cut into T = ceil(OH/4) * ceil(OW/4) tiles of 4x4; tile t reads the N x N input patch
//! around it (N = 6 at stride 1, 9 at stride 2; zeros outside the image). With p an entry
//! (point) of an N x N transformed tile, over the R = n T tiles of a group of n images (enough
//! images that R reaches `GROUP_ROWS`, 16):
//! ```text
//!   U[p] (C, OC) = G w G^T             the weights, once per weight tensor (`winograd_weights`)
//!   V[p] (R, C)  = B^T d B             each tile's input patch d
//!   M[p] (R, OC) = V[p] U[p]           N^2 products (36 or 81) by the forward's GEMM kernel
//!   y (4x4)      = A^T M A + bias      then ReLU (and the 2x2 maxima when pooled)
//! ```
//! At stride 1 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016),
//! with the interpolation points 0, 1, -1, 2, -2 and infinity:
//! ```text
//!   B^T = [4  0 -5  0 1 0;  0 -4 -4  1 1 0;  0 4 -4 -1 1 0;  0 -2 -1  2 1 0;  0 2 -1 -2 1 0;
//!          0  4  0 -5 0 1]
//!   G   = [1/4 0 0;  -1/6 -1/6 -1/6;  -1/6 1/6 -1/6;  1/24 1/12 1/6;  1/24 -1/12 1/6;  0 0 1]
//!   A^T = [1 1 1 1 1 0;  0 1 -1 2 -2 0;  0 1 1 4 4 0;  0 1 -1 8 -8 1]
//! ```
//! At stride 2, F(4, 2) with the points 0, 1, -1, 2 and infinity (B2, G2, A2) on the even
//! entries e = (d0, d2, d4, d6, d8) of a side of the 9-wide patch and the kernel's taps 0 and 2;
//! the odd entries o = (d1, d3, d5, d7) as they are, with tap 1:
//! ```text
//!   B2^T = [2 -1 -2 1 0;  0 -2 -1 1 0;  0 2 -3 1 0;  0 -1 0 1 0;  0 2 -1 -2 1]
//!   G2   = [1/2 0;  -1/2 -1/2;  -1/6 1/6;  1/6 1/3;  0 1]
//!   A2^T = [1 1 1 1 0;  0 1 -1 2 0;  0 1 1 4 0;  0 1 -1 8 1]
//!   B^T d = (B2^T e, o)    G k = (G2 (k0, k2), k1, k1, k1, k1)    A^T m = A2^T m[..5] + m[5..]
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
use super::kernels::{MR, WIDE_VECTORS, rows_times_matrix, rows_times_matrix_wide};
use crate::ops::simd::{Kernel, LANES, Simd};
use crate::ops::{CHUNK, for_each_chunk};
use crate::tensor::pool;

/// Side of an output tile.
const TILE: usize = 4;
/// Transformed weights (distinct `U[p]`), and products, at either stride: at stride 2, 25 for
/// the even rows and columns, 5 + 5 for the mixed ones and 1 for the odd ones.
const PRODUCTS: usize = 36;
/// The products' rows (tiles) a group of images should reach: with fewer, each product reads
/// its block of transformed weights (16 KB for 64 x 64 channels) for only a few rows; with
/// more, the group's transformed tiles leave the cache before they are used. `bncnn`'s whole
/// forward (a batch of 16, one thread, medians per image): 4, 8, 16, 32 and 64 rows took
/// 48.0-48.5, 48.8-49.4, 47.7-48.3, 49.9-50.4 and 50.1-50.6 us on AVX2; 16 is also
/// AVX-512's best.
const GROUP_ROWS: usize = 16;

/// The side N of a patch (and of a transformed tile) at this stride: 6 or 9.
const fn side(stride: usize) -> usize {
    if stride == 1 { 6 } else { 9 }
}

/// Whether a convolution can run by Winograd here: 3x3, stride 1 or 2, padding 1, and channels
/// in and out a multiple of 16 (the transforms' vector width). With `pooled`, the output's
/// sides must be even (each 2x2 pooling window then lies in one tile).
pub fn applies(g: &ConvGeom, pooled: bool) -> bool {
    (g.kh, g.kw, g.padding) == (3, 3, 1)
        && (g.stride == 1 || g.stride == 2)
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

/// The rows of G (N x 3, applied to a column of 3 taps) at this stride.
fn g_rows(stride: usize) -> Vec<[f64; 3]> {
    if stride == 1 {
        return vec![
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
    }
    // G2 on taps 0 and 2, then tap 1 for each of the 4 odd entries.
    let mut g = vec![
        [0.5, 0.0, 0.0],
        [-0.5, 0.0, -0.5],
        [-1.0 / 6.0, 0.0, 1.0 / 6.0],
        [1.0 / 6.0, 0.0, 1.0 / 3.0],
        [0.0, 0.0, 1.0],
    ];
    g.extend([[0.0, 1.0, 0.0]; 4]);
    g
}

/// Product j's point (a, b) whose `U` it uses (N = `side` points a side), the first of its
/// points (where its rows of V and M start) and how many consecutive points it takes (sharing
/// that `U`).
///
/// The points' order (`point`): at stride 1 row by row. At stride 2, entries 0-4 of a side are
/// F(4, 2)'s points (from the even rows or columns) and 5-8 the odd rows or columns; the 25
/// entries with a, b < 5 come first, row by row, then for each a < 5 its 4 entries b >= 5, for
/// each b < 5 its 4 entries a >= 5, and the 16 with a, b >= 5.
fn product(side: usize, j: usize) -> ((usize, usize), usize, usize) {
    match (side, j) {
        (6, _) => ((j / 6, j % 6), j, 1),
        (_, 0..25) => ((j / 5, j % 5), j, 1),
        (_, 25..30) => ((j - 25, 5), 25 + 4 * (j - 25), 4),
        (_, 30..35) => ((5, j - 30), 45 + 4 * (j - 30), 4),
        _ => ((5, 5), 65, 16),
    }
}

/// Where entry (a, b) of an N x N transformed tile is kept (see [`product`]).
#[inline(always)]
fn point<const N: usize>(a: usize, b: usize) -> usize {
    if N == 6 {
        return a * 6 + b;
    }
    match (a < 5, b < 5) {
        (true, true) => a * 5 + b,
        (true, false) => 25 + a * 4 + (b - 5),
        (false, true) => 45 + b * 4 + (a - 5),
        (false, false) => 65 + (a - 5) * 4 + (b - 5),
    }
}

/// `U[j][c][oc] = (G w[oc][c] G^T)[a][b]` for product j's point (a, b) (see `product`), from
/// weights (OC, C, 3, 3), computed in f64 and rounded once.
pub fn winograd_weights(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let gm = g_rows(g.stride);
    let (c, oc) = (g.c, g.oc);
    assert_eq!(w.len(), oc * c * 9, "winograd_weights: weights (OC, C, 3, 3)");
    let mut u = vec![0.0; PRODUCTS * c * oc];
    for (o, wo) in w.chunks_exact(c * 9).enumerate() {
        for (ci, k) in wo.chunks_exact(9).enumerate() {
            for j in 0..PRODUCTS {
                let ((a, b), _, _) = product(gm.len(), j);
                // Row a of G k, then (G k G^T)[a][b].
                let gk: [f64; 3] = std::array::from_fn(|l| (0..3).map(|m| gm[a][m] * k[m * 3 + l] as f64).sum());
                let v: f64 = (0..3).map(|l| gk[l] * gm[b][l]).sum();
                u[(j * c + ci) * oc + o] = v as f32;
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
        "winograd: a 3x3 convolution of stride 1 or 2 and padding 1"
    );
    let out_size = if pooled {
        g.oh / 2 * (g.ow / 2) * g.oc
    } else {
        g.out_size()
    };
    let n = x.len() / g.in_size();
    assert!(
        x.len() == n * g.in_size() && y.len() == n * out_size && u.len() == PRODUCTS * g.c * g.oc && bias.len() == g.oc,
        "winograd: buffer sizes"
    );
    let (th, tw) = tiles(g);
    let t = th * tw;
    let p = side(g.stride).pow(2);
    // Images per group: at least GROUP_ROWS tiles, at most a chunk.
    let per = GROUP_ROWS.div_ceil(t).clamp(1, CHUNK);
    let work: Vec<_> = x
        .chunks(CHUNK * g.in_size())
        .zip(y.chunks_mut(CHUNK * out_size))
        .collect();
    for_each_chunk(work, |(xc, yc)| {
        // Room for a last block of MR rows read past the end (computed, not stored).
        let (v_len, m_len) = (p * per * t * g.c + MR * g.c, p * per * t * g.oc);
        let mut v = pool::take(v_len + pool::ALIGN_SLACK);
        let mut m = pool::take(m_len + pool::ALIGN_SLACK);
        let (va, ma) = (pool::aligned(&mut v, v_len), pool::aligned(&mut m, m_len));
        for (xg, yg) in xc.chunks(per * g.in_size()).zip(yc.chunks_mut(per * out_size)) {
            s.vectorize(Group {
                g,
                x: xg,
                u,
                bias,
                pooled,
                v: &mut *va,
                m: &mut *ma,
                y: yg,
            });
        }
        pool::recycle(m);
        pool::recycle(v);
    });
}

/// A group of images: input transforms, the products over all their tiles, output transforms.
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
        if self.g.stride == 1 {
            self.run_with::<S, 6>(s);
        } else {
            self.run_with::<S, 9>(s);
        }
    }
}

impl Group<'_> {
    /// [`Kernel::run`] with N x N transformed tiles (N = `side(g.stride)`).
    #[inline(always)]
    fn run_with<S: Simd, const N: usize>(self, s: S) {
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
        // Input rows (and columns) between neighbouring tiles' patches.
        let step = TILE * g.stride;
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
                        let mut btd = [[s.zero(); N]; N];
                        for j in 0..N {
                            let mut col = [s.zero(); N];
                            for (i, dv) in col.iter_mut().enumerate() {
                                let (yy, xx) = ((step * ty + i).wrapping_sub(1), (step * tx + j).wrapping_sub(1));
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
                                s.store(&mut v[(point::<N>(i, j) * rows + r) * c + c0..], LANES, vv);
                            }
                        }
                    }
                }
            }
        }
        // M[p] = V[p] U[p], as the forward's patch-matrix product.
        match c {
            16 => products::<S, 16>(s, N, (v, u, m), (rows, c, oc)),
            32 => products::<S, 32>(s, N, (v, u, m), (rows, c, oc)),
            _ => products::<S, 0>(s, N, (v, u, m), (rows, c, oc)),
        }
        // y = A^T M A + bias, ReLU, per tile and 16 output channels: column j of A^T M from
        // column j of M, then each row of it times A.
        for (img, yi) in y.chunks_exact_mut(out_size).enumerate() {
            for ty in 0..th {
                for tx in 0..tw {
                    let r = (img * th + ty) * tw + tx;
                    for o0 in (0..oc).step_by(LANES) {
                        let b = s.load(&bias[o0..], LANES);
                        let mut atm = [[s.zero(); N]; TILE];
                        for j in 0..N {
                            let mut col = [s.zero(); N];
                            for (i, mv) in col.iter_mut().enumerate() {
                                *mv = s.load(&m[(point::<N>(i, j) * rows + r) * oc + o0..], LANES);
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

/// `M[p] (R, OC) = V[p] (R, C) U[j] (C, OC)` for each product j (see [`product`]) and its
/// points p, over all their rows at once (R for each point): as many rows at a time as the
/// backend holds in registers (6 on AVX2, 4 on NEON; on AVX-512 and the portable path, 8 rows
/// of 32 channels when OC is a multiple of 32, else 16 of 16), each row's sum over the C
/// channels in order (so the same bits whatever the blocking). AS: V's row stride C when it is
/// a constant the kernel is compiled for, else 0. (On AVX-512, 8 rows of 32 channels took
/// `bncnn`'s block 4 from 9.6 to 8.6 us an image: with one vector a row, the loads of the
/// broadcast values set the pace.)
#[inline(always)]
fn products<S: Simd, const AS: usize>(
    s: S,
    side: usize,
    (v, u, m): (&[f32], &[f32], &mut [f32]),
    (t_all, c, oc): (usize, usize, usize),
) {
    let step = if S::ROWS >= MR { MR } else { S::ROWS.min(6) };
    for j in 0..PRODUCTS {
        let (_, first, count) = product(side, j);
        let up = &u[j * c * oc..(j + 1) * c * oc];
        let all = count * t_all;
        let (vp, mp) = (
            &v[first * t_all * c..],
            &mut m[first * t_all * oc..(first + count) * t_all * oc],
        );
        if S::ROWS >= MR && oc.is_multiple_of(WIDE_VECTORS * LANES) {
            rows_times_matrix_wide::<S, AS>(s, vp, c, (c, oc), up, oc, mp, oc, all);
            continue;
        }
        let mut t0 = 0;
        while t0 < all {
            // On AVX2, a remainder of 7 or 8 rows as 4 + 4 (8 computed, not 6 + 4).
            let rows = if step == 6 && (7..=8).contains(&(all - t0)) {
                all - t0
            } else {
                step.min(all - t0)
            };
            let (a, out, k) = (&vp[t0 * c..], &mut mp[t0 * oc..], (c, oc));
            t0 += rows;
            match rows {
                0..=4 => rows_times_matrix::<S, AS, 4>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                5..=6 if step == 6 => rows_times_matrix::<S, AS, 6>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                5..=8 => rows_times_matrix::<S, AS, 8>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
                _ => rows_times_matrix::<S, AS, MR>(s, a, c, k, up, oc, None, out, oc, (rows, false)),
            }
        }
    }
}

/// B^T d of a column d of N (or, applied to a row of B^T d, that row times B).
#[inline(always)]
fn input_transform<S: Simd, const N: usize>(s: S, d: &[S::V; N]) -> [S::V; N] {
    let mut o = [s.zero(); N];
    if N == 6 {
        o[..6].copy_from_slice(&input_transform_6(s, d));
    } else {
        o[..9].copy_from_slice(&input_transform_9(s, d));
    }
    o
}

/// Stride 1's B^T d (6 entries), sharing the sums that rows 1-2 and 3-4 of B^T have in common.
#[inline(always)]
fn input_transform_6<S: Simd>(s: S, d: &[S::V]) -> [S::V; 6] {
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

/// Stride 2's B^T d (9 entries): B2^T of the even entries e, then the odd ones.
#[inline(always)]
fn input_transform_9<S: Simd>(s: S, d: &[S::V]) -> [S::V; 9] {
    let e = [d[0], d[2], d[4], d[6], d[8]];
    let t = fma(s, e[2], -1.0, e[3]); // e3 - e2
    let o3 = fma(s, e[1], -1.0, e[3]); // e3 - e1
    [
        fma(s, fma(s, e[2], -1.0, e[0]), 2.0, o3), // 2 e0 - e1 - 2 e2 + e3
        fma(s, e[1], -2.0, t),                     // -2 e1 - e2 + e3
        fma(s, fma(s, e[2], -1.0, e[1]), 2.0, t),  // 2 e1 - 3 e2 + e3
        o3,
        fma(s, o3, -2.0, fma(s, e[2], -1.0, e[4])), // 2 e1 - e2 - 2 e3 + e4
        d[1],
        d[3],
        d[5],
        d[7],
    ]
}

/// A^T m of a column m of N (or, applied to a row of A^T m, that row times A).
#[inline(always)]
fn output_transform<S: Simd, const N: usize>(s: S, m: &[S::V; N]) -> [S::V; TILE] {
    if N == 6 {
        output_transform_6(s, m)
    } else {
        output_transform_9(s, m)
    }
}

/// Stride 1's A^T m (6 entries).
#[inline(always)]
fn output_transform_6<S: Simd>(s: S, m: &[S::V]) -> [S::V; TILE] {
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

/// Stride 2's A^T m (9 entries): A2^T of the first 5, plus the last 4.
#[inline(always)]
fn output_transform_9<S: Simd>(s: S, m: &[S::V]) -> [S::V; TILE] {
    let sum12 = s.add(m[1], m[2]);
    let dif12 = fma(s, m[2], -1.0, m[1]);
    [
        s.add(s.add(s.add(m[0], sum12), m[3]), m[5]),
        s.add(fma(s, m[3], 2.0, dif12), m[6]),
        s.add(fma(s, m[3], 4.0, sum12), m[7]),
        s.add(s.add(fma(s, m[3], 8.0, dif12), m[4]), m[8]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// relu(conv(x, w) + b) in f64, x (H, W, C) channels-last, w (OC, C, 3, 3), g's stride,
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
                                let (yy, xx) = (
                                    (g.stride * oy + ki).wrapping_sub(1),
                                    (g.stride * ox + kj).wrapping_sub(1),
                                );
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
        (oc, stride): (usize, usize),
    ) -> (ConvGeom, Vec<f32>, Vec<f32>, Vec<f32>) {
        let g = ConvGeom::new((c, h, w), (oc, 3, 3), stride, 1);
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

    /// bncnn's blocks 2, 3 and 4 (stride 2), odd sides (a last row and column of tiles cut
    /// short), several tiles at stride 2, and more channels: within 1e-5 of the f64 convolution,
    /// relative to the sum of the products' magnitudes (the bound of a sum's rounding), on every
    /// backend.
    #[test]
    fn matches_the_direct_convolution_within_rounding() {
        let mut rng = Rng::new(7);
        for (n, chw, (oc, stride)) in [
            (3, (16, 14, 14), (32, 1)),
            (2, (32, 7, 7), (64, 1)),
            (2, (16, 5, 9), (16, 1)),
            (1, (48, 3, 4), (32, 1)),
            (3, (64, 7, 7), (64, 2)),
            (2, (16, 9, 13), (32, 2)),
            (1, (32, 16, 16), (16, 2)),
            (2, (16, 3, 4), (16, 2)),
        ] {
            let (g, x, w, b) = case(&mut rng, n, chw, (oc, stride));
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
                        "{backend:?} {chw:?}->{oc} stride {stride} value {k}: {got} against {}",
                        want[k]
                    );
                }
            });
        }
    }

    /// The pooled output is the maximum of the unpooled one over each 2x2 window, bit for bit
    /// (at stride 1 and 2, a 14x14 output and a 6x6 one).
    #[test]
    fn pooling_takes_the_maximum_of_each_tile() {
        let mut rng = Rng::new(8);
        for (chw, stride) in [((16, 14, 14), 1), ((16, 12, 11), 2)] {
            let (g, x, w, b) = case(&mut rng, 2, chw, (32, stride));
            let (oh, ow) = (g.oh, g.ow);
            crate::for_each_backend!(|backend, s| {
                let (y, p) = (run(s, &g, &x, &w, &b, false), run(s, &g, &x, &w, &b, true));
                assert_eq!(p.len(), 2 * oh / 2 * (ow / 2) * 32);
                for (i, &got) in p.iter().enumerate() {
                    let (o, px, py, n) = (
                        i % 32,
                        i / 32 % (ow / 2),
                        i / 32 / (ow / 2) % (oh / 2),
                        i / (32 * oh / 2 * ow / 2),
                    );
                    let at = |dy: usize, dx: usize| y[n * g.out_size() + ((2 * py + dy) * ow + 2 * px + dx) * 32 + o];
                    let want = at(0, 0).max(at(0, 1)).max(at(1, 0).max(at(1, 1)));
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{backend:?} stride {stride} pooled value {i}"
                    );
                }
            });
        }
    }

    /// The vector backends give the same bits (fused multiply-adds in the same order); each
    /// tile's sums are the same whichever images share its group (8 of block 3's or block 4's
    /// shape, 1 of block 2's, 2 of a stride-2 one with 4 tiles), so any split of the batch
    /// gives them too.
    #[test]
    fn same_bits_on_every_vector_backend_and_any_batch_split() {
        let mut rng = Rng::new(9);
        for (chw, oc) in [
            ((32, 7, 7), (64, 1)),
            ((16, 14, 14), (32, 1)),
            ((64, 7, 7), (64, 2)),
            ((16, 15, 16), (32, 2)),
        ] {
            same_bits_for(&mut rng, chw, oc);
        }
    }

    fn same_bits_for(rng: &mut Rng, chw: (usize, usize, usize), oc: (usize, usize)) {
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
        assert!(applies(&g(64, 7, 64, 3, 2, 1), false));
        assert!(applies(&g(16, 12, 32, 3, 2, 1), true));
        assert!(
            !applies(&g(16, 13, 32, 3, 2, 1), true),
            "odd sides (7x7) are not pooled here"
        );
        assert!(!applies(&g(64, 7, 64, 3, 3, 1), false), "stride 3");
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
        let (g, x, w, b) = case(&mut rng, 2, (16, 6, 6), (16, 1));
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
