//! # ibau-core — implicit hypergradients with certified error bounds
//!
//! For a bilevel problem whose inner solution is a fixed point `w* = Φ(w*, λ)` and whose outer
//! objective is `f(λ) = E(w*(λ), λ)`, the implicit function theorem gives
//!
//! ```text
//! ∇f(λ) = ∇_λE + (∂_λΦ)ᵀ v*,   (I − Jᵀ) v* = ∇_wE,   J = ∂_wΦ.
//! ```
//!
//! This crate computes it matrix-free — from the VJPs `v ↦ Jᵀv` and `v ↦ (∂_λΦ)ᵀv` given as
//! closures or [`Operator`]s — over any [`Vector`] space, with three solvers
//! ([`solve::fixed_point`], [`solve::neumann`], [`solve::cg`]). Every solve returns an [`Info`]:
//! iterations, residual history, operator applications, the reason it stopped, and a bound on the
//! error that says whether it is certified or estimated. A solve that cannot be trusted
//! (diverging, indefinite, non-finite, a violated contraction claim) is an [`Error`], never a
//! silently wrong gradient.
//!
//! ```
//! use ibau_core::{hypergradient, Method, Params, Problem, solve::cg};
//!
//! // Inner: G(w, λ) = ½ wᵀHw − λ·1ᵀw with H = diag(2, 4); Φ = w − ½∇_wG.
//! // Outer: E(w, λ) = ½‖w‖².
//! let h = [2.0, 4.0];
//! let lambda = 1.0;
//! let w_star: Vec<f64> = h.iter().map(|hi| lambda / hi).collect();
//! let mut problem = Problem {
//!     jt: |v: &Vec<f64>, out: &mut Vec<f64>| {
//!         for i in 0..2 { out[i] = v[i] - 0.5 * h[i] * v[i]; }
//!     },
//!     cross_t: |v: &Vec<f64>, out: &mut Vec<f64>| out[0] = 0.5 * (v[0] + v[1]),
//!     grad_w: w_star.clone(),
//!     grad_lambda: vec![0.0],
//! };
//! // J = I − ½H = diag(0, −1) is no contraction (fixed point would not converge), but
//! // I − Jᵀ = ½H is symmetric positive definite, so conjugate gradient applies.
//! let params = Params {
//!     method: Method::ConjugateGradient(cg::Params::default()),
//!     symmetric: true,
//!     ..Params::default()
//! };
//! let hg = hypergradient(&mut problem, &params, None, &mut ()).unwrap();
//! // f(λ) = ½ λ² (1/4 + 1/16), so f'(1) = 5/16.
//! assert!((hg.gradient[0] - 5.0 / 16.0).abs() <= 1e-12);
//! ```
//!
//! Theorems behind the bounds are stated and machine-checked in the `proofs` crate.
#![warn(missing_docs)]

pub mod bounds;
#[cfg(feature = "test-suite")]
pub mod conformance;
#[cfg(feature = "dense")]
pub mod dense;
mod error;
pub mod hypergradient;
pub mod lanczos;
pub mod observer;
pub mod operator;
pub mod precond;
pub mod report;
mod small;
pub mod solve;
pub mod vector;
pub mod warm;

pub use error::{BoxError, Error, Location, Result};
pub use hypergradient::{hypergradient, hypergradient_pcg, Hypergradient, Method, Params, Problem};
pub use observer::{IterationState, Observer, Recorder};
pub use operator::{Fallible, IdentityMinus, Operator};
pub use precond::Preconditioner;
pub use report::{
    Bound, Certainty, Info, PreconditionerInfo, SolverKind, Spectrum, Termination, Timing,
};
pub use vector::Vector;
