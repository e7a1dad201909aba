//! The JSON API of `mnist-cnn serve`: `POST /api/predict` (an image body, prepared as
//! `predict` prepares it, or JSON pixels already in MNIST's form) and `GET /api/model`, and
//! the JSON errors (`{"error": "..."}`) with their status codes.
//!
//! Shapes: `pixels` is one image (784 values, row by row, 0..1, light digit on black);
//! `batch` is N of them (N, 784).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use image::GrayImage;
use serde::Serialize;
use serde_json::{Value, json};

use crate::predict::{DEFAULT_MIN_CONFIDENCE, SIDE};
use crate::serve::App;
use crate::serve::batcher::{Input, PIXELS, Submit};

/// An error answer: a status and a message, sent as `{"error": message}` (a 503 also says
/// `Retry-After: 1`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// What a request body holds.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Image,
}

/// The image types decoded (Content-Type `image/<one of these>`).
const IMAGE_TYPES: [&str; 12] = [
    "png",
    "jpeg",
    "jpg",
    "pjpeg",
    "bmp",
    "x-bmp",
    "x-ms-bmp",
    "gif",
    "x-portable-graymap",
    "x-portable-anymap",
    "x-portable-pixmap",
    "x-portable-bitmap",
];

/// The body's kind from its Content-Type; without one (or with
/// `application/octet-stream`) from its first bytes. Another type is a 415.
pub fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {what}: send an image (image/png, image/jpeg, image/bmp, image/gif, \
                 image/x-portable-graymap) or application/json"
            ),
        )
    };
    let essence = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    match essence.as_deref() {
        None | Some("application/octet-stream") => {
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                Ok(BodyKind::Json)
            } else if image::guess_format(body).is_ok() {
                Ok(BodyKind::Image)
            } else {
                Err(unsupported(&format!(
                    "{:?} (the body is neither JSON nor a known image format)",
                    essence.as_deref().unwrap_or("(none)")
                )))
            }
        }
        Some(c) if c == "application/json" || c.ends_with("+json") => Ok(BodyKind::Json),
        Some(c) => match c.strip_prefix("image/") {
            Some(sub) if IMAGE_TYPES.contains(&sub) => Ok(BodyKind::Image),
            _ => Err(unsupported(&format!("{c:?}"))),
        },
    }
}

/// `?top=K&preprocessed=1`.
#[derive(Debug, PartialEq, Eq)]
pub struct PredictQuery {
    pub top: usize,
    pub preprocessed: bool,
}

/// Parses the query string; a bad `top` is a 400.
pub fn parse_query(q: Option<&str>) -> Result<PredictQuery, ApiError> {
    let mut out = PredictQuery {
        top: 3,
        preprocessed: false,
    };
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "top" => {
                out.top = v
                    .parse()
                    .ok()
                    .filter(|k| (1..=10).contains(k))
                    .ok_or_else(|| ApiError::bad(format!("top must be 1 to 10, got {v:?}")))?
            }
            "preprocessed" => out.preprocessed = !matches!(v, "0" | "false" | "no"),
            _ => {}
        }
    }
    Ok(out)
}

/// The JSON body: one image or a batch.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelsBody {
    pixels: Option<Vec<f64>>,
    batch: Option<Vec<Vec<f64>>>,
}

/// Images ready for the network (N, 784), and whether they came as a batch.
#[derive(Debug)]
pub struct Prepared {
    pub pixels: Vec<f32>,
    pub rows: usize,
    pub batch: bool,
}

/// The images of a JSON body (`{"pixels": [784]}` or `{"batch": [[784], ...]}`): each of 784
/// finite values in 0..1. Anything else is a 400.
pub fn parse_pixels(body: &[u8]) -> Result<Prepared, ApiError> {
    if let Some(pixels) = one_image(body) {
        return Ok(Prepared {
            pixels,
            rows: 1,
            batch: false,
        });
    }
    let b: PixelsBody = serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))?;
    let (images, batch) = match (b.pixels, b.batch) {
        (Some(p), None) => (vec![p], false),
        (None, Some(b)) if !b.is_empty() => (b, true),
        (None, Some(_)) => return Err(ApiError::bad("bad JSON: \"batch\" is empty")),
        _ => {
            return Err(ApiError::bad(
                "bad JSON: give either \"pixels\" (784 values) or \"batch\" (a list of them)",
            ));
        }
    };
    let mut pixels = Vec::with_capacity(images.len() * PIXELS);
    for (i, img) in images.iter().enumerate() {
        let at = if batch { format!("batch[{i}]") } else { "pixels".into() };
        if img.len() != PIXELS {
            return Err(ApiError::bad(format!(
                "{at} has {} values, not {PIXELS} (28x28, row by row)",
                img.len()
            )));
        }
        if let Some(j) = img.iter().position(|v| !v.is_finite() || !(0.0..=1.0).contains(v)) {
            return Err(ApiError::bad(format!(
                "{at}[{j}] is {}: values must be finite, from 0 to 1",
                img[j]
            )));
        }
        pixels.extend(img.iter().map(|&v| v as f32));
    }
    Ok(Prepared {
        pixels,
        rows: images.len(),
        batch,
    })
}

/// The common body, `{"pixels": [784 values in 0..1]}` (any JSON whitespace), read straight from
/// the bytes: a fifth of a JSON request's server time went to parsing it into `serde_json`'s
/// f64 vectors. Each number is checked against JSON's grammar and read as f64, then f32.
/// `None` for anything else, valid or not: [`parse_pixels`] then reads it with `serde_json`,
/// which says what is wrong.
fn one_image(body: &[u8]) -> Option<Vec<f32>> {
    let mut s = Scan { b: body, i: 0 };
    for token in [&b"{"[..], b"\"pixels\"", b":", b"["] {
        s.skip_space();
        s.expect(token)?;
    }
    let mut pixels = Vec::with_capacity(PIXELS);
    loop {
        s.skip_space();
        // Most of a digit's pixels are paper: a 0 written `0.0` (serde_json, Python's json) or
        // `0` (JavaScript) right before a comma or the `]` is taken whole, without the number
        // parser (the same +0).
        let zero = match &s.b[s.i..] {
            [b'0', b'.', b'0', b',' | b']', ..] => Some(3),
            [b'0', b',' | b']', ..] => Some(1),
            _ => None,
        };
        let v = match zero {
            Some(n) => {
                s.i += n;
                0.0
            }
            None => s.number()?,
        };
        if !(0.0..=1.0).contains(&v) || pixels.len() == PIXELS {
            return None;
        }
        pixels.push(v);
        s.skip_space();
        match s.b.get(s.i)? {
            b',' => s.i += 1,
            b']' => break,
            _ => return None,
        }
    }
    for token in [&b"]"[..], b"}"] {
        s.skip_space();
        s.expect(token)?;
    }
    s.skip_space();
    (s.i == body.len() && pixels.len() == PIXELS).then_some(pixels)
}

/// The powers of ten that f64 holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A cursor over a JSON body, for [`one_image`].
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn skip_space(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, token: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(token).then(|| self.i += token.len())
    }

    /// Skips a run of digits, appending them to `m` (in base 10, wrapping); their count.
    fn digits(&mut self, m: &mut u64) -> usize {
        let from = self.i;
        while let Some(d) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
            *m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        self.i - from
    }

    /// A JSON number, `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, as f64 (correctly
    /// rounded, as `serde_json` reads these), then f32.
    fn number(&mut self) -> Option<f32> {
        let from = self.i;
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let lead = self.b.get(self.i).copied();
        // The digits before and after the point, as one integer `m`.
        let mut m = 0u64;
        let int = self.digits(&mut m);
        if int == 0 || (int > 1 && lead == Some(b'0')) {
            return None;
        }
        let mut frac = 0;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            frac = self.digits(&mut m);
            if frac == 0 {
                return None;
            }
        }
        let mut exp = 0i64;
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            let minus = self.b.get(self.i) == Some(&b'-');
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let mut e = 0u64;
            let n = self.digits(&mut e);
            if n == 0 {
                return None;
            }
            // Past 4 digits, the exponent is left to the standard parser below.
            exp = if n > 4 {
                i64::MAX
            } else if minus {
                -(e as i64)
            } else {
                e as i64
            };
        }
        // Exact when the digits (19 at most, so `m` did not wrap) make an integer below 2^53
        // and the power of ten is exact (10^22 at most): one correctly rounded multiplication
        // or division (Clinger's fast path).
        let e = exp.saturating_sub(frac as i64);
        let exact = (int + frac <= 19 && m < 1 << 53 && (-22..=22).contains(&e)).then(|| {
            let p = POW10[e.unsigned_abs() as usize];
            if e < 0 { m as f64 / p } else { m as f64 * p }
        });
        let v = match exact {
            Some(v) if negative => -v,
            Some(v) => v,
            None => std::str::from_utf8(&self.b[from..self.i]).ok()?.parse().ok()?,
        };
        Some(v as f32)
    }
}

/// What the network sees of an image file's bytes (as `predict` prepares it). An unreadable
/// image is a 400; one where no digit is found (blank) a 422.
pub fn prepare_image(bytes: &[u8]) -> Result<GrayImage, ApiError> {
    let img = crate::predict::decode_image(bytes).map_err(|e| ApiError::bad(e.to_string()))?;
    crate::predict::preprocess_decoded(&img, crate::predict::PreprocessConfig::default())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// The gray image of 784 values in 0..1 (the inverse of `pixel_to_f32`, rounded).
fn to_gray(px: &[f32]) -> GrayImage {
    GrayImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
        let v = px[y as usize * SIDE + x as usize];
        image::Luma([(v * 256.0).round().clamp(0.0, 255.0) as u8])
    })
}

/// One prediction, serialised by its fields straight into the response (no `Value` tree: a
/// dozen allocations fewer per request): digit, probabilities, the top K, the low-confidence
/// flag, in that order.
#[derive(Serialize)]
struct Prediction<'a> {
    digit: usize,
    probabilities: &'a [f32],
    top: Vec<Top>,
    low_confidence: bool,
}

/// One of [`Prediction`]'s top K.
#[derive(Serialize)]
struct Top {
    digit: usize,
    probability: f32,
}

impl<'a> Prediction<'a> {
    fn of(p: &'a [f32], top: usize) -> Self {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
        Prediction {
            digit: order[0],
            probabilities: p,
            top: order
                .iter()
                .take(top)
                .map(|&d| Top {
                    digit: d,
                    probability: p[d],
                })
                .collect(),
            low_confidence: crate::predict::is_low_confidence(p, DEFAULT_MIN_CONFIDENCE),
        }
    }
}

/// The answer to one image: its [`Prediction`], the model, the time taken, and the image the
/// network saw when asked for.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    prediction: Prediction<'a>,
    model: &'a str,
    elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocessed: Option<String>,
}

/// The answer to a batch.
#[derive(Serialize)]
struct BatchAnswer<'a> {
    predictions: Vec<Prediction<'a>>,
    model: &'a str,
    elapsed_ms: f64,
}

/// How much of a body over the limit is still read (and dropped) before the 413, so the
/// client, still sending, reads the answer instead of a reset connection.
const DRAIN_BYTES: usize = 16 << 20;

/// The body if it holds at most `limit` bytes; `None` when it is larger (what follows the limit
/// is read and dropped, up to [`DRAIN_BYTES`]).
/// `declared` (Content-Length, when given) sizes the buffer up front, up to [`RESERVE_BYTES`]
/// (a client cannot make the server reserve more than that before it sends anything).
async fn read_body(
    mut body: axum::body::Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Option<Vec<u8>>, ApiError> {
    use http_body_util::BodyExt;
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(limit.min(RESERVE_BYTES) as u64) as usize));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit.saturating_add(DRAIN_BYTES) {
                break;
            }
        }
    }
    Ok((seen <= limit).then_some(buf))
}

/// The most a body's buffer is sized for before its bytes arrive. Sizing it (instead of growing
/// it frame by frame) gave 24,800-26,600 JSON requests/s against 23,300-23,700 (the tutorial
/// CNN, 64 connections, alternating runs).
const RESERVE_BYTES: usize = 64 << 10;

/// JSON bodies up to this size are parsed on the request's task (about 4 images).
const INLINE_JSON_BYTES: usize = 32 << 10;

/// Uploads of more pixels than this (by their header), or of more bytes than
/// [`WORKER_UPLOAD_BYTES`], or GIFs, are decoded and prepared on tokio's blocking pool; the
/// others by the inference worker that takes them (see [`crate::serve::batcher`]). A photo
/// takes tens of milliseconds, which the requests batched with it would wait for; a drawing
/// (the page sends 280x280) or a scan of a digit takes well under one.
pub const WORKER_UPLOAD_PIXELS: u64 = 1 << 20;

/// See [`WORKER_UPLOAD_PIXELS`]. Decoding time follows the bytes as much as the pixels (a
/// 1-megapixel 16-bit PNG can take 8 MB); the bodies waiting in the queue (1,024 by default)
/// then hold 128 MB at most.
pub const WORKER_UPLOAD_BYTES: usize = 128 << 10;

/// Whether an image body is small enough for an inference worker (see
/// [`WORKER_UPLOAD_PIXELS`]): at most [`WORKER_UPLOAD_BYTES`], not a GIF (its header gives the
/// screen's size, not its frames'), and a header saying at most [`WORKER_UPLOAD_PIXELS`]
/// pixels. False when the header cannot be read (or its reader panics): the blocking pool then
/// says what is wrong with it.
fn is_small_image(body: &[u8]) -> bool {
    if body.len() > WORKER_UPLOAD_BYTES {
        return false;
    }
    std::panic::catch_unwind(|| {
        let r = image::ImageReader::new(std::io::Cursor::new(body))
            .with_guessed_format()
            .ok()?;
        if r.format() == Some(image::ImageFormat::Gif) {
            return None;
        }
        r.into_dimensions().ok()
    })
    .ok()
    .flatten()
    .is_some_and(|(w, h)| u64::from(w) * u64::from(h) <= WORKER_UPLOAD_PIXELS)
}

/// An image body decoded and prepared as `predict` prepares it (one image), and the 28x28
/// image itself when asked for.
fn image_job(body: &[u8], want_image: bool) -> Result<(Input, bool, Option<GrayImage>), ApiError> {
    let img = prepare_image(body).and_then(crate::serve::batcher::network_sized)?;
    let pixels = crate::predict::network_input(&img).collect();
    Ok((Input::Pixels(pixels), false, want_image.then_some(img)))
}

/// The images of a JSON body, and the 28x28 image to show back when asked for.
fn json_job(body: &[u8], want_image: bool) -> Result<(Input, bool, Option<GrayImage>), ApiError> {
    let p = parse_pixels(body)?;
    let seen = (want_image && !p.batch).then(|| to_gray(&p.pixels));
    Ok((Input::Pixels(p.pixels), p.batch, seen))
}

/// `POST /api/predict`.
pub async fn predict(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let query = parse_query(req.uri().query())?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let limit = app.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes (--max-body-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit + DRAIN_BYTES) as u64) {
        return Err(too_large());
    }
    let body = read_body(req.into_body(), limit, declared)
        .await?
        .ok_or_else(too_large)?;
    if body.is_empty() {
        return Err(ApiError::bad("empty body: send an image or JSON pixels"));
    }
    let kind = body_kind(content_type.as_deref(), &body)?;
    let want_image = query.preprocessed;
    let (input, batch, seen) = match kind {
        // A body of up to a few images parses in tens of microseconds: on the request's own
        // task, without the two thread hand-offs of the blocking pool.
        BodyKind::Json if body.len() <= INLINE_JSON_BYTES => json_job(&body, want_image)?,
        BodyKind::Json => tokio::task::spawn_blocking(move || json_job(&body, want_image))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("parsing failed: {e}")))??,
        // An image goes to the inference queue as it is: the worker that takes it prepares it.
        BodyKind::Image if is_small_image(&body) => (Input::Upload(body), false, None),
        // A large one (a photo) on tokio's blocking pool, so that no batch waits for it.
        BodyKind::Image => tokio::task::spawn_blocking(move || image_job(&body, want_image))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("preprocessing failed: {e}")))??,
    };
    let rx = match app.batcher.submit(input) {
        Submit::Queued(rx) => rx,
        Submit::Full => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy (its queue is full): try again shortly",
            ));
        }
        Submit::Stopped => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the inference workers have stopped",
            ));
        }
    };
    let out = rx
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the inference workers have stopped"))??;
    let (probs, seen) = (out.probs, seen.or(out.seen).filter(|_| want_image));
    let elapsed_ms = (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let model = &app.model.architecture;
    if batch {
        let predictions = probs.iter().map(|p| Prediction::of(p, query.top)).collect();
        return Ok(Json(BatchAnswer {
            predictions,
            model,
            elapsed_ms,
        })
        .into_response());
    }
    let preprocessed = seen.map(|img| {
        let png = base64::engine::general_purpose::STANDARD.encode(crate::predict::png_bytes(&img));
        format!("data:image/png;base64,{png}")
    });
    Ok(Json(Answer {
        prediction: Prediction::of(&probs[0], query.top),
        model,
        elapsed_ms,
        preprocessed,
    })
    .into_response())
}

/// `GET /api/model`.
pub async fn model(State(app): State<Arc<App>>) -> Json<Value> {
    Json(serde_json::to_value(&app.model).expect("model information is JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_kinds_by_type_and_by_sniffing() {
        let png = crate::predict::png_bytes(&GrayImage::new(2, 2));
        assert_eq!(body_kind(Some("image/png"), &png).unwrap(), BodyKind::Image);
        assert_eq!(
            body_kind(Some("Application/JSON; charset=utf-8"), b"{}").unwrap(),
            BodyKind::Json
        );
        assert_eq!(body_kind(None, b"  {\"pixels\": []}").unwrap(), BodyKind::Json);
        assert_eq!(
            body_kind(Some("application/octet-stream"), &png).unwrap(),
            BodyKind::Image
        );
        for bad in ["text/plain", "image/webp", "multipart/form-data; boundary=x"] {
            let e = body_kind(Some(bad), &png).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
        assert_eq!(
            body_kind(None, b"hello").unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn small_images_are_told_by_their_header() {
        let png = |w: u32, h: u32| {
            let mut out = Vec::new();
            GrayImage::new(w, h)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        };
        assert!(is_small_image(&png(1024, 1024)));
        assert!(is_small_image(&png(1 << 20, 1)));
        assert!(!is_small_image(&png(1025, 1024)));
        // Over 128 KiB of bytes, however few pixels: a PNG followed by padding.
        let mut long = png(28, 28);
        assert!(is_small_image(&long));
        long.resize(WORKER_UPLOAD_BYTES + 1, 0);
        assert!(!is_small_image(&long));
        // A GIF, whatever its header says.
        let mut gif = Vec::new();
        image::RgbaImage::new(28, 28)
            .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
            .unwrap();
        assert!(!is_small_image(&gif));
        // A header that cannot be read goes to the blocking pool, which says what is wrong.
        assert!(!is_small_image(b"\x89PNG\r\n\x1a\n not really"));
        assert!(!is_small_image(b""));
    }

    #[test]
    fn query_top_and_preprocessed() {
        assert_eq!(
            parse_query(Some("top=5&preprocessed=1")).unwrap(),
            PredictQuery {
                top: 5,
                preprocessed: true
            }
        );
        assert_eq!(parse_query(None).unwrap().top, 3);
        for bad in ["top=0", "top=11", "top=x"] {
            assert_eq!(parse_query(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    /// `serde_json`'s reading of a one-image body, to compare the fast path with.
    fn by_serde(body: &[u8]) -> Option<Vec<u32>> {
        let b: PixelsBody = serde_json::from_slice(body).ok()?;
        let p = b.pixels.filter(|p| p.len() == PIXELS && b.batch.is_none())?;
        p.iter()
            .all(|v| (0.0..=1.0).contains(v))
            .then(|| p.iter().map(|&v| (v as f32).to_bits()).collect())
    }

    #[test]
    fn the_one_image_fast_path_reads_what_serde_json_reads() {
        let mut rng = crate::rng::Rng::new(5);
        let values: Vec<f64> = (0..784)
            .map(|i| match i % 4 {
                0 => 0.0,
                1 => (i % 256) as f64 / 255.0,
                2 => rng.next_f32() as f64,
                _ => 1.0,
            })
            .collect();
        let list = |f: &dyn Fn(f64) -> String| values.iter().map(|&v| f(v)).collect::<Vec<_>>();
        let bodies: Vec<Vec<u8>> = vec![
            serde_json::to_vec(&json!({ "pixels": values })).unwrap(),
            serde_json::to_vec_pretty(&json!({ "pixels": values })).unwrap(),
            format!("{{\"pixels\":[{}]}}", list(&|v| format!("{}", v as f32)).join(",")).into_bytes(),
            format!(
                " {{ \"pixels\" :\r\n[ {} ] }}\n",
                list(&|v| format!("{v:e}")).join(" ,\t")
            )
            .into_bytes(),
            format!(
                "{{\"pixels\":[{}]}}",
                list(&|v| format!("{:E}", v * 1000.0).replace('E', "E-3")).join(",")
            )
            .into_bytes(),
            format!("{{\"pixels\":[{}]}}", list(&|v| format!("{v:.3}")).join(",")).into_bytes(),
            // Over 19 digits: read by the standard library's parser.
            format!("{{\"pixels\":[{}]}}", list(&|v| format!("{v:.25}")).join(",")).into_bytes(),
            format!("{{\"pixels\":[{}]}}", list(&|v| format!("{}e-30", v * 1e30)).join(",")).into_bytes(),
        ];
        // Zeros in every form (the fast path takes `0` and `0.0` before a comma or the `]`),
        // the last value a zero too: ending `0]`, `0.0]`, `0.00]`, `-0.0 ]`, ...
        let forms = ["0", "0.0", "0.00", "-0.0", "0.0 ", "0 ", "0e0", "0.0e1", "0.05"];
        let bodies = bodies.into_iter().chain(forms.iter().enumerate().map(|(k, _)| {
            let mut v = list(&|v| format!("{v}"));
            v.iter_mut()
                .enumerate()
                .filter(|(i, _)| i % 4 == 0 || *i == 783)
                .for_each(|(i, x)| *x = forms[(i + k) % forms.len()].to_string());
            format!("{{\"pixels\":[{}]}}", v.join(",")).into_bytes()
        }));
        for body in &bodies.collect::<Vec<_>>() {
            let fast = one_image(body).map(|p| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert!(fast.is_some(), "{}", String::from_utf8_lossy(&body[..60]));
            assert_eq!(fast, by_serde(body), "{}", String::from_utf8_lossy(&body[..60]));
        }
        // Bodies it leaves to serde_json: other forms, and numbers that are not JSON's.
        let zeros = |first: &str| format!("{{\"pixels\": [{first}{}]}}", ", 0".repeat(783));
        let others = [
            zeros("01"),
            zeros("00"),
            zeros("0.0.0"),
            zeros("1."),
            zeros(".5"),
            zeros("+1"),
            zeros("NaN"),
            zeros("1e"),
            zeros("0x1"),
            zeros("1.5"),
            zeros("-0.5"),
            zeros("0, 0"),
            zeros("0,"),
            format!("{{\"pixels\": [{}]}}", "0, ".repeat(783)),
            format!("{{\"pixels\": [0{}], \"pixels\": []}}", ", 0".repeat(783)),
            format!("{{\"pixels\": [0{}]}} x", ", 0".repeat(783)),
            serde_json::to_string(&json!({"batch": [values]})).unwrap(),
        ];
        for body in &others {
            assert_eq!(one_image(body.as_bytes()), None, "{}", &body[..40]);
        }
        // What serde_json says of those: all errors but the batch.
        let ok: Vec<bool> = others.iter().map(|b| parse_pixels(b.as_bytes()).is_ok()).collect();
        let mut want = vec![false; others.len()];
        want[others.len() - 1] = true;
        assert_eq!(ok, want);
    }

    #[test]
    fn pixels_are_checked() {
        let one = serde_json::to_vec(&json!({"pixels": vec![0.5; 784]})).unwrap();
        let p = parse_pixels(&one).unwrap();
        assert_eq!((p.rows, p.batch, p.pixels.len()), (1, false, 784));
        let two = serde_json::to_vec(&json!({"batch": [vec![0.0; 784], vec![1.0; 784]]})).unwrap();
        let p = parse_pixels(&two).unwrap();
        assert_eq!((p.rows, p.batch, p.pixels[784]), (2, true, 1.0));
        for bad in [
            json!({"pixels": vec![0.5; 783]}),
            json!({"pixels": vec![1.5; 784]}),
            json!({"batch": []}),
            json!({"batch": [vec![0.0; 784], vec![0.0; 10]]}),
            json!({"pixels": vec![0.0; 784], "batch": [vec![0.0; 784]]}),
            json!({"image": 1}),
        ] {
            let e = parse_pixels(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(parse_pixels(b"{\"pixels\": [1e999]}").is_err());
    }

    /// One prediction's JSON: digit, probabilities, the top K, the low-confidence flag.
    fn prediction(p: &[f32], top: usize) -> Value {
        serde_json::to_value(Prediction::of(p, top)).expect("a prediction is JSON")
    }

    #[test]
    fn answers_are_the_json_they_were_built_as_values() {
        // The answers as they were built before (serde_json `Value`s, keys in insertion
        // order): the typed ones have the same keys in the same order and the same values. The
        // probabilities are now written as the f32s they are (0.06647153, where the `Value`
        // wrote the f64 it widened them to, 0.06647153198719025): the same f32 read back.
        fn same(a: &Value, b: &Value) -> bool {
            match (a, b) {
                (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                    x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
                }
                (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
                (Value::Object(x), Value::Object(y)) => {
                    x.keys().eq(y.keys()) && x.values().zip(y.values()).all(|(a, b)| same(a, b))
                }
                _ => a == b,
            }
        }
        let typed_is = |typed: String, want: &Value| {
            let got: Value = serde_json::from_str(&typed).unwrap();
            assert!(same(&got, want), "{typed}\n{want}");
        };
        let value_of = |p: &[f32], top: usize| {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
            let tops: Vec<Value> = order
                .iter()
                .take(top)
                .map(|&d| json!({"digit": d, "probability": p[d]}))
                .collect();
            json!({
                "digit": order[0],
                "probabilities": p,
                "top": tops,
                "low_confidence": crate::predict::is_low_confidence(p, DEFAULT_MIN_CONFIDENCE),
            })
        };
        let mut rng = crate::rng::Rng::new(3);
        let probs: Vec<Vec<f32>> = (0..20)
            .map(|_| {
                let raw: Vec<f32> = (0..10).map(|_| rng.next_f32().powi(8)).collect();
                let sum: f32 = raw.iter().sum();
                raw.iter().map(|v| v / sum).collect()
            })
            .chain([vec![0.1; 10], [vec![1.0], vec![0.0; 9]].concat(), vec![1e-30; 10]])
            .collect();
        for (i, p) in probs.iter().enumerate() {
            let (top, elapsed_ms) = (i % 11, 0.001 * i as f64 + 1.234);
            let pre = (i % 2 == 0).then(|| format!("data:image/png;base64,AAA{i}"));
            let mut v = value_of(p, top);
            v["model"] = json!("bncnn");
            v["elapsed_ms"] = json!(elapsed_ms);
            if let Some(pre) = &pre {
                v["preprocessed"] = json!(pre);
            }
            let typed = Answer {
                prediction: Prediction::of(p, top),
                model: "bncnn",
                elapsed_ms,
                preprocessed: pre,
            };
            typed_is(serde_json::to_string(&typed).unwrap(), &v);
            assert!(same(&prediction(p, top), &value_of(p, top)));
        }
        let batch = BatchAnswer {
            predictions: probs.iter().map(|p| Prediction::of(p, 3)).collect(),
            model: "cnn",
            elapsed_ms: 0.5,
        };
        let values: Vec<Value> = probs.iter().map(|p| value_of(p, 3)).collect();
        let want = json!({"predictions": values, "model": "cnn", "elapsed_ms": 0.5});
        typed_is(serde_json::to_string(&batch).unwrap(), &want);
    }

    #[test]
    fn prediction_orders_the_top_classes() {
        let mut p = vec![0.01f32; 10];
        p[7] = 0.6;
        p[1] = 0.31;
        let v = prediction(&p, 2);
        assert_eq!(v["digit"], 7);
        assert_eq!(v["top"][1]["digit"], 1);
        assert_eq!(v["top"].as_array().unwrap().len(), 2);
        assert_eq!(v["low_confidence"], false);
        p[7] = 0.4;
        assert_eq!(prediction(&p, 3)["low_confidence"], true);
    }
}
