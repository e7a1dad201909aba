//! The MNIST extraction: the tutorial's `((x_train, y_train), (x_valid, y_valid), (x_test,
//! y_test))` out of an unpickled value, each array's dtype, byte order and shape checked
//! against its bytes, images as u8 pixels and labels as digits.

use super::machine::unpickle;
use super::value::{NdArray, Value};

fn array(v: &Value, what: &str) -> Result<NdArray, String> {
    match v {
        Value::Array(a) => a
            .borrow()
            .clone()
            .ok_or_else(|| format!("{what}: ndarray without state")),
        v => Err(format!("{what}: expected an ndarray, found {}", v.kind())),
    }
}

impl NdArray {
    /// The dtype's code without a byte-order prefix (`f4`, `i8`, ...).
    fn code(&self) -> &str {
        self.dtype.code.trim_start_matches(['<', '>', '|', '='])
    }

    fn itemsize(&self) -> Result<usize, String> {
        match self.code() {
            "f4" | "i4" | "u4" => Ok(4),
            "f8" | "i8" | "u8" => Ok(8),
            "u1" | "i1" | "b1" => Ok(1),
            "i2" | "u2" | "f2" => Ok(2),
            c => Err(format!("unsupported dtype '{c}'")),
        }
    }

    fn check(&self, what: &str) -> Result<&str, String> {
        let size = self.itemsize()?;
        let code = self.code();
        let big = self.dtype.byteorder == '>' || self.dtype.code.starts_with('>');
        if big && size > 1 {
            return Err(format!("{what}: big-endian data ('>{code}') is not supported"));
        }
        let n: usize = self.shape.iter().product();
        if n.checked_mul(size) != Some(self.data.len()) {
            return Err(format!(
                "{what}: shape {:?} of {code} needs {} bytes, the array holds {}",
                self.shape,
                n.saturating_mul(size),
                self.data.len()
            ));
        }
        Ok(code)
    }

    /// Images as u8 pixels: from f32 values that are exactly pixel/256, or from u8.
    fn to_pixels(&self, what: &str) -> Result<(usize, Vec<u8>), String> {
        let code = self.check(what)?;
        let n = *self.shape.first().ok_or_else(|| format!("{what}: 0-d array"))?;
        let per: usize = self.shape[1..].iter().product();
        if per != 784 {
            return Err(format!(
                "{what}: shape {:?} is not N images of 784 (28x28) pixels",
                self.shape
            ));
        }
        let px = match code {
            "u1" => self.data.to_vec(),
            "f4" => self
                .data
                .chunks_exact(4)
                .enumerate()
                .map(|(i, c)| {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * 256.0;
                    if (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                        Ok(v as u8)
                    } else {
                        Err(format!(
                            "{what}: value {} at index {i} is not a pixel/256 (0..=255 over 256)",
                            v / 256.0
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
            c => return Err(format!("{what}: images of dtype '{c}' (expected f4 or u1)")),
        };
        Ok((n, px))
    }

    /// Labels 0..=9 from any integer dtype.
    fn to_labels(&self, what: &str) -> Result<Vec<u8>, String> {
        let code = self.check(what)?;
        if self.shape.len() != 1 {
            return Err(format!("{what}: labels must be 1-d, shape is {:?}", self.shape));
        }
        let size = self.itemsize()?;
        let signed = code.starts_with('i');
        if !matches!(code.as_bytes()[0], b'i' | b'u') {
            return Err(format!("{what}: labels of dtype '{code}' (expected an integer type)"));
        }
        self.data
            .chunks_exact(size)
            .enumerate()
            .map(|(i, c)| {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(c);
                if signed && c[size - 1] & 0x80 != 0 {
                    b[size..].fill(0xff);
                }
                let v = i64::from_le_bytes(b);
                u8::try_from(v)
                    .ok()
                    .filter(|&d| d <= 9)
                    .ok_or_else(|| format!("{what}: label {v} at index {i} is not a digit 0-9"))
            })
            .collect()
    }
}

/// One split from the pickle: u8 images (N*784) and labels.
pub type Split = (Vec<u8>, Vec<u8>);

/// Parses the tutorial's pickle (already decompressed) into (train, valid, test). What is
/// wrong is an [`Error::Format`](crate::Error::Format) without a path.
pub fn parse_mnist_pickle(bytes: &[u8]) -> crate::Result<[Split; 3]> {
    parse_splits(bytes).map_err(crate::Error::format_problem)
}

fn parse_splits(bytes: &[u8]) -> Result<[Split; 3], String> {
    let top = unpickle(bytes)?.tuple().map_err(|e| format!("top level: {e}"))?;
    if top.len() != 3 {
        return Err(format!(
            "top level: expected 3 splits (train, valid, test), found {}",
            top.len()
        ));
    }
    let names = ["train", "valid", "test"];
    let mut out: Vec<Split> = Vec::new();
    for (split, name) in top.iter().zip(names) {
        let pair = split.tuple().map_err(|e| format!("{name}: {e}"))?;
        if pair.len() != 2 {
            return Err(format!("{name}: expected (x, y), found a tuple of {}", pair.len()));
        }
        let (n, x) = array(&pair[0], &format!("x_{name}"))?.to_pixels(&format!("x_{name}"))?;
        let y = array(&pair[1], &format!("y_{name}"))?.to_labels(&format!("y_{name}"))?;
        if y.len() != n {
            return Err(format!("{name}: {n} images but {} labels", y.len()));
        }
        out.push((x, y));
    }
    Ok(out.try_into().unwrap())
}
