//! The JSON body the load test sends, shared by `serve_load` and `json_timing` (included with
//! `#[path]`).

/// `{"pixels": [...]}` of MNIST's first test image (pixel / 256, as the library reads it), as
/// serde_json writes it.
pub fn mnist_pixels_json() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let (img, _) = mnist_cnn::data::idx::read_images_and_labels(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .expect("MNIST's test set in data/mnist");
    let px: Vec<f32> = img.data[..784]
        .iter()
        .map(|&p| mnist_cnn::data::pixel_to_f32(p))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "pixels": px })).expect("JSON")
}
