//! An opt-in profiler: wall time per op (keyed by op and shape) split into forward and
//! backward, for `mnist-cnn bench`. Off by default; when off, timing costs one thread-local read.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Forward or backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Backward,
}

/// Time spent in one op (one layer) since profiling was enabled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpTime {
    pub name: String,
    pub forward: Duration,
    pub backward: Duration,
    pub forward_calls: usize,
    pub backward_calls: usize,
}

thread_local! {
    static PROFILE: RefCell<Option<Vec<OpTime>>> = const { RefCell::new(None) };
}

/// Starts collecting (clearing what was collected).
pub fn enable() {
    PROFILE.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// Stops collecting and returns the times, in order of first appearance.
pub fn take() -> Vec<OpTime> {
    PROFILE.with(|p| p.borrow_mut().take()).unwrap_or_default()
}

pub fn is_enabled() -> bool {
    PROFILE.with(|p| p.borrow().is_some())
}

/// The name of an op on an input of `shape`, without the batch dimension: `conv2d 16x14x14`.
pub fn label(op: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().skip(1).map(usize::to_string).collect();
    format!("{op} {}", dims.join("x"))
}

/// Runs `f`, adding its wall time to the op named `name()` (only built when profiling).
pub fn time<R>(name: impl FnOnce() -> String, phase: Phase, f: impl FnOnce() -> R) -> R {
    if !is_enabled() {
        return f();
    }
    let t0 = Instant::now();
    let r = f();
    let dt = t0.elapsed();
    let name = name();
    PROFILE.with(|p| {
        if let Some(v) = p.borrow_mut().as_mut() {
            let i = match v.iter().position(|o| o.name == name) {
                Some(i) => i,
                None => {
                    v.push(OpTime {
                        name,
                        ..Default::default()
                    });
                    v.len() - 1
                }
            };
            match phase {
                Phase::Forward => {
                    v[i].forward += dt;
                    v[i].forward_calls += 1;
                }
                Phase::Backward => {
                    v[i].backward += dt;
                    v[i].backward_calls += 1;
                }
            }
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        time(|| "a".into(), Phase::Forward, || ());
        assert!(take().is_empty());
        enable();
        time(|| "a".into(), Phase::Forward, || ());
        time(|| "b".into(), Phase::Backward, || ());
        time(|| "a".into(), Phase::Backward, || ());
        let t = take();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].name.as_str(), t[0].forward_calls, t[0].backward_calls),
            ("a", 1, 1)
        );
        assert!(!is_enabled());
    }
}
