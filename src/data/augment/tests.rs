//! Tests of the augmentation (a child of `warp`, so they reach its private helpers).

use super::*;
use crate::data::augment::ElasticConfig;

const S: usize = 28;

/// 10 images 28x28 with varied content (a stroke, a ring, noise), labels 0..9.
fn dataset() -> TensorDataset {
    let mut rng = Rng::new(5);
    let mut px = Vec::with_capacity(10 * S * S);
    for i in 0..10 {
        for y in 0..S {
            for x in 0..S {
                let r = ((x as f32 - 13.5).powi(2) + (y as f32 - 13.5).powi(2)).sqrt();
                let v = if (r - 4.0 - i as f32 * 0.8).abs() < 2.0 || (x + i == y + 3) {
                    255
                } else {
                    (rng.next_u64() % 40) as u8
                };
                px.push(v);
            }
        }
    }
    TensorDataset::new(px, (0..10).collect(), S * S)
}

fn mapped(a: Affine, src: &[u8]) -> Vec<f32> {
    let aug = Augmenter::new(AugmentConfig::default(), S, S);
    let mut out = vec![f32::NAN; S * S];
    let m = a.inverse_matrix(S, S);
    aug.apply(src, &m, &mut Rng::new(0), &mut out, &mut Vec::new(), 1.0);
    out
}

#[test]
fn identity_config_gives_exactly_the_plain_batch() {
    let ds = dataset();
    let idx = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8];
    let (plain, y0) = ds.batch(&idx);
    let aug = Augmenter::new(AugmentConfig::default(), S, S);
    let (x, y) = aug.batch(&ds, &idx, 7, 2);
    assert_eq!(y, y0);
    let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&x), bits(&plain));
    // An elastic field of alpha 0 is zero: the identity too.
    let zero = AugmentConfig::default().with_elastic(Some(ElasticConfig { alpha: 0.0, sigma: 4.0 }));
    let (x, _) = Augmenter::new(zero, S, S).batch(&ds, &idx, 7, 2);
    assert_eq!(bits(&x), bits(&plain));
}

#[test]
fn whole_pixel_shift_moves_the_image_exactly() {
    let ds = dataset();
    let src = ds.get(4).0;
    let a = Affine {
        shift_x: 3.0,
        shift_y: -2.0,
        ..Affine::IDENTITY
    };
    let out = mapped(a, src);
    for y in 0..S {
        for x in 0..S {
            let (sx, sy) = (x as i64 - 3, y as i64 + 2);
            let want = if (0..S as i64).contains(&sx) && (0..S as i64).contains(&sy) {
                src[sy as usize * S + sx as usize] as f32
            } else {
                0.0
            };
            assert_eq!(out[y * S + x], want, "at ({x}, {y})");
        }
    }
}

#[test]
fn quarter_turn_moves_a_pixel_clockwise_about_the_centre() {
    // One bright pixel at column 3, row 5: (-10.5, -8.5) from the centre (13.5, 13.5).
    // Clockwise on screen (y down), (dx, dy) -> (-dy, dx) = (8.5, -10.5): column 22, row 3.
    let mut src = vec![0u8; S * S];
    src[5 * S + 3] = 200;
    let out = mapped(
        Affine {
            angle_deg: 90.0,
            ..Affine::IDENTITY
        },
        &src,
    );
    for (i, &v) in out.iter().enumerate() {
        let want = if i == 3 * S + 22 { 200.0 } else { 0.0 };
        assert!((v - want).abs() < 1e-3, "pixel ({}, {}) = {v}", i % S, i / S);
    }
}

#[test]
fn rotating_back_restores_a_smooth_image_approximately() {
    // A smooth blob pattern, well inside the frame.
    let src: Vec<f32> = (0..S * S)
        .map(|i| {
            let (x, y) = ((i % S) as f32 - 12.0, (i / S) as f32 - 15.0);
            200.0 * (-(x * x / 18.0 + y * y / 8.0)).exp()
        })
        .collect();
    let aug = Augmenter::new(AugmentConfig::default(), S, S);
    let turn = |img: &[f32], deg: f32| {
        let mut out = vec![0.0; S * S];
        let m = Affine {
            angle_deg: deg,
            ..Affine::IDENTITY
        }
        .inverse_matrix(S, S);
        aug.apply(img, &m, &mut Rng::new(0), &mut out, &mut Vec::new(), 1.0);
        out
    };
    let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
    let turned = turn(&src, 23.0);
    assert!(max_diff(&turned, &src) > 50.0, "a 23 degree turn should move the blob");
    // Bilinear interpolation smooths a little each time: a bounded error, largest at the
    // peak (measured: 6.9% of it), small on average.
    let back = turn(&turned, -23.0);
    let err = max_diff(&back, &src);
    let mean = back.iter().zip(&src).map(|(p, q)| (p - q).abs()).sum::<f32>() / src.len() as f32;
    assert!(err < 20.0 && mean < 1.0, "round trip error {err} (mean {mean}) of 200");
}

#[test]
fn transform_is_a_function_of_seed_epoch_and_index() {
    let ds = dataset();
    let cfg: AugmentConfig = "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4".parse().unwrap();
    let aug = Augmenter::new(cfg, S, S);
    let one = |seed, epoch, index| {
        let mut out = vec![0.0; S * S];
        aug.augment(ds.get(index).0, seed, epoch, index, &mut out, &mut Vec::new());
        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(one(1, 0, 3), one(1, 0, 3));
    assert_ne!(one(1, 0, 3), one(1, 1, 3), "another epoch, another transform");
    assert_ne!(one(1, 0, 3), one(2, 0, 3), "another seed, another transform");
    // The same sample in another batch composition gets the same bits.
    let (a, _) = aug.batch(&ds, &[3, 0, 7], 1, 0);
    let (b, _) = aug.batch(&ds, &[9, 8, 3], 1, 0);
    let (a, b) = (a.to_vec(), b.to_vec());
    assert_eq!(a[..S * S], b[2 * S * S..]);
    assert_eq!(a[..S * S].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), one(1, 0, 3));
    // Augmented pixels stay in the plain scale and the image is really changed.
    assert!(a.iter().all(|v| (0.0..=255.0 / 256.0 + 1e-6).contains(v)));
    assert_ne!(a[..S * S], ds.batch(&[3]).0.to_vec()[..]);
}

#[test]
fn elastic_field_has_the_expected_size_and_is_smooth() {
    let e = ElasticConfig::default();
    let aug = Augmenter::new(AugmentConfig::default().with_elastic(Some(e)), S, S);
    let m = Affine::IDENTITY.inverse_matrix(S, S);
    let (mut scratch, mut out) = (Vec::new(), vec![0.0; S * S]);
    // Mean squares of dx and dy over many fields, and of the steps between horizontal
    // and vertical neighbours.
    let (mut sq, mut step_sq) = ([vec![0.0f64; S * S], vec![0.0f64; S * S]], [0.0f64; 2]);
    let draws = 1000;
    for i in 0..draws {
        aug.apply(&[0u8; S * S], &m, &mut Rng::new(i), &mut out, &mut scratch, 1.0);
        for (half, (sq, step_sq)) in sq.iter_mut().zip(&mut step_sq).enumerate() {
            // Row y of the field: dx then dy of that row.
            let d = |x: usize, y: usize| scratch[y * 2 * S + half * S + x] as f64;
            for y in 0..S {
                for x in 0..S {
                    sq[y * S + x] += d(x, y).powi(2) / draws as f64;
                    if x + 1 < S {
                        *step_sq += (d(x + 1, y) - d(x, y)).powi(2) + (d(y, x + 1) - d(y, x)).powi(2);
                    }
                }
            }
        }
    }
    // Uniform(-1, 1) noise has variance 1/3; blurred with zeros outside, pixel (x, y) has
    // variance alpha² / 3 · Σ k_i² (taps landing in the row) · Σ k_j² (in the column).
    let k2 = |p: usize| -> f64 {
        let r = aug.kernel.len() as isize - 1;
        (-r..=r)
            .filter(|&o| (0..S as isize).contains(&(p as isize + o)))
            .map(|o| (aug.kernel[o.unsigned_abs()] as f64).powi(2))
            .sum()
    };
    for (sq, step_sq) in sq.iter().zip(step_sq) {
        for (y, x) in [(13, 13), (0, 0), (0, 14), (20, 5)] {
            let want = (e.alpha as f64).powi(2) / 3.0 * k2(x) * k2(y);
            let got = sq[y * S + x];
            assert!(
                (got / want - 1.0).abs() < 0.15,
                "E[d²] at ({x}, {y}): {got}, expected {want}"
            );
        }
        // In the interior: alpha · 0.041 = 1.4 px rms for sigma 4.
        let centre = sq[13 * S + 13].sqrt();
        assert!((1.2..1.6).contains(&centre), "{centre}");
        // Smooth: neighbours correlate by exp(-1 / 4 sigma²), so they differ by 0.18 times
        // the field's rms (unblurred noise: sqrt(2) times; sigma 1: 0.66 times).
        let step_rms = (step_sq / (draws as f64 * (2 * S * (S - 1)) as f64)).sqrt();
        let rms = (sq.iter().sum::<f64>() / sq.len() as f64).sqrt();
        assert!(
            step_rms < 0.25 * rms,
            "neighbour steps {step_rms} vs field {rms}: not smooth"
        );
    }
}

#[test]
fn loader_batches_are_bit_identical_on_1_and_2_threads() {
    let cfg: AugmentConfig = "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4".parse().unwrap();
    let dl = crate::data::DataLoader::new(dataset(), 4, true, 11).with_augment(cfg);
    let run = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(|| {
                (0..2)
                    .flat_map(|e| dl.epoch(e).map(|b| (b.x.to_vec(), b.y)).collect::<Vec<_>>())
                    .map(|(x, y)| (x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), y))
                    .collect::<Vec<_>>()
            })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one.len(), 6);
    // Augmented, not plain: the loader without augmentation gives other pixels.
    let plain = crate::data::DataLoader::new(dataset(), 4, true, 11);
    assert_ne!(
        one[0].0,
        plain
            .epoch(0)
            .next()
            .unwrap()
            .x
            .to_vec()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

#[test]
fn spec_round_trips_and_bad_specs_say_what_is_wrong() {
    for spec in [
        "none",
        "rotate=10,scale=0.1,shift=2,shear=5",
        "rotate=12.5,elastic=34:4",
        "elastic=0:1.5",
    ] {
        let cfg: AugmentConfig = spec.parse().unwrap();
        assert_eq!(cfg.to_string(), spec);
        assert_eq!(cfg.to_string().parse::<AugmentConfig>().unwrap(), cfg);
    }
    let cfg: AugmentConfig = " shift = 2 , elastic ".parse().unwrap();
    assert_eq!(
        cfg,
        AugmentConfig::default()
            .with_shift_px(2.0)
            .with_elastic(Some(ElasticConfig::default()))
    );
    assert_eq!(cfg.to_string(), "shift=2,elastic=34:4");
    assert!("none".parse::<AugmentConfig>().unwrap().is_none());
    for (spec, says) in [
        ("", "empty augmentation"),
        ("rotate", "rotate needs a value (rotate=DEG)"),
        ("rotate=abc", "rotate must be degrees in [0, 180], got 'abc'"),
        ("rotate=-5", "rotate must be degrees in [0, 180]"),
        ("scale=1", "scale must be a fraction in [0, 1)"),
        ("shift=NaN", "shift must be pixels >= 0"),
        ("shear=90", "shear must be degrees in [0, 90)"),
        ("elastic=34", "elastic takes ALPHA:SIGMA, got '34'"),
        ("elastic=34:0", "elastic SIGMA must be pixels > 0"),
        ("rotate=5,rotate=6", "'rotate' is given twice"),
        ("rotate=5,,shift=1", "empty term"),
        ("none,rotate=5", "'none' cannot be combined"),
        ("zoom=2", "unknown term 'zoom'"),
    ] {
        let err = spec.parse::<AugmentConfig>().unwrap_err();
        assert!(err.contains(says), "{spec:?}: {err}");
    }
    assert!(
        AugmentConfig::default()
            .with_scale(1.5)
            .validate()
            .unwrap_err()
            .contains("scale")
    );
}
