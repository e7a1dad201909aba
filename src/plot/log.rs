//! Chart data: the metrics logs `train --log` writes (JSON lines or CSV) read into [`Curve`]s,
//! bounded and checked, and the moving average that smooths the per-batch loss.

use std::io::Read;
use std::path::Path;

use crate::Error;

/// One run's curves, read from its log.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub label: String,
    pub epoch: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub valid_loss: Vec<f64>,
    pub valid_accuracy: Vec<f64>,
    /// Training accuracy per epoch: NaN where the record has none (older logs) or it was not
    /// finite.
    pub train_accuracy: Vec<f64>,
    /// Where each batch record lies, in epochs of training: (E - 1) + S / samples per epoch,
    /// the samples per epoch estimated as the largest S of the log.
    pub batch_x: Vec<f64>,
    /// The mean training loss of each batch record's batches (NaN: not finite).
    pub batch_loss: Vec<f64>,
}

/// The records of a log's text, as [`parse_records`] reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    /// In epoch order, one per epoch: epoch, training loss, validation loss, validation
    /// accuracy, training accuracy (NaN where absent).
    pub epochs: Vec<[f64; 5]>,
    /// In training order (`.jsonl` only): epoch, batches done in it, samples done in it, mean
    /// loss of the last batches.
    pub batches: Vec<[f64; 4]>,
}

/// The largest metrics log `plot` reads (a 10,000-epoch log is about 2 MB).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// The largest epoch number accepted in a log.
const MAX_EPOCH: f64 = 1e6;

/// The largest batch or sample count accepted in a batch record.
const MAX_COUNT: f64 = 1e12;

/// A record's field as a number: JSON `null` (a value that was not finite) is NaN.
fn json_field(rec: &serde_json::Value, key: &str, kind: &str) -> Result<f64, String> {
    match rec.get(key) {
        Some(serde_json::Value::Null) => Ok(f64::NAN),
        Some(v) => v.as_f64().ok_or_else(|| format!("\"{key}\" is not a number")),
        None => Err(format!("{kind} record without \"{key}\"")),
    }
}

/// A CSV cell as a number: empty (a value that was not finite) is NaN.
fn csv_field(vals: &[&str], columns: &[String], key: &str) -> Result<f64, String> {
    let i = columns
        .iter()
        .position(|c| c == key)
        .ok_or_else(|| format!("no column \"{key}\" (or a row before the column names)"))?;
    match vals.get(i).map(|v| v.trim()) {
        Some("") => Ok(f64::NAN),
        Some(v) => v.parse().map_err(|_| format!("\"{key}\" value {v:?} is not a number")),
        None => Err(format!("row has no \"{key}\" cell")),
    }
}

/// An epoch number: a whole number from 1 to [`MAX_EPOCH`].
fn check_epoch(e: f64) -> Result<f64, String> {
    if (1.0..=MAX_EPOCH).contains(&e) && e.fract() == 0.0 {
        Ok(e)
    } else {
        Err(format!("epoch {e} is not a whole number from 1 to {MAX_EPOCH}"))
    }
}

/// A batch record: epoch, batch, samples (whole numbers) and loss.
fn batch_record(rec: &serde_json::Value) -> Result<[f64; 4], String> {
    let e = check_epoch(json_field(rec, "epoch", "batch")?)?;
    let mut row = [e, 0.0, 0.0, json_field(rec, "loss", "batch")?];
    for (r, k) in row[1..3].iter_mut().zip(["batch", "samples"]) {
        let v = json_field(rec, k, "batch")?;
        if !((0.0..=MAX_COUNT).contains(&v) && v.fract() == 0.0) {
            return Err(format!("\"{k}\" {v} is not a whole number from 0 to {MAX_COUNT}"));
        }
        *r = v;
    }
    Ok(row)
}

/// The records of a log's text (`csv`: the CSV format, else JSON lines). A later record for
/// the same epoch (a resumed run appending to the log) replaces the earlier one; a batch record
/// at or before the last one (the resumed run repeating batches) drops the records from there
/// on. Linear in the text's length whatever it holds. The error is an [`Error::Format`]
/// without a path, naming the line.
pub fn parse_records(text: &str, csv: bool) -> crate::Result<Records> {
    const KEYS: [&str; 4] = ["epoch", "train_loss", "valid_loss", "valid_accuracy"];
    let mut epochs: std::collections::BTreeMap<u64, [f64; 5]> = Default::default();
    let mut batches: Vec<[f64; 4]> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| Error::format_problem(format!("line {}: {m}", i + 1));
        if line.trim().is_empty() || (csv && line.starts_with('#')) {
            continue;
        }
        let mut row = [0.0; 5];
        if csv {
            if line.starts_with("epoch,") {
                columns = line.split(',').map(str::to_string).collect();
                continue;
            }
            let vals: Vec<&str> = line.split(',').collect();
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = csv_field(&vals, &columns, k).map_err(at)?;
            }
            row[4] = if columns.iter().any(|c| c == "train_accuracy") {
                csv_field(&vals, &columns, "train_accuracy").map_err(at)?
            } else {
                f64::NAN
            };
        } else {
            let rec: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("not a JSON record ({e})")))?;
            match rec.get("type").and_then(|t| t.as_str()) {
                Some("epoch") => {}
                Some("batch") => {
                    let b = batch_record(&rec).map_err(at)?;
                    while batches.last().is_some_and(|l| (l[0], l[2]) >= (b[0], b[2])) {
                        batches.pop();
                    }
                    batches.push(b);
                    continue;
                }
                _ => continue,
            }
            for (r, k) in row.iter_mut().zip(KEYS) {
                *r = json_field(&rec, k, "epoch").map_err(at)?;
            }
            row[4] = match rec.get("train_accuracy") {
                None => f64::NAN,
                Some(_) => json_field(&rec, "train_accuracy", "epoch").map_err(at)?,
            };
        }
        let e = check_epoch(row[0]).map_err(at)?;
        epochs.insert(e as u64, row);
    }
    Ok(Records {
        epochs: epochs.into_values().collect(),
        batches,
    })
}

/// Reads a `train --log` file (.jsonl or .csv). A later record for the same epoch (a resumed
/// run appending to the log) replaces the earlier one. Values that were not finite are NaN and
/// leave a gap in the curves.
pub fn read_log(path: &Path) -> crate::Result<Curve> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_LOG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| Error::io(path, "cannot read", e))?;
    if text.len() as u64 > MAX_LOG_BYTES {
        return Err(Error::format(
            path,
            format!("larger than {MAX_LOG_BYTES} bytes: not a metrics log"),
        ));
    }
    let label = path
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    let csv = path.extension().is_some_and(|e| e == "csv");
    parse_log(&text, csv, label).map_err(|e| e.at(path))
}

/// Parses a metrics log's text (CSV when `csv`, else JSON lines) into the curve labelled
/// `label`; [`read_log`] without the file.
pub fn parse_log(text: &str, csv: bool, label: String) -> crate::Result<Curve> {
    let r = parse_records(text, csv)?;
    if r.epochs.is_empty() && r.batches.is_empty() {
        return Err(Error::format_problem("no epoch records to plot"));
    }
    let per_epoch = r.batches.iter().map(|b| b[2]).fold(0.0, f64::max);
    let col = |j: usize| r.epochs.iter().map(|e| e[j]).collect::<Vec<f64>>();
    Ok(Curve {
        label,
        epoch: col(0),
        train_loss: col(1),
        valid_loss: col(2),
        valid_accuracy: col(3),
        train_accuracy: col(4),
        batch_x: r
            .batches
            .iter()
            .map(|b| b[0] - 1.0 + if per_epoch > 0.0 { b[2] / per_epoch } else { 0.0 })
            .collect(),
        batch_loss: r.batches.iter().map(|b| b[3]).collect(),
    })
}

/// The exponential moving average of `values` with weight `smooth` on the past (0: none), as
/// TensorBoard smooths: debiased, so the first values are not pulled towards 0. A value that
/// is not finite stays a gap and does not enter the average.
pub fn smooth(values: &[f64], smooth: f64) -> Vec<f64> {
    let (mut mean, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return f64::NAN;
            }
            mean = smooth * mean + (1.0 - smooth) * v;
            weight = smooth * weight + (1.0 - smooth);
            mean / weight
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::plot_curves;

    #[test]
    fn reads_jsonl_and_csv_logs_and_a_resumed_epoch_replaces_the_old_record() {
        let dir = std::env::temp_dir().join(format!("mnist-cnn-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("a.jsonl");
        std::fs::write(
            &j,
            "{\"type\":\"header\",\"settings\":{}}\n{\"type\":\"epoch\",\"epoch\":1,\"train_loss\":0.9,\"valid_loss\":0.4,\"valid_accuracy\":0.88,\"lr\":0.1}\n{\"type\":\"epoch\",\"epoch\":1,\"train_loss\":0.8,\"valid_loss\":0.3,\"valid_accuracy\":0.9,\"lr\":0.1}\n{\"type\":\"epoch\",\"epoch\":2,\"train_loss\":0.5,\"valid_loss\":0.2,\"valid_accuracy\":0.95,\"lr\":0.1}\n",
        )
        .unwrap();
        let c = read_log(&j).unwrap();
        assert_eq!(c.label, "a");
        assert_eq!(
            (c.epoch.clone(), c.valid_loss.clone()),
            (vec![1.0, 2.0], vec![0.3, 0.2])
        );
        let csv = dir.join("b.csv");
        std::fs::write(&csv, "# settings: seed=0\nepoch,train_loss,valid_loss,valid_accuracy,lr,seconds,samples_per_sec\n1,0.8,0.3,0.9,0.1,1.0,100\n").unwrap();
        assert_eq!(read_log(&csv).unwrap().valid_accuracy, vec![0.9]);
        std::fs::write(dir.join("e.jsonl"), "{\"type\":\"header\"}\n").unwrap();
        assert!(
            read_log(&dir.join("e.jsonl"))
                .unwrap_err()
                .to_string()
                .contains("no epoch records")
        );
        std::fs::write(dir.join("x.jsonl"), "{\"type\":\"epoch\",\"epoch\":1}\n").unwrap();
        assert!(
            read_log(&dir.join("x.jsonl"))
                .unwrap_err()
                .to_string()
                .contains("line 1: epoch record without \"train_loss\"")
        );
        // Both formats render, and the PNG decodes to the expected size.
        plot_curves(&[c.clone(), read_log(&csv).unwrap()], &dir.join("c.png")).unwrap();
        let img = image::open(dir.join("c.png")).unwrap();
        assert_eq!((img.width(), img.height()), (1100, 760));
        plot_curves(&[c], &dir.join("c.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("accuracy per epoch"));
        assert!(
            plot_curves(&[], &dir.join("c.gif"))
                .unwrap_err()
                .to_string()
                .contains(".png or .svg")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batch_records_training_accuracy_and_a_resumed_runs_repeated_batches() {
        let text = [
            r#"{"type":"batch","epoch":1,"batch":10,"samples":640,"loss":2.0}"#,
            r#"{"type":"batch","epoch":1,"batch":20,"samples":1280,"loss":null}"#,
            r#"{"type":"epoch","epoch":1,"train_loss":1.5,"valid_loss":1.0,"valid_accuracy":0.7,"train_accuracy":0.6}"#,
            r#"{"type":"batch","epoch":2,"batch":10,"samples":640,"loss":1.0}"#,
            // The run was resumed from the end of epoch 1: epoch 2 again, from its start.
            r#"{"type":"batch","epoch":2,"batch":10,"samples":640,"loss":0.9}"#,
            r#"{"type":"batch","epoch":2,"batch":20,"samples":1280,"loss":0.8}"#,
            r#"{"type":"epoch","epoch":2,"train_loss":0.9,"valid_loss":0.7,"valid_accuracy":0.8,"train_accuracy":null}"#,
            r#"{"type":"epoch","epoch":3,"train_loss":0.8,"valid_loss":0.6,"valid_accuracy":0.85}"#,
        ]
        .join("\n");
        let r = parse_records(&text, false).unwrap();
        let b: Vec<(f64, f64)> = r.batches.iter().map(|b| (b[0], b[2])).collect();
        assert_eq!(b, [(1.0, 640.0), (1.0, 1280.0), (2.0, 640.0), (2.0, 1280.0)]);
        assert_eq!(r.batches[2][3], 0.9);
        assert!(r.batches[1][3].is_nan());
        assert_eq!(r.epochs[0][4], 0.6);
        assert!(r.epochs[1][4].is_nan() && r.epochs[2][4].is_nan());
        let bad = r#"{"type":"batch","epoch":1,"batch":10,"samples":-5,"loss":1}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .to_string()
                .contains("line 1: \"samples\" -5 is not a whole number")
        );
        let bad = r#"{"type":"batch","epoch":0.5,"batch":10,"samples":5,"loss":1}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .to_string()
                .contains("line 1: epoch 0.5 is not a whole number")
        );
        let bad = r#"{"type":"batch","epoch":1,"batch":10,"samples":5}"#;
        assert!(
            parse_records(bad, false)
                .unwrap_err()
                .to_string()
                .contains("batch record without \"loss\"")
        );
        // CSV with a train_accuracy column.
        let csv = "epoch,train_loss,valid_loss,valid_accuracy,train_accuracy\n1,0.5,0.4,0.9,0.8\n2,0.4,0.3,0.92,\n";
        let r = parse_records(csv, true).unwrap();
        assert_eq!(r.epochs[0][4], 0.8);
        assert!(r.epochs[1][4].is_nan());
    }

    #[test]
    fn parsing_stays_linear_on_a_log_that_repeats_its_records() {
        // 200,000 records alternating between epochs and going back in the batches: quadratic
        // bookkeeping would take minutes.
        let mut text = String::new();
        for i in 0..100_000u64 {
            text.push_str(&format!(
                "{{\"type\":\"epoch\",\"epoch\":{},\"train_loss\":1,\"valid_loss\":1,\"valid_accuracy\":0.5}}\n",
                i % 50_000 + 1
            ));
            text.push_str(&format!(
                "{{\"type\":\"batch\",\"epoch\":1,\"batch\":1,\"samples\":{},\"loss\":1}}\n",
                (i * 7919) % 100_000
            ));
        }
        let t = std::time::Instant::now();
        let r = parse_records(&text, false).unwrap();
        assert_eq!(r.epochs.len(), 50_000);
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }

    #[test]
    fn smoothing_is_debiased_and_skips_gaps() {
        let s = smooth(&[1.0, f64::NAN, 3.0], 0.5);
        assert_eq!(s[0], 1.0);
        assert!(s[1].is_nan());
        assert!((s[2] - (0.25 + 1.5) / 0.75).abs() < 1e-12, "{}", s[2]);
        assert_eq!(smooth(&[4.0, 2.0], 0.0), [4.0, 2.0]);
    }
}
