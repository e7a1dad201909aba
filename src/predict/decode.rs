//! Reading users' images: bytes from a file or standard input within a size limit, decoded
//! (PNG, JPEG, BMP, GIF, PGM/PNM) within the decoder's limits to 8-bit RGB or gray, with
//! transparency over white paper, and scaled down to a working size right away.

use std::io::Read;
use std::path::Path;

use image::{DynamicImage, GrayImage, Luma, RgbImage};

use crate::Error;

/// The largest image file read (bytes).
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// The largest image decoded: pixels a side...
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// ... and bytes of decoded pixels (a 16-megapixel RGBA photo holds 64 MB).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;
/// Right after decoding, larger images are scaled down to this long side (the digit ends up
/// 20 pixels tall), so no full-size copy is ever made.
const WORK_SIDE: u32 = 2048;

/// The path that stands for standard input.
pub const STDIN_PATH: &str = "-";

/// The bytes of an image file, or of standard input when `path` is `-`, at most
/// [`MAX_IMAGE_FILE_BYTES`]; errors name the file ("-" reads as "standard input").
pub fn read_image_bytes(path: &Path) -> crate::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let stdin = path.as_os_str() == STDIN_PATH;
    let shown = if stdin { Path::new("standard input") } else { path };
    let read = if stdin {
        std::io::stdin()
            .lock()
            .take(MAX_IMAGE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_IMAGE_FILE_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| Error::io(shown, "cannot read", e))?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(Error::format(
            shown,
            format!("larger than {MAX_IMAGE_FILE_BYTES} bytes: too large for an image of a digit"),
        ));
    }
    if bytes.is_empty() {
        return Err(Error::format(shown, "empty (0 bytes): not an image"));
    }
    Ok(bytes)
}

/// Reads an image (PNG, JPEG, BMP, GIF, PGM/PNM; `-` is standard input) as 8-bit gray;
/// transparency over white.
pub fn load_gray(path: &Path) -> crate::Result<GrayImage> {
    Ok(rgb_to_gray(&load_rgb(path)?))
}

/// Reads an image (`-` is standard input) as 8-bit RGB; transparency over white.
pub fn load_rgb(path: &Path) -> crate::Result<RgbImage> {
    let bytes = read_image_bytes(path)?;
    let shown = if path.as_os_str() == STDIN_PATH {
        Path::new("standard input")
    } else {
        path
    };
    decode_rgb(&bytes).map_err(|e| e.at(shown))
}

/// Decodes image bytes within [`MAX_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`], scaled down to
/// `WORK_SIDE` (2048 pixels) at most. The error is an [`Error::Format`] without a path.
fn decode(bytes: &[u8]) -> crate::Result<DynamicImage> {
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
    Ok(if img.width().max(img.height()) > WORK_SIDE {
        img.thumbnail(WORK_SIDE, WORK_SIDE)
    } else {
        img
    })
}

/// A decoded image: 8-bit gray when every pixel is gray (red, green and blue equal; those
/// with transparency put over white first), else 8-bit RGB (transparency over white).
#[derive(Clone, Debug)]
pub enum Decoded {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl Decoded {
    /// As RGB: a gray image's level in each channel.
    pub fn into_rgb(self) -> RgbImage {
        match self {
            Decoded::Rgb(rgb) => rgb,
            Decoded::Gray(g) => {
                let px = g.as_raw().iter().flat_map(|&v| [v, v, v]).collect();
                RgbImage::from_raw(g.width(), g.height(), px).expect("three bytes a pixel")
            }
        }
    }
}

/// Decodes image bytes as 8-bit gray or RGB (see [`Decoded`]): an image of gray pixels is not
/// kept (or made) RGB, which preprocessing would then find gray again, a pass over three times
/// the bytes. That covers gray files, and RGB or RGBA files of gray pixels: a canvas drawn
/// black on white, as the drawing page of `serve` sends, or a scan saved in colour. See
/// [`decode_gray`] for the limits.
pub fn decode_image(bytes: &[u8]) -> crate::Result<Decoded> {
    let rgba = match decode(bytes)? {
        DynamicImage::ImageLuma8(g) => return Ok(Decoded::Gray(g)),
        DynamicImage::ImageRgb8(rgb) => {
            let (px, _) = rgb.as_raw().as_chunks::<3>();
            if all_in_blocks(px, |p| p[0] == p[1] && p[1] == p[2]) {
                let levels = px.iter().map(|p| p[0]).collect();
                let gray = GrayImage::from_raw(rgb.width(), rgb.height(), levels).expect("a byte a pixel");
                return Ok(Decoded::Gray(gray));
            }
            return Ok(Decoded::Rgb(rgb));
        }
        DynamicImage::ImageRgba8(rgba) => rgba,
        img => img.to_rgba8(),
    };
    // Each pixel over white, from the raw bytes; an opaque pixel is its colour (the same
    // bytes: c x 255 / 255), as every pixel of a canvas drawn on white is.
    let (w, h) = rgba.dimensions();
    let (px, _) = rgba.as_raw().as_chunks::<4>();
    let over = |c: u8, a: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32)) / 255) as u8;
    let (levels, gray, opaque) = gray_levels(px);
    if gray {
        // Over white, equal channels stay equal.
        let levels = if opaque {
            levels
        } else {
            px.iter().map(|p| over(p[0], p[3])).collect()
        };
        return Ok(Decoded::Gray(
            GrayImage::from_raw(w, h, levels).expect("a byte a pixel"),
        ));
    }
    let opaque = all_in_blocks(px, |p| p[3] == 255);
    let mut out = vec![0u8; px.len() * 3];
    let pairs = out.chunks_exact_mut(3).zip(px);
    if opaque {
        pairs.for_each(|(o, p)| o.copy_from_slice(&p[..3]));
    } else {
        pairs.for_each(|(o, p)| o.copy_from_slice(&[over(p[0], p[3]), over(p[1], p[3]), over(p[2], p[3])]));
    }
    Ok(Decoded::Rgb(
        RgbImage::from_raw(w, h, out).expect("three bytes a pixel"),
    ))
}

/// Whether `on` holds for every pixel: tested 256 pixels at a time without stopping inside a
/// block (a test that vectorises), stopping at the first block where it fails.
fn all_in_blocks<const N: usize>(px: &[[u8; N]], on: impl Fn(&[u8; N]) -> bool) -> bool {
    px.chunks(256).all(|c| c.iter().fold(true, |all, p| all & on(p)))
}

/// RGBA pixels' red bytes (their levels, when gray), whether every pixel is gray (red, green
/// and blue equal), and whether every one is opaque; stopping after the first block of 256
/// pixels with colour (the levels are then partly made). One pass over the pixels as words
/// (red the low byte), which vectorises: a pixel is gray when its red-green and green-blue
/// bytes are equal, `x ^ (x >> 8)` 0 in its low 16 bits; the opaque ones have all of the top
/// byte, so the AND of all words keeps it whole. (About 4 times as fast as testing the bytes
/// of `[u8; 4]` and taking `p[0]`, which the compiler does a byte at a time.)
fn gray_levels(px: &[[u8; 4]]) -> (Vec<u8>, bool, bool) {
    let mut levels = vec![0u8; px.len()];
    let (mut colour, mut all) = (0u32, u32::MAX);
    for (l, p) in levels.chunks_mut(256).zip(px.chunks(256)) {
        let (c, a) = l.iter_mut().zip(p).fold((0u32, u32::MAX), |(c, a), (l, p)| {
            let x = u32::from_le_bytes(*p);
            *l = x as u8;
            (c | ((x ^ (x >> 8)) & 0xffff), a & x)
        });
        (colour, all) = (colour | c, all & a);
        if colour != 0 {
            break;
        }
    }
    (levels, colour == 0, all >> 24 == 255)
}

/// Decodes image bytes as 8-bit RGB (transparency over white); see [`decode_gray`] for the
/// limits.
pub fn decode_rgb(bytes: &[u8]) -> crate::Result<RgbImage> {
    decode_image(bytes).map(Decoded::into_rgb)
}

/// Decodes image bytes as 8-bit gray (transparency over white), within [`MAX_IMAGE_SIDE`] and
/// [`MAX_DECODE_BYTES`], scaled down to `WORK_SIDE` (2048 pixels) at most. The error is an
/// [`Error::Format`] without a path.
pub fn decode_gray(bytes: &[u8]) -> crate::Result<GrayImage> {
    Ok(rgb_to_gray(&decode_rgb(bytes)?))
}

/// Luma with the sRGB (Rec. 709) weights the `image` crate uses, rounded.
pub fn rgb_to_gray(img: &RgbImage) -> GrayImage {
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y);
        let l = (2126 * p[0] as u32 + 7152 * p[1] as u32 + 722 * p[2] as u32 + 5000) / 10_000;
        Luma([l as u8])
    })
}
