//! The confusion matrix as a heat map (`eval --confusion-png`): the viridis colour map on a log
//! scale, cell text that contrasts with its colour, class labels and a colour bar.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::render::{DrawResult, Scale, render};
use crate::metrics::Confusion;

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
pub fn plot_confusion(c: &Confusion, names: &[String], normalize: bool, out: &Path) -> crate::Result<()> {
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
