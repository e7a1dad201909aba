//! `mnist-cnn plot` and `eval --confusion-png` write real pictures (checked by decoding them and
//! sampling their pixels).

use std::path::PathBuf;
use std::process::Command;

fn run_status(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn run(args: &[&str]) -> String {
    let out = run_status(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-plots-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The first run colour (a2 in the legend), and whether a pixel is a blend of it with white:
/// blue-ish but not the exact colour (the smooth edge of a supersampled line or marker).
const RUN0: [u8; 3] = [31, 119, 180];
fn is_edge_of_run0(px: &image::Rgb<u8>) -> bool {
    let [r, g, b] = px.0;
    let exact = r.abs_diff(RUN0[0]) < 6 && g.abs_diff(RUN0[1]) < 6 && b.abs_diff(RUN0[2]) < 6;
    !exact && b > 190 && (40..230).contains(&r) && b as i32 - r as i32 > 15 && g > r && b > g
}
fn is_run0(px: &image::Rgb<u8>) -> bool {
    px.0.iter().zip(RUN0).all(|(a, b)| a.abs_diff(b) < 10)
}

#[test]
fn training_curves_are_smooth_with_the_legend_outside_and_one_epoch_runs_labelled() {
    let d = temp_dir("curves");
    let p = |n: &str| d.join(n);
    run(&["train", "--epochs", "2", "--limit", "2000", "--log", &s(&p("a2.jsonl"))]);
    run(&[
        "train",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--seed",
        "1",
        "--log",
        &s(&p("b1.csv")),
    ]);
    let out = run(&[
        "plot",
        &s(&p("a2.jsonl")),
        &s(&p("b1.csv")),
        "--out",
        &s(&p("curves.png")),
    ]);
    assert!(out.contains("(2 runs)"), "{out}");
    let img = image::open(p("curves.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1100, 760));
    // The lines' edges are blends of the run's colour and white (anti-aliased; that the PNG is
    // supersampled is checked in src/plot/render.rs).
    let edges = img.pixels().filter(|px| is_edge_of_run0(px)).count();
    assert!(edges > 300, "only {edges} anti-aliased pixels of the first run");
    // The legend strip, right of the plots, holds the runs' colour swatches.
    let legend_run0 = img
        .enumerate_pixels()
        .filter(|(x, _, px)| *x > 850 && is_run0(px))
        .count();
    assert!(
        legend_run0 > 200,
        "no swatch of the first run in the legend ({legend_run0})"
    );
    // One epoch alone: markers with their values (not a lone dot at an axis' edge).
    run(&["plot", &s(&p("b1.csv")), "--out", &s(&p("one.png"))]);
    let one = image::open(p("one.png")).unwrap().to_rgb8();
    let ink = one
        .enumerate_pixels()
        .filter(|(x, _, px)| *x < 850 && (is_run0(px) || is_edge_of_run0(px)))
        .count();
    // Three markers (validation loss and accuracy, training loss) are about 100 pixels; their
    // labels bring several hundred more.
    assert!(ink > 400, "one-epoch plot has only {ink} pixels of the run's colour");
    // The SVG names the font the PNG is drawn with.
    run(&["plot", &s(&p("a2.jsonl")), "--out", &s(&p("curves.svg"))]);
    let svg = std::fs::read_to_string(p("curves.svg")).unwrap();
    assert!(
        svg.lines().any(|l| l == "a2") && svg.contains("accuracy per epoch"),
        "labelled by file"
    );
    assert!(
        svg.contains("font-family=\"DejaVu Sans, Bitstream Vera Sans, sans-serif\"")
            && !svg.contains("font-family=\"sans-serif\""),
        "font not named"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn per_batch_loss_is_drawn_raw_and_smoothed() {
    let d = temp_dir("batches");
    let log = d.join("run.jsonl");
    // Two epochs of 6000 samples, a batch record every 10 batches of 64, the loss falling with
    // noise; one record's loss was not finite (null), and train_accuracy is in the epochs.
    let mut text = String::from("{\"type\":\"header\",\"settings\":{}}\n");
    for e in 1..=2 {
        for r in 1..=9 {
            let k = (e - 1) * 9 + r;
            let loss = if k == 5 {
                "null".to_string()
            } else {
                format!("{}", 2.3 / (1.0 + k as f64 * 0.3) + if k % 2 == 0 { 0.25 } else { 0.0 })
            };
            text.push_str(&format!(
                "{{\"type\":\"batch\",\"epoch\":{e},\"batch\":{},\"samples\":{},\"loss\":{loss}}}\n",
                r * 10,
                r * 640
            ));
        }
        text.push_str(&format!(
            "{{\"type\":\"epoch\",\"epoch\":{e},\"train_loss\":{},\"valid_loss\":{},\"valid_accuracy\":{},\"train_accuracy\":{}}}\n",
            1.0 / e as f64,
            0.8 / e as f64,
            0.7 + 0.1 * e as f64,
            0.6 + 0.1 * e as f64
        ));
    }
    std::fs::write(&log, text).unwrap();
    let out = d.join("b.png");
    run(&["plot", &s(&log), "--batches", "--out", &s(&out)]);
    let img = image::open(&out).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1100, 1050));
    // The third panel (y below 700, left of the legend) has the solid smoothed line and the
    // faint raw one (the run's colour at 30% over white is about (185, 214, 233)).
    let panel = |f: &dyn Fn(&image::Rgb<u8>) -> bool| {
        img.enumerate_pixels()
            .filter(|(x, y, px)| *x < 850 && *y > 700 && f(px))
            .count()
    };
    let solid = panel(&|px| is_run0(px));
    let faint = panel(&|px| {
        let [r, g, b] = px.0;
        (170..=200).contains(&r) && (200..=228).contains(&g) && (222..=245).contains(&b)
    });
    assert!(solid > 300 && faint > 100, "smoothed {solid}, raw {faint} pixels");
    // Without --batches the picture has two panels.
    run(&["plot", &s(&log), "--out", &s(&out)]);
    assert_eq!(image::open(&out).unwrap().height(), 760);
    let bad = run_status(&["plot", &s(&log), "--batches", "--smooth", "1", "--out", &s(&out)]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("smoothing 1 is not from 0 to below 1"));
    std::fs::remove_dir_all(&d).unwrap();
}

/// The confusion matrix of `eval --json`.
fn confusion(json: &str) -> Vec<Vec<u64>> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect())
        .collect()
}

#[test]
fn the_heat_map_shows_every_error_and_has_a_colour_bar() {
    let d = temp_dir("confusion");
    let model = "tests/fixtures/mnist_cnn_seed0.safetensors";
    let cm = d.join("cm.png");
    let json = run(&["eval", "--model", model, "--json", "--confusion-png", &s(&cm)]);
    let counts = confusion(&json);
    let img = image::open(&cm).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 790));
    // Cells are 60 pixels from (150, 80); a cell's colour is sampled near its corner, away
    // from its text.
    let cell = |t: usize, p: usize| *img.get_pixel(150 + 60 * p as u32 + 6, 80 + 60 * t as u32 + 6);
    let mut errors = 0;
    for (t, row) in counts.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            let [r, g, b] = cell(t, p).0;
            if n == 0 {
                assert!(
                    r > 245 && g > 245 && b > 245,
                    "empty cell ({t}, {p}) not white: {r},{g},{b}"
                );
            } else {
                // Viridis is never near white: even one error is a dark colour.
                assert!(
                    r.min(g).min(b) < 150,
                    "cell ({t}, {p}) with {n} images is pale: {r},{g},{b}"
                );
                errors += usize::from(t != p);
            }
            if t == p {
                assert!(r > 180 && g > 180 && b < 100, "diagonal ({t}) not yellow: {r},{g},{b}");
            }
        }
    }
    assert!(errors > 40, "the fixture model makes errors in {errors} cells only");
    // The colour bar right of the grid: yellow at the top, dark violet at the bottom, and its
    // luminance falls all the way down.
    let bar = |y: u32| img.get_pixel(797, y).0;
    let (top, bottom) = (bar(84), bar(676));
    assert!(top[0] > 200 && top[1] > 200 && top[2] < 100, "bar top {top:?}");
    assert!(
        bottom[0] < 90 && bottom[1] < 30 && bottom[2] > 60,
        "bar bottom {bottom:?}"
    );
    let lum = |c: [u8; 3]| 0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64;
    for y in (90..670).step_by(20) {
        assert!(lum(bar(y)) + 1.0 >= lum(bar(y + 20)), "bar not monotone at {y}");
    }
    // Normalised by row: the diagonal stays yellow, and the SVG names the font.
    let cmn = d.join("cmn.png");
    run(&[
        "eval",
        "--model",
        model,
        "--confusion-png",
        &s(&cmn),
        "--confusion-normalize",
    ]);
    let img = image::open(&cmn).unwrap().to_rgb8();
    let [r, g, b] = img.get_pixel(150 + 6, 80 + 6).0;
    assert!(
        r > 180 && g > 180 && b < 100,
        "normalised diagonal not yellow: {r},{g},{b}"
    );
    let svg = d.join("cm.svg");
    run(&[
        "eval",
        "--model",
        model,
        "--confusion-png",
        &s(&svg),
        "--confusion-normalize",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("% of row") && text.contains("DejaVu Sans, Bitstream Vera Sans"));
    std::fs::remove_dir_all(&d).unwrap();
}
