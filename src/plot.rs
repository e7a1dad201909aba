//! Pictures: training curves from metrics logs (`mnist-cnn plot`), and the confusion matrix as
//! a heat map (`eval --confusion-png`). PNG or SVG by the output's extension; text is drawn with
//! DejaVu Sans, built into the program (assets/fonts), so no system fonts are needed.

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

/// The number after `"key":` in a JSON line of our own log format.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Reads a `train --log` file (.jsonl or .csv). A later record for the same epoch (a resumed
/// run appending to the log) replaces the earlier one.
pub fn read_log(path: &Path) -> Result<Curve, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let label = path
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    let mut rows: Vec<[f64; 4]> = Vec::new();
    let csv = path.extension().is_some_and(|e| e == "csv");
    let mut columns: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || DataError::new(path, format!("line {}: not a metrics record", i + 1));
        let row = if csv {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with("epoch,") {
                columns = line.split(',').map(str::to_string).collect();
                continue;
            }
            let vals: Vec<&str> = line.split(',').collect();
            let get = |k: &str| -> Option<f64> { vals.get(columns.iter().position(|c| c == k)?)?.parse().ok() };
            [
                get("epoch"),
                get("train_loss"),
                get("valid_loss"),
                get("valid_accuracy"),
            ]
        } else {
            if !line.contains("\"type\":\"epoch\"") {
                continue;
            }
            ["epoch", "train_loss", "valid_loss", "valid_accuracy"].map(|k| json_number(line, k))
        };
        let [Some(e), Some(t), Some(v), Some(a)] = row else {
            return Err(bad());
        };
        rows.retain(|r| r[0] != e);
        rows.push([e, t, v, a]);
    }
    if rows.is_empty() {
        return Err(DataError::new(path, "no epoch records to plot"));
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
    let max_loss = curves
        .iter()
        .flat_map(|c| c.train_loss.iter().chain(&c.valid_loss).copied())
        .fold(0.0, f64::max);
    let mut loss = ChartBuilder::on(&top)
        .caption("loss per epoch (solid: validation, thin: training)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_epoch + 0.5, 0.0..max_loss * 1.05)?;
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
        let pts = |v: &[f64]| c.epoch.iter().copied().zip(v.iter().copied()).collect::<Vec<_>>();
        loss.draw_series(LineSeries::new(pts(&c.valid_loss), col.stroke_width(3)))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        loss.draw_series(LineSeries::new(pts(&c.train_loss), col.stroke_width(1)))?;
        loss.draw_series(pts(&c.valid_loss).into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
    }
    loss.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    let min_acc = curves
        .iter()
        .flat_map(|c| c.valid_accuracy.iter().copied())
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
        let pts: Vec<(f64, f64)> = c
            .epoch
            .iter()
            .copied()
            .zip(c.valid_accuracy.iter().map(|a| a * 100.0))
            .collect();
        acc.draw_series(LineSeries::new(pts.clone(), col.stroke_width(3)))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        acc.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
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
                .contains("line 1: not a metrics record")
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
