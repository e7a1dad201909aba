//! The legend strip right of the training curves: which colour is which run, what each line
//! style means, and how to read the x axis.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::curves::{Line, MARKER, run_colour};
use super::log::Curve;
use super::render::{DrawResult, Scale};

/// The legend strip: which colour is which run, and what the line styles mean.
pub(super) fn draw_legend<DB: DrawingBackend>(
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
        let col = run_colour(i);
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
        let stroke = line.stroke(ink, s);
        match line.dashes(s) {
            Some((dash, gap)) => area.draw(&DashedPathElement::new(pts, dash, gap, stroke))?,
            None => area.draw(&PathElement::new(pts, stroke))?,
        }
        for style in line.markers(ink, s) {
            area.draw(&Circle::new((mid, y), s.px(MARKER), style))?;
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
