//! The PyTorch tutorial "What is torch.nn really?", step by step, with this crate:
//! the model from scratch (manual weights, `log_softmax`, `nll`, `accuracy`, manual SGD under
//! `no_grad`), then `F.cross_entropy`, then `nn.Module` + `optim.SGD` + `fit`, then `Mnist_CNN`,
//! then the same CNN as an `nn.Sequential` with `Lambda` layers.
//!
//! `cargo run --release --example tutorial` (about half a minute on 2 cores).

use mnist_cnn::data::{DataLoader, Format, TensorDataset, load_mnist};
use mnist_cnn::nn::{AdaptiveAvgPool2d, Conv2dConfig, Lambda, MnistCnn, MnistLogistic, Module, ReLU, Sequential};
use mnist_cnn::ops::{self, argmax, exp, log, matmul, mean, mul, sum};
use mnist_cnn::optim::SgdConfig;
use mnist_cnn::rng::Rng;
use mnist_cnn::train::{LOSS_FUNC, fit};
use mnist_cnn::{Tensor, no_grad};

fn main() -> mnist_cnn::Result<()> {
    // MNIST data setup: x_train (50000, 784) as pixel/256, y_train digits.
    let dir = mnist_cnn::runs::find_mnist()?;
    let data = load_mnist(&dir, Format::Idx)?;
    let (n, bs) = (data.train.len(), 64);
    let batch = |i: usize| {
        let idx: Vec<usize> = (i * bs..((i + 1) * bs).min(n)).collect();
        data.train.batch(&idx)
    };
    println!(
        "x_train: {n} images of 784 pixels; y_train[..10] = {:?}",
        batch(0).1[..10].to_vec()
    );

    // Neural net from scratch.
    // weights = torch.randn(784, 10) / math.sqrt(784); weights.requires_grad_()
    let mut rng = Rng::new(0);
    let weights = (&Tensor::randn(&[784, 10], &mut rng) / 784f32.sqrt()).requires_grad_();
    let bias = Tensor::zeros(&[10]).requires_grad_();
    // def log_softmax(x): return x - x.exp().sum(-1).log().unsqueeze(-1)
    let log_softmax = |x: &Tensor| x - &log(&sum(&exp(x), Some(&[1]), true));
    // def model(xb): return log_softmax(xb @ weights + bias)
    let model = |xb: &Tensor| log_softmax(&(&matmul(xb, &weights) + &bias));
    // def nll(input, target): return -input[range(target.shape[0]), target].mean()
    let nll = |input: &Tensor, target: &[usize]| {
        let mut pick = vec![0.0; input.numel()];
        for (row, &t) in target.iter().enumerate() {
            pick[row * 10 + t] = 1.0;
        }
        let picked = sum(&mul(input, &Tensor::from_vec(pick, input.shape())), Some(&[1]), false);
        -&mean(&picked, None, false)
    };
    // def accuracy(out, yb): return (torch.argmax(out, dim=1) == yb).float().mean()
    let accuracy = |out: &Tensor, yb: &[usize]| {
        let hits = argmax(out, 1).iter().zip(yb).filter(|(p, y)| p == y).count();
        hits as f32 / yb.len() as f32
    };
    let (xb, yb) = batch(0);
    let preds = model(&xb);
    println!("preds[0] = {:?}, shape {:?}", &preds.to_vec()[..3], preds.shape());
    println!(
        "from scratch, before training: loss {:.4}, accuracy {:.4}",
        nll(&preds, &yb).item(),
        accuracy(&preds, &yb)
    );
    let (lr, epochs) = (0.5f32, 2);
    for _ in 0..epochs {
        for i in 0..n.div_ceil(bs) {
            let (xb, yb) = batch(i);
            let loss = nll(&model(&xb), &yb);
            loss.backward();
            // with torch.no_grad(): weights -= weights.grad * lr; ...; weights.grad.zero_()
            no_grad(|| {
                for p in [&weights, &bias] {
                    let g = p.grad().expect("a gradient after backward");
                    p.data_mut().iter_mut().zip(g).for_each(|(w, g)| *w -= g * lr);
                    p.zero_grad();
                }
            });
        }
    }
    let (xb, yb) = batch(0);
    println!(
        "from scratch, after {epochs} epochs: loss {:.4}, accuracy {:.4}",
        nll(&model(&xb), &yb).item(),
        accuracy(&model(&xb), &yb)
    );

    // Using torch.nn.functional: loss_func = F.cross_entropy, model = xb @ weights + bias.
    let logits = &matmul(&xb, &weights) + &bias;
    println!("F.cross_entropy: loss {:.4}", ops::cross_entropy(&logits, &yb).item());

    // train_ds = TensorDataset(x_train, y_train): any f32 tensor and its labels, indexed
    // together (the bundled data keeps its u8 pixels and scales them per batch, with the same
    // values).
    let (x_train, y_train) = data.train.batch(&(0..n).collect::<Vec<_>>());
    let train_ds = TensorDataset::from_tensors(&x_train, &y_train);
    let (xb, yb) = train_ds.batch(&(0..bs).collect::<Vec<_>>());
    println!(
        "TensorDataset(x_train, y_train)[0..{bs}]: x {:?}, y[..5] {:?}",
        xb.shape(),
        &yb[..5]
    );

    // nn.Module, optim.SGD and fit, with validation batches twice the training batch.
    let train_dl = DataLoader::new(data.train.clone(), bs, true, 0);
    let valid_dl = DataLoader::new(data.valid.clone(), bs * 2, false, 0);
    let logistic = MnistLogistic::new(&mut Rng::new(0));
    let mut opt = SgdConfig::new(0.5).init(logistic.parameters());
    fit(
        0..epochs,
        &logistic,
        LOSS_FUNC,
        &mut opt,
        &train_dl,
        &valid_dl,
        |s, _| {
            println!("Mnist_Logistic epoch {} valid_loss {:.4}", s.epoch, s.valid.loss);
            Ok(())
        },
    )?;

    // The CNN, with momentum.
    let cnn = MnistCnn::new(&mut Rng::new(0));
    let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(cnn.parameters());
    fit(0..epochs, &cnn, LOSS_FUNC, &mut opt, &train_dl, &valid_dl, |s, _| {
        println!("Mnist_CNN epoch {} valid_loss {:.4}", s.epoch, s.valid.loss);
        Ok(())
    })?;

    // nn.Sequential: the same network as a sequence of layers, with Lambda for the reshapes,
    // and nn.AdaptiveAvgPool2d(1) in place of nn.AvgPool2d(4) (the tutorial's last version).
    let mut rng = Rng::new(0);
    let conv = |i, o, rng: &mut Rng| Conv2dConfig::new(i, o, 3).with_stride(2).with_padding(1).init(rng);
    let model = Sequential::new()
        .append(Lambda::new(|x| ops::reshape(x, &[None, Some(1), Some(28), Some(28)])))
        .append(conv(1, 16, &mut rng))
        .append(ReLU)
        .append(conv(16, 16, &mut rng))
        .append(ReLU)
        .append(conv(16, 10, &mut rng))
        .append(ReLU)
        .append(AdaptiveAvgPool2d { output_size: (1, 1) })
        .append(Lambda::new(|x| ops::reshape(x, &[Some(x.shape()[0]), None])));
    let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(model.parameters());
    fit(0..epochs, &model, LOSS_FUNC, &mut opt, &train_dl, &valid_dl, |s, _| {
        println!("nn.Sequential epoch {} valid_loss {:.4}", s.epoch, s.valid.loss);
        Ok(())
    })?;
    Ok(())
}
