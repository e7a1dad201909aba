//! Prediction on users' own images: decoding ([`decode`]), MNIST-style preprocessing
//! ([`preprocess`](mod@preprocess): background and lighting removed, Otsu's ink threshold, the digit's
//! components, strokes brought to MNIST's width, optional deskewing, 20x20 box centred by mass
//! in 28x28), class probabilities and the low-confidence flag.

pub mod decode;
pub mod filters;
pub mod preprocess;
#[cfg(test)]
mod tests;

use image::GrayImage;

use crate::Error;
pub use decode::{
    Decoded, MAX_DECODE_BYTES, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_SIDE, STDIN_PATH, decode_gray, decode_image, decode_rgb,
    load_gray, load_rgb, read_image_bytes,
};
pub use preprocess::{
    MNIST_STROKE_WIDTH, PreprocessConfig, SIDE, is_mnist_shaped, preprocess, preprocess_decoded, preprocess_gray_with,
    preprocess_steps, preprocess_with,
};

/// The default of `predict --min-confidence`: a prediction whose top probability is below this
/// is flagged "low confidence".
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.5;

/// Whether a prediction's top probability is below `min_confidence`.
pub fn is_low_confidence(probabilities: &[f32], min_confidence: f32) -> bool {
    probabilities.iter().copied().fold(0.0f32, f32::max) < min_confidence
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

/// A prepared image's values as the network takes them (each pixel / 256, as MNIST's file
/// holds them), row by row.
pub fn network_input(img: &GrayImage) -> impl Iterator<Item = f32> + '_ {
    img.as_raw().iter().map(|&p| crate::data::pixel_to_f32(p))
}

/// PNG bytes of a gray image.
pub fn png_bytes(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}
