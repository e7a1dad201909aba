//! The server's counters in Prometheus' text format (written by hand): requests by status
//! code, a request-latency histogram (seconds), a histogram of the forward passes' batch sizes
//! and the queue's depth.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::serve::batcher::QueueStats;

/// Upper bounds of the latency buckets (seconds).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets (images in one forward pass).
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed buckets: counts per bucket (not cumulative; cumulated when written),
/// the sum and the count of the observations.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (increasing); values above the last one
    /// count only in `+Inf`.
    pub fn new(bounds: &[f64]) -> Self {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds increase");
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one value.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// The histogram's lines in Prometheus' text format, with cumulative buckets.
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            acc += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The request counters the server updates on every answer.
pub struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    latency: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_status: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        *self
            .by_status
            .lock()
            .expect("the metrics lock is never poisoned")
            .entry(status)
            .or_insert(0) += 1;
        self.latency
            .lock()
            .expect("the metrics lock is never poisoned")
            .observe(seconds);
    }

    /// Everything, in Prometheus' text format (version 0.0.4).
    pub fn render(&self, queue: &QueueStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP mnist_cnn_requests_total HTTP requests answered, by status code.\n");
        out.push_str("# TYPE mnist_cnn_requests_total counter\n");
        for (code, n) in self
            .by_status
            .lock()
            .expect("the metrics lock is never poisoned")
            .iter()
        {
            let _ = writeln!(out, "mnist_cnn_requests_total{{code=\"{code}\"}} {n}");
        }
        self.latency.lock().expect("the metrics lock is never poisoned").write(
            &mut out,
            "mnist_cnn_request_duration_seconds",
            "Time from a request's arrival to its answer.",
        );
        queue
            .batch_sizes
            .lock()
            .expect("the metrics lock is never poisoned")
            .write(
                &mut out,
                "mnist_cnn_batch_size",
                "Images in each forward pass of the inference workers.",
            );
        let mut scalar = |name: &str, kind: &str, help: &str, value: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        scalar(
            "mnist_cnn_queue_depth",
            "gauge",
            "Requests waiting for an inference worker.",
            queue.depth.load(Ordering::SeqCst),
        );
        scalar(
            "mnist_cnn_inference_workers",
            "gauge",
            "Inference workers running, each with its instance of the shared weights.",
            queue.running.load(Ordering::SeqCst),
        );
        scalar(
            "mnist_cnn_spare_passes_total",
            "counter",
            "Forward passes run by the spare inference workers, which join at a backlog.",
            queue.spare_passes.load(Ordering::Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 3.0, 9.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.write(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"2\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"4\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_sum 13.5\nx_count 4\n"), "{s}");
    }

    #[test]
    fn requests_are_counted_by_status() {
        let m = Metrics::default();
        m.record(200, 0.001);
        m.record(200, 0.002);
        m.record(503, 0.0001);
        let text = m.render(&QueueStats::default());
        assert!(text.contains("mnist_cnn_requests_total{code=\"200\"} 2\n"), "{text}");
        assert!(text.contains("mnist_cnn_requests_total{code=\"503\"} 1\n"), "{text}");
        assert!(text.contains("mnist_cnn_request_duration_seconds_count 3\n"), "{text}");
        assert!(text.contains("mnist_cnn_queue_depth 0\n"), "{text}");
        assert!(text.contains("mnist_cnn_inference_workers 0\n"), "{text}");
        assert!(text.contains("mnist_cnn_spare_passes_total 0\n"), "{text}");
    }
}
