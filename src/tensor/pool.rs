//! A per-thread pool of f32 buffers, so the same batch shapes do not allocate and zero
//! megabytes every step.
//!
//! [`take`] hands out a buffer of the asked length whose contents are arbitrary (old values):
//! callers must overwrite every element. Tensor storage returns its buffer here when dropped.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Bytes a thread keeps pooled at most; beyond that, the oldest pooled buffers are freed.
/// It holds one training step of `bncnn` at batch 128 (its forward activations alone are about
/// 28 MB, their gradients as much again): with 24 MB, every step took fresh pages from the
/// kernel, and zeroing them cost about a fifth of the step. A smaller network pools only what it uses (the tutorial CNN: a few MB).
const MAX_POOLED_BYTES: usize = 128 << 20;
/// Buffers smaller than this are not worth pooling.
const MIN_LEN: usize = 1024;

#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    /// Lengths of the pooled buffers, oldest first (for eviction).
    order: VecDeque<usize>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A buffer of `len` values with arbitrary contents.
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_LEN {
        let reused = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let v = p.free.get_mut(&len).and_then(Vec::pop);
            if v.is_some() {
                p.bytes -= len * 4;
                if let Some(i) = p.order.iter().rposition(|&l| l == len) {
                    p.order.remove(i);
                }
            }
            v
        });
        if let Some(v) = reused {
            return v;
        }
    }
    vec![0.0; len]
}

/// A buffer of `len` zeros.
pub fn zeros(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// A buffer that goes back to the pool when dropped (for buffers an op keeps for its backward).
pub struct Pooled(pub Vec<f32>);

impl Drop for Pooled {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

impl std::ops::Deref for Pooled {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

/// Gives a buffer back for reuse.
pub fn recycle(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_LEN || len != v.capacity() {
        return;
    }
    // `try_with`: during thread shutdown the pool may already be gone; then just free.
    let _ = POOL.try_with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else { return };
        if len * 4 > MAX_POOLED_BYTES {
            return;
        }
        // Evict the oldest buffers until this one fits (a new batch size replaces the old).
        while p.bytes + len * 4 > MAX_POOLED_BYTES {
            let Some(old) = p.order.pop_front() else { break };
            if p.free.get_mut(&old).and_then(Vec::pop).is_some() {
                p.bytes -= old * 4;
            }
        }
        p.bytes += len * 4;
        p.order.push_back(len);
        p.free.entry(len).or_default().push(v);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_bytes_stay_under_the_cap_by_evicting_the_oldest() {
        let big = MAX_POOLED_BYTES / 4 / 4; // four fill the pool
        for _ in 0..4 {
            recycle(vec![1.0; big]);
        }
        recycle(vec![2.0; big + 1]); // needs two of the first four evicted
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.bytes <= MAX_POOLED_BYTES);
            assert_eq!(p.free[&big].len(), 2);
            assert_eq!(p.free[&(big + 1)].len(), 1);
            assert_eq!(p.order.len(), 3);
        });
        let _ = take(big);
        POOL.with(|p| assert_eq!(p.borrow().order.len(), 2));
    }

    #[test]
    fn a_recycled_buffer_is_handed_out_again() {
        let mut v = take(5000);
        v[0] = 42.0;
        let ptr = v.as_ptr();
        recycle(v);
        let w = take(5000);
        assert_eq!(w.as_ptr(), ptr);
        assert_eq!(w[0], 42.0, "contents are not cleared by take");
        recycle(w);
        assert!(zeros(5000).iter().all(|&x| x == 0.0));
    }
}
