//! Pictures: training curves from metrics logs (`mnist-cnn plot`), and the confusion matrix as
//! a heat map (`eval --confusion-png`). PNG or SVG by the output's extension; text is drawn with
//! DejaVu Sans, built into the program (assets/fonts), so no system fonts are needed.
//!
//! - `log`: reading metrics logs into [`Curve`]s, and [`smooth`];
//! - `render`: PNG (supersampled) and SVG output, the font, sizes at a drawing's scale;
//! - `curves`: the training-curves chart ([`plot_curves`]); `legend`: its legend strip;
//! - `heatmap`: the confusion matrix ([`plot_confusion`]) and the [`viridis`] colour map.

mod curves;
mod heatmap;
mod legend;
mod log;
mod render;

pub use curves::{PlotOptions, plot_curves, plot_curves_with};
pub use heatmap::{plot_confusion, viridis};
pub use log::{Curve, Records, parse_log, parse_records, read_log, smooth};
