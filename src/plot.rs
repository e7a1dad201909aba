//! Pictures: training curves from metrics logs (`mnist-cnn plot`), and the confusion matrix as
//! a heat map (`eval --confusion-png`). PNG or SVG by the output's extension; text is drawn with
//! DejaVu Sans, built into the program (assets/fonts), so no system fonts are needed.

use std::cmp::Ordering::Less;
use std::io::Read;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::checkpoint::atomic_write;
use crate::data::DataError;
use crate::metrics::Confusion;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// One run's curves, read from its log.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub label: String,
    pub epoch: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub valid_loss: Vec<f64>,
    pub valid_accuracy: Vec<f64>,
    /// Training accuracy per epoch: NaN where the record has none (older logs) or it was not
    /// finite.
    pub train_accuracy: Vec<f64>,
    /// Where each batch record lies, in epochs of training: (E - 1) + S / samples per epoch,
    /// the samples per epoch estimated as the largest S of the log.
    pub batch_x: Vec<f64>,
    /// The mean training loss of each batch record's batches (NaN: not finite).
    pub batch_loss: Vec<f64>,
}

/// The records of a log's text, as [`parse_records`] reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    /// In epoch order, one per epoch: epoch, training loss, validation loss, validation
    /// accuracy, training accuracy (NaN where absent).
    pub epochs: Vec<[f64; 5]>,
    /// In training order (`.jsonl` only): epoch, batches done in it, samples done in it, mean
    /// loss of the last batches.
    pub batches: Vec<[f64; 4]>,
}

/// The largest metrics log `plot` reads (a 10,000-epoch log is about 2 MB).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// The largest epoch number accepted in a log.
const MAX_EPOCH: f64 = 1e6;

/// The largest batch or sample count accepted in a batch record.
const MAX_COUNT: f64 = 1e12;

/// A record's field as a number: JSON `null` (a value that was not finite) is NaN.
fn json_field(rec: &serde_json::Value, key: &str, kind: &str) -> Result<f64, String> {
    match rec.get(key) {
        Some(serde_json::Value::Null) => Ok(f64::NAN),
        Some(v) => v.as_f64().ok_or_else(|| format!("\"{key}\" is not a number")),
        None => Err(format!("{kind} record without \"{key}\"")),
    }
}

/// A CSV cell as a number: empty (a value that was not finite) is NaN.
fn csv_field(vals: &[&str], columns: &[String], key: &str) -> Result<f64, String> {
    let i = columns
        .iter()
        .position(|c| c == key)
        .ok_or_else(|| format!("no column \"{key}\" (or a row before the column names)"))?;
    match vals.get(i).map(|v| v.trim()) {
        Some("") => Ok(f64::NAN),
        Some(v) => v.parse().map_err(|_| format!("\"{key}\" value {v:?} is not a number")),
        None => Err(format!("row has no \"{key}\" cell")),
    }
}

/// An epoch number: a whole number from 1 to [`MAX_EPOCH`].
fn check_epoch(e: f64) -> Result<f64, String> {
    if (1.0..=MAX_EPOCH).contains(&e) && e.fract() == 0.0 {
        Ok(e)
    } else {
        Err(format!("epoch {e} is not a whole number from 1 to {MAX_EPOCH}"))
    }
}

/// A batch record: epoch, batch, samples (whole numbers) and loss.
fn batch_record(rec: &serde_json::Value) -> Result<[f64; 4], String> {
    let e = check_epoch(json_field(rec, "epoch", "batch")?)?;
    let mut row = [e, 0.0, 0.0, json_field(rec, "loss", "batch")?];
    for (r, k) in row[1..3].iter_mut().zip(["batch", "samples"]) {
        let v = json_field(rec, k, "batch")?;
        if !((0.0..=MAX_COUNT).contains(&v) && v.fract() == 0.0) {
            return Err(format!("\"{k}\" {v} is not a whole number from 0 to {MAX_COUNT}"));
        }
        *r = v;
    }
    Ok(row)
}

/// The records of a log's text (`csv`: the CSV format, else JSON lines). A later record for
/// the same epoch (a resumed run appending to the log) replaces the earlier one; a batch record
/// at or before the last one (the resumed run repeating batches) drops the records from there
/// on. Linear in the text's length whatever it holds.
pub fn parse_records(text: &str, csv: bool) -> Result<Records, String> {
    const KEYS: [&str; 4] = ["epoch", "train_loss", "valid_loss", "valid_accuracy"];
    let mut epochs: std::collections::BTreeMap<u64, [f64; 5]> = Default::default();
    let mut batches: Vec<[f64; 4]> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}", i + 1);
        if line.trim().is_empty() || (csv && line.starts_with('#')) {
            continue;
        }
        let mut row = [0.0; 5];
        if csv {
            if line.starts_with("epoch,") {
                columns = line.split(',').map(str::to_string).collect();
                continue;
            }
            let vals: Vec<&str> = line.split(',').collect();
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = csv_field(&vals, &columns, k).map_err(at)?;
            }
            row[4] = if columns.iter().any(|c| c == "train_accuracy") {
                csv_field(&vals, &columns, "train_accuracy").map_err(at)?
            } else {
                f64::NAN
            };
        } else {
            let rec: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("not a JSON record ({e})")))?;
            match rec.get("type").and_then(|t| t.as_str()) {
                Some("epoch") => {}
                Some("batch") => {
                    let b = batch_record(&rec).map_err(at)?;
                    while batches.last().is_some_and(|l| (l[0], l[2]) >= (b[0], b[2])) {
                        batches.pop();
                    }
                    batches.push(b);
                    continue;
                }
                _ => continue,
            }
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = json_field(&rec, k, "epoch").map_err(at)?;
            }
            row[4] = match rec.get("train_accuracy") {
                None => f64::NAN,
                Some(_) => json_field(&rec, "train_accuracy", "epoch").map_err(at)?,
            };
        }
        let e = check_epoch(row[0]).map_err(at)?;
        epochs.insert(e as u64, row);
    }
    Ok(Records {
        epochs: epochs.into_values().collect(),
        batches,
    })
}

/// Reads a `train --log` file (.jsonl or .csv). A later record for the same epoch (a resumed
/// run appending to the log) replaces the earlier one. Values that were not finite are NaN and
/// leave a gap in the curves.
pub fn read_log(path: &Path) -> Result<Curve, DataError> {
    let err = |m: String| DataError::new(path, m);
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_LOG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_LOG_BYTES {
        return Err(err(format!("larger than {MAX_LOG_BYTES} bytes: not a metrics log")));
    }
    let label = path
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    let csv = path.extension().is_some_and(|e| e == "csv");
    parse_log(&text, csv, label).map_err(err)
}

/// Parses a metrics log's text (CSV when `csv`, else JSON lines) into the curve labelled
/// `label`; [`read_log`] without the file.
pub fn parse_log(text: &str, csv: bool, label: String) -> Result<Curve, String> {
    let r = parse_records(text, csv)?;
    if r.epochs.is_empty() && r.batches.is_empty() {
        return Err("no epoch records to plot".into());
    }
    let per_epoch = r.batches.iter().map(|b| b[2]).fold(0.0, f64::max);
    let col = |j: usize| r.epochs.iter().map(|e| e[j]).collect::<Vec<f64>>();
    Ok(Curve {
        label,
        epoch: col(0),
        train_loss: col(1),
        valid_loss: col(2),
        valid_accuracy: col(3),
        train_accuracy: col(4),
        batch_x: r
            .batches
            .iter()
            .map(|b| b[0] - 1.0 + if per_epoch > 0.0 { b[2] / per_epoch } else { 0.0 })
            .collect(),
        batch_loss: r.batches.iter().map(|b| b[3]).collect(),
    })
}

/// The exponential moving average of `values` with weight `smooth` on the past (0: none), as
/// TensorBoard smooths: debiased, so the first values are not pulled towards 0. A value that
/// is not finite stays a gap and does not enter the average.
pub fn smooth(values: &[f64], smooth: f64) -> Vec<f64> {
    let (mut mean, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return f64::NAN;
            }
            mean = smooth * mean + (1.0 - smooth) * v;
            weight = smooth * weight + (1.0 - smooth);
            mean / weight
        })
        .collect()
}

/// The runs of consecutive finite points of a curve: a value that is not finite is a gap.
fn finite_runs(x: &[f64], y: impl IntoIterator<Item = f64>) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (&x, y) in x.iter().zip(y) {
        if y.is_finite() {
            runs.last_mut().expect("never empty").push((x, y));
        } else if !runs.last().expect("never empty").is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// The top of an axis from 0 that shows every finite value (1 when there is none).
fn axis_top(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if m > 0.0 { (m * 1.05).min(f64::MAX / 2.0) } else { 1.0 }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// PNGs are drawn at this many times their size and scaled down, which smooths the lines'
/// edges (plotters' bitmap backend draws them without anti-aliasing).
const SUPERSAMPLE: u32 = 3;

/// The fonts SVGs name: the DejaVu Sans the PNGs are drawn with (and whose metrics placed the
/// text), else its parent Bitstream Vera Sans, else any sans-serif font.
const SVG_FONTS: &str = "DejaVu Sans, Bitstream Vera Sans, sans-serif";

/// An SVG from plotters with its text as in the PNGs: the font named (plotters writes
/// `sans-serif`, whatever font it measured the text with) and at the PNG's size (plotters writes
/// font sizes divided by 1.24).
fn svg_fonts(svg: &str) -> String {
    let svg = svg.replace("font-family=\"sans-serif\"", &format!("font-family=\"{SVG_FONTS}\""));
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg.as_str();
    while let Some(i) = rest.find("font-size=\"") {
        let (head, tail) = rest.split_at(i + "font-size=\"".len());
        out.push_str(head);
        let end = tail.find('"').unwrap_or(tail.len());
        match tail[..end].parse::<f64>() {
            Ok(v) => out.push_str(&format!("{}", (v * 1.24 * 100.0).round() / 100.0)),
            Err(_) => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The mean of each `f` x `f` block of an RGB picture of `f*w` x `f*h` pixels: the box filter
/// that turns a supersampled drawing into its anti-aliased picture, with no buffer beyond the
/// result (a general resize keeps a float copy of the large picture: 40 MB here).
fn box_downscale(big: &[u8], (w, h): (u32, u32), f: u32) -> image::RgbImage {
    let (w, h, f) = (w as usize, h as usize, f as usize);
    let bw = w * f;
    let mut out = image::RgbImage::new(w as u32, h as u32);
    let mut row = vec![0u32; w * 3];
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        row.fill(0);
        for line in big[y * f * bw * 3..(y + 1) * f * bw * 3].chunks_exact(bw * 3) {
            for (x, px) in line.chunks_exact(3).enumerate() {
                let o = x / f * 3;
                for c in 0..3 {
                    row[o + c] += px[c] as u32;
                }
            }
        }
        let n = (f * f) as u32;
        for (d, &sum) in dst.iter_mut().zip(&row) {
            *d = ((sum + n / 2) / n) as u8;
        }
    }
    out
}

/// Renders with `draw` to `out`, PNG or SVG by extension, written atomically. The drawing
/// functions get the scale of their pixels: [`SUPERSAMPLE`] for PNGs, 1 for SVGs.
fn render(
    out: &Path,
    (w, h): (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend, Shift>, f64) -> DrawResult,
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>, f64) -> DrawResult,
) -> Result<(), DataError> {
    register_font();
    let err = |e: Box<dyn std::error::Error>| DataError::new(out, format!("cannot draw: {e}"));
    let bytes = match out.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            let (bw, bh) = (w * SUPERSAMPLE, h * SUPERSAMPLE);
            let mut buf = vec![255u8; (bw * bh * 3) as usize];
            let area = BitMapBackend::with_buffer(&mut buf, (bw, bh)).into_drawing_area();
            draw(area, SUPERSAMPLE as f64).map_err(err)?;
            let img = box_downscale(&buf, (w, h), SUPERSAMPLE);
            drop(buf);
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| DataError::new(out, format!("cannot encode: {e}")))?;
            png.into_inner()
        }
        Some("svg") => {
            let mut s = String::new();
            draw_svg(SVGBackend::with_string(&mut s, (w, h)).into_drawing_area(), 1.0).map_err(err)?;
            svg_fonts(&s).into_bytes()
        }
        _ => return Err(DataError::new(out, "the output's extension must be .png or .svg")),
    };
    atomic_write(out, &bytes)
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Sizes in the picture's pixels for a drawing at scale `s`.
#[derive(Clone, Copy)]
struct Scale(f64);

impl Scale {
    fn px(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    fn width(self, v: f64) -> u32 {
        ((v * self.0).round() as u32).max(1)
    }
    fn font(self, size: f64) -> TextStyle<'static> {
        TextStyle::from(("sans-serif", size * self.0).into_font())
    }
}

/// What `plot` draws besides the per-epoch curves.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    /// A third panel with the per-batch training loss of `.jsonl` logs (drawn anyway when every
    /// run is one epoch long and has batch records).
    pub batches: bool,
    /// The weight of the past in the exponential moving average of the per-batch loss, from 0
    /// (no smoothing) to below 1.
    pub smooth: f64,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            batches: false,
            smooth: 0.9,
        }
    }
}

/// The width of the legend strip right of the curves.
const LEGEND_W: f64 = 250.0;

/// At most this many points of a per-batch curve are drawn (evenly spaced).
const MAX_BATCH_POINTS: usize = 4000;

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// How a series is drawn: validation (thick, filled markers), training per epoch (dashed,
/// open markers), per-batch loss raw (faint) or smoothed (solid).
#[derive(Clone, Copy, PartialEq)]
enum Line {
    Valid,
    Train,
    Raw,
    Smooth,
}

/// One panel: a chart over x epochs from 0 and `y`, with light grid lines.
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    s: Scale,
) -> Result<Chart<'a, DB>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let from_start = x.start == 0.0;
    let x_labels = if from_start {
        9
    } else {
        (x.end - x.start).min(20.0) as usize + 1
    };
    let mut ch = ChartBuilder::on(area)
        .caption(title, s.font(17.0))
        .margin(s.px(10.0))
        .x_label_area_size(s.px(42.0))
        .y_label_area_size(s.px(62.0))
        .build_cartesian_2d(x, y)?;
    let fmt = |v: &f64| format!("{}", (v * 1000.0).round() / 1000.0);
    let whole = |v: &f64| if v.fract() == 0.0 { fmt(v) } else { String::new() };
    ch.configure_mesh()
        .x_labels(x_labels)
        .y_labels(6)
        .x_label_formatter(if from_start { &fmt } else { &whole })
        .y_label_formatter(&fmt)
        .x_desc("epochs of training")
        .y_desc(y_desc)
        .label_style(s.font(13.0))
        .axis_desc_style(s.font(14.0))
        .axis_style(BLACK.stroke_width(s.width(1.0)))
        .bold_line_style(BLACK.mix(0.12).stroke_width(s.width(1.0)))
        .light_line_style(TRANSPARENT)
        .set_all_tick_mark_size(s.px(4.0))
        .draw()?;
    Ok(ch)
}

/// Draws one series of a run; a lone point gets its value written next to it where `label`
/// gives one (with whether above the point).
#[allow(clippy::too_many_arguments)]
fn series<DB: DrawingBackend>(
    ch: &mut Chart<DB>,
    x: &[f64],
    y: &[f64],
    col: RGBColor,
    line: Line,
    s: Scale,
    label: impl Fn(f64) -> Option<(String, bool)>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let runs = finite_runs(x, y.iter().copied());
    let n: usize = runs.iter().map(Vec::len).sum();
    for run in &runs {
        match line {
            Line::Valid => {
                ch.draw_series(LineSeries::new(run.clone(), col.stroke_width(s.width(2.5))))?;
            }
            Line::Train => {
                let style = col.stroke_width(s.width(1.5));
                ch.draw_series(DashedLineSeries::new(run.clone(), s.px(7.0), s.px(5.0), style))?;
            }
            Line::Raw => {
                ch.draw_series(LineSeries::new(run.clone(), col.mix(0.3).stroke_width(s.width(1.0))))?;
            }
            Line::Smooth => {
                ch.draw_series(LineSeries::new(run.clone(), col.stroke_width(s.width(2.0))))?;
            }
        }
        if n <= 40 && line == Line::Valid {
            ch.draw_series(run.iter().map(|&p| Circle::new(p, s.px(3.5), col.filled())))?;
        }
        if n <= 40 && line == Line::Train {
            let style = WHITE.filled();
            ch.draw_series(run.iter().map(|&p| Circle::new(p, s.px(3.5), style)))?;
            let style = col.stroke_width(s.width(1.5));
            ch.draw_series(run.iter().map(|&p| Circle::new(p, s.px(3.5), style)))?;
        }
    }
    if let (1, Some((text, above))) = (n, label(runs.first().map_or(f64::NAN, |r| r[0].1))) {
        // Beside the point, towards the middle of the chart; above or below it as `label` says
        // (so that two lone points close together keep their labels apart).
        let p = runs[0][0];
        let xr = ch.x_range();
        let (h, dx) = if p.0 > (xr.start + xr.end) / 2.0 {
            (HPos::Right, -s.px(8.0))
        } else {
            (HPos::Left, s.px(8.0))
        };
        let (v, dy) = if above {
            (VPos::Bottom, -s.px(2.0))
        } else {
            (VPos::Top, s.px(2.0))
        };
        let style = s.font(13.0).color(&col).pos(Pos::new(h, v));
        ch.draw_series(std::iter::once(EmptyElement::at(p) + Text::new(text, (dx, dy), style)))?;
    }
    Ok(())
}

/// The first finite value (NaN if none).
fn first_finite(v: &[f64]) -> f64 {
    v.iter().copied().find(|v| v.is_finite()).unwrap_or(f64::NAN)
}

/// Whether the per-batch panel is drawn: asked for, or every run is at most one epoch long and
/// some have batch records (a single point per curve says little).
fn show_batches(curves: &[Curve], opt: &PlotOptions) -> bool {
    opt.batches || (curves.iter().all(|c| c.epoch.len() <= 1) && curves.iter().any(|c| !c.batch_x.is_empty()))
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
    opt: &PlotOptions,
    s: Scale,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(w.saturating_sub(s.px(LEGEND_W) as u32));
    let batches = show_batches(curves, opt);
    let areas = plots.split_evenly((if batches { 3 } else { 2 }, 1));
    let max_x = curves
        .iter()
        .flat_map(|c| c.epoch.iter().chain(&c.batch_x).copied())
        .filter(|x| x.is_finite())
        .fold(1.0, f64::max);
    // With the per-batch loss x runs from the start of training, else around the epochs.
    let xr = if batches { 0.0..max_x * 1.04 } else { 0.5..max_x + 0.5 };
    let max_loss = axis_top(
        curves
            .iter()
            .flat_map(|c| c.train_loss.iter().chain(&c.valid_loss).copied()),
    );
    // Lone points (every run one epoch long) get their values written next to them.
    let lone = curves.iter().all(|c| c.epoch.len() <= 1);
    let mut loss = panel(
        &areas[0],
        "loss per epoch",
        "cross-entropy loss",
        xr.clone(),
        0.0..max_loss,
        s,
    )?;
    for (i, c) in curves.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let valid_above = first_finite(&c.valid_loss).partial_cmp(&first_finite(&c.train_loss)) != Some(Less);
        series(&mut loss, &c.epoch, &c.valid_loss, col, Line::Valid, s, |v| {
            lone.then(|| (format!("validation {v:.3}"), valid_above))
        })?;
        series(&mut loss, &c.epoch, &c.train_loss, col, Line::Train, s, |v| {
            lone.then(|| (format!("training {v:.3}"), !valid_above))
        })?;
    }
    let min_acc = curves
        .iter()
        .flat_map(|c| c.valid_accuracy.iter().chain(&c.train_accuracy).copied())
        .filter(|a| a.is_finite())
        .fold(1.0, f64::min);
    let lo = ((min_acc * 100.0 - 6.0).floor()).clamp(0.0, 94.0);
    let mut acc = panel(&areas[1], "accuracy per epoch", "accuracy %", xr.clone(), lo..100.0, s)?;
    for (i, c) in curves.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let pct = |v: &[f64]| v.iter().map(|a| a * 100.0).collect::<Vec<f64>>();
        let valid_above = first_finite(&c.valid_accuracy).partial_cmp(&first_finite(&c.train_accuracy)) != Some(Less);
        series(&mut acc, &c.epoch, &pct(&c.valid_accuracy), col, Line::Valid, s, |v| {
            lone.then(|| (format!("validation {v:.2}%"), valid_above))
        })?;
        series(&mut acc, &c.epoch, &pct(&c.train_accuracy), col, Line::Train, s, |v| {
            lone.then(|| (format!("training {v:.2}%"), !valid_above))
        })?;
    }
    if batches {
        let top = axis_top(curves.iter().flat_map(|c| c.batch_loss.iter().copied()));
        let title = format!("training loss during the epochs (smoothing {})", opt.smooth);
        let mut b = panel(&areas[2], &title, "cross-entropy loss", xr, 0.0..top, s)?;
        for (i, c) in curves.iter().enumerate() {
            let col = COLORS[i % COLORS.len()];
            let smoothed = smooth(&c.batch_loss, opt.smooth);
            let step = c.batch_x.len().div_ceil(MAX_BATCH_POINTS).max(1);
            let x: Vec<f64> = c.batch_x.iter().step_by(step).copied().collect();
            let raw: Vec<f64> = c.batch_loss.iter().step_by(step).copied().collect();
            let sm: Vec<f64> = smoothed.iter().step_by(step).copied().collect();
            series(&mut b, &x, &raw, col, Line::Raw, s, |_| None)?;
            series(&mut b, &x, &sm, col, Line::Smooth, s, |_| None)?;
        }
        if curves.iter().all(|c| c.batch_x.is_empty()) {
            let (w, h) = areas[2].dim_in_pixel();
            let style = s
                .font(15.0)
                .color(&RGBColor(110, 110, 110))
                .pos(Pos::new(HPos::Center, VPos::Center));
            let note = "no batch records in these logs (CSV logs and older logs have none)";
            areas[2].draw(&Text::new(note, (w as i32 / 2, h as i32 / 2), style))?;
        }
    }
    draw_legend(&legend, curves, batches, opt.smooth, s)?;
    root.present()?;
    Ok(())
}

/// The legend strip: which colour is which run, and what the line styles mean.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    batches: bool,
    smoothing: f64,
    s: Scale,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let left = Pos::new(HPos::Left, VPos::Center);
    let (x0, x1) = (s.px(8.0), s.px(38.0));
    let tx = s.px(46.0);
    let mut y = s.px(30.0);
    area.draw(&Text::new("runs (colour)", (x0, y), s.font(15.0).pos(left)))?;
    for (i, c) in curves.iter().enumerate() {
        y += s.px(22.0);
        let col = COLORS[i % COLORS.len()];
        area.draw(&Rectangle::new(
            [(x0, y - s.px(6.0)), (x1, y + s.px(6.0))],
            col.filled(),
        ))?;
        let mut name: String = c.label.chars().take(24).collect();
        if c.label.chars().count() > 24 {
            name.pop();
            name.push('…');
        }
        area.draw(&Text::new(name, (tx, y), s.font(13.0).pos(left)))?;
    }
    y += s.px(36.0);
    area.draw(&Text::new("lines", (x0, y), s.font(15.0).pos(left)))?;
    let ink = RGBColor(70, 70, 70);
    let mid = (x0 + x1) / 2;
    let key = |y: i32, line: Line, text: &str| -> DrawResult {
        let pts = vec![(x0, y), (x1, y)];
        match line {
            Line::Valid => {
                area.draw(&PathElement::new(pts, ink.stroke_width(s.width(2.5))))?;
                area.draw(&Circle::new((mid, y), s.px(3.5), ink.filled()))?;
            }
            Line::Train => {
                area.draw(&DashedPathElement::new(
                    pts,
                    s.px(7.0),
                    s.px(5.0),
                    ink.stroke_width(s.width(1.5)),
                ))?;
                area.draw(&Circle::new((mid, y), s.px(3.5), WHITE.filled()))?;
                area.draw(&Circle::new((mid, y), s.px(3.5), ink.stroke_width(s.width(1.5))))?;
            }
            Line::Raw => area.draw(&PathElement::new(pts, ink.mix(0.3).stroke_width(s.width(1.0))))?,
            Line::Smooth => area.draw(&PathElement::new(pts, ink.stroke_width(s.width(2.0))))?,
        }
        for (j, t) in text.split('\n').enumerate() {
            area.draw(&Text::new(
                t.to_string(),
                (tx, y + j as i32 * s.px(16.0)),
                s.font(13.0).pos(left),
            ))?;
        }
        Ok(())
    };
    y += s.px(24.0);
    key(y, Line::Valid, "validation, after\neach epoch")?;
    y += s.px(44.0);
    key(
        y,
        Line::Train,
        "training, mean over\nthe epoch (accuracy:\nwhere the log has it)",
    )?;
    y += s.px(60.0);
    if batches {
        key(y, Line::Raw, "training, mean of\neach 10 batches")?;
        y += s.px(44.0);
        key(
            y,
            Line::Smooth,
            &format!("the same smoothed\n(moving average,\nweight {smoothing} on the past)"),
        )?;
        y += s.px(60.0);
    }
    let note = "x: epochs of training;\nthe point at x = E is\nmeasured at the end\nof epoch E";
    for (j, t) in note.split('\n').enumerate() {
        let style = s.font(12.0).color(&RGBColor(90, 90, 90)).pos(left);
        area.draw(&Text::new(t.to_string(), (x0, y + j as i32 * s.px(15.0)), style))?;
    }
    Ok(())
}

/// Draws the training and validation loss and accuracy of each log.
pub fn plot_curves(curves: &[Curve], out: &Path) -> Result<(), DataError> {
    plot_curves_with(curves, &PlotOptions::default(), out)
}

/// [`plot_curves`] with options: the per-batch loss and its smoothing.
pub fn plot_curves_with(curves: &[Curve], opt: &PlotOptions, out: &Path) -> Result<(), DataError> {
    if !(0.0..1.0).contains(&opt.smooth) {
        return Err(DataError::new(
            out,
            format!("smoothing {} is not from 0 to below 1", opt.smooth),
        ));
    }
    let h = if show_batches(curves, opt) { 1050 } else { 760 };
    render(
        out,
        (1100, h),
        |r, s| draw_curves(r, curves, opt, Scale(s)),
        |r, s| draw_curves(r, curves, opt, Scale(s)),
    )
}

/// Viridis (matplotlib's perceptually uniform colour map, CC0), every 8th of its 256 colours.
const VIRIDIS: [[u8; 3]; 33] = [
    [68, 1, 84],
    [71, 13, 96],
    [72, 24, 106],
    [72, 35, 116],
    [71, 45, 123],
    [69, 55, 129],
    [66, 64, 134],
    [62, 73, 137],
    [59, 82, 139],
    [55, 91, 141],
    [51, 99, 141],
    [47, 107, 142],
    [44, 114, 142],
    [41, 122, 142],
    [38, 130, 142],
    [35, 137, 142],
    [33, 145, 140],
    [31, 151, 139],
    [31, 159, 136],
    [33, 166, 133],
    [39, 173, 129],
    [49, 181, 123],
    [61, 188, 116],
    [76, 194, 108],
    [92, 200, 99],
    [110, 206, 88],
    [129, 211, 77],
    [149, 216, 64],
    [170, 220, 50],
    [192, 223, 37],
    [213, 226, 26],
    [234, 229, 26],
    [253, 231, 37],
];

/// The viridis colour at `t` from 0 (dark violet) to 1 (yellow), linearly between anchors.
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let f = t * (VIRIDIS.len() - 1) as f64;
    let i = (f.floor() as usize).min(VIRIDIS.len() - 2);
    let u = f - i as f64;
    let c = |j: usize| (VIRIDIS[i][j] as f64 * (1.0 - u) + VIRIDIS[i + 1][j] as f64 * u).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// The relative luminance of a colour (sRGB, as WCAG defines it), 0 black to 1 white.
fn luminance(c: RGBColor) -> f64 {
    let l = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * l(c.0) + 0.7152 * l(c.1) + 0.0722 * l(c.2)
}

/// Text on a cell of colour `c`: black or white, whichever contrasts more.
fn ink_on(c: RGBColor) -> RGBColor {
    if luminance(c) > 0.179 { BLACK } else { WHITE }
}

/// Where a cell's value lies on the heat map's log colour scale, from 0 to 1: counts from 1 to
/// the largest count, or row shares from 0.1% (and below) to 100%.
fn heat(n: usize, row_total: usize, max: usize, normalize: bool) -> f64 {
    if normalize {
        let f = n as f64 / row_total.max(1) as f64;
        ((f.log10() + 3.0) / 3.0).clamp(0.0, 1.0)
    } else if max <= 1 {
        1.0
    } else {
        (n as f64).ln() / (max as f64).ln()
    }
}

/// A row share as a percentage for a cell: one decimal, never rounded up to 100 or down to 0.
fn percent(n: usize, total: usize) -> String {
    let p = (1000.0 * n as f64 / total.max(1) as f64).round() / 10.0;
    if n == total {
        "100".into()
    } else if p < 0.1 {
        "<0.1".into()
    } else {
        format!("{:.1}", p.min(99.9))
    }
}

fn draw_confusion<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &Confusion,
    names: &[String],
    normalize: bool,
    s: Scale,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let k = c.counts.len();
    let top_centre = Pos::new(HPos::Center, VPos::Top);
    let centre = Pos::new(HPos::Center, VPos::Center);
    let title = format!(
        "confusion matrix: accuracy {:.2}% of {} images",
        100.0 * c.accuracy(),
        c.total()
    );
    root.draw(&Text::new(
        title,
        (w as i32 / 2, s.px(12.0)),
        s.font(20.0).pos(top_centre),
    ))?;
    let what = if normalize {
        "cells: % of the true class's images (each row sums to 100)"
    } else {
        "cells: number of images"
    };
    let sub = format!("{what}; colour on a log scale, empty cells white");
    let grey = RGBColor(90, 90, 90);
    root.draw(&Text::new(
        sub,
        (w as i32 / 2, s.px(40.0)),
        s.font(14.0).color(&grey).pos(top_centre),
    ))?;
    if k == 0 {
        return Ok(());
    }
    let (gx, gy) = (s.px(150.0), s.px(80.0));
    let cell = 600.0 * s.0 / k as f64;
    let at = |i: usize| (i as f64 * cell).round() as i32;
    let side = at(k);
    root.draw(&Rectangle::new(
        [(gx, gy), (gx + side, gy + side)],
        RGBColor(205, 205, 205).filled(),
    ))?;
    let max = c.counts.iter().flatten().copied().max().unwrap_or(0).max(1);
    let gap = s.px(1.0).max(1);
    let size = (cell / s.0 * 0.28).clamp(8.0, 17.0);
    for (t, row) in c.counts.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            let (fill, ink) = if n == 0 {
                (WHITE, RGBColor(160, 160, 160))
            } else {
                let col = viridis(heat(n, total, max, normalize));
                (col, ink_on(col))
            };
            let (x0, y0) = (gx + at(p) + gap, gy + at(t) + gap);
            let (x1, y1) = (gx + at(p + 1), gy + at(t + 1));
            root.draw(&Rectangle::new([(x0, y0), (x1, y1)], fill.filled()))?;
            let text = match (normalize, n) {
                (_, 0) => "0".to_string(),
                (true, _) => percent(n, total),
                (false, _) => n.to_string(),
            };
            let style = s.font(size).color(&ink).pos(centre);
            root.draw(&Text::new(text, ((x0 + x1) / 2, (y0 + y1) / 2), style))?;
        }
    }
    // Class labels: the dataset's names where it has them; a column's name on up to two lines.
    let label = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let right = Pos::new(HPos::Right, VPos::Center);
    for i in 0..k {
        let y = gy + at(i) + (cell / 2.0) as i32;
        root.draw(&Text::new(label(i), (gx - s.px(8.0), y), s.font(15.0).pos(right)))?;
        let name = label(i);
        let lines: Vec<String> = match name.find(['/', ' ']) {
            Some(j) if name.chars().count() > 8 => {
                let j = j + usize::from(name.as_bytes()[j] == b'/');
                vec![name[..j].trim().to_string(), name[j..].trim().to_string()]
            }
            _ => vec![name],
        };
        let x = gx + at(i) + (cell / 2.0) as i32;
        for (j, l) in lines.into_iter().enumerate() {
            let y = gy + side + s.px(8.0) + j as i32 * s.px(17.0);
            root.draw(&Text::new(l, (x, y), s.font(15.0).pos(top_centre)))?;
        }
    }
    let axis = s.font(16.0).pos(centre);
    root.draw(&Text::new(
        "predicted class",
        (gx + side / 2, gy + side + s.px(58.0)),
        axis.clone(),
    ))?;
    let up = axis.transform(FontTransform::Rotate270);
    root.draw(&Text::new("true class", (s.px(18.0), gy + side / 2), up))?;
    // The colour bar, with its scale's ticks.
    let (bx, bw) = (gx + side + s.px(36.0), s.px(22.0));
    for j in 0..side {
        let col = viridis(1.0 - j as f64 / side as f64);
        root.draw(&Rectangle::new([(bx, gy + j), (bx + bw, gy + j + 1)], col.filled()))?;
    }
    root.draw(&Rectangle::new(
        [(bx, gy), (bx + bw, gy + side)],
        BLACK.stroke_width(s.width(1.0)),
    ))?;
    let ticks: Vec<(f64, String)> = if normalize {
        vec![
            (0.0, "≤0.1%".into()),
            (1.0 / 3.0, "1%".into()),
            (2.0 / 3.0, "10%".into()),
            (1.0, "100%".into()),
        ]
    } else {
        let mut v: Vec<(f64, String)> = std::iter::successors(Some(1usize), |p| p.checked_mul(10))
            .take_while(|&p| p <= max)
            .map(|p| (heat(p, 0, max, false), p.to_string()))
            .collect();
        if v.last().is_none_or(|l| 1.0 - l.0 > 0.08) {
            v.push((1.0, max.to_string()));
        }
        v
    };
    let label_at = Pos::new(HPos::Left, VPos::Center);
    for (t, text) in ticks {
        let y = gy + ((1.0 - t) * side as f64).round() as i32;
        root.draw(&PathElement::new(
            vec![(bx + bw, y), (bx + bw + s.px(5.0), y)],
            BLACK.stroke_width(s.width(1.0)),
        ))?;
        root.draw(&Text::new(text, (bx + bw + s.px(8.0), y), s.font(13.0).pos(label_at)))?;
    }
    let unit = if normalize { "% of row" } else { "images" };
    let bottom_centre = Pos::new(HPos::Center, VPos::Bottom);
    root.draw(&Text::new(
        unit,
        (bx + bw / 2, gy - s.px(8.0)),
        s.font(13.0).pos(bottom_centre),
    ))?;
    root.present()?;
    Ok(())
}

/// Draws the confusion matrix as a heat map with the counts in the cells (`normalize`: each
/// cell's share of its row, the true class, in percent), coloured with viridis on a log scale
/// so that the few errors stand out from the many right answers, with a colour bar.
pub fn plot_confusion(c: &Confusion, names: &[String], normalize: bool, out: &Path) -> Result<(), DataError> {
    render(
        out,
        (900, 790),
        |r, s| draw_confusion(r, c, names, normalize, Scale(s)),
        |r, s| draw_confusion(r, c, names, normalize, Scale(s)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jsonl_and_csv_logs_and_a_resumed_epoch_replaces_the_old_record() {
        let dir = std::env::temp_dir().join(format!("mnist-cnn-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("a.jsonl");
        std::fs::write(
            &j,
            "{\"type\":\"header\",\"settings\":{}}\n{\"type\":\"epoch\",\"epoch\":1,\"train_loss\":0.9,\"valid_loss\":0.4,\"valid_accuracy\":0.88,\"lr\":0.1}\n{\"type\":\"epoch\",\"epoch\":1,\"train_loss\":0.8,\"valid_loss\":0.3,\"valid_accuracy\":0.9,\"lr\":0.1}\n{\"type\":\"epoch\",\"epoch\":2,\"train_loss\":0.5,\"valid_loss\":0.2,\"valid_accuracy\":0.95,\"lr\":0.1}\n",
        )
        .unwrap();
        let c = read_log(&j).unwrap();
        assert_eq!(c.label, "a");
        assert_eq!(
            (c.epoch.clone(), c.valid_loss.clone()),
            (vec![1.0, 2.0], vec![0.3, 0.2])
        );
        let csv = dir.join("b.csv");
        std::fs::write(&csv, "# settings: seed=0\nepoch,train_loss,valid_loss,valid_accuracy,lr,seconds,samples_per_sec\n1,0.8,0.3,0.9,0.1,1.0,100\n").unwrap();
        assert_eq!(read_log(&csv).unwrap().valid_accuracy, vec![0.9]);
        std::fs::write(dir.join("e.jsonl"), "{\"type\":\"header\"}\n").unwrap();
        assert!(
            read_log(&dir.join("e.jsonl"))
                .unwrap_err()
                .to_string()
                .contains("no epoch records")
        );
        std::fs::write(dir.join("x.jsonl"), "{\"type\":\"epoch\",\"epoch\":1}\n").unwrap();
        assert!(
            read_log(&dir.join("x.jsonl"))
                .unwrap_err()
                .to_string()
                .contains("line 1: epoch record without \"train_loss\"")
        );
        // Both formats render, and the PNG decodes to the expected size.
        plot_curves(&[c.clone(), read_log(&csv).unwrap()], &dir.join("c.png")).unwrap();
        let img = image::open(dir.join("c.png")).unwrap();
        assert_eq!((img.width(), img.height()), (1100, 760));
        plot_curves(&[c], &dir.join("c.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("accuracy per epoch"));
        assert!(
            plot_curves(&[], &dir.join("c.gif"))
                .unwrap_err()
                .to_string()
                .contains(".png or .svg")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batch_records_training_accuracy_and_a_resumed_runs_repeated_batches() {
        let text = [
            r#"{"type":"batch","epoch":1,"batch":10,"samples":640,"loss":2.0}"#,
            r#"{"type":"batch","epoch":1,"batch":20,"samples":1280,"loss":null}"#,
            r#"{"type":"epoch","epoch":1,"train_loss":1.5,"valid_loss":1.0,"valid_accuracy":0.7,"train_accuracy":0.6}"#,
            r#"{"type":"batch","epoch":2,"batch":10,"samples":640,"loss":1.0}"#,
            // The run was resumed from the end of epoch 1: epoch 2 again, from its start.
            r#"{"type":"batch","epoch":2,"batch":10,"samples":640,"loss":0.9}"#,
            r#"{"type":"batch","epoch":2,"batch":20,"samples":1280,"loss":0.8}"#,
            r#"{"type":"epoch","epoch":2,"train_loss":0.9,"valid_loss":0.7,"valid_accuracy":0.8,"train_accuracy":null}"#,
            r#"{"type":"epoch","epoch":3,"train_loss":0.8,"valid_loss":0.6,"valid_accuracy":0.85}"#,
        ]
        .join("\n");
        let r = parse_records(&text, false).unwrap();
        let b: Vec<(f64, f64)> = r.batches.iter().map(|b| (b[0], b[2])).collect();
        assert_eq!(b, [(1.0, 640.0), (1.0, 1280.0), (2.0, 640.0), (2.0, 1280.0)]);
        assert_eq!(r.batches[2][3], 0.9);
        assert!(r.batches[1][3].is_nan());
        assert_eq!(r.epochs[0][4], 0.6);
        assert!(r.epochs[1][4].is_nan() && r.epochs[2][4].is_nan());
        let bad = r#"{"type":"batch","epoch":1,"batch":10,"samples":-5,"loss":1}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .contains("line 1: \"samples\" -5 is not a whole number")
        );
        let bad = r#"{"type":"batch","epoch":0.5,"batch":10,"samples":5,"loss":1}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .contains("line 1: epoch 0.5 is not a whole number")
        );
        let bad = r#"{"type":"batch","epoch":1,"batch":10,"samples":5}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .contains("batch record without \"loss\"")
        );
        // CSV with a train_accuracy column.
        let csv = "epoch,train_loss,valid_loss,valid_accuracy,train_accuracy\n1,0.5,0.4,0.9,0.8\n2,0.4,0.3,0.92,\n";
        let r = parse_records(csv, true).unwrap();
        assert_eq!(r.epochs[0][4], 0.8);
        assert!(r.epochs[1][4].is_nan());
    }

    #[test]
    fn parsing_stays_linear_on_a_log_that_repeats_its_records() {
        // 200,000 records alternating between epochs and going back in the batches: quadratic
        // bookkeeping would take minutes.
        let mut text = String::new();
        for i in 0..100_000u64 {
            text.push_str(&format!(
                "{{\"type\":\"epoch\",\"epoch\":{},\"train_loss\":1,\"valid_loss\":1,\"valid_accuracy\":0.5}}\n",
                i % 50_000 + 1
            ));
            text.push_str(&format!(
                "{{\"type\":\"batch\",\"epoch\":1,\"batch\":1,\"samples\":{},\"loss\":1}}\n",
                (i * 7919) % 100_000
            ));
        }
        let t = std::time::Instant::now();
        let r = parse_records(&text, false).unwrap();
        assert_eq!(r.epochs.len(), 50_000);
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }

    #[test]
    fn smoothing_is_debiased_and_skips_gaps() {
        let s = smooth(&[1.0, f64::NAN, 3.0], 0.5);
        assert_eq!(s[0], 1.0);
        assert!(s[1].is_nan());
        assert!((s[2] - (0.25 + 1.5) / 0.75).abs() < 1e-12, "{}", s[2]);
        assert_eq!(smooth(&[4.0, 2.0], 0.0), [4.0, 2.0]);
    }

    #[test]
    fn viridis_runs_from_violet_to_yellow_and_text_contrasts_with_it() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
        let l: Vec<f64> = (0..=100).map(|i| luminance(viridis(i as f64 / 100.0))).collect();
        assert!(l.windows(2).all(|w| w[0] < w[1]), "luminance not increasing");
        assert_eq!(ink_on(viridis(0.0)), WHITE);
        assert_eq!(ink_on(viridis(1.0)), BLACK);
        assert_eq!(heat(1, 0, 1000, false), 0.0);
        assert!((heat(10, 0, 1000, false) - 1.0 / 3.0).abs() < 1e-12);
        assert!((heat(1, 100, 0, true) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (percent(1, 3), percent(3, 3), percent(1, 5000), percent(9999, 10000)),
            ("33.3".into(), "100".into(), "<0.1".into(), "99.9".into())
        );
    }

    #[test]
    fn pngs_are_drawn_larger_and_scaled_down_so_a_line_between_pixels_is_shared_by_both() {
        let out = std::env::temp_dir().join(format!("mnist-cnn-supersample-{}.png", std::process::id()));
        // A vertical line 1 pixel wide centred on x = 11: drawn at 3x it covers half of column
        // 10 and half of column 11; without supersampling it would be column 11 alone, black.
        let draw = |r: DrawingArea<BitMapBackend, Shift>, s: f64| -> DrawResult {
            let s = Scale(s);
            r.fill(&WHITE)?;
            r.draw(&Rectangle::new(
                [(s.px(10.5), 0), (s.px(11.5), s.px(20.0))],
                BLACK.filled(),
            ))?;
            Ok(())
        };
        render(&out, (20, 20), draw, |_, _| Ok(())).unwrap();
        let img = image::open(&out).unwrap().to_luma8();
        std::fs::remove_file(&out).unwrap();
        let (a, b) = (img.get_pixel(10, 10)[0], img.get_pixel(11, 10)[0]);
        assert!(
            (60..200).contains(&a) && (60..200).contains(&b),
            "columns 10, 11: {a}, {b}"
        );
        assert!(img.get_pixel(5, 10)[0] == 255 && img.get_pixel(15, 10)[0] == 255);
    }

    #[test]
    fn heat_map_with_long_class_names_and_an_empty_row() {
        let names = crate::data::download::class_names("fashion-mnist");
        assert_eq!(names.len(), 10);
        let mut counts = vec![vec![0usize; 10]; 10];
        for (t, row) in counts.iter_mut().enumerate().skip(1) {
            row[t] = 900 + t;
            row[(t + 4) % 10] = t * 7;
        }
        let c = Confusion { counts, loss: 0.3 };
        let out = std::env::temp_dir().join(format!("mnist-cnn-fashion-cm-{}.png", std::process::id()));
        for normalize in [false, true] {
            plot_confusion(&c, &names, normalize, &out).unwrap();
            let img = image::open(&out).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (900, 790));
            // Row 0 has no images: white cells; row 1's diagonal cell is yellow.
            assert_eq!(img.get_pixel(156, 86).0, [255, 255, 255]);
            let [r, g, b] = img.get_pixel(216, 146).0;
            assert!(r > 180 && g > 180 && b < 100, "{r},{g},{b}");
        }
        if std::env::var_os("MNIST_CNN_KEEP_PICTURES").is_none() {
            std::fs::remove_file(&out).unwrap();
        }
    }
}
