//! # ibau-proofs
//!
//! The theorems `ibau-core` relies on, one module per statement, each with its source and its
//! property tests. Every module's documentation states the theorem in mathematics, its
//! assumptions, where it comes from, and — where the source was only recalled — the derivation in
//! full. The tests check each statement on the core's own solvers (through
//! [`ibau_core::Recorder`], which records every iterate) against an exact dense solution, and a
//! *tightness* test per bound builds an instance on which the bound is nearly attained, so that a
//! loosened or wrong bound fails too.
//!
//! | module | statement |
//! |---|---|
//! | [`implicit_function`] | `∇f = ∇_λE + (∂_λΦ)ᵀ v*`, `(I − Jᵀ) v* = ∇_wE`, against finite differences |
//! | [`fixed_point`] | `‖v_k − v*‖ ≤ q^k ‖v_0 − v*‖` and `≤ q/(1−q) ‖v_k − v_{k−1}‖` |
//! | [`neumann`] | Neumann(K) = fixed point after K+1 steps from 0; `‖v_K − v*‖ ≤ (1 − αμ)^{K+1} ‖v*‖` |
//! | [`cg`] | termination in n steps; the Chebyshev A-norm bound; `κ(I − J) ≤ (1+q)/(1−q)`; `‖e‖ ≤ ‖r‖/λ_min` |
//! | [`hypergradient_error`] | `‖∇̂f − ∇f‖ ≤ ‖∂_λΦ‖ ‖v − v*‖` with an exact inner solution |
//! | [`aid_inexact`] | `‖∇̂f − ∇f‖ ≤ (c₁ + c₂/(1−q)) ρ + c₃ σ` with an inexact inner solution (re-derived) |
//! | [`assumption_violations`] | `q ≥ 1`, an indefinite `I − Jᵀ`, a false claim of `q`: errors, never gradients |
//!
//! The instances the tests use are built by [`instances`]: symmetric matrices with a prescribed
//! spectrum (Householder reflections), contractions with a prescribed norm, quadratic bilevel
//! problems whose Lipschitz constants are exact operator norms, and ridge regression.
#![warn(missing_docs)]

pub mod aid_inexact;
pub mod assumption_violations;
pub mod cg;
pub mod fixed_point;
pub mod hypergradient_error;
pub mod implicit_function;
pub mod instances;
pub mod neumann;

#[cfg(test)]
mod strategies;
