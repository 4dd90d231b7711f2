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
//! | [`gauss_radau`] | PCG's Gauss–Radau bound: `‖e_k‖²_A ≤ γ̃_k r_kᵀz_k ≤ r_kᵀz_k/μ`, exact on `k + 1` eigenvalues |
//! | [`hypergradient_error`] | `‖∇̂f − ∇f‖ ≤ ‖∂_λΦ‖ ‖v − v*‖` with an exact inner solution |
//! | [`aid_inexact`] | `‖∇̂f − ∇f‖ ≤ (c₁ + c₂/(1−q)) ρ + c₃ σ` with an inexact inner solution (re-derived) |
//! | [`assumption_violations`] | `q ≥ 1`, an indefinite `I − Jᵀ`, a false claim of `q`: errors, never gradients |
//! | [`solver_contracts`] | the reports' documented contracts: counts, locations, certified vs estimated |
//!
//! The instances the tests use are built by [`instances`]: symmetric matrices with a prescribed
//! spectrum (Householder reflections), contractions with a prescribed norm, quadratic bilevel
//! problems whose Lipschitz constants are exact operator norms, and ridge regression.
#![warn(missing_docs)]

pub mod aid_inexact;
pub mod assumption_violations;
pub mod cg;
pub mod fixed_point;
pub mod gauss_radau;
pub mod hypergradient_error;
pub mod implicit_function;
pub mod instances;
pub mod neumann;
pub mod solver_contracts;

#[cfg(test)]
mod strategies;

#[cfg(test)]
mod readme {
    /// Every test the README's table names exists (the table cannot drift from the code).
    #[test]
    fn readme_table_names_existing_tests() {
        let readme = include_str!("../README.md");
        let sources = [
            include_str!("aid_inexact.rs"),
            include_str!("assumption_violations.rs"),
            include_str!("cg.rs"),
            include_str!("fixed_point.rs"),
            include_str!("hypergradient_error.rs"),
            include_str!("implicit_function.rs"),
            include_str!("instances.rs"),
            include_str!("neumann.rs"),
            include_str!("solver_contracts.rs"),
            include_str!("lib.rs"),
        ]
        .concat();
        let mut named = 0;
        for row in readme.lines().filter(|l| l.starts_with("| ")) {
            let Some(tests) = row.split(" | ").nth(2) else {
                continue;
            };
            for (i, chunk) in tests.split('`').enumerate() {
                let is_name = i % 2 == 1
                    && chunk.contains('_')
                    && chunk
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if is_name {
                    named += 1;
                    assert!(
                        sources.contains(&format!("fn {chunk}(")),
                        "README names `{chunk}`, which is no test here"
                    );
                }
            }
        }
        assert!(
            named >= 30,
            "only {named} test names found in the README table"
        );
    }
}
