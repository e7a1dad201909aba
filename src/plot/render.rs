//! Rasterising and writing pictures: PNG (drawn supersampled, then box-filtered down and
//! encoded) or SVG (its fonts named as the PNGs draw them), by the output's extension, written
//! atomically; the built-in font; and [`Scale`], the sizes of a drawing in its pixels.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Error;
use crate::checkpoint::atomic_write;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

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
/// functions get a white canvas (a PNG's buffer starts white, an SVG starts with a white
/// rectangle) and the scale of its pixels: [`SUPERSAMPLE`] for PNGs, 1 for SVGs.
pub(super) fn render(
    out: &Path,
    (w, h): (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend, Shift>, f64) -> DrawResult,
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>, f64) -> DrawResult,
) -> crate::Result<()> {
    register_font();
    // The drawing's own errors (plotters' backends) stop at this boundary.
    let err = |e: Box<dyn std::error::Error>| Error::format(out, format!("cannot draw: {e}"));
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
                .map_err(|e| Error::format(out, format!("cannot encode: {e}")))?;
            png.into_inner()
        }
        Some("svg") => {
            let mut s = String::new();
            let area = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
            area.fill(&WHITE).map_err(|e| err(e.into()))?;
            draw_svg(area, 1.0).map_err(err)?;
            svg_fonts(&s).into_bytes()
        }
        _ => return Err(Error::settings("the output's extension must be .png or .svg").at(out)),
    };
    atomic_write(out, &bytes)
}

/// Sizes in the picture's pixels for a drawing at scale `s`.
#[derive(Clone, Copy)]
pub(super) struct Scale(pub(super) f64);

impl Scale {
    pub(super) fn px(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    pub(super) fn width(self, v: f64) -> u32 {
        ((v * self.0).round() as u32).max(1)
    }
    pub(super) fn font(self, size: f64) -> TextStyle<'static> {
        TextStyle::from(("sans-serif", size * self.0).into_font())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
