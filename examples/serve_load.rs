//! A load client for HTTP prediction servers on 127.0.0.1 (bench/serve_load.sh runs it against
//! `mnist-cnn serve` and bench/reference_server.py): C keep-alive connections post the same
//! `POST /api/predict` for S seconds, and it prints one line with the requests answered (status
//! 200), the throughput, the latency's p50 and p99 (of the answered requests, from writing the
//! request to the end of the response's body), and the errors: statuses other than 200 (503s,
//! the server shedding load, counted apart), connection failures (a refused connect, a reset,
//! a connection closed before the whole response came) and requests still unanswered
//! [`GRACE`] after the S seconds. On Linux the line ends with the client's own CPU time per
//! answered request (its thread's time on a CPU, from `/proc/thread-self/schedstat`), for
//! `bench/serve_load.sh`'s account of where a request's CPU goes when client and server share
//! the cores.
//!
//! `cargo run --release --example serve_load -- URL CONNECTIONS SECONDS [IMAGE] [--max-requests N]`:
//! without IMAGE, the body is the first MNIST test image as JSON pixels (data/mnist); with it,
//! the image file's bytes (`application/octet-stream`, sniffed by the server). With
//! `--max-requests N`, at most N requests are sent in all.
//!
//! The client is lean so that it takes little from the server it measures on a small machine:
//! one tokio task per connection on a single-threaded runtime (one core at most), raw HTTP/1.1
//! over `TcpStream` (the request bytes built once; the response's head parsed for the status,
//! `Content-Length`, chunked encoding and `Connection: close`). A closed connection is opened
//! again. Only 127.0.0.1 (or `localhost`) is a valid target: this is a load generator.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/pixels_body.rs"]
mod pixels_body;
use pixels_body::mnist_pixels_json;
use tokio::net::TcpStream;
use tokio::time::timeout_at;

/// How long requests in flight at the end of the S seconds may still take; past that they are
/// counted as timed out and their connections dropped.
const GRACE: Duration = Duration::from_secs(10);
/// The largest response head read (a longer one is a protocol error).
const MAX_HEAD: usize = 64 << 10;
/// Bytes asked for by each read.
const READ_CHUNK: usize = 4096;
/// Pause after a failed connect before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    conns: usize,
    secs: f64,
    image: Option<String>,
    max_requests: Option<u64>,
}

/// What one connection saw.
#[derive(Default)]
struct Stats {
    /// Latencies of the answered (200) requests, seconds.
    lat: Vec<f64>,
    /// Statuses other than 200 and 503.
    other_status: u64,
    /// 503s: the server shedding load.
    shed: u64,
    /// Failed connects, and connections that failed or closed during a request.
    conn_fail: u64,
    /// Requests unanswered at the end of the grace period.
    timed_out: u64,
}

fn usage() -> ! {
    eprintln!("usage: serve_load URL CONNECTIONS SECONDS [IMAGE] [--max-requests N]   (URL: http://127.0.0.1:PORT)");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut pos = Vec::new();
    let mut max_requests = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--max-requests" {
            let n = it.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage());
            max_requests = Some(n);
        } else {
            pos.push(a);
        }
    }
    if !(3..=4).contains(&pos.len()) {
        usage();
    }
    let (addr, host, path) = parse_target(&pos[0]).unwrap_or_else(|e| {
        eprintln!("serve_load: {e}");
        std::process::exit(2)
    });
    let conns: usize = pos[1].parse().ok().filter(|&c| c > 0).unwrap_or_else(|| usage());
    let secs: f64 = pos[2]
        .parse()
        .ok()
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or_else(|| usage());
    Args {
        addr,
        host,
        path,
        conns,
        secs,
        image: pos.get(3).cloned(),
        max_requests,
    }
}

/// The address, the `Host` header and the request path of `http://127.0.0.1:PORT[/base]`
/// (`localhost` too); any other host is refused.
fn parse_target(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("the URL must start with http:// (got {url:?})"))?;
    let (hostport, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
    if host != "127.0.0.1" && host != "localhost" {
        return Err(format!(
            "refusing to load {host:?}: only 127.0.0.1 (or localhost) is a valid target"
        ));
    }
    let port: u16 = port.parse().map_err(|_| format!("bad port in {url:?}"))?;
    Ok((
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        hostport.to_string(),
        format!("{}/api/predict", base.trim_end_matches('/')),
    ))
}

fn main() {
    let a = parse_args();
    let (body, kind, content_type) = match &a.image {
        Some(img) => (
            std::fs::read(img).unwrap_or_else(|e| {
                eprintln!("serve_load: cannot read {img}: {e}");
                std::process::exit(2)
            }),
            "image",
            "application/octet-stream",
        ),
        None => (mnist_pixels_json(), "json", "application/json"),
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        a.path,
        a.host,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let req: Arc<[u8]> = req.into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cpu_ns_at_start = thread_cpu_ns();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.secs);
    let budget = a.max_requests.map(|n| Arc::new(AtomicU64::new(n)));
    let all = rt.block_on(async {
        let tasks: Vec<_> = (0..a.conns)
            .map(|_| tokio::spawn(connection(a.addr, req.clone(), deadline, budget.clone())))
            .collect();
        let mut all = Stats::default();
        for t in tasks {
            let s = t.await.expect("a connection task");
            all.lat.extend(s.lat);
            all.other_status += s.other_status;
            all.shed += s.shed;
            all.conn_fail += s.conn_fail;
            all.timed_out += s.timed_out;
        }
        all
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut lat = all.lat;
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            1e3 * lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    let errors = all.other_status + all.shed + all.conn_fail + all.timed_out;
    // The runtime is single-threaded: this thread did all of the client's work.
    let client_cpu = match (cpu_ns_at_start, thread_cpu_ns()) {
        (Some(a), Some(b)) if !lat.is_empty() => {
            format!(
                ", client CPU {:.1} us a request",
                (b - a) as f64 / 1e3 / lat.len() as f64
            )
        }
        _ => String::new(),
    };
    println!(
        "{kind} body, {} connections, {wall:.1} s: {} answered, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, \
         {errors} errors ({} 503, {} other status, {} connection, {} timed out){client_cpu}",
        a.conns,
        lat.len(),
        lat.len() as f64 / wall,
        pct(0.5),
        pct(0.99),
        all.shed,
        all.other_status,
        all.conn_fail,
        all.timed_out,
    );
}

/// This thread's time on a CPU so far, in nanoseconds (user and kernel; the first field of
/// `/proc/thread-self/schedstat`), where Linux tells it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// One keep-alive connection's loop: requests one after the other until the deadline (or the
/// shared request budget runs out), opening the connection again when it closes.
async fn connection(addr: SocketAddr, req: Arc<[u8]>, deadline: Instant, budget: Option<Arc<AtomicU64>>) -> Stats {
    let hard_stop = tokio::time::Instant::from_std(deadline + GRACE);
    let mut st = Stats::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        if let Some(b) = &budget
            && b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match timeout_at(hard_stop, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(Conn {
                        s,
                        buf: Vec::with_capacity(1024),
                    })
                }
                Ok(Err(e)) => {
                    if e.raw_os_error() == Some(24) {
                        eprintln!(
                            "serve_load: out of file descriptors (EMFILE): raise `ulimit -n` above the connections"
                        );
                        std::process::exit(1);
                    }
                    st.conn_fail += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    st.timed_out += 1;
                    break;
                }
            },
        };
        let t = Instant::now();
        match timeout_at(hard_stop, c.exchange(&req)).await {
            Ok(Ok((status, keep_alive))) => {
                match status {
                    200 => st.lat.push(t.elapsed().as_secs_f64()),
                    503 => st.shed += 1,
                    _ => st.other_status += 1,
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Ok(Err(_)) => {
                st.conn_fail += 1;
                conn = None;
            }
            Err(_) => {
                st.timed_out += 1;
                break;
            }
        }
    }
    st
}

/// A connection and the bytes read from it not yet used.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    /// Reads more bytes into `buf`; the end of the stream is an error (a response is due).
    /// (Readiness and `try_read`: tokio's `io-util` is not among the features built.)
    async fn fill(&mut self) -> io::Result<()> {
        loop {
            self.s.readable().await?;
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let r = self.s.try_read(&mut self.buf[len..]);
            self.buf.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `bytes`.
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.s.writable().await?;
            match self.s.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends the request and reads the whole response: its status, and whether the connection
    /// stays open.
    async fn exchange(&mut self, req: &[u8]) -> io::Result<(u16, bool)> {
        self.write_all(req).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too long"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("response head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split(' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut keep_alive = version == "HTTP/1.1";
        let (mut length, mut chunked) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                keep_alive = if v.contains("close") {
                    false
                } else {
                    keep_alive || v.contains("keep-alive")
                };
            }
        }
        let end = if chunked {
            self.chunked_end(head_end).await?
        } else if let Some(n) = length {
            while self.buf.len() < head_end + n {
                self.fill().await?;
            }
            head_end + n
        } else {
            // No length: the body runs to the end of the stream.
            while self.fill().await.is_ok() {}
            keep_alive = false;
            self.buf.len()
        };
        self.buf.drain(..end);
        Ok((status, keep_alive))
    }

    /// Where a chunked body that starts at `at` ends (after its trailers).
    async fn chunked_end(&mut self, mut at: usize) -> io::Result<usize> {
        loop {
            let line_end = loop {
                if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, each a line, then an empty line.
                loop {
                    let e = loop {
                        if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                            break at + i;
                        }
                        self.fill().await?;
                    };
                    let empty = e == at;
                    at = e + 2;
                    if empty {
                        return Ok(at);
                    }
                }
            }
            while self.buf.len() < at + size + 2 {
                self.fill().await?;
            }
            at += size + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Reads one request (head and Content-Length body) from a test server's connection;
    /// false at the end of the stream.
    fn read_request(s: &mut std::net::TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= i + 4 + len {
                    return true;
                }
            }
            match s.read(&mut b) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
    }

    #[test]
    fn only_loopback_targets() {
        let (addr, host, path) = parse_target("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (8080, "127.0.0.1:8080", "/api/predict")
        );
        assert_eq!(parse_target("http://localhost:9/x/").unwrap().2, "/x/api/predict");
        assert!(parse_target("http://10.0.0.1:8080").is_err());
        assert!(parse_target("http://example.com").is_err());
        assert!(parse_target("http://127.0.0.1.example.com:80").is_err());
        assert!(parse_target("https://127.0.0.1:443").is_err());
    }

    /// Content-Length, chunked (split across writes, with a trailer) and `Connection: close`
    /// responses on one connection: each is read whole, and nothing is left over.
    #[test]
    fn reads_length_chunked_and_close_responses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            assert!(read_request(&mut s));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            assert!(read_request(&mut s));
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbu")
                .unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"sy\r\na;ext=1\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n")
                .unwrap();
            assert!(read_request(&mut s));
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
                .unwrap();
        });
        runtime().block_on(async {
            let mut c = Conn {
                s: TcpStream::connect(addr).await.unwrap(),
                buf: Vec::new(),
            };
            let req = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
            assert_eq!(c.exchange(req).await.unwrap(), (200, true));
            assert!(c.buf.is_empty());
            assert_eq!(c.exchange(req).await.unwrap(), (503, true));
            assert!(c.buf.is_empty(), "left over: {:?}", String::from_utf8_lossy(&c.buf));
            assert_eq!(c.exchange(req).await.unwrap(), (404, false));
            assert!(c.buf.is_empty());
        });
        server.join().unwrap();
    }

    /// A server that answers one request per connection and closes it, 200 and 503 in turn:
    /// the loop reconnects, counts the 503s apart, stops at the request budget, and a server
    /// closing without an answer is a connection failure.
    #[test]
    fn connection_loop_reconnects_and_counts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for i in 0..5 {
                let (mut s, _) = listener.accept().unwrap();
                if !read_request(&mut s) {
                    continue;
                }
                let r: &[u8] = match i {
                    0 | 2 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    1 | 3 => b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    _ => b"",
                };
                s.write_all(r).unwrap();
            }
        });
        let req: Arc<[u8]> = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec().into();
        let budget = Arc::new(AtomicU64::new(5));
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = runtime().block_on(connection(addr, req, deadline, Some(budget.clone())));
        server.join().unwrap();
        assert_eq!(st.lat.len(), 2);
        assert_eq!((st.shed, st.other_status, st.conn_fail, st.timed_out), (2, 0, 1, 0));
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }
}
