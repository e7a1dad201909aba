//! The image filters the preprocessing is made of, as plain functions over a gray buffer
//! ([`Plane`]: row-major f32, 0 to 255): resizing (also only the part of a mostly-zero plane
//! that can be nonzero), square min/max filters (van Herk / Gil-Werman: three compares per
//! pixel whatever the size), box blur, 3x3 median, grey dilation/erosion by a disk, chamfer
//! distance transforms, 8-connected components (from the mask's runs), quantiles (counted for
//! 8-bit levels) and Otsu's threshold.

/// A gray image as a flat f32 buffer: `px[y * w + x]`, values 0 to 255.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub px: Vec<f32>,
}

impl Plane {
    /// A plane of one value.
    pub fn filled(w: usize, h: usize, v: f32) -> Plane {
        Plane {
            w,
            h,
            px: vec![v; w * h],
        }
    }

    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.w + x]
    }

    /// The part `x0..x1` x `y0..y1`.
    pub fn crop(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> Plane {
        assert!(
            x0 < x1 && x1 <= self.w && y0 < y1 && y1 <= self.h,
            "crop inside the plane"
        );
        Plane {
            w: x1 - x0,
            h: y1 - y0,
            px: crop_rect(&self.px, self.w, (x0, y0, x1, y1)),
        }
    }
}

/// The part `(x0, y0)` to `(x1, y1)` (exclusive ends) of row-major values `w` a row: a
/// [`Plane::crop`]'s pixels, or a mask's.
pub(crate) fn crop_rect<T: Copy>(px: &[T], w: usize, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Vec<T> {
    let mut out = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        out.extend_from_slice(&px[y * w + x0..y * w + x1]);
    }
    out
}

/// Resized to `w` x `h` with a triangle filter (its support widened when shrinking, so shrinking
/// averages: anti-aliased, as MNIST's digits were made). The same size is an exact copy.
///
/// The same values, bit for bit, as the `image` crate's `imageops::resize` with
/// `FilterType::Triangle` on the plane scaled to 0..1 (a test checks it): columns first, then
/// rows, with the crate's f32 weights, sums in its order and its clamp to 0..1. Without the
/// crate's generic pixels and its copies, the column pass runs over whole rows.
pub fn resize(p: &Plane, w: usize, h: usize) -> Plane {
    assert!(w > 0 && h > 0, "resize to a non-empty size");
    if (w, h) == (p.w, p.h) {
        return p.clone();
    }
    resize_taps(p, &triangle_taps(p.h, h), &triangle_taps(p.w, w))
}

/// [`resize`] to `w` x `h` of a plane `of` = (width, height) that is 0 except in `part`, the
/// rectangle of it at `at` = (x, y), computed only where the result can be nonzero, and left
/// transposed as the resize's last pass leaves it (for what does not depend on the orientation,
/// a mask's area and perimeter: no transpose back). Untransposed, `out` is the part `(ox0, oy0)`
/// to `(ox0 + out.h, oy0 + out.w)` of the `w` x `h` result, `(out, ox0, oy0)`; every output
/// pixel outside it is 0. The same values, bit for bit, as that part of [`resize`] of the whole
/// plane (a test checks it): the taps that read the zeros around the rectangle are left out,
/// and in [`weighted_rows`]' sums from +0 a term `0 x weight` changes nothing. For a new size
/// only (`resize` copies a plane to its own size unclamped; this would clamp it).
pub(crate) fn resize_part_transposed(
    part: &Plane,
    (x0, y0): (usize, usize),
    of: (usize, usize),
    (w, h): (usize, usize),
) -> (Plane, usize, usize) {
    assert!(w > 0 && h > 0, "resize to a non-empty size");
    assert!(part.w > 0 && part.h > 0, "a nonempty part");
    assert!(x0 + part.w <= of.0 && y0 + part.h <= of.1, "the part inside the plane");
    let (oy0, ty) = taps_within(of.1, h, y0, y0 + part.h);
    let (ox0, tx) = taps_within(of.0, w, x0, x0 + part.w);
    (resize_taps_transposed(part, &ty, &tx), ox0, oy0)
}

/// [`resize`] by the taps of each axis (see [`triangle_taps`]).
fn resize_taps(p: &Plane, taps_y: &Taps, taps_x: &Taps) -> Plane {
    untranspose(resize_taps_transposed(p, taps_y, taps_x))
}

/// A plane transposed back (see [`resize_part_transposed`]).
fn untranspose(t: Plane) -> Plane {
    Plane {
        w: t.h,
        h: t.w,
        px: transpose(&t.px, t.w, t.h),
    }
}

/// [`resize_part_transposed`] transposed back (for the tests, which compare it with [`resize`]).
#[cfg(test)]
pub(crate) fn resize_part(
    part: &Plane,
    at: (usize, usize),
    of: (usize, usize),
    size: (usize, usize),
) -> (Plane, usize, usize) {
    let (t, ox0, oy0) = resize_part_transposed(part, at, of, size);
    (untranspose(t), ox0, oy0)
}

/// [`resize_taps`]' result transposed: its last pass sums along the rows of the transposed
/// plane.
fn resize_taps_transposed(p: &Plane, taps_y: &Taps, taps_x: &Taps) -> Plane {
    let (w, h) = (taps_x.reads.len(), taps_y.reads.len());
    // Along the columns, on the values scaled to 0..1 as the crate sees them (each input row
    // feeds several output rows: scaled once, the same quotients).
    let scaled: Vec<f32> = p.px.iter().map(|&v| v / 255.0).collect();
    let tall = weighted_rows(&scaled, p.w, taps_y);
    // Along the rows, on the columns' result transposed, so that this pass too sums whole rows
    // (vectorised, where a pixel at a time is a short scalar loop); then clamped to 0..1 as the
    // crate clamps its float pixels (value by value: the same values in either orientation).
    let mut out_t = weighted_rows(&transpose(&tall, p.w, h), h, taps_x);
    out_t.iter_mut().for_each(|t| {
        *t = if *t < 0.0 {
            0.0
        } else if *t > 1.0 {
            255.0
        } else {
            *t * 255.0
        }
    });
    Plane { w: h, h: w, px: out_t }
}

/// One pass of [`resize`]: output row o (of `n` values) = 0 + the weighted sum, in order, of the
/// rows of `src` that the taps' output o reads.
fn weighted_rows(src: &[f32], n: usize, taps: &Taps) -> Vec<f32> {
    let mut out = vec![0.0f32; n * taps.reads.len()];
    for (row, (first, at)) in out.chunks_exact_mut(n).zip(&taps.reads) {
        for (i, &wt) in taps.weights[at.clone()].iter().enumerate() {
            let src = &src[(first + i) * n..(first + i + 1) * n];
            row.iter_mut().zip(src).for_each(|(t, &v)| *t += v * wt);
        }
    }
    out
}

/// One axis of [`resize`]: output o reads the inputs from `reads[o].0` on, one per weight of
/// `weights[reads[o].1]`, in order. (One buffer of weights: a resize makes no small vectors.)
struct Taps {
    reads: Vec<(usize, std::ops::Range<usize>)>,
    weights: Vec<f32>,
}

impl Taps {
    /// The outputs that read inputs in `lo..hi` (consecutive: an output's first and last input
    /// grow with it), each reading only those, counted from `lo`; with the first such output.
    /// An output that reads none of them is 0 when the inputs outside are 0.
    fn within(self, lo: usize, hi: usize) -> (usize, Taps) {
        let mut o0 = None;
        let reads = (self.reads.into_iter().enumerate())
            .filter_map(|(o, (first, at))| {
                let (a, b) = (first.max(lo), (first + at.len()).min(hi));
                (a < b).then(|| {
                    o0.get_or_insert(o);
                    (a - lo, at.start + a - first..at.start + b - first)
                })
            })
            .collect();
        let o0 = o0.expect("a nonempty range of inputs reaches an output");
        (
            o0,
            Taps {
                reads,
                weights: self.weights,
            },
        )
    }
}

/// The [`Taps`] of one axis of [`resize`], from `len` inputs to `new_len` outputs: for each
/// output, the first input it reads and the normalised triangle weights of the inputs from
/// there, computed as the `image` crate does.
fn triangle_taps(len: usize, new_len: usize) -> Taps {
    triangle_taps_of(len, new_len, 0..new_len)
}

/// `triangle_taps(len, new_len).within(lo, hi)`, with the weights made only for the outputs
/// near `lo..hi` (each output's taps are its own: the same values). The outputs that can read
/// an input there have centres within the triangle's support of it; 2 more on each side cover
/// the rounding of that bound. Clamped reads reach the first (last) input from every output
/// before (after) it: all outputs, when the range touches that end.
fn taps_within(len: usize, new_len: usize, lo: usize, hi: usize) -> (usize, Taps) {
    let ratio = len as f64 / new_len as f64;
    let support = ratio.max(1.0);
    let first = if lo == 0 {
        0
    } else {
        (((lo as f64 - 1.0 - support) / ratio - 0.5).floor() - 2.0).max(0.0) as usize
    };
    let end = if hi >= len {
        new_len
    } else {
        ((((hi as f64 + support) / ratio - 0.5).ceil() + 3.0).max(0.0) as usize).min(new_len)
    };
    let (o0, taps) = triangle_taps_of(len, new_len, first..end).within(lo, hi);
    (first + o0, taps)
}

/// [`triangle_taps`] of the outputs in `outputs` only (the first read is `outputs.start`'s).
fn triangle_taps_of(len: usize, new_len: usize, outputs: std::ops::Range<usize>) -> Taps {
    let ratio = len as f32 / new_len as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio; // the triangle's support (1) in input pixels
    let mut weights = Vec::new();
    let reads = outputs
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let first = floor_i64(centre - support).clamp(0, len as i64 - 1);
            let end = ceil_i64(centre + support).clamp(first + 1, len as i64);
            let centre = centre - 0.5;
            let at = weights.len();
            // Scaling up, the quotient by 1 is the value itself: not divided (the same bits).
            let up = sratio == 1.0;
            weights.extend((first..end).map(|i| {
                let d = i as f32 - centre;
                let x = if up { d.abs() } else { (d / sratio).abs() };
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }));
            let ws = &mut weights[at..];
            let sum = ws.iter().fold(0.0f32, |s, &w| s + w);
            ws.iter_mut().for_each(|w| *w /= sum);
            (first as usize, at..weights.len())
        })
        .collect();
    Taps { reads, weights }
}

/// `x.floor() as i64`, without a call to libm's `floorf` (the baseline x86-64 has no rounding
/// instruction): the truncation, one less when it went up. The same value for every f32 (NaN
/// 0, and saturated far outside i64).
fn floor_i64(x: f32) -> i64 {
    let t = x as i64;
    t.saturating_sub(i64::from((t as f32) > x))
}

/// `x.ceil() as i64`, the same way as [`floor_i64`].
fn ceil_i64(x: f32) -> i64 {
    let t = x as i64;
    t.saturating_add(i64::from((t as f32) < x))
}

/// Scaled down (keeping the aspect ratio) so that the long side is at most `side`.
pub fn shrink_to(p: &Plane, side: usize) -> Plane {
    let long = p.w.max(p.h);
    if long <= side {
        return p.clone();
    }
    let s = side as f64 / long as f64;
    let w = ((p.w as f64 * s).round() as usize).max(1);
    let h = ((p.h as f64 * s).round() as usize).max(1);
    resize(p, w, h)
}

/// The max (or min, by `op`) over the window of `2r + 1` rows around each row of the `n` x
/// `w` values `src` (row by row; the window clipped at the top and bottom), for every column,
/// in three `op`s per value whatever `r` is (van Herk / Gil-Werman): the rows are cut into
/// blocks of `2r + 1`, the first ending at row `r` (as if `r` rows of `id` came before row 0);
/// the running extreme from each block's first row (`g`) and from its last (`h`) give the
/// window of row i as `op(h[i - r], g[i + r])`. Clipped: `h[0]` for `i - r < 0` (the rows before
/// 0 hold `id`), and past the last row, its `g` in the same block, or `h` alone in a block
/// beyond. Strips of 256 bytes of columns at a time, so `g` and `h` stay in cache, and each step
/// is an elementwise `op` of two rows, which vectorises. (`id` is `op`'s identity: the result
/// for NaN-free values is the same as with the rows of `id` there.)
fn sliding_extreme_columns<T: Copy>(src: &[T], n: usize, w: usize, r: usize, id: T, op: impl Fn(T, T) -> T) -> Vec<T> {
    // 256 bytes of each row at a time: 64 floats, or 256 levels.
    let strip = 256 / std::mem::size_of::<T>();
    let k = 2 * r + 1;
    // The block of row d: rows b k - r to b k + r are block b.
    let block = |d: usize| (d + r) / k;
    let mut out = vec![id; n * w];
    let (mut g, mut h) = (vec![id; n * strip], vec![id; n * strip]);
    for c0 in (0..w).step_by(strip) {
        let sw = strip.min(w - c0);
        let row = |d: usize| &src[d * w + c0..d * w + c0 + sw];
        // cur = op(prev, row d) in one pass.
        let step = |cur: &mut [T], prev: &[T], d: usize| {
            (cur.iter_mut().zip(prev).zip(row(d))).for_each(|((c, &p), &v)| *c = op(p, v));
        };
        let mut start = 0;
        while start < n {
            let end = ((block(start) + 1) * k - r).min(n);
            g[start * sw..(start + 1) * sw].copy_from_slice(row(start));
            for d in start + 1..end {
                let (done, rest) = g.split_at_mut(d * sw);
                step(&mut rest[..sw], &done[(d - 1) * sw..], d);
            }
            h[(end - 1) * sw..end * sw].copy_from_slice(row(end - 1));
            for d in (start..end - 1).rev() {
                let (cur, after) = h.split_at_mut((d + 1) * sw);
                step(&mut cur[d * sw..], &after[..sw], d);
            }
            start = end;
        }
        for i in 0..n {
            let hi = &h[i.saturating_sub(r) * sw..][..sw];
            let o = &mut out[i * w + c0..i * w + c0 + sw];
            let last = i + r;
            let g_row = if last < n {
                Some(last)
            } else {
                (block(last) == block(n - 1)).then_some(n - 1)
            };
            match g_row {
                Some(d) => {
                    let gi = &g[d * sw..(d + 1) * sw];
                    (o.iter_mut().zip(hi.iter().zip(gi))).for_each(|(o, (&a, &b))| *o = op(a, b));
                }
                None => o.copy_from_slice(hi),
            }
        }
    }
    out
}

/// The `w` x `h` values (row by row) transposed to `h` x `w`: eight source rows at a time, so
/// that each source row is read in order and each write is a run of eight values.
pub(crate) fn transpose<T: Copy + Default>(src: &[T], w: usize, h: usize) -> Vec<T> {
    const R: usize = 8;
    let mut out = vec![T::default(); w * h];
    let full = h - h % R;
    for y0 in (0..full).step_by(R) {
        let rows: [&[T]; R] = std::array::from_fn(|k| &src[(y0 + k) * w..(y0 + k + 1) * w]);
        for (x, dst) in out.chunks_exact_mut(h).enumerate() {
            dst[y0..y0 + R].copy_from_slice(&rows.map(|r| r[x]));
        }
    }
    for y in full..h {
        for (x, &v) in src[y * w..(y + 1) * w].iter().enumerate() {
            out[x * h + y] = v;
        }
    }
    out
}

/// The smaller of two finite values by a plain compare, which vectorises (`f32::min`'s NaN
/// rules cost a compare and a blend more).
pub(crate) fn min_finite(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// The larger of two finite values by a plain compare (see [`min_finite`]).
pub(crate) fn max_finite(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// The max (`max = true`) or min over the (2r+1) x (2r+1) square around each pixel (the
/// window clipped at the edges): grey dilation or erosion by a square. Columns, then rows (as
/// the columns of the transposed image). For finite values (the extremes are plain compares,
/// which vectorise; a NaN is not given `f32::max`'s rules).
pub fn square_extreme(p: &Plane, r: usize, max: bool) -> Plane {
    let (w, h) = (p.w, p.h);
    let t = transpose(&extreme_columns(&p.px, h, w, r, max), w, h);
    let px = transpose(&extreme_columns(&t, w, h, r, max), h, w);
    Plane { w, h, px }
}

/// [`square_extreme`] of [`square_extreme`], the second the other extreme: a closing
/// (`max_first`, max then min) or an opening by the square. The same values with two transposes
/// fewer: the second filter's row pass runs on the first's result still transposed, as a max
/// (or min) over a square is the same taken along the columns or the rows first (up to the
/// sign of a zero when both +0 and -0 are there: the compares keep the first of equal values;
/// the preprocessing's planes hold no -0). When the first filter gives one value everywhere,
/// that is the result.
pub fn square_closing_or_opening(p: &Plane, r: usize, max_first: bool) -> Plane {
    Plane {
        w: p.w,
        h: p.h,
        px: closing_or_opening(&p.px, p.w, p.h, r, max_first),
    }
}

/// [`square_closing_or_opening`] of any values with extremes: the f32 of a plane, or the 8-bit
/// levels of a gray image (16 to a 128-bit vector, not 4).
pub(crate) fn closing_or_opening<T: Extreme>(px: &[T], w: usize, h: usize, r: usize, max_first: bool) -> Vec<T> {
    // When every pixel's window holds a pixel of the image's extreme, the first filter gives
    // that value everywhere, and so does the second: found in one pass (paper on a clean page).
    if let Some(&first) = px.first() {
        let m = if max_first {
            px.iter().fold(first, |a, &b| a.max(b))
        } else {
            px.iter().fold(first, |a, &b| a.min(b))
        };
        if every_tile_holds(px, w, r + 1, m) {
            return vec![m; w * h];
        }
    }
    let t = transpose(&extreme_columns(px, h, w, r, max_first), w, h);
    let first = extreme_columns(&t, w, h, r, max_first);
    // The first filter's result is often one value (the paper's, within reach of every pixel):
    // then so is the second's, which is skipped.
    if let Some(&c) = first.first()
        && first.iter().fold(true, |all, &v| all & v.same(c))
    {
        return vec![c; w * h];
    }
    let t = extreme_columns(&first, w, h, r, !max_first);
    extreme_columns(&transpose(&t, h, w), h, w, r, !max_first)
}

/// Whether each tile of `side` x `side` pixels (from the top left; those at the right and
/// bottom edges smaller) of the w-wide image holds a pixel of value `m`. With `side` = r + 1,
/// a pixel's (2r+1)-square window (clipped at the edges) holds its whole tile, so then every
/// window holds such a pixel. Each row's segments are tested whole (a pass that vectorises).
fn every_tile_holds<T: Extreme>(px: &[T], w: usize, side: usize, m: T) -> bool {
    let mut holds = vec![false; w.div_ceil(side)];
    for (y, row) in px.chunks_exact(w).enumerate() {
        if y % side == 0 && y > 0 {
            if !holds.iter().all(|&b| b) {
                return false;
            }
            holds.fill(false);
        }
        for (has, seg) in holds.iter_mut().zip(row.chunks(side)) {
            *has = *has || seg.iter().fold(false, |any, &v| any | v.same(m));
        }
    }
    holds.iter().all(|&b| b)
}

/// Values a square min/max filter takes: ordered by plain compares (finite floats: no NaN
/// rules, so the compares vectorise), with identities for max and min.
pub(crate) trait Extreme: Copy + Default {
    /// The identity of max: no value is smaller.
    const LOWEST: Self;
    /// The identity of min: no value is larger.
    const HIGHEST: Self;
    fn max(self, b: Self) -> Self;
    fn min(self, b: Self) -> Self;
    /// The same value, bit for bit.
    fn same(self, b: Self) -> bool;
}

impl Extreme for f32 {
    const LOWEST: f32 = f32::NEG_INFINITY;
    const HIGHEST: f32 = f32::INFINITY;
    fn max(self, b: f32) -> f32 {
        max_finite(self, b)
    }
    fn min(self, b: f32) -> f32 {
        min_finite(self, b)
    }
    fn same(self, b: f32) -> bool {
        self.to_bits() == b.to_bits()
    }
}

impl Extreme for u8 {
    const LOWEST: u8 = 0;
    const HIGHEST: u8 = 255;
    fn max(self, b: u8) -> u8 {
        Ord::max(self, b)
    }
    fn min(self, b: u8) -> u8 {
        Ord::min(self, b)
    }
    fn same(self, b: u8) -> bool {
        self == b
    }
}

/// [`sliding_extreme_columns`] by max (`max = true`) or min.
fn extreme_columns<T: Extreme>(src: &[T], n: usize, w: usize, r: usize, max: bool) -> Vec<T> {
    if max {
        sliding_extreme_columns(src, n, w, r, T::LOWEST, T::max)
    } else {
        sliding_extreme_columns(src, n, w, r, T::HIGHEST, T::min)
    }
}

/// The mean over the (2r+1) x (2r+1) square around each pixel (the window clipped at the
/// edges), with running sums: O(1) per pixel.
pub fn box_blur(p: &Plane, r: usize) -> Plane {
    let (w, h) = (p.w, p.h);
    let blur_line = |n: usize, get: &dyn Fn(usize) -> f32, set: &mut dyn FnMut(usize, f32)| {
        let mut prefix = vec![0.0f64; n + 1];
        for i in 0..n {
            prefix[i + 1] = prefix[i] + get(i) as f64;
        }
        for i in 0..n {
            let (a, b) = (i.saturating_sub(r), (i + r + 1).min(n));
            set(i, ((prefix[b] - prefix[a]) / (b - a) as f64) as f32);
        }
    };
    let mut rows = vec![0.0f32; w * h];
    for y in 0..h {
        blur_line(w, &|i| p.px[y * w + i], &mut |i, v| rows[y * w + i] = v);
    }
    let mut out = vec![0.0f32; w * h];
    for x in 0..w {
        blur_line(h, &|i| rows[i * w + x], &mut |i, v| out[i * w + x] = v);
    }
    Plane { w, h, px: out }
}

/// The median of each pixel's 3x3 neighbourhood (clipped at the edges).
pub fn median3(p: &Plane) -> Plane {
    let (w, h) = (p.w, p.h);
    let mut out = vec![0.0f32; w * h];
    let mut v = Vec::with_capacity(9);
    for y in 0..h {
        for x in 0..w {
            v.clear();
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    v.push(p.px[yy * w + xx]);
                }
            }
            v.sort_unstable_by(f32::total_cmp);
            out[y * w + x] = v[v.len() / 2];
        }
    }
    Plane { w, h, px: out }
}

/// The offsets (dx, dy) of a disk of radius `r` (dx^2 + dy^2 <= r^2).
fn disk(r: f32) -> Vec<(isize, isize)> {
    let ri = r.floor() as isize;
    let mut d = Vec::new();
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f32 <= r * r + 1e-3 {
                d.push((dx, dy));
            }
        }
    }
    d
}

/// Grey dilation (`max = true`: each pixel the max over a disk of radius `r` around it) or
/// erosion (the min), the disk clipped at the edges. O(pixels * r^2): for small images.
pub fn disk_extreme(p: &Plane, r: f32, max: bool) -> Plane {
    let d = disk(r);
    let (w, h) = (p.w as isize, p.h as isize);
    let mut out = p.clone();
    for y in 0..h {
        for x in 0..w {
            let mut m = p.px[(y * w + x) as usize];
            for &(dx, dy) in &d {
                let (xx, yy) = (x + dx, y + dy);
                if xx >= 0 && yy >= 0 && xx < w && yy < h {
                    let v = p.px[(yy * w + xx) as usize];
                    m = if max { m.max(v) } else { m.min(v) };
                }
            }
            out.px[(y * w + x) as usize] = m;
        }
    }
    out
}

/// Chamfer (3-4) distance, in pixels, from each pixel to the nearest pixel where `mask` is
/// `target` (the edges of the image are not targets; a mask without targets gives infinity).
/// Within 8% of the Euclidean distance.
pub fn distance_to(mask: &[bool], w: usize, h: usize, target: bool) -> Vec<f32> {
    const INF: u32 = u32::MAX / 2;
    let mut d: Vec<u32> = mask.iter().map(|&m| if m == target { 0 } else { INF }).collect();
    chamfer_passes(&mut d, w, h, None);
    d.iter()
        .map(|&v| if v >= INF { f32::INFINITY } else { v as f32 / 3.0 })
        .collect()
}

/// Whether each pixel is within `r` of a pixel where `mask` is `target`: the same answers as
/// `distance_to(mask, w, h, target)[i] <= r`, in 16-bit chamfer units that stop counting just
/// above the largest passing one, V (the largest v with v / 3 <= r, the same division), with
/// no distances made into floats. A pixel within V has its distance exactly (each step of its
/// path is at most V); every other one ends above V. (A range too large for 16 bits is
/// answered through [`distance_to`].)
pub fn within(mask: &[bool], w: usize, h: usize, target: bool, r: f32) -> Vec<bool> {
    let passes = |v: u32| v as f32 / 3.0 <= r;
    if !passes(0) {
        return vec![false; mask.len()];
    }
    const MOST: u32 = u16::MAX as u32 - 8;
    if passes(MOST) {
        return distance_to(mask, w, h, target).iter().map(|&d| d <= r).collect();
    }
    // The passing values are a prefix of 0, 1, ... (v / 3 grows with v): V, by halving.
    let (mut lo, mut hi) = (0u32, MOST);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if passes(mid) { lo = mid } else { hi = mid }
    }
    let (most, beyond) = (lo as u16, lo as u16 + 1);
    let mut d: Vec<u16> = mask.iter().map(|&m| if m == target { 0 } else { beyond }).collect();
    // A run along a row of j steps costs 3j: only j <= V / 3 can end within V.
    let span = Some(lo as usize / 3).filter(|&s| s <= 64);
    chamfer_passes(&mut d, w, h, span);
    d.iter().map(|&v| v <= most).collect()
}

/// The two passes of the chamfer transform on `d` (w x h, row by row: 0 at the targets, a
/// large value elsewhere), in place. Each pass relaxes a pixel from its neighbour along the
/// row (final already in this pass) and from the three in the row before (final too): the row
/// before is taken first for a whole row at once (it vectorises), then the scan along the row.
/// With `span`, only runs along a row of at most that many steps count (paths that cost at
/// most 3 x span there): the scan is then log2(span) vector steps (row[x] from row[x - s] + 3s,
/// s = 1, 2, 4, ...: together every j <= span), not a chain of one pixel at a time; `span` is
/// at most 64 (3 x 64 fits a u8). The large value plus 4 (and 3 x span) must fit `T`.
fn chamfer_passes<T>(d: &mut [T], w: usize, h: usize, span: Option<usize>)
where
    T: Copy + Ord + std::ops::Add<Output = T> + From<u8>,
{
    assert!(span.is_none_or(|s| s <= 64), "3 x span fits a u8");
    if w == 0 {
        return;
    }
    let (three, four) = (T::from(3), T::from(4));
    // The ends apart, so that the pixels between are zipped slices (no bounds or edge tests):
    // that loop vectorises.
    let from_row = |row: &mut [T], other: &[T]| {
        row[0] = row[0].min(other[0] + three);
        if w == 1 {
            return;
        }
        row[0] = row[0].min(other[1] + four);
        row[w - 1] = row[w - 1].min(other[w - 1] + three).min(other[w - 2] + four);
        let inner = row[1..w - 1].iter_mut().zip(&other[1..w - 1]);
        for ((v, &up), (&left, &right)) in inner.zip(other[..w - 2].iter().zip(&other[2..])) {
            *v = (*v).min(up + three).min(left + four).min(right + four);
        }
    };
    // The row before a step (only with `span`: allocated at its first use, then reused).
    let mut before = Vec::new();
    // Along the row, from the left (or from the right when `back`).
    let mut along = |row: &mut [T], back: bool| match span {
        None if back => (0..w - 1).rev().for_each(|x| row[x] = row[x].min(row[x + 1] + three)),
        None => (1..w).for_each(|x| row[x] = row[x].min(row[x - 1] + three)),
        Some(span) => {
            let mut s = 1;
            while s <= span && s < w {
                before.clear();
                before.extend_from_slice(row);
                let c = T::from(3 * s as u8);
                let (to, from) = if back {
                    (&mut row[..w - s], &before[s..])
                } else {
                    (&mut row[s..], &before[..w - s])
                };
                to.iter_mut().zip(from).for_each(|(v, &p)| *v = (*v).min(p + c));
                s *= 2;
            }
        }
    };
    for y in 0..h {
        let (done, rest) = d.split_at_mut(y * w);
        let row = &mut rest[..w];
        if y > 0 {
            from_row(row, &done[(y - 1) * w..]);
        }
        along(row, false);
    }
    for y in (0..h).rev() {
        let (head, after) = d.split_at_mut((y + 1) * w);
        let row = &mut head[y * w..];
        if y + 1 < h {
            from_row(row, &after[..w]);
        }
        along(row, true);
    }
}

/// A connected set of mask pixels (8-neighbours).
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub area: usize,
    /// Bounding box, inclusive.
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
    /// How many of its pixels lie on the image's edge.
    pub edge_px: usize,
}

/// The 8-connected components of a mask (under 2^32 pixels): a label per pixel (`u32::MAX`
/// off the mask, else the index into the list; 32 bits, half the memory to clear of `usize`)
/// and the components, numbered in the order of their first pixel row by row. Made from the
/// mask's runs (row by row, a run joins the runs of the row above that it touches, corners
/// included: a union-find whose roots are each component's first run), so its work grows with
/// the runs, not with the pixels of ink.
pub fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<Component>) {
    assert_eq!(mask.len(), w * h, "a mask of w x h");
    assert!(w * h < u32::MAX as usize, "labels fit in 32 bits");
    if w == 0 || h == 0 {
        return (Vec::new(), Vec::new());
    }
    // The runs (y, x0, x1 exclusive), row by row, and where each row's runs start.
    let (mut runs, mut row_runs) = (Vec::new(), Vec::with_capacity(h + 1));
    for (y, row) in mask.chunks_exact(w).enumerate() {
        row_runs.push(runs.len());
        let mut x = 0;
        while let Some(a) = find(row, x, true) {
            x = find(row, a, false).unwrap_or(w);
            runs.push((y, a, x));
        }
    }
    row_runs.push(runs.len());
    let mut parent: Vec<usize> = (0..runs.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for y in 1..h {
        let mut from = row_runs[y - 1];
        for i in row_runs[y]..row_runs[y + 1] {
            let (_, a, b) = runs[i];
            // Runs above touch [a, b) when they start at b at the latest and end (exclusive)
            // at a at the earliest; those ending before can touch no later run of this row.
            while from < row_runs[y] && runs[from].2 < a {
                from += 1;
            }
            for j in (from..row_runs[y]).take_while(|&j| runs[j].1 <= b) {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                // The earlier run is the root: a component's root is its first run.
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut label = vec![u32::MAX; w * h];
    let mut comps: Vec<Component> = Vec::new();
    let mut id_of = vec![usize::MAX; runs.len()];
    for (i, &(y, a, b)) in runs.iter().enumerate() {
        let r = root(&mut parent, i);
        if id_of[r] == usize::MAX {
            id_of[r] = comps.len();
            comps.push(Component {
                area: 0,
                x0: usize::MAX,
                y0: y,
                x1: 0,
                y1: y,
                edge_px: 0,
            });
        }
        let c = &mut comps[id_of[r]];
        c.area += b - a;
        (c.x0, c.x1, c.y1) = (c.x0.min(a), c.x1.max(b - 1), y);
        // Pixels on the image's edge: all of a run in the first or last row, else its ends at
        // x = 0 and x = w - 1 (one pixel when the image is one pixel wide).
        c.edge_px += if y == 0 || y + 1 == h {
            b - a
        } else {
            usize::from(a == 0) + usize::from(b == w && w > 1)
        };
        label[y * w + a..y * w + b].fill(id_of[r] as u32);
    }
    (label, comps)
}

/// The first index from `from` on where `m` is `want`: 16 values tested at once (a test that
/// vectorises; most of a mask's row is one run), then the hit searched within them.
fn find(m: &[bool], from: usize, want: bool) -> Option<usize> {
    let mut at = from;
    for c in m[from..].chunks(16) {
        if c.iter().fold(false, |any, &v| any | (v == want)) {
            return c.iter().position(|&v| v == want).map(|i| at + i);
        }
        at += c.len();
    }
    None
}

/// The rank (0 to `last`) of the q-quantile (0 to 1) of `last + 1` ordered values: the nearest.
pub(crate) fn nearest_rank(last: usize, q: f64) -> usize {
    (last as f64 * q.clamp(0.0, 1.0)).round() as usize
}

/// The q-quantile (0 to 1) of the values (nearest rank); 0 for none.
pub fn quantile(values: &[f32], q: f64) -> f32 {
    quantiles(values, [q])[0]
}

/// Several quantiles of the same values ([`quantile`] of each), with one copy of them: each
/// selection after the first searches only the part above the one before.
///
/// Values are ordered by `f32::total_cmp`, through its integer key (so the passes over all the
/// values vectorise). One pass finds the minimum and the maximum: the first and the last rank
/// need no selection. For the others, a second pass counts the values equal to the minimum:
/// ranks in that run (paper, on an ink-strength plane) need no selection either, and the rest
/// are selected by their keys, among the values above the minimum when it holds over a quarter
/// of them (else among all). The same values as selections over all of them. Values that are
/// all the integers 0 to 255 (an 8-bit image's levels) are counted instead, in one pass.
pub fn quantiles<const K: usize>(values: &[f32], qs: [f64; K]) -> [f32; K] {
    if values.is_empty() {
        return [0.0; K];
    }
    // total_cmp's order as i32 keys; the map is its own inverse.
    let key = |v: f32| {
        let b = v.to_bits() as i32;
        b ^ ((((b >> 31) as u32) >> 1) as i32)
    };
    let value = |k: i32| f32::from_bits(key(f32::from_bits(k as u32)) as u32);
    let last = values.len() - 1;
    let rank = |q: f64| nearest_rank(last, q);
    // Values that are all the integers 0 to 255 (an 8-bit image's, before any filter; not -0):
    // each rank's value is the first level whose count reaches past it.
    let is_byte = |v: f32| (v as u8 as f32).to_bits() == v.to_bits();
    if values
        .chunks(64)
        .all(|c| c.iter().fold(true, |all, &v| all & is_byte(v)))
    {
        return level_quantiles(&histogram(values, |v| v as u8), qs).map(|l| l as f32);
    }
    let (lo, hi) = values
        .iter()
        .map(|&v| key(v))
        .fold((i32::MAX, i32::MIN), |(lo, hi), k| (lo.min(k), hi.max(k)));
    // How many values equal the minimum, counted when a rank other than the first or the last
    // needs it.
    let mut at_min: Option<usize> = None;
    // Counted in u32 per chunk (four lanes to a vector, not two), summed in usize.
    let count_lo = |c: &[f32]| c.iter().map(|&v| u32::from(key(v) == lo)).sum::<u32>() as usize;
    let mut at_min = || *at_min.get_or_insert_with(|| values.chunks(1 << 16).map(count_lo).sum());
    let mut order: [usize; K] = std::array::from_fn(|i| i);
    order.sort_by_key(|&i| rank(qs[i]));
    let mut out = [0.0; K];
    let mut above: Option<Vec<i32>> = None;
    let mut from = 0;
    for i in order {
        let k = rank(qs[i]);
        out[i] = if k == 0 {
            value(lo)
        } else if k == last {
            value(hi)
        } else if k < at_min() {
            value(lo)
        } else {
            // Selected by their keys. When over a quarter of the values are the minimum, among
            // the values above it only (rank k overall is rank k - at_min there); else among
            // all of them (no filtering pass). Either way everything before `from` is at most
            // the value at `from`.
            let at_min = at_min();
            let skip = if at_min * 4 > values.len() { at_min } else { 0 };
            let v = above.get_or_insert_with(|| match skip {
                0 => values.iter().map(|&v| key(v)).collect(),
                _ => values.iter().map(|&v| key(v)).filter(|&k| k != lo).collect(),
            });
            let k = k - skip;
            let x = *v[from..].select_nth_unstable(k - from).1;
            from = k;
            value(x)
        };
    }
    out
}

/// [`quantiles`] of values given as `(value, how many)` pairs (the pairs are sorted here): the
/// same values as over the values written out one by one, in `f32::total_cmp`'s order, by
/// nearest rank; 0 for none.
pub(crate) fn counted_quantiles<const K: usize>(pairs: &mut [(f32, u32)], qs: [f64; K]) -> [f32; K] {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: usize = pairs.iter().map(|p| p.1 as usize).sum();
    if total == 0 {
        return [0.0; K];
    }
    qs.map(|q| pairs[holding_rank(pairs.iter().map(|p| p.1), nearest_rank(total - 1, q))].0)
}

/// How many of the values fall in each bin 0..=255 by `bin` (which gives equal values one bin,
/// as casts do): 16 values of one value (paper) are counted at once, found by comparing the
/// values themselves (a pass that vectorises; making 16 bins first went one value at a time
/// for floats), others in four histograms summed at the end, so that runs of one bin do not
/// wait on one counter.
pub(crate) fn histogram<T: Copy + PartialEq>(values: &[T], bin: impl Fn(T) -> u8) -> [u32; 256] {
    let mut hists = [[0u32; 256]; 4];
    let mut sixteens = values.chunks_exact(16);
    for c in &mut sixteens {
        if c.iter().fold(true, |same, &v| same & (v == c[0])) {
            hists[0][bin(c[0]) as usize] += 16;
            continue;
        }
        for q in c.chunks_exact(4) {
            for (hist, &v) in hists.iter_mut().zip(q) {
                hist[bin(v) as usize] += 1;
            }
        }
    }
    for &v in sixteens.remainder() {
        hists[0][bin(v) as usize] += 1;
    }
    std::array::from_fn(|i| hists.iter().map(|h| h[i]).sum())
}

/// The levels 0..=255 at the q-quantiles (nearest rank, as [`quantile`]) of values counted by
/// level (`counts[l]` values at level l; at least one value).
pub(crate) fn level_quantiles<const K: usize>(counts: &[u32; 256], qs: [f64; K]) -> [usize; K] {
    let last = counts.iter().map(|&c| c as usize).sum::<usize>() - 1;
    qs.map(|q| holding_rank(counts.iter().copied(), nearest_rank(last, q)))
}

/// The index of the count that holds rank `k` (from 0) of the values counted in order: the
/// first whose running total passes `k`.
fn holding_rank(counts: impl IntoIterator<Item = u32>, k: usize) -> usize {
    let mut below = 0;
    let at = counts.into_iter().position(|c| {
        below += c as usize;
        below > k
    });
    at.expect("the counts add up to the values")
}

/// Otsu's threshold of values in 0..=255 (256 bins): the level that maximises the between-class
/// variance, with that variance's share of the total (0 to 1, the separability). A pixel is
/// above the threshold when its value is `>= threshold`.
pub fn otsu(values: &[f32]) -> (f32, f32) {
    otsu_of_counts(&histogram(values, otsu_bin))
}

/// The bin of a value in [`otsu`]: its integer part, clamped to 0..=255 (NaN: 0).
pub(crate) fn otsu_bin(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// [`otsu`] of values counted by [`otsu_bin`].
pub(crate) fn otsu_of_counts(counts: &[u32; 256]) -> (f32, f32) {
    let hist: [f64; 256] = counts.map(|c| c as f64);
    let n: f64 = hist.iter().sum();
    if n == 0.0 {
        return (128.0, 0.0);
    }
    let total: f64 = hist.iter().enumerate().map(|(i, c)| i as f64 * c).sum();
    let mean = total / n;
    let var: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, c)| c * (i as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (mut w0, mut s0) = (0.0, 0.0);
    let (mut best, mut best_t) = (-1.0, 128usize);
    for t in 1..256 {
        // An empty bin leaves w0 and s0, so the variance, as at t - 1: not above the best.
        if t > 1 && hist[t - 1] == 0.0 {
            continue;
        }
        w0 += hist[t - 1];
        s0 += (t - 1) as f64 * hist[t - 1];
        let w1 = n - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (s0 / w0, (total - s0) / w1);
        let between = w0 * w1 * (m0 - m1).powi(2) / (n * n);
        if between > best {
            (best, best_t) = (between, t);
        }
    }
    let eta = if var > 0.0 { (best.max(0.0) / var) as f32 } else { 0.0 };
    (best_t as f32, eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Plane {
        Plane {
            w,
            h,
            px: (0..w * h).map(|i| f(i % w, i / w)).collect(),
        }
    }

    /// `floor_i64` and `ceil_i64` are `floor() as i64` and `ceil() as i64`: at and around
    /// integers and halves, at the ends of f32's exact integers and of i64, for NaN and the
    /// infinities, and for a million random bit patterns. Changing `>` to `>=` in either fails.
    #[test]
    fn floor_and_ceil_without_libm_are_libms() {
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
        ];
        for k in -40i32..=40 {
            let x = k as f32 / 2.0;
            xs.extend([x, x.next_up(), x.next_down()]);
        }
        for x in [16_777_216.0f32, 9.223_372e18, 1e19] {
            xs.extend([x, x.next_up(), x.next_down(), -x, (-x).next_up(), (-x).next_down()]);
        }
        let mut rng = crate::rng::Rng::new(5);
        xs.extend((0..1_000_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
        for x in xs {
            assert_eq!(floor_i64(x), x.floor() as i64, "floor of {x:e}");
            assert_eq!(ceil_i64(x), x.ceil() as i64, "ceil of {x:e}");
        }
    }

    /// `resize` gives the `image` crate's triangle resize bit for bit: growing, shrinking, both
    /// at once, one pixel wide, with values outside 0..255 (clamped as the crate clamps).
    #[test]
    fn resize_is_the_image_crates_triangle_resize_bit_for_bit() {
        use image::{ImageBuffer, Luma, imageops};
        let mut rng = crate::rng::Rng::new(7);
        let sizes = [
            (1, 1),
            (1, 9),
            (7, 1),
            (13, 9),
            (88, 110),
            (117, 147),
            (20, 20),
            (3, 250),
            (512, 384),
        ];
        for &(w, h) in &sizes {
            let p = Plane {
                w,
                h,
                px: (0..w * h).map(|_| rng.next_f32() * 300.0 - 20.0).collect(),
            };
            for &(nw, nh) in &sizes {
                let unit: Vec<f32> = p.px.iter().map(|v| v / 255.0).collect();
                let img: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(w as u32, h as u32, unit).unwrap();
                let want: Vec<u32> = imageops::resize(&img, nw as u32, nh as u32, imageops::FilterType::Triangle)
                    .into_raw()
                    .into_iter()
                    .map(|v| (v * 255.0).to_bits())
                    .collect();
                let got = resize(&p, nw, nh);
                assert_eq!((got.w, got.h), (nw, nh));
                if (nw, nh) != (w, h) {
                    let got: Vec<u32> = got.px.iter().map(|v| v.to_bits()).collect();
                    assert!(got == want, "{w}x{h} -> {nw}x{nh}");
                }
            }
        }
    }

    #[test]
    fn taps_within_are_those_of_every_output() {
        let mut rng = crate::rng::Rng::new(12);
        for _ in 0..3000 {
            let len = 1 + (rng.next_u64() % 300) as usize;
            let new_len = 1 + (rng.next_u64() % 400) as usize;
            let lo = (rng.next_u64() % len as u64) as usize;
            let hi = lo + 1 + (rng.next_u64() % (len - lo) as u64) as usize;
            let (o0, want) = triangle_taps(len, new_len).within(lo, hi);
            let (p0, got) = taps_within(len, new_len, lo, hi);
            // Each output's first input and weights (the ranges index each its own buffer).
            let outputs = |t: &Taps| -> Vec<(usize, Vec<u32>)> {
                let bits = |at: &std::ops::Range<usize>| t.weights[at.clone()].iter().map(|w| w.to_bits()).collect();
                t.reads.iter().map(|(first, at)| (*first, bits(at))).collect()
            };
            let case = format!("{len} -> {new_len}, inputs {lo}..{hi}");
            assert_eq!((p0, outputs(&got)), (o0, outputs(&want)), "{case}");
        }
    }

    /// `resize_part` is its part of `resize` bit for bit, and `resize` is 0 outside it: growing,
    /// shrinking, one axis each way, rectangles at the edges, one pixel, negative values inside.
    #[test]
    fn resize_part_is_the_part_of_resize_that_can_be_nonzero() {
        let mut rng = crate::rng::Rng::new(11);
        let cases = [
            ((88, 110), (110, 138), (22, 7, 65, 72)),
            ((88, 110), (40, 50), (0, 0, 88, 110)),
            ((88, 110), (88, 111), (10, 20, 30, 40)),
            ((30, 20), (75, 9), (0, 5, 1, 20)),
            ((30, 20), (7, 61), (29, 0, 30, 1)),
            ((13, 9), (26, 18), (6, 4, 7, 5)),
        ];
        for ((w, h), (nw, nh), (x0, y0, x1, y1)) in cases {
            let mut p = Plane::filled(w, h, 0.0);
            for y in y0..y1 {
                for x in x0..x1 {
                    p.px[y * w + x] = rng.next_f32() * 300.0 - 20.0;
                }
            }
            p.px[y0 * w + x0] = 0.0; // a zero inside the rectangle is still inside it
            let full = resize(&p, nw, nh);
            let (part, ox0, oy0) = resize_part(&p.crop(x0, y0, x1, y1), (x0, y0), (w, h), (nw, nh));
            let bits = |q: &Plane| q.px.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            let want = full.crop(ox0, oy0, ox0 + part.w, oy0 + part.h);
            assert_eq!(bits(&part), bits(&want), "{w}x{h} -> {nw}x{nh}, {:?}", (x0, y0, x1, y1));
            let (t, tx0, ty0) = resize_part_transposed(&p.crop(x0, y0, x1, y1), (x0, y0), (w, h), (nw, nh));
            assert_eq!((t.w, t.h, tx0, ty0), (part.h, part.w, ox0, oy0), "transposed sizes");
            assert_eq!(bits(&t), bits(&untranspose(part.clone())), "transposed values");
            for y in 0..nh {
                for x in 0..nw {
                    let inside = (ox0..ox0 + part.w).contains(&x) && (oy0..oy0 + part.h).contains(&y);
                    assert!(inside || full.at(x, y) == 0.0, "({x}, {y}) outside the part is 0");
                }
            }
        }
    }

    #[test]
    fn square_extremes_match_a_brute_force_window() {
        // Small, and wider than a strip of columns (with windows wider than the image).
        for (p, r) in [0, 1, 3, 20]
            .map(|r| (plane(13, 9, |x, y| ((x * 7 + y * 13) % 11) as f32), r))
            .into_iter()
            .chain([2, 9, 80].map(|r| (plane(150, 70, |x, y| ((x * 31 + y * 17) % 97) as f32), r)))
        {
            for max in [true, false] {
                let got = square_extreme(&p, r, max);
                for y in 0..p.h {
                    for x in 0..p.w {
                        let mut m = if max { f32::MIN } else { f32::MAX };
                        for yy in y.saturating_sub(r)..(y + r + 1).min(p.h) {
                            for xx in x.saturating_sub(r)..(x + r + 1).min(p.w) {
                                m = if max { m.max(p.at(xx, yy)) } else { m.min(p.at(xx, yy)) };
                            }
                        }
                        assert_eq!(got.at(x, y), m, "r {r} max {max} at ({x}, {y})");
                    }
                }
            }
        }
        let b = box_blur(&plane(5, 1, |x, _| x as f32), 1);
        assert_eq!(b.px, vec![0.5, 1.0, 2.0, 3.0, 3.5]);
    }

    /// A closing or opening in one call is the two square filters, bit for bit.
    #[test]
    fn square_closing_or_opening_is_the_two_filters_in_turn() {
        let mut r = crate::rng::Rng::new(3);
        for (w, h, radius) in [
            (1, 1, 2),
            (1, 9, 2),
            (9, 1, 3),
            (13, 9, 20),
            (88, 110, 27),
            (150, 70, 9),
        ] {
            let px = (0..w * h).map(|_| (r.next_u64() % 256) as f32 + r.next_f32()).collect();
            let p = Plane { w, h, px };
            // And paper (250) with strokes of ink: the first filter of a closing is all paper.
            let paper = plane(w, h, |x, y| if (x + 2 * y) % 7 == 0 { 30.0 } else { 250.0 });
            // Paper (250) everywhere but one corner: the extreme misses some windows (a tile
            // without paper), so the filters run.
            let corner = plane(w, h, |x, y| if x + y < 3 * radius { 40.0 } else { 250.0 });
            for (p, max_first) in [
                (&p, true),
                (&p, false),
                (&paper, true),
                (&paper, false),
                (&corner, true),
            ] {
                let want = square_extreme(&square_extreme(p, radius, max_first), radius, !max_first);
                let got = square_closing_or_opening(p, radius, max_first);
                assert_eq!((got.w, got.h), (w, h));
                let bits = |q: &Plane| q.px.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&got), bits(&want), "{w}x{h} r {radius} max first {max_first}");
                // The same filters over bytes (the values' integer parts).
                let bytes: Vec<u8> = p.px.iter().map(|&v| v as u8).collect();
                let as_f32 = Plane {
                    px: bytes.iter().map(|&b| b as f32).collect(),
                    ..p.clone()
                };
                let want = square_extreme(&square_extreme(&as_f32, radius, max_first), radius, !max_first);
                let got = closing_or_opening(&bytes, w, h, radius, max_first);
                assert_eq!(
                    got.iter().map(|&b| b as f32).collect::<Vec<_>>(),
                    want.px,
                    "bytes {w}x{h}"
                );
            }
            // Only the right one of the shortcut's answers: a tile without paper whose pixels'
            // windows still hold paper is the filters' business, not a wrong constant.
            assert!(every_tile_holds(&paper.px, w, radius + 1, 250.0) || w.min(h) < 7);
            assert!(!every_tile_holds(&corner.px, w, radius + 1, 250.0) || w * h < 3);
        }
    }

    #[test]
    fn otsu_splits_a_bimodal_image_between_its_modes() {
        // 900 paper pixels around 40, 100 ink pixels around 200.
        let v: Vec<f32> = (0..1000)
            .map(|i| {
                if i < 900 {
                    30.0 + (i % 21) as f32
                } else {
                    190.0 + (i % 21) as f32
                }
            })
            .collect();
        let (t, eta) = otsu(&v);
        assert!(t > 50.0 && t <= 190.0, "threshold {t}");
        assert!(eta > 0.9, "separable: {eta}");
        let (_, flat) = otsu(&[7.0; 50]);
        assert_eq!(flat, 0.0);
    }

    /// Skipping the empty bins gives the threshold and separability of every bin tried.
    #[test]
    fn otsu_without_the_empty_bins_is_otsu_over_all_of_them() {
        fn plain_otsu(values: &[f32]) -> (f32, f32) {
            let mut hist = [0f64; 256];
            values
                .iter()
                .for_each(|&v| hist[v.clamp(0.0, 255.0) as u8 as usize] += 1.0);
            let n: f64 = hist.iter().sum();
            let total: f64 = hist.iter().enumerate().map(|(i, c)| i as f64 * c).sum();
            let mean = total / n;
            let var = hist
                .iter()
                .enumerate()
                .map(|(i, c)| c * (i as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let (mut w0, mut s0, mut best, mut best_t) = (0.0, 0.0, -1.0, 128usize);
            for t in 1..256 {
                w0 += hist[t - 1];
                s0 += (t - 1) as f64 * hist[t - 1];
                let w1 = n - w0;
                if w0 == 0.0 || w1 == 0.0 {
                    continue;
                }
                let (m0, m1) = (s0 / w0, (total - s0) / w1);
                let between = w0 * w1 * (m0 - m1).powi(2) / (n * n);
                if between > best {
                    (best, best_t) = (between, t);
                }
            }
            let eta = if var > 0.0 { (best.max(0.0) / var) as f32 } else { 0.0 };
            (best_t as f32, eta)
        }
        let mut r = crate::rng::Rng::new(11);
        for case in 0..200 {
            // A few occupied levels (most bins empty), sometimes level 0 empty too.
            let levels: Vec<f32> = (0..1 + case % 7).map(|_| (r.next_u64() % 256) as f32).collect();
            let n = 1 + (r.next_u64() % 500) as usize;
            let v: Vec<f32> = (0..n)
                .map(|_| levels[(r.next_u64() % levels.len() as u64) as usize] + 0.5)
                .collect();
            let (got, want) = (otsu(&v), plain_otsu(&v));
            assert_eq!(
                (got.0.to_bits(), got.1.to_bits()),
                (want.0.to_bits(), want.1.to_bits()),
                "case {case}"
            );
        }
    }

    /// A pseudo-random mask of w x h with about `per_mille` / 1000 pixels on.
    fn random_mask(w: usize, h: usize, seed: u64, per_mille: u64) -> Vec<bool> {
        let mut r = crate::rng::Rng::new(seed);
        (0..w * h).map(|_| r.next_u64() % 1000 < per_mille).collect()
    }

    #[test]
    fn distance_to_is_the_two_pass_chamfer_transform() {
        // The transform as first written: each pixel relaxed from its four causal neighbours,
        // one at a time, in each pass.
        fn plain(mask: &[bool], w: usize, h: usize, target: bool) -> Vec<f32> {
            const INF: u32 = u32::MAX / 2;
            let mut d: Vec<u32> = mask.iter().map(|&m| if m == target { 0 } else { INF }).collect();
            type Steps = [(isize, isize, u32); 4];
            let passes: [(bool, Steps); 2] = [
                (false, [(-1, 0, 3), (0, -1, 3), (-1, -1, 4), (1, -1, 4)]),
                (true, [(1, 0, 3), (0, 1, 3), (1, 1, 4), (-1, 1, 4)]),
            ];
            for (rev, steps) in passes {
                let order: Vec<usize> = if rev {
                    (0..w * h).rev().collect()
                } else {
                    (0..w * h).collect()
                };
                for i in order {
                    let (x, y) = ((i % w) as isize, (i / w) as isize);
                    for (dx, dy, c) in steps {
                        let (xx, yy) = (x + dx, y + dy);
                        if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                            d[i] = d[i].min(d[yy as usize * w + xx as usize] + c);
                        }
                    }
                }
            }
            d.iter()
                .map(|&v| if v >= INF { f32::INFINITY } else { v as f32 / 3.0 })
                .collect()
        }
        for (i, (w, h)) in [(1, 1), (1, 7), (9, 1), (13, 11), (40, 23)].into_iter().enumerate() {
            for (per_mille, target) in [(30, true), (500, false), (0, true)] {
                let m = random_mask(w, h, i as u64, per_mille);
                let got = distance_to(&m, w, h, target);
                let want = plain(&m, w, h, target);
                assert_eq!(got.len(), want.len());
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{w}x{h} {per_mille}"
                );
            }
        }
    }

    #[test]
    fn components_from_runs_are_the_flood_fills() {
        /// `components` as first written: a flood fill from each unlabelled pixel, row by row.
        fn plain_components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<Component>) {
            let mut label = vec![u32::MAX; w * h];
            let mut comps = Vec::new();
            let mut stack = Vec::new();
            for start in 0..w * h {
                if !mask[start] || label[start] != u32::MAX {
                    continue;
                }
                let id = comps.len() as u32;
                let mut c = Component {
                    area: 0,
                    x0: usize::MAX,
                    y0: usize::MAX,
                    x1: 0,
                    y1: 0,
                    edge_px: 0,
                };
                label[start] = id;
                stack.push(start);
                while let Some(i) = stack.pop() {
                    let (x, y) = (i % w, i / w);
                    c.area += 1;
                    (c.x0, c.y0, c.x1, c.y1) = (c.x0.min(x), c.y0.min(y), c.x1.max(x), c.y1.max(y));
                    c.edge_px += (x == 0 || y == 0 || x + 1 == w || y + 1 == h) as usize;
                    for yy in y.saturating_sub(1)..(y + 2).min(h) {
                        for xx in x.saturating_sub(1)..(x + 2).min(w) {
                            let j = yy * w + xx;
                            if mask[j] && label[j] == u32::MAX {
                                label[j] = id;
                                stack.push(j);
                            }
                        }
                    }
                }
                comps.push(c);
            }
            (label, comps)
        }
        for (i, (w, h)) in [(1, 1), (1, 9), (9, 1), (2, 2), (13, 11), (40, 23), (88, 110)]
            .into_iter()
            .enumerate()
        {
            for per_mille in [0, 50, 300, 500, 700, 1000] {
                let m = random_mask(w, h, 100 + i as u64, per_mille);
                assert_eq!(components(&m, w, h), plain_components(&m, w, h), "{w}x{h} {per_mille}");
            }
        }
        // `find` (the runs' ends) is the first position from where it starts.
        let m = random_mask(77, 3, 5, 300);
        for from in 0..m.len() {
            for want in [true, false] {
                let plain = m[from..].iter().position(|&v| v == want).map(|i| from + i);
                assert_eq!(find(&m, from, want), plain, "from {from}, {want}");
            }
        }
        // Diagonal touches join; a gap of one pixel does not.
        let m: Vec<bool> = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0].iter().map(|&v| v == 1).collect();
        let (_, comps) = components(&m, 4, 3);
        assert_eq!(comps.len(), 2);
        assert_eq!(components(&[], 0, 5), (Vec::new(), Vec::new()));
    }

    #[test]
    fn transpose_moves_every_value() {
        for (w, h) in [(1, 1), (1, 9), (9, 1), (8, 8), (13, 17), (40, 3)] {
            let src: Vec<f32> = (0..w * h).map(|i| i as f32).collect();
            let t = transpose(&src, w, h);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(t[x * h + y], src[y * w + x], "{w}x{h} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn quantiles_are_nearest_ranks_of_the_total_order() {
        let reference = |v: &[f32], q: f64| {
            let mut s = v.to_vec();
            s.sort_by(f32::total_cmp);
            s[((s.len() - 1) as f64 * q).round() as usize]
        };
        let qs = [0.0, 0.001, 0.3, 0.5, 0.5, 0.9, 0.999, 1.0];
        let mut r = crate::rng::Rng::new(5);
        let cases: Vec<Vec<f32>> = vec![
            vec![4.0],
            vec![0.0; 10],
            // Mostly the minimum (paper), then ink.
            (0..1000)
                .map(|i| if i % 10 < 8 { 0.0 } else { (i % 97) as f32 })
                .collect(),
            // Signed zeros, infinities, NaNs of both signs, negatives.
            vec![
                0.0,
                -0.0,
                1.0,
                -3.5,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                -f32::NAN,
                2.0,
                -0.0,
            ],
            (0..777).map(|_| (r.next_u64() % 50) as f32 - 10.0).collect(),
            // The levels of an 8-bit image (counted, not selected), light paper and dark ink...
            (0..1000)
                .map(|i| if i % 7 == 0 { (r.next_u64() % 256) as f32 } else { 250.0 })
                .collect(),
            // ... and almost: one -0, one 255.5, one 256 among them (selected).
            (0..300).map(|i| (i % 256) as f32).chain([-0.0]).collect(),
            (0..300).map(|i| (i % 256) as f32).chain([255.5]).collect(),
            (0..300).map(|i| (i % 256) as f32).chain([256.0]).collect(),
        ];
        for v in &cases {
            let got = quantiles(v, qs);
            for (g, &q) in got.iter().zip(&qs) {
                assert_eq!(g.to_bits(), reference(v, q).to_bits(), "q {q} of {} values", v.len());
                assert_eq!(quantile(v, q).to_bits(), g.to_bits());
            }
        }
    }

    #[test]
    fn histogram_counts_as_one_at_a_time() {
        let mut r = crate::rng::Rng::new(21);
        // Runs of one level (paper) of many lengths, mixed levels, and lengths that are not
        // multiples of 16.
        for n in [0, 1, 15, 16, 17, 33, 100, 1000, 4099] {
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    if (i / 23) % 3 == 0 {
                        (r.next_u64() % 256) as f32
                    } else {
                        7.0
                    }
                })
                .collect();
            let mut want = [0u32; 256];
            values.iter().for_each(|&v| want[v as usize] += 1);
            assert_eq!(histogram(&values, |v| v as u8), want, "{n} values");
            // Runs of one fraction, runs of values that differ but share a bin, values
            // clamped to the end bins: as otsu bins them.
            let values: Vec<f32> = (0..n)
                .map(|i| match (i / 19) % 4 {
                    0 => 7.25,
                    1 => 7.0 + (r.next_u64() % 100) as f32 / 100.0,
                    2 => (r.next_u64() % 300) as f32 - 20.0,
                    _ => 0.0,
                })
                .collect();
            // NaN (bin 0, never equal to itself) and both zeros (equal, one bin) among them.
            let values: Vec<f32> = (values.iter().enumerate())
                .map(|(i, &v)| match i % 37 {
                    5 => f32::NAN,
                    6..=22 => -0.0,
                    _ => v,
                })
                .collect();
            let mut want = [0u32; 256];
            values.iter().for_each(|&v| want[otsu_bin(v) as usize] += 1);
            assert_eq!(histogram(&values, otsu_bin), want, "{n} fractions");
        }
    }

    #[test]
    fn within_answers_as_the_distances_do() {
        // Radii between and on the chamfer steps (thirds), 0, below 0, NaN, one beyond the
        // 16-bit range (answered through `distance_to`) and the largest within it (21842); up to
        // 64 steps along a row (21.9, 40, 64.5: 64 exactly) are scanned in vector steps, more
        // (70) one pixel at a time.
        let radii = [
            0.0,
            1.0 / 3.0,
            0.999,
            1.0,
            4.0 / 3.0,
            2.0,
            2.5,
            7.0,
            21.9,
            40.0,
            64.5,
            70.0,
            21842.0,
            -0.5,
            f32::NAN,
            1e6,
        ];
        for (i, (w, h)) in [(1, 1), (1, 7), (9, 1), (13, 11), (40, 23), (120, 90)]
            .into_iter()
            .enumerate()
        {
            for (per_mille, target) in [(30, true), (500, false), (0, true), (5, true)] {
                let m = random_mask(w, h, 10 + i as u64, per_mille);
                let d = distance_to(&m, w, h, target);
                for r in radii {
                    let want: Vec<bool> = d.iter().map(|&d| d <= r).collect();
                    assert_eq!(within(&m, w, h, target, r), want, "{w}x{h} {per_mille} r {r}");
                }
            }
        }
    }

    #[test]
    fn distances_components_and_quantiles() {
        let mut mask = vec![false; 10 * 10];
        mask[5 * 10 + 5] = true;
        let d = distance_to(&mask, 10, 10, true);
        assert_eq!(d[5 * 10 + 5], 0.0);
        assert_eq!(d[5 * 10 + 8], 3.0);
        assert!((d[8 * 10 + 8] - 4.0).abs() < 0.01, "3 diagonal steps: {}", d[88]);
        mask[0] = true;
        mask[11] = true; // diagonal neighbour of 0: the same component
        let (label, comps) = components(&mask, 10, 10);
        assert_eq!(comps.len(), 2);
        assert_eq!(label[0], label[11]);
        assert_eq!((comps[0].edge_px, comps[1].edge_px), (1, 0));
        assert_eq!((comps[0].area, comps[0].x1, comps[0].y1), (2, 1, 1));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        let v: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1001) as f32).collect();
        let qs = [0.999, 0.001, 0.5, 0.5, 1.0];
        assert_eq!(quantiles(&v, qs), qs.map(|q| quantile(&v, q)));
        assert_eq!(quantiles(&v, qs), [999.0, 1.0, 500.0, 500.0, 1000.0]);
        let grown = disk_extreme(&plane(5, 5, |x, y| if (x, y) == (2, 2) { 9.0 } else { 0.0 }), 1.0, true);
        assert_eq!(
            grown.px.iter().filter(|&&v| v == 9.0).count(),
            5,
            "a radius-1 disk is a plus"
        );
    }
}
