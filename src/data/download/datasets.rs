//! The datasets `download` knows: for each its mirrors and files, with each file's expected
//! size, the size its content may inflate to and its checksums; and the class names.

/// One file of a dataset and how to check it.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    pub name: String,
    /// Published md5 of the .gz file.
    pub md5: Option<String>,
    /// sha256 of the decompressed content.
    pub sha256: Option<String>,
    /// Checked by parsing it as the tutorial's pickle instead.
    pub pickle: bool,
    /// The expected size of the file as served, in bytes: a transfer is stopped at
    /// [`RemoteFile::cap`], this plus a margin.
    pub size: u64,
    /// The most bytes its content may decompress to in the checksum step.
    pub content_max: u64,
}

impl RemoteFile {
    /// The most bytes a transfer of this file may bring: the expected size plus 1/8 plus 64 KiB
    /// (a mirror may re-compress the files; the bundled MNIST files are smaller than the
    /// published ones).
    pub fn cap(&self) -> u64 {
        self.size + self.size / 8 + 64 * 1024
    }
}

/// A downloadable dataset.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub key: String,
    pub mirrors: Vec<String>,
    pub files: Vec<RemoteFile>,
}

/// Decompressed sizes of the four IDX files (the same in MNIST, Fashion-MNIST and KMNIST).
const IDX_CONTENT: [u64; 4] = [47_040_016, 60_008, 7_840_016, 10_008];

/// The four IDX files: (name, published md5, sha256 of the content, published .gz size).
fn idx_files(sums: [(&str, &str, Option<&str>, u64); 4]) -> Vec<RemoteFile> {
    sums.iter()
        .zip(IDX_CONTENT)
        .map(|((name, md5, sha, size), content)| RemoteFile {
            name: name.to_string(),
            md5: Some(md5.to_string()),
            sha256: sha.map(str::to_string),
            pickle: false,
            size: *size,
            content_max: content,
        })
        .collect()
}

/// The datasets this command knows: `mnist`, `fashion-mnist`, `kmnist`, `tutorial-pickle`.
pub fn spec(key: &str) -> Option<DatasetSpec> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Some(match key {
        "mnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ]),
            files: idx_files([
                (
                    "train-images-idx3-ubyte.gz",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    Some("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                    9_912_422,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                    28_881,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                    Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                    1_648_877,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
                    4_542,
                ),
            ]),
        },
        "fashion-mnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ]),
            files: idx_files([
                (
                    "train-images-idx3-ubyte.gz",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    None,
                    26_421_880,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    None,
                    29_515,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "bef4ecab320f06d8554ea6380940ec79",
                    None,
                    4_422_102,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    None,
                    5_148,
                ),
            ]),
        },
        "kmnist" => DatasetSpec {
            key: key.into(),
            mirrors: s(&[
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            ]),
            files: idx_files([
                (
                    "train-images-idx3-ubyte.gz",
                    "bdb82020997e1d708af4cf47b453dcf7",
                    None,
                    18_165_135,
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "e144d726b3acfaa3e44228e80efcd344",
                    None,
                    29_497,
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "5c965bf0a639b31b8f53240b1b52f4d7",
                    None,
                    3_041_136,
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "7320c461ea6c1c855c0b718fb2a4b134",
                    None,
                    5_120,
                ),
            ]),
        },
        "tutorial-pickle" => DatasetSpec {
            key: key.into(),
            mirrors: s(&["https://github.com/pytorch/tutorials/raw/main/_static/"]),
            files: vec![RemoteFile {
                name: "mnist.pkl.gz".into(),
                md5: None,
                sha256: None,
                pickle: true,
                // Not pinned: the deeplearning.net pickle this file comes from is 16,168,813
                // bytes; 18 MiB is a generous round figure (the cap adds 1/8 more).
                size: 18 << 20,
                // 70,000 x 784 float32 pixels (219.5 MB) plus labels and pickle framing.
                content_max: 224 << 20,
            }],
        },
        _ => return None,
    })
}

/// The class names of a dataset, where it has them (MNIST's classes are the digits).
pub fn class_names(key: &str) -> Vec<String> {
    let v: &[&str] = match key {
        "fashion-mnist" => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "kmnist" => &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_cap_over_its_published_size() {
        for key in ["mnist", "fashion-mnist", "kmnist", "tutorial-pickle"] {
            for f in spec(key).unwrap().files {
                assert!(
                    f.size > 4000 && f.cap() > f.size && f.content_max >= f.size,
                    "{key}/{}",
                    f.name
                );
            }
        }
    }
}
