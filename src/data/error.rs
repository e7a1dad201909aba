//! The error every data reader returns: the file and what is wrong with it.

use std::path::{Path, PathBuf};

/// A problem with a data file, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct DataError {
    pub path: PathBuf,
    pub problem: String,
}

impl DataError {
    pub fn new(path: &Path, problem: impl Into<String>) -> Self {
        DataError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}
