//! Prediction on users' own images: decoding, MNIST-style preprocessing, and class probabilities.
//!
//! Real pictures are not MNIST-shaped, so they are prepared the way MNIST was made: grayscale
//! (transparent pixels count as white paper); inverted when the background is light (a dark
//! digit on white paper is the common case), with the background level taken from the border
//! pixels and subtracted; cropped to the ink's bounding box; scaled to fit 20x20 keeping the
//! aspect ratio; pasted into 28x28 with its centre of mass at the centre.

use std::io::Read;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};

use crate::Error;

/// Side of the images the network takes.
pub const SIDE: usize = 28;
/// Side of the box the digit is scaled into.
const BOX: u32 = 20;
/// Ink threshold (of 255) after background removal, for the bounding box.
const INK: u8 = 50;

/// The largest image file read (bytes).
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// The largest image decoded: pixels a side...
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// ... and bytes of decoded pixels (a 16-megapixel RGBA photo holds 64 MB).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;
/// Right after decoding, larger images are scaled down to this long side (the digit ends up
/// 20 pixels tall), so no full-size copy is ever made.
const WORK_SIDE: u32 = 2048;

/// Reads an image (PNG, JPEG, BMP, GIF, PGM/PNM) as 8-bit gray; transparency over white.
pub fn load_gray(path: &Path) -> crate::Result<GrayImage> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_IMAGE_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, "cannot open", e))?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(Error::format(
            path,
            format!("larger than {MAX_IMAGE_FILE_BYTES} bytes: too large for an image of a digit"),
        ));
    }
    decode_gray(&bytes).map_err(|e| e.at(path))
}

/// Decodes image bytes as 8-bit gray (transparency over white), within [`MAX_IMAGE_SIDE`] and
/// [`MAX_DECODE_BYTES`], scaled down to `WORK_SIDE` (2048 pixels) at most. The error is an
/// [`Error::Format`] without a path.
pub fn decode_gray(bytes: &[u8]) -> crate::Result<GrayImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::format_problem(format!("cannot read: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| {
        Error::format_problem(match e {
            image::ImageError::Limits(_) => format!(
                "image too large to decode (at most {MAX_IMAGE_SIDE} pixels a side and {} MB of pixels): {e}",
                MAX_DECODE_BYTES >> 20
            ),
            e => format!("not a readable image: {e}"),
        })
    })?;
    let img = if img.width().max(img.height()) > WORK_SIDE {
        img.thumbnail(WORK_SIDE, WORK_SIDE)
    } else {
        img
    };
    let la = img.to_luma_alpha8();
    drop(img);
    Ok(GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let p = la.get_pixel(x, y);
        let (l, a) = (p[0] as u32, p[1] as u32);
        Luma([((l * a + 255 * (255 - a)) / 255) as u8])
    }))
}

/// The median of the border pixels: the background level.
fn border_median(img: &GrayImage) -> u8 {
    let (w, h) = img.dimensions();
    let mut v: Vec<u8> = Vec::new();
    for x in 0..w {
        v.push(img.get_pixel(x, 0)[0]);
        v.push(img.get_pixel(x, h - 1)[0]);
    }
    for y in 0..h {
        v.push(img.get_pixel(0, y)[0]);
        v.push(img.get_pixel(w - 1, y)[0]);
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// MNIST-style preparation of any gray image: a light digit on black, in a 20x20 box, centred
/// by mass in 28x28. An image without ink is an error ([`Error::Format`] without a path).
pub fn preprocess(img: &GrayImage) -> crate::Result<GrayImage> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::format_problem("empty image (0 pixels)"));
    }
    // Light background: invert, so ink is bright and the background dark.
    let bg = border_median(img);
    let invert = bg > 127;
    let ink = |p: u8| if invert { 255 - p } else { p };
    let bgv = ink(bg) as f32;
    let maxv = img.pixels().map(|p| ink(p[0])).max().unwrap_or(0) as f32;
    if maxv - bgv < 32.0 {
        return Err(Error::format_problem(
            "no digit found: the image is blank (no ink stands out from the background)",
        ));
    }
    // Background to 0, strongest ink to 255.
    let scaled = GrayImage::from_fn(w, h, |x, y| {
        let v = (ink(img.get_pixel(x, y)[0]) as f32 - bgv) / (maxv - bgv) * 255.0;
        Luma([v.clamp(0.0, 255.0).round() as u8])
    });
    // Crop to the ink's bounding box.
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in scaled.enumerate_pixels() {
        if p[0] > INK {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        return Err(Error::format_problem(
            "no digit found: no pixel is dark (or light) enough to be ink",
        ));
    }
    let crop = imageops::crop_imm(&scaled, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    // Fit into 20x20, keeping the aspect ratio.
    let (cw, ch) = crop.dimensions();
    let s = BOX as f32 / cw.max(ch) as f32;
    let (nw, nh) = (
        ((cw as f32 * s).round() as u32).clamp(1, BOX),
        ((ch as f32 * s).round() as u32).clamp(1, BOX),
    );
    let small = imageops::resize(&crop, nw, nh, FilterType::Triangle);
    // Centre of mass to the centre of the 28x28 field (keeping all of the digit inside).
    let (mut m, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y, p) in small.enumerate_pixels() {
        let v = p[0] as f32;
        m += v;
        mx += v * (x as f32 + 0.5);
        my += v * (y as f32 + 0.5);
    }
    let (cx, cy) = if m > 0.0 {
        (mx / m, my / m)
    } else {
        (nw as f32 / 2.0, nh as f32 / 2.0)
    };
    let side = SIDE as f32;
    let ox = ((side / 2.0 - cx).round() as i64).clamp(0, SIDE as i64 - nw as i64);
    let oy = ((side / 2.0 - cy).round() as i64).clamp(0, SIDE as i64 - nh as i64);
    let mut out = GrayImage::new(SIDE as u32, SIDE as u32);
    imageops::overlay(&mut out, &small, ox, oy);
    Ok(out)
}

/// A 28x28 image taken as it is (gray values as the network's input); another size is an
/// [`Error::Shape`] without a path.
pub fn as_is(img: &GrayImage) -> crate::Result<GrayImage> {
    if img.dimensions() != (SIDE as u32, SIDE as u32) {
        let (w, h) = img.dimensions();
        return Err(Error::shape(format!(
            "--no-preprocess needs a 28x28 image, this one is {w}x{h}"
        )));
    }
    Ok(img.clone())
}

/// Softmax of each row of logits (N, C).
pub fn softmax_rows(logits: &[f32], c: usize) -> Vec<Vec<f32>> {
    logits
        .chunks(c)
        .map(|r| {
            let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect()
}

/// PNG bytes of a gray image.
pub fn png_bytes(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark vertical bar ("1") off-centre on a large white canvas.
    fn bar_on_paper() -> GrayImage {
        GrayImage::from_fn(120, 90, |x, y| {
            Luma([if (80..92).contains(&x) && (10..70).contains(&y) {
                20
            } else {
                235
            }])
        })
    }

    #[test]
    fn a_dark_digit_on_paper_becomes_a_light_centred_digit_in_a_20_pixel_box() {
        let out = preprocess(&bar_on_paper()).unwrap();
        assert_eq!(out.dimensions(), (28, 28));
        assert_eq!(out.get_pixel(0, 0)[0], 0, "background black");
        let ink: Vec<(u32, u32)> = out
            .enumerate_pixels()
            .filter(|(_, _, p)| p[0] > INK)
            .map(|(x, y, _)| (x, y))
            .collect();
        let (ys, xs): (Vec<u32>, Vec<u32>) = (ink.iter().map(|p| p.1).collect(), ink.iter().map(|p| p.0).collect());
        let height = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
        assert!((19..=20).contains(&height), "tallest side scaled to 20: {height}");
        let cx = xs.iter().sum::<u32>() as f32 / xs.len() as f32 + 0.5;
        let cy = ys.iter().sum::<u32>() as f32 / ys.len() as f32 + 0.5;
        assert!(
            (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
            "centred: ({cx}, {cy})"
        );
    }

    #[test]
    fn light_on_dark_is_not_inverted_and_blank_images_are_errors() {
        let inverted = GrayImage::from_fn(120, 90, |x, y| Luma([255 - bar_on_paper().get_pixel(x, y)[0]]));
        assert_eq!(preprocess(&inverted).unwrap(), preprocess(&bar_on_paper()).unwrap());
        let blank = GrayImage::from_pixel(50, 50, Luma([240]));
        assert!(preprocess(&blank).unwrap_err().to_string().contains("blank"));
        assert!(as_is(&blank).unwrap_err().to_string().contains("28x28"));
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let p = softmax_rows(&[1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0], 3);
        for r in &p {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(p[0][2] > p[0][1] && p[1][0] > 0.999);
    }
}
