//! Tests of weights files and training checkpoints.

use super::*;

fn cnn() -> &'static ModelSpec {
    models::find("cnn").unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn weights_round_trip_with_names_shapes_and_metadata() {
    let d = tmpdir("rt");
    let m = cnn().build(&mut Rng::new(1));
    let mut meta = BTreeMap::new();
    meta.insert("seed".to_string(), "1".to_string());
    let path = d.join("m.safetensors");
    state_dict(m.as_ref(), "cnn", &meta).save(&path).unwrap();
    let (arch, m2, file) = load_model(&path).unwrap();
    assert_eq!(arch.name, "cnn");
    assert_eq!(file.metadata["seed"], "1");
    assert_eq!(file.tensors["conv1.weight"].shape, vec![16, 1, 3, 3]);
    for ((n, a), (_, b)) in m.named_parameters().iter().zip(m2.named_parameters()) {
        assert_eq!(a.to_vec(), b.to_vec(), "{n}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn loading_wrong_files_names_the_tensor_and_both_shapes() {
    let d = tmpdir("bad");
    let cnn = cnn().build(&mut Rng::new(0));
    let mut f = state_dict(cnn.as_ref(), "cnn", &BTreeMap::new());
    f.tensors.remove("conv2.bias");
    let e = load_state_dict(cnn.as_ref(), &f).unwrap_err();
    assert_eq!(e.to_string(), "missing tensor 'conv2.bias' (shape [16])");
    assert!(matches!(e, Error::Architecture { path: None, .. }));
    let mut f = state_dict(cnn.as_ref(), "cnn", &BTreeMap::new());
    f.tensors.get_mut("conv3.weight").unwrap().shape = vec![10, 16, 1, 9];
    let e = load_state_dict(cnn.as_ref(), &f).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 'conv3.weight' has shape [10, 16, 1, 9], the model expects [10, 16, 3, 3]"
    );
    assert!(matches!(e, Error::Shape { .. }));
    // A logistic model's file given to a CNN.
    let lin = models::find("logistic").unwrap().build(&mut Rng::new(0));
    let f = state_dict(lin.as_ref(), "logistic", &BTreeMap::new());
    assert!(
        load_state_dict(cnn.as_ref(), &f)
            .unwrap_err()
            .to_string()
            .contains("missing tensor 'conv1.weight'")
    );
    // f16 data, a truncated file, a missing file.
    let view = TensorView::new(Dtype::F16, vec![1], &[0u8; 2]).unwrap();
    let bytes = safetensors::serialize(vec![("conv1.bias", view)], None).unwrap();
    std::fs::write(d.join("f16.safetensors"), &bytes).unwrap();
    let e = TensorFile::load(&d.join("f16.safetensors")).unwrap_err().to_string();
    assert!(
        e.contains("f16.safetensors: tensor 'conv1.bias' has dtype F16; expected F32"),
        "{e}"
    );
    std::fs::write(d.join("cut.safetensors"), &bytes[..bytes.len() - 3]).unwrap();
    let e = TensorFile::load(&d.join("cut.safetensors")).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors: not a valid safetensors file"), "{e}");
    let e = load_model(&d.join("none.safetensors"))
        .err()
        .expect("missing file")
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn integer_and_f64_tensors_read_as_f32() {
    // PyTorch writes num_batches_tracked as a 0-d int64.
    let i = 7i64.to_le_bytes();
    let f = (-2.5f64).to_le_bytes();
    let views = vec![
        ("n", TensorView::new(Dtype::I64, vec![], &i).unwrap()),
        ("x", TensorView::new(Dtype::F64, vec![1], &f).unwrap()),
    ];
    let file = TensorFile::parse(&safetensors::serialize(views, None).unwrap()).unwrap();
    assert_eq!(
        file.tensors["n"],
        Entry {
            shape: vec![],
            values: vec![7.0]
        }
    );
    assert_eq!(file.tensors["x"].values, [-2.5]);
}

#[test]
fn a_failed_write_leaves_the_previous_file_intact() {
    let d = tmpdir("atomic");
    let path = d.join("keep.bin");
    atomic_write(&path, b"old").unwrap();
    // Writing into a directory that does not exist fails; so does renaming onto a directory.
    assert!(atomic_write(&d.join("no/such/file"), b"x").is_err());
    std::fs::create_dir(d.join("adir")).unwrap();
    std::fs::write(d.join("adir/f"), b"in dir").unwrap();
    assert!(atomic_write(&d.join("adir"), b"new").is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    atomic_write(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Optimizer tensors are found by their full parameter name, even where one name ends with
/// another (`0.1.weight` and `1.weight`, `1.weight` registered first).
#[test]
fn optimizer_state_round_trips_when_one_parameter_name_ends_with_another() {
    use crate::nn::{LinearConfig, Sequential};
    use crate::optim::{Optimizer, SgdConfig};
    let model = |seed: u64| {
        let rng = &mut Rng::new(seed);
        let inner = Sequential::new().add_module("1", LinearConfig::new(3, 2).init(rng));
        Sequential::new()
            .add_module("1", LinearConfig::new(2, 3).init(rng))
            .add_module("0", inner)
    };
    let m = model(1);
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["1.weight", "1.bias", "0.1.weight", "0.1.bias"]);
    let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(m.parameters());
    let x = crate::Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.25], &[2, 2]);
    crate::ops::cross_entropy(&m.forward(&x), &[0, 1]).backward();
    opt.step();
    let d = tmpdir("nested-optim");
    let pos = Position::default();
    let path = save_training_checkpoint(&d, &m, "sequential", &opt, &pos, &BTreeMap::new()).unwrap();
    let m2 = model(2);
    let mut opt2 = SgdConfig::new(0.1).with_momentum(0.9).init(m2.parameters());
    load_training_checkpoint(&path, &m2, &mut opt2).unwrap();
    assert_eq!(opt2.state(), opt.state());
    std::fs::remove_dir_all(&d).unwrap();
}
