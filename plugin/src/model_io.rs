//! Models shared with Python PyTorch: safetensors state dicts both ways, and TorchScript modules.
//!
//! * [`load_safetensors`] fills a `VarStore` from a file written by
//!   `safetensors.torch.save_file(model.state_dict(), path)`; names must match the store's
//!   variable paths (tch joins path components with `.`, as PyTorch's state dicts do).
//! * [`save_safetensors`] writes the store so that `safetensors.torch.load_file` reads it.
//! * [`parse_safetensors_header`] checks a safetensors file's header (the part that comes from
//!   outside) before libtorch sees the file; it is fuzzed (`fuzz/fuzz_targets/safetensors.rs`).
//! * [`load_torchscript`] loads a `torch.jit.save`d module with its parameters registered in a
//!   `VarStore` (so they can be unlearned) — see [`tch::TrainableCModule`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use tch::nn::VarStore;

use crate::error::{Error, Result};

fn file_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Largest safetensors header accepted, in bytes (the format's own limit, 100 MB).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Most tensors in one safetensors file.
pub const MAX_SAFETENSORS_TENSORS: usize = 100_000;

/// One tensor of a safetensors file, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Its name (a state-dict key).
    pub name: String,
    /// Its element type as the header spells it (`F32`, `F64`, `I64`, …).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where its bytes lie, relative to the end of the header.
    pub data: Range<usize>,
}

/// Bytes per element of the element types libtorch (through tch) reads from safetensors.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "I16" | "F16" | "BF16" => 2,
        "I32" | "F32" => 4,
        "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks a whole safetensors file (`bytes`) and returns its tensors, sorted by offset.
///
/// The format (huggingface/safetensors, `docs/` and its crate's `validate`): an 8-byte
/// little-endian header length `N ≤ 100 MB`, `N` bytes of UTF-8 JSON — an object whose
/// `__metadata__` entry (optional) maps strings to strings and whose other entries are
/// `{"dtype", "shape", "data_offsets": [begin, end]}` — then the data. This checker is stricter
/// than the format where libtorch would fail anyway: only the element types tch converts
/// (`BOOL U8 I8 I16 F16 BF16 I32 F32 I64 F64`), no unknown fields, and the tensors must tile
/// the data exactly (no gap, no overlap, nothing after the last), each with
/// `end − begin = Π shape · size(dtype)` computed without overflow.
///
/// # Errors
/// [`Error::Parse`] naming the first violation.
pub fn parse_safetensors_header(bytes: &[u8]) -> Result<Vec<TensorEntry>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        dtype: String,
        shape: Vec<u64>,
        data_offsets: (u64, u64),
    }
    let bad = |m: String| Error::Parse(format!("safetensors: {m}"));
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            bad(format!(
                "{} bytes, shorter than the 8-byte header length",
                bytes.len()
            ))
        })?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_SAFETENSORS_HEADER {
        return Err(bad(format!(
            "header of {n} bytes exceeds {MAX_SAFETENSORS_HEADER}"
        )));
    }
    let rest = &bytes[8..];
    let n = usize::try_from(n).map_err(|_| bad("header length overflows".into()))?;
    let header = rest.get(..n).ok_or_else(|| {
        bad(format!(
            "header of {n} bytes, but only {} follow",
            rest.len()
        ))
    })?;
    let data_len = rest.len() - n;
    // The safetensors crate (and so tch) requires the JSON to start with `{` (found by the
    // `safetensors` fuzz target: leading whitespace was accepted here, refused there).
    if header.first() != Some(&b'{') {
        return Err(bad("header does not start with '{'".into()));
    }
    let text = std::str::from_utf8(header).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    if map.len() > MAX_SAFETENSORS_TENSORS + 1 {
        return Err(bad(format!(
            "{} entries exceed {MAX_SAFETENSORS_TENSORS}",
            map.len()
        )));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            serde_json::from_value::<BTreeMap<String, String>>(value)
                .map_err(|e| bad(format!("__metadata__ must map strings to strings: {e}")))?;
            continue;
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| bad(format!("{name:?}: {e}")))?;
        let size = dtype_size(&raw.dtype)
            .ok_or_else(|| bad(format!("{name:?}: unsupported dtype {:?}", raw.dtype)))?;
        let mut shape = Vec::with_capacity(raw.shape.len());
        let mut bytes_needed = size as u64;
        for &d in &raw.shape {
            shape.push(usize::try_from(d).map_err(|_| bad(format!("{name:?}: dimension {d}")))?);
            bytes_needed = bytes_needed
                .checked_mul(d)
                .ok_or_else(|| bad(format!("{name:?}: shape {:?} overflows", raw.shape)))?;
        }
        let (begin, end) = raw.data_offsets;
        if begin > end || end - begin != bytes_needed {
            return Err(bad(format!(
                "{name:?}: data_offsets [{begin}, {end}] do not hold {bytes_needed} bytes \
                 ({:?} of {})",
                raw.shape, raw.dtype
            )));
        }
        if end > data_len as u64 {
            return Err(bad(format!(
                "{name:?}: data ends at {end}, past the {data_len} bytes of data"
            )));
        }
        out.push(TensorEntry {
            name,
            dtype: raw.dtype,
            shape,
            // Both ≤ data_len, a usize.
            data: begin as usize..end as usize,
        });
    }
    out.sort_by_key(|t| (t.data.start, t.data.end));
    let mut at = 0;
    for t in &out {
        if t.data.start != at {
            return Err(bad(format!(
                "{:?} starts at {}, expected {at} (a gap or an overlap)",
                t.name, t.data.start
            )));
        }
        at = t.data.end;
    }
    if at != data_len {
        return Err(bad(format!(
            "the tensors cover {at} of the {data_len} bytes of data"
        )));
    }
    Ok(out)
}

/// Loads a safetensors state dict into `vs`, requiring the same set of names and shapes.
///
/// The header is checked by [`parse_safetensors_header`] before libtorch reads the file.
///
/// # Errors
/// [`Error::File`] when the file cannot be read or is malformed, names are missing or extra,
/// or shapes differ.
pub fn load_safetensors(vs: &mut VarStore, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    parse_safetensors_header(&bytes).map_err(|e| file_err(path, e))?;
    drop(bytes);
    let named = tch::Tensor::read_safetensors(path).map_err(|e| file_err(path, e))?;
    let vars = vs.variables();
    let file_names: BTreeSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let store_names: BTreeSet<&str> = vars.keys().map(String::as_str).collect();
    if file_names != store_names {
        let missing: Vec<_> = store_names.difference(&file_names).collect();
        let extra: Vec<_> = file_names.difference(&store_names).collect();
        return Err(file_err(
            path,
            format!("state dict names differ: missing {missing:?}, unexpected {extra:?}"),
        ));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, src) in &named {
            let dst = &vars[name];
            if dst.size() != src.size() {
                return Err(file_err(
                    path,
                    format!(
                        "{name}: shape {:?} in file, {:?} in model",
                        src.size(),
                        dst.size()
                    ),
                ));
            }
            let mut dst = dst.shallow_clone();
            dst.f_copy_(&src.f_to_kind(dst.kind())?.f_to_device(dst.device())?)?;
        }
        Ok(())
    })
}

/// Saves every variable of `vs` as a safetensors file (CPU, contiguous).
///
/// # Errors
/// [`Error::File`] on I/O failure.
pub fn save_safetensors(vs: &VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            Ok((
                n,
                t.f_detach()?
                    .f_to_device(tch::Device::Cpu)?
                    .f_contiguous()?,
            ))
        })
        .collect::<Result<_>>()?;
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tch::Tensor::write_safetensors(&named, path).map_err(|e| file_err(path, e))
}

/// Loads a TorchScript module with its parameters registered (trainable) in `vs`.
///
/// # Errors
/// [`Error::File`] when the module cannot be loaded.
pub fn load_torchscript(vs: &VarStore, path: &Path) -> Result<tch::TrainableCModule> {
    tch::TrainableCModule::load(path, vs.root()).map_err(|e| file_err(path, e))
}
