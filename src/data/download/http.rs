//! The HTTP client: one file's transfer from one mirror into its `.part`, resumed with a Range
//! request where the server allows, stopped at the file's size cap, the deadline or too low a
//! throughput, with a progress bar.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Limits, RemoteFile};

/// Whether a body read failed on a timeout (ureq wraps its own timeouts in an io::Error).
fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut || ureq_error(e).is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// Whether `e` is ureq's global timeout: the deadline, by ureq's clock. Its read timeouts can
/// end a moment before `fetch`'s own clock says the deadline passed (a read at 1.99 s of a 2 s
/// deadline failed so), so the reason counts, not only that clock.
fn is_deadline(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Timeout(ureq::Timeout::Global))
}

/// The ureq error inside an I/O error from a body read, if any.
fn ureq_error(e: &std::io::Error) -> Option<&ureq::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The length of a file, 0 when there is none.
pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Fetches `url` into `part`, resuming from what `part` already holds when the server allows,
/// within `f`'s size cap and `limits`. The `.part` is left as it is on every error but one: a
/// transfer over the cap deletes it (what it holds is not the file), and says so.
pub(super) fn fetch(url: &str, part: &Path, f: &RemoteFile, limits: &Limits, progress: bool) -> Result<(), String> {
    let t0 = Instant::now();
    let cap = f.cap();
    let mut have = file_len(part);
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
    let past_deadline = |detail: &dyn std::fmt::Display| {
        format!(
            "{url}: not finished within the deadline of {} ({detail})",
            secs(limits.deadline)
        )
    };
    // Past the deadline: by this function's clock, or by ureq's (its global timeout).
    let at_deadline = |e: Option<&ureq::Error>| t0.elapsed() >= limits.deadline || e.is_some_and(is_deadline);
    let too_long = |e: &ureq::Error| {
        if at_deadline(Some(e)) {
            past_deadline(e)
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
            Err(e) if at_deadline(ureq_error(&e)) => {
                break Err(past_deadline(&format_args!("{got} bytes so far; {e}")));
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
        if at_deadline(None) {
            break Err(past_deadline(&format_args!("{got} bytes so far")));
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
    let got = file_len(part);
    match total {
        Some(t) if got != t => Err(format!("{url}: got {got} of {t} bytes")),
        _ => Ok(()),
    }
}
