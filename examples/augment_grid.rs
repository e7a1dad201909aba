//! A picture of the training augmentation, for a human to judge: one MNIST digit of each class
//! in the top row, and below it the same digits as six epochs of training would see them.
//!
//! `cargo run --release --example augment_grid [SPEC] [OUT.png]`; SPEC defaults to
//! `rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4`, OUT to `target/augment_grid.png`.
//! Shapes: each cell is one 28x28 image, drawn 3x larger, with a 2-pixel grey gap.

use mnist_cnn::data::{AugmentConfig, Augmenter, Format, load_mnist};

const SIDE: usize = 28;
const ZOOM: usize = 3;
const GAP: usize = 2;
const ROWS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args
        .next()
        .unwrap_or_else(|| "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4".into());
    let out = args.next().unwrap_or_else(|| "target/augment_grid.png".into());
    let cfg: AugmentConfig = spec.parse()?;
    let data = load_mnist(&mnist_cnn::runs::find_mnist()?, Format::Idx)?;
    let train = &data.train;
    // The first training image of each digit.
    let picks: Vec<usize> = (0..10u8)
        .map(|d| {
            (0..train.len())
                .find(|&i| train.get(i).1 == d)
                .expect("every digit occurs")
        })
        .collect();

    let aug = Augmenter::new(cfg, SIDE, SIDE);
    let cell = SIDE * ZOOM + GAP;
    let mut img = image::GrayImage::from_pixel((10 * cell + GAP) as u32, (ROWS * cell + GAP) as u32, image::Luma([96]));
    let (mut pixels, mut scratch) = (vec![0.0f32; SIDE * SIDE], Vec::new());
    for (col, &i) in picks.iter().enumerate() {
        for row in 0..ROWS {
            let src = train.get(i).0;
            if row == 0 {
                for (p, &s) in pixels.iter_mut().zip(src) {
                    *p = s as f32 / 256.0;
                }
            } else {
                // Row r: what epoch r - 1 of a run seeded 0 trains on.
                aug.augment(src, 0, row - 1, i, &mut pixels, &mut scratch);
            }
            for (k, &p) in pixels.iter().enumerate() {
                let v = (p * 256.0).round().clamp(0.0, 255.0) as u8;
                let (x0, y0) = (
                    GAP + col * cell + (k % SIDE) * ZOOM,
                    GAP + row * cell + (k / SIDE) * ZOOM,
                );
                for dy in 0..ZOOM {
                    for dx in 0..ZOOM {
                        img.put_pixel((x0 + dx) as u32, (y0 + dy) as u32, image::Luma([v]));
                    }
                }
            }
        }
    }
    img.save(&out)?;
    println!("{out}: top row the originals, then 6 epochs of {cfg}");
    Ok(())
}
