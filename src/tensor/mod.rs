//! f32 n-d tensors with reverse-mode autograd on a dynamic graph (the tutorial's `torch.Tensor`).
//!
//! A [`Tensor`] is a cheap handle (reference counted) to a flat row-major buffer and its shape;
//! images are NCHW. Every op that reads a tensor needing a gradient records a [`GradFn`]
//! (its inputs and a backward function), so `loss.backward()` walks the graph in reverse
//! topological order and accumulates into the `.grad` of the leaves, as PyTorch does.
//! Inside [`no_grad`] nothing is recorded (the tutorial's `with torch.no_grad():`).
//!
//! The graph lives on one thread; the kernels behind the ops parallelise over the batch
//! inside their own calls.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

pub mod pool;

use crate::profile::{self, Phase};

/// The backward function of one recorded op: given the inputs, the output and the gradient of
/// the output, it returns one gradient per input (`None` where that input needs none).
pub type BackwardFn = Box<dyn Fn(&[Tensor], &Tensor, &[f32]) -> Vec<Option<Vec<f32>>>>;

/// How an op's output was made: its inputs and the function that maps gradients back to them.
pub struct GradFn {
    pub name: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
}

/// The values behind one or more tensors (a reshape shares them). The buffer goes back to the
/// [`pool`] when the last tensor using it is dropped.
/// A derived layout: its name, the version of the values it was made from, and the values.
type Derived = (&'static str, u64, Rc<Vec<f32>>);

/// Values a tensor owns, or read-only values it shares with tensors on other threads (the
/// weights of a [`SharedModel`](crate::nn::SharedModel)); writing to shared values copies them
/// first.
enum Values {
    Owned(Vec<f32>),
    Shared(Arc<[f32]>),
}

impl Values {
    fn as_slice(&self) -> &[f32] {
        match self {
            Values::Owned(v) => v,
            Values::Shared(s) => s,
        }
    }

    /// The values as an owned vector, copying shared ones first (copy on write).
    fn make_owned(&mut self) -> &mut Vec<f32> {
        if let Values::Shared(s) = self {
            *self = Values::Owned(s.to_vec());
        }
        match self {
            Values::Owned(v) => v,
            Values::Shared(_) => unreachable!("made owned above"),
        }
    }
}

struct Storage {
    values: RefCell<Values>,
    /// Bumped by every `data_mut`, so layouts derived from the values know when they are stale.
    version: Cell<u64>,
    /// Layouts derived from the values (such as a convolution's re-ordered weights), by name,
    /// with the version they were made from.
    derived: RefCell<Vec<Derived>>,
}

impl Storage {
    fn new(values: Vec<f32>) -> Rc<Storage> {
        Rc::new(Storage {
            values: RefCell::new(Values::Owned(values)),
            version: Cell::new(0),
            derived: RefCell::new(Vec::new()),
        })
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Values::Owned(v) = self.values.get_mut() {
            pool::recycle(std::mem::take(v));
        }
    }
}

struct Inner {
    data: Rc<Storage>,
    shape: Vec<usize>,
    /// For a 4-d tensor of logical shape (N, C, H, W): whether the values are stored as
    /// (N, H, W, C), PyTorch's `channels_last` memory format.
    channels_last: bool,
    requires_grad: bool,
    grad: RefCell<Option<Vec<f32>>>,
    grad_fn: Option<GradFn>,
}

/// An n-dimensional f32 tensor that can take part in autograd.
#[derive(Clone)]
pub struct Tensor(Rc<Inner>);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record the graph right now (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording any graph, like `with torch.no_grad():`.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor that owns `data`, laid out row-major in `shape`. Panics if the sizes disagree
    /// (a programming error, not an input error).
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Tensor {
        assert_eq!(
            data.len(),
            numel(shape),
            "Tensor::from_vec: {} values for shape {shape:?}",
            data.len()
        );
        Tensor(Rc::new(Inner {
            data: Storage::new(data),
            shape: shape.to_vec(),
            channels_last: false,
            requires_grad: false,
            grad: RefCell::new(None),
            grad_fn: None,
        }))
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::from_vec(vec![0.0; numel(shape)], shape)
    }

    /// Standard normal values from `rng` (`torch.randn`).
    pub fn randn(shape: &[usize], rng: &mut crate::rng::Rng) -> Tensor {
        Tensor::from_vec((0..numel(shape)).map(|_| rng.normal()).collect(), shape)
    }

    /// Uniform values in [0, 1) from `rng` (`torch.rand`).
    pub fn rand(shape: &[usize], rng: &mut crate::rng::Rng) -> Tensor {
        Tensor::from_vec((0..numel(shape)).map(|_| rng.next_f32()).collect(), shape)
    }

    /// This tensor's values as a new leaf that collects gradients (`x.requires_grad_()` on a
    /// fresh tensor; the values are copied).
    pub fn requires_grad_(&self) -> Tensor {
        Tensor::parameter(self.to_vec(), self.shape())
    }

    /// A leaf that collects gradients (a parameter), like `requires_grad_()`.
    pub fn parameter(data: Vec<f32>, shape: &[usize]) -> Tensor {
        let t = Tensor::from_vec(data, shape);
        let inner = Rc::try_unwrap(t.0).ok().expect("fresh tensor");
        Tensor(Rc::new(Inner {
            requires_grad: true,
            ..inner
        }))
    }

    /// The result of an op. Records `grad_fn` only when grad mode is on and an input needs it.
    pub fn from_op(
        data: Vec<f32>,
        shape: &[usize],
        name: &'static str,
        inputs: Vec<Tensor>,
        backward: BackwardFn,
    ) -> Tensor {
        Tensor::from_op_in_layout(data, shape, false, name, inputs, backward)
    }

    /// Like [`Tensor::from_op`]; with `channels_last`, a 4-d result of logical shape
    /// (N, C, H, W) whose values are stored (N, H, W, C), its gradient in the same layout.
    pub fn from_op_in_layout(
        data: Vec<f32>,
        shape: &[usize],
        channels_last: bool,
        name: &'static str,
        inputs: Vec<Tensor>,
        backward: BackwardFn,
    ) -> Tensor {
        assert!(
            !channels_last || shape.len() == 4,
            "{name}: channels-last needs a 4-d shape"
        );
        assert_eq!(data.len(), numel(shape), "{name}: output size vs shape");
        Tensor::with_storage(Storage::new(data), shape, channels_last, name, inputs, backward)
    }

    /// A tensor of another shape over the same values (a view, as `x.view(...)`), recording
    /// `backward` like [`Tensor::from_op`].
    pub fn view_op(&self, shape: &[usize], name: &'static str, backward: BackwardFn) -> Tensor {
        assert_eq!(
            numel(shape),
            self.numel(),
            "{name}: view of {:?} as {shape:?}",
            self.shape()
        );
        assert!(
            !self.is_channels_last() || self.layouts_coincide(),
            "{name}: view of a channels-last tensor"
        );
        Tensor::with_storage(self.0.data.clone(), shape, false, name, vec![self.clone()], backward)
    }

    fn with_storage(
        data: Rc<Storage>,
        shape: &[usize],
        channels_last: bool,
        name: &'static str,
        inputs: Vec<Tensor>,
        backward: BackwardFn,
    ) -> Tensor {
        let track = is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        Tensor(Rc::new(Inner {
            data,
            shape: shape.to_vec(),
            channels_last,
            requires_grad: track,
            grad: RefCell::new(None),
            grad_fn: track.then_some(GradFn { name, inputs, backward }),
        }))
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    /// The name of the op that made this tensor (`None` for leaves).
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|g| g.name)
    }

    /// Whether (N, C, H, W) and (N, H, W, C) order the values the same way (C = 1 or H*W = 1).
    pub fn layouts_coincide(&self) -> bool {
        let s = self.shape();
        s.len() != 4 || s[1] == 1 || s[2] * s[3] == 1
    }

    /// Whether the values are stored (N, H, W, C) rather than (N, C, H, W).
    pub fn is_channels_last(&self) -> bool {
        self.0.channels_last
    }

    /// The values as stored (see [`Tensor::is_channels_last`]); [`Tensor::to_vec`] gives them
    /// in logical row-major order.
    pub fn data(&self) -> Ref<'_, [f32]> {
        Ref::map(self.0.data.values.borrow(), Values::as_slice)
    }

    /// How many times the values were handed out for writing ([`Tensor::data_mut`]): an op that
    /// reads an input again in its backward checks it is unchanged, as PyTorch's version counter.
    pub fn version(&self) -> u64 {
        self.0.data.version.get()
    }

    /// Mutable access to the values, for optimizers and initialisers (like `with no_grad(): p -= ...`).
    /// Shared values ([`Tensor::share_values`]) are copied first: the other threads' copy
    /// never changes.
    pub fn data_mut(&self) -> RefMut<'_, Vec<f32>> {
        let st = &self.0.data;
        st.version.set(st.version.get() + 1);
        RefMut::map(st.values.borrow_mut(), Values::make_owned)
    }

    /// A copy of the values that threads can share (`Send` and `Sync`), for
    /// [`Tensor::share_values`] on other threads' tensors.
    pub fn to_shared(&self) -> Arc<[f32]> {
        Arc::from(&*self.data())
    }

    /// Makes this tensor (and its views) read `values` without copying them: tensors on several
    /// threads can read one buffer this way. The values count as changed (the version is
    /// bumped), and a later [`Tensor::data_mut`] copies them first. Panics if the length is not
    /// the tensor's (a programming error).
    pub fn share_values(&self, values: Arc<[f32]>) {
        assert_eq!(
            values.len(),
            self.numel(),
            "share_values: length vs shape {:?}",
            self.shape()
        );
        let st = &self.0.data;
        st.version.set(st.version.get() + 1);
        let old = st.values.replace(Values::Shared(values));
        if let Values::Owned(v) = old {
            pool::recycle(v);
        }
    }

    /// Whether the values are shared ones ([`Tensor::share_values`]) not copied since.
    pub fn is_shared(&self) -> bool {
        matches!(*self.0.data.values.borrow(), Values::Shared(_))
    }

    /// A layout derived from the current values by `make` (for example a re-ordered copy of
    /// weights), made once and reused until the values change (`data_mut` bumps a version).
    pub fn derived(&self, name: &'static str, make: impl FnOnce(&[f32]) -> Vec<f32>) -> Rc<Vec<f32>> {
        let st = &self.0.data;
        let version = st.version.get();
        let mut cache = st.derived.borrow_mut();
        if let Some((_, v, d)) = cache.iter().find(|(n, _, _)| *n == name)
            && *v == version
        {
            return d.clone();
        }
        let d = Rc::new(make(st.values.borrow().as_slice()));
        cache.retain(|(n, _, _)| *n != name);
        cache.push((name, version, d.clone()));
        d
    }

    /// The values in logical row-major order ((N, C, H, W) for images), whatever the layout.
    pub fn to_vec(&self) -> Vec<f32> {
        if self.is_channels_last() {
            let s = self.shape();
            let mut out = vec![0.0; self.numel()];
            nhwc_to_nchw(&self.data(), (s[0], s[1], s[2], s[3]), &mut out);
            out
        } else {
            self.data().to_vec()
        }
    }

    /// The same values stored in logical order (`x.contiguous()`): itself when already so.
    pub fn contiguous(&self) -> Tensor {
        if !self.is_channels_last() {
            return self.clone();
        }
        let s = self.shape().to_vec();
        let dims = (s[0], s[1], s[2], s[3]);
        let mut out = pool::take(self.numel());
        nhwc_to_nchw(&self.data(), dims, &mut out);
        Tensor::from_op(
            out,
            &s,
            "contiguous",
            vec![self.clone()],
            Box::new(move |_, _, dy| {
                let mut dx = pool::take(dy.len());
                nchw_to_nhwc(dy, dims, &mut dx);
                vec![Some(dx)]
            }),
        )
    }

    /// The single value of a one-element tensor, like `.item()`.
    pub fn item(&self) -> f32 {
        assert_eq!(self.numel(), 1, "item() of a tensor with shape {:?}", self.shape());
        self.data()[0]
    }

    pub fn grad(&self) -> Option<Vec<f32>> {
        self.0.grad.borrow().clone()
    }

    pub fn grad_ref(&self) -> Ref<'_, Option<Vec<f32>>> {
        self.0.grad.borrow()
    }

    /// Sets the gradient to `None`, as PyTorch's `zero_grad()` does by default.
    pub fn zero_grad(&self) {
        if let Some(g) = self.0.grad.borrow_mut().take() {
            pool::recycle(g);
        }
    }

    /// Replaces the gradient (for optimizers' tests and checkpoint restores).
    pub fn set_grad(&self, g: Option<Vec<f32>>) {
        if let Some(g) = &g {
            assert_eq!(g.len(), self.numel(), "set_grad: wrong length");
        }
        *self.0.grad.borrow_mut() = g;
    }

    fn accumulate_grad(&self, g: Vec<f32>) {
        let mut slot = self.0.grad.borrow_mut();
        match slot.as_mut() {
            None => *slot = Some(g),
            Some(acc) => {
                acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                pool::recycle(g);
            }
        }
    }

    fn key(&self) -> *const Inner {
        Rc::as_ptr(&self.0)
    }

    /// Whether both are the same tensor (not merely equal values), as Python's `a is b`.
    pub fn is(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Back-propagates from this scalar: adds d(self)/d(leaf) into every leaf that requires grad.
    pub fn backward(&self) {
        assert_eq!(
            self.numel(),
            1,
            "backward() needs a scalar, got shape {:?}",
            self.shape()
        );
        self.backward_with(vec![1.0]);
    }

    /// Back-propagates a given output gradient (same size as `self`).
    pub fn backward_with(&self, grad: Vec<f32>) {
        assert_eq!(grad.len(), self.numel(), "backward_with: gradient size");
        if !self.requires_grad() {
            return;
        }
        // Reverse topological order by an iterative depth-first search.
        let mut order: Vec<Tensor> = Vec::new();
        let mut seen: HashMap<*const Inner, ()> = HashMap::new();
        let mut stack: Vec<(Tensor, bool)> = vec![(self.clone(), false)];
        while let Some((t, expanded)) = stack.pop() {
            if expanded {
                order.push(t);
                continue;
            }
            if seen.insert(t.key(), ()).is_some() {
                continue;
            }
            stack.push((t.clone(), true));
            if let Some(gf) = &t.0.grad_fn {
                for inp in gf.inputs.iter().rev() {
                    if inp.requires_grad() && !seen.contains_key(&inp.key()) {
                        stack.push((inp.clone(), false));
                    }
                }
            }
        }
        let mut grads: HashMap<*const Inner, Vec<f32>> = HashMap::new();
        grads.insert(self.key(), grad);
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.key()) else {
                continue;
            };
            match &t.0.grad_fn {
                None => t.accumulate_grad(g),
                Some(gf) => {
                    let label = || profile::label(gf.name, gf.inputs[0].shape());
                    let input_grads = profile::time(label, Phase::Backward, || (gf.backward)(&gf.inputs, t, &g));
                    pool::recycle(g);
                    debug_assert_eq!(input_grads.len(), gf.inputs.len(), "{}", gf.name);
                    for (inp, ig) in gf.inputs.iter().zip(input_grads) {
                        let Some(ig) = ig else { continue };
                        if !inp.requires_grad() {
                            continue;
                        }
                        assert_eq!(ig.len(), inp.numel(), "{}: gradient size", gf.name);
                        match grads.get_mut(&inp.key()) {
                            Some(acc) => {
                                acc.iter_mut().zip(&ig).for_each(|(a, b)| *a += b);
                                pool::recycle(ig);
                            }
                            None => {
                                grads.insert(inp.key(), ig);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// (N, H, W, C) values -> (N, C, H, W).
pub fn nhwc_to_nchw(src: &[f32], (n, c, h, w): (usize, usize, usize, usize), dst: &mut [f32]) {
    let hw = h * w;
    for s in 0..n {
        let (x, y) = (&src[s * c * hw..][..c * hw], &mut dst[s * c * hw..][..c * hw]);
        for p in 0..hw {
            for ch in 0..c {
                y[ch * hw + p] = x[p * c + ch];
            }
        }
    }
}

/// (N, C, H, W) values -> (N, H, W, C).
pub fn nchw_to_nhwc(src: &[f32], (n, c, h, w): (usize, usize, usize, usize), dst: &mut [f32]) {
    let hw = h * w;
    for s in 0..n {
        let (x, y) = (&src[s * c * hw..][..c * hw], &mut dst[s * c * hw..][..c * hw]);
        for ch in 0..c {
            for p in 0..hw {
                y[p * c + ch] = x[ch * hw + p];
            }
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        let shown: Vec<f32> = data.iter().take(8).copied().collect();
        write!(f, "Tensor(shape={:?}, data={shown:?}", self.shape())?;
        if data.len() > 8 {
            write!(f, "...")?;
        }
        if let Some(name) = self.grad_fn_name() {
            write!(f, ", grad_fn={name}")?;
        } else if self.requires_grad() {
            write!(f, ", requires_grad=true")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = a * b elementwise, a test-only op to exercise the graph machinery.
    fn mul(a: &Tensor, b: &Tensor) -> Tensor {
        let out: Vec<f32> = a.data().iter().zip(b.data().iter()).map(|(x, y)| x * y).collect();
        Tensor::from_op(
            out,
            a.shape(),
            "mul",
            vec![a.clone(), b.clone()],
            Box::new(|inp, _out, g| {
                let (a, b) = (inp[0].data(), inp[1].data());
                let ga = g.iter().zip(b.iter()).map(|(g, b)| g * b).collect();
                let gb = g.iter().zip(a.iter()).map(|(g, a)| g * a).collect();
                vec![Some(ga), Some(gb)]
            }),
        )
    }

    fn sum(a: &Tensor) -> Tensor {
        let s = a.data().iter().sum();
        let n = a.numel();
        Tensor::from_op(
            vec![s],
            &[1],
            "sum",
            vec![a.clone()],
            Box::new(move |_, _, g| vec![Some(vec![g[0]; n])]),
        )
    }

    #[test]
    fn diamond_graph_accumulates_and_leaf_grads_add_up_across_calls() {
        let x = Tensor::parameter(vec![2.0, 3.0], &[2]);
        let c = Tensor::from_vec(vec![5.0, 7.0], &[2]);
        // L = sum(x*x + x*c): dL/dx = 2x + c
        let l = || {
            let y = mul(&x, &x);
            let z = mul(&x, &c);
            let s1 = sum(&y);
            let s2 = sum(&z);
            let both = Tensor::from_op(
                vec![s1.item() + s2.item()],
                &[1],
                "add",
                vec![s1, s2],
                Box::new(|_, _, g| vec![Some(g.to_vec()), Some(g.to_vec())]),
            );
            both.backward();
        };
        l();
        assert_eq!(x.grad().unwrap(), vec![9.0, 13.0]);
        assert!(c.grad().is_none(), "constants get no gradient");
        l();
        assert_eq!(x.grad().unwrap(), vec![18.0, 26.0], "grads accumulate");
        x.zero_grad();
        assert!(x.grad().is_none());
    }

    #[test]
    fn derived_layouts_are_remade_after_the_values_change() {
        let t = Tensor::parameter(vec![1.0, 2.0], &[2]);
        let calls = Cell::new(0);
        let double = |v: &[f32]| {
            calls.set(calls.get() + 1);
            v.iter().map(|x| 2.0 * x).collect()
        };
        assert_eq!(*t.derived("double", double), vec![2.0, 4.0]);
        assert_eq!(*t.derived("double", double), vec![2.0, 4.0]);
        assert_eq!(calls.get(), 1, "reused while the values are unchanged");
        t.data_mut()[0] = 5.0;
        assert_eq!(*t.derived("double", double), vec![10.0, 4.0]);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn layouts_convert_both_ways() {
        let nchw: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| i as f32).collect();
        let mut nhwc = vec![0.0; nchw.len()];
        nchw_to_nhwc(&nchw, (2, 3, 2, 2), &mut nhwc);
        assert_eq!(&nhwc[..6], &[0.0, 4.0, 8.0, 1.0, 5.0, 9.0]);
        let t = Tensor::from_op_in_layout(nhwc, &[2, 3, 2, 2], true, "test", vec![], Box::new(|_, _, _| vec![]));
        assert!(t.is_channels_last());
        assert_eq!(t.to_vec(), nchw);
        assert_eq!(t.contiguous().data().to_vec(), nchw);
    }

    #[test]
    fn no_grad_records_nothing_and_restores_mode() {
        let x = Tensor::parameter(vec![1.0], &[1]);
        let y = no_grad(|| {
            assert!(!is_grad_enabled());
            mul(&x, &x)
        });
        assert!(is_grad_enabled());
        assert!(!y.requires_grad());
        assert!(y.is_leaf());
        let z = mul(&x, &x);
        assert_eq!(z.grad_fn_name(), Some("mul"));
    }
}
