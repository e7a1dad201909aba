//! The library's error type: every public function that fails on its input (a file, a flag, a
//! checkpoint, a download) returns [`Error`], and the command prints it as one line
//! (`error: ...`).
//!
//! Each variant says what kind of thing went wrong; one about a file or directory names it
//! first (`data/mnist/train-images-idx3-ubyte: not found (nor with .gz)`). Functions that see
//! no file (a parser given bytes, a check of a state dict) return the variant without a path,
//! and their callers add it with [`Error::at`]. Panics stay for programming errors only.

use std::path::{Path, PathBuf};

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing, creating, listing, renaming or deleting `path` failed. `action` says
    /// which ("cannot read", "cannot create the directory", ...); the I/O error is the
    /// [`source`](std::error::Error::source) (and is shown in the message too).
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// Content that is wrong: an IDX, pickle, gzip, safetensors, image or metrics-log file (or
    /// the bytes of one, before they are tied to a file), a chart that cannot be drawn.
    #[error("{}{problem}", located(path))]
    Format { path: Option<PathBuf>, problem: String },
    /// A missing file or dataset: `what` says what was looked for, and how to get it.
    #[error("{}{what}", located(path))]
    NotFound { path: Option<PathBuf>, what: String },
    /// A tensor or image of the wrong shape.
    #[error("{}{problem}", located(path))]
    Shape { path: Option<PathBuf>, problem: String },
    /// An unknown model, a weights file that fits no registered model (or this one), a file of
    /// another model than the one asked for.
    #[error("{}{problem}", located(path))]
    Architecture { path: Option<PathBuf>, problem: String },
    /// A weights file or training checkpoint that cannot be used: no intact checkpoint, an
    /// optimizer state that does not fit, metadata or settings that are not valid, weights
    /// that are not finite.
    #[error("{}{problem}", located(path))]
    Checkpoint { path: Option<PathBuf>, problem: String },
    /// A setting that is not valid: a flag's value (learning rate, batch size, schedule, SIMD
    /// backend, thread count, an output path, ...) or an environment variable's.
    #[error("{}{problem}", located(path))]
    Settings { path: Option<PathBuf>, problem: String },
    /// A file that could not be downloaded from any mirror (`path` is where it was to go).
    #[error("{}: {problem}", path.display())]
    Download { path: PathBuf, problem: String },
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `"<path>: "`, or nothing without a path.
fn located(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or(String::new(), |p| format!("{}: ", p.display()))
}

impl Error {
    /// [`Error::Io`]: `action` ("cannot read", ...) on `path` failed with `source`.
    pub fn io(path: impl AsRef<Path>, action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            action: action.into(),
            source,
        }
    }

    /// [`Error::Format`]: the content of `path` is wrong.
    pub fn format(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Format {
            path: Some(path.as_ref().to_path_buf()),
            problem: problem.into(),
        }
    }

    /// [`Error::Format`] of bytes not tied to a file (see [`at`](Error::at)).
    pub fn format_problem(problem: impl Into<String>) -> Self {
        Error::Format {
            path: None,
            problem: problem.into(),
        }
    }

    /// [`Error::NotFound`]: `path` is missing; `what` says so ("not found (nor with .gz)").
    pub fn not_found(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        Error::NotFound {
            path: Some(path.as_ref().to_path_buf()),
            what: what.into(),
        }
    }

    /// [`Error::Shape`], not tied to a file (see [`at`](Error::at)).
    pub fn shape(problem: impl Into<String>) -> Self {
        Error::Shape {
            path: None,
            problem: problem.into(),
        }
    }

    /// [`Error::Architecture`], not tied to a file (see [`at`](Error::at)).
    pub fn architecture(problem: impl Into<String>) -> Self {
        Error::Architecture {
            path: None,
            problem: problem.into(),
        }
    }

    /// [`Error::Checkpoint`]: the weights file or checkpoint `path` cannot be used.
    pub fn checkpoint(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: Some(path.as_ref().to_path_buf()),
            problem: problem.into(),
        }
    }

    /// [`Error::Checkpoint`] of a state or metadata not tied to a file (see [`at`](Error::at)).
    pub fn checkpoint_problem(problem: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: None,
            problem: problem.into(),
        }
    }

    /// [`Error::Settings`], not tied to a path (see [`at`](Error::at)).
    pub fn settings(problem: impl Into<String>) -> Self {
        Error::Settings {
            path: None,
            problem: problem.into(),
        }
    }

    /// [`Error::Download`]: the file meant for `path` could not be fetched.
    pub fn download(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Download {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }

    /// The error located in `file`: one that names no path yet names this one (its message
    /// starts `<file>: `). One that names a path already is returned as it is.
    pub fn at(mut self, file: impl AsRef<Path>) -> Self {
        match &mut self {
            Error::Format { path, .. }
            | Error::NotFound { path, .. }
            | Error::Shape { path, .. }
            | Error::Architecture { path, .. }
            | Error::Checkpoint { path, .. }
            | Error::Settings { path, .. }
                if path.is_none() =>
            {
                *path = Some(file.as_ref().to_path_buf());
            }
            _ => {}
        }
        self
    }

    /// The file or directory the error is about, where it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } | Error::Download { path, .. } => Some(path),
            Error::Format { path, .. }
            | Error::NotFound { path, .. }
            | Error::Shape { path, .. }
            | Error::Architecture { path, .. }
            | Error::Checkpoint { path, .. }
            | Error::Settings { path, .. } => path.as_deref(),
        }
    }

    /// The error with `note` added at the end of its message (a hint, the model it was loaded
    /// as). An [`Io`](Error::Io) error, whose message ends with its source's, is returned as it
    /// is.
    pub fn note(mut self, note: &str) -> Self {
        match &mut self {
            Error::Io { .. } => {}
            Error::NotFound { what: m, .. }
            | Error::Format { problem: m, .. }
            | Error::Shape { problem: m, .. }
            | Error::Architecture { problem: m, .. }
            | Error::Checkpoint { problem: m, .. }
            | Error::Settings { problem: m, .. }
            | Error::Download { problem: m, .. } => m.push_str(note),
        }
        self
    }

    /// The message without the path in front (for a message that names the file another way).
    pub fn detail(&self) -> String {
        match self {
            Error::Io { action, source, .. } => format!("{action}: {source}"),
            Error::Format { problem, .. }
            | Error::Shape { problem, .. }
            | Error::Architecture { problem, .. }
            | Error::Checkpoint { problem, .. }
            | Error::Settings { problem, .. }
            | Error::Download { problem, .. } => problem.clone(),
            Error::NotFound { what, .. } => what.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn io_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "gone")
    }

    /// One of each variant, with and without a path where it may have one.
    fn examples() -> Vec<(Error, Option<&'static str>)> {
        vec![
            (Error::io("d/f", "cannot read", io_error()), Some("d/f")),
            (Error::format("x.idx", "truncated header"), Some("x.idx")),
            (Error::format_problem("not an IDX file"), None),
            (Error::not_found("d/train", "not found (nor with .gz)"), Some("d/train")),
            (
                Error::NotFound {
                    path: None,
                    what: "MNIST not found".into(),
                },
                None,
            ),
            (Error::shape("expected 28x28, got 3x4"), None),
            (
                Error::shape("tensor 'w' has shape [2]").at("m.safetensors"),
                Some("m.safetensors"),
            ),
            (Error::architecture("unknown model 'mlp'"), None),
            (
                Error::architecture("fits no model").at("w.safetensors"),
                Some("w.safetensors"),
            ),
            (Error::checkpoint("ck", "no intact checkpoint"), Some("ck")),
            (Error::checkpoint_problem("metadata lacks 'epoch'"), None),
            (Error::settings("--lr must be >= 0"), None),
            (
                Error::settings("the log's extension must be .jsonl or .csv").at("l.txt"),
                Some("l.txt"),
            ),
            (
                Error::download("cache/f.gz", "could not be downloaded: HTTP 404"),
                Some("cache/f.gz"),
            ),
        ]
    }

    #[test]
    fn each_variant_is_one_line_naming_its_path_first() {
        for (e, path) in examples() {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
            assert_eq!(e.path(), path.map(Path::new), "{s}");
            match path {
                Some(p) => assert_eq!(s, format!("{p}: {}", e.detail())),
                None => assert_eq!(s, e.detail()),
            }
        }
        assert_eq!(
            Error::io("d/f", "cannot read", io_error()).to_string(),
            "d/f: cannot read: gone"
        );
        assert_eq!(
            Error::format("x.idx", "truncated header").to_string(),
            "x.idx: truncated header"
        );
    }

    #[test]
    fn at_locates_only_errors_without_a_path() {
        let e = Error::format_problem("bad header").at("a.safetensors");
        assert_eq!(e.to_string(), "a.safetensors: bad header");
        // A path already there stays, and so does the variant.
        assert_eq!(e.at("b").to_string(), "a.safetensors: bad header");
        let e = Error::io("d", "cannot list", io_error()).at("c");
        assert_eq!(e.path(), Some(Path::new("d")));
        let e = Error::settings("--epochs 0 trains nothing").at("c");
        assert!(matches!(&e, Error::Settings { path: Some(p), .. } if p == Path::new("c")));
        let e = Error::checkpoint_problem("metadata lacks 'epoch'").at("ck");
        assert!(matches!(&e, Error::Checkpoint { path: Some(p), .. } if p == Path::new("ck")));
    }

    #[test]
    fn notes_go_at_the_end_of_the_message() {
        let e = Error::not_found("d/f", "not found").note(" (download it first)");
        assert_eq!(e.to_string(), "d/f: not found (download it first)");
        assert!(matches!(e, Error::NotFound { .. }));
        let e = Error::io("d/f", "cannot read", io_error()).note(" (ignored)");
        assert_eq!(e.to_string(), "d/f: cannot read: gone");
    }

    #[test]
    fn an_io_error_keeps_its_source() {
        let e = Error::io("d/f", "cannot write", io_error());
        let source = e.source().expect("an I/O error has a source");
        let io = source.downcast_ref::<std::io::Error>().expect("the io::Error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(Error::format("f", "x").source().is_none());
    }

    #[test]
    fn errors_cross_threads_and_box_into_dyn_error() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        let b: Box<dyn std::error::Error + Send + Sync> = Error::shape("s").into();
        assert_eq!(b.to_string(), "s");
    }
}
