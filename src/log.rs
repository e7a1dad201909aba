//! The per-epoch metrics log of `train --log FILE`: JSON lines or CSV, by the file's extension.
//!
//! JSON lines: a header record `{"type":"header","settings":{...}}`, then one record per epoch
//! `{"type":"epoch","epoch":1,"train_loss":...,"valid_loss":...,"valid_accuracy":...,"lr":...,
//! "seconds":...,"samples_per_sec":...}`. CSV: a `# settings: k=v ...` line, the column names,
//! then one row per epoch. Records are appended (a resumed run continues the same log), each
//! written whole and flushed.
//!
//! Every JSON line is written by serde_json, so it is valid JSON. A value that is not finite (a
//! diverged run's infinite or NaN loss) is written as `null` in JSON and as an empty cell in
//! CSV; readers take either as "not a number".

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::train::EpochStats;

/// `x` rounded to `decimals` places for a JSON record, or `None` (written as `null`) when it is
/// not finite.
pub fn finite(x: f64, decimals: i32) -> Option<f64> {
    let scale = 10f64.powi(decimals);
    let r = (x * scale).round() / scale;
    if r.is_finite() {
        Some(r)
    } else {
        x.is_finite().then_some(x)
    }
}

/// A setting's value as JSON: a number or boolean when it reads as one, else the string.
pub fn typed(v: &str) -> serde_json::Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
        && !v.starts_with(['+', '.'])
    {
        return f.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        s => s.into(),
    }
}

/// One epoch's JSON record.
#[derive(Serialize)]
struct EpochRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    epoch: usize,
    train_loss: Option<f64>,
    valid_loss: Option<f64>,
    valid_accuracy: Option<f64>,
    lr: Option<f64>,
    seconds: Option<f64>,
    samples_per_sec: Option<f64>,
    train_accuracy: Option<f64>,
}

/// A JSON record of the mean training loss over the last few batches.
#[derive(Serialize)]
struct BatchRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    epoch: usize,
    batch: usize,
    samples: usize,
    loss: Option<f64>,
}

#[derive(Serialize)]
struct HeaderRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Numbers and booleans as such (see [`typed`]).
    settings: BTreeMap<String, serde_json::Value>,
}

/// The columns of an epoch record, in order.
pub const COLUMNS: [&str; 8] = [
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "lr",
    "seconds",
    "samples_per_sec",
    "train_accuracy",
];

/// Whether a log path is CSV (else JSON lines); an error for any other extension.
pub fn check_log_path(path: &Path) -> crate::Result<bool> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(true),
        Some("jsonl") | Some("json") => Ok(false),
        _ => Err(Error::settings("the log's extension must be .jsonl or .csv").at(path)),
    }
}

/// An open metrics log.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    csv: bool,
}

impl MetricsLog {
    /// Opens (appending) and writes the header record.
    pub fn open(path: &Path, settings: &BTreeMap<String, String>) -> crate::Result<MetricsLog> {
        let csv = check_log_path(path)?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, "cannot open for appending", e))?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            file,
            csv,
        };
        let header = if csv {
            let kv: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("# settings: {}\n{}\n", kv.join(" "), COLUMNS.join(","))
        } else {
            let record = HeaderRecord {
                kind: "header",
                settings: settings.iter().map(|(k, v)| (k.clone(), typed(v))).collect(),
            };
            format!(
                "{}\n",
                serde_json::to_string(&record).expect("a map of strings serialises")
            )
        };
        if let Err(e) = log.write(&header) {
            if !existed {
                // No empty log left behind (a full disk).
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        Ok(log)
    }

    /// Appends one epoch's record.
    pub fn epoch(&mut self, s: &EpochStats, lr: f32) -> crate::Result<()> {
        let r = EpochRecord {
            kind: "epoch",
            epoch: s.epoch,
            train_loss: finite(s.train_loss as f64, 6),
            valid_loss: finite(s.valid.loss as f64, 6),
            valid_accuracy: finite(s.valid.accuracy as f64, 6),
            lr: finite(lr as f64, 8),
            seconds: finite(s.seconds, 4),
            samples_per_sec: finite(s.train_samples_per_sec, 1),
            train_accuracy: finite(s.train_accuracy as f64, 6),
        };
        let line = if self.csv {
            let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
            let cells = [
                r.train_loss,
                r.valid_loss,
                r.valid_accuracy,
                r.lr,
                r.seconds,
                r.samples_per_sec,
                r.train_accuracy,
            ]
            .map(cell);
            format!("{},{}\n", r.epoch, cells.join(","))
        } else {
            format!("{}\n", serde_json::to_string(&r).expect("numbers serialise"))
        };
        self.write(&line)
    }

    /// Appends a batch record (JSON lines only; CSV logs keep one row per epoch): `epoch` is
    /// 1-based, `batch` and `samples` count what is done of it, `loss` is the mean over the
    /// batches since the previous record.
    pub fn batches(&mut self, epoch: usize, batch: usize, samples: usize, loss: f64) -> crate::Result<()> {
        if self.csv {
            return Ok(());
        }
        let r = BatchRecord {
            kind: "batch",
            epoch,
            batch,
            samples,
            loss: finite(loss, 6),
        };
        self.write(&format!("{}\n", serde_json::to_string(&r).expect("numbers serialise")))
    }

    fn write(&mut self, s: &str) -> crate::Result<()> {
        self.file
            .write_all(s.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, "cannot write", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Evaluation;

    fn stats(epoch: usize) -> EpochStats {
        EpochStats {
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.75,
            valid: Evaluation {
                loss: 0.25,
                accuracy: 0.9,
                correct: 9,
                samples: 10,
            },
            seconds: 1.5,
            train_samples_per_sec: 1000.0,
        }
    }

    #[test]
    fn jsonl_and_csv_records_and_appending() {
        let dir = std::env::temp_dir().join(format!("mnist-cnn-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut settings = BTreeMap::new();
        settings.insert("seed".to_string(), "3".to_string());
        settings.insert("note".to_string(), "a \"quoted\" value".to_string());
        let j = dir.join("m.jsonl");
        let mut log = MetricsLog::open(&j, &settings).unwrap();
        log.epoch(&stats(1), 0.1).unwrap();
        drop(log);
        MetricsLog::open(&j, &settings).unwrap().epoch(&stats(2), 0.1).unwrap();
        let text = std::fs::read_to_string(&j).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "header, epoch, header, epoch: {text}");
        assert_eq!(
            lines[0],
            r#"{"type":"header","settings":{"note":"a \"quoted\" value","seed":3}}"#
        );
        assert_eq!(
            lines[1],
            r#"{"type":"epoch","epoch":1,"train_loss":0.5,"valid_loss":0.25,"valid_accuracy":0.9,"lr":0.1,"seconds":1.5,"samples_per_sec":1000.0,"train_accuracy":0.75}"#
        );
        let c = dir.join("m.csv");
        MetricsLog::open(&c, &settings).unwrap().epoch(&stats(1), 0.5).unwrap();
        let text = std::fs::read_to_string(&c).unwrap();
        assert!(
            text.starts_with("# settings: note=a \"quoted\" value seed=3\nepoch,train_loss,"),
            "{text}"
        );
        assert!(text.ends_with("1,0.5,0.25,0.9,0.5,1.5,1000,0.75\n"), "{text}");
        let e = MetricsLog::open(&dir.join("m.txt"), &settings)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("m.txt: the log's extension must be .jsonl or .csv"), "{e}");
        // A diverged run: non-finite values are null in JSON (valid JSON) and empty in CSV.
        let mut bad = stats(3);
        bad.train_loss = f32::INFINITY;
        bad.valid.loss = f32::NAN;
        let j = dir.join("d.jsonl");
        MetricsLog::open(&j, &settings).unwrap().epoch(&bad, 0.1).unwrap();
        let text = std::fs::read_to_string(&j).unwrap();
        let rec: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert!(rec["train_loss"].is_null() && rec["valid_loss"].is_null(), "{text}");
        assert_eq!(rec["valid_accuracy"], 0.9);
        let c = dir.join("d.csv");
        MetricsLog::open(&c, &settings).unwrap().epoch(&bad, 0.1).unwrap();
        let text = std::fs::read_to_string(&c).unwrap();
        assert!(text.ends_with("\n3,,,0.9,0.1,1.5,1000,0.75\n"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
