//! The IDX format of the MNIST files (gzipped or not).
//!
//! Layout: magic [0, 0, type, ndim] (type 0x08 = u8), then ndim big-endian u32 sizes, then the
//! values. Images are 3-d (N, 28, 28), labels 1-d (N).

use std::io::Read;
use std::path::Path;

use crate::Error;

/// The contents of one IDX file of u8 values.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The most bytes of values one IDX file may declare: 1 GiB (MNIST's training images are 47 MB,
/// EMNIST's largest file 550 MB). A larger header is refused before anything is inflated.
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// A reader of a file's content: inflated if the file starts with the gzip magic (all members
/// of a multi-member gzip), else the bytes as they are. Callers bound how much they read.
pub fn open_maybe_gz(path: &Path) -> crate::Result<Box<dyn Read>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot read", e))?;
    maybe_gunzip(f).map_err(|e| Error::io(path, "cannot read", e))
}

/// `r` inflated when it starts with the gzip magic (every member of a multi-member gzip), else
/// `r` as it is.
fn maybe_gunzip<'a>(mut r: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut r, &mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    Ok(if magic[..n] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else {
        Box::new(head)
    })
}

/// Reads `r` to its end, reading at most `limit + 1` bytes: `None` when it holds more than
/// `limit`. Memory stays within the limit whatever the compression ratio behind `r`.
pub fn read_at_most(r: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// Fills as much of `buf` as the reader holds; returns how much.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn content_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, "corrupt gzip data or unreadable file", e)
}

/// Reads a whole file, inflating it if gzipped, and refuses it once its content passes `limit`
/// bytes (`what` names what the file should be, for the message). Memory stays within the
/// limit whatever the compression ratio: a gzip bomb stops there.
pub fn read_gz_bounded(path: &Path, limit: u64, what: &str) -> crate::Result<Vec<u8>> {
    read_at_most(open_maybe_gz(path)?, limit)
        .map_err(|e| content_error(path, e))?
        .ok_or_else(|| {
            Error::format(
                path,
                format!("content exceeds {limit} bytes, more than {what} can hold (a gzip bomb?)"),
            )
        })
}

/// The dimensions an IDX header declares and the header's length; `bytes` holds at least the
/// header (the first 4 bytes tell how long it is).
fn parse_header(bytes: &[u8]) -> Result<(Vec<usize>, usize), String> {
    if bytes.len() < 4 {
        return Err(format!("too short for an IDX header ({} bytes)", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "not an IDX file: magic number {:02x}{:02x}{:02x}{:02x} should start with 0000",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX data type 0x{:02x} is not unsigned bytes (0x08)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err("IDX file with 0 dimensions".into());
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {ndim} dimensions need {header} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((dims, header))
}

/// The number of values `dims` declares, refused past [`MAX_IDX_BYTES`].
fn declared_len(dims: &[usize]) -> Result<usize, String> {
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_IDX_BYTES => Ok(n),
        _ => Err(format!(
            "dimensions {dims:?} declare more than {MAX_IDX_BYTES} bytes, the limit for an IDX file"
        )),
    }
}

fn body_error(dims: &[usize], n: usize, have: usize) -> String {
    format!(
        "dimensions {dims:?} need {n} bytes of data, file has {}",
        if have < n {
            format!("{have} (truncated)")
        } else {
            "more (trailing bytes)".to_string()
        }
    )
}

/// Parses IDX bytes (already decompressed), reusing their buffer for the values. `path` is
/// only for error messages.
pub fn parse_idx(mut bytes: Vec<u8>, path: &Path) -> crate::Result<IdxArray> {
    let err = |m: String| Error::format(path, m);
    let (dims, header) = parse_header(&bytes).map_err(err)?;
    let n = declared_len(&dims).map_err(err)?;
    if bytes.len() - header != n {
        return Err(err(body_error(&dims, n, bytes.len() - header)));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

/// Reads an IDX file (gzipped or not), inflating no more than its header declares: the
/// header is read and checked first, then exactly the declared number of values.
pub fn read_idx(path: &Path) -> crate::Result<IdxArray> {
    let err = |m: String| Error::format(path, m);
    let mut r = open_maybe_gz(path)?;
    let mut head = vec![0u8; 4];
    let got = read_up_to(&mut r, &mut head).map_err(|e| content_error(path, e))?;
    head.truncate(got);
    if head.len() == 4 && head[..2] == [0, 0] {
        let ndim = head[3] as usize;
        head.resize(4 + 4 * ndim, 0);
        let got = read_up_to(&mut r, &mut head[4..]).map_err(|e| content_error(path, e))?;
        head.truncate(4 + got);
    }
    let (dims, _) = parse_header(&head).map_err(err)?;
    let n = declared_len(&dims).map_err(err)?;
    let mut data = Vec::new();
    r.take(n as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| content_error(path, e))?;
    if data.len() != n {
        return Err(err(body_error(&dims, n, data.len())));
    }
    Ok(IdxArray { dims, data })
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
pub fn read_images_and_labels(images: &Path, labels: &Path) -> crate::Result<(IdxArray, Vec<u8>)> {
    let img = read_idx(images)?;
    if img.dims.len() != 3 {
        return Err(Error::format(
            images,
            format!("images must be 3-d (N, H, W), got dimensions {:?}", img.dims),
        ));
    }
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(Error::format(
            labels,
            format!("labels must be 1-d, got dimensions {:?}", lab.dims),
        ));
    }
    if lab.dims[0] != img.dims[0] {
        return Err(Error::format(
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
        return Err(Error::format(
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
