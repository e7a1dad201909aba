//! Reading PyTorch fixtures: a safetensors tensor as f64 values, for the tests and examples
//! that compare with PyTorch (`#[path]`-included: tests/accuracy.rs, tests/optim_golden.rs,
//! examples/eighty_steps_trace.rs).

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// The fixture's tensor `name` as f64 values (stored F32 or F64, little-endian).
pub fn values(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    match t.dtype() {
        Dtype::F32 => (t.data().chunks_exact(4))
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => (t.data().chunks_exact(8))
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        d => panic!("{name}: dtype {d:?}"),
    }
}
