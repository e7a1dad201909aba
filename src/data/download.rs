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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::DataError;
use super::idx::{MAX_IDX_BYTES, open_maybe_gz};
use super::pickle::read_mnist_pickle;

/// One file of a dataset and how to check it.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    pub name: String,
    /// Published md5 of the .gz file.
    pub md5: Option<String>,
    /// sha256 of the decompressed content.
    pub sha256: Option<String>,
    /// Checked by parsing it as the tutorial's pickle instead.
    pub pickle: bool,
}

/// A downloadable dataset.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub key: String,
    pub mirrors: Vec<String>,
    pub files: Vec<RemoteFile>,
}

fn idx_files(sums: [(&str, &str, Option<&str>); 4]) -> Vec<RemoteFile> {
    sums.iter()
        .map(|(name, md5, sha)| RemoteFile {
            name: name.to_string(),
            md5: Some(md5.to_string()),
            sha256: sha.map(str::to_string),
            pickle: false,
        })
        .collect()
}

/// The datasets this command knows: `mnist`, `fashion-mnist`, `kmnist`, `tutorial-pickle`.
pub fn spec(key: &str) -> Option<DatasetSpec> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Some(match key {
        "mnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ]),
            files: idx_files([
                (
                    "train-images-idx3-ubyte.gz",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    Some("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                    Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
                ),
            ]),
        },
        "fashion-mnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ]),
            files: idx_files([
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", None),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", None),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", None),
            ]),
        },
        "kmnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            ]),
            files: idx_files([
                ("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7", None),
                ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344", None),
                ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7", None),
                ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134", None),
            ]),
        },
        "tutorial-pickle" => DatasetSpec {
            key: key.into(),
            mirrors: s(&["https://github.com/pytorch/tutorials/raw/main/_static/"]),
            files: vec![RemoteFile {
                name: "mnist.pkl.gz".into(),
                md5: None,
                sha256: None,
                pickle: true,
            }],
        },
        _ => return None,
    })
}

/// The class names of a dataset, where it has them (MNIST's classes are the digits).
pub fn class_names(key: &str) -> Vec<String> {
    let v: &[&str] = match key {
        "fashion-mnist" => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "kmnist" => &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// The cache directory: `dir`, else the platform's data directory + `mnist-cnn`.
pub fn cache_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("mnist-cnn"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a downloaded file is the expected one; the error says what does not match.
pub fn verify(path: &Path, f: &RemoteFile) -> Result<(), String> {
    if f.pickle {
        return read_mnist_pickle(path)
            .map(|_| ())
            .map_err(|e| format!("not the tutorial's pickle: {}", e.problem));
    }
    let raw = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let md5 = hex(&Md5::digest(&raw));
    if f.md5.as_deref() == Some(md5.as_str()) {
        return Ok(());
    }
    let mut detail = format!("md5 {md5}, expected {}", f.md5.as_deref().unwrap_or("-"));
    if let Some(want) = &f.sha256 {
        let sha = hex(&sha256_of_content(path)?);
        if &sha == want {
            return Ok(());
        }
        detail.push_str(&format!("; sha256 of the content {sha}, expected {want}"));
    }
    Err(format!("checksum mismatch ({detail})"))
}

/// The sha256 of a file's (inflated) content, streamed: memory stays small and a gzip bomb
/// stops after [`MAX_IDX_BYTES`].
fn sha256_of_content(path: &Path) -> Result<Vec<u8>, String> {
    let mut r = open_maybe_gz(path).map_err(|e| e.problem)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("corrupt gzip data: {e}")),
        };
        total += n;
        if total > MAX_IDX_BYTES {
            return Err(format!("content exceeds {MAX_IDX_BYTES} bytes (a gzip bomb?)"));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

/// Fetches `url` into `part`, resuming from what `part` already holds when the server allows.
fn fetch(url: &str, part: &Path, progress: bool) -> Result<(), String> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let resumed = match status {
        206 => true,
        200 => false,
        416 if have > 0 => return Ok(()), // nothing left to fetch: the .part is complete
        s => return Err(format!("{url}: HTTP {s}")),
    };
    let (_, body) = resp.into_parts();
    let total = body.content_length().map(|n| n + if resumed { have } else { 0 });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .map_err(|e| format!("{}: {e}", part.display()))?;
    let bar = progress.then(|| {
        let b = ProgressBar::new(total.unwrap_or(0));
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        b.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        b.set_position(if resumed { have } else { 0 });
        b
    });
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = file.write_all(&buf[..n]) {
                    break Err(format!("{}: {e}", part.display()));
                }
                if let Some(b) = &bar {
                    b.inc(n as u64);
                }
            }
            Err(e) => break Err(format!("{url}: transfer cut short ({e}); run again to resume")),
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = file.sync_all();
    result?;
    let got = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    match total {
        Some(t) if got != t => Err(format!("{url}: got {got} of {t} bytes; run again to resume")),
        _ => Ok(()),
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    AlreadyThere,
    Fetched { from: String },
}

/// Downloads every file of `spec` into `dir/<key>/`, trying `first_mirror` before the spec's.
/// Returns the dataset's directory and, per file, what happened; `log` hears each step.
pub fn download(
    spec: &DatasetSpec,
    dir: &Path,
    first_mirror: Option<&str>,
    progress: bool,
    mut log: impl FnMut(&str),
) -> Result<(PathBuf, Vec<Outcome>), DataError> {
    let target = dir.join(&spec.key);
    std::fs::create_dir_all(&target).map_err(|e| DataError::new(&target, format!("cannot create: {e}")))?;
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
            if let Err(e) = fetch(&url, &part, progress) {
                log(&e);
                failures.push(e);
                // A cut transfer keeps its .part for the next try; another failure starts over.
                if !failures.last().is_some_and(|e| e.contains("run again to resume")) {
                    let _ = std::fs::remove_file(&part);
                }
                continue;
            }
            match verify(&part, f) {
                Ok(()) => {
                    std::fs::rename(&part, &dest)
                        .map_err(|e| DataError::new(&dest, format!("cannot rename into place: {e}")))?;
                    log(&format!("{}: fetched from {url}, checksum ok", dest.display()));
                    done = Some(url);
                    break;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    let msg = format!("{url}: {e}; the file was deleted");
                    log(&msg);
                    failures.push(msg);
                }
            }
        }
        match done {
            Some(from) => outcomes.push(Outcome::Fetched { from }),
            None => {
                return Err(DataError::new(
                    &dest,
                    format!("could not be downloaded: {}", failures.join(" | ")),
                ));
            }
        }
    }
    Ok((target, outcomes))
}
