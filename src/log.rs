//! The per-epoch metrics log of `train --log FILE`: JSON lines or CSV, by the file's extension.
//!
//! JSON lines: a header record `{"type":"header","settings":{...}}`, then one record per epoch
//! `{"type":"epoch","epoch":1,"train_loss":...,"valid_loss":...,"valid_accuracy":...,"lr":...,
//! "seconds":...,"samples_per_sec":...}`. CSV: a `# settings: k=v ...` line, the column names,
//! then one row per epoch. Records are appended (a resumed run continues the same log), each
//! written whole and flushed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::data::DataError;
use crate::train::EpochStats;

/// The columns of an epoch record, in order.
pub const COLUMNS: [&str; 7] = [
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "lr",
    "seconds",
    "samples_per_sec",
];

/// An open metrics log.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    csv: bool,
}

impl MetricsLog {
    /// Opens (appending) and writes the header record.
    pub fn open(path: &Path, settings: &BTreeMap<String, String>) -> Result<MetricsLog, DataError> {
        let csv = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => true,
            Some("jsonl") | Some("json") => false,
            _ => return Err(DataError::new(path, "the log's extension must be .jsonl or .csv")),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DataError::new(path, format!("cannot open for appending: {e}")))?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            file,
            csv,
        };
        let header = if csv {
            let kv: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("# settings: {}\n{}\n", kv.join(" "), COLUMNS.join(","))
        } else {
            let kv: Vec<String> = settings
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            format!("{{\"type\":\"header\",\"settings\":{{{}}}}}\n", kv.join(","))
        };
        log.write(&header)?;
        Ok(log)
    }

    /// Appends one epoch's record.
    pub fn epoch(&mut self, s: &EpochStats, lr: f32) -> Result<(), DataError> {
        let vals = [
            s.epoch.to_string(),
            format!("{:.6}", s.train_loss),
            format!("{:.6}", s.valid.loss),
            format!("{:.6}", s.valid.accuracy),
            lr.to_string(),
            format!("{:.4}", s.seconds),
            format!("{:.1}", s.train_samples_per_sec),
        ];
        let line = if self.csv {
            format!("{}\n", vals.join(","))
        } else {
            let kv: Vec<String> = COLUMNS.iter().zip(&vals).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{\"type\":\"epoch\",{}}}\n", kv.join(","))
        };
        self.write(&line)
    }

    fn write(&mut self, s: &str) -> Result<(), DataError> {
        self.file
            .write_all(s.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| DataError::new(&self.path, format!("cannot write: {e}")))
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Evaluation;

    fn stats(epoch: usize) -> EpochStats {
        EpochStats {
            epoch,
            train_loss: 0.5,
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
            r#"{"type":"header","settings":{"note":"a \"quoted\" value","seed":"3"}}"#
        );
        assert_eq!(
            lines[1],
            r#"{"type":"epoch","epoch":1,"train_loss":0.500000,"valid_loss":0.250000,"valid_accuracy":0.900000,"lr":0.1,"seconds":1.5000,"samples_per_sec":1000.0}"#
        );
        let c = dir.join("m.csv");
        MetricsLog::open(&c, &settings).unwrap().epoch(&stats(1), 0.5).unwrap();
        let text = std::fs::read_to_string(&c).unwrap();
        assert!(
            text.starts_with("# settings: note=a \"quoted\" value seed=3\nepoch,train_loss,"),
            "{text}"
        );
        assert!(
            text.ends_with("1,0.500000,0.250000,0.900000,0.5,1.5000,1000.0\n"),
            "{text}"
        );
        let e = MetricsLog::open(&dir.join("m.txt"), &settings)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("m.txt: the log's extension must be .jsonl or .csv"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
