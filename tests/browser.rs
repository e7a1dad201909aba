//! The drawing page of `mnist-cnn serve` in a real browser: headless Chromium driven over
//! W3C WebDriver (chromedriver, plain JSON over HTTP through `ureq`). Digits are drawn on the
//! canvas with scripted pointer strokes (mouse, touch and pen), and the page must show
//! the drawn digit, ten probability bars and the 28x28 image the network saw; Undo and Clear
//! must update and reset them. Screenshots go to `target/browser/serve_page_<digit>.png`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (binaries `chromium` and
//! `chromedriver` on PATH, or the CHROME_BIN and CHROMEDRIVER env vars). Without them the test
//! fails; `MNIST_CNN_SKIP_BROWSER=1` skips it, loudly.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Server;

use base64::Engine;
use serde_json::{Value, json};

/// The browser window: wide enough for the page's two columns (max 860 px) and tall enough
/// for the canvas, the ten bars and the 28x28 image without scrolling.
const WINDOW: (u32, u32) = (1000, 760);

/// The key of a web element reference in W3C WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process, killed when dropped (also when a test panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binary named by env var `var` (when set and not empty), else `name` on PATH; an
/// explanation when neither exists.
fn find_binary(var: &str, name: &str) -> Result<PathBuf, String> {
    match std::env::var_os(var).filter(|p| !p.is_empty()) {
        Some(p) if Path::new(&p).is_file() => Ok(PathBuf::from(p)),
        Some(p) => Err(format!("{var}={} is not a file", Path::new(&p).display())),
        None => on_path(name).ok_or_else(|| format!("`{name}` is not on PATH (and {var} is not set)")),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A chromedriver process on a free port, killed when dropped.
struct Driver {
    _process: Killed,
    url: String,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        // A free port: bound by the OS, released, then handed to chromedriver.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let driver = Driver {
            _process: Killed(child),
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = agent()
                .get(format!("{}/status", driver.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {port} not ready after 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A WebDriver session, deleted when dropped (which closes the browser).
struct Session {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`
    base: String,
}

impl Session {
    fn new(driver: &Driver, chrome: &Path) -> Session {
        let (w, h) = WINDOW;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={w},{h}")],
            },
        }}});
        let agent = agent();
        let v = request(&agent, "POST", &format!("{}/session", driver.url), Some(&caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("new session: {v}"))
            .to_string();
        Session {
            agent,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    fn get(&self, path: &str) -> Value {
        request(&self.agent, "GET", &format!("{}{path}", self.base), None)
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        request(&self.agent, "POST", &format!("{}{path}", self.base), Some(body))
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", &json!({"script": script, "args": []}))
    }

    fn element(&self, css: &str) -> String {
        let v = self.post("/element", &json!({"using": "css selector", "value": css}));
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.post(&format!("/element/{id}/click"), &json!({}));
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.get(&format!("/element/{id}/text"))
            .as_str()
            .unwrap()
            .trim()
            .to_string()
    }

    /// The canvas's box in viewport pixels: left, top, width, height.
    fn pad_rect(&self) -> (f64, f64, f64, f64) {
        let id = self.element("#pad");
        let r = self.get(&format!("/element/{id}/rect"));
        let f = |k: &str| r[k].as_f64().unwrap();
        (f("x"), f("y"), f("width"), f("height"))
    }

    /// Draws `strokes` (each a polyline in canvas fractions, 0..1 from the top left) with one
    /// pointer of `pointer_type` ("mouse", "touch" or "pen"): down at the first point, a move
    /// every few pixels along each segment, up at the last point.
    fn draw(&self, pointer_type: &str, strokes: &[&[(f64, f64)]]) {
        let (x0, y0, w, h) = self.pad_rect();
        let at = |(fx, fy): (f64, f64)| {
            json!({"type": "pointerMove", "duration": 0, "origin": "viewport",
                   "x": (x0 + fx * w).round() as i64, "y": (y0 + fy * h).round() as i64})
        };
        let mut actions = Vec::new();
        for stroke in strokes {
            actions.push(at(stroke[0]));
            actions.push(json!({"type": "pointerDown", "button": 0}));
            for seg in stroke.windows(2) {
                let ((ax, ay), (bx, by)) = (seg[0], seg[1]);
                let steps = 12;
                for i in 1..=steps {
                    let t = i as f64 / steps as f64;
                    actions.push(at((ax + (bx - ax) * t, ay + (by - ay) * t)));
                }
            }
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        self.post(
            "/actions",
            &json!({"actions": [{
                "type": "pointer", "id": format!("{pointer_type}-pointer"),
                "parameters": {"pointerType": pointer_type}, "actions": actions,
            }]}),
        );
        request(&self.agent, "DELETE", &format!("{}/actions", self.base), None);
    }

    /// Waits until the page shows `digit` as its answer and has stopped changing (the answer
    /// and the status line, which names each prediction's time, the same for 400 ms: a
    /// debounced prediction of a half-drawn stroke cannot pass for the final one).
    fn wait_for_answer(&self, digit: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = (String::new(), String::new());
        let mut since = Instant::now();
        loop {
            let now = (self.text("#answer"), self.text("#status"));
            if now != last {
                last = now;
                since = Instant::now();
            } else if last.0 == digit && since.elapsed() >= Duration::from_millis(400) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page shows {:?} (status {:?}) after 10 s; expected {digit:?}",
                last.0,
                last.1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ten bars' texts ("12.3%" or "–") and the index of the one marked best, if any.
    fn bars(&self) -> (Vec<String>, Option<usize>) {
        let v = self.js("const rows = [...document.querySelectorAll('#bars .bar')];
             return [rows.map(r => r.querySelector('output').textContent),
                     rows.findIndex(r => r.classList.contains('best'))];");
        let texts: Vec<String> = v[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let best = v[1].as_i64().unwrap();
        (texts, usize::try_from(best).ok())
    }

    /// Whether the "what the network saw" image is shown, and its natural size once loaded.
    fn seen(&self) -> (bool, u64, u64) {
        let v = self.js("const s = document.getElementById('seen');
             return [!s.hidden && s.getBoundingClientRect().width > 0, s.naturalWidth, s.naturalHeight];");
        (v[0].as_bool().unwrap(), v[1].as_u64().unwrap(), v[2].as_u64().unwrap())
    }

    /// Saves a screenshot of the window as `dir/serve_page_<name>.png` and checks it is a PNG
    /// of the window's size.
    fn screenshot(&self, dir: &Path, name: &str) {
        let b64 = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let img = image::load_from_memory(&png).expect("the screenshot is a PNG");
        assert!(
            img.width() >= WINDOW.0 / 2 && img.height() >= WINDOW.1 / 2,
            "screenshot {}x{}",
            img.width(),
            img.height()
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("serve_page_{name}.png")), png).unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
    }
}

/// One WebDriver command; its answer's `value`. A WebDriver error is a panic naming it.
fn request(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Value {
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("POST", b) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(b.unwrap_or(&json!({}))).unwrap()),
        _ => unreachable!("method {method}"),
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {url}: {status} {text}"));
    assert!(
        status == 200,
        "{method} {url}: {status} {}: {}",
        v["value"]["error"],
        v["value"]["message"]
    );
    v["value"].clone()
}

/// Asserts that the page shows a prediction of `digit`: the bars sum to about 100%, the bar
/// marked best is `digit`'s and above 50%, and the 28x28 image the network saw is shown.
fn assert_prediction_shown(s: &Session, digit: usize) {
    let (texts, best) = s.bars();
    assert_eq!(texts.len(), 10, "{texts:?}");
    let pct: Vec<f64> = texts
        .iter()
        .map(|t| {
            t.strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bar text {t:?} in {texts:?}"))
        })
        .collect();
    let sum: f64 = pct.iter().sum();
    assert!((sum - 100.0).abs() < 1.0, "bars sum to {sum}%: {texts:?}");
    assert_eq!(best, Some(digit), "best bar, bars {texts:?}");
    assert!(pct[digit] > 50.0, "{digit} at {}%: {texts:?}", pct[digit]);
    // The image arrives as a data URL with the prediction; give it a moment to decode.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = s.seen();
        if seen == (true, 28, 28) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the network's image: shown, width, height = {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the page is reset: no answer, every bar "–" and none best, no image.
fn assert_reset(s: &Session) {
    assert_eq!(s.text("#answer"), "", "answer after reset");
    let (texts, best) = s.bars();
    assert!(texts.iter().all(|t| t == "–"), "bars after reset: {texts:?}");
    assert_eq!(best, None, "a bar is still marked best after a reset");
    let fills = s.js("return [...document.querySelectorAll('#bars .fill')].map(f => f.style.width);");
    assert!(
        fills
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w == "0px" || w == "0" || w == ""),
        "bar fills after reset: {fills}"
    );
    assert!(!s.seen().0, "the network's image is still shown after a reset");
}

// The digits, in canvas fractions (0..1 from the top left).
/// A "7" in one stroke: the top bar, then the diagonal down to the bottom left.
const SEVEN: &[(f64, f64)] = &[(0.25, 0.22), (0.75, 0.22), (0.45, 0.85)];
/// A "1": one slanted stroke.
const ONE: &[(f64, f64)] = &[(0.58, 0.18), (0.45, 0.85)];
/// The bar that turns `ONE` into a "7".
const ONE_TO_SEVEN: &[(f64, f64)] = &[(0.28, 0.2), (0.6, 0.18)];

/// A "0": an upright ellipse, closed.
fn zero() -> Vec<(f64, f64)> {
    (0..=24)
        .map(|i| {
            let a = i as f64 / 24.0 * std::f64::consts::TAU;
            (0.5 + 0.2 * a.sin(), 0.5 - 0.3 * a.cos())
        })
        .collect()
}

#[test]
fn drawing_page_predicts_digits_drawn_in_headless_chromium() {
    if std::env::var("MNIST_CNN_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        // Straight to stderr: the test harness captures print! and eprint! of passing tests.
        writeln!(std::io::stderr(), "SKIPPED: browser test (MNIST_CNN_SKIP_BROWSER=1)").unwrap();
        return;
    }
    let found = (
        find_binary("CHROME_BIN", "chromium"),
        find_binary("CHROMEDRIVER", "chromedriver"),
    );
    let (chrome, chromedriver) = match found {
        (Ok(c), Ok(d)) => (c, d),
        (c, d) => panic!(
            "the browser test needs headless Chromium and chromedriver: {}. Install the Debian \
             packages `chromium` and `chromium-driver` (apt-get install -y chromium \
             chromium-driver), point CHROME_BIN / CHROMEDRIVER at the binaries, or set \
             MNIST_CNN_SKIP_BROWSER=1 to skip this test",
            [c.err(), d.err()].into_iter().flatten().collect::<Vec<_>>().join("; ")
        ),
    };
    let shots = Path::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .join("browser");

    // Dropped in reverse order: the session (and browser), chromedriver, the server.
    let server = Server::start(&[]);
    let url = server.url.clone();
    let driver = Driver::start(&chromedriver);
    let s = Session::new(&driver, &chrome);
    s.post("/url", &json!({"url": url}));
    assert_eq!(s.get("/title"), json!("mnist-cnn: draw a digit"));
    assert_eq!(s.text("#answer"), "", "no answer before drawing");
    assert!(!s.seen().0, "the network's image is shown before drawing");
    let (_, _, w, h) = s.pad_rect();
    assert!(w >= 200.0 && (w - h).abs() < 1.0, "canvas {w}x{h}");
    // The kinds of pointer the canvas receives, to check that touch and pen reach it as such.
    s.js("window.pointerTypes = [];
          document.getElementById('pad').addEventListener('pointerdown',
              e => window.pointerTypes.push(e.pointerType));");

    // A 7 drawn with the mouse.
    s.draw("mouse", &[SEVEN]);
    s.wait_for_answer("7");
    assert_prediction_shown(&s, 7);
    s.screenshot(&shots, "7");

    s.click("#clear");
    assert_reset(&s);
    assert_eq!(s.text("#status"), "Cleared.");

    // A 0 drawn with a finger (a touch pointer).
    s.draw("touch", &[&zero()]);
    s.wait_for_answer("0");
    assert_prediction_shown(&s, 0);
    s.screenshot(&shots, "0");

    // A 1 drawn with the mouse, then a bar drawn with a pen that makes it a 7; Undo takes
    // the bar away again, and a second Undo empties the canvas.
    s.click("#clear");
    assert_reset(&s);
    s.draw("mouse", &[ONE]);
    s.wait_for_answer("1");
    assert_prediction_shown(&s, 1);
    s.screenshot(&shots, "1");
    s.draw("pen", &[ONE_TO_SEVEN]);
    s.wait_for_answer("7");
    assert_prediction_shown(&s, 7);
    s.click("#undo");
    s.wait_for_answer("1");
    assert_prediction_shown(&s, 1);
    s.click("#undo");
    assert_reset(&s);
    assert_eq!(
        s.js("return window.pointerTypes;"),
        json!(["mouse", "touch", "mouse", "pen"]),
        "the pointer types of the strokes, as the page saw them"
    );
}
