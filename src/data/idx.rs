//! The IDX format of the MNIST files (gzipped or not).
//!
//! Layout: magic [0, 0, type, ndim] (type 0x08 = u8), then ndim big-endian u32 sizes, then the
//! values. Images are 3-d (N, 28, 28), labels 1-d (N).

use std::io::Read;
use std::path::Path;

use super::DataError;

/// The contents of one IDX file of u8 values.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a whole file, decompressing it if it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes (already decompressed), reusing their buffer for the values. `path` is
/// only for error messages.
pub fn parse_idx(mut bytes: Vec<u8>, path: &Path) -> Result<IdxArray, DataError> {
    let err = |m: String| DataError::new(path, m);
    if bytes.len() < 4 {
        return Err(err(format!("too short for an IDX header ({} bytes)", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(format!(
            "not an IDX file: magic number {:02x}{:02x}{:02x}{:02x} should start with 0000",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "IDX data type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(err("IDX file with 0 dimensions".into()));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(err(format!(
            "truncated header: {ndim} dimensions need {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() != n {
        return Err(err(format!(
            "dimensions {dims:?} need {n} bytes of data, file has {} ({})",
            body.len(),
            if body.len() < n { "truncated" } else { "trailing bytes" }
        )));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

/// Reads an IDX file (gzipped or not).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    parse_idx(read_maybe_gz(path)?, path)
}

/// Encodes u8 values as IDX bytes (for tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Reads an image file (N, H, W) and a label file (N), checking they agree and labels are < 10.
pub fn read_images_and_labels(images: &Path, labels: &Path) -> Result<(IdxArray, Vec<u8>), DataError> {
    let img = read_idx(images)?;
    if img.dims.len() != 3 {
        return Err(DataError::new(
            images,
            format!("images must be 3-d (N, H, W), got dimensions {:?}", img.dims),
        ));
    }
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(DataError::new(
            labels,
            format!("labels must be 1-d, got dimensions {:?}", lab.dims),
        ));
    }
    if lab.dims[0] != img.dims[0] {
        return Err(DataError::new(
            labels,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                images.display()
            ),
        ));
    }
    if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DataError::new(
            labels,
            format!("label {l} at index {i} is not a digit 0-9"),
        ));
    }
    Ok((img, lab.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.idx")
    }

    #[test]
    fn round_trip() {
        let a = parse_idx(encode_idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), p()).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
    }

    #[test]
    fn each_malformed_input_has_its_error() {
        let cases: [(Vec<u8>, &str); 6] = [
            (vec![0, 0], "too short"),
            (vec![1, 2, 3, 4, 0, 0, 0, 0], "not an IDX file"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "not unsigned bytes"),
            (vec![0, 0, 8, 2, 0, 0, 0, 1], "truncated header"),
            (encode_idx(&[3], &[1, 2]), "truncated"),
            (encode_idx(&[1], &[1, 2]), "trailing bytes"),
        ];
        for (bytes, want) in cases {
            let e = parse_idx(bytes, p()).unwrap_err().to_string();
            assert!(
                e.starts_with("x.idx: ") && e.contains(want),
                "{e:?} should say {want:?}"
            );
        }
    }

    #[test]
    fn label_count_and_range_are_checked() {
        let dir = std::env::temp_dir().join(format!("mnist-cnn-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (img, lab) = (dir.join("img"), dir.join("lab"));
        std::fs::write(&img, encode_idx(&[2, 1, 1], &[0, 255])).unwrap();
        std::fs::write(&lab, encode_idx(&[3], &[0, 1, 2])).unwrap();
        let e = read_images_and_labels(&img, &lab).unwrap_err().to_string();
        assert!(e.contains("3 labels for 2 images"), "{e}");
        std::fs::write(&lab, encode_idx(&[2], &[0, 10])).unwrap();
        let e = read_images_and_labels(&img, &lab).unwrap_err().to_string();
        assert!(e.contains("label 10 at index 1"), "{e}");
        let e = read_idx(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
