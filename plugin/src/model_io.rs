//! Models shared with Python PyTorch: safetensors state dicts both ways, and TorchScript modules.
//!
//! * [`load_safetensors`] fills a `VarStore` from a file written by
//!   `safetensors.torch.save_file(model.state_dict(), path)`; names must match the store's
//!   variable paths (tch joins path components with `.`, as PyTorch's state dicts do).
//! * [`save_safetensors`] writes the store so that `safetensors.torch.load_file` reads it.
//! * [`load_torchscript`] loads a `torch.jit.save`d module with its parameters registered in a
//!   `VarStore` (so they can be unlearned) — see [`tch::TrainableCModule`].

use std::collections::BTreeSet;
use std::path::Path;

use tch::nn::VarStore;

use crate::error::{Error, Result};

fn file_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Loads a safetensors state dict into `vs`, requiring the same set of names and shapes.
///
/// # Errors
/// [`Error::File`] when the file cannot be read, names are missing or extra, or shapes differ.
pub fn load_safetensors(vs: &mut VarStore, path: &Path) -> Result<()> {
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
