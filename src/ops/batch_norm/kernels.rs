//! batch norm's vector kernels on one chunk of channels-last values, generic over the SIMD
//! backend ([`Simd`]).
//!
//! Shapes: a chunk is P positions (samples x H x W) of C channels, stored (P, C); channel
//! c0..c0+16 of a position is one 16-lane vector, so per-channel statistics are lane-wise
//! sums (no horizontal reductions). C need not be a multiple of 16 (the last group of a
//! position is a partial load).
//!
//! Sums: per group of 16 channels, each block of [`SUM_BLOCK`] positions is summed in f32
//! lanes from zero, in position order, and the block's sums are added to f64 totals (one
//! scalar add per channel per block). Every value gets the same operations in the same order on
//! every backend; the vector backends fuse multiply-add, so they give the same bits.
//!
//! Everything here is `#[inline(always)]` so that it is compiled inside the [`Kernel::run`]
//! that calls it, with the backend's target features enabled; no `unsafe` (the trait's checked
//! loads and stores).

use crate::ops::simd::{Kernel, LANES, Simd};

/// Positions per block of the per-channel f32 sums (see the module header). A block's f32 sum
/// of B values has a relative rounding error of at most about B * 2^-24 (under 1e-5), and
/// the blocks are added in f64.
pub const SUM_BLOCK: usize = 128;

/// What the sum kernel adds up per position and channel.
#[derive(Clone, Copy, Debug)]
pub enum Sums<'a> {
    /// [sum x]: `out` holds C values.
    X,
    /// [sum d; sum d^2] with d = x + negm (the negated chunk mean, rounded to f32):
    /// `out` holds 2C values.
    Centered { negm: &'a [f32] },
    /// [sum g; sum g * d] with g = dy (masked where the forward's value before the ReLU was
    /// not positive when `relu` is given) and d = x + negm: `out` holds 2C values.
    Grads {
        dy: &'a [f32],
        relu: Option<Forward<'a>>,
        negm: &'a [f32],
    },
}

/// The forward's per-channel coefficients, to recompute the value before the fused ReLU
/// (with the same operations as [`Normalize`], so the same bits) instead of reading y back:
/// (x + negm) * scale + shift, or x * scale + shift without negm.
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    pub negm: Option<&'a [f32]>,
    pub scale: &'a [f32],
    pub shift: &'a [f32],
}

/// [`Forward`]'s vectors for channels c0..c0+w.
struct ForwardV<S: Simd> {
    negm: Option<S::V>,
    scale: S::V,
    shift: S::V,
}

impl<S: Simd> ForwardV<S> {
    #[inline(always)]
    fn load(s: S, f: &Forward, c0: usize, w: usize) -> Self {
        ForwardV {
            negm: f.negm.map(|m| s.load(&m[c0..], w)),
            scale: s.load(&f.scale[c0..], w),
            shift: s.load(&f.shift[c0..], w),
        }
    }

    /// The forward's value of x (before the ReLU), as [`Normalize`] computes it.
    #[inline(always)]
    fn value(&self, s: S, x: S::V) -> S::V {
        let v = match self.negm {
            Some(m) => s.add(x, m),
            None => x,
        };
        s.mul_add(v, self.scale, self.shift)
    }
}

/// Per-channel sums over a chunk x (P, C): adds the chunk's sums to `out` (see [`Sums`]).
pub struct ChannelSums<'a> {
    pub x: &'a [f32],
    pub c: usize,
    pub what: Sums<'a>,
    pub out: &'a mut [f64],
}

/// Adds the f32 lane sums `acc` (w lanes) to `out[c0..c0 + w]`.
#[inline(always)]
fn fold<S: Simd>(s: S, acc: S::V, w: usize, out: &mut [f64]) {
    let mut lanes = [0f32; LANES];
    s.store(&mut lanes, w, acc);
    out.iter_mut().zip(&lanes[..w]).for_each(|(o, &v)| *o += v as f64);
}

impl Kernel for ChannelSums<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let ChannelSums { x, c, what, out } = self;
        let positions = x.len() / c;
        assert_eq!(positions * c, x.len(), "batch_norm sums: x is not (P, C)");
        let (lo, hi) = out.split_at_mut(c);
        for p0 in (0..positions).step_by(SUM_BLOCK) {
            let p1 = positions.min(p0 + SUM_BLOCK);
            for c0 in (0..c).step_by(LANES) {
                let w = LANES.min(c - c0);
                let (mut a0, mut a1) = (s.zero(), s.zero());
                match what {
                    Sums::X => {
                        for p in p0..p1 {
                            a0 = s.add(a0, s.load(&x[p * c + c0..], w));
                        }
                    }
                    Sums::Centered { negm } => {
                        let nm = s.load(&negm[c0..], w);
                        for p in p0..p1 {
                            let d = s.add(s.load(&x[p * c + c0..], w), nm);
                            a0 = s.add(a0, d);
                            a1 = s.mul_add(d, d, a1);
                        }
                    }
                    Sums::Grads { dy, relu, negm } => {
                        let nm = s.load(&negm[c0..], w);
                        let fw = relu.map(|f| ForwardV::load(s, &f, c0, w));
                        for p in p0..p1 {
                            let o = p * c + c0;
                            let xv = s.load(&x[o..], w);
                            let mut g = s.load(&dy[o..], w);
                            if let Some(fw) = &fw {
                                g = s.pass_where_positive(fw.value(s, xv), g);
                            }
                            let d = s.add(xv, nm);
                            a0 = s.add(a0, g);
                            a1 = s.mul_add(g, d, a1);
                        }
                    }
                }
                fold(s, a0, w, &mut lo[c0..]);
                if !matches!(what, Sums::X) {
                    fold(s, a1, w, &mut hi[c0..]);
                }
            }
        }
    }
}

/// y = (x + negm) * scale + shift per channel, or x * scale + shift without `negm` (one fused
/// multiply-add: evaluation), then max(y, 0) with `relu`. x, y (P, C); the coefficients (C).
pub struct Normalize<'a> {
    pub x: &'a [f32],
    pub c: usize,
    pub negm: Option<&'a [f32]>,
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
    pub y: &'a mut [f32],
}

impl Kernel for Normalize<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Normalize {
            x,
            c,
            negm,
            scale,
            shift,
            relu,
            y,
        } = self;
        let positions = x.len() / c;
        assert!(
            x.len() == positions * c && y.len() == x.len(),
            "batch_norm apply: sizes"
        );
        for p0 in (0..positions).step_by(SUM_BLOCK) {
            let p1 = positions.min(p0 + SUM_BLOCK);
            for c0 in (0..c).step_by(LANES) {
                let w = LANES.min(c - c0);
                let fw = ForwardV::load(s, &Forward { negm, scale, shift }, c0, w);
                for p in p0..p1 {
                    let o = p * c + c0;
                    let mut r = fw.value(s, s.load(&x[o..], w));
                    if relu {
                        r = s.relu(r);
                    }
                    s.store(&mut y[o..], w, r);
                }
            }
        }
    }
}

/// dx from dy (masked where the forward's value before the ReLU was not positive when `relu`
/// is given) per channel: training, dx = a * g + (q * (x + negm) + k); evaluation (`train`
/// None), dx = a * g. x, dy, dx (P, C); the coefficients (C).
pub struct InputGrad<'a> {
    pub x: &'a [f32],
    pub dy: &'a [f32],
    pub relu: Option<Forward<'a>>,
    pub c: usize,
    pub a: &'a [f32],
    /// (negm, q, k) in training.
    pub train: Option<(&'a [f32], &'a [f32], &'a [f32])>,
    pub dx: &'a mut [f32],
}

impl Kernel for InputGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let InputGrad {
            x,
            dy,
            relu,
            c,
            a,
            train,
            dx,
        } = self;
        let positions = dy.len() / c;
        assert!(
            dy.len() == positions * c && dx.len() == dy.len() && x.len() == dy.len(),
            "batch_norm dx: sizes"
        );
        for p0 in (0..positions).step_by(SUM_BLOCK) {
            let p1 = positions.min(p0 + SUM_BLOCK);
            for c0 in (0..c).step_by(LANES) {
                let w = LANES.min(c - c0);
                let av = s.load(&a[c0..], w);
                let fw = relu.map(|f| ForwardV::load(s, &f, c0, w));
                let tr = train.map(|(negm, q, k)| (s.load(&negm[c0..], w), s.load(&q[c0..], w), s.load(&k[c0..], w)));
                for p in p0..p1 {
                    let o = p * c + c0;
                    let mut g = s.load(&dy[o..], w);
                    let xv = (fw.is_some() || tr.is_some()).then(|| s.load(&x[o..], w));
                    if let (Some(fw), Some(xv)) = (&fw, xv) {
                        g = s.pass_where_positive(fw.value(s, xv), g);
                    }
                    let r = match (tr, xv) {
                        (Some((nm, q, k)), Some(xv)) => s.mul_add(av, g, s.mul_add(q, s.add(xv, nm), k)),
                        _ => s.mul(av, g),
                    };
                    s.store(&mut dx[o..], w, r);
                }
            }
        }
    }
}
