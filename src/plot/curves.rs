//! The training-curves chart (`mnist-cnn plot`): loss and accuracy per epoch, and optionally
//! the per-batch loss, one colour a run, in panels beside the legend strip.

use std::cmp::Ordering::Less;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::legend::draw_legend;
use super::log::{Curve, smooth};
use super::render::{DrawResult, Scale, render};
use crate::Error;

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

/// The runs' colours, in order (repeating after the sixth run).
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`th run.
pub(super) fn run_colour(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
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
pub(super) enum Line {
    Valid,
    Train,
    Raw,
    Smooth,
}

/// The radius of a point's marker, in pixels at scale 1.
pub(super) const MARKER: f64 = 3.5;

impl Line {
    /// The stroke of the line, drawn in `col`.
    pub(super) fn stroke(self, col: RGBColor, s: Scale) -> ShapeStyle {
        match self {
            Line::Valid => col.stroke_width(s.width(2.5)),
            Line::Train => col.stroke_width(s.width(1.5)),
            Line::Raw => col.mix(0.3).stroke_width(s.width(1.0)),
            Line::Smooth => col.stroke_width(s.width(2.0)),
        }
    }

    /// The lengths of the dashes and of the gaps between them, for a dashed line.
    pub(super) fn dashes(self, s: Scale) -> Option<(i32, i32)> {
        (self == Line::Train).then(|| (s.px(7.0), s.px(5.0)))
    }

    /// The circles drawn on each point (radius [`MARKER`]), the first under the next: filled
    /// for validation, open (white inside) for training per epoch, none per batch.
    pub(super) fn markers(self, col: RGBColor, s: Scale) -> Vec<ShapeStyle> {
        match self {
            Line::Valid => vec![col.filled()],
            Line::Train => vec![WHITE.filled(), col.stroke_width(s.width(1.5))],
            Line::Raw | Line::Smooth => Vec::new(),
        }
    }

    /// Draws the line through `pts` and, when `markers`, a marker on each point.
    fn draw<DB: DrawingBackend>(
        self,
        ch: &mut Chart<DB>,
        pts: &[(f64, f64)],
        col: RGBColor,
        s: Scale,
        markers: bool,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let stroke = self.stroke(col, s);
        match self.dashes(s) {
            Some((dash, gap)) => ch.draw_series(DashedLineSeries::new(pts.to_vec(), dash, gap, stroke))?,
            None => ch.draw_series(LineSeries::new(pts.to_vec(), stroke))?,
        };
        if markers {
            for style in self.markers(col, s) {
                ch.draw_series(pts.iter().map(|&p| Circle::new(p, s.px(MARKER), style)))?;
            }
        }
        Ok(())
    }
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
        line.draw(ch, run, col, s, n <= 40)?;
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

/// Draws a run's validation and training curves of a per-epoch panel (`[valid, train]`, each
/// value times `scale`). A lone point gets `value` of it written beside it where that gives one,
/// validation above training when its first value is not below training's, else below.
#[allow(clippy::too_many_arguments)]
fn per_epoch<DB: DrawingBackend>(
    ch: &mut Chart<DB>,
    epoch: &[f64],
    [valid, train]: [&[f64]; 2],
    scale: f64,
    col: RGBColor,
    s: Scale,
    value: impl Fn(f64) -> Option<String>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let valid_above = first_finite(valid).partial_cmp(&first_finite(train)) != Some(Less);
    let scaled = |v: &[f64]| v.iter().map(|a| a * scale).collect::<Vec<f64>>();
    series(ch, epoch, &scaled(valid), col, Line::Valid, s, |v| {
        value(v).map(|t| (format!("validation {t}"), valid_above))
    })?;
    series(ch, epoch, &scaled(train), col, Line::Train, s, |v| {
        value(v).map(|t| (format!("training {t}"), !valid_above))
    })
}

/// Whether the per-batch panel is drawn: asked for, or every run is at most one epoch long and
/// some have batch records (a single point per curve says little).
fn show_batches(curves: &[Curve], opt: &PlotOptions) -> bool {
    opt.batches || (curves.iter().all(|c| c.epoch.len() <= 1) && curves.iter().any(|c| !c.batch_x.is_empty()))
}

/// Draws the chart: the loss and accuracy panels (and the per-batch panel), and the legend.
fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
    opt: &PlotOptions,
    s: Scale,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
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
        let ys: [&[f64]; 2] = [&c.valid_loss, &c.train_loss];
        per_epoch(&mut loss, &c.epoch, ys, 1.0, run_colour(i), s, |v| {
            lone.then(|| format!("{v:.3}"))
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
        let ys: [&[f64]; 2] = [&c.valid_accuracy, &c.train_accuracy];
        per_epoch(&mut acc, &c.epoch, ys, 100.0, run_colour(i), s, |v| {
            lone.then(|| format!("{v:.2}%"))
        })?;
    }
    if batches {
        let top = axis_top(curves.iter().flat_map(|c| c.batch_loss.iter().copied()));
        let title = format!("training loss during the epochs (smoothing {})", opt.smooth);
        let mut b = panel(&areas[2], &title, "cross-entropy loss", xr, 0.0..top, s)?;
        for (i, c) in curves.iter().enumerate() {
            let col = run_colour(i);
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

/// Draws the training and validation loss and accuracy of each log.
pub fn plot_curves(curves: &[Curve], out: &Path) -> crate::Result<()> {
    plot_curves_with(curves, &PlotOptions::default(), out)
}

/// [`plot_curves`] with options: the per-batch loss and its smoothing.
pub fn plot_curves_with(curves: &[Curve], opt: &PlotOptions, out: &Path) -> crate::Result<()> {
    if !(0.0..1.0).contains(&opt.smooth) {
        return Err(Error::settings(format!("smoothing {} is not from 0 to below 1", opt.smooth)).at(out));
    }
    let h = if show_batches(curves, opt) { 1050 } else { 760 };
    render(
        out,
        (1100, h),
        |r, s| draw_curves(r, curves, opt, Scale(s)),
        |r, s| draw_curves(r, curves, opt, Scale(s)),
    )
}
