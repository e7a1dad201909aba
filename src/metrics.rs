//! Classification metrics: the confusion matrix and per-class precision and recall.

use crate::data::DataLoader;
use crate::nn::Module;
use crate::ops::argmax_rows;
use crate::tensor::no_grad;
use crate::train::LossFn;

/// `counts[true][predicted]` over a dataset, with the count-weighted mean loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
    pub loss: f32,
}

impl Confusion {
    /// Runs the model (eval mode, no graph) over every batch of `dl`.
    pub fn of(model: &dyn Module, loss_func: LossFn, dl: &DataLoader, classes: usize) -> Confusion {
        let was_training = model.is_training();
        model.set_training(false);
        let mut counts = vec![vec![0usize; classes]; classes];
        let (mut weighted, mut n) = (0.0f64, 0usize);
        no_grad(|| {
            for b in dl.epoch(0) {
                let logits = model.forward(&b.x);
                weighted += loss_func(&logits, &b.y).item() as f64 * b.y.len() as f64;
                n += b.y.len();
                for (p, &y) in argmax_rows(&logits.to_vec(), classes).iter().zip(&b.y) {
                    counts[y][*p] += 1;
                }
            }
        });
        model.set_training(was_training);
        Confusion {
            counts,
            loss: (weighted / n.max(1) as f64) as f32,
        }
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f32 {
        let right: usize = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f32 / self.total().max(1) as f32
    }

    /// Of the images predicted as class c, the share that are c (NaN if none was predicted c).
    pub fn precision(&self, c: usize) -> f32 {
        let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
        self.counts[c][c] as f32 / predicted as f32
    }

    /// Of the images of class c, the share predicted as c (NaN if there are none).
    pub fn recall(&self, c: usize) -> f32 {
        let actual: usize = self.counts[c].iter().sum();
        self.counts[c][c] as f32 / actual as f32
    }

    /// A table for people: loss, accuracy, the matrix, and precision and recall per class.
    pub fn to_text(&self, names: &[String]) -> String {
        let k = self.counts.len();
        let mut s = format!(
            "loss {:.4}  accuracy {:.2}%  ({} images)\n\n",
            self.loss,
            100.0 * self.accuracy(),
            self.total()
        );
        s.push_str("confusion matrix (rows: true class, columns: predicted)\n      ");
        for c in 0..k {
            s.push_str(&format!("{c:>6}"));
        }
        s.push('\n');
        for (t, row) in self.counts.iter().enumerate() {
            s.push_str(&format!("{t:>6}"));
            for v in row {
                s.push_str(&format!("{v:>6}"));
            }
            s.push('\n');
        }
        s.push_str("\nclass  precision  recall\n");
        for c in 0..k {
            let name = names.get(c).map_or(String::new(), |n| format!("  {n}"));
            s.push_str(&format!(
                "{c:>5}  {:>8.2}%  {:>5.2}%{name}\n",
                100.0 * self.precision(c),
                100.0 * self.recall(c)
            ));
        }
        s
    }

    /// The same as one JSON object (NaN precision or recall as null).
    pub fn to_json(&self) -> String {
        let num = |v: f32| crate::log::finite(v as f64, 6);
        let k = self.counts.len();
        serde_json::json!({
            "loss": num(self.loss),
            "accuracy": num(self.accuracy()),
            "images": self.total(),
            "confusion": self.counts,
            "precision": (0..k).map(|c| num(self.precision(c))).collect::<Vec<_>>(),
            "recall": (0..k).map(|c| num(self.recall(c))).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_accuracy_of_a_known_matrix() {
        // 3 classes: class 0: 8 right, 2 taken for 1; class 1: 5 right; class 2: 1 right, 4 taken for 0.
        let c = Confusion {
            counts: vec![vec![8, 2, 0], vec![0, 5, 0], vec![4, 0, 1]],
            loss: 0.5,
        };
        assert_eq!(c.total(), 20);
        assert!((c.accuracy() - 0.7).abs() < 1e-6);
        assert!((c.precision(0) - 8.0 / 12.0).abs() < 1e-6);
        assert!((c.recall(0) - 0.8).abs() < 1e-6);
        assert!((c.precision(1) - 5.0 / 7.0).abs() < 1e-6);
        assert!((c.recall(2) - 0.2).abs() < 1e-6);
        let j = c.to_json();
        assert!(
            j.contains("\"confusion\":[[8,2,0],[0,5,0],[4,0,1]]") && j.contains("\"accuracy\":0.7,"),
            "{j}"
        );
        let t = c.to_text(&[]);
        assert!(
            t.contains("accuracy 70.00%") && t.contains("    2     4     0     1"),
            "{t}"
        );
    }
}
