//! Pictures: training curves from metrics logs (`mnist-cnn plot`), and the confusion matrix as
//! a heat map (`eval --confusion-png`). PNG or SVG by the output's extension; text is drawn with
//! DejaVu Sans, built into the program (assets/fonts), so no system fonts are needed.

use std::io::Read;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
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
}

/// The largest metrics log `plot` reads (a 10,000-epoch log is about 2 MB).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// The largest epoch number accepted in a log.
const MAX_EPOCH: f64 = 1e6;

/// A record's field as a number: JSON `null` (a value that was not finite) is NaN.
fn json_field(rec: &serde_json::Value, key: &str) -> Result<f64, String> {
    match rec.get(key) {
        Some(serde_json::Value::Null) => Ok(f64::NAN),
        Some(v) => v.as_f64().ok_or_else(|| format!("\"{key}\" is not a number")),
        None => Err(format!("epoch record without \"{key}\"")),
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

/// The epoch records of a log's text: (epoch, train loss, validation loss, validation accuracy).
fn parse_records(text: &str, csv: bool) -> Result<Vec<[f64; 4]>, String> {
    const KEYS: [&str; 4] = ["epoch", "train_loss", "valid_loss", "valid_accuracy"];
    let mut rows: Vec<[f64; 4]> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}", i + 1);
        if line.trim().is_empty() || (csv && line.starts_with('#')) {
            continue;
        }
        let row: [f64; 4] = if csv {
            if line.starts_with("epoch,") {
                columns = line.split(',').map(str::to_string).collect();
                continue;
            }
            let vals: Vec<&str> = line.split(',').collect();
            let mut row = [0.0; 4];
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = csv_field(&vals, &columns, k).map_err(at)?;
            }
            row
        } else {
            let rec: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("not a JSON record ({e})")))?;
            if rec.get("type").and_then(|t| t.as_str()) != Some("epoch") {
                continue;
            }
            let mut row = [0.0; 4];
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = json_field(&rec, k).map_err(at)?;
            }
            row
        };
        let e = row[0];
        if !((1.0..=MAX_EPOCH).contains(&e) && e.fract() == 0.0) {
            return Err(at(format!("epoch {e} is not a whole number from 1 to {MAX_EPOCH}")));
        }
        rows.retain(|r| r[0] != e);
        rows.push(row);
    }
    Ok(rows)
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
    let mut rows = parse_records(text, csv)?;
    if rows.is_empty() {
        return Err("no epoch records to plot".into());
    }
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    Ok(Curve {
        label,
        epoch: rows.iter().map(|r| r[0]).collect(),
        train_loss: rows.iter().map(|r| r[1]).collect(),
        valid_loss: rows.iter().map(|r| r[2]).collect(),
        valid_accuracy: rows.iter().map(|r| r[3]).collect(),
    })
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

/// Renders with `draw` to `out`, PNG or SVG by extension, written atomically.
fn render(
    out: &Path,
    (w, h): (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend, Shift>) -> DrawResult,
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<(), DataError> {
    register_font();
    let err = |e: Box<dyn std::error::Error>| DataError::new(out, format!("cannot draw: {e}"));
    let bytes = match out.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            let mut buf = vec![255u8; (w * h * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area()).map_err(err)?;
            let img = image::RgbImage::from_raw(w, h, buf).expect("buffer size");
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| DataError::new(out, format!("cannot encode: {e}")))?;
            png.into_inner()
        }
        Some("svg") => {
            let mut s = String::new();
            draw_svg(SVGBackend::with_string(&mut s, (w, h)).into_drawing_area()).map_err(err)?;
            s.into_bytes()
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

fn draw_curves<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, curves: &[Curve]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let max_epoch = curves.iter().flat_map(|c| c.epoch.iter().copied()).fold(1.0, f64::max);
    let max_loss = axis_top(
        curves
            .iter()
            .flat_map(|c| c.train_loss.iter().chain(&c.valid_loss).copied()),
    );
    let mut loss = ChartBuilder::on(&top)
        .caption("loss per epoch (solid: validation, thin: training)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_epoch + 0.5, 0.0..max_loss)?;
    let epochs = max_epoch as usize;
    let whole = |x: &f64| {
        if x.fract() == 0.0 {
            format!("{x}")
        } else {
            String::new()
        }
    };
    loss.configure_mesh()
        .x_labels(epochs.min(20))
        .x_label_formatter(&whole)
        .x_desc("epoch")
        .y_desc("loss")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let valid = finite_runs(&c.epoch, c.valid_loss.iter().copied());
        for (j, run) in valid.iter().enumerate() {
            let s = loss.draw_series(LineSeries::new(run.clone(), col.stroke_width(3)))?;
            if j == 0 {
                s.label(c.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
            }
            loss.draw_series(run.iter().map(|&p| Circle::new(p, 3, col.filled())))?;
        }
        for run in finite_runs(&c.epoch, c.train_loss.iter().copied()) {
            loss.draw_series(LineSeries::new(run, col.stroke_width(1)))?;
        }
    }
    loss.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    let min_acc = curves
        .iter()
        .flat_map(|c| c.valid_accuracy.iter().copied())
        .filter(|a| a.is_finite())
        .fold(1.0, f64::min);
    let lo = ((min_acc * 100.0 - 2.0).floor()).max(0.0);
    let mut acc = ChartBuilder::on(&bottom)
        .caption("validation accuracy per epoch", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_epoch + 0.5, lo..100.0)?;
    acc.configure_mesh()
        .x_labels(epochs.min(20))
        .x_label_formatter(&whole)
        .x_desc("epoch")
        .y_desc("accuracy %")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        for (j, run) in finite_runs(&c.epoch, c.valid_accuracy.iter().map(|a| a * 100.0))
            .into_iter()
            .enumerate()
        {
            let s = acc.draw_series(LineSeries::new(run.clone(), col.stroke_width(3)))?;
            if j == 0 {
                s.label(c.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
            }
            acc.draw_series(run.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
    }
    acc.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws the training and validation loss and the validation accuracy of each log.
pub fn plot_curves(curves: &[Curve], out: &Path) -> Result<(), DataError> {
    render(out, (900, 800), |r| draw_curves(r, curves), |r| draw_curves(r, curves))
}

fn draw_confusion<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Confusion, names: &[String]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let k = c.counts.len();
    let title = format!(
        "confusion matrix: accuracy {:.2}% of {} images",
        100.0 * c.accuracy(),
        c.total()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(if names.is_empty() { 50 } else { 110 })
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())?;
    // Rows top to bottom are true classes 0..k: row t sits at y = k - 1 - t.
    let label = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < k => {
            let i = if flip { k - 1 - i } else { *i };
            names.get(i).cloned().unwrap_or_else(|| i.to_string())
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k)
        .y_labels(k)
        .x_label_formatter(&|v| label(v, false))
        .y_label_formatter(&|v| label(v, true))
        .x_desc("predicted")
        .y_desc("true")
        .label_style(("sans-serif", 13))
        .draw()?;
    // Colour by the share of the true class's images, so small classes show their errors too.
    let centre = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    for (t, row) in c.counts.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        for (p, &n) in row.iter().enumerate() {
            let share = n as f64 / total as f64;
            let v = (255.0 * (1.0 - share.sqrt())) as u8;
            let y = k - 1 - t;
            let cell = [
                (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
            ];
            chart.draw_series(std::iter::once(Rectangle::new(cell, RGBColor(v, v, 255).filled())))?;
            let ink = if share > 0.4 { WHITE } else { BLACK };
            let at = (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y));
            chart.draw_series(std::iter::once(Text::new(n.to_string(), at, centre.color(&ink))))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Draws the confusion matrix as a heat map with the counts in the cells.
pub fn plot_confusion(c: &Confusion, names: &[String], out: &Path) -> Result<(), DataError> {
    render(
        out,
        (760, 700),
        |r| draw_confusion(r, c, names),
        |r| draw_confusion(r, c, names),
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
        assert_eq!((img.width(), img.height()), (900, 800));
        plot_curves(&[c], &dir.join("c.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation accuracy"));
        assert!(
            plot_curves(&[], &dir.join("c.gif"))
                .unwrap_err()
                .to_string()
                .contains(".png or .svg")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
