//! Downloads against a local HTTP server on 127.0.0.1 started by the test (never the internet):
//! success and a second call that does nothing, a failing first mirror, a truncated body that a
//! second call resumes with a Range request, a bad checksum, and the tutorial's pickle.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnist_cnn::data::download::{DatasetSpec, Outcome, RemoteFile, download};

#[derive(Clone)]
enum Route {
    Ok(Vec<u8>),
    /// Announces the whole length but sends only the first n bytes, the first time.
    CutOnce(Vec<u8>, usize),
}

/// A tiny HTTP/1.1 server: GET with optional `Range: bytes=N-`, Connection: close.
struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, q) = (routes.clone(), requests.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // Bounded: the server stops by itself after a minute.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let mut lines = BufReader::new(s.try_clone().unwrap()).lines();
                let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut from = 0usize;
                for l in lines.by_ref() {
                    let l = l.unwrap_or_default();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        from = v.trim_end_matches('-').parse().unwrap_or(0);
                    }
                }
                q.lock().unwrap().push(format!("{path} from {from}"));
                let route = r.lock().unwrap().get(&path).cloned();
                let _ = match route {
                    None => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                    Some(Route::CutOnce(body, n)) => {
                        r.lock().unwrap().insert(path.clone(), Route::Ok(body.clone()));
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body[..n]))
                    }
                    Some(Route::Ok(body)) if from > 0 && from < body.len() => {
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                            body.len() - from,
                            body.len() - 1,
                            body.len()
                        );
                        s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body[from..]))
                    }
                    Some(Route::Ok(body)) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body))
                    }
                };
            }
        });
        Server { port, routes, requests }
    }
    fn serve(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }
    fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}{prefix}", self.port)
    }
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-dl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One small file with its md5, and a spec whose mirrors are all on the local server.
fn one_file_spec(name: &str, body: &[u8], mirrors: Vec<String>) -> DatasetSpec {
    DatasetSpec {
        key: "test".into(),
        mirrors,
        files: vec![RemoteFile {
            name: name.into(),
            md5: Some(md5_hex(body)),
            sha256: None,
            pickle: false,
            size: body.len() as u64,
            content_max: 1 << 20,
        }],
    }
}

#[test]
fn mnist_from_a_local_mirror_by_content_checksum_then_a_second_call_does_nothing() {
    let server = Server::start();
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    for n in names {
        // The bundled files were re-compressed: their md5 differs from the published one, and
        // the pinned sha256 of the content is what passes.
        server.serve(
            &format!("/m/{n}"),
            Route::Ok(std::fs::read(root().join("data/mnist").join(n)).unwrap()),
        );
    }
    let dir = tmp("mnist");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
            .args(["download", "mnist", "--quiet", "--dir", dir.to_str().unwrap()])
            .env("MNIST_CNN_MIRROR", server.url("/m/"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(
        first.contains("4 files") && first.contains("(4 fetched, 0 already there)"),
        "{first}"
    );
    let n = server.requests().len();
    let second = run();
    assert!(second.contains("(0 fetched, 4 already there)"), "{second}");
    assert_eq!(server.requests().len(), n, "nothing fetched the second time");
    // And training reads the cache: --dataset mnist with --data-dir pointing at it.
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .args([
            "train",
            "--epochs",
            "1",
            "--limit",
            "500",
            "--data-dir",
            dir.join("mnist").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_first_mirror_is_skipped() {
    let server = Server::start();
    let body = b"some dataset bytes".repeat(1000);
    server.serve("/good/f.gz", Route::Ok(body.clone()));
    let spec = one_file_spec("f.gz", &body, vec![server.url("/down/"), server.url("/good/")]);
    let dir = tmp("mirror");
    let mut log = Vec::new();
    let (target, outcomes) = download(&spec, &dir, None, false, |m| log.push(m.to_string())).unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Fetched {
            from: server.url("/good/f.gz")
        }]
    );
    assert!(log[0].contains("/down/f.gz: HTTP 404"), "{log:?}");
    assert_eq!(std::fs::read(target.join("f.gz")).unwrap(), body);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_body_fails_and_the_next_call_resumes_it() {
    let server = Server::start();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    server.serve("/m/f.gz", Route::CutOnce(body.clone(), 70_000));
    let spec = one_file_spec("f.gz", &body, vec![server.url("/m/")]);
    let dir = tmp("resume");
    let e = download(&spec, &dir, None, false, |_| {}).unwrap_err().to_string();
    assert!(e.contains("run again to resume"), "{e}");
    let target = dir.join("test");
    assert!(
        !target.join("f.gz").exists(),
        "no half-written file under the final name"
    );
    assert_eq!(std::fs::metadata(target.join("f.gz.part")).unwrap().len(), 70_000);
    let (_, outcomes) = download(&spec, &dir, None, false, |_| {}).unwrap();
    assert!(matches!(outcomes[0], Outcome::Fetched { .. }));
    assert_eq!(std::fs::read(target.join("f.gz")).unwrap(), body);
    assert!(!target.join("f.gz.part").exists());
    assert_eq!(
        server.requests().last().unwrap(),
        "/m/f.gz from 70000",
        "resumed with a Range request"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_checksum_deletes_the_file_and_says_so() {
    let server = Server::start();
    let body = b"the published file".to_vec();
    server.serve("/m/f.gz", Route::Ok(b"something else entirely".to_vec()));
    let spec = one_file_spec("f.gz", &body, vec![server.url("/m/")]);
    let dir = tmp("bad");
    let e = download(&spec, &dir, None, false, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains("the file was deleted"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("test")).unwrap().flatten().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_tutorial_pickle_is_checked_by_parsing_it() {
    let server = Server::start();
    server.serve(
        "/ok/mnist.pkl.gz",
        Route::Ok(std::fs::read(root().join("tests/fixtures/mnist_py2.pkl.gz")).unwrap()),
    );
    server.serve(
        "/bad/mnist.pkl.gz",
        Route::Ok(std::fs::read(root().join("tests/fixtures/bad_global.pkl.gz")).unwrap()),
    );
    let spec = |m: &str| DatasetSpec {
        key: "pickle".into(),
        mirrors: vec![server.url(m)],
        files: vec![RemoteFile {
            name: "mnist.pkl.gz".into(),
            md5: None,
            sha256: None,
            pickle: true,
            size: 1 << 20,
            content_max: 16 << 20,
        }],
    };
    let dir = tmp("pickle");
    let e = download(&spec("/bad/"), &dir, None, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not the tutorial's pickle") && e.contains("refusing global"),
        "{e}"
    );
    download(&spec("/ok/"), &dir, None, false, |_| {}).unwrap();
    assert!(Path::new(&dir.join("pickle/mnist.pkl.gz")).is_file());
    let mut f = std::fs::File::open(dir.join("pickle/mnist.pkl.gz")).unwrap();
    let mut head = [0u8; 2];
    f.read_exact(&mut head).unwrap();
    assert_eq!(head, [0x1f, 0x8b]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_dataset_reads_the_cache_shows_class_names_and_says_how_to_download() {
    let home = tmp("xdg");
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
        c.current_dir(root())
            .env("XDG_DATA_HOME", &home)
            .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
        c
    };
    let out = bin()
        .args(["train", "--dataset", "kmnist", "--epochs", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("mnist-cnn/kmnist/train-images-idx3-ubyte: not found")
            && err.contains("run `mnist-cnn download kmnist` first"),
        "{err}"
    );
    // A cache holding IDX files (here the bundled MNIST, standing in for Fashion-MNIST).
    let cache = home.join("mnist-cnn/fashion-mnist");
    std::fs::create_dir_all(&cache).unwrap();
    for e in std::fs::read_dir(root().join("data/mnist")).unwrap().flatten() {
        std::fs::copy(e.path(), cache.join(e.file_name())).unwrap();
    }
    let model = home.join("f.safetensors");
    let out = bin()
        .args([
            "train",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "1",
            "--limit",
            "300",
            "--save",
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("classes: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot"),
        "{text}"
    );
    // eval finds the dataset from the model's metadata and names the classes.
    let out = bin()
        .args(["eval", "--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("Ankle boot"), "{text}");
    std::fs::remove_dir_all(&home).unwrap();
}
