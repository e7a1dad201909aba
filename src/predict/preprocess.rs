//! MNIST-style preparation of users' images, one small step per function over a gray
//! [`Plane`]:
//!
//! 1. [`work_planes`]: scaled down to [`WORK`] pixels a side; luma and the R, G, B channels,
//!    of which [`pick_channel`] keeps the one that separates ink from paper best (coloured ink
//!    on coloured paper).
//! 2. [`denoise`]: a 3x3 median when there are many isolated outliers (salt and pepper), a
//!    3x3 box blur when the pixel-to-pixel noise is strong.
//! 3. [`dark_ink`]: the polarity. The paper is the median; the ink is on the side with the
//!    longer tail (dark ink on light paper, or light ink on a dark screen).
//! 4. [`background`]: the local paper level, a closing (dark ink) or opening (light ink) with a
//!    window a quarter of the image wide, so lighting gradients, vignetting and shadows are
//!    paper, not ink; [`ink_strength`] divides it out (0 paper, 255 ink).
//! 5. [`ink_threshold`]: Otsu's threshold of that, kept above the paper's noise.
//! 6. [`digit_components`]: the significant ink components (specks, texture and parts that
//!    touch the frame's edge left out).
//! 7. [`stroke_width`] and [`set_stroke_width`]: strokes brought toward MNIST's width
//!    ([`MNIST_STROKE_WIDTH`]); large digits as a mask, by distance transform, then shrunk with
//!    anti-aliasing as MNIST was made; small ones (MNIST itself) keep their grey levels.
//! 8. [`deskew`] (optional): the slant removed by the second moments.
//! 9. [`into_field`]: scaled into 20x20 keeping the aspect ratio, centred by mass in 28x28.

use image::{GrayImage, Luma, RgbImage};

use super::decode::Decoded;
use super::filters::{
    Plane, box_blur, closing_or_opening, components, counted_quantiles, crop_rect, disk_extreme, histogram,
    level_quantiles, max_finite, median3, min_finite, nearest_rank, otsu, otsu_bin, otsu_of_counts, quantile,
    quantiles, resize, resize_part_transposed, shrink_to, square_closing_or_opening, within,
};
use crate::Error;

/// Side of the images the network takes.
pub const SIDE: usize = 28;
/// Side of the box the digit is scaled into.
pub const BOX: usize = 20;
/// The long side of the working image: larger images are shrunk to it first.
pub const WORK: usize = 512;
/// MNIST's stroke width in pixels of the 20x20 box, as [`stroke_width`] measures it: the
/// median over the first 2,000 training images is 2.10 (quartiles 1.82 and 2.47; 3rd percentile
/// 1.44, 97th 3.54). The test `mnist_stroke_width_is_the_measured_constant` measures it again.
pub const MNIST_STROKE_WIDTH: f32 = 2.10;
/// Strokes thinner than this share of MNIST's width (its 3rd percentile) are thickened to
/// MNIST's width...
const THIN: f32 = 0.68;
/// ... and strokes thicker than this share (its 97th percentile) are thinned to it; MNIST
/// itself is left alone.
const THICK: f32 = 1.7;
/// A digit larger than this in working pixels is redrawn from its ink mask.
const MASK_ABOVE: usize = 2 * BOX;

/// Options of [`preprocess_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreprocessConfig {
    /// Remove the slant (moment-based deskewing) [default: false; MNIST itself is not
    /// deskewed, so this helps only strongly slanted digits].
    pub deskew: bool,
}

/// A gray image as a [`Plane`].
pub fn gray_plane(img: &GrayImage) -> Plane {
    Plane {
        w: img.width() as usize,
        h: img.height() as usize,
        px: img.as_raw().iter().map(|&v| v as f32).collect(),
    }
}

/// A pixel's luma (Rec. 709 weights), unrounded.
fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// The luma of each gray level, as [`work_planes`] computes it for a pixel of equal channels.
pub(crate) fn luma_of_levels() -> [f32; 256] {
    std::array::from_fn(|v| luma([v as f32; 3]))
}

/// The luma plane (w x h) of a gray image given by its levels, as [`work_planes`] makes it
/// for that image made RGB (before shrinking): each level's luma from [`luma_of_levels`] (the
/// same values).
pub(crate) fn luma_plane(w: usize, h: usize, levels: &[u8], of_level: &[f32; 256]) -> Plane {
    let px = levels.iter().map(|&l| of_level[l as usize]).collect();
    Plane { w, h, px }
}

/// The bytes of an image's pixels, 3 a pixel (its buffer may be longer).
fn rgb_bytes(img: &RgbImage) -> &[u8] {
    &img.as_raw()[..img.width() as usize * img.height() as usize * 3]
}

/// Step 1: luma, R, G and B of the image shrunk to [`WORK`] pixels a side.
pub fn work_planes(img: &RgbImage) -> [Plane; 4] {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planes = [(); 4].map(|_| Plane::filled(w, h, 0.0));
    for (i, p) in img.pixels().enumerate() {
        let rgb @ [r, g, b] = p.0.map(|c| c as f32);
        planes[0].px[i] = luma(rgb);
        (planes[1].px[i], planes[2].px[i], planes[3].px[i]) = (r, g, b);
    }
    planes.map(|p| shrink_to(&p, WORK))
}

/// Step 1: the channel that separates ink and paper best by Otsu's measure (between-class
/// variance over total); luma unless a colour channel is clearly (15%) better.
pub fn pick_channel(planes: [Plane; 4]) -> Plane {
    let eta: Vec<f32> = planes.iter().map(|p| otsu(&p.px).1).collect();
    let best = (1..4)
        .max_by(|&a, &b| eta[a].total_cmp(&eta[b]))
        .expect("three channels");
    let i = if eta[best] > 1.15 * eta[0] { best } else { 0 };
    planes.into_iter().nth(i).expect("four planes")
}

/// Step 2: salt-and-pepper (over 1% of the pixels isolated impulses) goes through a
/// 3x3 median; strong pixel noise (a robust sigma of neighbour differences over 4 levels)
/// through a 3x3 box blur. A clean image is returned as it is.
pub fn denoise(p: Plane) -> Plane {
    filtered(p).0
}

/// [`denoise`], and whether a filter ran (the plane is the one given when not).
fn filtered(p: Plane) -> (Plane, bool) {
    if p.w < 3 || p.h < 3 {
        return (p, false);
    }
    // Counted in full only when the bound allows more than 1% (it does not on clean pages).
    let limit = 0.01 * p.px.len() as f64;
    let (p, median) = if impulse_bound(&p) as f64 > limit && impulses(&p) as f64 > limit {
        (median3(&p), true)
    } else {
        (p, false)
    };
    // The median absolute difference of two neighbours is 0.954 sigma for Gaussian noise;
    // blurred when sigma = median / 0.954 > 4. As that test only grows with the value tested,
    // the median passes it exactly when at least the values from the median's rank up do:
    // counted, without sorting (the same answer as `quantile(diffs, 0.5) / 0.954 > 4.0`).
    let noisy = |d: f32| d / 0.954 > 4.0;
    let n = p.h * (p.w - 1);
    let rank = nearest_rank(n - 1, 0.5);
    // Counted per row in u32 (four lanes to a 128-bit vector, not two), summed in usize.
    let passing: usize =
        p.px.chunks_exact(p.w)
            .map(|row| {
                row.windows(2)
                    .map(|d| u32::from(noisy((d[1] - d[0]).abs())))
                    .sum::<u32>() as usize
            })
            .sum();
    if passing >= n - rank {
        (box_blur(&p, 1), true)
    } else {
        (p, median)
    }
}

/// Whether [`filtered`] leaves the luma plane of a gray image's levels (w x h) as it is, found
/// from the levels, 16 to a vector. The same answer: for every pair of levels a and b (a test
/// checks all of them), the noise test's `|luma(a) - luma(b)| / 0.954 > 4` holds exactly when
/// they are 4 or more apart, and `luma(a) - luma(b) > 64` (an impulse) only when a is 64 or
/// more above b; so the impulses' bound counted here with 64 or more is at least theirs. A
/// bound over 1% answers "not clean" (then `filtered` decides, on the plane).
fn clean_levels(w: usize, h: usize, levels: &[u8]) -> bool {
    if w < 3 || h < 3 {
        return true;
    }
    if level_impulse_bound(w, h, levels) as f64 > 0.01 * (w * h) as f64 {
        return false;
    }
    let pairs = h * (w - 1);
    let rank = nearest_rank(pairs - 1, 0.5);
    level_steps_of_4(w, h, levels) < pairs - rank
}

// The two counts of [`clean_levels`] run over the whole image as one run of levels (rows are
// short: per row, the scalar remainder after the vectors took as long as the vectors), then
// take away what the runs across row ends counted.

/// [`clean_levels`]' bound on the impulses of a gray image's levels (w x h, both at least 3):
/// the levels of rows 1 to h - 2, columns 1 to w - 2, 64 or more above (or below) both their
/// left and right neighbours.
fn level_impulse_bound(w: usize, h: usize, levels: &[u8]) -> usize {
    let impulse = |l: u8, v: u8, r: u8| {
        let (lo, hi) = (l.min(r), l.max(r));
        v.saturating_sub(hi) >= 64 || lo.saturating_sub(v) >= 64
    };
    // Each level of rows 1 to h - 2 with the levels before and after it; at a row's first and
    // last column those are the ends of the rows around it, not its neighbours.
    let (l, v, r) = (&levels[w - 1..], &levels[w..(h - 1) * w], &levels[w + 1..]);
    let wrapped = (1..h - 1)
        .flat_map(|y| [y * w, y * w + w - 1])
        .filter(|&i| impulse(levels[i - 1], levels[i], levels[i + 1]))
        .count();
    count_blocks(v.len(), |b| {
        let (l, v, r) = (&l[b.clone()], &v[b.clone()], &r[b]);
        (l.iter().zip(v).zip(r)).fold(0u8, |c, ((&l, &v), &r)| c + u8::from(impulse(l, v, r)))
    }) - wrapped
}

/// [`clean_levels`]' noise count: the pairs of neighbours in a row (w x h levels, w at least 1)
/// 4 or more levels apart.
fn level_steps_of_4(w: usize, h: usize, levels: &[u8]) -> usize {
    let step = |a: u8, b: u8| a.abs_diff(b) >= 4;
    // Each level with the next; a row's last with the next row's first is not a pair.
    let across = (1..h).filter(|&y| step(levels[y * w - 1], levels[y * w])).count();
    let (a, b) = (&levels[..w * h - 1], &levels[1..w * h]);
    count_blocks(a.len(), |r| {
        (a[r.clone()].iter().zip(&b[r])).fold(0u8, |c, (&a, &b)| c + u8::from(step(a, b)))
    }) - across
}

/// The sum of `count(block)` over `0..n` cut into blocks of at most 255: a count of up to one a
/// position fits in a u8 there, so `count` can fold bytes, sixteen to a 128-bit vector.
fn count_blocks(n: usize, count: impl Fn(std::ops::Range<usize>) -> u8) -> usize {
    (0..n).step_by(255).map(|b| count(b..(b + 255).min(n)) as usize).sum()
}

/// The impulses of [`denoise`]: pixels over 64 levels above (or below) all 8 of their
/// neighbours: specks, not strokes (a stroke's pixels have neighbours along it). The
/// neighbours' extremes come from each row's extremes over 3 columns, made once.
pub(crate) fn impulses(p: &Plane) -> usize {
    let w = p.w;
    // Plain compares (the pixels are finite: no NaN rules needed), which vectorise.
    let (min, max) = (min_finite, max_finite);
    // Per row, the min and max of columns x-1..=x+1 (for x in 1..w-1), one flat buffer each.
    let mut lo3 = Vec::with_capacity(p.h * (w - 2));
    let mut hi3 = Vec::with_capacity(p.h * (w - 2));
    for row in p.px.chunks_exact(w) {
        lo3.extend(row.windows(3).map(|t| min(min(t[0], t[1]), t[2])));
        hi3.extend(row.windows(3).map(|t| max(max(t[0], t[1]), t[2])));
    }
    let n = w - 2;
    (1..p.h - 1)
        .map(|y| {
            let mid = &p.px[y * w..(y + 1) * w];
            let (l, v, r) = (&mid[..n], &mid[1..=n], &mid[2..]);
            let up = lo3[(y - 1) * n..y * n].iter().zip(&hi3[(y - 1) * n..y * n]);
            let down = lo3[(y + 1) * n..(y + 2) * n].iter().zip(&hi3[(y + 1) * n..(y + 2) * n]);
            // Slices zipped (no indexing), so the count vectorises.
            (up.zip(down).zip(l.iter().zip(v).zip(r)))
                .map(|(((&ul, &uh), (&dl, &dh)), ((&l, &v), &r))| {
                    let lo = min(min(min(ul, dl), l), r);
                    let hi = max(max(max(uh, dh), l), r);
                    u32::from(v - hi > 64.0 || lo - v > 64.0)
                })
                .sum::<u32>() as usize
        })
        .sum()
}

/// At least [`impulses`] (its upper bound), in one pass over the rows that vectorises: the
/// pixels over 64 levels above (or below) both their left and right neighbours (w and h at
/// least 3, as there). An impulse is one of them: with `hi8` the largest of its eight
/// neighbours and `hi2` the larger of these two, `hi2 <= hi8`, so `v - hi8 > 64` gives
/// `v - hi2 > 64` (a rounded subtraction keeps the order); the same for the smallest.
pub(crate) fn impulse_bound(p: &Plane) -> usize {
    let (w, n) = (p.w, p.w - 2);
    (p.px.chunks_exact(w).skip(1).take(p.h - 2))
        .map(|row| {
            let (l, v, r) = (&row[..n], &row[1..=n], &row[2..]);
            (l.iter().zip(v).zip(r))
                .map(|((&l, &v), &r)| {
                    let (lo, hi) = (min_finite(l, r), max_finite(l, r));
                    u32::from(v - hi > 64.0 || lo - v > 64.0)
                })
                .sum::<u32>() as usize
        })
        .sum()
}

/// Step 3: whether the ink is darker than the paper. The paper is the median; the side whose
/// extreme (the 0.1% quantile) lies further from it holds the ink.
pub fn dark_ink(p: &Plane) -> bool {
    let [darkest, paper, lightest] = quantiles(&p.px, DARK_INK_QS);
    paper - darkest >= lightest - paper
}

/// The quantiles [`dark_ink`] compares.
const DARK_INK_QS: [f64; 3] = [0.001, 0.5, 0.999];

/// [`dark_ink`] of the luma plane of a gray image, from the counts of its levels (the luma of
/// level l is `of_level[l]`): the same answer without selecting, as luma grows with the level
/// (each quantile is the luma of the levels' quantile).
pub(crate) fn dark_ink_of_levels(counts: &[u32; 256], of_level: &[f32; 256]) -> bool {
    let [darkest, paper, lightest] = level_quantiles(counts, DARK_INK_QS).map(|l| of_level[l]);
    paper - darkest >= lightest - paper
}

/// Step 4: the paper's level at each pixel: a closing (dark ink) or an opening (light ink) by a
/// square a quarter of the image's long side in radius, so no stroke survives it but lighting
/// gradients, vignetting and shadows do.
pub fn background(p: &Plane, dark_ink: bool) -> Plane {
    let r = (p.w.max(p.h) / 4).max(2);
    square_closing_or_opening(p, r, dark_ink)
}

/// Step 4: how strongly each pixel is ink, 0 (paper) to 255: the distance from the paper's
/// level toward the ink's extreme, as a share of the room there is (the lighting divided out:
/// (bg - v) / bg for dark ink, (v - bg) / (255 - bg) for light ink). Light on black (MNIST)
/// comes out unchanged.
pub fn ink_strength(p: &Plane, bg: &Plane, dark_ink: bool) -> Plane {
    let px = (p.px.iter().zip(&bg.px))
        .map(|(&v, &b)| strength_of(v, b, dark_ink))
        .collect();
    Plane { w: p.w, h: p.h, px }
}

/// [`ink_strength`] of one pixel of value `v` on paper of level `b`.
fn strength_of(v: f32, b: f32, dark_ink: bool) -> f32 {
    let s = if dark_ink {
        (b - v) / b.max(16.0)
    } else {
        (v - b) / (255.0 - b).max(16.0)
    };
    (s * 255.0).clamp(0.0, 255.0)
}

/// An ink-strength plane that is a function of a gray image's levels: on paper of one level
/// (the background one value everywhere, as on a clean page), pixel i's strength is
/// `of_level[levels[i]]`. Its quantiles and Otsu's threshold then come from the levels' counts,
/// 256 values at most, with the same answers as over the plane.
struct StrengthOfLevels {
    of_level: [f32; 256],
    counts: [u32; 256],
}

impl StrengthOfLevels {
    /// `(f(strength), count)` for each level present.
    fn counted(&self, f: impl Fn(f32) -> f32) -> Vec<(f32, u32)> {
        (0..256)
            .filter(|&l| self.counts[l] > 0)
            .map(|l| (f(self.of_level[l]), self.counts[l]))
            .collect()
    }

    fn quantiles<const K: usize>(&self, qs: [f64; K]) -> [f32; K] {
        counted_quantiles(&mut self.counted(|v| v), qs)
    }

    fn otsu(&self) -> (f32, f32) {
        let mut bins = [0u32; 256];
        for (v, n) in self.counted(|v| v) {
            bins[otsu_bin(v) as usize] += n;
        }
        otsu_of_counts(&bins)
    }
}

/// Step 5: the ink threshold on [`ink_strength`]: Otsu's, but at least 6 robust sigmas above
/// the paper (its median) and at least 24, so that paper texture and noise stay paper when
/// there is little ink (a thin stroke on a large page).
pub fn ink_threshold(s: &Plane) -> f32 {
    let [lowest, paper] = quantiles(&s.px, [0.0, 0.5]);
    threshold_above(s, None, lowest, paper)
}

/// [`ink_threshold`] of a plane whose lowest value and median are known; from the levels'
/// counts when it is a function of them.
fn threshold_above(s: &Plane, by_level: Option<&StrengthOfLevels>, lowest: f32, paper: f32) -> f32 {
    let (t, _) = by_level.map_or_else(|| otsu(&s.px), |l| l.otsu());
    // When over half the plane is at its lowest level (paper cleared to 0), over half the
    // deviations are 0: their median is, with no need to select it.
    let sigma = if paper.to_bits() == lowest.to_bits() && paper.is_finite() {
        0.0
    } else {
        let dev = |v: f32| (v - paper).abs();
        let median = match by_level {
            Some(l) => counted_quantiles(&mut l.counted(dev), [0.5])[0],
            None => quantile(&s.px.iter().map(|&v| dev(v)).collect::<Vec<f32>>(), 0.5),
        };
        1.4826 * median
    };
    t.max(paper + 6.0 * sigma).max(24.0)
}

/// Step 6: which pixels belong to the digit, from the ink strength `s` and its threshold `t`.
/// A component is part of the frame when over 15% of the image's long side of its pixels lie on
/// the image's edge (a table's edge or a shadow in a photo; a digit that touches the edge
/// touches it with a stroke's width). The main component is the largest one not of the frame.
/// When a frame component is over 4 times larger, the digit may be joined to it: the threshold
/// is raised to Otsu's within that component (ink is darker than shadows), up to 3 times.
/// Kept with the main component are those of at least a tenth of its area near it (within half
/// its size), not of the frame unless it is; after a raised threshold, with the ink at the
/// first threshold within 2 pixels of them. With the threshold used; `None` when nothing
/// reaches the threshold.
pub fn digit_components(s: &Plane, t: f32) -> Option<(Vec<bool>, f32)> {
    digit_of(s, t).map(|(digit, t, _)| (digit, t))
}

/// A bounding box `(x0, y0, x1, y1)`, exclusive ends.
pub(crate) type Bbox = (usize, usize, usize, usize);

/// [`digit_components`] with the digit's bounding box (its pixels'; the kept components' boxes
/// together when the threshold was not raised).
pub(crate) fn digit_of(s: &Plane, t: f32) -> Option<(Vec<bool>, f32, Bbox)> {
    let (w, h) = (s.w, s.h);
    let (t0, mut t) = (t, t);
    for round in 0..4 {
        let mask: Vec<bool> = s.px.iter().map(|&v| v >= t).collect();
        let (label, comps) = components(&mask, w, h);
        let frame = |i: usize| comps[i].edge_px >= 4 && comps[i].edge_px * 100 > 15 * w.max(h);
        let largest = |of_frame: bool| {
            (0..comps.len())
                .filter(|&i| frame(i) == of_frame)
                .max_by_key(|&i| (comps[i].area, std::cmp::Reverse(i)))
        };
        let main = match (largest(false), largest(true)) {
            (None, None) => return None,
            (Some(m), None) => m,
            (Some(m), Some(f)) if comps[m].area * 4 >= comps[f].area || round == 3 => m,
            (None, Some(f)) if round == 3 => f,
            (_, Some(f)) => {
                let inside: Vec<f32> = (0..w * h)
                    .filter(|&i| label[i] as usize == f)
                    .map(|i| s.px[i])
                    .collect();
                let raised = otsu(&inside).0;
                if raised <= t {
                    // Nothing to split: take what there is.
                    largest(false).unwrap_or(f)
                } else {
                    t = raised;
                    continue;
                }
            }
        };
        let m = &comps[main];
        let main_frame = frame(main);
        let reach = (m.x1 - m.x0).max(m.y1 - m.y0) / 2 + 1;
        let keep: Vec<bool> = (0..comps.len())
            .map(|i| {
                let c = &comps[i];
                c.area * 10 >= m.area
                    && (!frame(i) || main_frame)
                    && c.x0 <= m.x1 + reach
                    && c.x1 + reach >= m.x0
                    && c.y0 <= m.y1 + reach
                    && c.y1 + reach >= m.y0
            })
            .collect();
        // Every component kept (often one): the digit is the mask.
        let digit: Vec<bool> = if keep.iter().all(|&k| k) {
            mask
        } else {
            label.iter().map(|&l| l != u32::MAX && keep[l as usize]).collect()
        };
        if round == 0 {
            let kept = (0..comps.len()).filter(|&i| keep[i]).map(|i| &comps[i]);
            let bbox = kept.fold((usize::MAX, usize::MAX, 0, 0), |(x0, y0, x1, y1), c| {
                (x0.min(c.x0), y0.min(c.y0), x1.max(c.x1 + 1), y1.max(c.y1 + 1))
            });
            return Some((digit, t, bbox));
        }
        // Chosen at a raised threshold: the ink at the first threshold within 2 pixels of it
        // (the strokes' edges back, without what it was joined to).
        let near = within(&digit, w, h, true, 2.0);
        let digit: Vec<bool> = (0..w * h).map(|i| s.px[i] >= t0 && near[i]).collect();
        let bbox = bbox(w, h, &digit, |v| v).expect("the main component's pixels are at or above t0");
        return Some((digit, t0, bbox));
    }
    unreachable!("the last round chooses")
}

/// The bounding box `(x0, y0, x1, y1)` (exclusive ends) of the pixels of `px` (w x h, row by
/// row) where `on` holds. A row is first tested whole, without stopping at its first hit (a
/// pass that vectorises: most rows of a page are empty); in a row with a hit, the first and
/// the last are searched from each end, only as far as the columns found so far (a hit
/// inside them changes nothing), so that past the digit's first rows the searches are short.
fn bbox<T: Copy>(w: usize, h: usize, px: &[T], on: impl Fn(T) -> bool) -> Option<Bbox> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in px[..w * h].chunks_exact(w.max(1)).enumerate() {
        if !row.iter().fold(false, |any, &v| any | on(v)) {
            continue;
        }
        if x0 == usize::MAX {
            x0 = row.iter().position(|&v| on(v)).expect("the row has a hit");
            x1 = row.iter().rposition(|&v| on(v)).expect("the row has a hit") + 1;
        } else {
            // x0 < x1 here: the first row with a hit set both.
            x0 = row[..x0].iter().position(|&v| on(v)).unwrap_or(x0);
            x1 = row[x1..].iter().rposition(|&v| on(v)).map_or(x1, |i| x1 + i + 1);
        }
        (y0, y1) = (y0.min(y), y + 1);
    }
    (x0 < x1).then_some((x0, y0, x1, y1))
}

/// Step 7: the mean stroke width of the pixels at or above `t`, in pixels of the digit's
/// 20-pixel box: 2 x area / perimeter (a stroke of width w and length L >> w has area wL and
/// perimeter 2L). A digit under 80 pixels is measured scaled up (bilinear) to 80, so that
/// small images (MNIST's) and large ones are measured alike. 0 without ink.
pub fn stroke_width(p: &Plane, t: f32) -> f32 {
    // With t > 0, only the part of the plane that is not 0 can reach t, scaled or not (a
    // digit's pixels on a cleared page: a small part of it).
    let part = if t > 0.0 {
        match bbox(p.w, p.h, &p.px, |v| v != 0.0) {
            Some(part) => part,
            None => return 0.0,
        }
    } else {
        (0, 0, p.w, p.h)
    };
    stroke_width_in(&p.crop(part.0, part.1, part.2, part.3), (part.0, part.1), (p.w, p.h), t)
}

/// [`stroke_width`] of a plane `of` = (width, height) that is 0 (under `t`, when t > 0) except
/// in `part`, the rectangle of it at `at`: the mask is made there only (its area and perimeter
/// are the whole plane's: the pixels around it are off), and the scale is the whole plane's.
fn stroke_width_in(part: &Plane, at: (usize, usize), of: (usize, usize), t: f32) -> f32 {
    let Some((x0, y0, x1, y1)) = bbox(part.w, part.h, &part.px, |v| v >= t) else {
        return 0.0;
    };
    let long = (x1 - x0).max(y1 - y0);
    let s = (4 * BOX) as f32 / long as f32;
    let (w, h) = ((of.0 as f32 * s).round() as usize, (of.1 as f32 * s).round() as usize);
    let scaled;
    let (big, s) = if s > 1.0 && (w, h) != of {
        // Transposed: a mask's area and perimeter are its transpose's.
        scaled = resize_part_transposed(part, at, of, (w, h)).0;
        (&scaled, s)
    } else {
        // Not scaled (a scale that rounds to the same size is a copy in `resize`).
        (part, s.max(1.0))
    };
    let m: Vec<bool> = big.px.iter().map(|&v| v >= t).collect();
    let area = count_true(&m);
    let perimeter = perimeter(&m, big.w, big.h);
    if perimeter == 0 {
        return 0.0;
    }
    2.0 * area as f32 / perimeter as f32 / s * BOX as f32 / long as f32
}

/// The perimeter of a mask (w x h, w and h at least 1): each mask pixel's sides that face an
/// off pixel or the image's edge. Counted per row and per column from the edges of the runs
/// (an on-off pair of neighbours is one such side; so is an on pixel at either end).
pub(crate) fn perimeter(m: &[bool], w: usize, h: usize) -> usize {
    let m = &m[..w * h];
    // Along the rows: the changes between neighbours over the whole mask as one run, less those
    // across row ends (a row's last pixel and the next row's first are not neighbours); and each
    // row's two end pixels.
    let changes = |a: &[bool], b: &[bool]| {
        count_blocks(a.len(), |r| {
            (a[r.clone()].iter().zip(&b[r])).fold(0u8, |c, (&a, &b)| c + u8::from(a != b))
        })
    };
    let across = (1..h).filter(|&y| m[y * w - 1] != m[y * w]).count();
    let ends = (0..h)
        .map(|y| usize::from(m[y * w]) + usize::from(m[y * w + w - 1]))
        .sum::<usize>();
    let along_rows = changes(&m[..w * h - 1], &m[1..]) - across + ends;
    // Down the columns: each pixel against the one below, and the first and last rows' edges.
    let along_columns = changes(&m[..(h - 1) * w], &m[w..]) + count_true(&m[..w]) + count_true(&m[(h - 1) * w..]);
    along_rows + along_columns
}

/// How many are true (see [`count_blocks`]).
fn count_true(m: &[bool]) -> usize {
    count_blocks(m.len(), |r| m[r].iter().fold(0u8, |c, &v| c + u8::from(v)))
}

/// Step 7: the width (in box pixels, as [`stroke_width`] measures) the strokes should have:
/// thin ones brought up to MNIST's, thick ones down to `THICK` (1.7) times it, others as they are.
pub fn target_width(width: f32) -> f32 {
    let t = MNIST_STROKE_WIDTH;
    if width < THIN * t {
        t
    } else if width > THICK * t {
        THICK * t
    } else {
        width
    }
}

/// Step 7 for a mask (a large digit): grown or shrunk by the chamfer distance by `by` pixels
/// (negative: shrunk), on each side of the strokes. A shrink that would lose over two thirds of
/// the ink (thin parts vanishing) is not done.
pub fn set_stroke_width(mask: &[bool], w: usize, h: usize, by: f32) -> Vec<bool> {
    if by > 0.0 {
        within(mask, w, h, true, by)
    } else if by < 0.0 {
        // d > -by for the distance d to the nearest pixel off the mask.
        let out: Vec<bool> = within(mask, w, h, false, -by).iter().map(|&near| !near).collect();
        let (before, after) = (count_true(mask), count_true(&out));
        if after * 3 < before { mask.to_vec() } else { out }
    } else {
        mask.to_vec()
    }
}

/// Step 8: the slant removed: each row shifted by -skew x (y - cy), skew = mu11 / mu02 of the
/// ink's second moments (linear interpolation along the row; the plane widens to hold it all).
pub fn deskew(p: &Plane) -> Plane {
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    for y in 0..p.h {
        for x in 0..p.w {
            let v = p.at(x, y) as f64;
            (m, mx, my) = (m + v, mx + v * x as f64, my + v * y as f64);
        }
    }
    if m <= 0.0 {
        return p.clone();
    }
    let (cx, cy) = (mx / m, my / m);
    let (mut mu11, mut mu02) = (0f64, 0f64);
    for y in 0..p.h {
        for x in 0..p.w {
            let v = p.at(x, y) as f64;
            mu11 += v * (x as f64 - cx) * (y as f64 - cy);
            mu02 += v * (y as f64 - cy) * (y as f64 - cy);
        }
    }
    if mu02 <= 0.0 {
        return p.clone();
    }
    let skew = (mu11 / mu02).clamp(-1.0, 1.0);
    let shift = |y: usize| -skew * (y as f64 - cy);
    let (s0, s1) = (shift(0), shift(p.h - 1));
    let lo = s0.min(s1).floor();
    let w = p.w + (s0.max(s1).ceil() - lo) as usize;
    let mut out = Plane::filled(w, p.h, 0.0);
    for y in 0..p.h {
        for xo in 0..w {
            // The source x of output xo in row y.
            let xs = xo as f64 + lo - shift(y);
            let (xf, fr) = (xs.floor(), (xs - xs.floor()) as f32);
            let get = |x: f64| {
                if x >= 0.0 && (x as usize) < p.w {
                    p.at(x as usize, y)
                } else {
                    0.0
                }
            };
            out.px[y * w + xo] = get(xf) * (1.0 - fr) + get(xf + 1.0) * fr;
        }
    }
    out
}

/// Step 9: the ink (0 to 255, light on black) scaled to fit 20x20 keeping the aspect ratio,
/// pasted into 28x28 with its centre of mass on pixel (14, 14) (keeping all of it inside): where
/// MNIST has it (the mean over its test images is (14.01, 13.99) by pixel index; the first
/// preprocessing put it half a pixel up and left, and lost about a point on MNIST by it).
pub fn into_field(ink: &Plane) -> GrayImage {
    let s = BOX as f32 / ink.w.max(ink.h) as f32;
    let nw = ((ink.w as f32 * s).round() as usize).clamp(1, BOX);
    let nh = ((ink.h as f32 * s).round() as usize).clamp(1, BOX);
    let small = resize(ink, nw, nh);
    let (mut m, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    for y in 0..nh {
        for x in 0..nw {
            let v = small.at(x, y).max(0.0);
            (m, mx, my) = (m + v, mx + v * x as f32, my + v * y as f32);
        }
    }
    let (cx, cy) = if m > 0.0 {
        (mx / m, my / m)
    } else {
        ((nw as f32 - 1.0) / 2.0, (nh as f32 - 1.0) / 2.0)
    };
    let half = SIDE as f32 / 2.0;
    let ox = ((half - cx).round() as i64).clamp(0, (SIDE - nw) as i64) as usize;
    let oy = ((half - cy).round() as i64).clamp(0, (SIDE - nh) as i64) as usize;
    let mut out = GrayImage::new(SIDE as u32, SIDE as u32);
    for y in 0..nh {
        for x in 0..nw {
            let v = small.at(x, y).clamp(0.0, 255.0).round() as u8;
            out.put_pixel((ox + x) as u32, (oy + y) as u32, Luma([v]));
        }
    }
    out
}

/// Whether a gray image already has MNIST's form, so it is used as it is: 28x28, a light digit
/// on a black background (at least 60% of the pixels under 16), its centre of mass within one
/// pixel of (14, 14) (every MNIST test image's is within 0.71 pixel, and 88% have a blank 2-pixel
/// frame). Redrawing such an image only blurs it: MNIST's test set through the steps below
/// scores 0.05-0.06 points lower than as it is, with the tutorial CNN and with `bncnn`.
pub fn is_mnist_shaped(img: &GrayImage) -> bool {
    if (img.width(), img.height()) != (SIDE as u32, SIDE as u32) {
        return false;
    }
    let px = img.as_raw();
    let dark = px.iter().filter(|&&v| v < 16).count();
    let mass: f64 = px.iter().map(|&v| v as f64).sum();
    if dark * 10 < px.len() * 6 || mass == 0.0 {
        return false;
    }
    let (mut cx, mut cy) = (0.0, 0.0);
    for (i, &v) in px.iter().enumerate() {
        cx += (i % SIDE) as f64 * v as f64;
        cy += (i / SIDE) as f64 * v as f64;
    }
    let half = (SIDE / 2) as f64;
    (cx / mass - half).hypot(cy / mass - half) <= 1.0
}

/// MNIST-style preparation of a gray image with the default options (see
/// [`preprocess_with`]).
pub fn preprocess(img: &GrayImage) -> crate::Result<GrayImage> {
    if is_mnist_shaped(img) {
        return Ok(img.clone());
    }
    preprocess_steps(img)
}

/// The steps of [`preprocess`] on any gray image, even one already in MNIST's form.
pub fn preprocess_steps(img: &GrayImage) -> crate::Result<GrayImage> {
    prepare(
        Channel::Plane(shrink_to(&gray_plane(img), WORK)),
        PreprocessConfig::default(),
    )
}

/// MNIST-style preparation of any image: a light digit on black, in a 20x20 box, centred by
/// mass in 28x28, through the steps of this module; a gray image already in that form (see
/// [`is_mnist_shaped`]) is used as it is. An image without ink is an error ([`Error::Format`]
/// without a path).
pub fn preprocess_with(img: &RgbImage, cfg: PreprocessConfig) -> crate::Result<GrayImage> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::format_problem("empty image (0 pixels)"));
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (px, _) = rgb_bytes(img).as_chunks::<3>();
    if px.iter().all(|p| p[0] == p[1] && p[1] == p[2]) {
        let levels: Vec<u8> = px.iter().map(|p| p[0]).collect();
        return prepare_levels(w, h, &levels, cfg);
    }
    prepare(Channel::Plane(pick_channel(work_planes(img))), cfg)
}

/// [`preprocess_with`] of a gray image (the same bytes as for that image made RGB).
pub fn preprocess_gray_with(img: &GrayImage, cfg: PreprocessConfig) -> crate::Result<GrayImage> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::format_problem("empty image (0 pixels)"));
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    prepare_levels(w, h, &img.as_raw()[..w * h], cfg)
}

/// [`preprocess_with`] of a decoded image, gray or RGB.
pub fn preprocess_decoded(img: &Decoded, cfg: PreprocessConfig) -> crate::Result<GrayImage> {
    match img {
        Decoded::Gray(g) => preprocess_gray_with(g, cfg),
        Decoded::Rgb(rgb) => preprocess_with(rgb, cfg),
    }
}

/// Steps 2 to 9 of a gray image (w x h, at least 1 x 1) given by its `levels`, one byte a
/// pixel. No colour channel can separate ink from paper better than luma (they are luma): step
/// 1 would choose it, so only luma is made. Not shrunk (and unless step 2 filters it), its
/// levels' counts give step 3's answer and the levels themselves step 4's background
/// ([`background_of_levels`]).
fn prepare_levels(w: usize, h: usize, levels: &[u8], cfg: PreprocessConfig) -> crate::Result<GrayImage> {
    if !cfg.deskew && (w, h) == (SIDE, SIDE) {
        // Luma is each level exactly. (Only a 28x28 image can be in MNIST's form: no other is
        // copied to find out.)
        let gray = GrayImage::from_raw(SIDE as u32, SIDE as u32, levels.to_vec()).expect("28x28 levels");
        if is_mnist_shaped(&gray) {
            return Ok(gray);
        }
    }
    let of_level = luma_of_levels();
    if w.max(h) > WORK {
        return prepare(
            Channel::Plane(shrink_to(&luma_plane(w, h, levels, &of_level), WORK)),
            cfg,
        );
    }
    let levels = Levels {
        w,
        h,
        px: levels,
        counts: histogram(levels, |l| l),
        of_level,
    };
    prepare(Channel::Levels(Box::new(levels)), cfg)
}

/// A gray image's levels (w x h, one byte a pixel), with their luma (`of_level[l]` the luma of
/// level l) and their counts.
struct Levels<'a> {
    w: usize,
    h: usize,
    px: &'a [u8],
    counts: [u32; 256],
    of_level: [f32; 256],
}

impl Levels<'_> {
    /// The luma plane.
    fn luma(&self) -> Plane {
        luma_plane(self.w, self.h, self.px, &self.of_level)
    }
}

/// The channel that steps 2 to 9 run on: a plane, or a gray image's levels not shrunk (at
/// least 1 x 1), whose luma plane is made only when a step needs it.
enum Channel<'a> {
    Plane(Plane),
    /// Boxed: two 256-entry tables.
    Levels(Box<Levels<'a>>),
}

/// Step 4's [`background`] of a gray image's luma plane, from its levels: the same values (the
/// filters' max and min commute with the luma, which never falls as the level grows), taken over
/// bytes, 16 to a vector.
#[cfg(test)]
pub(crate) fn background_of_levels(w: usize, h: usize, levels: &[u8], of_level: &[f32; 256], dark_ink: bool) -> Plane {
    let px = background_levels(w, h, levels, dark_ink);
    let px = px.iter().map(|&l| of_level[l as usize]).collect();
    Plane { w, h, px }
}

/// [`background_of_levels`] as levels (the level of the paper at each pixel).
fn background_levels(w: usize, h: usize, levels: &[u8], dark_ink: bool) -> Vec<u8> {
    let r = (w.max(h) / 4).max(2);
    closing_or_opening(levels, w, h, r, dark_ink)
}

/// Steps 2 to 9 on the chosen channel, with its levels when it is a gray image's luma, not
/// shrunk.
fn prepare(ch: Channel, cfg: PreprocessConfig) -> crate::Result<GrayImage> {
    if let Channel::Plane(p) = &ch
        && (p.w == 0 || p.h == 0)
    {
        return Err(Error::format_problem("empty image (0 pixels)"));
    }
    let (s, by_level) = strength(ch);
    // The strongest ink and step 5's quantiles, selected together (or counted by level).
    let qs = [0.0, 0.5, 1.0];
    let [lowest, paper, strongest] = by_level
        .as_ref()
        .map_or_else(|| quantiles(&s.px, qs), |l| l.quantiles(qs));
    if strongest < 32.0 {
        return Err(Error::format_problem(
            "no digit found: the image is blank (no ink stands out from the background)",
        ));
    }
    let t = threshold_above(&s, by_level.as_ref(), lowest, paper);
    let (digit, t, (x0, y0, x1, y1)) = digit_of(&s, t)
        .ok_or_else(|| Error::format_problem("no digit found: no pixel is dark (or light) enough to be ink"))?;
    let long = (x1 - x0).max(y1 - y0);
    // The digit's strength (0 elsewhere), in its box: the stroke width is measured there.
    let mut part = s.crop(x0, y0, x1, y1);
    let inside = crop_rect(&digit, s.w, (x0, y0, x1, y1));
    // A select, not a branch: the same values, and it vectorises.
    (part.px.iter_mut().zip(&inside)).for_each(|(v, &d)| *v = if d { *v } else { 0.0 });
    let width = stroke_width_in(&part, (x0, y0), (s.w, s.h), t);
    let target = target_width(width);
    let ink = if long > MASK_ABOVE {
        // A large digit: redrawn from its mask, strokes set to the target width (in working
        // pixels: box pixels x long / 20), then shrunk with anti-aliasing by `into_field`.
        let by = if width > 0.0 {
            (target - width) / 2.0 * long as f32 / BOX as f32
        } else {
            0.0
        };
        let pad = by.max(0.0).ceil() as usize + 1;
        let (cx0, cy0) = (x0.saturating_sub(pad), y0.saturating_sub(pad));
        let (cx1, cy1) = ((x1 + pad).min(s.w), (y1 + pad).min(s.h));
        let (w, h) = (cx1 - cx0, cy1 - cy0);
        let crop = crop_rect(&digit, s.w, (cx0, cy0, cx1, cy1));
        let m = if (target - width).abs() > 1e-3 {
            set_stroke_width(&crop, w, h, by)
        } else {
            crop
        };
        Plane {
            w,
            h,
            px: m.iter().map(|&v| if v { 255.0 } else { 0.0 }).collect(),
        }
    } else {
        // A small digit (MNIST's size): its grey levels kept, scaled so that the ink's 90th
        // percentile is 255; what is not near the digit's components is cleared.
        let inked: Vec<f32> = s.px.iter().zip(&digit).filter(|(_, d)| **d).map(|(v, _)| *v).collect();
        let top = quantile(&inked, 0.9).max(t);
        // Only the pixels within 2 of the digit are kept: they lie in its box widened by 2,
        // and there their distances up to 2 are the whole plane's (a path of at most two steps
        // stays within 2 pixels of the digit pixel it ends on), so the transform runs there.
        let part = (
            x0.saturating_sub(2),
            y0.saturating_sub(2),
            (x1 + 2).min(s.w),
            (y1 + 2).min(s.h),
        );
        let near = within(
            &crop_rect(&digit, s.w, part),
            part.2 - part.0,
            part.3 - part.1,
            true,
            2.0,
        );
        let sp = s.crop(part.0, part.1, part.2, part.3);
        let soft = Plane {
            px: (sp.px.iter().zip(&near))
                .map(|(&v, &near)| if near { (v * 255.0 / top).min(255.0) } else { 0.0 })
                .collect(),
            ..sp
        };
        let (cx0, cy0, cx1, cy1) = bbox(soft.w, soft.h, &soft.px, |v| v > 0.0).expect("the digit's pixels");
        let crop = soft.crop(cx0, cy0, cx1, cy1);
        if width > 0.0 && (target - width).abs() > 1e-3 {
            let r = (target - width).abs() / 2.0 * long as f32 / BOX as f32;
            let padded = pad_plane(&crop, r.ceil() as usize);
            disk_extreme(&padded, r, target > width)
        } else {
            crop
        }
    };
    let ink = if cfg.deskew { deskew(&ink) } else { ink };
    let (x0, y0, x1, y1) = bbox(ink.w, ink.h, &ink.px, |v| v > 0.5)
        .ok_or_else(|| Error::format_problem("no digit found: no pixel is dark (or light) enough to be ink"))?;
    Ok(into_field(&ink.crop(x0, y0, x1, y1)))
}

/// Steps 2 to 4: the ink strength of the chosen channel (given by value: it and its background
/// are freed here, before the steps that follow allocate), and when it is a function of a gray
/// image's levels (paper of one level), that function.
fn strength(ch: Channel) -> (Plane, Option<StrengthOfLevels>) {
    let l = match ch {
        Channel::Plane(p) => return (plane_strength(filtered(p).0), None),
        Channel::Levels(l) => *l,
    };
    // Step 2 from the levels; on the plane when they cannot tell.
    let mut luma = None;
    if !clean_levels(l.w, l.h, l.px) {
        match filtered(l.luma()) {
            (p, true) => return (plane_strength(p), None),
            (p, false) => luma = Some(p),
        }
    }
    // Not filtered: the plane is still the luma of the levels.
    let dark = dark_ink_of_levels(&l.counts, &l.of_level);
    let bg = background_levels(l.w, l.h, l.px, dark);
    if let Some(&c) = bg.first()
        && bg.iter().fold(true, |all, &b| all & (b == c))
    {
        // Every pixel's strength is its level's (the same arithmetic on the same two values).
        let paper = l.of_level[c as usize];
        let of_level: [f32; 256] = std::array::from_fn(|v| strength_of(l.of_level[v], paper, dark));
        let px = l.px.iter().map(|&v| of_level[v as usize]).collect();
        let s = Plane { w: l.w, h: l.h, px };
        return (
            s,
            Some(StrengthOfLevels {
                of_level,
                counts: l.counts,
            }),
        );
    }
    let bg = Plane {
        w: l.w,
        h: l.h,
        px: bg.iter().map(|&b| l.of_level[b as usize]).collect(),
    };
    (ink_strength(&luma.unwrap_or_else(|| l.luma()), &bg, dark), None)
}

/// Steps 3 and 4 on a plane.
fn plane_strength(p: Plane) -> Plane {
    let dark = dark_ink(&p);
    ink_strength(&p, &background(&p, dark), dark)
}

/// The plane with `n` pixels of 0 around it.
fn pad_plane(p: &Plane, n: usize) -> Plane {
    let mut out = Plane::filled(p.w + 2 * n, p.h + 2 * n, 0.0);
    for y in 0..p.h {
        out.px[(y + n) * out.w + n..(y + n) * out.w + n + p.w].copy_from_slice(&p.px[y * p.w..(y + 1) * p.w]);
    }
    out
}

/// The first preprocessing, kept as the baseline the tests measure the steps above against:
/// inverted when the border's median is light, that level subtracted, cropped to the pixels
/// over 50 of 255, scaled into 20x20 and centred by mass. A lighting gradient counts as ink
/// there, and strokes keep their width.
pub fn preprocess_basic(img: &GrayImage) -> crate::Result<GrayImage> {
    let p = gray_plane(img);
    if p.w == 0 || p.h == 0 {
        return Err(Error::format_problem("empty image (0 pixels)"));
    }
    let mut border: Vec<f32> = (0..p.w).flat_map(|x| [p.at(x, 0), p.at(x, p.h - 1)]).collect();
    border.extend((0..p.h).flat_map(|y| [p.at(0, y), p.at(p.w - 1, y)]));
    let bg = quantile(&border, 0.5);
    let invert = bg > 127.0;
    let ink = |v: f32| if invert { 255.0 - v } else { v };
    let (bgv, maxv) = (ink(bg), p.px.iter().map(|&v| ink(v)).fold(0.0, f32::max));
    if maxv - bgv < 32.0 {
        return Err(Error::format_problem(
            "no digit found: the image is blank (no ink stands out from the background)",
        ));
    }
    let scaled = Plane {
        px: p
            .px
            .iter()
            .map(|&v| ((ink(v) - bgv) / (maxv - bgv) * 255.0).clamp(0.0, 255.0).round())
            .collect(),
        ..p
    };
    let (x0, y0, x1, y1) = bbox(scaled.w, scaled.h, &scaled.px, |v| v > 50.0)
        .ok_or_else(|| Error::format_problem("no digit found: no pixel is dark (or light) enough to be ink"))?;
    Ok(into_field(&scaled.crop(x0, y0, x1, y1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On paper of one level, the strength plane is its levels' strengths, and its quantiles,
    /// Otsu's threshold and the ink threshold from the levels' counts are the plane's, bit for
    /// bit: dark ink and light, with the median at the paper and (a textured paper) above it.
    #[test]
    fn the_strength_of_levels_answers_as_the_plane() {
        let mut rng = crate::rng::Rng::new(21);
        let mut noise = move || (rng.next_u64() % 60) as u8;
        let images: Vec<(usize, usize, Vec<u8>)> = vec![
            // A dark stroke with grey edges on white.
            (
                40,
                30,
                (0..1200)
                    .map(|i| if (12..18).contains(&(i % 40)) { noise() } else { 255 })
                    .collect(),
            ),
            // Light ink on a dark screen (paper 20).
            (
                33,
                50,
                (0..1650)
                    .map(|i| if (i / 33) % 7 == 3 { 190 + noise() } else { 20 })
                    .collect(),
            ),
            // Paper with a texture (40% at 230, 35% at 225) and 25% ink: the median strength
            // is the texture's, above the lowest.
            (
                64,
                48,
                (0..3072)
                    .map(|i| match i % 20 {
                        0..8 => 230,
                        8..15 => 225,
                        _ => 40 + noise(),
                    })
                    .collect(),
            ),
        ];
        let of_level = luma_of_levels();
        let mut seen = 0;
        for (i, (w, h, px)) in images.iter().enumerate() {
            let levels = Levels {
                w: *w,
                h: *h,
                px,
                counts: histogram(px, |l| l),
                of_level,
            };
            let (s, by_level) = strength(Channel::Levels(Box::new(levels)));
            let by_level = by_level.unwrap_or_else(|| panic!("image {i}: paper of one level"));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = px.iter().map(|&l| by_level.of_level[l as usize]).collect::<Vec<_>>();
            assert_eq!(bits(&s.px), bits(&want), "image {i}");
            // The plane's own steps 2 to 4 give the same strengths.
            let plain = plane_strength(filtered(luma_plane(*w, *h, px, &of_level)).0);
            assert_eq!(bits(&s.px), bits(&plain.px), "image {i}");
            let qs = [0.0, 0.001, 0.5, 0.9, 1.0];
            assert_eq!(bits(&by_level.quantiles(qs)), bits(&quantiles(&s.px, qs)), "image {i}");
            let (a, b) = (by_level.otsu(), otsu(&s.px));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "image {i}"
            );
            let [lowest, paper] = quantiles(&s.px, [0.0, 0.5]);
            let (t, plain) = (threshold_above(&s, Some(&by_level), lowest, paper), ink_threshold(&s));
            assert_eq!(t.to_bits(), plain.to_bits(), "image {i}");
            seen += usize::from(paper.to_bits() != lowest.to_bits());
        }
        assert_eq!(seen, 1, "one image has its median away from the lowest strength");
    }

    /// [`clean_levels`]' two counts over the image as one run of levels are the counts row by
    /// row: on random levels (impulses and steps of 4 at every rate), in sizes from 3 x 3 to
    /// rows longer than a counting block (255).
    #[test]
    fn clean_levels_counts_are_the_per_row_counts() {
        let mut rng = crate::rng::Rng::new(29);
        for (w, h) in [(3, 3), (4, 3), (3, 7), (17, 5), (88, 110), (300, 4)] {
            for spread in [3u64, 8, 70, 256] {
                let px: Vec<u8> = (0..w * h).map(|_| (100 + rng.next_u64() % spread) as u8).collect();
                let row = |y: usize| &px[y * w..(y + 1) * w];
                let impulses: usize = (1..h - 1)
                    .map(|y| {
                        (1..w - 1)
                            .filter(|&x| {
                                let (l, v, r) = (row(y)[x - 1] as i32, row(y)[x] as i32, row(y)[x + 1] as i32);
                                v - l.max(r) >= 64 || l.min(r) - v >= 64
                            })
                            .count()
                    })
                    .sum();
                let steps: usize = (0..h)
                    .map(|y| row(y).windows(2).filter(|p| p[0].abs_diff(p[1]) >= 4).count())
                    .sum();
                assert_eq!(level_impulse_bound(w, h, &px), impulses, "{w}x{h}, spread {spread}");
                assert_eq!(level_steps_of_4(w, h, &px), steps, "{w}x{h}, spread {spread}");
                if spread == 256 && w * h >= 100 {
                    assert!(impulses > 0 && steps > 0, "{w}x{h}: the random levels make both");
                }
            }
        }
    }

    /// The level tests behind [`clean_levels`], for every pair of levels; and its answer is
    /// `filtered`'s on clean, speckled and noisy images.
    #[test]
    fn clean_levels_is_filtereds_answer() {
        let luma = luma_of_levels();
        for a in 0..256usize {
            for b in 0..256usize {
                let d = luma[a] - luma[b];
                assert_eq!(d.abs() / 0.954 > 4.0, a.abs_diff(b) >= 4, "noise test, levels {a} {b}");
                assert!(d <= 64.0 || a >= b + 64, "impulse test, levels {a} {b}");
            }
        }
        let mut rng = crate::rng::Rng::new(23);
        let mut next = move |n: u64| rng.next_u64() % n;
        let (w, h) = (50, 40);
        let images: Vec<Vec<u8>> = vec![
            // A clean stroke.
            (0..w * h)
                .map(|i| if (20..26).contains(&(i % w)) { 30 } else { 240 })
                .collect(),
            // Salt and pepper: 3% specks.
            (0..w * h)
                .map(|_| match next(100) {
                    0..2 => 0,
                    2 => 255,
                    _ => 128,
                })
                .collect(),
            // Noise of a few levels everywhere.
            (0..w * h).map(|_| 100 + next(12) as u8).collect(),
            // Level steps of exactly 64 (and 3, under the noise test's 4).
            (0..w * h)
                .map(|i| if i % 7 == 0 { 164 } else { 100 + (i % 2) as u8 * 3 })
                .collect(),
        ];
        // (clean by the levels, changed by `filtered`): "clean" is never wrong; "not clean"
        // leaves the answer to `filtered`, as for the last image, whose 64-level steps pass
        // the levels' bound but are not impulses on the plane.
        let answers: Vec<(bool, bool)> = (images.iter())
            .map(|px| (clean_levels(w, h, px), filtered(luma_plane(w, h, px, &luma)).1))
            .collect();
        assert_eq!(answers, [(true, false), (false, true), (false, true), (false, false)]);
    }
}
