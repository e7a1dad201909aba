//! A load client for `mnist-cnn serve` (bench/serve_load.sh runs it): C connections (one
//! thread and one keep-alive `ureq` agent each) post the same request for S seconds; prints
//! one line with the requests answered, the throughput, the latency's p50 and p99, and the
//! errors (a status other than 200, or a failed request).
//!
//! `cargo run --release --example serve_load -- URL CONNECTIONS SECONDS [IMAGE]`: without
//! IMAGE, the body is the first MNIST test image as JSON pixels (data/mnist); with it, the
//! image file's bytes (sniffed by the server).

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: serve_load URL CONNECTIONS SECONDS [IMAGE]");
        std::process::exit(2);
    }
    let url = format!("{}/api/predict", args[0].trim_end_matches('/'));
    let conns: usize = args[1].parse().expect("CONNECTIONS is a number");
    let secs: f64 = args[2].parse().expect("SECONDS is a number");
    let (body, kind) = match args.get(3) {
        Some(img) => (std::fs::read(img).expect("the image is readable"), "image"),
        None => (mnist_pixels_json(), "json"),
    };
    let content_type = if kind == "json" {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match agent.post(&url).header("Content-Type", content_type).send(&body[..]) {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let _ = r.body_mut().read_to_vec();
                            status == 200
                        }
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_secs_f64());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.join().expect("a worker thread");
        lat.extend(l);
        errors += e;
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            1e3 * lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    println!(
        "{kind} body, {conns} connections, {wall:.1} s: {} answered, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {errors} errors",
        lat.len(),
        lat.len() as f64 / wall,
        pct(0.5),
        pct(0.99)
    );
}

/// `{"pixels": [...]}` of MNIST's first test image (pixel / 256, as the library reads it).
fn mnist_pixels_json() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let (img, _) = mnist_cnn::data::idx::read_images_and_labels(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .expect("MNIST's test set in data/mnist");
    let px: Vec<f32> = img.data[..784]
        .iter()
        .map(|&p| mnist_cnn::data::pixel_to_f32(p))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "pixels": px })).expect("JSON")
}
