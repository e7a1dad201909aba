//! A time-bounded mutation test (proptest) that runs with every `cargo test`: valid files of
//! each format, changed by random bit flips, byte overwrites, truncations, insertions and
//! duplicated ranges, go through the fuzz targets' code ([`mnist_cnn::fuzzing`]). None may
//! panic, and every refusal must say something. A few hundred cases per reader (fewer for the
//! HTTP target, which opens a connection per case); a few seconds in all.

use std::path::Path;

use mnist_cnn::fuzzing::{self, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    Overwrite(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::Overwrite(p, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = data.len();
        match m {
            Mutation::FlipBit(p, b) if len > 0 => data[p % len] ^= 1 << b,
            Mutation::Overwrite(p, v) if len > 0 => data[p % len] = *v,
            Mutation::Truncate(p) => data.truncate(p % (len + 1)),
            Mutation::Insert(p, v) => {
                let at = p % (len + 1);
                data.splice(at..at, v.iter().copied());
            }
            Mutation::Duplicate(p, n) if len > 0 => {
                let at = p % len;
                let piece: Vec<u8> = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            _ => {}
        }
    }
    data
}

fn seed(target: &str, file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target)
            .join(file),
    )
    .unwrap()
}

/// Mutates the seeds of `target` `cases` times; each result must be Ok or a non-empty error.
fn mutate(target: &str, files: &[&str], cases: u32, f: Target) {
    let seeds: Vec<Vec<u8>> = files.iter().map(|n| seed(target, n)).collect();
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..8));
    runner
        .run(&strategy, |(i, muts)| {
            let data = apply(seeds[i].clone(), &muts);
            if let Err(e) = f(&data) {
                prop_assert!(!e.trim().is_empty(), "{target}: empty error");
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    mnist_cnn::fuzzing::remove_temp_files();
}

#[test]
fn mutated_idx() {
    mutate("idx", &["labels10", "images2"], 400, fuzzing::idx);
}

#[test]
fn mutated_gzip() {
    mutate(
        "gzip",
        &["labels10.gz", "images2.gz", "two_members.gz"],
        300,
        fuzzing::gzip,
    );
}

#[test]
fn mutated_pickle() {
    mutate(
        "pickle",
        &["mnist_py2.pkl", "mnist_py3_p4.pkl", "small_values.pkl"],
        300,
        fuzzing::pickle,
    );
}

#[test]
fn mutated_safetensors() {
    mutate(
        "safetensors",
        &["mnist_cnn_seed0.safetensors", "partial.safetensors"],
        300,
        fuzzing::safetensors,
    );
}

#[test]
fn mutated_image() {
    mutate("image", &["font_1.png", "blank.png", "tiny.pgm"], 300, fuzzing::image);
}

#[test]
fn mutated_metrics_log() {
    mutate(
        "metrics_log",
        &["run.jsonl", "run.csv", "spaces.jsonl"],
        400,
        fuzzing::metrics_log,
    );
}

#[test]
fn mutated_http_response() {
    mutate(
        "http_response",
        &["ok", "chunked", "partial", "gzip_encoding"],
        100,
        fuzzing::http_response,
    );
}

/// The mutator itself changes its input (a mutation test that mutated nothing would pass
/// vacuously).
#[test]
fn the_mutations_change_the_input() {
    let s = seed("idx", "labels10");
    assert_ne!(apply(s.clone(), &[Mutation::FlipBit(3, 0)]), s);
    assert_eq!(apply(s.clone(), &[Mutation::Truncate(5)]).len(), 5);
    assert_eq!(apply(s.clone(), &[Mutation::Insert(0, vec![1, 2])]).len(), s.len() + 2);
}
