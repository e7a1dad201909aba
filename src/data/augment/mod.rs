//! Data augmentation: seeded random affine transforms (rotation, scale, shift, shear) with an
//! optional elastic distortion (Simard, Steinkraus and Platt 2003), applied to u8 images as a
//! training batch is made.
//!
//! Shapes: an image is H x W pixels, row-major (H rows of W), u8 0..=255; the output is f32
//! pixel/256, the scale of [`TensorDataset::batch`](crate::data::TensorDataset::batch). x is the column (to the right), y the row
//! (down); pixel centres are at whole coordinates and the image centre is c = ((W-1)/2, (H-1)/2).
//!
//! The map: output pixel p samples the source, bilinearly (zero outside), at
//! `c + A⁻¹ (p + d(p) - c - t)`, with `A = R(angle) · Shear(shear) · scale`. So the source is
//! scaled, sheared along x, turned by the angle (clockwise on screen, as y points down) about
//! its centre and shifted by t = (shift_x, shift_y); d is the elastic displacement field (zero
//! without elastic distortion). The 2x3 matrix of the inverse map is computed once per sample.
//!
//! Determinism: a sample's transform is drawn from its own stream, fixed by (seed, epoch, index
//! of the sample in its dataset) only ([`Augmenter::sample_rng`]), so it does not depend on the
//! batch it lands in, the number of threads or where a resumed run starts; each sample's output
//! depends only on its own pixels and stream.
//!
//! On the command line (`bench --augment SPEC`): `none`, or comma-separated terms
//! `rotate=DEG,scale=FRACTION,shift=PIXELS,shear=DEG,elastic[=ALPHA:SIGMA]`, each optional.

mod config;
mod warp;

pub use config::{AugmentConfig, ElasticConfig};
pub use warp::{Affine, Augmenter};
