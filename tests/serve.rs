//! `mnist-cnn serve` end to end: the real binary on a free port (`--addr 127.0.0.1:0`, the URL
//! read from its first line of output), every endpoint and every error code through `ureq`,
//! predictions equal to the library's own forward pass, a full queue's 503, and a graceful
//! shutdown on SIGTERM. Each test kills its servers when it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use mnist_cnn::Tensor;
use serde_json::{Value, json};

mod common;
use common::Server;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// An answer: the status, the body as JSON (Null when it is not JSON), and the Retry-After
/// header.
type Answer = (u16, Value, Option<String>);

fn post(url: &str, content_type: &str, body: &[u8]) -> Answer {
    let mut r = agent()
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = r.body_mut().read_to_string().unwrap();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry,
    )
}

fn post_json(url: &str, v: &Value) -> Answer {
    post(url, "application/json", &serde_json::to_vec(v).unwrap())
}

/// The status, Content-Type and text of a GET.
fn get(url: &str) -> (u16, String, String) {
    let mut r = agent().get(url).call().unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), ct, r.body_mut().read_to_string().unwrap())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first `n` MNIST test images as 784 values each (pixel / 256, as the library reads
/// them), and their labels.
fn mnist_test(n: usize) -> (Vec<Vec<f32>>, Vec<u8>) {
    let dir = root().join("data/mnist");
    let (img, labels) = mnist_cnn::data::idx::read_images_and_labels(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let rows = img.data[..n * 784]
        .chunks(784)
        .map(|r| r.iter().map(|&p| mnist_cnn::data::pixel_to_f32(p)).collect())
        .collect();
    (rows, labels[..n].to_vec())
}

/// The bundled model's probabilities for these images, computed by the library.
fn library_probabilities(images: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let (_, model, _) =
        mnist_cnn::checkpoint::load_model(&root().join("assets/models/bncnn_seed0.safetensors")).unwrap();
    model.set_training(false);
    let x: Vec<f32> = images.concat();
    let logits = mnist_cnn::no_grad(|| model.forward(&Tensor::from_vec(x, &[images.len(), 784])));
    mnist_cnn::predict::softmax_rows(&logits.to_vec(), 10)
}

fn probs_of(v: &Value) -> Vec<f32> {
    v["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn health_page_model_and_metrics_endpoints() {
    let s = Server::start(&[]);
    let (code, _, body) = get(&s.at("/healthz"));
    assert_eq!((code, body.contains("ok")), (200, true));
    let (code, _, body) = get(&s.at("/readyz"));
    assert_eq!((code, body.contains("ready")), (200, true));
    let (code, ct, page) = get(&s.at("/"));
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    for part in [
        "<canvas",
        "name=\"viewport\"",
        "/api/predict",
        "Clear",
        "Undo",
        "type=\"file\"",
        "drop",
    ] {
        assert!(page.contains(part), "the page lacks {part}");
    }
    let (code, _, model) = get(&s.at("/api/model"));
    let model: Value = serde_json::from_str(&model).unwrap();
    assert_eq!(code, 200);
    assert_eq!(model["architecture"], "bncnn");
    assert!(model["parameters"].as_u64().unwrap() > 10_000, "{model}");
    assert!(model["metrics"]["test_accuracy"].as_f64().unwrap() > 0.99, "{model}");
    assert_eq!(model["dataset"], "mnist");
    assert_eq!(model["classes"].as_array().unwrap().len(), 10);
    let (code, _, body) = get(&s.at("/no/such/page"));
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");
    let (code, _, body) = get(&s.at("/api/predict"));
    assert_eq!(code, 405);
    assert!(body.contains("POST"), "{body}");
    let (code, ct, metrics) = get(&s.at("/metrics"));
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    // The requests above: four answered 200, one 404 and one 405 before this one.
    assert!(
        metrics.contains("mnist_cnn_requests_total{code=\"200\"} 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mnist_cnn_requests_total{code=\"404\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mnist_cnn_request_duration_seconds_count 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mnist_cnn_request_duration_seconds_bucket{le=\"+Inf\"} 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mnist_cnn_requests_total{code=\"405\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("mnist_cnn_queue_depth 0\n"), "{metrics}");
    assert!(metrics.contains("# TYPE mnist_cnn_batch_size histogram"), "{metrics}");
}

#[test]
fn user_style_images_get_their_labels() {
    let s = Server::start(&[]);
    let dir = root().join("tests/fixtures/user_style");
    let text = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    // One image of each style and digit the first lines list (PNG files).
    let picked: Vec<(String, u64)> = text
        .lines()
        .skip(1)
        .step_by(25)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .filter(|(f, _)| f.ends_with(".png"))
        .collect();
    assert!(picked.len() >= 8, "{picked:?}");
    for (file, label) in &picked {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let (code, v, _) = post(&s.at("/api/predict?top=5&preprocessed=1"), "image/png", &bytes);
        assert_eq!(code, 200, "{file}: {v}");
        assert_eq!(v["digit"].as_u64(), Some(*label), "{file}: {v}");
        assert_eq!(v["model"], "bncnn");
        let p = probs_of(&v);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{p:?}");
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        assert_eq!(top[0]["digit"].as_u64(), Some(*label));
        assert_eq!(v["low_confidence"], Value::Bool(p[*label as usize] < 0.5));
        assert!(v["elapsed_ms"].as_f64().unwrap() >= 0.0);
        // The image the network saw: a 28x28 PNG.
        let b64 = v["preprocessed"].as_str().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
    }
    // Sniffed without a Content-Type of its own (application/octet-stream).
    let (file, label) = &picked[0];
    let (code, v, _) = post(
        &s.at("/api/predict"),
        "application/octet-stream",
        &std::fs::read(dir.join(file)).unwrap(),
    );
    assert_eq!((code, v["digit"].as_u64()), (200, Some(*label)), "{v}");
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    assert!(v.get("preprocessed").is_none());
}

#[test]
fn an_upload_gets_the_probabilities_predict_gives_and_a_photo_sized_one_its_label() {
    let s = Server::start(&[]);
    let dir = root().join("tests/fixtures/user_style");
    let bytes = std::fs::read(dir.join("pen_7_07.png")).unwrap();
    // Prepared by an inference worker in its batch, exactly as `predict` prepares it.
    let (code, v, _) = post(&s.at("/api/predict?preprocessed=1"), "image/png", &bytes);
    assert_eq!(code, 200, "{v}");
    let rgb = mnist_cnn::predict::decode_rgb(&bytes).unwrap();
    let seen = mnist_cnn::predict::preprocess_with(&rgb, mnist_cnn::predict::PreprocessConfig::default()).unwrap();
    let px: Vec<f32> = seen
        .as_raw()
        .iter()
        .map(|&b| mnist_cnn::data::pixel_to_f32(b))
        .collect();
    let want = &library_probabilities(&[px])[0];
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(&probs_of(&v), want), "{v} vs {want:?}");
    assert_eq!(v["digit"].as_u64(), Some(7));
    // Cut short after its header (88x110, readable): an inference worker finds it unreadable.
    let (code, v, _) = post(&s.at("/api/predict"), "image/png", &bytes[..100]);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a readable image"), "{v}");
    // The same drawing scaled past 1 megapixel (1,056 x 1,320) is prepared on the blocking pool:
    // the same label, and the image the network saw.
    let img = image::load_from_memory(&bytes).unwrap();
    let big = img.resize_exact(
        img.width() * 12,
        img.height() * 12,
        image::imageops::FilterType::Triangle,
    );
    assert!(u64::from(big.width()) * u64::from(big.height()) > mnist_cnn::serve::api::WORKER_UPLOAD_PIXELS);
    let mut png = Vec::new();
    big.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (code, v, _) = post(&s.at("/api/predict?preprocessed=1"), "image/png", &png);
    assert_eq!((code, v["digit"].as_u64()), (200, Some(7)), "{v}");
    assert!(
        v["preprocessed"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
}

#[test]
fn json_pixels_get_the_librarys_probabilities() {
    let s = Server::start(&["--max-batch", "4"]);
    let (images, labels) = mnist_test(10);
    let want = library_probabilities(&images);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    // One image.
    let (code, v, _) = post_json(&s.at("/api/predict?top=1"), &json!({"pixels": images[0]}));
    assert_eq!(code, 200, "{v}");
    assert!(close(&probs_of(&v), &want[0]), "{v} vs {:?}", want[0]);
    assert_eq!(v["digit"].as_u64(), Some(labels[0] as u64));
    assert_eq!(v["top"].as_array().unwrap().len(), 1);
    // A batch of ten, cut into passes of at most four images by the server.
    let (code, v, _) = post_json(&s.at("/api/predict"), &json!({"batch": images}));
    assert_eq!(code, 200, "{v}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 10);
    for (i, p) in preds.iter().enumerate() {
        assert!(close(&probs_of(p), &want[i]), "image {i}: {p} vs {:?}", want[i]);
        let library_digit = (0..10).max_by(|&a, &b| want[i][a].total_cmp(&want[i][b])).unwrap();
        assert_eq!(p["digit"].as_u64(), Some(library_digit as u64));
    }
    assert_eq!(v["model"], "bncnn");
    let (_, _, metrics) = get(&s.at("/metrics"));
    // Passes of 1 (the single image), then 4, 4 and 2.
    assert!(metrics.contains("mnist_cnn_batch_size_count 4\n"), "{metrics}");
    assert!(metrics.contains("mnist_cnn_batch_size_sum 11\n"), "{metrics}");
}

#[test]
fn several_workers_share_the_model_and_answer_concurrent_requests() {
    let s = Server::start(&["--workers", "3", "--max-batch", "2"]);
    let (_, _, metrics) = get(&s.at("/metrics"));
    assert!(metrics.contains("mnist_cnn_inference_workers 3\n"), "{metrics}");
    let (images, _) = mnist_test(64);
    let want = library_probabilities(&images);
    // Eight clients send eight single images each at once.
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let (url, images) = (s.at("/api/predict"), images.clone());
            std::thread::spawn(move || {
                (c * 8..c * 8 + 8)
                    .map(|i| (i, post_json(&url, &json!({"pixels": images[i]}))))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, (code, v, _)) in handles.into_iter().flat_map(|h| h.join().unwrap()) {
        assert_eq!(code, 200, "image {i}: {v}");
        let got = probs_of(&v);
        assert!(
            got.iter().zip(&want[i]).all(|(x, y)| (x - y).abs() < 1e-6),
            "image {i}: {got:?} vs {:?}",
            want[i]
        );
    }
    let (_, _, metrics) = get(&s.at("/metrics"));
    assert!(metrics.contains("mnist_cnn_batch_size_sum 64\n"), "{metrics}");
}

#[test]
fn errors_are_json_with_their_status_codes() {
    let s = Server::start(&["--max-body-bytes", "200000"]);
    let url = s.at("/api/predict");
    let digits = root().join("tests/fixtures/digits");
    let cases: Vec<(&str, u16, Answer)> = vec![
        ("bad JSON", 400, post(&url, "application/json", b"{\"pixels\": [0.1,")),
        (
            "wrong pixel count",
            400,
            post_json(&url, &json!({"pixels": vec![0.1; 783]})),
        ),
        (
            "value out of range",
            400,
            post_json(&url, &json!({"pixels": vec![2.0; 784]})),
        ),
        (
            "non-finite value",
            400,
            post(
                &url,
                "application/json",
                format!("{{\"pixels\": [1e999{}]}}", ",0".repeat(783)).as_bytes(),
            ),
        ),
        (
            "unreadable image",
            400,
            post(&url, "image/png", b"\x89PNG\r\n\x1a\n not really"),
        ),
        ("empty body", 400, post(&url, "image/png", b"")),
        ("bad top", 400, post(&s.at("/api/predict?top=0"), "image/png", b"x")),
        ("too large", 413, post(&url, "image/png", &vec![0u8; 300_000])),
        ("unsupported type", 415, post(&url, "text/plain", b"7")),
        ("webp", 415, post(&url, "image/webp", b"RIFF....WEBP")),
        (
            "blank image",
            422,
            post(&url, "image/png", &std::fs::read(digits.join("blank.png")).unwrap()),
        ),
    ];
    for (what, want, (code, v, _)) in cases {
        assert_eq!(code, want, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no JSON error: {v}"));
        assert!(msg.len() > 10, "{what}: {msg}");
    }
    // The messages say what is wrong.
    let (_, v, _) = post_json(&url, &json!({"pixels": vec![0.1; 783]}));
    assert!(v["error"].as_str().unwrap().contains("783"), "{v}");
    let (_, v, _) = post(&url, "image/png", &vec![0u8; 300_000]);
    assert!(v["error"].as_str().unwrap().contains("200000"), "{v}");
    let (_, v, _) = post(&url, "image/png", &std::fs::read(digits.join("blank.png")).unwrap());
    assert!(v["error"].as_str().unwrap().contains("no digit"), "{v}");
    // The errors are counted.
    let (_, _, metrics) = get(&s.at("/metrics"));
    for code in [400, 413, 415, 422] {
        assert!(metrics.contains(&format!("code=\"{code}\"")), "{code}: {metrics}");
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    // One job in the queue at most, and one image a pass: 16 concurrent batches of 64 images
    // keep the inference worker busy while the others arrive.
    let s = Server::start(&["--queue", "1", "--max-batch", "1", "--workers", "1", "--threads", "1"]);
    let (images, _) = mnist_test(64);
    let body = serde_json::to_vec(&json!({"batch": images})).unwrap();
    let url = s.at("/api/predict");
    let mut answers = Vec::new();
    for _round in 0..3 {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (url, body) = (url.clone(), body.clone());
                std::thread::spawn(move || post(&url, "application/json", &body))
            })
            .collect();
        answers.extend(handles.into_iter().map(|h| h.join().unwrap()));
        if answers.iter().any(|a| a.0 == 503) {
            break;
        }
    }
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(
        !busy.is_empty(),
        "no 503 among {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (code, v, retry) in &answers {
        match code {
            200 => assert_eq!(v["predictions"].as_array().unwrap().len(), 64),
            503 => {
                assert_eq!(retry.as_deref(), Some("1"));
                assert!(v["error"].as_str().unwrap().contains("queue is full"), "{v}");
            }
            other => panic!("unexpected status {other}: {v}"),
        }
    }
    assert!(answers.iter().any(|a| a.0 == 200), "some requests are served");
    let (_, _, metrics) = get(&s.at("/metrics"));
    assert!(
        metrics.contains(&format!("mnist_cnn_requests_total{{code=\"503\"}} {}\n", busy.len())),
        "{metrics}"
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_0() {
    // The inference worker waits 1.5 s for more requests before it runs the first one's batch:
    // a request stays in flight that long, in debug and release builds alike.
    let mut s = Server::start(&["--max-wait-us", "1500000", "--workers", "1"]);
    let (images, labels) = mnist_test(1);
    let url = s.at("/api/predict");
    let t0 = std::time::Instant::now();
    let slow = std::thread::spawn(move || post_json(&url, &json!({"pixels": images[0]})));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!slow.is_finished(), "the request is still waiting for its batch");
    let killed = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (code, v, _) = slow.join().unwrap();
    assert_eq!(code, 200, "the request in flight is answered: {v}");
    assert_eq!(v["digit"].as_u64(), Some(labels[0] as u64));
    assert!(t0.elapsed() >= Duration::from_millis(1400), "{:?}", t0.elapsed());
    let status = wait_at_most(&mut s.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Nothing listens any more.
    assert!(agent().get(&s.at("/healthz")).call().is_err());
}

fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t0.elapsed() < limit, "the server did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_model_file_is_an_error_before_listening() {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(Path::new("no/such/model.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no URL is printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/model.safetensors"));
}
