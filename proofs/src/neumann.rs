//! The truncated Neumann series: its identity with fixed-point iteration, and its error bound for
//! the gradient-descent map.
//!
//! # Statement
//! (i) For any square `J` and `b`, the truncated series `v_K = Σ_{j=0..K} (Jᵀ)^j b` is the
//! `(K+1)`-th fixed-point iterate `v_{k+1} = Jᵀv_k + b` started at `v_0 = 0`.
//!
//! (ii) Let `H` be symmetric with `μI ⪯ H ⪯ LI`, `μ > 0`, let `0 < α ≤ 1/L` and `J = I − αH`.
//! Then `v* = (I − Jᵀ)⁻¹ b = (αH)⁻¹ b` and
//!
//! ```text
//! ‖v_K − v*‖ ≤ (1 − αμ)^{K+1} ‖v*‖.
//! ```
//!
//! # Derivation
//! (i) By induction: `v_1 = Jᵀ·0 + b = b`, and if `v_k = Σ_{j<k} (Jᵀ)^j b` then
//! `v_{k+1} = Jᵀ Σ_{j<k} (Jᵀ)^j b + b = Σ_{j≤k} (Jᵀ)^j b`; so `Σ_{j=0..K}` is `v_{K+1}`.
//!
//! (ii) `J` is symmetric with eigenvalues `1 − αλ_i(H) ∈ [1 − αL, 1 − αμ] ⊂ [0, 1 − αμ]`
//! (using `α ≤ 1/L`), so `‖J‖ = 1 − αμ =: q < 1`. The full series converges to `v*`, and
//! `v* − v_K = Σ_{j>K} (Jᵀ)^j b = (Jᵀ)^{K+1} Σ_{j≥0} (Jᵀ)^j b = (Jᵀ)^{K+1} v*`, hence
//! `‖v_K − v*‖ ≤ q^{K+1}‖v*‖`. (The same holds for `α < 2/(L + μ)`, where still
//! `|1 − αL| ≤ 1 − αμ`; for `α > 2/L` an eigenvalue of `J` is below `−1` and the series
//! diverges — see [`crate::assumption_violations`].) Tightness: for `b` an eigenvector of `H` with
//! eigenvalue `μ`, `(Jᵀ)^{K+1} v* = (1 − αμ)^{K+1} v*`, so the bound is an equality.
//!
//! # Sources
//! Lorraine, Vicol, Duvenaud, *Optimizing Millions of Hyperparameters by Implicit
//! Differentiation*, AISTATS 2020 (the Neumann approximation of the inverse Hessian, their §3 and
//! Algorithm 3; the identity with `K+1` fixed-point steps is hypertorch's `neumann(K)` =
//! `fixed_point(K+1)`, Grazzi et al. ICML 2020). The bound's form is as stated in the spec;
//! recalled, and derived above.

#[cfg(test)]
mod tests {
    use crate::instances::{dist, norm, spd_with_condition};
    use crate::strategies::{general_contraction_strategy, spd, vector};
    use ibau_core::bounds::neumann_gradient_descent;
    use ibau_core::dense::{self, DenseOperator};
    use ibau_core::solve::{fixed_point, neumann};
    use ibau_core::{Recorder, SolverKind, Termination};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    proptest! {
        /// Neumann(K) equals fixed point after K+1 steps from zero, and the explicit series.
        #[test]
        fn neumann_equals_fixed_point_after_k_plus_one_steps(
            ((_, j), b) in general_contraction_strategy(10, 0.97)
                .prop_flat_map(|qj| { let n = qj.1.nrows(); (Just(qj), vector(n)) }),
            terms in 0usize..40,
        ) {
            let jt = j.t().to_owned();
            let mut nv = Array1::from_elem(b.len(), f64::NAN); // contents on entry are ignored
            let info = neumann::solve(
                &mut DenseOperator::new(jt.clone()), &b, &mut nv,
                &neumann::Params { terms, ..Default::default() }, &mut (),
            ).unwrap();
            prop_assert_eq!(info.solver, SolverKind::Neumann);
            // All K+1 steps, unless a step is exactly zero (a floating-point fixed point).
            prop_assert!(info.iterations <= terms + 1);
            if info.iterations < terms + 1 {
                prop_assert_eq!(info.termination, Termination::Converged);
                prop_assert!(info.residual == 0.0);
            } else {
                prop_assert_eq!(info.operator_applications, terms);
            }
            let mut fv = Array1::zeros(b.len());
            let p = fixed_point::Params {
                max_iter: terms + 1, rel_tol: 0.0, require_convergence: false, ..Default::default()
            };
            fixed_point::solve(&mut DenseOperator::new(jt.clone()), &b, &mut fv, &p, &mut ()).unwrap();
            prop_assert!(dist(&fv, &nv) == 0.0, "Neumann({}) ≠ FP({}): {} vs {}", terms, terms + 1, nv, fv);
            let (mut term, mut series) = (b.clone(), b.clone());
            for _ in 0..terms {
                term = jt.dot(&term);
                series += &term;
            }
            let tol = 1e-13 * (terms as f64 + 1.0) * norm(&b) / (1.0 - 0.97);
            prop_assert!(dist(&series, &nv) <= tol);
        }

        /// `J = I − αH`, `μ ⪯ H ⪯ L`, `α ≤ 1/L`: `‖v_K − v*‖ ≤ (1 − αμ)^{K+1}‖v*‖` for every
        /// partial sum `K ≤ terms`.
        #[test]
        fn gradient_descent_neumann_bound_holds(
            (h, b) in spd(2, 12, 2.0).prop_flat_map(|h| { let n = h.n(); (Just(h), vector(n)) }),
            alpha_frac in 0.05..=1.0f64,
            terms in 0usize..80,
        ) {
            let (mu, l) = (h.min(), h.max());
            let alpha = alpha_frac / l;
            let jt = Array2::<f64>::eye(h.n()) - &h.matrix * alpha;
            let v_star = dense::solve(&h.matrix, &b).unwrap() / alpha;
            let mut rec = Recorder::default();
            let mut v = Array1::zeros(b.len());
            let q = 1.0 - alpha * mu;
            let info = neumann::solve(
                &mut DenseOperator::new(jt), &b, &mut v,
                &neumann::Params { terms, contraction: Some(q), symmetric: true }, &mut rec,
            ).unwrap();
            let slack = 1e-13 * norm(&v_star) * (l / mu);
            for (i, vk) in rec.iterates.iter().enumerate() {
                // The i-th recorded iterate (0-based) is the partial sum with K = i.
                let err = dist(vk, &v_star);
                let bound = neumann_gradient_descent(alpha, mu, i, norm(&v_star));
                prop_assert!(err <= bound + slack, "K={}: {:e} > {:e}", i, err, bound);
            }
            prop_assert_eq!(rec.iterates.len(), info.iterations);
            if info.iterations < terms + 1 {
                prop_assert!(info.residual == 0.0);
            }
            let err = dist(&v, &v_star);
            let bound = info.error_bound.unwrap();
            prop_assert!(bound.is_certified());
            prop_assert!(err <= bound.value + slack);
        }
    }

    /// `b` on the eigenvector of `μ`: the bound is attained (ratio ≥ 0.999) for every K.
    #[test]
    fn neumann_bound_is_attained_on_the_smallest_eigenvector() {
        let hh = vec![vec![1.0, 2.0, -1.0, 0.5], vec![0.0, 1.0, 1.0, 1.0]];
        let h = spd_with_condition(20.0, 0.5, &[0.3, 0.6], &hh);
        let (mu, l) = (h.min(), h.max());
        for alpha in [1.0 / l, 0.5 / l] {
            let b = h.eigenvector(0) * 2.0;
            let jt = Array2::<f64>::eye(4) - &h.matrix * alpha;
            let v_star = &b / (alpha * mu);
            for terms in [0usize, 1, 5, 20, 60] {
                let mut v = Array1::zeros(4);
                neumann::solve(
                    &mut DenseOperator::new(jt.clone()),
                    &b,
                    &mut v,
                    &neumann::Params {
                        terms,
                        ..Default::default()
                    },
                    &mut (),
                )
                .unwrap();
                let ratio =
                    dist(&v, &v_star) / neumann_gradient_descent(alpha, mu, terms, norm(&v_star));
                assert!(
                    (0.999..=1.0 + 1e-9).contains(&ratio),
                    "α={alpha} K={terms}: ratio {ratio}"
                );
            }
        }
    }
}
