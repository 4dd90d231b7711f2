//! # ibau-plugin
//!
//! Wires [`ibau_core`] to tch (libtorch) models on CPU or CUDA:
//! * [`TensorList`] — a model's parameter list as one vector of the core's vector space;
//! * [`autograd`] — the fixed-point map's VJPs (`Jᵀv`, `(∂_λΦ)ᵀv`) and the outer gradients by
//!   double backward, from closures computing scalar losses;
//! * [`piecewise_linear`] — the same operators in closed form for the authors' inner objective
//!   on a piecewise-linear model (no double backward);
//! * [`model_io`] — safetensors and TorchScript models shared with Python PyTorch.
//!
//! The plugin depends on the core, never the reverse.
#![warn(missing_docs)]

pub mod attacks;
pub mod autograd;
pub mod config;
pub mod data;
pub mod error;
pub mod ibau;
pub mod mlflow;
pub mod model_io;
pub mod models;
pub mod piecewise_linear;
pub mod plots;
pub mod recalibrate;
pub mod tensor_vec;
pub mod train;

pub use error::{Error, Result};
pub use ibau_core as core;
pub use tensor_vec::TensorList;

/// The device to run on: CUDA if asked for and available, with a clear error otherwise.
///
/// # Errors
/// [`Error::DeviceUnavailable`] when `cuda` is asked for and no GPU is visible.
pub fn device(cuda: bool) -> Result<tch::Device> {
    if !cuda {
        return Ok(tch::Device::Cpu);
    }
    if tch::Cuda::is_available() {
        Ok(tch::Device::Cuda(0))
    } else {
        Err(Error::DeviceUnavailable(tch::Device::Cuda(0)))
    }
}
