//! Fault injection for downloads: a local HTTP server on 127.0.0.1 (an ephemeral port, never
//! any other address) that lies about Content-Length both ways, ignores Range requests,
//! streams without end, drips, stalls, resets the connection mid-body and redirects in a loop.
//! Every case must end within a time bound, in a clear error naming the URL and the problem
//! (or, for an ignored Range, in the right file), leaving a resumable `.part` (a prefix of the
//! file) or nothing: never a wrong file under the final name.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnist_cnn::data::download::{DatasetSpec, Limits, RemoteFile, download_with};

/// How the server answers one path.
#[derive(Clone)]
enum Fault {
    /// Honest, with Range support.
    Ok,
    /// Content-Length says `extra` more bytes than are sent, then the connection closes.
    LongLength(usize),
    /// Content-Length says `less` fewer bytes than the file; the whole file follows.
    ShortLength(usize),
    /// A Range request gets 200 and the whole file.
    IgnoresRange,
    /// 200 without Content-Length, then bytes without end.
    Forever,
    /// 200 with a Content-Length of a terabyte, then bytes without end.
    HugeLength,
    /// 200 with the real length, then one byte per interval.
    Drip(Duration),
    /// 200 with the real length, 10 bytes, then silence.
    Stall,
    /// Steady but slow: `chunk` bytes per interval.
    Slow(usize, Duration),
    /// 200 with the real length, `n` bytes, then a TCP reset.
    Reset(usize),
    /// 302 to itself.
    RedirectLoop,
    /// 404.
    Missing,
}

const BOUND: Duration = Duration::from_secs(10);

fn body() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Reads the request head without consuming it (so that closing without reading it makes the
/// kernel send a reset); returns its length, the path and the Range start.
fn peek_request(s: &TcpStream) -> Option<(usize, String, u64)> {
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let n = s.peek(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let path = text.split_whitespace().nth(1)?.to_string();
            let from = text
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string))
                .and_then(|v| v.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            return Some((end + 4, path, from));
        }
        if n == 0 {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Writes `data` in pieces of `chunk` bytes, one every `interval`, over and over, until the
/// client goes away or the bound passes.
fn stream(s: &mut TcpStream, data: &[u8], chunk: usize, interval: Duration) {
    let t0 = Instant::now();
    let mut pieces = data.chunks(chunk).cycle();
    while t0.elapsed() < BOUND {
        if s.write_all(pieces.next().unwrap()).is_err() {
            return;
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
}

fn handle(mut s: TcpStream, faults: &Mutex<Vec<(String, Fault)>>, log: &Mutex<Vec<String>>) {
    let Some((len, path, from)) = peek_request(&s) else {
        return;
    };
    log.lock().unwrap().push(format!("{path} from {from}"));
    let fault = faults
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, f)| f.clone())
        .unwrap_or(Fault::Missing);
    let body = body();
    if !matches!(fault, Fault::Reset(_)) {
        let mut head = vec![0u8; len];
        if s.read_exact(&mut head).is_err() {
            return;
        }
    }
    let ok = |cl: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\nConnection: close\r\n\r\n");
    let _ = match fault {
        Fault::Ok if from > 0 && (from as usize) < body.len() => {
            let from = from as usize;
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len() - from,
                body.len() - 1,
                body.len()
            );
            s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body[from..]))
        }
        Fault::Ok | Fault::IgnoresRange => s.write_all(ok(body.len()).as_bytes()).and_then(|_| s.write_all(&body)),
        Fault::LongLength(extra) => s
            .write_all(ok(body.len() + extra).as_bytes())
            .and_then(|_| s.write_all(&body)),
        Fault::ShortLength(less) => s
            .write_all(ok(body.len() - less).as_bytes())
            .and_then(|_| s.write_all(&body)),
        Fault::Forever => s
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .map(|_| stream(&mut s, &[7u8; 16 * 1024], 16 * 1024, Duration::ZERO)),
        Fault::HugeLength => s
            .write_all(ok(1 << 40).as_bytes())
            .map(|_| stream(&mut s, &[7u8; 16 * 1024], 16 * 1024, Duration::ZERO)),
        Fault::Drip(interval) => s
            .write_all(ok(body.len()).as_bytes())
            .map(|_| stream(&mut s, &body, 1, interval)),
        Fault::Stall => s.write_all(ok(body.len()).as_bytes()).and_then(|_| {
            s.write_all(&body[..10])?;
            std::thread::sleep(BOUND);
            Ok(())
        }),
        Fault::Slow(chunk, interval) => s
            .write_all(ok(body.len()).as_bytes())
            .map(|_| stream(&mut s, &body, chunk, interval)),
        Fault::Reset(n) => s.write_all(ok(body.len()).as_bytes()).and_then(|_| {
            s.write_all(&body[..n])?;
            s.flush()?;
            std::thread::sleep(Duration::from_millis(50));
            Ok(()) // dropped with the request unread: the kernel sends RST
        }),
        Fault::RedirectLoop => s.write_all(
            format!("HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Fault::Missing => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}

struct Server {
    port: u16,
    faults: Arc<Mutex<Vec<(String, Fault)>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Accepts for at most 60 s; one thread per connection, each bounded by [`BOUND`].
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let faults: Arc<Mutex<Vec<(String, Fault)>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, l) = (faults.clone(), log.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let (f, l) = (f.clone(), l.clone());
                std::thread::spawn(move || handle(s, &f, &l));
            }
        });
        Server { port, faults, log }
    }
    fn serve(&self, path: &str, fault: Fault) {
        let mut f = self.faults.lock().unwrap();
        f.retain(|(p, _)| p != path);
        f.push((path.to_string(), fault));
    }
    fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}{prefix}", self.port)
    }
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn spec(mirrors: Vec<String>) -> DatasetSpec {
    DatasetSpec {
        key: "faults".into(),
        mirrors,
        files: vec![RemoteFile {
            name: "f.gz".into(),
            md5: Some(md5_hex(&body())),
            sha256: None,
            pickle: false,
            size: body().len() as u64,
            content_max: 1 << 20,
        }],
    }
}

/// Small limits so that every case ends in well under a second or two.
fn limits() -> Limits {
    Limits {
        deadline: Duration::from_secs(2),
        window: Duration::from_millis(300),
        min_bytes: 4096,
        redirects: 5,
    }
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What is left: nothing, or a `.part` that is a prefix of the file (resumable); never a final
/// file that is not the file. Returns the .part's length, if any.
fn left_behind(dir: &Path) -> Option<usize> {
    let d = dir.join("faults");
    assert!(!d.join("f.gz").exists(), "no file under the final name");
    let part = std::fs::read(d.join("f.gz.part")).ok()?;
    assert!(
        body().starts_with(&part),
        "the .part ({} bytes) is a prefix of the file",
        part.len()
    );
    Some(part.len())
}

/// Runs one download against `fault`, checks it fails within `bound` with an error containing
/// every one of `want`, and returns the error, the time it took and the .part left.
fn fails(tag: &str, fault: Fault, want: &[&str], bound: Duration) -> (String, Duration, Option<usize>) {
    let server = Server::start();
    server.serve("/m/f.gz", fault);
    let dir = tmp(tag);
    let t0 = Instant::now();
    let e = download_with(&spec(vec![server.url("/m/")]), &dir, None, false, &limits(), |_| {})
        .unwrap_err()
        .to_string();
    let took = t0.elapsed();
    eprintln!("{tag}: {took:.2?}: {e}");
    assert!(took < bound, "{tag}: took {took:?}, over {bound:?}: {e}");
    assert!(
        e.contains("f.gz") && e.contains(&server.url("/m/f.gz")),
        "{tag}: names the file and URL: {e}"
    );
    for w in want {
        assert!(e.contains(w), "{tag}: {e:?} should say {w:?}");
    }
    let part = left_behind(&dir);
    if part.is_some() {
        assert!(e.contains("run again to resume"), "{tag}: {e}");
    } else {
        assert!(!e.contains("run again to resume"), "{tag}: no .part, no promise: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    (e, took, part)
}

#[test]
fn content_length_too_long_keeps_a_resumable_part() {
    let (_, _, part) = fails("long", Fault::LongLength(5000), &["200000"], Duration::from_secs(3));
    assert_eq!(part, Some(200_000), "everything that came is kept");
}

#[test]
fn content_length_too_short_is_a_checksum_mismatch_and_nothing_is_left() {
    let (_, _, part) = fails(
        "short",
        Fault::ShortLength(5000),
        &["checksum mismatch", "the file was deleted"],
        Duration::from_secs(3),
    );
    assert_eq!(part, None);
}

#[test]
fn a_server_that_streams_without_end_stops_at_the_cap() {
    let (_, _, part) = fails(
        "forever",
        Fault::Forever,
        &["more than the cap of 290536 bytes", "the partial file was deleted"],
        Duration::from_secs(3),
    );
    assert_eq!(part, None);
}

#[test]
fn an_announced_length_over_the_cap_is_refused_before_reading() {
    let (_, _, part) = fails(
        "huge",
        Fault::HugeLength,
        &["announces 1099511627776 bytes, more than the cap of 290536"],
        Duration::from_secs(3),
    );
    assert_eq!(part, None);
}

#[test]
fn a_drip_ends_on_the_throughput_check() {
    // 1 byte per 20 ms against a minimum of 4096 bytes per 0.3 s.
    let (_, took, part) = fails(
        "drip",
        Fault::Drip(Duration::from_millis(20)),
        &["too slow", "below the minimum of 4096 bytes per 0.3s"],
        Duration::from_secs(2),
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(part.is_some_and(|n| n > 0));
}

#[test]
fn a_stall_ends_on_the_read_timeout() {
    let (_, _, part) = fails("stall", Fault::Stall, &["no data for 0.3s"], Duration::from_secs(2));
    assert_eq!(part, Some(10));
}

#[test]
fn steady_but_slow_ends_at_the_deadline() {
    // 4 KiB per 50 ms passes the throughput check (80 KiB/s) but 200 KB needs 2.4 s > 2 s.
    let (_, took, part) = fails(
        "slow",
        Fault::Slow(4096, Duration::from_millis(50)),
        &["not finished within the deadline of 2.0s"],
        Duration::from_secs(4),
    );
    // The deadline ends a socket read whose timeout the kernel counts in ticks, which can end
    // up to a tick (10 ms at 100 Hz) early: one run failed at 1.99 s, then called a stall.
    assert!(took >= Duration::from_millis(1980), "{took:?}");
    assert!(part.is_some_and(|n| n > 0 && n < 200_000));
}

#[test]
fn a_reset_mid_body_keeps_a_resumable_part() {
    let (e, _, part) = fails(
        "reset",
        Fault::Reset(50_000),
        &["transfer cut short"],
        Duration::from_secs(3),
    );
    // What arrived before the reset is kept (the kernel may drop some of it on a reset).
    assert!(part.is_some_and(|n| n <= 50_000), "{e}");
}

#[test]
fn a_redirect_loop_ends() {
    let (_, _, part) = fails("redirect", Fault::RedirectLoop, &["redirect"], Duration::from_secs(3));
    assert_eq!(part, None);
}

#[test]
fn a_server_that_ignores_range_gives_the_whole_file_again() {
    let server = Server::start();
    server.serve("/m/f.gz", Fault::IgnoresRange);
    let dir = tmp("norange");
    std::fs::create_dir_all(dir.join("faults")).unwrap();
    std::fs::write(dir.join("faults/f.gz.part"), &body()[..70_000]).unwrap();
    let t0 = Instant::now();
    download_with(&spec(vec![server.url("/m/")]), &dir, None, false, &limits(), |_| {}).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(
        server.requests(),
        vec!["/m/f.gz from 70000"],
        "a Range request was made"
    );
    assert_eq!(
        std::fs::read(dir.join("faults/f.gz")).unwrap(),
        body(),
        "not 70000 bytes twice"
    );
    assert!(!dir.join("faults/f.gz.part").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 8: a later mirror that fails for an unrelated reason (404, a redirect loop) must not
/// delete the `.part` an earlier mirror left; the next run resumes it.
#[test]
fn a_later_mirror_failing_keeps_the_part_and_the_next_run_resumes_it() {
    let server = Server::start();
    server.serve("/a/f.gz", Fault::Reset(60_000));
    server.serve("/c/f.gz", Fault::RedirectLoop); // and /b/ answers 404
    let dir = tmp("mirror8");
    let s = spec(vec![server.url("/a/"), server.url("/b/"), server.url("/c/")]);
    let e = download_with(&s, &dir, None, false, &limits(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("/b/f.gz: HTTP 404") && e.contains("redirect"), "{e}");
    let kept = left_behind(&dir).expect("the .part is kept");
    assert!(
        e.contains(&format!("{kept} bytes are kept in")) && e.contains("run again to resume"),
        "{e}"
    );
    if kept > 0 {
        // The next run resumes it from the first mirror, now honest.
        server.serve("/a/f.gz", Fault::Ok);
        download_with(&s, &dir, None, false, &limits(), |_| {}).unwrap();
        assert_eq!(std::fs::read(dir.join("faults/f.gz")).unwrap(), body());
        assert!(server.requests().contains(&format!("/a/f.gz from {kept}")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The command itself, with the limits from the environment: a drip on the first mirror of
/// `download tutorial-pickle` ends in one line naming the URL and the problem, in bounded time.
#[test]
fn the_command_reads_its_limits_from_the_environment() {
    let server = Server::start();
    server.serve("/m/mnist.pkl.gz", Fault::Drip(Duration::from_millis(20)));
    let dir = tmp("cli");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["download", "tutorial-pickle", "--quiet", "--dir", dir.to_str().unwrap()])
        .args(["--mirror", &server.url("/m/")])
        .env("MNIST_CNN_DOWNLOAD_WINDOW", "0.3")
        .env("MNIST_CNN_DOWNLOAD_MIN_BYTES", "4096")
        .env("MNIST_CNN_DOWNLOAD_DEADLINE", "2")
        // The spec's one public mirror comes after the local one: unreachable in a sandbox,
        // it fails fast or at the 2 s deadline; the test looks at the first line.
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{took:.2?}\n{err}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.contains(&server.url("/m/mnist.pkl.gz")) && first.contains("too slow"),
        "{first}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["download", "tutorial-pickle", "--dir", dir.to_str().unwrap()])
        .env("MNIST_CNN_DOWNLOAD_WINDOW", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("MNIST_CNN_DOWNLOAD_WINDOW=\"soon\": expected a positive number of seconds"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
