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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::DataError;
use super::idx::{open_maybe_gz, read_at_most};
use super::pickle::parse_mnist_pickle;

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
    /// The expected size of the file as served, in bytes: a transfer is stopped at
    /// [`RemoteFile::cap`], this plus a margin.
    pub size: u64,
    /// The most bytes its content may decompress to in the checksum step.
    pub content_max: u64,
}

impl RemoteFile {
    /// The most bytes a transfer of this file may bring: the expected size plus 1/8 plus 64 KiB
    /// (a mirror may re-compress the files; the bundled MNIST files are smaller than the
    /// published ones).
    pub fn cap(&self) -> u64 {
        self.size + self.size / 8 + 64 * 1024
    }
}

/// Time limits of one file's transfer. Defaults: 30 minutes per file, at least 16 KiB in every
/// 30 s (about 0.5 KiB/s). The command reads overrides from the environment
/// ([`Limits::from_env`]): `MNIST_CNN_DOWNLOAD_DEADLINE` (seconds), `MNIST_CNN_DOWNLOAD_WINDOW`
/// (seconds) and `MNIST_CNN_DOWNLOAD_MIN_BYTES`.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The whole transfer of one file from one mirror (connection, redirects, headers, body).
    pub deadline: Duration,
    /// The throughput window: fewer than `min_bytes` in a window stops the transfer, and so
    /// does a window without any byte.
    pub window: Duration,
    pub min_bytes: u64,
    /// How many redirects are followed (a loop ends there, in an error).
    pub redirects: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(30 * 60),
            window: Duration::from_secs(30),
            min_bytes: 16 * 1024,
            redirects: 5,
        }
    }
}

impl Limits {
    /// The defaults, with any of `MNIST_CNN_DOWNLOAD_DEADLINE`, `MNIST_CNN_DOWNLOAD_WINDOW`
    /// (seconds, fractions allowed) and `MNIST_CNN_DOWNLOAD_MIN_BYTES` that are set.
    pub fn from_env() -> Result<Limits, String> {
        let mut l = Limits::default();
        let secs = |var: &str| -> Result<Option<Duration>, String> {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                    .map(|s| Some(Duration::from_secs_f64(s)))
                    .ok_or_else(|| format!("{var}={v:?}: expected a positive number of seconds")),
                _ => Ok(None),
            }
        };
        if let Some(d) = secs("MNIST_CNN_DOWNLOAD_DEADLINE")? {
            l.deadline = d;
        }
        if let Some(d) = secs("MNIST_CNN_DOWNLOAD_WINDOW")? {
            l.window = d;
        }
        if let Ok(v) = std::env::var("MNIST_CNN_DOWNLOAD_MIN_BYTES")
            && !v.is_empty()
        {
            l.min_bytes = v
                .parse()
                .map_err(|_| format!("MNIST_CNN_DOWNLOAD_MIN_BYTES={v:?}: expected a number of bytes"))?;
        }
        Ok(l)
    }
}

/// A downloadable dataset.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub key: String,
    pub mirrors: Vec<String>,
    pub files: Vec<RemoteFile>,
}

/// Decompressed sizes of the four IDX files (the same in MNIST, Fashion-MNIST and KMNIST).
const IDX_CONTENT: [u64; 4] = [47_040_016, 60_008, 7_840_016, 10_008];

/// The four IDX files: (name, published md5, sha256 of the content, published .gz size).
fn idx_files(sums: [(&str, &str, Option<&str>, u64); 4]) -> Vec<RemoteFile> {
    sums.iter()
        .zip(IDX_CONTENT)
        .map(|((name, md5, sha, size), content)| RemoteFile {
            name: name.to_string(),
            md5: Some(md5.to_string()),
            sha256: sha.map(str::to_string),
            pickle: false,
            size: *size,
            content_max: content,
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
                    9_912_422,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                    28_881,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                    Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                    1_648_877,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
                    4_542,
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
                (
                    "train-images-idx3-ubyte.gz",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    None,
                    26_421_880,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    None,
                    29_515,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "bef4ecab320f06d8554ea6380940ec79",
                    None,
                    4_422_102,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    None,
                    5_148,
                ),
            ]),
        },
        "kmnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            ]),
            files: idx_files([
                (
                    "train-images-idx3-ubyte.gz",
                    "bdb82020997e1d708af4cf47b453dcf7",
                    None,
                    18_165_135,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "e144d726b3acfaa3e44228e80efcd344",
                    None,
                    29_497,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "5c965bf0a639b31b8f53240b1b52f4d7",
                    None,
                    3_041_136,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "7320c461ea6c1c855c0b718fb2a4b134",
                    None,
                    5_120,
                ),
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
                // Not pinned: the deeplearning.net pickle this file comes from is 16,168,813
                // bytes; 18 MiB is a generous round figure (the cap adds 1/8 more).
                size: 18 << 20,
                // 70,000 x 784 float32 pixels (219.5 MB) plus labels and pickle framing.
                content_max: 224 << 20,
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

/// Decompresses `raw` if it starts with the gzip magic, refusing to produce more than
/// `limit` bytes (a gzip bomb ends in an error, not in memory exhaustion).
pub fn gunzip_bounded(raw: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    read_at_most(flate2::read::MultiGzDecoder::new(raw), limit)
        .map_err(|e| format!("corrupt gzip data: {e}"))?
        .ok_or_else(|| format!("gzip data decompresses to more than {limit} bytes"))
}

/// Whether a downloaded file is the expected one; the error says what does not match.
pub fn verify(path: &Path, f: &RemoteFile) -> Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?.len();
    if len > f.cap() {
        return Err(format!("{len} bytes, more than the cap of {} for {}", f.cap(), f.name));
    }
    let raw = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if f.pickle {
        let content = gunzip_bounded(&raw, f.content_max)?;
        return parse_mnist_pickle(&content)
            .map(|_| ())
            .map_err(|e| format!("not the tutorial's pickle: {e}"));
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
    Err(format!("checksum mismatch ({detail})"))
}

/// The sha256 of a file's (inflated) content, streamed: memory stays small and a gzip bomb
/// stops after `limit` bytes.
fn sha256_of_content(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let mut r = open_maybe_gz(path).map_err(|e| e.problem)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("corrupt gzip data: {e}")),
        };
        total += n as u64;
        if total > limit {
            return Err(format!("content exceeds {limit} bytes (a gzip bomb?)"));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

/// Whether a body read failed on a timeout (ureq wraps its own timeouts in an io::Error).
fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Fetches `url` into `part`, resuming from what `part` already holds when the server allows,
/// within `f`'s size cap and `limits`. The `.part` is left as it is on every error but one: a
/// transfer over the cap deletes it (what it holds is not the file), and says so.
fn fetch(url: &str, part: &Path, f: &RemoteFile, limits: &Limits, progress: bool) -> Result<(), String> {
    let t0 = Instant::now();
    let cap = f.cap();
    let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have > cap {
        // Cannot be the file: start over.
        let _ = std::fs::remove_file(part);
        have = 0;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(limits.deadline.min(Duration::from_secs(20))))
        .timeout_per_read(Some(limits.window))
        .timeout_global(Some(limits.deadline))
        .max_redirects(limits.redirects)
        .http_status_as_error(false)
        .build()
        .into();
    let too_long = |e: &dyn std::fmt::Display| {
        if t0.elapsed() >= limits.deadline {
            format!(
                "{url}: not finished within the deadline of {} ({e})",
                secs(limits.deadline)
            )
        } else {
            format!("{url}: {e}")
        }
    };
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| too_long(&e))?;
    let status = resp.status().as_u16();
    let resumed = match status {
        206 => {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {have}-")) {
                return Err(format!(
                    "{url}: answered a request for bytes {have}- with Content-Range {range:?}"
                ));
            }
            true
        }
        200 => false,
        416 if have > 0 => return Ok(()), // nothing left to fetch: the .part is complete
        s => return Err(format!("{url}: HTTP {s}")),
    };
    let (_, body) = resp.into_parts();
    let start = if resumed { have } else { 0 };
    let total = body.content_length().map(|n| n.saturating_add(start));
    if let Some(t) = total.filter(|&t| t > cap) {
        return Err(format!(
            "{url}: announces {t} bytes, more than the cap of {cap} for {} (expected {} bytes)",
            f.name, f.size
        ));
    }
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
        b.set_position(start);
        b
    });
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = start;
    // The throughput window: when it started and how many bytes came in it.
    let (mut window_start, mut in_window) = (Instant::now(), 0u64);
    let result: Result<(), String> = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if t0.elapsed() >= limits.deadline => {
                break Err(format!(
                    "{url}: not finished within the deadline of {} ({got} bytes so far; {e})",
                    secs(limits.deadline)
                ));
            }
            Err(e) if is_timeout(&e) => {
                break Err(format!(
                    "{url}: no data for {} ({got} bytes so far; {e})",
                    secs(limits.window)
                ));
            }
            Err(e) => break Err(format!("{url}: transfer cut short after {got} bytes ({e})")),
        };
        got += n as u64;
        if got > cap {
            drop(file);
            let _ = std::fs::remove_file(part);
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return Err(format!(
                "{url}: sent more than the cap of {cap} bytes for {} (expected {} bytes); stopped, and the partial file was deleted",
                f.name, f.size
            ));
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(format!("{}: {e}", part.display()));
        }
        if let Some(b) = &bar {
            b.inc(n as u64);
        }
        in_window += n as u64;
        if t0.elapsed() >= limits.deadline {
            break Err(format!(
                "{url}: not finished within the deadline of {} ({got} bytes so far)",
                secs(limits.deadline)
            ));
        }
        if window_start.elapsed() >= limits.window {
            if in_window < limits.min_bytes {
                break Err(format!(
                    "{url}: too slow: {in_window} bytes in {}, below the minimum of {} bytes per {} ({got} bytes so far)",
                    secs(window_start.elapsed()),
                    limits.min_bytes,
                    secs(limits.window)
                ));
            }
            (window_start, in_window) = (Instant::now(), 0);
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = file.sync_all();
    result?;
    let got = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    match total {
        Some(t) if got != t => Err(format!("{url}: got {got} of {t} bytes")),
        _ => Ok(()),
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
) -> Result<(PathBuf, Vec<Outcome>), DataError> {
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
            // A failed transfer keeps its .part for the next mirror or the next run (fetch
            // itself deletes it only when it went over the cap).
            if let Err(e) = fetch(&url, &part, f, limits, progress) {
                log(&e);
                failures.push(e);
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
                let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                let tail = if kept > 0 {
                    format!("; {kept} bytes are kept in {}: run again to resume", part.display())
                } else {
                    let _ = std::fs::remove_file(&part);
                    String::new()
                };
                return Err(DataError::new(
                    &dest,
                    format!("could not be downloaded: {}{tail}", failures.join(" | ")),
                ));
            }
        }
    }
    Ok((target, outcomes))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(e, "gzip data decompresses to more than 10485760 bytes");
        assert_eq!(gunzip_bounded(&member, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(gunzip_bounded(b"plain", 1).unwrap(), b"plain");
    }

    #[test]
    fn every_file_has_a_cap_over_its_published_size() {
        for key in ["mnist", "fashion-mnist", "kmnist", "tutorial-pickle"] {
            for f in spec(key).unwrap().files {
                assert!(
                    f.size > 4000 && f.cap() > f.size && f.content_max >= f.size,
                    "{key}/{}",
                    f.name
                );
            }
        }
    }
}
