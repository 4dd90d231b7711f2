//! Hypergradient error with an exact inner solution.
//!
//! # Statement
//! At the exact inner solution `w*`, let `∇f = ∇_λE + (∂_λΦ)ᵀv*` with `(I − Jᵀ)v* = ∇_wE`, and
//! let `∇̂f = ∇_λE + (∂_λΦ)ᵀv` for any `v` (an early-stopped linear solve). Then
//!
//! ```text
//! ‖∇̂f − ∇f‖ ≤ ‖∂_λΦ‖ · ‖v − v*‖.
//! ```
//!
//! # Derivation
//! `∇̂f − ∇f = (∂_λΦ)ᵀ(v − v*)`, and `‖(∂_λΦ)ᵀ‖ = ‖∂_λΦ‖` (spectral norm). Equality holds when
//! `v − v*` is a top right-singular vector of `(∂_λΦ)ᵀ`; e.g. `J = qI`, `v_0 = 0`, where the
//! fixed-point error `v_k − v* = −q^k v*` stays parallel to `v*`, and `(∂_λΦ)ᵀ = u v*ᵀ`.
//!
//! Combined with a bound `‖v − v*‖ ≤ β` from the linear solver (fixed point:
//! [`crate::fixed_point`], Neumann: [`crate::neumann`], CG: [`crate::cg`]), this is the bound the
//! core reports as [`ibau_core::Hypergradient::error_bound`] when given `cross_norm ≥ ‖∂_λΦ‖`.
//!
//! # Sources
//! Grazzi, Franceschi, Pontil, Salzo, ICML 2020 (arXiv 2006.16218): the exact-`w*` case of their
//! AID error analysis (the `c₃σ` term of [`crate::aid_inexact`] with `ρ = 0`, before `‖v*‖` is
//! bounded by `L_E/(1−q)`); Pedregosa, ICML 2016 (HOAG), for the same decomposition. Derivation
//! above (one line).

#[cfg(test)]
mod tests {
    use crate::instances::{dist, norm, Linearised};
    use crate::strategies::{general_contraction_strategy, matrix, quadratic_bilevel, vector};
    use ibau_core::bounds::hypergradient_error;
    use ibau_core::dense;
    use ibau_core::solve::{cg, fixed_point, neumann};
    use ibau_core::{hypergradient, Method, Params};
    use ndarray::{Array1, Array2, Axis};
    use proptest::prelude::*;

    /// Early-stopped solvers: fixed point (`budget` steps), Neumann (`budget` terms), CG
    /// (`budget` iterations).
    fn method(which: usize, budget: usize) -> Method {
        match which {
            0 => Method::FixedPoint(fixed_point::Params {
                max_iter: budget,
                rel_tol: 0.0,
                require_convergence: false,
                ..Default::default()
            }),
            1 => Method::Neumann(neumann::Params {
                terms: budget,
                ..Default::default()
            }),
            _ => Method::ConjugateGradient(cg::Params {
                max_iter: budget,
                rel_tol: 0.0,
                require_convergence: false,
                ..Default::default()
            }),
        }
    }

    fn check(
        lin: &Linearised,
        q: f64,
        symmetric: bool,
        method: Method,
    ) -> Result<(), TestCaseError> {
        let (exact, v_star) = lin.dense_hypergradient().unwrap();
        let cross_norm = dense::spectral_norm(&lin.cross_t).unwrap();
        let params = Params {
            method,
            contraction: Some(q),
            symmetric,
            cross_norm: Some(cross_norm),
        };
        let hg = hypergradient(&mut lin.problem(), &params, None, &mut ())
            .map_err(|e| TestCaseError::fail(format!("solver failed: {e}")))?;
        let err = dist(&hg.gradient, &exact);
        let v_err = dist(&hg.v, &v_star);
        let bound = hypergradient_error(cross_norm, v_err);
        let slack =
            1e-13 * (norm(&lin.grad_lambda) + cross_norm * norm(&v_star)) * (1.0 + q) / (1.0 - q);
        prop_assert!(
            err <= bound + slack,
            "‖∇̂f − ∇f‖ = {:e} > ‖∂_λΦ‖‖v − v*‖ = {:e}",
            err,
            bound
        );
        let reported = hg.error_bound.expect("q < 1 and cross_norm given");
        prop_assert!(reported.is_certified());
        prop_assert!(
            err <= reported.value * (1.0 + 1e-10) + slack,
            "reported {:e} < error {:e}",
            reported.value,
            err
        );
        Ok(())
    }

    proptest! {
        /// Quadratic bilevel problems (symmetric J), with fixed point, Neumann or CG stopped early.
        #[test]
        fn hypergradient_error_bound_holds_for_early_stopped_solvers(
            (inst, lambda) in quadratic_bilevel(12, 2.0)
                .prop_flat_map(|q| { let m = q.m(); (Just(q), vector(m)) }),
            which in 0usize..3,
            budget in 0usize..40,
        ) {
            let lin = inst.linearise(&lambda).unwrap();
            check(&lin, inst.q(), true, method(which, budget.max(usize::from(which != 1))))?;
        }

        /// Non-symmetric J (fixed point and Neumann only: CG needs a symmetric `I − Jᵀ`).
        #[test]
        fn hypergradient_error_bound_holds_for_non_symmetric_maps(
            ((q, j), gw, gl, ct) in general_contraction_strategy(10, 0.95)
                .prop_flat_map(|(q, j)| {
                    let n = j.nrows();
                    (Just((q, j)), vector(n), vector(3), matrix(3, n))
                }),
            neumann_terms in any::<bool>(),
            budget in 1usize..40,
        ) {
            let lin = Linearised { jt: j.t().to_owned(), cross_t: ct, grad_w: gw, grad_lambda: gl };
            check(&lin, q, false, method(usize::from(neumann_terms), budget))?;
        }
    }

    /// `J = qI`, `v_0 = 0`, `(∂_λΦ)ᵀ = u v*ᵀ`: the error equals the bound at every budget.
    #[test]
    fn hypergradient_error_bound_is_attained() {
        let q = 0.8;
        let n = 4;
        let v_star = ndarray::array![1.0, -2.0, 0.5, 3.0];
        let b = &v_star * (1.0 - q);
        let u = ndarray::array![2.0, -1.0];
        let cross_t: Array2<f64> = u
            .clone()
            .insert_axis(Axis(1))
            .dot(&v_star.clone().insert_axis(Axis(0)));
        let lin = Linearised {
            jt: Array2::<f64>::eye(n) * q,
            cross_t,
            grad_w: b,
            grad_lambda: ndarray::array![0.3, 0.7],
        };
        let cross_norm = dense::spectral_norm(&lin.cross_t).unwrap();
        let (exact, _) = lin.dense_hypergradient().unwrap();
        for budget in [1usize, 2, 5, 10, 30] {
            let params = Params {
                method: method(0, budget),
                contraction: Some(q),
                symmetric: true,
                cross_norm: Some(cross_norm),
            };
            let hg = hypergradient(&mut lin.problem(), &params, None, &mut ()).unwrap();
            let err = dist(&hg.gradient, &exact);
            let ratio = err / hypergradient_error(cross_norm, dist(&hg.v, &v_star));
            assert!(
                (0.999..=1.0 + 1e-9).contains(&ratio),
                "budget {budget}: {ratio}"
            );
            // The reported bound (q/(1−q)·step) is attained as well for J = qI.
            let ratio = err / hg.error_bound.unwrap().value;
            assert!(
                (0.999..=1.0 + 1e-9).contains(&ratio),
                "budget {budget}: reported {ratio}"
            );
        }
        let _: Array1<f64> = exact;
    }
}
