//! Negative log-likelihood loss, mean over the batch (`F.nll_loss(logp, target)`).
//!
//! Shapes: logp (N, C), target N class indices < C, loss a scalar (shape `[1]`).
//! loss = -mean_i logp[i, target_i]; backward: dlogp[i, target_i] = -dloss / N.

use crate::tensor::Tensor;

/// `F.nll_loss(logp, target)` with mean reduction. Panics on a target >= C (a bug upstream:
/// the data readers reject such labels with a clear error).
pub fn nll_loss(logp: &Tensor, target: &[usize]) -> Tensor {
    let s = logp.shape();
    assert!(
        s.len() == 2 && s[0] == target.len() && s[0] > 0,
        "nll_loss: logp {s:?}, {} targets",
        target.len()
    );
    let (n, c) = (s[0], s[1]);
    assert!(target.iter().all(|&t| t < c), "nll_loss: target out of range 0..{c}");
    let sum: f32 = {
        let d = logp.data();
        target.iter().enumerate().map(|(i, &t)| d[i * c + t]).sum()
    };
    let target = target.to_vec();
    Tensor::from_op(
        vec![-sum / n as f32],
        &[1],
        "nll_loss",
        vec![logp.clone()],
        Box::new(move |_, _, dy| {
            let mut dx = vec![0.0; n * c];
            let g = -dy[0] / n as f32;
            for (i, &t) in target.iter().enumerate() {
                dx[i * c + t] = g;
            }
            vec![Some(dx)]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    #[test]
    fn gradient_matches_finite_differences() {
        let target = [2, 0, 4, 4];
        check(
            &[input(random(20, 4), &[4, 5], true)],
            |t| nll_loss(&t[0], &target),
            |v| vec![-target.iter().enumerate().map(|(i, &t)| v[0][i * 5 + t]).sum::<f64>() / 4.0],
            1e-4,
        );
    }
}
