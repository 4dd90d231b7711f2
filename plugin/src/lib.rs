//! # ibau-plugin
//!
//! Wires [`ibau_core`] to tch (libtorch) models. The tch backend, the I-BAU loop, attacks, the
//! CLI and MLflow tracking arrive with their issues; this crate depends on the core and never the
//! reverse.
#![warn(missing_docs)]

pub use ibau_core as core;
