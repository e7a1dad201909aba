//! Vector backends for the kernels: AVX-512, AVX2+FMA, NEON, and portable Rust.
//!
//! Kernels are written once, generic over [`Simd`], a small set of primitives on 16-lane f32
//! vectors (load, store, splat, multiply-add, add, mul, max, compare, select), and run through
//! [`simd_dispatch!`](crate::simd_dispatch), which picks the backend at run time: the best one
//! this CPU has ([`Backend::best`]: AVX-512, then AVX2+FMA, then NEON, portable last), or the
//! one forced by `MNIST_CNN_SIMD=avx512|avx2|neon|portable` or [`select`] (the CLI's
//! `--simd`). A 16-lane vector is one register on AVX-512, two on AVX2, four on NEON, a
//! 16-value array on the portable path. `load`/`store` take a count n <= 16 and touch only the
//! first n values (the rest of a loaded vector is zero).
//!
//! Soundness: each backend's value (token) can only be made by its `detect`, which checks the
//! CPU, so every instruction a backend uses runs on a CPU that has it; loads and stores check
//! that their slice holds n values and touch only those.
//!
//! Rounding: the three vector backends fuse multiply-add (one rounding) and, with the kernels
//! doing the same operations in the same order on each, give the same bits; the portable path
//! rounds the product and the sum separately.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

mod portable;
pub use portable::Portable;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
pub use neon::Neon;

pub const LANES: usize = 16;

/// A kernel body, generic over the backend. `run` must be `#[inline(always)]`, so that it is
/// compiled inside [`Simd::vectorize`] with the backend's instructions enabled.
pub trait Kernel {
    type Output;
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// The primitives kernels are written in. A new op needs no new method here.
pub trait Simd: Copy + Send + Sync {
    /// 16 f32 lanes.
    type V: Copy;
    /// A per-lane condition, from [`Simd::gt`].
    type M: Copy;
    /// How many rows of 16-lane accumulators fit the register file with room for the operands
    /// (register blocking): 16 on AVX-512 (32 registers of 16 lanes); 6 on AVX2 (16 registers
    /// of 8 lanes, two per vector) and 4 on NEON (32 registers of 4 lanes), where the kernels
    /// then compute their 16-row blocks 6 + 6 + 4 or 4 rows at a time (the same sums, so the
    /// same bits). The portable path says 16 (its arrays live in memory anyway).
    const ROWS: usize;
    /// Runs kernel `k` with this backend's target features enabled.
    fn vectorize<K: Kernel>(self, k: K) -> K::Output;
    fn splat(self, x: f32) -> Self::V;
    /// The first n values of `s` (n <= 16), zeros in the other lanes.
    fn load(self, s: &[f32], n: usize) -> Self::V;
    /// Writes the first n lanes of `v` to `s`.
    fn store(self, s: &mut [f32], n: usize, v: Self::V);
    /// a * b + c (fused on the vector backends; two roundings on the portable path).
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// max(a, b) per lane; b where a is NaN.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// a > b per lane (false with a NaN).
    fn gt(self, a: Self::V, b: Self::V) -> Self::M;
    /// a where m, else b, per lane.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;

    #[inline(always)]
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
    /// max(a, 0) per lane, as PyTorch's ReLU: NaN stays NaN (so a diverged network's loss
    /// is NaN, as in PyTorch, not a finite number computed past the NaN), -0 gives +0. (0 where
    /// 0 > a, else a; plus 0, which turns -0 into +0 and leaves every other value as it is: the
    /// same bits as max(a, 0) for every value but NaN.)
    #[inline(always)]
    fn relu(self, a: Self::V) -> Self::V {
        let z = self.zero();
        self.add(self.select(self.gt(z, a), z, a), z)
    }
    /// v where y > 0, else 0, per lane: ReLU's backward.
    #[inline(always)]
    fn pass_where_positive(self, y: Self::V, v: Self::V) -> Self::V {
        let z = self.zero();
        self.select(self.gt(y, z), v, z)
    }
}

/// A kernel backend, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Avx512,
    Avx2,
    Neon,
    Portable,
}

impl Backend {
    /// All backends, best first.
    pub const ALL: [Backend; 4] = [Backend::Avx512, Backend::Avx2, Backend::Neon, Backend::Portable];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "avx512",
            Backend::Avx2 => "avx2",
            Backend::Neon => "neon",
            Backend::Portable => "portable",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this CPU can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => Avx512::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => Avx2::detect().is_some(),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => Neon::detect().is_some(),
            Backend::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The backends this CPU can run, best first.
    pub fn available() -> Vec<Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_available()).collect()
    }

    /// The best backend this CPU can run.
    pub fn best() -> Backend {
        Backend::available()[0]
    }

    /// `self` if this CPU can run it, else an [`Error::Settings`](crate::Error::Settings)
    /// naming the ones it can.
    pub fn check(self) -> crate::Result<Backend> {
        if self.is_available() {
            return Ok(self);
        }
        let have: Vec<_> = Backend::available().iter().map(|b| b.name()).collect();
        Err(crate::Error::settings(format!(
            "SIMD backend {} is not supported by this CPU (available: {})",
            self.name(),
            have.join(", ")
        )))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that forces a backend.
pub const ENV_VAR: &str = "MNIST_CNN_SIMD";

/// The backend `MNIST_CNN_SIMD` asks for (None when unset or empty), checked against this CPU.
pub fn from_env() -> crate::Result<Option<Backend>> {
    use crate::Error;
    match std::env::var(ENV_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Error::settings(format!("{ENV_VAR}: {e}"))),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => {
            let b = Backend::from_name(&v).ok_or_else(|| {
                Error::settings(format!(
                    "{ENV_VAR}={v} is not a SIMD backend (use avx512, avx2, neon or portable)"
                ))
            })?;
            b.check()
                .map(Some)
                .map_err(|e| Error::settings(format!("{ENV_VAR}={v}: {e}")))
        }
    }
}

/// The process-wide backend: 0 = not chosen yet, else 1 + index in [`Backend::ALL`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// A backend forced on this thread only (tests), see [`with_backend`].
    static THREAD_BACKEND: Cell<Option<Backend>> = const { Cell::new(None) };
}

/// Forces backend `b` for the whole process; an error if this CPU lacks it.
pub fn select(b: Backend) -> crate::Result<()> {
    let b = b.check()?;
    let i = Backend::ALL.iter().position(|&x| x == b).expect("a backend");
    ACTIVE.store(i as u8 + 1, Ordering::Relaxed);
    Ok(())
}

/// Applies `MNIST_CNN_SIMD` if set: the CLI calls this first, so that a bad value is an error
/// message rather than a panic in the first kernel.
pub fn init_from_env() -> crate::Result<Backend> {
    if let Some(b) = from_env()? {
        select(b)?;
    }
    Ok(active())
}

/// The backend kernels run with: one forced on this thread ([`with_backend`]), else the
/// process-wide one ([`select`], or `MNIST_CNN_SIMD`), else the best this CPU has.
///
/// Panics if `MNIST_CNN_SIMD` names a backend that is unknown or that this CPU lacks (the CLI
/// checks it first with [`init_from_env`]).
pub fn active() -> Backend {
    if let Some(b) = THREAD_BACKEND.with(Cell::get) {
        return b;
    }
    match ACTIVE.load(Ordering::Relaxed) {
        0 => {
            let b = from_env()
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(Backend::best);
            select(b).expect("checked");
            b
        }
        i => Backend::ALL[i as usize - 1],
    }
}

/// Runs `f` with backend `b` on this thread (the kernels' dispatch happens on the calling
/// thread, so this covers their worker threads too); an error if this CPU lacks `b`.
pub fn with_backend<R>(b: Backend, f: impl FnOnce() -> R) -> crate::Result<R> {
    let b = b.check()?;
    struct Restore(Option<Backend>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_BACKEND.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(THREAD_BACKEND.with(|c| c.replace(Some(b))));
    Ok(f())
}

/// The name of the backend in use (see [`active`]).
pub fn backend_name() -> &'static str {
    active().name()
}

/// Calls `$f(backend, args...)` with the [`active`] backend's token.
#[macro_export]
#[doc(hidden)]
macro_rules! simd_dispatch {
    ($f:ident ( $($arg:expr),* $(,)? )) => {{
        use $crate::ops::simd as __simd;
        match __simd::active() {
            #[cfg(target_arch = "x86_64")]
            __simd::Backend::Avx512 => {
                $f(__simd::Avx512::detect().expect("avx512 was checked"), $($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            __simd::Backend::Avx2 => $f(__simd::Avx2::detect().expect("avx2 was checked"), $($arg),*),
            #[cfg(target_arch = "aarch64")]
            __simd::Backend::Neon => $f(__simd::Neon::detect().expect("neon was checked"), $($arg),*),
            _ => $f(__simd::Portable, $($arg),*),
        }
    }};
}

/// Calls `$body` once per backend this CPU has, with `$s` bound to that backend's token and
/// `$b` to its [`Backend`]; returns the backends it could not run. For tests.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_backend {
    (|$b:ident, $s:ident| $body:expr) => {{
        use $crate::ops::simd as __simd;
        let mut missing = Vec::new();
        for $b in __simd::Backend::ALL {
            match $b {
                #[cfg(target_arch = "x86_64")]
                __simd::Backend::Avx512 if $b.is_available() => {
                    let $s = __simd::Avx512::detect().expect("checked");
                    $body
                }
                #[cfg(target_arch = "x86_64")]
                __simd::Backend::Avx2 if $b.is_available() => {
                    let $s = __simd::Avx2::detect().expect("checked");
                    $body
                }
                #[cfg(target_arch = "aarch64")]
                __simd::Backend::Neon if $b.is_available() => {
                    let $s = __simd::Neon::detect().expect("checked");
                    $body
                }
                __simd::Backend::Portable => {
                    let $s = __simd::Portable;
                    $body
                }
                _ => missing.push($b),
            }
        }
        $crate::ops::simd::report_backends(module_path!(), &missing);
        missing
    }};
}

/// Runs `f` once per backend this CPU has, forced on this thread with [`with_backend`], and
/// reports (see [`report_backends`]) which backends it ran and which it could not. For tests
/// of the ops that dispatch (conv2d and the layers above it).
#[doc(hidden)]
pub fn on_each_backend(test: &str, mut f: impl FnMut(Backend)) -> Vec<Backend> {
    let mut missing = Vec::new();
    for b in Backend::ALL {
        match with_backend(b, || f(b)) {
            Ok(()) => {}
            Err(_) => missing.push(b),
        }
    }
    report_backends(test, &missing);
    missing
}

/// Prints (to stderr, shown by `cargo test -- --nocapture` and for failures) which backends a
/// test ran and which this machine could not run.
#[doc(hidden)]
pub fn report_backends(test: &str, missing: &[Backend]) {
    let ran: Vec<_> = Backend::available().iter().map(|b| b.name()).collect();
    let not: Vec<_> = missing.iter().map(|b| b.name()).collect();
    eprintln!(
        "{test}: ran on backends [{}]; not available on this machine: [{}]",
        ran.join(", "),
        not.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Exercise;
    impl Kernel for Exercise {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> Vec<f32> {
            let a: Vec<f32> = (0..40).map(|i| i as f32).collect();
            let mut out = vec![-1.0f32; 64];
            // Every count from 0 to 16: loads zero the rest, stores leave the rest alone.
            for n in 0..=LANES {
                let v = s.load(&a[3..3 + n], n);
                let mut o = [-1.0f32; LANES + 1];
                s.store(&mut o[..n], n, s.add(v, s.splat(0.5)));
                let mut full = [7.0f32; LANES];
                s.store(&mut full, LANES, v);
                for i in 0..LANES {
                    let want = if i < n { (3 + i) as f32 } else { 0.0 };
                    assert_eq!(full[i], want, "load n={n} lane {i}");
                    let want = if i < n { (3 + i) as f32 + 0.5 } else { -1.0 };
                    assert_eq!(o[i], want, "store n={n} lane {i}");
                }
                assert_eq!(o[LANES], -1.0);
            }
            let v = s.load(&a[3..], 5);
            let r = s.mul_add(v, s.splat(2.0), s.add(s.splat(1.0), s.splat(0.5)));
            s.store(&mut out, 6, r);
            let signs: Vec<f32> = (0..16).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
            let y = s.load(&signs, 16);
            let r2 = s.pass_where_positive(y, s.relu(s.mul_add(y, s.splat(3.0), s.splat(0.0))));
            s.store(&mut out[6..], 4, r2);
            let m = s.mul(s.load(&a[1..], 16), s.splat(-1.0));
            let mx = s.max(m, s.splat(-4.5));
            s.store(&mut out[10..], 16, mx);
            let sel = s.select(s.gt(s.load(&a, 16), s.splat(7.5)), s.splat(1.0), s.splat(2.0));
            s.store(&mut out[26..], 16, sel);
            let nan = s.relu(s.splat(f32::NAN));
            s.store(&mut out[42..], 1, nan);
            // a * b + c with a product that is not a float: (1 + 2^-12)^2 - 1 keeps its 2^-24 only when fused.
            let e = 1.0 + 1.0 / 4096.0f32;
            let f = s.mul_add(s.splat(e), s.splat(e), s.splat(-1.0));
            s.store(&mut out[43..], 1, f);
            // ReLU over -0, -inf, +inf and a subnormal.
            let specials = [-0.0, f32::NEG_INFINITY, f32::INFINITY, f32::from_bits(1)];
            s.store(&mut out[44..], 4, s.relu(s.load(&specials, 4)));
            out.truncate(48);
            out
        }
    }

    fn want() -> Vec<f32> {
        // lanes 0..5 = 2*(3..8) + 1.5; lane 5 was loaded as 0 -> 1.5; then relu(3y) where y > 0.
        let mut w = vec![7.5, 9.5, 11.5, 13.5, 15.5, 1.5, 3.0, 0.0, 3.0, 0.0];
        w.extend((1..17).map(|i| (-(i as f32)).max(-4.5)));
        w.extend((0..16).map(|i| if i as f32 > 7.5 { 1.0 } else { 2.0 }));
        w
    }

    #[test]
    fn every_backend_computes_the_primitives() {
        let e = 1.0 + 1.0 / 4096.0f32;
        let fused = e.mul_add(e, -1.0);
        let unfused = e * e - 1.0;
        assert_ne!(fused, unfused, "the last check can tell fused from unfused");
        let missing = crate::for_each_backend!(|b, s| {
            let got = s.vectorize(Exercise);
            let want_fma = if b == Backend::Portable { unfused } else { fused };
            assert_eq!(got[..42], want()[..], "{b}");
            assert!(got[42].is_nan(), "{b}: ReLU keeps NaN, as PyTorch's");
            assert_eq!(got[43], want_fma, "{b}: multiply-add rounding");
            let relu_bits: Vec<u32> = got[44..48].iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                relu_bits,
                [0, 0, f32::INFINITY.to_bits(), 1],
                "{b}: ReLU of -0, -inf, +inf, 2^-149"
            );
        });
        assert!(!missing.contains(&Backend::Portable));
    }

    /// Lists the backends the kernel tests run on this machine and those it cannot run.
    #[test]
    fn lists_the_backends_this_machine_runs() {
        let have = Backend::available();
        let lacks: Vec<_> = Backend::ALL.into_iter().filter(|b| !b.is_available()).collect();
        eprintln!(
            "SIMD backends: running {:?}; not available here (their kernel tests cannot run): {:?}; default {}",
            have,
            lacks,
            Backend::best()
        );
        assert_eq!(have.last(), Some(&Backend::Portable));
        #[cfg(target_arch = "aarch64")]
        assert!(have.contains(&Backend::Neon), "every aarch64 CPU has NEON");
    }

    #[test]
    fn names_round_trip_and_missing_backends_are_errors() {
        for b in Backend::ALL {
            assert_eq!(Backend::from_name(b.name()), Some(b));
            assert_eq!(b.check().is_ok(), b.is_available());
        }
        #[cfg(target_arch = "x86_64")]
        {
            let e = Backend::Neon.check().unwrap_err().to_string();
            assert!(e.contains("neon is not supported") && e.contains("portable"), "{e}");
        }
        assert!(with_backend(Backend::Portable, active).unwrap() == Backend::Portable);
    }
}
