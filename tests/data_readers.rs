//! The pickle and IDX readers against committed fixtures and the bundled MNIST files.
//!
//! Fixtures come from `scripts/make_pickle_fixtures.py`: 16 images per split of the real MNIST,
//! in the tutorial's Python 2 layout and as pickled by Python 3 numpy (protocols 2 to 5), plus
//! malformed variants.

use std::path::{Path, PathBuf};

use mnist_cnn::data::{Format, TensorDataset, load_mnist, pickle::read_mnist_pickle};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

fn same_samples(a: &TensorDataset, b: &TensorDataset, b_from: usize, n: usize) {
    for i in 0..n {
        let (x, y) = a.get(i);
        let (x2, y2) = b.get(b_from + i);
        assert_eq!((x, y), (x2, y2), "sample {i}");
    }
    // And the f32 batches the model sees are bit-identical.
    let idx: Vec<usize> = (0..n).collect();
    let idx2: Vec<usize> = (b_from..b_from + n).collect();
    let (xa, ya) = a.batch(&idx);
    let (xb, yb) = b.batch(&idx2);
    assert_eq!(ya, yb);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&xa.data()), bits(&xb.data()));
}

#[test]
fn bundled_idx_files_have_the_tutorial_splits() {
    let m = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    assert_eq!((m.train.len(), m.valid.len(), m.test.len()), (50_000, 10_000, 10_000));
    // The first training labels of MNIST are 5 0 4 1 9 2 1 3 1 4.
    let first: Vec<u8> = (0..10).map(|i| m.train.get(i).1).collect();
    assert_eq!(first, vec![5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(m.test.get(0).1, 7);
}

#[test]
fn every_pickle_flavour_loads_to_the_same_samples_as_the_idx_files() {
    let idx = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    for name in [
        "mnist_py2.pkl.gz",
        "mnist_py3_p2.pkl.gz",
        "mnist_py3_p3.pkl.gz",
        "mnist_py3_p4.pkl.gz",
        "mnist_py3_p5.pkl.gz",
    ] {
        let p = load_mnist(&fixture(name), Format::Pickle).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((p.train.len(), p.valid.len(), p.test.len()), (16, 16, 16), "{name}");
        same_samples(&p.train, &idx.train, 0, 16);
        same_samples(&p.valid, &idx.valid, 0, 16);
        same_samples(&p.test, &idx.test, 0, 16);
    }
}

#[test]
fn each_malformed_pickle_gives_its_error_naming_the_file() {
    let cases = [
        ("bad_big_endian.pkl.gz", "big-endian"),
        ("bad_fortran.pkl.gz", "Fortran-order"),
        ("bad_global.pkl.gz", "refusing global 'datetime.date'"),
        ("bad_label.pkl.gz", "y_train: label 12 at index 3"),
        ("bad_scaling.pkl.gz", "not a pixel/256"),
        ("bad_two_splits.pkl.gz", "expected 3 splits"),
        (
            "bad_shape.pkl.gz",
            "shape [5, 784] of f4 needs 15680 bytes, the array holds 12544",
        ),
        ("bad_truncated.pkl.gz", "truncated"),
        ("missing.pkl.gz", "cannot read"),
    ];
    for (name, want) in cases {
        let e = read_mnist_pickle(&fixture(name)).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains(want),
            "{name}: {e:?} should say {want:?}"
        );
    }
}

#[test]
fn missing_idx_file_is_named() {
    let err = load_mnist(Path::new("/nonexistent-dir"), Format::Idx).unwrap_err();
    let file = Path::new("/nonexistent-dir/train-images-idx3-ubyte");
    assert!(
        matches!(&err, mnist_cnn::Error::NotFound { path: Some(p), .. } if p == file),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(file));
    assert_eq!(
        err.to_string(),
        "/nonexistent-dir/train-images-idx3-ubyte: not found (nor with .gz)"
    );
    // A file that is there but holds something else is a format error, not a missing file.
    let e = read_mnist_pickle(&fixture("bad_global.pkl.gz")).unwrap_err();
    assert!(matches!(e, mnist_cnn::Error::Format { path: Some(_), .. }), "{e:?}");
}

/// The full tutorial pickle, when `../shared/data/mnist.pkl.gz` is present (it is in the
/// development checkout and in CI), equals the bundled IDX files sample for sample.
#[test]
fn full_tutorial_pickle_matches_idx_when_available() {
    let pkl = root().join("../shared/data/mnist.pkl.gz");
    if !pkl.is_file() {
        eprintln!("skipped: {} not present", pkl.display());
        return;
    }
    let p = load_mnist(&pkl, Format::Pickle).unwrap();
    let idx = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    for (a, b) in [(&p.train, &idx.train), (&p.valid, &idx.valid), (&p.test, &idx.test)] {
        assert_eq!(a.len(), b.len());
        same_samples(a, b, 0, a.len());
    }
}
