//! Data augmentation: seeded random affine transforms (rotation, scale, shift, shear) with an
//! optional elastic distortion (Simard, Steinkraus and Platt 2003), applied to u8 images as a
//! training batch is made.
//!
//! Shapes: an image is H x W pixels, row-major (H rows of W), u8 0..=255; the output is f32
//! pixel/256, the scale of [`TensorDataset::batch`]. x is the column (to the right), y the row
//! (down); pixel centres are at whole coordinates and the image centre is c = ((W-1)/2, (H-1)/2).
//!
//! The map: output pixel p samples the source, bilinearly (zero outside), at
//! `c + A⁻¹ (p + d(p) - c - t)`, with `A = R(angle) · Shear(shear) · scale`. So the source is
//! scaled, sheared along x, turned by the angle (clockwise on screen, as y points down) about
//! its centre and shifted by t = (shift_x, shift_y); d is the elastic displacement field (zero
//! without elastic distortion). The 2x3 matrix of the inverse map is computed once per sample.
//!
//! Determinism: a sample's transform is drawn from its own stream, fixed by (seed, epoch, index
//! of the sample in its dataset) only ([`Augmenter::sample_rng`]), so it does not depend on the
//! batch it lands in, the number of threads or where a resumed run starts; each sample's output
//! depends only on its own pixels and stream.
//!
//! On the command line (`bench --augment SPEC`): `none`, or comma-separated terms
//! `rotate=DEG,scale=FRACTION,shift=PIXELS,shear=DEG,elastic[=ALPHA:SIGMA]`, each optional.

use std::fmt;
use std::str::FromStr;

use super::TensorDataset;
use crate::ops::{CHUNK, for_each_chunk};
use crate::rng::Rng;
use crate::tensor::{Tensor, pool};

/// Elastic distortion (Simard et al. 2003): a displacement field of uniform(-1, 1) values per
/// pixel and axis, smoothed by a Gaussian of standard deviation `sigma` pixels (zero outside the
/// image) and scaled by `alpha` pixels. Defaults: the paper's MNIST values, alpha 34, sigma 4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElasticConfig {
    /// Scale of the smoothed field, pixels. Default 34; 0 makes the field zero.
    pub alpha: f32,
    /// Standard deviation of the Gaussian smoothing, pixels. Default 4.
    pub sigma: f32,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        ElasticConfig {
            alpha: 34.0,
            sigma: 4.0,
        }
    }
}

/// Random affine transforms, and optionally elastic distortion, for training images. Each
/// affine field is the largest magnitude drawn: a sample's value is uniform in [-max, max].
///
/// Defaults: everything off, which is the identity (bit for bit). Typical MNIST values:
/// `rotate_deg` 10, `scale` 0.1, `shift_px` 2, `shear_deg` 5.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AugmentConfig {
    /// Largest rotation, degrees, in [0, 180]. Default 0.
    pub rotate_deg: f32,
    /// Largest relative scale change, in [0, 1): the factor is uniform in [1 - scale,
    /// 1 + scale]. Default 0.
    pub scale: f32,
    /// Largest shift, pixels (>= 0), drawn for x and y independently. Default 0.
    pub shift_px: f32,
    /// Largest shear angle (x sheared in proportion to y), degrees, in [0, 90). Default 0.
    pub shear_deg: f32,
    /// Elastic distortion. Default None.
    pub elastic: Option<ElasticConfig>,
}

/// The spec syntax, for error messages.
const SYNTAX: &str =
    "none, or comma-separated rotate=DEG, scale=FRACTION, shift=PIXELS, shear=DEG, elastic[=ALPHA:SIGMA]";

impl AugmentConfig {
    pub fn with_rotate_deg(mut self, v: f32) -> Self {
        self.rotate_deg = v;
        self
    }

    pub fn with_scale(mut self, v: f32) -> Self {
        self.scale = v;
        self
    }

    pub fn with_shift_px(mut self, v: f32) -> Self {
        self.shift_px = v;
        self
    }

    pub fn with_shear_deg(mut self, v: f32) -> Self {
        self.shear_deg = v;
        self
    }

    pub fn with_elastic(mut self, v: Option<ElasticConfig>) -> Self {
        self.elastic = v;
        self
    }

    /// Checks every value is in its range (see the fields), saying which is not.
    pub fn validate(&self) -> Result<(), String> {
        let check = |v: f32, name: &str, must: &str, ok: bool| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(format!("{name} must be {must}, got {v}"))
            }
        };
        check(
            self.rotate_deg,
            "rotate",
            "degrees in [0, 180]",
            (0.0..=180.0).contains(&self.rotate_deg),
        )?;
        check(
            self.scale,
            "scale",
            "a fraction in [0, 1)",
            (0.0..1.0).contains(&self.scale),
        )?;
        check(self.shift_px, "shift", "pixels >= 0", self.shift_px >= 0.0)?;
        check(
            self.shear_deg,
            "shear",
            "degrees in [0, 90)",
            (0.0..90.0).contains(&self.shear_deg),
        )?;
        if let Some(e) = self.elastic {
            check(e.alpha, "elastic ALPHA", "pixels >= 0", e.alpha >= 0.0)?;
            check(e.sigma, "elastic SIGMA", "pixels > 0", e.sigma > 0.0)?;
        }
        Ok(())
    }

    /// True when nothing is switched on (`none`).
    pub fn is_none(&self) -> bool {
        *self == AugmentConfig::default()
    }

    /// One sample's affine parameters, drawn from `rng` (five uniforms, always, in the order
    /// angle, scale, shift x, shift y, shear).
    pub fn draw(&self, rng: &mut Rng) -> Affine {
        let mut sym = |m: f32| rng.uniform(-m, m);
        Affine {
            angle_deg: sym(self.rotate_deg),
            scale: 1.0 + sym(self.scale),
            shift_x: sym(self.shift_px),
            shift_y: sym(self.shift_px),
            shear_deg: sym(self.shear_deg),
        }
    }
}

impl FromStr for AugmentConfig {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = |what: String| format!("bad augmentation '{spec}': {what}");
        if spec.trim() == "none" {
            return Ok(AugmentConfig::default());
        }
        if spec.trim().is_empty() {
            return Err(format!("empty augmentation: expected {SYNTAX}"));
        }
        let number = |v: &str, name: &str, must: &str, ok: fn(f32) -> bool| {
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && ok(*x))
                .ok_or_else(|| bad(format!("{name} must be {must}, got '{v}'")))
        };
        let mut cfg = AugmentConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for term in spec.split(',') {
            let (key, value) = match term.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (term.trim(), None),
            };
            if seen.contains(&key) {
                return Err(bad(format!("'{key}' is given twice")));
            }
            seen.push(key);
            let needs = |syntax: &str| value.ok_or_else(|| bad(format!("{key} needs a value ({syntax})")));
            match key {
                "rotate" => {
                    let v = needs("rotate=DEG")?;
                    cfg.rotate_deg = number(v, "rotate", "degrees in [0, 180]", |x| (0.0..=180.0).contains(&x))?;
                }
                "scale" => {
                    let v = needs("scale=FRACTION")?;
                    cfg.scale = number(v, "scale", "a fraction in [0, 1)", |x| (0.0..1.0).contains(&x))?;
                }
                "shift" => {
                    let v = needs("shift=PIXELS")?;
                    cfg.shift_px = number(v, "shift", "pixels >= 0", |x| x >= 0.0)?;
                }
                "shear" => {
                    let v = needs("shear=DEG")?;
                    cfg.shear_deg = number(v, "shear", "degrees in [0, 90)", |x| (0.0..90.0).contains(&x))?;
                }
                "elastic" => {
                    cfg.elastic = Some(match value {
                        None => ElasticConfig::default(),
                        Some(v) => {
                            let (a, s) = v
                                .split_once(':')
                                .ok_or_else(|| bad(format!("elastic takes ALPHA:SIGMA, got '{v}'")))?;
                            ElasticConfig {
                                alpha: number(a.trim(), "elastic ALPHA", "pixels >= 0", |x| x >= 0.0)?,
                                sigma: number(s.trim(), "elastic SIGMA", "pixels > 0", |x| x > 0.0)?,
                            }
                        }
                    });
                }
                "none" => return Err(bad("'none' cannot be combined with other terms".into())),
                "" => return Err(bad(format!("empty term (expected {SYNTAX})"))),
                other => return Err(bad(format!("unknown term '{other}' (expected {SYNTAX})"))),
            }
        }
        Ok(cfg)
    }
}

/// The spec syntax (terms that are off left out; `none` when all are), so it parses back.
impl fmt::Display for AugmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        for (name, v) in [
            ("rotate", self.rotate_deg),
            ("scale", self.scale),
            ("shift", self.shift_px),
            ("shear", self.shear_deg),
        ] {
            if v != 0.0 {
                terms.push(format!("{name}={v}"));
            }
        }
        if let Some(e) = self.elastic {
            terms.push(format!("elastic={}:{}", e.alpha, e.sigma));
        }
        if terms.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", terms.join(","))
        }
    }
}

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
mod tests {
    use super::*;

    const S: usize = 28;

    /// 10 images 28x28 with varied content (a stroke, a ring, noise), labels 0..9.
    fn dataset() -> TensorDataset {
        let mut rng = Rng::new(5);
        let mut px = Vec::with_capacity(10 * S * S);
        for i in 0..10 {
            for y in 0..S {
                for x in 0..S {
                    let r = ((x as f32 - 13.5).powi(2) + (y as f32 - 13.5).powi(2)).sqrt();
                    let v = if (r - 4.0 - i as f32 * 0.8).abs() < 2.0 || (x + i == y + 3) {
                        255
                    } else {
                        (rng.next_u64() % 40) as u8
                    };
                    px.push(v);
                }
            }
        }
        TensorDataset::new(px, (0..10).collect(), S * S)
    }

    fn mapped(a: Affine, src: &[u8]) -> Vec<f32> {
        let aug = Augmenter::new(AugmentConfig::default(), S, S);
        let mut out = vec![f32::NAN; S * S];
        let m = a.inverse_matrix(S, S);
        aug.apply(src, &m, &mut Rng::new(0), &mut out, &mut Vec::new(), 1.0);
        out
    }

    #[test]
    fn identity_config_gives_exactly_the_plain_batch() {
        let ds = dataset();
        let idx = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8];
        let (plain, y0) = ds.batch(&idx);
        let aug = Augmenter::new(AugmentConfig::default(), S, S);
        let (x, y) = aug.batch(&ds, &idx, 7, 2);
        assert_eq!(y, y0);
        let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x), bits(&plain));
        // An elastic field of alpha 0 is zero: the identity too.
        let zero = AugmentConfig::default().with_elastic(Some(ElasticConfig { alpha: 0.0, sigma: 4.0 }));
        let (x, _) = Augmenter::new(zero, S, S).batch(&ds, &idx, 7, 2);
        assert_eq!(bits(&x), bits(&plain));
    }

    #[test]
    fn whole_pixel_shift_moves_the_image_exactly() {
        let ds = dataset();
        let src = ds.get(4).0;
        let a = Affine {
            shift_x: 3.0,
            shift_y: -2.0,
            ..Affine::IDENTITY
        };
        let out = mapped(a, src);
        for y in 0..S {
            for x in 0..S {
                let (sx, sy) = (x as i64 - 3, y as i64 + 2);
                let want = if (0..S as i64).contains(&sx) && (0..S as i64).contains(&sy) {
                    src[sy as usize * S + sx as usize] as f32
                } else {
                    0.0
                };
                assert_eq!(out[y * S + x], want, "at ({x}, {y})");
            }
        }
    }

    #[test]
    fn quarter_turn_moves_a_pixel_clockwise_about_the_centre() {
        // One bright pixel at column 3, row 5: (-10.5, -8.5) from the centre (13.5, 13.5).
        // Clockwise on screen (y down), (dx, dy) -> (-dy, dx) = (8.5, -10.5): column 22, row 3.
        let mut src = vec![0u8; S * S];
        src[5 * S + 3] = 200;
        let out = mapped(
            Affine {
                angle_deg: 90.0,
                ..Affine::IDENTITY
            },
            &src,
        );
        for (i, &v) in out.iter().enumerate() {
            let want = if i == 3 * S + 22 { 200.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-3, "pixel ({}, {}) = {v}", i % S, i / S);
        }
    }

    #[test]
    fn rotating_back_restores_a_smooth_image_approximately() {
        // A smooth blob pattern, well inside the frame.
        let src: Vec<f32> = (0..S * S)
            .map(|i| {
                let (x, y) = ((i % S) as f32 - 12.0, (i / S) as f32 - 15.0);
                200.0 * (-(x * x / 18.0 + y * y / 8.0)).exp()
            })
            .collect();
        let aug = Augmenter::new(AugmentConfig::default(), S, S);
        let turn = |img: &[f32], deg: f32| {
            let mut out = vec![0.0; S * S];
            let m = Affine {
                angle_deg: deg,
                ..Affine::IDENTITY
            }
            .inverse_matrix(S, S);
            aug.apply(img, &m, &mut Rng::new(0), &mut out, &mut Vec::new(), 1.0);
            out
        };
        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        let turned = turn(&src, 23.0);
        assert!(max_diff(&turned, &src) > 50.0, "a 23 degree turn should move the blob");
        // Bilinear interpolation smooths a little each time: a bounded error, largest at the
        // peak (measured: 6.9% of it), small on average.
        let back = turn(&turned, -23.0);
        let err = max_diff(&back, &src);
        let mean = back.iter().zip(&src).map(|(p, q)| (p - q).abs()).sum::<f32>() / src.len() as f32;
        assert!(err < 20.0 && mean < 1.0, "round trip error {err} (mean {mean}) of 200");
    }

    #[test]
    fn transform_is_a_function_of_seed_epoch_and_index() {
        let ds = dataset();
        let cfg: AugmentConfig = "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4".parse().unwrap();
        let aug = Augmenter::new(cfg, S, S);
        let one = |seed, epoch, index| {
            let mut out = vec![0.0; S * S];
            aug.augment(ds.get(index).0, seed, epoch, index, &mut out, &mut Vec::new());
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(one(1, 0, 3), one(1, 0, 3));
        assert_ne!(one(1, 0, 3), one(1, 1, 3), "another epoch, another transform");
        assert_ne!(one(1, 0, 3), one(2, 0, 3), "another seed, another transform");
        // The same sample in another batch composition gets the same bits.
        let (a, _) = aug.batch(&ds, &[3, 0, 7], 1, 0);
        let (b, _) = aug.batch(&ds, &[9, 8, 3], 1, 0);
        let (a, b) = (a.to_vec(), b.to_vec());
        assert_eq!(a[..S * S], b[2 * S * S..]);
        assert_eq!(a[..S * S].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), one(1, 0, 3));
        // Augmented pixels stay in the plain scale and the image is really changed.
        assert!(a.iter().all(|v| (0.0..=255.0 / 256.0 + 1e-6).contains(v)));
        assert_ne!(a[..S * S], ds.batch(&[3]).0.to_vec()[..]);
    }

    #[test]
    fn elastic_field_has_the_expected_size_and_is_smooth() {
        let e = ElasticConfig::default();
        let aug = Augmenter::new(AugmentConfig::default().with_elastic(Some(e)), S, S);
        let m = Affine::IDENTITY.inverse_matrix(S, S);
        let (mut scratch, mut out) = (Vec::new(), vec![0.0; S * S]);
        // Mean squares of dx and dy over many fields, and of the steps between horizontal
        // and vertical neighbours.
        let (mut sq, mut step_sq) = ([vec![0.0f64; S * S], vec![0.0f64; S * S]], [0.0f64; 2]);
        let draws = 1000;
        for i in 0..draws {
            aug.apply(&[0u8; S * S], &m, &mut Rng::new(i), &mut out, &mut scratch, 1.0);
            for (half, (sq, step_sq)) in sq.iter_mut().zip(&mut step_sq).enumerate() {
                // Row y of the field: dx then dy of that row.
                let d = |x: usize, y: usize| scratch[y * 2 * S + half * S + x] as f64;
                for y in 0..S {
                    for x in 0..S {
                        sq[y * S + x] += d(x, y).powi(2) / draws as f64;
                        if x + 1 < S {
                            *step_sq += (d(x + 1, y) - d(x, y)).powi(2) + (d(y, x + 1) - d(y, x)).powi(2);
                        }
                    }
                }
            }
        }
        // Uniform(-1, 1) noise has variance 1/3; blurred with zeros outside, pixel (x, y) has
        // variance alpha² / 3 · Σ k_i² (taps landing in the row) · Σ k_j² (in the column).
        let k2 = |p: usize| -> f64 {
            let r = aug.kernel.len() as isize - 1;
            (-r..=r)
                .filter(|&o| (0..S as isize).contains(&(p as isize + o)))
                .map(|o| (aug.kernel[o.unsigned_abs()] as f64).powi(2))
                .sum()
        };
        for (sq, step_sq) in sq.iter().zip(step_sq) {
            for (y, x) in [(13, 13), (0, 0), (0, 14), (20, 5)] {
                let want = (e.alpha as f64).powi(2) / 3.0 * k2(x) * k2(y);
                let got = sq[y * S + x];
                assert!(
                    (got / want - 1.0).abs() < 0.15,
                    "E[d²] at ({x}, {y}): {got}, expected {want}"
                );
            }
            // In the interior: alpha · 0.041 = 1.4 px rms for sigma 4.
            let centre = sq[13 * S + 13].sqrt();
            assert!((1.2..1.6).contains(&centre), "{centre}");
            // Smooth: neighbours correlate by exp(-1 / 4 sigma²), so they differ by 0.18 times
            // the field's rms (unblurred noise: sqrt(2) times; sigma 1: 0.66 times).
            let step_rms = (step_sq / (draws as f64 * (2 * S * (S - 1)) as f64)).sqrt();
            let rms = (sq.iter().sum::<f64>() / sq.len() as f64).sqrt();
            assert!(
                step_rms < 0.25 * rms,
                "neighbour steps {step_rms} vs field {rms}: not smooth"
            );
        }
    }

    #[test]
    fn loader_batches_are_bit_identical_on_1_and_2_threads() {
        let cfg: AugmentConfig = "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4".parse().unwrap();
        let dl = crate::data::DataLoader::new(dataset(), 4, true, 11).with_augment(cfg);
        let run = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(|| {
                    (0..2)
                        .flat_map(|e| dl.epoch(e).map(|b| (b.x.to_vec(), b.y)).collect::<Vec<_>>())
                        .map(|(x, y)| (x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), y))
                        .collect::<Vec<_>>()
                })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one.len(), 6);
        // Augmented, not plain: the loader without augmentation gives other pixels.
        let plain = crate::data::DataLoader::new(dataset(), 4, true, 11);
        assert_ne!(
            one[0].0,
            plain
                .epoch(0)
                .next()
                .unwrap()
                .x
                .to_vec()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn spec_round_trips_and_bad_specs_say_what_is_wrong() {
        for spec in [
            "none",
            "rotate=10,scale=0.1,shift=2,shear=5",
            "rotate=12.5,elastic=34:4",
            "elastic=0:1.5",
        ] {
            let cfg: AugmentConfig = spec.parse().unwrap();
            assert_eq!(cfg.to_string(), spec);
            assert_eq!(cfg.to_string().parse::<AugmentConfig>().unwrap(), cfg);
        }
        let cfg: AugmentConfig = " shift = 2 , elastic ".parse().unwrap();
        assert_eq!(
            cfg,
            AugmentConfig::default()
                .with_shift_px(2.0)
                .with_elastic(Some(ElasticConfig::default()))
        );
        assert_eq!(cfg.to_string(), "shift=2,elastic=34:4");
        assert!("none".parse::<AugmentConfig>().unwrap().is_none());
        for (spec, says) in [
            ("", "empty augmentation"),
            ("rotate", "rotate needs a value (rotate=DEG)"),
            ("rotate=abc", "rotate must be degrees in [0, 180], got 'abc'"),
            ("rotate=-5", "rotate must be degrees in [0, 180]"),
            ("scale=1", "scale must be a fraction in [0, 1)"),
            ("shift=NaN", "shift must be pixels >= 0"),
            ("shear=90", "shear must be degrees in [0, 90)"),
            ("elastic=34", "elastic takes ALPHA:SIGMA, got '34'"),
            ("elastic=34:0", "elastic SIGMA must be pixels > 0"),
            ("rotate=5,rotate=6", "'rotate' is given twice"),
            ("rotate=5,,shift=1", "empty term"),
            ("none,rotate=5", "'none' cannot be combined"),
            ("zoom=2", "unknown term 'zoom'"),
        ] {
            let err = spec.parse::<AugmentConfig>().unwrap_err();
            assert!(err.contains(says), "{spec:?}: {err}");
        }
        assert!(
            AugmentConfig::default()
                .with_scale(1.5)
                .validate()
                .unwrap_err()
                .contains("scale")
        );
    }
}
