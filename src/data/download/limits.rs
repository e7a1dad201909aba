//! The time limits of one file's transfer ([`Limits`]): an overall deadline, a minimum
//! throughput per window and the redirects followed; defaults and environment overrides.

use std::time::Duration;

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
    pub fn from_env() -> crate::Result<Limits> {
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
        if let Some(d) = secs("MNIST_CNN_DOWNLOAD_DEADLINE").map_err(crate::Error::settings)? {
            l.deadline = d;
        }
        if let Some(d) = secs("MNIST_CNN_DOWNLOAD_WINDOW").map_err(crate::Error::settings)? {
            l.window = d;
        }
        if let Ok(v) = std::env::var("MNIST_CNN_DOWNLOAD_MIN_BYTES")
            && !v.is_empty()
        {
            l.min_bytes = v.parse().map_err(|_| {
                crate::Error::settings(format!(
                    "MNIST_CNN_DOWNLOAD_MIN_BYTES={v:?}: expected a number of bytes"
                ))
            })?;
        }
        Ok(l)
    }
}
