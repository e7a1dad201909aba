//! `mnist-cnn eval --images DIR`: accuracy on a labelled folder of images, overall and per
//! style, through `predict`'s preprocessing; and `eval --preprocess`: an MNIST split put
//! through that preprocessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::eval::EvalArgs;
use crate::Error;
use crate::data::TensorDataset;
use crate::log::finite;
use crate::nn::Module;
use crate::predict::{PreprocessConfig, SIDE};

/// One labelled image.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    pub file: PathBuf,
    pub label: usize,
    pub style: String,
}

/// The labelled images of a folder: from its labels.csv (a header, then file,label[,style]
/// per line) if there is one, else from the image files' names: STYLE_DIGIT_N.ext (style
/// STYLE) or DIGIT_N.ext / DIGIT.ext (style "all"). Sorted by file name.
pub fn labelled_images(dir: &Path) -> crate::Result<Vec<Labelled>> {
    let manifest = dir.join("labels.csv");
    let mut out = Vec::new();
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, "cannot read", e))?;
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let label = f.get(1).and_then(|l| l.parse::<usize>().ok()).filter(|&l| l < 10);
            let (Some(file), Some(label)) = (f.first().filter(|s| !s.is_empty()), label) else {
                return Err(Error::format(
                    &manifest,
                    format!("line {}: expected file,label[,style] with a label 0-9: {line:?}", i + 1),
                ));
            };
            out.push(Labelled {
                file: dir.join(file),
                label,
                style: f.get(2).map_or("all".into(), |s| s.to_string()),
            });
        }
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list", e))?;
        for e in entries {
            let path = e.map_err(|e| Error::io(dir, "cannot list", e))?.path();
            let ext = path
                .extension()
                .map_or(String::new(), |e| e.to_string_lossy().to_lowercase());
            if !["png", "jpg", "jpeg", "bmp", "gif", "pgm", "pnm"].contains(&ext.as_str()) {
                continue;
            }
            let stem = path
                .file_stem()
                .map_or(String::new(), |s| s.to_string_lossy().to_string());
            let parts: Vec<&str> = stem.split('_').collect();
            let Some(k) = parts
                .iter()
                .position(|p| p.len() == 1 && p.as_bytes()[0].is_ascii_digit())
            else {
                return Err(Error::format(
                    &path,
                    "no label in the name (STYLE_DIGIT_N.png or DIGIT_N.png) and no labels.csv in the folder",
                ));
            };
            let style = if k == 0 { "all".into() } else { parts[..k].join("_") };
            out.push(Labelled {
                file: path,
                label: parts[k].parse().expect("one ASCII digit"),
                style,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::format(dir, "no labelled images in this folder"));
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// Right and total, per style (sorted) and overall.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StyleScores {
    pub per_style: BTreeMap<String, (usize, usize)>,
    pub right: usize,
    pub total: usize,
}

impl StyleScores {
    fn add(&mut self, style: &str, right: bool) {
        let e = self.per_style.entry(style.to_string()).or_default();
        e.0 += right as usize;
        e.1 += 1;
        self.right += right as usize;
        self.total += 1;
    }
}

/// Predicts each labelled image (prepared by `prepare`; an image that cannot be prepared
/// counts as wrong and is listed with its error) and scores it.
pub fn score_images(
    images: &[Labelled],
    model: &dyn Module,
    prepare: impl Fn(&Path) -> crate::Result<image::GrayImage> + Sync,
) -> (StyleScores, Vec<String>, Vec<usize>) {
    let prepared: Vec<crate::Result<image::GrayImage>> = images.par_iter().map(|l| prepare(&l.file)).collect();
    let ok: Vec<&image::GrayImage> = prepared.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut digits = Vec::new();
    model.set_training(false);
    for chunk in ok.chunks(500) {
        let x: Vec<f32> = chunk
            .iter()
            .flat_map(|img| crate::predict::network_input(img))
            .collect();
        let logits =
            crate::tensor::no_grad(|| model.forward(&crate::tensor::Tensor::from_vec(x, &[chunk.len(), SIDE * SIDE])));
        digits.extend(crate::ops::argmax_rows(&logits.to_vec(), 10));
    }
    let (mut scores, mut failed, mut predicted) = (StyleScores::default(), Vec::new(), Vec::new());
    let mut d = digits.into_iter();
    for (l, r) in images.iter().zip(&prepared) {
        match r {
            Ok(_) => {
                let p = d.next().expect("one prediction per prepared image");
                predicted.push(p);
                scores.add(&l.style, p == l.label);
            }
            Err(e) => {
                predicted.push(usize::MAX);
                failed.push(e.to_string());
                scores.add(&l.style, false);
            }
        }
    }
    (scores, failed, predicted)
}

pub(crate) fn eval_images(dir: &Path, a: &EvalArgs, model: &dyn Module, source: &str) -> crate::Result<()> {
    crate::tensor::pool::keep_freed_memory();
    let images = labelled_images(dir)?;
    let (scores, failed, _) = score_images(&images, model, |p| a.prep.prepare(p));
    let pct = |r: usize, t: usize| 100.0 * r as f64 / t.max(1) as f64;
    let how = if a.prep.no_preprocess {
        "as they are (--no-preprocess)"
    } else if a.prep.deskew {
        "preprocessed, deskewed"
    } else {
        "preprocessed"
    };
    if a.json {
        let styles: serde_json::Map<String, serde_json::Value> = scores
            .per_style
            .iter()
            .map(|(s, &(r, t))| {
                let v = serde_json::json!({"images": t, "correct": r, "accuracy": finite(pct(r, t) / 100.0, 6)});
                (s.clone(), v)
            })
            .collect();
        out!(
            "{}",
            serde_json::json!({
                "images": scores.total,
                "correct": scores.right,
                "accuracy": finite(pct(scores.right, scores.total) / 100.0, 6),
                "preprocessing": how,
                "styles": styles,
                "failed": failed,
            })
        );
    } else {
        out!("model {source}, {} images in {}, {how}", scores.total, dir.display());
        out!("{:<14} {:>7} {:>9}", "style", "images", "accuracy");
        for (s, &(r, t)) in &scores.per_style {
            out!("{s:<14} {t:>7} {:>8.1}%", pct(r, t));
        }
        out!(
            "{:<14} {:>7} {:>8.1}%",
            "all",
            scores.total,
            pct(scores.right, scores.total)
        );
        for e in &failed {
            eprintln!("could not be prepared (counted wrong): {e}");
        }
    }
    Ok(())
}

/// The split with each image put through `predict`'s preprocessing (as a 28x28 gray image,
/// light on black); an image it finds no digit in becomes black.
pub(crate) fn preprocessed(split: &TensorDataset, deskew: bool) -> TensorDataset {
    let cfg = PreprocessConfig { deskew };
    let n = split.len();
    let images: Vec<Vec<u8>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (px, _) = split.get(i);
            let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, px.to_vec()).expect("28x28 MNIST images");
            crate::predict::preprocess_gray_with(&img, cfg).map_or(vec![0; SIDE * SIDE], |g| g.into_raw())
        })
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| split.label(i) as u8).collect();
    TensorDataset::new(images.concat(), labels, SIDE * SIDE)
}
