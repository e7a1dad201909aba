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
/// kernel, and zeroing them cost about a fifth of the step. It is a ceiling, not what a thread
/// keeps: a length is pooled only up to the number of its buffers the thread took in its last
/// window of takes (see [`Class`]), so a smaller network pools only what a few steps use (the
/// tutorial CNN: a few MB).
const MAX_POOLED_BYTES: usize = 128 << 20;
/// Buffers smaller than this are not worth pooling.
const MIN_LEN: usize = 1024;
/// Takes per window of the demand count (see [`Class`]).
const WINDOW: u64 = 1024;
/// A length this thread has not asked for in this many takes is freed (a finished phase's
/// batch size, or the validation batches' during training): many steps of any model here.
const STALE_TAKES: u64 = 8 * WINDOW;

/// Has the system allocator keep freed memory for reuse, for work that makes and frees many
/// buffers of tens of kilobytes outside this pool (preparing uploaded images). glibc's malloc
/// hands the top of its heap back to the system as soon as 128 KiB of it are free, so the next
/// request faults the pages in again (and, with several threads, the kernel flushes the other
/// cores' TLBs): page faults and TLB flushes were 30% of `serve`'s CPU under PNG uploads. When a
/// chunk it had mapped on its own (128 KiB or more) is freed, glibc raises both thresholds to
/// that chunk's size (mallopt(3), the dynamic mmap threshold); this frees one of 8 MiB, which
/// moves the trim threshold to 16 MiB. Preparing the pen-drawn 7 of the user-style set took
/// 403-421 us after it against 495-543 us before. Elsewhere it is one allocation and one free.
pub fn keep_freed_memory() {
    // Zeroed: calloc maps it without touching its pages, so it costs no resident memory.
    let big = vec![0u8; 8 << 20];
    std::hint::black_box(&big);
}

/// One buffer length's state on one thread.
#[derive(Default)]
struct Class {
    free: Vec<Vec<f32>>,
    /// Takes of this length on this thread in the current window of [`WINDOW`] takes, and in
    /// the one before. The free list never holds more than the larger of the two: a length
    /// that only arrives from elsewhere (a gradient allocated outside the pool, or on another
    /// thread) is freed, not hoarded, and a thread keeps at most what it recently asked for.
    cur: usize,
    prev: usize,
    /// The pool's take counter when this length was last taken.
    last_take: u64,
}

impl Class {
    fn wanted(&self) -> usize {
        self.cur.max(self.prev)
    }
}

#[derive(Default)]
struct Pool {
    /// By capacity ([`size_class`]).
    classes: HashMap<usize, Class>,
    /// Capacities of the pooled buffers, oldest first (for eviction).
    order: VecDeque<usize>,
    bytes: usize,
    /// Takes on this thread (of poolable lengths).
    takes: u64,
}

impl Pool {
    /// At the end of each window: rolls the take counts over, and frees the pooled buffers of
    /// lengths not taken in the last [`STALE_TAKES`] takes.
    fn end_window(&mut self) {
        let now = self.takes;
        let mut freed = false;
        for (&len, c) in self.classes.iter_mut() {
            c.prev = c.cur;
            c.cur = 0;
            if now - c.last_take > STALE_TAKES && !c.free.is_empty() {
                self.bytes -= c.free.len() * len * 4;
                c.free.clear();
                freed = true;
            }
        }
        self.classes
            .retain(|_, c| !c.free.is_empty() || now - c.last_take <= STALE_TAKES);
        if freed {
            let classes = &self.classes;
            self.order
                .retain(|len| classes.get(len).is_some_and(|c| !c.free.is_empty()));
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// The capacity a buffer of `len` values gets: `len` rounded up to one of 8 steps per power
/// of two (at most 12.5% more), so that nearby lengths (the batches of a server, of every
/// size from 1 to its maximum) share buffers instead of each keeping its own.
fn size_class(len: usize) -> usize {
    if len < MIN_LEN {
        return len;
    }
    let step = 1usize << (usize::BITS - 1 - len.leading_zeros() - 3);
    len.div_ceil(step) * step
}

/// A buffer of `len` values with arbitrary contents.
pub fn take(len: usize) -> Vec<f32> {
    let cap = size_class(len);
    if len >= MIN_LEN {
        // `try_with`: during thread shutdown the pool may already be gone; then allocate.
        let reused = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            p.takes += 1;
            if p.takes % WINDOW == 0 {
                p.end_window();
            }
            let now = p.takes;
            let c = p.classes.entry(cap).or_default();
            c.cur += 1;
            c.last_take = now;
            let v = c.free.pop();
            if v.is_some() {
                p.bytes -= cap * 4;
                if let Some(i) = p.order.iter().rposition(|&l| l == cap) {
                    p.order.remove(i);
                }
            }
            v
        });
        if let Ok(Some(mut v)) = reused {
            // The capacity is `cap`: neither call reallocates (growing writes zeros).
            v.resize(len, 0.0);
            return v;
        }
    }
    let mut v = Vec::with_capacity(cap);
    v.resize(len, 0.0);
    v
}

/// Values a buffer needs beyond its length for [`aligned`].
pub const ALIGN_SLACK: usize = 15;

/// `len` values of the buffer from its first value on a 64-byte boundary (a cache line's, and an
/// AVX-512 vector's width; the allocator gives 16), for scratch buffers that the kernels fill and
/// read in whole vectors: their vectors then never straddle two cache lines. The buffer holds
/// `len` + [`ALIGN_SLACK`] values: at most that many are skipped (none when the buffer is not
/// even 4-byte aligned).
/// Winograd's transformed tiles and products, so aligned, made `bncnn`'s block 4 (stride 2,
/// by Winograd) 8.3 -> 6.7 us an image on AVX-512.
pub fn aligned(v: &mut [f32], len: usize) -> &mut [f32] {
    let skip = v.as_ptr().align_offset(64);
    let skip = if skip <= ALIGN_SLACK { skip } else { 0 };
    &mut v[skip..skip + len]
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
    let cap = v.capacity();
    if cap < MIN_LEN || size_class(cap) != cap {
        return;
    }
    // `try_with`: during thread shutdown the pool may already be gone; then just free.
    let _ = POOL.try_with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else { return };
        if cap * 4 > MAX_POOLED_BYTES {
            return;
        }
        match p.classes.get(&cap) {
            Some(c) if c.free.len() < c.wanted() => {}
            _ => return, // not wanted here: freed
        }
        // Evict the oldest buffers until this one fits (a new batch size replaces the old).
        while p.bytes + cap * 4 > MAX_POOLED_BYTES {
            let Some(old) = p.order.pop_front() else { break };
            if p.classes.get_mut(&old).and_then(|c| c.free.pop()).is_some() {
                p.bytes -= old * 4;
            }
        }
        p.bytes += cap * 4;
        p.order.push_back(cap);
        p.classes.get_mut(&cap).expect("checked above").free.push(v);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(len: usize) -> usize {
        POOL.with(|p| p.borrow().classes.get(&size_class(len)).map_or(0, |c| c.free.len()))
    }

    #[test]
    fn nearby_lengths_share_a_size_class() {
        assert_eq!(size_class(100), 100, "too small to pool: as it is");
        assert_eq!(
            (size_class(1024), size_class(1025), size_class(1152)),
            (1024, 1152, 1152)
        );
        assert_eq!(
            (size_class(3000), size_class(3072), size_class(3073)),
            (3072, 3072, 3328)
        );
        for len in 1024..20_000 {
            let c = size_class(len);
            assert!(c >= len && c * 8 <= len * 9, "{len} -> {c}");
            assert_eq!(size_class(c), c);
        }
        let mut a = take(3000);
        assert_eq!((a.len(), a.capacity()), (3000, 3072));
        a[2999] = 7.0;
        let ptr = a.as_ptr();
        recycle(a);
        let b = take(3050);
        assert_eq!((b.as_ptr(), b.len()), (ptr, 3050), "3050 reuses 3000's buffer");
        recycle(b);
        let c = take(2900);
        assert_eq!((c.as_ptr(), c.len()), (ptr, 2900));
        recycle(c);
    }

    #[test]
    fn pooled_bytes_stay_under_the_cap_by_evicting_the_oldest() {
        let big = MAX_POOLED_BYTES / 4 / 4; // four fill the pool
        let a: Vec<_> = (0..4).map(|_| take(big)).collect();
        a.into_iter().for_each(recycle);
        let b = take(big + 1);
        assert_eq!(pooled(big), 4);
        recycle(b); // needs two of the first four evicted
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.bytes <= MAX_POOLED_BYTES);
            assert_eq!(p.order.len(), 3);
        });
        assert_eq!((pooled(big), pooled(big + 1)), (2, 1));
        let _ = take(big);
        POOL.with(|p| assert_eq!(p.borrow().order.len(), 2));
    }

    #[test]
    fn a_length_is_pooled_only_as_often_as_this_thread_takes_it() {
        // Never taken here (allocated outside the pool, or on another thread): freed.
        recycle(vec![1.0; 4096]);
        assert_eq!(pooled(4096), 0);
        let a = take(3001);
        // A capacity that is not a size class: freed.
        recycle(Vec::with_capacity(3001));
        assert_eq!(pooled(3001), 0);
        // Taken once in this window: one is kept, however many arrive.
        recycle(a);
        recycle(vec![0.0; 3072]);
        assert_eq!(pooled(3001), 1);
        // From another thread, which never took it: freed there.
        std::thread::spawn(|| {
            recycle(vec![0.0; 3072]);
            assert_eq!(pooled(3072), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn lengths_no_longer_taken_are_freed() {
        recycle(take(5001));
        assert_eq!(pooled(5001), 1);
        for _ in 0..STALE_TAKES + 2 * WINDOW {
            recycle(take(2048));
        }
        assert_eq!(pooled(5001), 0, "a length not taken for STALE_TAKES takes is freed");
        assert_eq!(pooled(2048), 1);
        POOL.with(|p| {
            let p = p.borrow();
            assert_eq!(
                p.bytes,
                p.classes.iter().map(|(l, c)| l * 4 * c.free.len()).sum::<usize>()
            );
            assert_eq!(p.order.len(), p.classes.values().map(|c| c.free.len()).sum::<usize>());
        });
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
