//! What the integration tests of `mnist-cnn serve` share: the real binary started on a free
//! port of 127.0.0.1, with the URL read from its first line of output.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// `mnist-cnn serve --addr 127.0.0.1:0 EXTRA...` with an empty runs directory (so the
    /// bundled model is used, whatever runs/ holds).
    pub fn start(extra: &[&str]) -> Server {
        let runs = std::env::temp_dir().join(format!("mnist-cnn-serve-test-no-runs-{}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .env("MNIST_CNN_RUNS_DIR", &runs)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        // Killed when dropped from here on, also if the checks below panic.
        let mut server = Server {
            child,
            url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("serving on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
        server.url = url;
        server
    }

    /// The URL of `path` on this server.
    #[allow(dead_code)] // not every test crate asks for one
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
