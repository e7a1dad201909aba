//! `mnist-cnn predict`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::Error;
use crate::checkpoint::atomic_write;
use crate::log::finite;

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The weights to use (safetensors) [default: the newest run's model.safetensors under
    /// runs/ (or $MNIST_CNN_RUNS_DIR), else the model built into the program].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Images to classify; `-` reads one image from standard input.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Print one JSON array instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Show the K most likely classes (1 to 10) instead of all ten probabilities.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: Option<u8>,
    /// Flag a prediction as "low confidence" when its top probability is below P (0 to 1): the
    /// image is probably not a digit the model knows.
    #[arg(long, value_name = "P", default_value_t = crate::predict::DEFAULT_MIN_CONFIDENCE, value_parser = probability)]
    pub min_confidence: f32,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Write what the network saw (28x28 PNG per image) into this directory.
    #[arg(long, value_name = "DIR")]
    pub save_preprocessed: Option<PathBuf>,
}

/// How images are prepared for the network (`predict` and `eval --images`).
#[derive(Args, Debug, Clone, Copy)]
pub struct PrepArgs {
    /// Take 28x28 images as they are (light digit on black, as MNIST) instead of preparing them
    /// the way MNIST was made (lighting and paper removed, ink found by Otsu's threshold,
    /// cropped to the digit, strokes brought to MNIST's width, scaled into 20x20, centred by
    /// mass in 28x28).
    #[arg(long, conflicts_with = "deskew")]
    pub no_preprocess: bool,
    /// Also remove the digit's slant (moment-based deskewing) when preparing it.
    #[arg(long)]
    pub deskew: bool,
}

impl PrepArgs {
    /// What the network sees of an image file (`-`: standard input); errors name the file.
    pub(crate) fn prepare(&self, path: &std::path::Path) -> crate::Result<image::GrayImage> {
        let shown = if path.as_os_str() == crate::predict::STDIN_PATH {
            std::path::Path::new("standard input")
        } else {
            path
        };
        let img = crate::predict::load_rgb(path)?;
        let ready = if self.no_preprocess {
            crate::predict::as_is(&crate::predict::decode::rgb_to_gray(&img))
        } else {
            crate::predict::preprocess_with(&img, crate::predict::PreprocessConfig { deskew: self.deskew })
        };
        ready.map_err(|e| e.at(shown))
    }
}

/// A probability from 0 to 1.
fn probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability from 0 to 1")),
    }
}

pub(crate) fn predict(a: PredictArgs) -> crate::Result<()> {
    crate::tensor::pool::keep_freed_memory();
    let crate::runs::LoadedModel { model, file, .. } = crate::runs::resolve_model(a.model.as_deref())?;
    let names =
        crate::data::download::class_names(&file.metadata.get("dataset").map_or(String::new(), |d| d.to_lowercase()));
    let name = |d: usize| names.get(d).map_or(String::new(), |n| format!(" {n}"));
    if a.images
        .iter()
        .filter(|p| p.as_os_str() == crate::predict::STDIN_PATH)
        .count()
        > 1
    {
        return Err(Error::settings("`-` (standard input) can be given only once"));
    }
    if let Some(dir) = &a.save_preprocessed {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create the directory", e))?;
    }
    // Each image: what the network sees, or why it could not be read.
    // A progress bar for long lists, on a terminal.
    let bar = (a.images.len() >= 50 && std::io::stderr().is_terminal()).then(|| {
        indicatif::ProgressBar::new(a.images.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("preparing images [{bar:30}] {pos}/{len} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        )
    });
    let prepared: Vec<Result<image::GrayImage, String>> = a
        .images
        .iter()
        .inspect(|_| {
            if let Some(b) = &bar {
                b.inc(1);
            }
        })
        .map(|path| {
            let ready = a.prep.prepare(path).map_err(|e| e.to_string())?;
            if let Some(dir) = &a.save_preprocessed {
                let stem = if path.as_os_str() == crate::predict::STDIN_PATH {
                    "stdin".to_string()
                } else {
                    path.file_stem()
                        .map_or("image".into(), |s| s.to_string_lossy().to_string())
                };
                atomic_write(&dir.join(format!("{stem}.png")), &crate::predict::png_bytes(&ready))
                    .map_err(|e| e.to_string())?;
            }
            Ok(ready)
        })
        .collect();
    let ok: Vec<&image::GrayImage> = prepared.iter().filter_map(|r| r.as_ref().ok()).collect();
    let x: Vec<f32> = ok.iter().flat_map(|img| crate::predict::network_input(img)).collect();
    model.set_training(false);
    let probs = if ok.is_empty() {
        Vec::new()
    } else {
        let logits = crate::tensor::no_grad(|| model.forward(&crate::tensor::Tensor::from_vec(x, &[ok.len(), 784])));
        crate::predict::softmax_rows(&logits.to_vec(), 10)
    };
    let mut probs = probs.into_iter();
    let mut failed = 0;
    let mut json = Vec::new();
    for (path, r) in a.images.iter().zip(&prepared) {
        let file = path.display().to_string();
        let p = match r {
            Err(e) => {
                failed += 1;
                if a.json {
                    json.push(serde_json::json!({"file": file, "error": e}));
                } else {
                    eprintln!("error: {e}");
                }
                continue;
            }
            Ok(_) => probs.next().expect("one result per image"),
        };
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
        let top = a.top.map_or(p.len(), usize::from).min(p.len());
        let low = crate::predict::is_low_confidence(&p, a.min_confidence);
        let flag = if low { "  (low confidence)" } else { "" };
        if a.json {
            let prob = |v: f32| finite(v as f64, 6);
            let tops: Vec<_> = order[..top]
                .iter()
                .map(|&d| serde_json::json!([d, prob(p[d])]))
                .collect();
            json.push(serde_json::json!({
                "file": file,
                "digit": order[0],
                "probabilities": p.iter().map(|&v| prob(v)).collect::<Vec<_>>(),
                "top": tops,
                "low_confidence": low,
            }));
        } else if a.top.is_some() {
            let tops: Vec<String> = order[..top]
                .iter()
                .map(|&d| format!("{d} {:.1}%", 100.0 * p[d]))
                .collect();
            out!("{file}: {}{flag}", tops.join(", "));
        } else {
            let all: Vec<String> = p.iter().enumerate().map(|(d, v)| format!("{d}:{v:.3}")).collect();
            out!(
                "{file}: {}{} ({:.1}%)  {}{flag}",
                order[0],
                name(order[0]),
                100.0 * p[order[0]],
                all.join(" ")
            );
        }
    }
    if a.json {
        out!("{}", serde_json::Value::Array(json));
    }
    if failed > 0 {
        return Err(Error::format_problem(format!(
            "{failed} of {} images could not be predicted",
            a.images.len()
        )));
    }
    Ok(())
}
