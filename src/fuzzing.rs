//! Entry points for fuzzing every reader that takes outside bytes: the cargo-fuzz targets in
//! `fuzz/` call these, and so do the stable tests that replay the committed corpora and crash
//! inputs (`tests/fuzz_corpora.rs`) and mutate valid files (`tests/fuzz_mutations.rs`).
//!
//! Each function feeds `data` to one reader the way the program does and returns what the
//! reader said: `Ok` when it accepted the input, else its error's message (the
//! [`Error`](crate::Error) as the command prints it: the tests check that it says something). None may panic, hang
//! or take unbounded memory, whatever `data` holds (the gzip target also checks that two
//! inflaters agree, and panics if they do not: that is a finding too). The readers that only
//! take a path get the bytes through a file in a per-process temporary directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint::{TensorFile, load_state_dict, position};
use crate::data::download::{DatasetSpec, Limits, RemoteFile, download_with, gunzip_bounded};
use crate::data::idx::parse_idx;
use crate::data::pickle::parse_mnist_pickle;

/// One fuzz target: the bytes in, what the reader said out.
pub type Target = fn(&[u8]) -> Result<(), String>;

/// The fuzz targets, by name: the names of `fuzz/fuzz_targets/*.rs` and of the corpus
/// directories `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, Target); 7] = [
    ("idx", idx),
    ("gzip", gzip),
    ("pickle", pickle),
    ("safetensors", safetensors),
    ("image", image),
    ("metrics_log", metrics_log),
    ("http_response", http_response),
];

/// The most bytes the gzip target inflates (the IDX reader's own bound applies on top).
const GZIP_LIMIT: u64 = 64 << 20;

/// This thread's fuzzing directory (temporary files of the path-based readers).
fn temp_dir() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_alphanumeric).collect();
    std::env::temp_dir().join(format!("mnist-cnn-fuzz-{}-{thread}", std::process::id()))
}

/// Removes this thread's temporary files (for tests, once they are done).
pub fn remove_temp_files() {
    let _ = std::fs::remove_dir_all(temp_dir());
}

/// A file holding `data` in this thread's fuzzing directory, named with `ext`, one per
/// extension (reused, so nothing accumulates).
fn temp_file(ext: &str, data: &[u8]) -> Result<PathBuf, String> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// IDX bytes (decompressed), as `train --data-dir` reads them.
pub fn idx(data: &[u8]) -> Result<(), String> {
    parse_idx(data.to_vec(), Path::new("fuzz.idx"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A gzip file, read as an IDX file the way `train --data-dir` does (inflation bounded by the
/// header), and inflated with the bound of `download`'s checksum step; what the IDX reader
/// accepts, the bounded inflater must inflate to the same bytes.
pub fn gzip(data: &[u8]) -> Result<(), String> {
    let path = temp_file("gz", data)?;
    let read = crate::data::idx::read_idx(&path).map_err(|e| e.to_string());
    let inflated = gunzip_bounded(data, GZIP_LIMIT);
    // The oracle: a disagreement is a bug in one of the two, so it panics (a fuzzer finding).
    if let Ok(a) = &read {
        match inflated {
            Ok(content) => {
                let b = parse_idx(content, &path).map_err(|e| e.to_string());
                assert_eq!(b.as_ref(), Ok(a), "the two inflations of an accepted file differ");
            }
            Err(e) => assert!(
                e.to_string().starts_with("gzip data decompresses to more than"),
                "the IDX reader accepted what the bounded inflater calls {e:?}"
            ),
        }
    }
    read.map(|_| ())
}

/// The tutorial's pickle, decompressed (`--format pickle`, `download tutorial-pickle`).
pub fn pickle(data: &[u8]) -> Result<(), String> {
    parse_mnist_pickle(data).map(|_| ()).map_err(|e| e.to_string())
}

/// A safetensors weights file or training checkpoint: parsed, its architecture found, its
/// tensors loaded into the model, and its position read, as `eval`, `predict` and
/// `train --resume` do.
pub fn safetensors(data: &[u8]) -> Result<(), String> {
    let load = || -> crate::Result<()> {
        let file = TensorFile::parse(data)?;
        let _ = position(&file.metadata);
        let arch = file.architecture()?;
        let model = arch.build(&mut crate::rng::Rng::new(0));
        load_state_dict(model.as_ref(), &file)
    };
    load().map_err(|e| e.to_string())
}

/// An image file (`predict`): decoded to gray within the decoder's limits, then prepared
/// MNIST-style and as it is.
pub fn image(data: &[u8]) -> Result<(), String> {
    let img = crate::predict::decode_gray(data).map_err(|e| e.to_string())?;
    let _ = crate::predict::as_is(&img);
    crate::predict::preprocess(&img).map(|_| ()).map_err(|e| e.to_string())
}

/// A metrics log (`plot`): parsed both as JSON lines and as CSV; what parses is drawn (SVG,
/// into a temporary file), since drawing is where a non-finite value once made `plot` spin.
pub fn metrics_log(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Ok(());
    for csv in [false, true] {
        match crate::plot::parse_log(text, csv, "fuzz".into()) {
            Ok(curve) => {
                let path = temp_file("svg", b"")?;
                crate::plot::plot_curves(&[curve], &path).map_err(|e| e.to_string())?;
            }
            Err(e) => out = Err(e.to_string()),
        }
    }
    out
}

/// The most time one HTTP exchange may take in the fuzz target.
const HTTP_DEADLINE: Duration = Duration::from_millis(1500);

/// A raw HTTP response: served once by a listener on 127.0.0.1 (an ephemeral port) to
/// `download`, which writes the file into a temporary directory. Redirects are not followed
/// (a fuzzed Location must not send the client anywhere else).
pub fn http_response(data: &[u8]) -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let response = data.to_vec();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if t0.elapsed() < HTTP_DEADLINE => std::thread::sleep(Duration::from_micros(100)),
                Err(_) => return,
            }
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(HTTP_DEADLINE));
        // Read the request head, then answer and close.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(&response);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Let the client read everything before the socket closes.
        let _ = s.read(&mut buf);
    });
    let body = b"the file";
    let spec = DatasetSpec {
        key: "http".into(),
        mirrors: vec![format!("http://127.0.0.1:{port}/")],
        files: vec![RemoteFile {
            name: "f.gz".into(),
            md5: Some("9144da26b6b58c823799dd4a8a884f26".into()),
            sha256: Some("0".repeat(64)),
            pickle: false,
            size: body.len() as u64,
            content_max: 1 << 20,
        }],
    };
    let dir = temp_file("d", b"").map(|p| p.with_extension("dir"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let limits = Limits {
        deadline: HTTP_DEADLINE,
        window: Duration::from_millis(500),
        min_bytes: 1,
        redirects: 0,
    };
    let result = download_with(&spec, &dir, None, false, &limits, |_| {});
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|_| ()).map_err(|e| e.to_string())
}
