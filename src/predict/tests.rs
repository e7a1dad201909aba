//! Tests of the preprocessing steps and of the whole pipeline on synthetic images.

use super::*;
use filters::Plane;
use image::{GrayImage, Luma};

/// A dark vertical bar ("1") off-centre on a large white canvas.
fn bar_on_paper() -> GrayImage {
    GrayImage::from_fn(120, 90, |x, y| {
        Luma([if (80..92).contains(&x) && (10..70).contains(&y) {
            20
        } else {
            235
        }])
    })
}

#[test]
fn a_dark_digit_on_paper_becomes_a_light_centred_digit_in_a_20_pixel_box() {
    let out = preprocess(&bar_on_paper()).unwrap();
    assert_eq!(out.dimensions(), (28, 28));
    assert_eq!(out.get_pixel(0, 0)[0], 0, "background black");
    let ink: Vec<(u32, u32)> = out
        .enumerate_pixels()
        .filter(|(_, _, p)| p[0] > 50)
        .map(|(x, y, _)| (x, y))
        .collect();
    let (ys, xs): (Vec<u32>, Vec<u32>) = (ink.iter().map(|p| p.1).collect(), ink.iter().map(|p| p.0).collect());
    let height = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
    assert!((19..=20).contains(&height), "tallest side scaled to 20: {height}");
    let cx = xs.iter().sum::<u32>() as f32 / xs.len() as f32 + 0.5;
    let cy = ys.iter().sum::<u32>() as f32 / ys.len() as f32 + 0.5;
    assert!(
        (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
        "centred: ({cx}, {cy})"
    );
}

#[test]
fn light_on_dark_is_not_inverted_and_blank_images_are_errors() {
    let inverted = GrayImage::from_fn(120, 90, |x, y| Luma([255 - bar_on_paper().get_pixel(x, y)[0]]));
    assert_eq!(preprocess(&inverted).unwrap(), preprocess(&bar_on_paper()).unwrap());
    let blank = GrayImage::from_pixel(50, 50, Luma([240]));
    assert!(preprocess(&blank).unwrap_err().to_string().contains("blank"));
    assert!(as_is(&blank).unwrap_err().to_string().contains("28x28"));
}

#[test]
fn softmax_rows_sum_to_one() {
    let p = softmax_rows(&[1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0], 3);
    for r in &p {
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    assert!(p[0][2] > p[0][1] && p[1][0] > 0.999);
}

/// MNIST's training images from data/mnist (bundled with the repository).
fn mnist_train() -> crate::data::TensorDataset {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::data::load_mnist(&root.join("data/mnist"), crate::data::Format::Idx)
        .expect("the bundled MNIST")
        .train
}

/// The stroke width of an MNIST image as the pipeline measures it (Otsu's threshold).
fn mnist_width(px: &[u8]) -> f32 {
    let p = preprocess::gray_plane(&GrayImage::from_raw(28, 28, px.to_vec()).unwrap());
    let t = preprocess::ink_threshold(&p);
    preprocess::stroke_width(&p, t)
}

#[test]
fn mnist_stroke_width_is_the_measured_constant() {
    let train = mnist_train();
    let mut w: Vec<f32> = (0..2000).map(|i| mnist_width(train.get(i).0)).collect();
    w.sort_by(f32::total_cmp);
    let q = |f: f64| w[((w.len() - 1) as f64 * f) as usize];
    eprintln!(
        "MNIST stroke width: 1% {:.2} 3% {:.2} 25% {:.2} median {:.2} 75% {:.2} 97% {:.2} 99% {:.2}",
        q(0.01),
        q(0.03),
        q(0.25),
        q(0.5),
        q(0.75),
        q(0.97),
        q(0.99)
    );
    assert!(
        (q(0.5) - MNIST_STROKE_WIDTH).abs() < 0.03,
        "median {} vs MNIST_STROKE_WIDTH {MNIST_STROKE_WIDTH}",
        q(0.5)
    );
}

/// A ring ("0") of the given stroke width centred at (cx, cy) with radii (rx, ry): the share of
/// each pixel it covers (4x4 supersampled), 0 to 1.
fn ring(w: u32, h: u32, (cx, cy): (f32, f32), (rx, ry): (f32, f32), width: f32) -> Vec<f32> {
    let mut out = vec![0.0; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let mut c = 0;
            for s in 0..16 {
                let (px, py) = (
                    x as f32 + (s % 4) as f32 / 4.0 + 0.125,
                    y as f32 + (s / 4) as f32 / 4.0 + 0.125,
                );
                let (dx, dy) = ((px - cx) / rx, (py - cy) / ry);
                let r = (dx * dx + dy * dy).sqrt();
                // Distance to the ellipse, roughly, in pixels.
                if ((r - 1.0) * rx.min(ry)).abs() <= width / 2.0 {
                    c += 1;
                }
            }
            out[(y * w + x) as usize] = c as f32 / 16.0;
        }
    }
    out
}

/// Ink (0 to 1 per pixel) drawn dark on paper whose level is `paper(x, y)`.
fn on_paper(w: u32, h: u32, ink: &[f32], paper: impl Fn(u32, u32) -> f32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let p = paper(x, y);
        let v = p * (1.0 - 0.85 * ink[(y * w + x) as usize]);
        Luma([v.round().clamp(0.0, 255.0) as u8])
    })
}

/// The mean absolute difference per pixel of two 28x28 images, at the best shift of up to a
/// pixel each way (centring by mass rounds to whole pixels).
fn mean_abs_diff(a: &GrayImage, b: &GrayImage) -> f32 {
    let mut best = f32::MAX;
    for dy in -1i32..=1 {
        for dx in -1i32..=1 {
            let mut s = 0.0;
            for y in 0..28i32 {
                for x in 0..28i32 {
                    let (xx, yy) = (x + dx, y + dy);
                    let v = if (0..28).contains(&xx) && (0..28).contains(&yy) {
                        b.get_pixel(xx as u32, yy as u32)[0] as f32
                    } else {
                        0.0
                    };
                    s += (a.get_pixel(x as u32, y as u32)[0] as f32 - v).abs();
                }
            }
            best = best.min(s / 784.0);
        }
    }
    best
}

/// The pipeline's stroke width of a prepared 28x28 image.
fn width_of(img: &GrayImage) -> f32 {
    let p = preprocess::gray_plane(img);
    preprocess::stroke_width(&p, preprocess::ink_threshold(&p))
}

#[test]
fn a_lighting_gradient_is_paper_and_the_crop_is_the_digit() {
    let (w, h) = (240, 160);
    let ink = ring(w, h, (80.0, 80.0), (22.0, 34.0), 6.0);
    let flat = preprocess(&on_paper(w, h, &ink, |_, _| 235.0)).unwrap();
    // Light falling from 250 on the left to 70 on the right, and darker at the bottom.
    let lit = on_paper(w, h, &ink, |x, y| {
        250.0 - 180.0 * x as f32 / w as f32 - 30.0 * y as f32 / h as f32
    });
    let got = preprocess(&lit).unwrap();
    assert!(
        mean_abs_diff(&got, &flat) < 6.0,
        "the same digit as on flat paper: {}",
        mean_abs_diff(&got, &flat)
    );
    // The first preprocessing takes the dark side of the page for ink: the crop is the frame.
    let old = preprocess::preprocess_basic(&lit).unwrap();
    assert!(mean_abs_diff(&old, &flat) > 20.0, "{}", mean_abs_diff(&old, &flat));
}

#[test]
fn the_ink_threshold_splits_paper_and_ink() {
    // Textured paper (0..12) and a small share of ink (200..230).
    let p = filters::Plane {
        w: 100,
        h: 10,
        px: (0..1000)
            .map(|i| {
                if i % 50 == 0 {
                    200.0 + (i % 31) as f32
                } else {
                    (i % 13) as f32
                }
            })
            .collect(),
    };
    let t = preprocess::ink_threshold(&p);
    assert!(t > 12.0 && t <= 200.0, "{t}");
}

#[test]
fn a_one_pixel_stroke_comes_out_with_mnist_like_width() {
    let (w, h) = (400, 400);
    let ink = ring(w, h, (200.0, 200.0), (70.0, 110.0), 1.2);
    let img = on_paper(w, h, &ink, |_, _| 250.0);
    let got = width_of(&preprocess(&img).unwrap());
    assert!(
        (0.75 * MNIST_STROKE_WIDTH..1.35 * MNIST_STROKE_WIDTH).contains(&got),
        "width {got} vs MNIST's {MNIST_STROKE_WIDTH}"
    );
    let old = width_of(&preprocess::preprocess_basic(&img).unwrap());
    assert!(
        old < 0.6 * MNIST_STROKE_WIDTH,
        "the first preprocessing leaves it thin: {old}"
    );
}

/// mu11 / mu02 of a plane's values.
fn skew_of(p: &filters::Plane) -> f64 {
    let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
    for y in 0..p.h {
        for x in 0..p.w {
            let v = p.at(x, y) as f64;
            (m, mx, my) = (m + v, mx + v * x as f64, my + v * y as f64);
        }
    }
    let (cx, cy) = (mx / m, my / m);
    let (mut a, mut b) = (0.0, 0.0);
    for y in 0..p.h {
        for x in 0..p.w {
            let v = p.at(x, y) as f64;
            a += v * (x as f64 - cx) * (y as f64 - cy);
            b += v * (y as f64 - cy).powi(2);
        }
    }
    a / b
}

#[test]
fn deskew_reduces_a_sheared_strokes_skew() {
    // A bar leaning right: x = 30 - 0.5 y.
    let p = filters::Plane {
        w: 40,
        h: 40,
        px: (0..1600)
            .map(|i| {
                let (x, y) = ((i % 40) as f32, (i / 40) as f32);
                if (x - (30.0 - 0.5 * y)).abs() < 2.0 && (4.0..36.0).contains(&y) {
                    255.0
                } else {
                    0.0
                }
            })
            .collect(),
    };
    let before = skew_of(&p);
    let after = skew_of(&preprocess::deskew(&p));
    assert!(before < -0.4, "sheared: {before}");
    assert!(after.abs() < 0.05, "upright: {after}");
    // Through the whole pipeline: the slanted bar comes out upright only with deskewing.
    let img = GrayImage::from_fn(40, 40, |x, y| Luma([255 - p.at(x as usize, y as usize) as u8]));
    let slanted = preprocess_with(
        &image::DynamicImage::ImageLuma8(img.clone()).to_rgb8(),
        PreprocessConfig::default(),
    );
    let upright = preprocess_with(
        &image::DynamicImage::ImageLuma8(img).to_rgb8(),
        PreprocessConfig { deskew: true },
    );
    let s = |g: &GrayImage| skew_of(&preprocess::gray_plane(g)).abs();
    assert!(s(&upright.unwrap()) < 0.5 * s(&slanted.unwrap()));
}

#[test]
fn polarity_is_found_for_thin_dark_ink_and_for_mnist() {
    let (w, h) = (500, 500);
    let thin = on_paper(w, h, &ring(w, h, (250.0, 250.0), (60.0, 90.0), 1.0), |_, _| 240.0);
    assert!(preprocess::dark_ink(&preprocess::gray_plane(&thin)));
    let train = mnist_train();
    let mnist = GrayImage::from_raw(28, 28, train.get(0).0.to_vec()).unwrap();
    assert!(!preprocess::dark_ink(&preprocess::gray_plane(&mnist)));
}

#[test]
fn frame_edges_and_specks_are_not_the_digit() {
    let (w, h) = (200, 160);
    let ink = ring(w, h, (110.0, 80.0), (20.0, 32.0), 7.0);
    let clean = preprocess(&on_paper(w, h, &ink, |_, _| 235.0)).unwrap();
    // A dark table along the left and bottom edges, and specks of dirt.
    let messy = on_paper(w, h, &ink, |x, y| {
        if x < 25 || y > 145 {
            60.0
        } else if (x * 7 + y * 13) % 997 == 0 {
            40.0
        } else {
            235.0
        }
    });
    let got = preprocess(&messy).unwrap();
    assert!(mean_abs_diff(&got, &clean) < 6.0, "{}", mean_abs_diff(&got, &clean));
}

#[test]
fn salt_and_pepper_and_noise_leave_the_digit() {
    let (w, h) = (120, 120);
    let ink = ring(w, h, (60.0, 60.0), (18.0, 30.0), 7.0);
    let clean_img = on_paper(w, h, &ink, |_, _| 235.0);
    let clean = preprocess(&clean_img).unwrap();
    let mut rng = crate::rng::Rng::new(3);
    let salted = GrayImage::from_fn(w, h, |x, y| {
        let r = rng.next_f32();
        Luma([if r < 0.03 {
            0
        } else if r > 0.97 {
            255
        } else {
            clean_img.get_pixel(x, y)[0]
        }])
    });
    let got = preprocess(&salted).unwrap();
    assert!(mean_abs_diff(&got, &clean) < 8.0, "{}", mean_abs_diff(&got, &clean));
}

#[test]
fn mnist_images_come_through_nearly_unchanged() {
    let train = mnist_train();
    let n = 200;
    let mut total = 0.0;
    for i in 0..n {
        let img = GrayImage::from_raw(28, 28, train.get(i).0.to_vec()).unwrap();
        // Through every step, ...
        let g = preprocess_steps(&img).unwrap();
        total += mean_abs_diff(&g, &img);
        // ... but an image already in MNIST's form is used as it is.
        assert!(is_mnist_shaped(&img), "training image {i}");
        assert_eq!(preprocess(&img).unwrap(), img);
    }
    let mean = total / n as f32;
    assert!(mean < 6.0, "mean absolute change per pixel {mean}");
}

#[test]
fn only_a_light_centred_digit_on_black_28x28_counts_as_mnist_shaped() {
    let img = GrayImage::from_raw(28, 28, mnist_train().get(0).0.to_vec()).unwrap();
    let mut inverted = img.clone();
    inverted.pixels_mut().for_each(|p| p[0] = 255 - p[0]);
    assert!(!is_mnist_shaped(&inverted), "dark on light");
    // The digit moved 4 pixels right: off-centre, so it is re-centred by the steps.
    let shifted = GrayImage::from_fn(28, 28, |x, y| if x >= 4 { *img.get_pixel(x - 4, y) } else { Luma([0]) });
    assert!(!is_mnist_shaped(&shifted));
    let out = preprocess(&shifted).unwrap();
    assert_ne!(out, shifted);
    assert!(is_mnist_shaped(&out), "the steps give MNIST's form");
    let big = GrayImage::from_fn(56, 56, |x, y| *img.get_pixel(x / 2, y / 2));
    assert!(!is_mnist_shaped(&big), "another size");
    assert!(!is_mnist_shaped(&GrayImage::new(28, 28)), "blank");
}

#[test]
fn low_confidence_is_a_small_top_probability() {
    assert!(is_low_confidence(&[0.4, 0.3, 0.3], 0.5));
    assert!(!is_low_confidence(&[0.1, 0.9], 0.5));
    assert!(!is_low_confidence(&[0.4, 0.3, 0.3], 0.0));
}

#[test]
fn perimeter_counts_each_pixels_sides_facing_off_or_the_edge() {
    let naive = |m: &[bool], w: usize, h: usize| {
        let off = |x: isize, y: isize| {
            x < 0 || y < 0 || x >= w as isize || y >= h as isize || !m[y as usize * w + x as usize]
        };
        (0..w * h)
            .filter(|&i| m[i])
            .map(|i| {
                let (x, y) = ((i % w) as isize, (i / w) as isize);
                [off(x - 1, y), off(x + 1, y), off(x, y - 1), off(x, y + 1)]
                    .iter()
                    .filter(|&&o| o)
                    .count()
            })
            .sum::<usize>()
    };
    let mut r = crate::rng::Rng::new(3);
    for (w, h) in [(1, 1), (1, 6), (7, 1), (12, 9), (31, 40)] {
        for per in [0, 200, 700, 1000] {
            let m: Vec<bool> = (0..w * h).map(|_| r.next_u64() % 1000 < per).collect();
            assert_eq!(preprocess::perimeter(&m, w, h), naive(&m, w, h), "{w}x{h} {per}");
        }
    }
}

#[test]
fn impulses_are_pixels_64_levels_beyond_all_eight_neighbours() {
    let naive = |p: &Plane| {
        let mut n = 0;
        for y in 1..p.h - 1 {
            for x in 1..p.w - 1 {
                let around: Vec<f32> = [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
                    .iter()
                    .map(|&(dx, dy)| p.at(x + dx - 1, y + dy - 1))
                    .collect();
                let lo = around.iter().copied().fold(f32::MAX, f32::min);
                let hi = around.iter().copied().fold(f32::MIN, f32::max);
                let v = p.at(x, y);
                n += usize::from(v - hi > 64.0 || lo - v > 64.0);
            }
        }
        n
    };
    let mut r = crate::rng::Rng::new(4);
    for (w, h) in [(3, 3), (3, 8), (17, 5), (40, 33)] {
        // Mid-grey with specks of black and white.
        let px = (0..w * h)
            .map(|_| match r.next_u64() % 20 {
                0 => 0.0,
                1 => 255.0,
                _ => 100.0 + (r.next_u64() % 40) as f32,
            })
            .collect();
        let p = Plane { w, h, px };
        let got = preprocess::impulses(&p);
        assert_eq!(got, naive(&p), "{w}x{h}");
        let bound = preprocess::impulse_bound(&p);
        assert!(
            bound >= got && bound < w * h / 2,
            "{w}x{h}: bound {bound}, impulses {got}"
        );
        assert!(w * h < 100 || got > 0, "{w}x{h}: some specks");
    }
}

/// `ink_threshold` as first written: the robust sigma's median always selected.
fn plain_ink_threshold(s: &Plane) -> f32 {
    let (t, _) = filters::otsu(&s.px);
    let paper = filters::quantile(&s.px, 0.5);
    let dev: Vec<f32> = s.px.iter().map(|v| (v - paper).abs()).collect();
    let sigma = 1.4826 * filters::quantile(&dev, 0.5);
    t.max(paper + 6.0 * sigma).max(24.0)
}

#[test]
fn the_ink_threshold_skips_only_a_median_it_knows() {
    let plane = |f: &dyn Fn(usize) -> f32| Plane {
        w: 50,
        h: 20,
        px: (0..1000).map(f).collect(),
    };
    let cases = [
        // Cleared paper (over half at 0) and ink: the deviations' median is 0.
        plane(&|i| if i % 9 == 0 { 60.0 + (i % 150) as f32 } else { 0.0 }),
        // Paper at its lowest level in just under half the pixels: selected.
        plane(&|i| {
            if i % 2 == 0 && i > 2 {
                0.0
            } else {
                3.0 + (i % 40) as f32
            }
        }),
        // Textured paper: selected.
        plane(&|i| if i % 50 == 0 { 200.0 } else { (i % 13) as f32 + 0.5 }),
        plane(&|_| 0.0),
    ];
    for (n, s) in cases.iter().enumerate() {
        assert_eq!(
            preprocess::ink_threshold(s).to_bits(),
            plain_ink_threshold(s).to_bits(),
            "case {n}"
        );
    }
}

/// `stroke_width` as first written: the whole plane scaled and masked.
fn plain_stroke_width(p: &Plane, t: f32) -> f32 {
    let on: Vec<usize> = (0..p.px.len()).filter(|&i| p.px[i] >= t).collect();
    if on.is_empty() {
        return 0.0;
    }
    let xs = || on.iter().map(|&i| i % p.w);
    let ys = || on.iter().map(|&i| i / p.w);
    let long = (xs().max().unwrap() - xs().min().unwrap()).max(ys().max().unwrap() - ys().min().unwrap()) + 1;
    let s = 80.0 / long as f32;
    let (big, s) = if s > 1.0 {
        let (w, h) = ((p.w as f32 * s).round() as usize, (p.h as f32 * s).round() as usize);
        (filters::resize(p, w, h), s)
    } else {
        (p.clone(), 1.0)
    };
    let m: Vec<bool> = big.px.iter().map(|&v| v >= t).collect();
    let area = m.iter().filter(|&&v| v).count();
    let perimeter = preprocess::perimeter(&m, big.w, big.h);
    if perimeter == 0 {
        return 0.0;
    }
    2.0 * area as f32 / perimeter as f32 / s * 20.0 / long as f32
}

#[test]
fn stroke_width_measures_only_where_the_plane_is_not_0_and_gets_the_whole_planes_width() {
    let ring_plane = |w: usize, h: usize, centre: (f32, f32), radii: (f32, f32), width: f32| {
        let ink = ring(w as u32, h as u32, centre, radii, width);
        Plane {
            w,
            h,
            px: ink.iter().map(|&v| v * 200.0).collect(),
        }
    };
    let mut faint = ring_plane(120, 90, (40.0, 40.0), (10.0, 15.0), 2.0);
    faint.px[120 * 89 + 119] = 5.0; // below the threshold, far from the digit
    let cases = [
        (ring_plane(88, 110, (44.0, 40.0), (12.0, 20.0), 1.5), 82.0), // small: scaled up
        (ring_plane(300, 200, (150.0, 100.0), (60.0, 80.0), 9.0), 50.0), // large: not scaled
        (faint, 40.0),
        (ring_plane(60, 60, (30.0, 30.0), (12.0, 20.0), 2.0), 0.0), // t = 0: all of it
        (ring_plane(81, 81, (40.0, 40.0), (30.0, 39.0), 3.0), 60.0), // a scale that rounds to 1
        (ring_plane(30, 30, (1.0, 1.0), (4.0, 6.0), 2.0), 30.0),    // against the corner
    ];
    for (n, (p, t)) in cases.iter().enumerate() {
        let got = preprocess::stroke_width(p, *t);
        assert!(got > 0.0, "case {n}");
        assert_eq!(got.to_bits(), plain_stroke_width(p, *t).to_bits(), "case {n}");
    }
}

#[test]
fn the_ink_side_from_level_counts_is_dark_inks_answer() {
    let of_level = preprocess::luma_of_levels();
    // Luma grows with the level (so quantiles of levels are quantiles of lumas), though it is
    // not the level itself for every level (an ulp off for some).
    assert!(of_level.windows(2).all(|p| p[0] < p[1]));
    assert!((0..256).any(|l| of_level[l] != l as f32));
    let mut rng = crate::rng::Rng::new(9);
    let images = [
        bar_on_paper(),
        GrayImage::from_fn(60, 40, |x, y| {
            Luma([if (20..26).contains(&x) && y > 5 { 240 } else { 12 }])
        }),
        GrayImage::from_fn(33, 17, |_, _| Luma([(rng.next_u64() % 256) as u8])),
        GrayImage::from_fn(10, 10, |x, _| Luma([if x < 5 { 0 } else { 255 }])),
        GrayImage::from_fn(1, 1, |_, _| Luma([77])),
        // A lighting gradient with a dark stroke and a light one: neither filter of the
        // background gives one value.
        GrayImage::from_fn(121, 90, |x, y| {
            let paper = 90 + (x + y) as u8 / 2;
            Luma([if x == 40 {
                10
            } else if y == 60 {
                255
            } else {
                paper
            }])
        }),
        // Over 256 pixels wide and high: the filters' column strips (256 levels) in pieces.
        GrayImage::from_fn(300, 270, |x, y| {
            let paper = 60 + ((x + 2 * y) / 5) as u8;
            Luma([if x % 97 == 3 {
                0
            } else if y % 89 == 7 {
                250
            } else {
                paper
            }])
        }),
    ];
    for (i, g) in images.iter().enumerate() {
        let rgb = image::DynamicImage::ImageLuma8(g.clone()).to_rgb8();
        let (w, h) = (g.width() as usize, g.height() as usize);
        let p = preprocess::luma_plane(w, h, g.as_raw(), &of_level);
        let [luma, ..] = preprocess::work_planes(&rgb);
        assert_eq!(p.px, luma.px, "image {i}: the luma of the levels is work_planes' luma");
        let counts = filters::histogram(g.as_raw(), |v| v);
        assert_eq!(
            preprocess::dark_ink_of_levels(&counts, &of_level),
            preprocess::dark_ink(&p),
            "image {i}"
        );
        // The background from the levels is the luma plane's, bit for bit, for either ink.
        for dark in [true, false] {
            let want = preprocess::background(&p, dark);
            let got = preprocess::background_of_levels(w, h, g.as_raw(), &of_level, dark);
            let bits = |p: &Plane| p.px.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "image {i}, dark ink {dark}");
        }
    }
}

/// PNG bytes of an image.
fn png_of(img: image::DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

#[test]
fn transparency_is_laid_over_white_paper() {
    let mut rng = crate::rng::Rng::new(4);
    let rgba = image::RgbaImage::from_fn(17, 9, |x, _| {
        let a = [0, 1, 128, 254, 255][x as usize % 5];
        image::Rgba([0, 1, 2, 3].map(|i| if i == 3 { a } else { (rng.next_u64() % 256) as u8 }))
    });
    // c over white with alpha a, in integers (a pixel's colour weighs a / 255).
    let want = |p: &image::Rgba<u8>| {
        let a = p[3] as u32;
        [0, 1, 2].map(|i| ((p[i] as u32 * a + 255 * (255 - a)) / 255) as u8)
    };
    let got = decode_rgb(&png_of(image::DynamicImage::ImageRgba8(rgba.clone()))).unwrap();
    for (x, y, p) in rgba.enumerate_pixels() {
        assert_eq!(got.get_pixel(x, y).0, want(p), "({x}, {y}) alpha {}", p[3]);
    }
    // Opaque: the colours as they are (a canvas drawn on white).
    let opaque = image::RgbaImage::from_fn(5, 4, |x, y| image::Rgba([x as u8 * 50, y as u8 * 60, 7, 255]));
    let got = decode_rgb(&png_of(image::DynamicImage::ImageRgba8(opaque.clone()))).unwrap();
    assert!(
        opaque
            .enumerate_pixels()
            .all(|(x, y, p)| got.get_pixel(x, y).0 == [p[0], p[1], p[2]])
    );
    // Gray with alpha: each channel the gray over white.
    let la = image::GrayAlphaImage::from_fn(3, 1, |x, _| image::LumaA([100, [0, 128, 255][x as usize]]));
    let got = decode_rgb(&png_of(image::DynamicImage::ImageLumaA8(la))).unwrap();
    assert_eq!(got.as_raw(), &[255, 255, 255, 177, 177, 177, 100, 100, 100]);
}

/// RGB and RGBA files whose pixels are all gray decode as gray (over white where transparent):
/// the levels are `decode_rgb`'s channels, and the digit prepares to the same bytes as from
/// RGB. One coloured pixel anywhere (here in the second block of 256 pixels, or the last
/// pixel) keeps the image RGB.
#[test]
fn rgb_files_of_gray_pixels_decode_as_gray() {
    use image::{DynamicImage, Rgba, RgbaImage};
    let bar = bar_on_paper();
    let (w, h) = bar.dimensions();
    // The bar as an opaque canvas; as RGB; with its paper half transparent (white over white
    // stays white, so the ink is over a lighter paper); and as gray plus alpha.
    let canvas = RgbaImage::from_fn(w, h, |x, y| {
        let v = bar.get_pixel(x, y)[0];
        Rgba([v, v, v, 255])
    });
    let faded = RgbaImage::from_fn(w, h, |x, y| {
        let v = bar.get_pixel(x, y)[0];
        Rgba([v, v, v, if (x + y) % 3 == 0 { 255 } else { 128 }])
    });
    let files = [
        DynamicImage::ImageRgba8(canvas.clone()),
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(canvas.clone()).to_rgb8()),
        DynamicImage::ImageRgba8(faded),
        DynamicImage::ImageLumaA8(DynamicImage::ImageRgba8(canvas.clone()).to_luma_alpha8()),
    ];
    for (i, file) in files.into_iter().enumerate() {
        let bytes = png_of(file);
        let rgb = decode_rgb(&bytes).unwrap();
        let Decoded::Gray(gray) = decode_image(&bytes).unwrap() else {
            panic!("file {i}: gray pixels decode as gray");
        };
        let channel: Vec<u8> = rgb.pixels().map(|p| p[1]).collect();
        assert_eq!(gray.as_raw(), &channel, "file {i}");
        let cfg = PreprocessConfig::default();
        let from_rgb = preprocess_with(&rgb, cfg).unwrap();
        assert_eq!(
            preprocess_decoded(&Decoded::Gray(gray), cfg).unwrap(),
            from_rgb,
            "file {i}"
        );
    }
    // One pixel with colour: in the second block of 256, the last pixel (transparent; the
    // pixels are not a multiple of 256), and the last pixel of an RGB file.
    let mut tinted = canvas.clone();
    tinted.put_pixel(300 % w, 300 / w, Rgba([10, 10, 11, 255]));
    let mut see_through = canvas.clone();
    see_through.put_pixel(w - 1, h - 1, Rgba([10, 11, 10, 100]));
    let mut rgb = DynamicImage::ImageRgba8(canvas).to_rgb8();
    rgb.put_pixel(w - 1, h - 1, image::Rgb([200, 200, 201]));
    for (i, file) in [
        DynamicImage::ImageRgba8(tinted),
        DynamicImage::ImageRgba8(see_through),
        DynamicImage::ImageRgb8(rgb),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = png_of(file);
        assert!(
            matches!(decode_image(&bytes).unwrap(), Decoded::Rgb(_)),
            "coloured file {i}"
        );
    }
}

#[test]
fn an_image_buffer_longer_than_its_pixels_prepares_as_its_pixels() {
    let g = bar_on_paper();
    let rgb = image::DynamicImage::ImageLuma8(g.clone()).to_rgb8();
    let mut long = rgb.as_raw().clone();
    // Past the pixels: 20,000 more black ones if they were read, more than the image has.
    long.extend(vec![0u8; 3 * 20_000]);
    let longer = image::RgbImage::from_raw(rgb.width(), rgb.height(), long).unwrap();
    assert_eq!(
        preprocess_with(&longer, PreprocessConfig::default()).unwrap(),
        preprocess_with(&rgb, PreprocessConfig::default()).unwrap()
    );
}

/// The digit's box from its components' boxes is the box of its pixels: with a speck left out,
/// and when the digit touches a large frame at a lower strength (the raised threshold's path).
#[test]
fn the_digits_box_is_the_box_of_its_pixels() {
    let rect = |p: &mut Plane, (x0, y0, x1, y1): (usize, usize, usize, usize), v: f32| {
        (y0..y1).for_each(|y| p.px[y * p.w + x0..y * p.w + x1].fill(v))
    };
    let mut kept = Plane::filled(80, 60, 0.0);
    rect(&mut kept, (20, 10, 30, 50), 200.0); // the main stroke
    rect(&mut kept, (34, 12, 44, 20), 200.0); // a part near it, over a tenth of its area
    rect(&mut kept, (70, 55, 71, 56), 200.0); // a speck, left out
    let mut framed = Plane::filled(80, 60, 0.0);
    rect(&mut framed, (0, 0, 80, 15), 90.0); // a shadow along the top edge, joined to...
    rect(&mut framed, (40, 10, 46, 55), 220.0); // ... the digit
    for (i, s) in [kept, framed].iter().enumerate() {
        let t = preprocess::ink_threshold(s);
        let (digit, _, got) = preprocess::digit_of(s, t).unwrap_or_else(|| panic!("plane {i}: no digit at {t}"));
        let on: Vec<(usize, usize)> = (0..s.w * s.h)
            .filter(|&i| digit[i])
            .map(|i| (i % s.w, i / s.w))
            .collect();
        let want = (
            on.iter().map(|p| p.0).min().unwrap(),
            on.iter().map(|p| p.1).min().unwrap(),
            on.iter().map(|p| p.0).max().unwrap() + 1,
            on.iter().map(|p| p.1).max().unwrap() + 1,
        );
        assert_eq!(got, want, "plane {i}");
        // The shadow is split off (the raised threshold), the strokes' edges within 2 pixels kept.
        assert!(i == 0 || (got.0, got.2) == (38, 48), "plane {i}: {got:?}");
        assert!(!digit[55 * 80 + 70], "plane {i}: the speck is left out");
    }
}
