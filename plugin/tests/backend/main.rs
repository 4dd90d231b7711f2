//! Tests of the tch backend: the core's conformance suite on `TensorList`, hypergradients through
//! autograd against the dense oracle and finite differences, and model I/O with Python.
//! CUDA variants run when a GPU is visible and print a notice when skipped.

mod conformance;
mod dense_oracle;
mod piecewise_linear;
mod python_roundtrip;

/// The CUDA device if one is visible; otherwise prints why the CUDA variant is skipped.
pub fn cuda_or_notice(test: &str) -> Option<tch::Device> {
    if tch::Cuda::is_available() {
        Some(tch::Device::Cuda(0))
    } else {
        // Written to the process's stderr directly, past libtest's output capture, so the skip
        // is visible in every run.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: {test}: CUDA variant SKIPPED — no CUDA device visible"
        );
        None
    }
}
