//! Drawing a sample's transform and applying it: the affine matrix, the elastic field (a
//! separable Gaussian blur of noise) and the bilinear warp.

use super::AugmentConfig;
use crate::data::TensorDataset;
use crate::ops::{CHUNK, for_each_chunk};
use crate::rng::Rng;
use crate::tensor::{Tensor, pool};
/// One sample's affine transform (see the module header for the map).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub angle_deg: f32,
    /// The scale factor (1 = unchanged).
    pub scale: f32,
    pub shift_x: f32,
    pub shift_y: f32,
    pub shear_deg: f32,
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        angle_deg: 0.0,
        scale: 1.0,
        shift_x: 0.0,
        shift_y: 0.0,
        shear_deg: 0.0,
    };

    /// The inverse map about the centre of an `h` x `w` image as a 2x3 matrix
    /// `[a, b, e, c, d, f]`: output pixel (x, y) samples the source at (a x + b y + e,
    /// c x + d y + f). Computed in f64; exact for the identity and for whole-pixel shifts.
    pub fn inverse_matrix(&self, h: usize, w: usize) -> [f32; 6] {
        let (sin, cos) = (self.angle_deg as f64).to_radians().sin_cos();
        let k = (self.shear_deg as f64).to_radians().tan();
        let s = self.scale as f64;
        // A = R · Shear · s = s [[cos, cos k - sin], [sin, sin k + cos]]; det A = s².
        let a = [s * cos, s * (cos * k - sin), s * sin, s * (sin * k + cos)];
        let det = a[0] * a[3] - a[1] * a[2];
        let inv = [a[3] / det, -a[1] / det, -a[2] / det, a[0] / det];
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let (ux, uy) = (cx + self.shift_x as f64, cy + self.shift_y as f64);
        [
            inv[0] as f32,
            inv[1] as f32,
            (cx - (inv[0] * ux + inv[1] * uy)) as f32,
            inv[2] as f32,
            inv[3] as f32,
            (cy - (inv[2] * ux + inv[3] * uy)) as f32,
        ]
    }
}

/// Salt of the augmentation streams, so they differ from the shuffle's (seed, epoch) stream.
const STREAM_SALT: u64 = 0x6175_676D_656E_7421; // "augment!"

/// An [`AugmentConfig`] made ready for `h` x `w` images (the Gaussian kernel computed once).
#[derive(Clone, Debug)]
pub struct Augmenter {
    cfg: AugmentConfig,
    h: usize,
    w: usize,
    /// Gaussian taps at offsets 0..=r (symmetric), summing to 1 over -r..=r (empty without
    /// elastic distortion).
    kernel: Vec<f32>,
    /// The same taps times alpha, for the second pass.
    kernel_alpha: Vec<f32>,
}

impl Augmenter {
    /// Panics when `cfg` is out of range (parse specs with `FromStr`, or call
    /// [`AugmentConfig::validate`] first) or the image is empty.
    pub fn new(cfg: AugmentConfig, h: usize, w: usize) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("Augmenter::new: {e}");
        }
        assert!(h > 0 && w > 0, "Augmenter::new: empty {h}x{w} image");
        let kernel = match cfg.elastic {
            None => Vec::new(),
            Some(e) => {
                let sigma = e.sigma as f64;
                // 3 sigma, and never wider than the image (taps further out see only zeros).
                let r = ((3.0 * sigma).ceil() as usize).max(1).min(h.max(w));
                let taps: Vec<f64> = (0..=r)
                    .map(|o| (-((o * o) as f64) / (2.0 * sigma * sigma)).exp())
                    .collect();
                let sum = 2.0 * taps.iter().sum::<f64>() - taps[0];
                taps.iter().map(|t| (t / sum) as f32).collect()
            }
        };
        let alpha = cfg.elastic.map_or(0.0, |e| e.alpha);
        let kernel_alpha = kernel.iter().map(|k| k * alpha).collect();
        Augmenter {
            cfg,
            h,
            w,
            kernel,
            kernel_alpha,
        }
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// (height, width) of the images it takes.
    pub fn image_size(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    /// The random stream of sample `index` (in its dataset) in epoch `epoch` of a run seeded
    /// `seed`: its affine parameters are drawn first, then the elastic noise.
    pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> Rng {
        let epoch_seed = Rng::derive(seed ^ STREAM_SALT, epoch as u64).next_u64();
        Rng::derive(epoch_seed, index as u64)
    }

    /// Augments one image: `src` (H*W u8) into `out` (H*W f32, pixel/256), with the transform
    /// of (seed, epoch, index). `scratch` is working space (the source with a zero border,
    /// the elastic field) kept between calls: any Vec, it grows once.
    pub fn augment(&self, src: &[u8], seed: u64, epoch: usize, index: usize, out: &mut [f32], scratch: &mut Vec<f32>) {
        let mut rng = Augmenter::sample_rng(seed, epoch, index);
        let m = self.cfg.draw(&mut rng).inverse_matrix(self.h, self.w);
        self.apply(src, &m, &mut rng, out, scratch, 1.0 / 256.0);
    }

    /// Warps `src` with the inverse matrix `m`, drawing the elastic field (if any) from `rng`;
    /// `out` = interpolated value times `scale`.
    fn apply<P: Copy + Into<f32>>(
        &self,
        src: &[P],
        m: &[f32; 6],
        rng: &mut Rng,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
        scale: f32,
    ) {
        let n = self.h * self.w;
        assert!(
            src.len() == n && out.len() == n,
            "augment: image of {} and output of {} for {}x{}",
            src.len(),
            out.len(),
            self.h,
            self.w
        );
        let (h, w) = (self.h, self.w);
        // scratch: the field (row y: dx then dy of that row), a temporary of that size, then
        // the source with a border of zeros.
        scratch.resize(4 * n + (h + 2) * (w + 2), 0.0);
        let (field, rest) = scratch.split_at_mut(2 * n);
        let (tmp, padded) = rest.split_at_mut(2 * n);
        padded.fill(0.0);
        for (prow, srow) in padded.chunks_mut(w + 2).skip(1).zip(src.chunks(w)) {
            for (p, &v) in prow[1..=w].iter_mut().zip(srow) {
                *p = v.into();
            }
        }
        if self.cfg.elastic.is_none() {
            warp(padded, h, w, m, None, scale, out);
            return;
        }
        // Uniform(-1, 1) noise, two values from each 64-bit draw (24 bits each).
        for pair in field.chunks_mut(2) {
            let r = rng.next_u64();
            let u = |bits: u64| (bits & 0xFF_FFFF) as f32 * (2.0 / (1u64 << 24) as f32) - 1.0;
            pair[0] = u(r >> 40);
            if let Some(v) = pair.get_mut(1) {
                *v = u(r >> 8);
            }
        }
        // Both fields at once: columns, then (transposed) rows, alpha folded into the second
        // pass; the rows are twice as long as the image's, which suits the SIMD the compiler
        // makes of blur_columns' inner loops.
        blur_columns(field, tmp, h, 2 * w, &self.kernel);
        transpose_halves(tmp, field, h, w);
        blur_columns(field, tmp, w, 2 * h, &self.kernel_alpha);
        transpose_halves(tmp, field, w, h);
        warp(padded, h, w, m, Some(field), scale, out);
    }

    /// The samples of `ds` at `indices`, augmented for epoch `epoch` of a run seeded `seed`, as
    /// x (B, H*W) and their labels: [`TensorDataset::batch`] with augmentation. Chunks of
    /// [`CHUNK`] samples run on the pool's threads, like the kernels.
    pub fn batch(&self, ds: &TensorDataset, indices: &[usize], seed: u64, epoch: usize) -> (Tensor, Vec<usize>) {
        let d = self.h * self.w;
        assert_eq!(
            ds.features(),
            d,
            "augment: dataset of {} features for {}x{} images",
            ds.features(),
            self.h,
            self.w
        );
        let mut x = pool::take(indices.len() * d);
        let work: Vec<_> = x.chunks_mut(CHUNK * d).zip(indices.chunks(CHUNK)).collect();
        for_each_chunk(work, |(rows, idx): (&mut [f32], &[usize])| {
            // The chunk's images lie at random places in memory: one byte of every cache line
            // of each first, so their misses overlap (as in TensorDataset::batch).
            let mut touch = 0u8;
            for &i in idx {
                touch ^= ds.get(i).0.iter().step_by(64).fold(0, |a, &b| a ^ b);
            }
            std::hint::black_box(touch);
            let mut scratch = Vec::new();
            for (row, &i) in rows.chunks_mut(d).zip(idx) {
                self.augment(ds.get(i).0, seed, epoch, i, row, &mut scratch);
            }
        });
        let y = indices.iter().map(|&i| ds.get(i).1 as usize).collect();
        (Tensor::from_vec(x, &[indices.len(), d]), y)
    }
}

/// `dst` = `src` (`rows` x `cols`) blurred along its columns by the symmetric `kernel`
/// (taps at offsets 0..=r), zero outside. Whole rows at a time, so the inner loops run over
/// contiguous values; the taps are added in a fixed order, so the result is fixed bit for bit.
fn blur_columns(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, kernel: &[f32]) {
    let row = |y: usize| &src[y * cols..][..cols];
    for (y, d) in dst.chunks_mut(cols).enumerate() {
        for (o, &v) in d.iter_mut().zip(row(y)) {
            *o = kernel[0] * v;
        }
        for (off, &k) in kernel.iter().enumerate().skip(1) {
            match (y.checked_sub(off), (y + off < rows).then_some(y + off)) {
                (Some(a), Some(b)) => {
                    for ((o, &p), &q) in d.iter_mut().zip(row(a)).zip(row(b)) {
                        *o += k * (p + q);
                    }
                }
                (Some(a), None) | (None, Some(a)) => {
                    for (o, &p) in d.iter_mut().zip(row(a)) {
                        *o += k * p;
                    }
                }
                (None, None) => break,
            }
        }
    }
}

/// Transposes two `rows` x `cols` matrices held side by side: row r of `src` is row r of the
/// first then row r of the second (`rows` x 2 `cols`); row c of `dst` becomes column c of the
/// first then column c of the second (`cols` x 2 `rows`).
fn transpose_halves(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    for (r, row) in src.chunks(2 * cols).enumerate() {
        for (half, part) in row.chunks(cols).enumerate() {
            for (c, &v) in part.iter().enumerate() {
                dst[c * 2 * rows + half * rows + r] = v;
            }
        }
    }
}

/// Pixels per block in [`warp`]: its per-lane arrays, which the compiler turns into SIMD.
const LANES: usize = 8;

/// Output pixel (x, y) = bilinear sample of the source at `m` applied to (x + dx, y + dy),
/// times `scale`; row y of `field` holds dx then dy of that row. `padded` is the `h` x `w` source with a border of one zero pixel all round,
/// so every neighbour of a position within a pixel of the image can be read unchecked; farther
/// out the value is zero.
///
/// Blocks of [`LANES`] pixels of a row, each in three steps: positions, weights and indices
/// (lane-wise arithmetic), the four neighbours' loads, then the blend.
fn warp(padded: &[f32], h: usize, w: usize, m: &[f32; 6], field: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    // Adding 1.5 * 2^23 rounds a float of magnitude below 2^22 to a whole number, which then
    // sits in the low bits of the sum: floor and its integer without a saturating cast.
    const MAGIC: f32 = 12_582_912.0;
    const MAGIC_BITS: i32 = 0x4B40_0000;
    let pw = w + 2;
    assert_eq!(padded.len(), (h + 2) * pw, "warp: padded source");
    assert!(w.max(h) < 1 << 20, "warp: {h}x{w} image too large");
    let (wi, hi, pwi) = (w as i32, h as i32, pw as i32);
    let (wf, hf) = (w as f32, h as f32);
    for (y, row) in out.chunks_mut(w).enumerate() {
        for (b, o) in row.chunks_mut(LANES).enumerate() {
            let (n, x_start) = (o.len(), b * LANES);
            let mut px: [f32; LANES] = std::array::from_fn(|l| (x_start + l) as f32);
            let mut py = [y as f32; LANES];
            if let Some(f) = field {
                let i = 2 * y * w + x_start;
                for l in 0..n {
                    px[l] += f[i + l];
                    py[l] += f[i + w + l];
                }
            }
            let mut fx = [0.0f32; LANES];
            let mut fy = [0.0f32; LANES];
            let mut at = [0i32; LANES];
            let mut keep = [0u32; LANES];
            for l in 0..LANES {
                // Positions more than a pixel outside are clamped to 2 pixels outside (they
                // read zero either way); within, the clamp changes nothing.
                let sx = (m[0] * px[l] + m[1] * py[l] + m[2]).max(-2.0).min(wf + 1.0);
                let sy = (m[3] * px[l] + m[4] * py[l] + m[5]).max(-2.0).min(hf + 1.0);
                let (rx, ry) = (sx + MAGIC, sy + MAGIC);
                let (bx, by) = (i32::from(rx - MAGIC > sx), i32::from(ry - MAGIC > sy));
                let x0 = (rx.to_bits() as i32 - MAGIC_BITS) - bx;
                let y0 = (ry.to_bits() as i32 - MAGIC_BITS) - by;
                fx[l] = sx - x0 as f32;
                fy[l] = sy - y0 as f32;
                let inside = (x0 >= -1) & (x0 < wi) & (y0 >= -1) & (y0 < hi);
                keep[l] = u32::from(inside).wrapping_neg();
                // Within the padded image wherever the position; used only inside.
                at[l] = (y0.max(-1).min(hi - 1) + 1) * pwi + x0.max(-1).min(wi - 1) + 1;
            }
            let mut p = [[0.0f32; LANES]; 4];
            for l in 0..n {
                let i = at[l] as usize;
                p[0][l] = padded[i];
                p[1][l] = padded[i + 1];
                p[2][l] = padded[i + pw];
                p[3][l] = padded[i + pw + 1];
            }
            let mut v = [0.0f32; LANES];
            for l in 0..LANES {
                // a + f (b - a): exactly a when f is 0, so whole-pixel positions copy exactly.
                let top = p[0][l] + fx[l] * (p[1][l] - p[0][l]);
                let bottom = p[2][l] + fx[l] * (p[3][l] - p[2][l]);
                v[l] = f32::from_bits((scale * (top + fy[l] * (bottom - top))).to_bits() & keep[l]);
            }
            for (o, v) in o.iter_mut().zip(v) {
                *o = v;
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
