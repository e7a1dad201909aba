//! `mnist-cnn download`: the MNIST-family datasets and the tutorial's pickle, from public
//! mirrors, checked, resumable, cached.
//!
//! Each file is tried on each mirror in order (a user's mirror first: `--mirror URL` or the
//! `MNIST_CNN_MIRROR` environment variable). A transfer goes to `NAME.part`, resumes from it with
//! an HTTP Range request, and takes its final name only after its checksum passes: the md5 that
//! the dataset publishes for the .gz, or a pinned sha256 of the decompressed content (the
//! bundled MNIST files were re-compressed, so only the latter matches them). A file that fails
//! is deleted and the next mirror is tried. A file already present and valid is not fetched
//! again. The tutorial's `mnist.pkl.gz` is checked by parsing it.
//!
//! A hostile or broken server cannot fill the disk, hold the command forever or make it lose
//! work: each file is capped at its expected size plus a margin ([`RemoteFile::cap`]); each
//! file has an overall deadline and a minimum throughput ([`Limits`]); the checksum step
//! decompresses with a bound; and a partial `.part` is kept whatever a later mirror does (only
//! a checksum mismatch or an over-cap transfer deletes it, and says so), so "run again to
//! resume" is only said when the `.part` is there.
//!
//! The parts: `datasets` (the known datasets: mirrors, files, sizes, checksums, class names),
//! `limits` (the time limits of a transfer), `http` (one file's transfer from one mirror),
//! `verify` (the checksum step); here, the driver that tries the mirrors in turn.

mod datasets;
mod http;
mod limits;
mod verify;

use std::path::{Path, PathBuf};

use crate::Error;
use http::{fetch, file_len};

pub use datasets::{DatasetSpec, RemoteFile, class_names, spec};
pub use limits::Limits;
pub use verify::{gunzip_bounded, verify};

/// The cache directory: `dir`, else the platform's data directory + `mnist-cnn`.
pub fn cache_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("mnist-cnn"),
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    AlreadyThere,
    Fetched { from: String },
}

/// Downloads every file of `spec` into `dir/<key>/`, trying `first_mirror` before the spec's,
/// with the default [`Limits`]. Returns the dataset's directory and, per file, what happened;
/// `log` hears each step.
pub fn download(
    spec: &DatasetSpec,
    dir: &Path,
    first_mirror: Option<&str>,
    progress: bool,
    log: impl FnMut(&str),
) -> crate::Result<(PathBuf, Vec<Outcome>)> {
    download_with(spec, dir, first_mirror, progress, &Limits::default(), log)
}

/// [`download`] with the given time limits.
pub fn download_with(
    spec: &DatasetSpec,
    dir: &Path,
    first_mirror: Option<&str>,
    progress: bool,
    limits: &Limits,
    mut log: impl FnMut(&str),
) -> crate::Result<(PathBuf, Vec<Outcome>)> {
    let target = dir.join(&spec.key);
    std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, "cannot create", e))?;
    let mut mirrors: Vec<String> = first_mirror
        .map(|m| {
            if m.ends_with('/') {
                m.to_string()
            } else {
                format!("{m}/")
            }
        })
        .into_iter()
        .collect();
    mirrors.extend(spec.mirrors.iter().cloned());
    let mut outcomes = Vec::new();
    for f in &spec.files {
        let dest = target.join(&f.name);
        if dest.is_file() && verify(&dest, f).is_ok() {
            log(&format!("{}: already there, checksum ok", dest.display()));
            outcomes.push(Outcome::AlreadyThere);
            continue;
        }
        let part = target.join(format!("{}.part", f.name));
        let mut failures = Vec::new();
        let mut done = None;
        for m in &mirrors {
            let url = format!("{m}{}", f.name);
            // A failed transfer keeps its .part for the next mirror or the next run (fetch
            // itself deletes it only when it went over the cap).
            if let Err(e) = fetch(&url, &part, f, limits, progress) {
                log(&e);
                failures.push(e);
                continue;
            }
            match verify(&part, f) {
                Ok(()) => {
                    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, "cannot rename into place", e))?;
                    log(&format!("{}: fetched from {url}, checksum ok", dest.display()));
                    done = Some(url);
                    break;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    let msg = format!("{url}: {}; the file was deleted", e.detail());
                    log(&msg);
                    failures.push(msg);
                }
            }
        }
        match done {
            Some(from) => outcomes.push(Outcome::Fetched { from }),
            None => {
                let kept = file_len(&part);
                let tail = if kept > 0 {
                    format!("; {kept} bytes are kept in {}: run again to resume", part.display())
                } else {
                    let _ = std::fs::remove_file(&part);
                    String::new()
                };
                return Err(Error::download(
                    &dest,
                    format!("could not be downloaded: {}{tail}", failures.join(" | ")),
                ));
            }
        }
    }
    Ok((target, outcomes))
}
