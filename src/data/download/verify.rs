//! The checksum step: whether a downloaded file is the expected one (the published md5 of the
//! .gz, a pinned sha256 of the content streamed with a bound, or the tutorial's pickle parsed),
//! and decompression that stops at a bound.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use sha2::Sha256;

use super::RemoteFile;
use crate::Error;
use crate::data::idx::{open_maybe_gz, read_at_most};
use crate::data::pickle::parse_mnist_pickle;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decompresses `raw` if it starts with the gzip magic, refusing to produce more than
/// `limit` bytes (a gzip bomb ends in an error, not in memory exhaustion). The error is an
/// [`Error::Format`] without a path.
pub fn gunzip_bounded(raw: &[u8], limit: u64) -> crate::Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    read_at_most(flate2::read::MultiGzDecoder::new(raw), limit)
        .map_err(|e| Error::format_problem(format!("corrupt gzip data: {e}")))?
        .ok_or_else(|| Error::format_problem(format!("gzip data decompresses to more than {limit} bytes")))
}

/// Whether a downloaded file is the expected one; the error ([`Error::Format`] or
/// [`Error::Io`], naming `path`) says what does not match.
pub fn verify(path: &Path, f: &RemoteFile) -> crate::Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "cannot read", e))?
        .len();
    if len > f.cap() {
        return Err(Error::format(
            path,
            format!("{len} bytes, more than the cap of {} for {}", f.cap(), f.name),
        ));
    }
    let raw = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    if f.pickle {
        let content = gunzip_bounded(&raw, f.content_max).map_err(|e| e.at(path))?;
        return parse_mnist_pickle(&content)
            .map(|_| ())
            .map_err(|e| Error::format(path, format!("not the tutorial's pickle: {}", e.detail())));
    }
    let md5 = hex(&Md5::digest(&raw));
    if f.md5.as_deref() == Some(md5.as_str()) {
        return Ok(());
    }
    let mut detail = format!("md5 {md5}, expected {}", f.md5.as_deref().unwrap_or("-"));
    if let Some(want) = &f.sha256 {
        let sha = hex(&sha256_of_content(path, f.content_max)?);
        if &sha == want {
            return Ok(());
        }
        detail.push_str(&format!("; sha256 of the content {sha}, expected {want}"));
    }
    Err(Error::format(path, format!("checksum mismatch ({detail})")))
}

/// The sha256 of a file's (inflated) content, streamed: memory stays small and a gzip bomb
/// stops after `limit` bytes.
fn sha256_of_content(path: &Path, limit: u64) -> crate::Result<Vec<u8>> {
    let mut r = open_maybe_gz(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, "corrupt gzip data", e)),
        };
        total += n as u64;
        if total > limit {
            return Err(Error::format(
                path,
                format!("content exceeds {limit} bytes (a gzip bomb?)"),
            ));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn the_checksum_step_decompresses_with_a_bound() {
        // Concatenated members of zeros: 100 x 1 MiB from a few KiB.
        let member = gz(&vec![0u8; 1 << 20]);
        let bomb: Vec<u8> = std::iter::repeat_n(&member[..], 100).flatten().copied().collect();
        assert!(bomb.len() < 200_000);
        let e = gunzip_bounded(&bomb, 10 << 20).unwrap_err();
        assert_eq!(e.to_string(), "gzip data decompresses to more than 10485760 bytes");
        assert!(matches!(e, Error::Format { path: None, .. }));
        assert_eq!(gunzip_bounded(&member, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(gunzip_bounded(b"plain", 1).unwrap(), b"plain");
    }
}
