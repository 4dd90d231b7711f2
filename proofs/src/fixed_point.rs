//! Fixed-point iteration (AID-FP): the a-priori and a-posteriori error bounds.
//!
//! # Statement
//! Let `J` be a real `n × n` matrix with spectral norm `‖J‖ ≤ q < 1`, `b ∈ ℝⁿ`, and
//! `v* = (I − Jᵀ)⁻¹ b`. For any `v_0` the iterates `v_{k+1} = Jᵀ v_k + b` satisfy, for `k ≥ 1`,
//!
//! ```text
//! (a priori)      ‖v_k − v*‖ ≤ q^k ‖v_0 − v*‖,
//! (a posteriori)  ‖v_k − v*‖ ≤ q/(1 − q) · ‖v_k − v_{k−1}‖.
//! ```
//!
//! # Derivation
//! `I − Jᵀ` is invertible since `‖Jᵀ‖ = ‖J‖ < 1`, and `v* = Jᵀv* + b`. Subtracting,
//! `e_k := v_k − v* = Jᵀ e_{k−1}`, so `e_k = (Jᵀ)^k e_0` and `‖e_k‖ ≤ ‖Jᵀ‖^k ‖e_0‖ ≤ q^k ‖e_0‖`.
//! For the second bound write `e_{k−1} = e_k − (v_k − v_{k−1})`; then
//! `‖e_k‖ = ‖Jᵀe_{k−1}‖ ≤ q(‖e_k‖ + ‖v_k − v_{k−1}‖)`, and rearranging (using `q < 1`) gives
//! `‖e_k‖ ≤ q/(1−q)·‖v_k − v_{k−1}‖`. Both are the Banach fixed-point estimates.
//!
//! Tightness: for `J = qI` (`0 < q < 1`), `e_k = q^k e_0` exactly, and
//! `v_k − v_{k−1} = e_k − e_{k−1} = −(1 − q) q^{k−1} e_0`, so
//! `q/(1−q)·‖v_k − v_{k−1}‖ = q^k ‖e_0‖ = ‖e_k‖`: both bounds are attained with equality.
//!
//! # Sources
//! Banach's fixed-point theorem (e.g. Kreyszig, *Introductory Functional Analysis*, Thm. 5.1-2
//! and its corollary 5.1-3 for the error estimates); used for AID-FP in Grazzi, Franceschi,
//! Pontil, Salzo, ICML 2020 (arXiv 2006.16218). Theorem numbers recalled, derivation above.
//!
//! # Checks
//! On the core's [`ibau_core::solve::fixed_point`] iterates, recorded by [`ibau_core::Recorder`],
//! against `v*` from a dense LU solve, for symmetric and non-symmetric `J` with `‖J‖ = q`
//! exactly (see [`crate::instances::symmetric_contraction`],
//! [`crate::instances::general_contraction`]), from zero and from random warm starts; the core's
//! [`ibau_core::bounds`] functions give the bound values, and the certified bound the solver
//! reports must hold too.

#[cfg(test)]
mod tests {
    use crate::instances::{dist, norm};
    use crate::strategies::{general_contraction_strategy, symmetric_contraction_strategy, vector};
    use ibau_core::bounds::{fixed_point_a_posteriori, fixed_point_a_priori};
    use ibau_core::dense::{self, DenseOperator};
    use ibau_core::solve::fixed_point;
    use ibau_core::{Recorder, Termination};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    /// Runs the core's fixed point on `jt` and checks both bounds at every recorded iterate.
    fn check_bounds(
        jt: &Array2<f64>,
        q: f64,
        symmetric: bool,
        b: &Array1<f64>,
        v0: &Array1<f64>,
        max_iter: usize,
    ) -> Result<(), TestCaseError> {
        let v_star = dense::solve_implicit(jt, b).unwrap();
        let mut rec = Recorder::default();
        let mut v = v0.clone();
        let params = fixed_point::Params {
            max_iter,
            rel_tol: 0.0,
            contraction: Some(q),
            symmetric,
            require_convergence: false,
            ..Default::default()
        };
        let info = fixed_point::solve(
            &mut DenseOperator::new(jt.clone()),
            b,
            &mut v,
            &params,
            &mut rec,
        )
        .map_err(|e| TestCaseError::fail(format!("solver failed on a contraction: {e}")))?;
        prop_assert_eq!(rec.iterates.len(), info.iterations);
        prop_assert!(info.iterations <= max_iter);
        if info.termination == Termination::MaxIterations {
            prop_assert_eq!(info.iterations, max_iter);
        }
        let e0 = dist(v0, &v_star);
        // Rounding in the iterates (ε per step, damped by 1/(1−q)) and in the dense v*.
        let slack = 64.0 * f64::EPSILON * (norm(&v_star) + e0 + norm(b)) / (1.0 - q);
        let mut prev = v0.clone();
        for (i, vk) in rec.iterates.iter().enumerate() {
            let k = i + 1;
            let err = dist(vk, &v_star);
            let a_priori = fixed_point_a_priori(q, k, e0);
            prop_assert!(
                err <= a_priori + slack,
                "k={}: ‖e_k‖ = {:e} > q^k‖e_0‖ = {:e}",
                k,
                err,
                a_priori
            );
            let step = dist(vk, &prev);
            // The reported history is the step ‖v_k − v_{k−1}‖.
            prop_assert!((info.residual_history[i] - step).abs() <= 1e-12 * (step + slack) + slack);
            let a_post = fixed_point_a_posteriori(q, step);
            prop_assert!(
                err <= a_post + slack,
                "k={}: ‖e_k‖ = {:e} > q/(1−q)·step = {:e}",
                k,
                err,
                a_post
            );
            prev.assign(vk);
        }
        prop_assert!(
            dist(&v, &prev) == 0.0,
            "the returned iterate is the last one recorded"
        );
        let bound = info.error_bound.expect("q < 1 given: a bound is due");
        prop_assert!(bound.is_certified());
        let err = dist(&v, &v_star);
        prop_assert!(
            err <= bound.value + slack,
            "reported {:e} < error {:e}",
            bound.value,
            err
        );
        Ok(())
    }

    proptest! {
        /// Symmetric `J` (the gradient-descent map), `‖J‖ = q` exactly, start at zero or at a
        /// random `v_0`.
        #[test]
        fn bounds_hold_for_symmetric_contractions(
            ((q, j), b, v0) in symmetric_contraction_strategy(12, 0.97)
                .prop_flat_map(|(q, j)| { let n = j.n(); (Just((q, j)), vector(n), vector(n)) }),
            from_zero in any::<bool>(),
            max_iter in 1usize..150,
        ) {
            let v0 = if from_zero { Array1::zeros(b.len()) } else { v0 * 10.0 };
            check_bounds(&j.matrix, q, true, &b, &v0, max_iter)?;
        }

        /// Non-symmetric `J = U diag(σ) Vᵀ` with `‖J‖ = q` exactly.
        #[test]
        fn bounds_hold_for_non_symmetric_contractions(
            ((q, j), b, v0) in general_contraction_strategy(12, 0.97)
                .prop_flat_map(|(q, j)| { let n = j.nrows(); (Just((q, j)), vector(n), vector(n)) }),
            from_zero in any::<bool>(),
            max_iter in 1usize..150,
        ) {
            let v0 = if from_zero { Array1::zeros(b.len()) } else { v0 * 10.0 };
            // The operator is v ↦ Jᵀv; pass the matrix of Jᵀ.
            check_bounds(&j.t().to_owned(), q, false, &b, &v0, max_iter)?;
        }
    }

    /// `J = qI`: both bounds hold with equality at every step (ratio true/bound ≥ 0.999).
    #[test]
    fn bounds_are_attained_for_a_multiple_of_the_identity() {
        let n = 3;
        for q in [0.2, 0.5, 0.9, 0.99] {
            let jt = Array2::<f64>::eye(n) * q;
            let b = ndarray::array![1.0, -2.0, 0.5];
            let v_star = &b / (1.0 - q);
            let v0 = ndarray::array![3.0, 1.0, -1.0];
            let e0 = dist(&v0, &v_star);
            let mut rec = Recorder::default();
            let mut v = v0.clone();
            // Stop while q^k ≥ 1e-6: below, the step carries relative rounding > 1e-10.
            let max_iter = (((1e-6f64).ln() / q.ln()).floor() as usize).min(200);
            let params = fixed_point::Params {
                max_iter,
                rel_tol: 0.0,
                contraction: Some(q),
                symmetric: true,
                require_convergence: false,
                ..Default::default()
            };
            let info =
                fixed_point::solve(&mut DenseOperator::new(jt), &b, &mut v, &params, &mut rec)
                    .unwrap();
            let mut prev = v0.clone();
            for (i, vk) in rec.iterates.iter().enumerate() {
                let k = i + 1;
                let err = dist(vk, &v_star);
                let r1 = err / fixed_point_a_priori(q, k, e0);
                let r2 = err / fixed_point_a_posteriori(q, dist(vk, &prev));
                assert!(
                    (0.999..=1.0 + 1e-6).contains(&r1),
                    "q={q} k={k}: a priori ratio {r1}"
                );
                assert!(
                    (0.999..=1.0 + 1e-6).contains(&r2),
                    "q={q} k={k}: a posteriori ratio {r2}"
                );
                prev.assign(vk);
            }
            let r = dist(&v, &v_star) / info.error_bound.unwrap().value;
            assert!(
                (0.999..=1.0 + 1e-6).contains(&r),
                "q={q}: reported bound ratio {r}"
            );
        }
    }

    /// The bound functions at the edges: `q^0 = 1`; no a-posteriori bound for `q ≥ 1`.
    #[test]
    fn bound_functions_at_the_edges() {
        assert!((fixed_point_a_priori(0.5, 0, 3.0) - 3.0).abs() <= 0.0);
        assert!((fixed_point_a_priori(0.5, 3, 8.0) - 1.0).abs() <= 1e-15);
        assert!(fixed_point_a_posteriori(1.0, 0.0) == f64::INFINITY);
        assert!(fixed_point_a_posteriori(1.5, 1.0) == f64::INFINITY);
        assert!((fixed_point_a_posteriori(0.75, 2.0) - 6.0).abs() <= 1e-15);
        assert!(fixed_point_a_posteriori(0.0, 2.0) == 0.0);
    }
}
