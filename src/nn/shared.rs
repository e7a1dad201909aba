//! One copy of a model's weights, shared by threads: what PyTorch's `model.share_memory()` is
//! for worker processes. The library's tensors are `Rc`-based and stay on their thread, so a
//! [`SharedModel`] holds the values (`Arc<[f32]>`, `Send` and `Sync`) and each thread makes its
//! own [`SharedModel::instance`]: the model's modules, whose parameters and buffers read the
//! shared values without copying them. What a thread makes for itself (re-ordered weight
//! layouts, batch-norm folds, activations, the buffer pool) is its own scratch.
//!
//! `mnist-cnn serve` runs one inference worker per instance.

use std::sync::Arc;

use super::Module;
use super::models::ModelSpec;
use crate::rng::Rng;

/// A model's architecture and its parameters and buffers by state_dict name, shareable by
/// threads.
#[derive(Clone, Debug)]
pub struct SharedModel {
    spec: &'static ModelSpec,
    tensors: Vec<(String, Arc<[f32]>)>,
}

impl SharedModel {
    /// A shared copy of `model`'s parameters and buffers; `spec` must be the architecture it
    /// was built from (a programming error otherwise, found by [`SharedModel::instance`]).
    pub fn new(spec: &'static ModelSpec, model: &dyn Module) -> SharedModel {
        let tensors = model
            .named_parameters()
            .into_iter()
            .chain(model.named_buffers())
            .map(|(name, t)| (name, t.to_shared()))
            .collect();
        SharedModel { spec, tensors }
    }

    /// The architecture.
    pub fn spec(&self) -> &'static ModelSpec {
        self.spec
    }

    /// The shared values by state_dict name.
    pub fn tensors(&self) -> &[(String, Arc<[f32]>)] {
        &self.tensors
    }

    /// This thread's model, in evaluation mode, reading the shared values. Writing to one of
    /// its tensors (training it) copies that tensor first; the shared values never change.
    pub fn instance(&self) -> Box<dyn Module> {
        let model = self.spec.build(&mut Rng::new(0));
        let mine: Vec<_> = model
            .named_parameters()
            .into_iter()
            .chain(model.named_buffers())
            .collect();
        assert_eq!(
            mine.len(),
            self.tensors.len(),
            "SharedModel::instance: {} has other tensors than the shared ones",
            self.spec.name
        );
        for ((name, t), (shared_name, values)) in mine.iter().zip(&self.tensors) {
            assert_eq!(
                name, shared_name,
                "SharedModel::instance: tensor order of {}",
                self.spec.name
            );
            t.share_values(values.clone());
        }
        model.set_training(false);
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models;
    use crate::{Tensor, no_grad};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_model_is_send_and_sync() {
        assert_send_sync::<SharedModel>();
        assert_send_sync::<Arc<SharedModel>>();
    }

    /// Every model's instances on two threads read the very same buffers, without a copy, and
    /// give the original model's logits bit for bit.
    #[test]
    fn instances_on_threads_share_the_values_and_match_the_model() {
        for spec in models::registry() {
            let model = spec.build(&mut Rng::new(3));
            model.set_training(false);
            let x = Tensor::rand(&[5, 784], &mut Rng::new(4));
            let want = no_grad(|| model.forward(&x)).to_vec();
            let shared = Arc::new(SharedModel::new(spec, model.as_ref()));
            drop(model);
            let xs = x.to_vec();
            let results: Vec<(Vec<f32>, Vec<usize>)> = (0..2)
                .map(|_| {
                    let (shared, xs) = (shared.clone(), xs.clone());
                    std::thread::spawn(move || {
                        let m = shared.instance();
                        let y = no_grad(|| m.forward(&Tensor::from_vec(xs, &[5, 784]))).to_vec();
                        let ptrs = m
                            .named_parameters()
                            .into_iter()
                            .chain(m.named_buffers())
                            .map(|(_, t)| {
                                assert!(t.is_shared());
                                t.data().as_ptr() as usize
                            })
                            .collect();
                        (y, ptrs)
                    })
                })
                .map(|h| h.join().expect("the thread runs"))
                .collect();
            let want_ptrs: Vec<usize> = shared.tensors().iter().map(|(_, v)| v.as_ptr() as usize).collect();
            for (y, ptrs) in &results {
                assert_eq!(y, &want, "{spec}: logits of an instance");
                assert_eq!(ptrs, &want_ptrs, "{spec}: an instance reads the shared buffers");
            }
        }
    }

    /// Training an instance copies the values it writes; the shared ones and the other
    /// instances do not change.
    #[test]
    fn writing_to_an_instance_copies_and_leaves_the_shared_values_alone() {
        let spec = models::find("cnn").unwrap();
        let shared = SharedModel::new(spec, spec.build(&mut Rng::new(1)).as_ref());
        let (a, b) = (shared.instance(), shared.instance());
        let before = shared.tensors()[0].1.to_vec();
        let (_, wa) = &a.named_parameters()[0];
        let v0 = wa.version();
        wa.data_mut()[0] += 1.0;
        assert!(!wa.is_shared() && wa.version() > v0);
        assert_eq!(wa.data()[0], before[0] + 1.0);
        assert_eq!(&*shared.tensors()[0].1, &before[..]);
        let (_, wb) = &b.named_parameters()[0];
        assert!(wb.is_shared());
        assert_eq!(&*wb.data(), &before[..]);
    }
}
