//! The conv2d microkernels: register-blocked products over 16-lane vectors, generic over the
//! SIMD backend ([`Simd`]), and all of conv2d's `unsafe` code (unchecked reads whose bounds are
//! asserted once per call; each with a `// SAFETY:` comment).
//!
//! Shapes (see the module header): A the patch matrix (M, CKK) or its stand-ins (planes read
//! at tap offsets, or x read through [`pixel_taps`](super::layout::pixel_taps)), Wt (CKK, OC),
//! Wr (OC, CKK), dy (M, OC). Each kernel keeps MR = 16 rows (or columns) of 16-lane
//! accumulators in registers, or fewer at a time where a vector takes several registers
//! ([`Simd::ROWS`]: 6 + 6 + 4 on AVX2, 4 at a time on NEON, see `for_each_group`; the
//! forward of whole-tap layers on AVX-512 and the portable path holds 8 rows of two vectors,
//! see `tap_rows_block_wide`); every value gets the same operations in the same order either
//! way, so the vector backends give the same bits. The reductions over pixels (dW, dbias) run
//! blocks of [`SUM_BLOCK`] rows outermost, so a block of dy is read from the L1 cache by every
//! column group, and their inner loops carry no per-row bookkeeping (offsets are computed
//! before the loop, whole-vector widths are compiled apart from partial ones).
//!
//! Everything here is `#[inline(always)]`, so that it is compiled inside the `Kernel::run`
//! that calls it, with the backend's target features enabled.

use super::ConvGeom;
use crate::ops::simd::{LANES, Simd};

/// Rows of results held in registers at once.
pub(super) const MR: usize = 16;

/// Register rows per group on the backends that hold fewer than 6 rows (NEON, see
/// [`Simd::ROWS`]), for the blocks of 4 or 8 rows wherever a vector takes several registers, and
/// for a short last block of the whole-tap forward's rows of two vectors (AVX-512, portable).
const GROUP: usize = 4;

/// Runs `$body` once per group of register rows covering rows `0..$rows` of a block of
/// [`MR`] = 16, with `$r0` the group's first row and `$g` (a `const`) its size: one group of 16
/// where the backend holds 16 rows ([`Simd::ROWS`]); 6 + 6 + 4 where it holds 6 (AVX2: 12 of the
/// 16 registers for accumulators); else groups of [`GROUP`] = 4. Groups past `$rows` are skipped.
/// Each row's sum is the same in any grouping, so the bits are too.
macro_rules! for_each_group {
    ($s:ty, $rows:expr, |$r0:ident, $g:ident| $body:block) => {{
        let rows: usize = $rows;
        if <$s as Simd>::ROWS >= MR {
            const $g: usize = MR;
            let $r0 = 0usize;
            $body
        } else if <$s as Simd>::ROWS >= 6 {
            {
                const $g: usize = 6;
                let $r0 = 0usize;
                $body
            }
            if rows > 6 {
                const $g: usize = 6;
                let $r0 = 6usize;
                $body
            }
            if rows > 12 {
                const $g: usize = 4;
                let $r0 = 12usize;
                $body
            }
        } else {
            for $r0 in (0..rows).step_by(GROUP) {
                const $g: usize = GROUP;
                $body
            }
        }
    }};
}

/// Evaluates `$body` with `$v` bound to `$w`, as the constant [`LANES`] when it is (a whole
/// vector: the loads and stores inside then compile without their partial-vector branches).
macro_rules! with_width {
    ($w:expr, |$v:ident| $body:expr) => {{
        let width: usize = $w;
        if width == LANES {
            let $v = LANES;
            $body
        } else {
            let $v = width;
            $body
        }
    }};
}

/// Rows per block of the reductions over pixels (weight and bias gradients): each block is
/// summed in registers from zero, and the block sums are added in order into the result in
/// memory. Shorter running sums than one over all of a chunk's pixels (1,568 for the first
/// layer) keep the rounding error of the sum smaller.
pub(super) const SUM_BLOCK: usize = 128;

/// Adds the first `rows` of the block sums `acc` into C (rows of stride ldc, columns n0..n0+w),
/// or stores them there for the first block; then zeroes `acc` for the next block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn fold_block<S: Simd, const G: usize>(
    s: S,
    acc: &mut [S::V; G],
    c: &mut [f32],
    (ldc, n0, w): (usize, usize, usize),
    rows: usize,
    first: bool,
) {
    for (r, v) in acc.iter().enumerate().take(rows) {
        let dst = &mut c[r * ldc + n0..];
        let sum = if first { *v } else { s.add(s.load(dst, w), *v) };
        s.store(dst, w, sum);
    }
    *acc = [s.zero(); G];
}

/// C (R x N; rows < `rows` stored) = A (R x K, row stride AS, or `st` when AS = 0) B (K x N),
/// plus bias, then max(., 0) with `relu`. With AS fixed, the R rows of A sit at constant
/// offsets, so each multiply-add reads its broadcast operand straight from memory.
/// On backends with fewer register rows than R ([`Simd::ROWS`]), the rows are computed a group
/// at a time (16 rows as in [`for_each_group`], 4 or 8 rows [`GROUP`] at a time): each row's
/// sum is the same, so the bits are too.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn rows_times_matrix<S: Simd, const AS: usize, const R: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    (rows, relu): (usize, bool),
) {
    if S::ROWS >= R {
        return rows_times_matrix_block::<S, AS, R>(s, a, st, (k, n), b, ldb, bias, c, ldc, (rows, relu));
    }
    let stride = if AS > 0 { AS } else { st };
    if R == MR {
        for_each_group!(S, rows, |r0, G| {
            let (ag, cg, rg) = (&a[r0 * stride..], &mut c[r0 * ldc..], G.min(rows - r0));
            rows_times_matrix_block::<S, AS, G>(s, ag, st, (k, n), b, ldb, bias, cg, ldc, (rg, relu));
        });
        return;
    }
    assert!(R.is_multiple_of(GROUP));
    for r0 in (0..rows).step_by(GROUP) {
        let (ag, cg, rg) = (&a[r0 * stride..], &mut c[r0 * ldc..], GROUP.min(rows - r0));
        rows_times_matrix_block::<S, AS, GROUP>(s, ag, st, (k, n), b, ldb, bias, cg, ldc, (rg, relu));
    }
}

/// [`rows_times_matrix`] with all R rows in registers at once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_times_matrix_block<S: Simd, const AS: usize, const R: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    (rows, relu): (usize, bool),
) {
    let st = if AS > 0 { AS } else { st };
    assert!(
        R > 0 && k <= st && a.len() >= (R - 1) * st + k,
        "rows_times_matrix: A too short"
    );
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        assert!(
            k == 0 || b.len() >= (k - 1) * ldb + n0 + w,
            "rows_times_matrix: B too short"
        );
        with_width!(w, |w| {
            let mut acc = [bias.map_or(s.splat(0.0), |b| s.load(&b[n0..], w)); R];
            for p in 0..k {
                // SAFETY: p * ldb + n0 <= (k - 1) * ldb + n0 <= b.len() - w, asserted above.
                let bv = s.load(unsafe { b.get_unchecked(p * ldb + n0..) }, w);
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: r * st + p <= (R - 1) * st + k - 1 < a.len(), asserted above.
                    let av = unsafe { *a.get_unchecked(r * st + p) };
                    *acc = s.mul_add(s.splat(av), bv, *acc);
                }
            }
            for (r, v) in acc.iter().enumerate().take(rows) {
                s.store(&mut c[r * ldc + n0..], w, if relu { s.relu(*v) } else { *v });
            }
        });
    }
}

/// [`rows_times_matrix`] without bias or ReLU for the backends where a vector is one register
/// (AVX-512, portable) and N a multiple of 32: 8 rows of two vectors at a time, so that each
/// broadcast value of A feeds two multiply-adds (with one vector a row, the loads, not the
/// multiply-adds, set the pace: see `tap_rows_block_wide`). Rows past `rows` (up to the next
/// multiple of 8) are read from A and computed, not stored. The same multiply-adds in the same
/// order per value, so the same bits.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn rows_times_matrix_wide<S: Simd, const AS: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    rows: usize,
) {
    const G: usize = WIDE_ROWS;
    const NV: usize = WIDE_VECTORS;
    let st = if AS > 0 { AS } else { st };
    let blocks = rows.div_ceil(G);
    assert!(
        k <= st
            && n.is_multiple_of(NV * LANES)
            && (k == 0 || (a.len() >= (blocks * G - 1) * st + k && b.len() >= (k - 1) * ldb + n)),
        "rows_times_matrix_wide: A or B too short, or N not a multiple of 32"
    );
    for r0 in (0..rows).step_by(G) {
        let ar = &a[r0 * st..];
        for n0 in (0..n).step_by(NV * LANES) {
            let mut acc = [[s.zero(); NV]; G];
            for p in 0..k {
                // SAFETY: p * ldb + n0 + 32 <= (k - 1) * ldb + n <= b.len(), asserted above (n0 +
                // 32 <= n, as n is a multiple of 32).
                let bp = unsafe { b.get_unchecked(p * ldb + n0..) };
                let bv: [S::V; NV] = std::array::from_fn(|h| s.load(&bp[h * LANES..], LANES));
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: r0 * st + r * st + p <= (blocks * G - 1) * st + k - 1 < a.len()
                    // (asserted above), as r0 + r < blocks * G.
                    let av = s.splat(unsafe { *ar.get_unchecked(r * st + p) });
                    for (acc, v) in acc.iter_mut().zip(&bv) {
                        *acc = s.mul_add(av, *v, *acc);
                    }
                }
            }
            for (r, v) in acc.iter().enumerate().take(rows - r0) {
                for (h, v) in v.iter().enumerate() {
                    s.store(&mut c[(r0 + r) * ldc + n0 + h * LANES..], LANES, *v);
                }
            }
        }
    }
}

/// C (16 x N; rows < `rows` stored) = sum over m < M of A[m, k0..k0+16]^T D[m, ..N] (summed in
/// blocks of [`SUM_BLOCK`] rows, see [`fold_block`]): the
/// transposed product, 16 columns of A in registers (or fewer at a time, see
/// [`for_each_group`]: the same sums), reduced over the rows of A and D.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn columns_times_matrix<S: Simd>(
    s: S,
    a: &[f32],
    lda: usize,
    (m, k0, n): (usize, usize, usize),
    d: &[f32],
    ldd: usize,
    c: &mut [f32],
    ldc: usize,
    rows: usize,
) {
    assert!(
        m == 0 || (a.len() >= (m - 1) * lda + k0 + MR && d.len() >= (m - 1) * ldd + n),
        "columns_times_matrix: A or D too short"
    );
    for b0 in (0..m.max(1)).step_by(SUM_BLOCK) {
        for n0 in (0..n).step_by(LANES) {
            for_each_group!(S, rows, |c0, G| {
                let cg = &mut c[c0 * ldc..];
                let rg = G.min(rows - c0);
                with_width!(LANES.min(n - n0), |w| sum_columns::<S, G>(
                    s,
                    (b0, m.min(b0 + SUM_BLOCK)),
                    (d, ldd, n0, w),
                    |mm| {
                        // SAFETY: mm < m, so mm * lda + k0 + c0 + G <= (m - 1) * lda + k0 + MR
                        // <= a.len() (asserted above; c0 + G <= MR).
                        unsafe { &*a.as_ptr().add(mm * lda + k0 + c0).cast::<[f32; G]>() }
                    },
                    (cg, ldc, rg)
                ));
            });
        }
    }
}

/// One block of the reduction of the column kernels, for G columns and the output columns
/// n0..n0+w: acc[j] = sum over the rows mm in b0..end (at most [`SUM_BLOCK`]), in order, of
/// `col(mm)[j]` * D[mm, n0..n0+w], folded into C (rows < `rows` of stride ldc) with
/// [`fold_block`] (stored for the first block, b0 = 0). The callers run the blocks outermost,
/// so that a block of D stays in the L1 cache for all the column groups and output columns;
/// each value still gets its block sums in block order, so the bits do not depend on it.
#[inline(always)]
fn sum_columns<'a, S: Simd, const G: usize>(
    s: S,
    (b0, end): (usize, usize),
    (d, ldd, n0, w): (&[f32], usize, usize, usize),
    col: impl Fn(usize) -> &'a [f32; G],
    (c, ldc, rows): (&mut [f32], usize, usize),
) {
    assert!(end <= b0 + SUM_BLOCK, "sum_columns: block too long");
    assert!(
        end <= b0 || d.len() >= (end - 1) * ldd + n0 + w,
        "sum_columns: D too short"
    );
    let mut acc = [s.zero(); G];
    for mm in b0..end {
        // SAFETY: mm * ldd + n0 <= (end - 1) * ldd + n0 <= d.len() - w (asserted above).
        let dv = s.load(unsafe { d.get_unchecked(mm * ldd + n0..) }, w);
        // Indexed, not zipped: the row's address is then computed once, not per column.
        let ar = col(mm);
        for (j, v) in acc.iter_mut().enumerate() {
            *v = s.mul_add(s.splat(ar[j]), dv, *v);
        }
    }
    fold_block(s, &mut acc, c, (ldc, n0, w), rows, b0 == 0);
}

/// The forward's product for one block of up to 16 output pixels, y (rows x OC) = A Wt + bias:
/// a last, partial block (a single image's 49 pixels leave 1) is computed with 4 or 8 rows in
/// registers instead of 16. Each row's sum is the same either way.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn block_times_matrix<S: Simd, const AS: usize>(
    s: S,
    a: &[f32],
    st: usize,
    (k, n): (usize, usize),
    wt: &[f32],
    bias: &[f32],
    y: &mut [f32],
    (rows, relu): (usize, bool),
) {
    match rows {
        0..=4 => rows_times_matrix::<S, AS, 4>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
        5..=8 => rows_times_matrix::<S, AS, 8>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
        _ => rows_times_matrix::<S, AS, MR>(s, a, st, (k, n), wt, n, Some(bias), y, n, (rows, relu)),
    }
}

/// For each row of a block of 16 output pixels m0.. (the rows past `rows` repeat the last real
/// one): its sample's offset in x (or dx), and where its taps start in the pixel taps `pix`
/// (from [`pixel_taps`](super::layout::pixel_taps)).
#[inline(always)]
fn block_pixels(g: &ConvGeom, m0: usize, rows: usize) -> [(usize, usize); MR] {
    let (ohw, kk) = (g.ohw(), g.kh * g.kw);
    std::array::from_fn(|r| {
        let m = m0 + r.min(rows - 1);
        ((m / ohw) * g.in_size(), (m % ohw) * kk)
    })
}

/// The forward's product for one block of up to 16 output pixels m0.. (rows < `rows` real) of
/// a [`Plan::WholeTaps`](super::plan::Plan::WholeTaps) layer, without a patch matrix: A's rows
/// are read from x (B, H, W, C) through the pixel taps `pix` (from
/// [`pixel_taps`](super::layout::pixel_taps)): A[m, t*C + c] = channel c of the pixel that
/// output pixel m reads through tap t, 0 in the padding. y (rows x OC) = A Wt + bias, then
/// max(., 0) with `relu`. The same multiply-adds in the same order as [`block_times_matrix`]
/// over im2row's matrix, so the same bits, without writing the matrix and reading it back.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn tap_rows_times_matrix<S: Simd>(
    s: S,
    g: &ConvGeom,
    (x, pix): (&[f32], &[usize]),
    (m0, rows): (usize, usize),
    (wt, bias): (&[f32], &[f32]),
    y: &mut [f32],
    relu: bool,
) {
    assert!(rows > 0 && rows <= MR, "tap_rows_times_matrix: 1 to 16 rows");
    // Rows past `rows` repeat the last real one; they are computed, not stored.
    let at = block_pixels(g, m0, rows);
    let args = (g, (x, pix), (wt, bias), relu);
    // Where 16 register rows fit (AVX-512: a vector is one register; and the portable path)
    // and OC is a multiple of 32: 8 rows of two vectors each (see `tap_rows_block_wide`), or 4
    // for a short last block of 4 or fewer.
    if S::ROWS >= MR && g.oc.is_multiple_of(WIDE_VECTORS * LANES) {
        if rows <= GROUP {
            let atg: &[(usize, usize); GROUP] = at[..GROUP].try_into().expect("GROUP rows");
            tap_rows_block_wide::<S, GROUP, WIDE_VECTORS>(s, args, atg, y, rows);
            return;
        }
        for r0 in (0..rows).step_by(WIDE_ROWS) {
            let atg: &[(usize, usize); WIDE_ROWS] = at[r0..][..WIDE_ROWS].try_into().expect("8 rows");
            let yg = &mut y[r0 * g.oc..];
            tap_rows_block_wide::<S, WIDE_ROWS, WIDE_VECTORS>(s, args, atg, yg, WIDE_ROWS.min(rows - r0));
        }
        return;
    }
    if rows <= 2 * GROUP {
        // A short last block (a single image's 49 pixels leave 1): 4 rows at a time.
        for r0 in (0..rows).step_by(GROUP) {
            let atg: &[(usize, usize); GROUP] = at[r0..][..GROUP].try_into().expect("GROUP rows");
            tap_rows_block::<S, GROUP>(s, args, atg, &mut y[r0 * g.oc..], GROUP.min(rows - r0));
        }
        return;
    }
    for_each_group!(S, rows, |r0, G| {
        let atg: &[(usize, usize); G] = at[r0..][..G].try_into().expect("G rows");
        tap_rows_block::<S, G>(s, args, atg, &mut y[r0 * g.oc..], G.min(rows - r0));
    });
}

/// Rows and vectors of output channels per row of [`tap_rows_block_wide`] (AVX-512, portable).
pub(super) const WIDE_ROWS: usize = 8;
pub(super) const WIDE_VECTORS: usize = 2;

/// [`tap_rows_block`] with NV vectors of output channels per row (OC a multiple of 16 NV) and
/// G rows, for the backends where a vector is one register. With 16 rows of one vector (the
/// [`tap_rows_block`] of AVX-512), each multiply-add needs a load of its own (the broadcast
/// value, and the 16 row addresses do not fit the general registers either), so the loads, not
/// the multiply-adds, set the pace. With 8 rows of two vectors, each broadcast value feeds two
/// multiply-adds and the 8 row addresses stay in registers: 10 loads per 16 multiply-adds.
/// `bncnn`'s blocks 2-4 at batch 16 (`examples/bncnn_layers.rs`, one thread): 19.2/17.8/10.9
/// -> 13.5/13.0/8.2 us per image; 4 rows of four vectors or 6 of four were slower, so were 16
/// of one and 8 of one. The same multiply-adds in the same order per value, so the same bits.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn tap_rows_block_wide<S: Simd, const G: usize, const NV: usize>(
    s: S,
    (g, (x, pix), (wt, bias), relu): (&ConvGeom, (&[f32], &[usize]), (&[f32], &[f32]), bool),
    at: &[(usize, usize); G],
    y: &mut [f32],
    rows: usize,
) {
    let (c, oc, kk) = (g.c, g.oc, g.kh * g.kw);
    assert!(
        c.is_multiple_of(LANES) && oc.is_multiple_of(NV * LANES) && wt.len() >= kk * c * oc && bias.len() >= oc,
        "tap_rows_block_wide: C or OC not a whole number of vectors, or weights or bias too short"
    );
    let zeros = [0.0f32; LANES];
    for n0 in (0..oc).step_by(NV * LANES) {
        let bv: [S::V; NV] = std::array::from_fn(|h| s.load(&bias[n0 + h * LANES..], LANES));
        let mut acc = [bv; G];
        for t in 0..kk {
            for cb in (0..c).step_by(LANES) {
                // The gather of `tap_rows_block`, written out here as there (see there).
                let a: [&[f32; LANES]; G] = std::array::from_fn(|r| {
                    let (base, first) = at[r];
                    match pix[first + t] {
                        usize::MAX => &zeros,
                        o => x[base + o + cb..][..LANES].try_into().expect("16 channels"),
                    }
                });
                let k0 = t * c + cb;
                for j in 0..LANES {
                    // SAFETY: (k0 + j) * oc + n0 + 16 NV <= (kk * c - 1) * oc + oc <= wt.len()
                    // (asserted above), as k0 + j < kk * c and n0 + 16 NV <= oc (OC is a
                    // multiple of 16 NV).
                    let w = unsafe { wt.get_unchecked((k0 + j) * oc + n0..) };
                    let v: [S::V; NV] = std::array::from_fn(|h| s.load(&w[h * LANES..], LANES));
                    for (acc, ar) in acc.iter_mut().zip(&a) {
                        let av = s.splat(ar[j]);
                        for (acc, v) in acc.iter_mut().zip(&v) {
                            *acc = s.mul_add(av, *v, *acc);
                        }
                    }
                }
            }
        }
        for (r, v) in acc.iter().enumerate().take(rows) {
            for (h, v) in v.iter().enumerate() {
                s.store(
                    &mut y[r * oc + n0 + h * LANES..],
                    LANES,
                    if relu { s.relu(*v) } else { *v },
                );
            }
        }
    }
}

/// [`tap_rows_times_matrix`] for G rows (`at`: each row's sample offset in x and first entry in
/// `pix`), all in registers; the first `rows` stored.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn tap_rows_block<S: Simd, const G: usize>(
    s: S,
    (g, (x, pix), (wt, bias), relu): (&ConvGeom, (&[f32], &[usize]), (&[f32], &[f32]), bool),
    at: &[(usize, usize); G],
    y: &mut [f32],
    rows: usize,
) {
    let (c, oc, kk) = (g.c, g.oc, g.kh * g.kw);
    assert!(
        c.is_multiple_of(LANES) && wt.len() >= kk * c * oc && bias.len() >= oc,
        "tap_rows_block: weights or bias too short"
    );
    let zeros = [0.0f32; LANES];
    for n0 in (0..oc).step_by(LANES) {
        with_width!(LANES.min(oc - n0), |w| {
            let mut acc = [s.load(&bias[n0..], w); G];
            for t in 0..kk {
                for cb in (0..c).step_by(LANES) {
                    // The 16 channels from cb that each row reads through tap t, or zeros.
                    // (Written out: through a shared helper returning the same array, this
                    // loop ran 3-4% slower on AVX2, block 3 of `bncnn`.)
                    let a: [&[f32; LANES]; G] = std::array::from_fn(|r| {
                        let (base, first) = at[r];
                        match pix[first + t] {
                            usize::MAX => &zeros,
                            o => x[base + o + cb..][..LANES].try_into().expect("16 channels"),
                        }
                    });
                    let k0 = t * c + cb;
                    for j in 0..LANES {
                        // SAFETY: (k0 + j) * oc + n0 + w <= (kk * c - 1) * oc + oc <= wt.len()
                        // (asserted above), as k0 + j < kk * c and n0 + w <= oc.
                        let bv = s.load(unsafe { wt.get_unchecked((k0 + j) * oc + n0..) }, w);
                        for (acc, ar) in acc.iter_mut().zip(&a) {
                            *acc = s.mul_add(s.splat(ar[j]), bv, *acc);
                        }
                    }
                }
            }
            for (r, v) in acc.iter().enumerate().take(rows) {
                s.store(&mut y[r * oc + n0..], w, if relu { s.relu(*v) } else { *v });
            }
        });
    }
}

/// [`columns_times_matrix`] for the column block k0 = t*C + cb of a
/// [`Plan::WholeTaps`](super::plan::Plan::WholeTaps) layer, A's rows read from x (B, H, W, C):
/// A[m, k0..k0+16] = the 16 channels from cb of the pixel that output pixel m reads through
/// tap t (offsets `pix`, from [`pixel_taps`](super::layout::pixel_taps)), zeros in the padding.
/// The same multiply-adds in the same order, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), fewer channels at a time (see
/// [`for_each_group`]).
#[inline(always)]
pub(super) fn tap_columns_times_matrix<S: Simd>(
    s: S,
    g: &ConvGeom,
    (x, pix): (&[f32], &[usize]),
    (m, t, cb): (usize, usize, usize),
    d: &[f32],
    c: &mut [f32],
) {
    let (n, kk, ohw) = (g.oc, g.kh * g.kw, g.ohw());
    assert!(
        cb + MR <= g.c && d.len() >= m * n && c.len() >= MR * n,
        "tap_columns_times_matrix: dy or dW too short"
    );
    // Per output pixel of the chunk: where its 16 channels sit in x, or usize::MAX (padding).
    // (Counted sample by sample: a division per pixel would cost as much as a column group.)
    let taps: Vec<usize> = pix.iter().skip(t).step_by(kk).take(ohw).copied().collect();
    let mut rowoff = Vec::with_capacity(m);
    for sample_base in (0..m.div_ceil(ohw)).map(|b| b * g.in_size()) {
        let left = m - rowoff.len();
        rowoff.extend(taps.iter().take(left).map(|&off| match off {
            usize::MAX => usize::MAX,
            off => sample_base + off + cb,
        }));
    }
    assert!(
        rowoff.iter().all(|&o| o == usize::MAX || o + MR <= x.len()),
        "tap_columns_times_matrix: x too short"
    );
    let zeros = [0.0f32; MR];
    for b0 in (0..m.max(1)).step_by(SUM_BLOCK) {
        for n0 in (0..n).step_by(LANES) {
            for_each_group!(S, MR, |c0, G| {
                let zg: &[f32; G] = zeros[..G].try_into().expect("G zeros");
                with_width!(LANES.min(n - n0), |w| sum_columns::<S, G>(
                    s,
                    (b0, m.min(b0 + SUM_BLOCK)),
                    (d, n, n0, w),
                    |mm| {
                        let o = rowoff[mm];
                        let p = if o == usize::MAX {
                            zg.as_ptr()
                        } else {
                            x.as_ptr().wrapping_add(o + c0)
                        };
                        // SAFETY: p is either the G zeros or x[o + c0..][..G], in bounds as
                        // o + MR <= x.len() (asserted above) and c0 + G <= MR.
                        unsafe { &*p.cast::<[f32; G]>() }
                    },
                    (&mut c[c0 * n..], n, G)
                ));
            });
        }
    }
}

/// [`rows_times_matrix`] with A read from planes: `A[r, p] = planes[rb[r] + koff[p]]`. The same
/// multiply-adds in the same order, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), [`GROUP`] rows at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn taps_times_matrix<S: Simd>(
    s: S,
    planes: &[f32],
    (rb, koff): (&[usize; MR], &[usize]),
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: &[f32],
    c: &mut [f32],
    (rows, relu): (usize, bool),
) {
    if S::ROWS >= MR {
        return taps_times_matrix_block::<S, MR>(s, planes, (rb, koff), (k, n), b, ldb, bias, c, (rows, relu));
    }
    for r0 in (0..rows).step_by(GROUP) {
        let rbg: &[usize; GROUP] = rb[r0..][..GROUP].try_into().expect("GROUP rows");
        let (cg, rg) = (&mut c[r0 * n..], GROUP.min(rows - r0));
        taps_times_matrix_block::<S, GROUP>(s, planes, (rbg, koff), (k, n), b, ldb, bias, cg, (rg, relu));
    }
}

/// [`taps_times_matrix`] for G rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    planes: &[f32],
    (rb, koff): (&[usize; G], &[usize]),
    (k, n): (usize, usize),
    b: &[f32],
    ldb: usize,
    bias: &[f32],
    c: &mut [f32],
    (rows, relu): (usize, bool),
) {
    let koff = &koff[..k];
    let reach = rb.iter().max().unwrap_or(&0) + koff.iter().max().unwrap_or(&0);
    assert!(reach < planes.len(), "taps_times_matrix: planes too short");
    assert!(k == 0 || b.len() >= (k - 1) * ldb + n, "taps_times_matrix: B too short");
    // Rows at consecutive bases (neighbouring pixels of one output row, one input channel,
    // stride 1: the first layer) read row r's value at row 0's address + r, an offset the
    // compiler folds into the load: no address to compute and keep per row. In `bncnn`'s first
    // block (batch 16, one thread, AVX2, alternating runs) 6.88-7.06 -> 6.54-6.67 us an image;
    // on AVX-512 (16 rows a group, fewer of them within one output row) no change measured.
    let consecutive = rb.iter().enumerate().all(|(r, &base)| base == rb[0] + r);
    for n0 in (0..n).step_by(LANES) {
        with_width!(LANES.min(n - n0), |w| {
            let mut acc = [s.load(&bias[n0..], w); G];
            for (p, &o) in koff.iter().enumerate() {
                // SAFETY: p * ldb + n0 + w <= (k - 1) * ldb + n <= b.len(), asserted above.
                let bv = s.load(unsafe { b.get_unchecked(p * ldb + n0..) }, w);
                if consecutive {
                    let at = rb[0] + o;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: at + r = rb[r] + o <= max(rb) + max(koff) < planes.len().
                        let av = unsafe { *planes.get_unchecked(at + r) };
                        *acc = s.mul_add(s.splat(av), bv, *acc);
                    }
                    continue;
                }
                for (acc, &base) in acc.iter_mut().zip(rb) {
                    // SAFETY: base + o <= max(rb) + max(koff) < planes.len(), asserted above.
                    let av = unsafe { *planes.get_unchecked(base + o) };
                    *acc = s.mul_add(s.splat(av), bv, *acc);
                }
            }
            for (r, v) in acc.iter().enumerate().take(rows) {
                s.store(&mut c[r * n + n0..], w, if relu { s.relu(*v) } else { *v });
            }
        });
    }
}

/// [`columns_times_matrix`] with A read from planes: C (16 x N) = sum over pixels m of
/// A[m, k0..k0+16]^T D[m, ..N], `A[m, k] = planes[base[m] + koff[k]]`. With `y`, D is first
/// masked to where y > 0 (a fused ReLU's backward); with `db`, the column sums of D go there.
/// The same operations in the same order as the separate passes, so the same bits.
/// On backends with fewer register rows ([`Simd::ROWS`]), fewer columns at a time: on those
/// with 6 (AVX2), 4 (the first group, which also sums dbias and so needs two more registers),
/// then 5, 5 and 2 (the mask takes two registers); on the others [`GROUP`] at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn taps_columns_times_matrix<S: Simd>(
    s: S,
    planes: &[f32],
    (base, koff): (&[usize], &[usize; MR]),
    n: usize,
    (d, y): (&[f32], Option<&[f32]>),
    c: &mut [f32],
    rows: usize,
    mut db: Option<&mut [f32]>,
) {
    let m = base.len();
    let reach = base.iter().max().unwrap_or(&0) + koff.iter().max().unwrap_or(&0);
    assert!(
        reach < planes.len() && d.len() >= m * n && y.is_none_or(|y| y.len() >= m * n),
        "taps_columns_times_matrix: planes, dy or y too short"
    );
    // Blocks of rows outermost, so that a block of dy (and y) stays in the L1 cache for all the
    // column groups; each value gets its block sums in block order either way.
    for b0 in (0..m.max(1)).step_by(SUM_BLOCK) {
        let rs = (b0, m.min(b0 + SUM_BLOCK));
        macro_rules! group {
            ($c0:expr, $g:expr) => {{
                const G: usize = $g;
                let c0: usize = $c0;
                let kg: &[usize; G] = koff[c0..][..G].try_into().expect("G columns");
                let (cg, rg) = (&mut c[c0 * n..], G.min(rows - c0));
                let dbg = if c0 == 0 { db.as_deref_mut() } else { None };
                taps_columns_times_matrix_block::<S, G>(s, planes, (base, kg), rs, n, (d, y), (cg, rg), dbg);
            }};
        }
        if S::ROWS >= MR {
            group!(0, MR);
        } else if S::ROWS >= 6 {
            group!(0, 4);
            if rows > 4 {
                group!(4, 5);
            }
            if rows > 9 {
                group!(9, 5);
            }
            if rows > 14 {
                group!(14, 2);
            }
        } else {
            for c0 in (0..rows).step_by(GROUP) {
                group!(c0, GROUP);
            }
        }
    }
}

/// [`taps_columns_times_matrix`] for G columns and the rows b0..end (one block of at most
/// [`SUM_BLOCK`]), the first group also summing dbias.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_columns_times_matrix_block<S: Simd, const G: usize>(
    s: S,
    planes: &[f32],
    (base, koff): (&[usize], &[usize; G]),
    rs: (usize, usize),
    n: usize,
    (d, y): (&[f32], Option<&[f32]>),
    (c, rows): (&mut [f32], usize),
    mut db: Option<&mut [f32]>,
) {
    for n0 in (0..n).step_by(LANES) {
        let w = LANES.min(n - n0);
        // The loop compiled once per case, with the mask, the bias sum and the width known.
        match (y, db.as_deref_mut()) {
            (Some(y), Some(db)) => with_width!(w, |w| taps_columns_block_sums::<S, G, true, true>(
                s,
                planes,
                (base, koff),
                (rs, n, n0, w),
                (d, y),
                (&mut *c, rows),
                db
            )),
            (None, Some(db)) => with_width!(w, |w| taps_columns_block_sums::<S, G, false, true>(
                s,
                planes,
                (base, koff),
                (rs, n, n0, w),
                (d, d),
                (&mut *c, rows),
                db
            )),
            (Some(y), None) => with_width!(w, |w| taps_columns_block_sums::<S, G, true, false>(
                s,
                planes,
                (base, koff),
                (rs, n, n0, w),
                (d, y),
                (&mut *c, rows),
                &mut []
            )),
            (None, None) => with_width!(w, |w| taps_columns_block_sums::<S, G, false, false>(
                s,
                planes,
                (base, koff),
                (rs, n, n0, w),
                (d, d),
                (&mut *c, rows),
                &mut []
            )),
        }
    }
}

/// The loop of [`taps_columns_times_matrix_block`] for the rows b0..end and the output columns
/// n0..n0+w: with MASK, dy masked to where y > 0; with DB, its column sums folded into `db`.
/// The block's sums are folded in with [`fold_block`] (stored for the first block, b0 = 0).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn taps_columns_block_sums<S: Simd, const G: usize, const MASK: bool, const DB: bool>(
    s: S,
    planes: &[f32],
    (base, koff): (&[usize], &[usize; G]),
    ((b0, end), n, n0, w): ((usize, usize), usize, usize, usize),
    (d, y): (&[f32], &[f32]),
    (c, rows): (&mut [f32], usize),
    db: &mut [f32],
) {
    assert!(end <= base.len(), "taps_columns_block_sums: rows past the chunk");
    let rows_base = &base[b0.min(end)..end];
    let reach = rows_base.iter().max().unwrap_or(&0) + koff.iter().max().unwrap_or(&0);
    assert!(
        reach < planes.len() && n0 + w <= n && d.len() >= end * n && (!MASK || y.len() >= end * n),
        "taps_columns_block_sums: planes, dy or y too short"
    );
    let mut acc = [s.zero(); G];
    let mut sum = [s.zero()];
    for (mm, &b) in (b0..).zip(rows_base) {
        // SAFETY: mm * n + n0 + w <= end * n <= d.len() (and y.len() with MASK), asserted.
        let mut dv = s.load(unsafe { d.get_unchecked(mm * n + n0..) }, w);
        if MASK {
            // SAFETY: as above.
            dv = s.pass_where_positive(s.load(unsafe { y.get_unchecked(mm * n + n0..) }, w), dv);
        }
        if DB {
            sum[0] = s.add(sum[0], dv);
        }
        for (v, &o) in acc.iter_mut().zip(koff) {
            // SAFETY: b + o <= max(base[b0..end]) + max(koff) < planes.len(), asserted above.
            let x = unsafe { *planes.get_unchecked(b + o) };
            *v = s.mul_add(s.splat(x), dv, *v);
        }
    }
    fold_block(s, &mut acc, c, (n, n0, w), rows, b0 == 0);
    if DB {
        fold_block(s, &mut sum, db, (0, n0, w), 1, b0 == 0);
    }
}

/// dx += row2im(dy W) for one block of 16 output pixels m0.. (rows < `rows` real), without the
/// dA matrix: the products of [`rows_times_matrix`] (dy rows `blk` of stride BS, times Wr), each
/// 16-column result added straight into the input pixel it belongs to (`pix`, from
/// [`pixel_taps`](super::layout::pixel_taps)). Taps run in reverse order, so every dx value
/// receives its terms in the order of row2im (output pixels ascending: of two pixels of a block
/// that feed one input pixel, the earlier one does so through the later tap), and the result
/// has the same bits.
#[inline(always)]
pub(super) fn rows_times_matrix_into_image<S: Simd, const BS: usize>(
    s: S,
    g: &ConvGeom,
    (blk, wr): (&[f32], &[f32]),
    pix: &[usize],
    (m0, rows): (usize, usize),
    dx: &mut [f32],
) {
    let (c, ckk, oc, kk) = (g.c, g.ckk(), g.oc, g.kh * g.kw);
    assert!(
        rows > 0 && blk.len() >= MR * BS && BS >= oc && wr.len() >= oc * ckk,
        "rows_times_matrix_into_image: block or weights too short"
    );
    let at = block_pixels(g, m0, rows);
    for t in (0..kk).rev() {
        for cb in (0..c).step_by(LANES) {
            let n0 = t * c + cb;
            // Groups of rows in order: each dx value gets its terms in the same order.
            for_each_group!(S, rows, |r0, G| {
                into_image_rows::<S, BS, G>(s, (blk, wr), (oc, ckk, n0), (&at, r0, rows), (pix, t, cb), dx);
            });
        }
    }
}

/// One tap and 16-channel block of [`rows_times_matrix_into_image`], for the G rows from r0
/// (those below `rows` stored).
#[inline(always)]
fn into_image_rows<S: Simd, const BS: usize, const G: usize>(
    s: S,
    (blk, wr): (&[f32], &[f32]),
    (oc, ckk, n0): (usize, usize, usize),
    (at, r0, rows): (&[(usize, usize); MR], usize, usize),
    (pix, t, cb): (&[usize], usize, usize),
    dx: &mut [f32],
) {
    assert!(
        r0 + G <= MR && blk.len() >= MR * BS && BS >= oc,
        "into_image_rows: block too short"
    );
    assert!(
        oc == 0 || wr.len() >= (oc - 1) * ckk + n0 + LANES,
        "into_image_rows: weights too short"
    );
    let mut acc = [s.splat(0.0); G];
    for p in 0..oc {
        // SAFETY: p * ckk + n0 <= (oc - 1) * ckk + n0 <= wr.len() - LANES, asserted above.
        let bv = s.load(unsafe { wr.get_unchecked(p * ckk + n0..) }, LANES);
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: (r0 + r) * BS + p < MR * BS <= blk.len(), as r0 + G <= MR and p < oc <= BS
            // (asserted above).
            let av = unsafe { *blk.get_unchecked((r0 + r) * BS + p) };
            *acc = s.mul_add(s.splat(av), bv, *acc);
        }
    }
    for (&(base, first), v) in at[r0..].iter().zip(&acc).take(rows - r0) {
        let o = pix[first + t];
        if o != usize::MAX {
            let d = &mut dx[base + o + cb..][..LANES];
            s.store(d, LANES, s.add(s.load(d, LANES), *v));
        }
    }
}
