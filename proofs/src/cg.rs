//! Conjugate gradient (AID-CG): finite termination, the Chebyshev bound in the A-norm, the
//! condition number of `I − J` for a symmetric contraction, and the a-posteriori bound.
//!
//! # Statements
//! Let `A` be symmetric positive definite (`n × n`) with eigenvalues in `[λ_min, λ_max]`,
//! `κ = λ_max/λ_min`, `v* = A⁻¹b`, and `v_k` the CG iterates from `v_0`.
//!
//! 1. **Finite termination** (Nocedal & Wright, Thm. 5.1): in exact arithmetic `v_k = v*` for
//!    some `k ≤ n` (at most the number of distinct eigenvalues of `A`).
//! 2. **Chebyshev bound** (Nocedal & Wright, eq. (5.36)):
//!    `‖v_k − v*‖_A ≤ 2((√κ − 1)/(√κ + 1))^k ‖v_0 − v*‖_A`.
//! 3. **Contraction to condition number**: if `A = I − J` with `J` symmetric and `‖J‖ ≤ q < 1`,
//!    the eigenvalues of `A` lie in `[1 − q, 1 + q]`, so `λ_min(A) ≥ 1 − q` and
//!    `κ(A) ≤ (1 + q)/(1 − q)`.
//! 4. **A posteriori**: `‖v − v*‖ ≤ ‖b − Av‖/λ_min(A)` for any `v`.
//! 5. **Ritz values** (Cauchy interlacing): the eigenvalues of the Lanczos tridiagonal that CG's
//!    coefficients define lie in `[λ_min(A), λ_max(A)]`.
//!
//! # Derivations
//! 1 and 2: CG's `v_k` minimises `‖v − v*‖_A` over `v_0 + K_k(A, r_0)`, so
//! `e_k = p_k(A) e_0` with `p_k` the degree-`k` polynomial, `p_k(0) = 1`, minimising
//! `‖p(A)e_0‖_A`. Expanding `e_0 = Σ c_i u_i` in eigenvectors,
//! `‖p(A)e_0‖²_A = Σ c_i² λ_i p(λ_i)² ≤ max_i p(λ_i)² ‖e_0‖²_A`. (1) The polynomial
//! `Π_i (1 − λ/λ_i)` over the distinct eigenvalues vanishes on the spectrum and has degree `≤ n`.
//! (2) The scaled Chebyshev polynomial `p(λ) = T_k((λ_max + λ_min − 2λ)/(λ_max − λ_min)) / T_k(z)`,
//! `z = (κ + 1)/(κ − 1)`, has `|p| ≤ 1/T_k(z)` on `[λ_min, λ_max]`, and
//! `T_k(z) = ½(σ^k + σ^{−k}) ≥ ½σ^k` with `σ = z + √(z² − 1) = (√κ + 1)/(√κ − 1)`; hence
//! `‖e_k‖_A ≤ ‖e_0‖_A / T_k(z) ≤ 2σ^{−k}‖e_0‖_A`.
//!
//! Tightness of 2: if `A` has exactly the `k + 1` eigenvalues `ξ_j` where `T_k` (mapped to
//! `[λ_min, λ_max]`) attains `±1`, and `e_0` has weights `c_j²λ_j ∝ |ℓ_j(0)|` (`ℓ_j` the Lagrange
//! basis on the `ξ_j`), the weighted least-squares problem `min Σ_j c_j²λ_j p(ξ_j)²` subject to
//! `Σ_j ℓ_j(0) p(ξ_j) = p(0) = 1` is solved by `p(ξ_j) ∝ ℓ_j(0)/|ℓ_j(0)|` — the
//! equioscillating Chebyshev polynomial — and `‖e_k‖_A/‖e_0‖_A = 1/Σ_j|ℓ_j(0)| = 1/T_k(z)`
//! exactly. The ratio to the stated bound is `1/(1 + σ^{−2k}) > ½`.
//!
//! 3: `J = Q diag(θ_i) Qᵀ` with `|θ_i| ≤ q`, so `I − J` has eigenvalues `1 − θ_i ∈ [1−q, 1+q]`.
//! Attained when `J` has the eigenvalues `q` and `−q`.
//!
//! 4: `v − v* = A⁻¹(Av − b)` and `‖A⁻¹‖ = 1/λ_min(A)`.
//!
//! 5: the Lanczos vectors are orthonormal (in exact arithmetic), `T_m = V_mᵀ A V_m`, and the
//! eigenvalues of a compression of `A` interlace those of `A` (Cauchy).
//!
//! # Sources
//! Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 5: Theorem 5.1 (termination in at most
//! `n` steps), eq. (5.36) (the `2((√κ−1)/(√κ+1))^k` bound); Saad, *Iterative Methods for Sparse
//! Linear Systems*, 2nd ed., §6.7.3 (CG and Lanczos) and §6.11.3 (the Chebyshev bound); numbering
//! recalled, derivations above.

#[cfg(test)]
mod tests {
    use crate::instances::{a_norm, dist, norm, spd_with_condition, Spectral};
    use crate::strategies::{householder, spd, symmetric_contraction_strategy, vector};
    use ibau_core::bounds::{cg_a_priori, kappa_from_contraction};
    use ibau_core::dense::{self, DenseOperator};
    use ibau_core::solve::cg;
    use ibau_core::{hypergradient, Method, Params, Problem, Recorder, Termination};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    fn solve_recorded(
        a: &Array2<f64>,
        b: &Array1<f64>,
        v0: &Array1<f64>,
        params: &cg::Params,
    ) -> (Array1<f64>, ibau_core::Info, Recorder<Array1<f64>>) {
        let mut rec = Recorder::default();
        let mut v = v0.clone();
        let info = cg::solve(
            &mut DenseOperator::new(a.clone()),
            b,
            &mut v,
            params,
            &mut rec,
        )
        .expect("A is SPD");
        (v, info, rec)
    }

    proptest! {
        /// κ ≤ 10, n ≤ 12: the residual meets 1e-10‖b‖ within n iterations — in exact
        /// arithmetic. In floating point the n-th residual is not exactly zero and, rarely
        /// (measured 2026-12-04: 1 of 10⁵ cases with `PROPTEST_RNG_SEED=301`, needing n + 1;
        /// found by seed 101), is still just above 1e-10‖b‖ (e.g. 1.2e-10 at n = 11, κ = 8, eight
        /// eigenvalues in [2.6, 4.4]); the next step reaches 1e-15. So the test allows two
        /// steps beyond n; its failing seeds are kept in `proptest-regressions/cg.txt`.
        #[test]
        fn cg_terminates_within_n_steps(
            (a, b) in spd(2, 12, 1.0).prop_flat_map(|a| { let n = a.n(); (Just(a), vector(n)) }),
        ) {
            let n = a.n();
            let params = cg::Params { max_iter: n + 2, rel_tol: 1e-10, ..Default::default() };
            let (v, info, _) = solve_recorded(&a.matrix, &b, &Array1::zeros(n), &params);
            prop_assert_eq!(info.termination, Termination::Converged);
            prop_assert!(info.iterations <= n + 2);
            prop_assert!(info.residual_verified);
            let r = norm(&(&b - &a.matrix.dot(&v)));
            prop_assert!(r <= 1e-10 * norm(&b), "‖r‖ = {:e} after {} ≤ n = {} steps", r, info.iterations, n);
            prop_assert!((r - info.residual).abs() <= 1e-14 * norm(&b));
        }

        /// The Chebyshev A-norm bound at every step, the a-posteriori bound at every step, the
        /// certified bound the solver reports, and the Ritz values inside the spectrum.
        #[test]
        fn cg_bounds_hold_at_every_step(
            (a, b, v0) in spd(2, 24, 3.0).prop_flat_map(|a| { let n = a.n(); (Just(a), vector(n), vector(n)) }),
            from_zero in any::<bool>(),
            max_iter in 1usize..60,
        ) {
            let n = a.n();
            let v0 = if from_zero { Array1::zeros(n) } else { v0 };
            let kappa = a.max() / a.min();
            let v_star = dense::solve(&a.matrix, &b).unwrap();
            let params = cg::Params {
                max_iter, rel_tol: 1e-14, lambda_min: Some(a.min()), require_convergence: false,
                ..Default::default()
            };
            let (v, info, rec) = solve_recorded(&a.matrix, &b, &v0, &params);
            let e0 = a_norm(&a.matrix, &(&v0 - &v_star));
            let slack = 1e-12 * kappa * (a_norm(&a.matrix, &v_star) + e0);
            for (i, vk) in rec.iterates.iter().enumerate() {
                let k = i + 1;
                let err_a = a_norm(&a.matrix, &(vk - &v_star));
                let bound = cg_a_priori(kappa, k, e0);
                prop_assert!(err_a <= bound + slack, "k={}: ‖e‖_A = {:e} > {:e}", k, err_a, bound);
                let err = dist(vk, &v_star);
                let r = norm(&(&b - &a.matrix.dot(vk)));
                prop_assert!(err <= r / a.min() * (1.0 + 1e-10) + 1e-13 * kappa * norm(&v_star),
                    "k={}: ‖e‖ = {:e} > ‖r‖/λ_min = {:e}", k, err, r / a.min());
            }
            prop_assert!(info.iterations <= max_iter);
            let bound = info.error_bound.unwrap();
            prop_assert!(bound.is_certified() && info.residual_verified);
            let err = dist(&v, &v_star);
            prop_assert!(err <= bound.value * (1.0 + 1e-10) + 1e-13 * kappa * norm(&v_star),
                "reported {:e} < error {:e}", bound.value, err);
            let r = norm(&(&b - &a.matrix.dot(&v)));
            prop_assert!((r - info.residual).abs() <= 1e-12 * norm(&b));
            if let Some(s) = info.spectrum {
                let tol = 1e-8 * a.max();
                prop_assert!(s.lambda_min >= a.min() - tol && s.lambda_max <= a.max() + tol,
                    "Ritz [{:e}, {:e}] outside [{:e}, {:e}]", s.lambda_min, s.lambda_max, a.min(), a.max());
                prop_assert!(s.lambda_min <= s.lambda_max);
            }
        }

        /// Symmetric `J` with `‖J‖ = q`: `spec(I − J) ⊂ [1 − q, 1 + q]`, `κ ≤ (1+q)/(1−q)`; and
        /// the hypergradient's CG, told only `q`, reports a certified bound that holds and
        /// meets the Chebyshev bound with `κ = (1+q)/(1−q)`.
        #[test]
        fn kappa_of_identity_minus_symmetric_contraction(
            ((q, j), b, c) in symmetric_contraction_strategy(12, 0.99)
                .prop_flat_map(|(q, j)| { let n = j.n(); (Just((q, j)), vector(n), vector(n)) }),
            max_iter in 1usize..30,
        ) {
            let n = j.n();
            let a = Array2::<f64>::eye(n) - &j.matrix;
            let ev = dense::symmetric_eigenvalues(&a).unwrap();
            let (lo, hi) = (ev[0], ev[n - 1]);
            prop_assert!(lo >= 1.0 - q - 1e-13 && hi <= 1.0 + q + 1e-13);
            prop_assert!(hi / lo <= kappa_from_contraction(q) * (1.0 + 1e-12));
            let params = Params {
                method: Method::ConjugateGradient(cg::Params {
                    max_iter, rel_tol: 1e-14, require_convergence: false, ..Default::default()
                }),
                contraction: Some(q),
                symmetric: true,
                cross_norm: Some(norm(&c)),
            };
            let mut problem = Problem {
                jt: DenseOperator::new(j.matrix.clone()),
                cross_t: DenseOperator::new(c.clone().insert_axis(ndarray::Axis(0))),
                grad_w: b.clone(),
                grad_lambda: Array1::zeros(1),
            };
            let mut rec = Recorder::default();
            let hg = hypergradient(&mut problem, &params, None, &mut rec).unwrap();
            let v_star = dense::solve(&a, &b).unwrap();
            let kappa = kappa_from_contraction(q);
            let e0 = a_norm(&a, &v_star);
            for (i, vk) in rec.iterates.iter().enumerate() {
                let err_a = a_norm(&a, &(vk - &v_star));
                prop_assert!(err_a <= cg_a_priori(kappa, i + 1, e0) + 1e-12 * kappa * e0);
            }
            let err = dist(&hg.v, &v_star);
            let bound = hg.info.error_bound.unwrap();
            prop_assert!(bound.is_certified());
            prop_assert!(err <= bound.value * (1.0 + 1e-10) + 1e-13 * kappa * norm(&v_star));
            let g_err = (hg.gradient[0] - c.dot(&v_star)).abs();
            let g_bound = hg.error_bound.unwrap();
            prop_assert!(g_err <= g_bound.value * (1.0 + 1e-10) + 1e-13 * kappa * norm(&v_star) * norm(&c));
        }
    }

    /// Extrema of `T_k` mapped to `[lo, hi]`, and the weights `c_j² ∝ |ℓ_j(0)|/ξ_j` that make CG's
    /// k-th polynomial the Chebyshev one.
    fn chebyshev_instance(k: usize, lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
        let xi: Vec<f64> = (0..=k)
            .map(|j| {
                let t = (j as f64 * std::f64::consts::PI / k as f64).cos();
                0.5 * (hi + lo) + 0.5 * (hi - lo) * t
            })
            .collect();
        let c: Vec<f64> = (0..=k)
            .map(|j| {
                let l0: f64 = (0..=k)
                    .filter(|&i| i != j)
                    .map(|i| (0.0 - xi[i]) / (xi[j] - xi[i]))
                    .product();
                (l0.abs() / xi[j]).sqrt()
            })
            .collect();
        (xi, c)
    }

    /// Eigenvalues at the Chebyshev extrema with the weights of the derivation: after k steps
    /// `‖e_k‖_A/‖e_0‖_A = 1/T_k(z)`, and its ratio to the bound `2σ^{−k}` is `> ½`.
    #[test]
    fn chebyshev_bound_is_nearly_attained() {
        for kappa in [4.0, 10.0, 100.0, 1000.0] {
            for k in 1..=6usize {
                let (xi, c) = chebyshev_instance(k, 1.0, kappa);
                let hh: Vec<Vec<f64>> = (0..=k)
                    .map(|i| {
                        (0..=k)
                            .map(|j| ((i * 7 + j * 3) % 5) as f64 - 2.0)
                            .collect()
                    })
                    .collect();
                let a = Spectral::new(&xi, &hh);
                // Spectral::new sorts ascending; xi is descending, so reverse the coefficients.
                let coef = Array1::from(c.iter().rev().copied().collect::<Vec<_>>());
                let v_star = a.from_eigen_coordinates(&coef);
                let b = a.matrix.dot(&v_star);
                let params = cg::Params {
                    max_iter: k,
                    rel_tol: 0.0,
                    require_convergence: false,
                    ..Default::default()
                };
                let (v, _, _) = solve_recorded(&a.matrix, &b, &Array1::zeros(k + 1), &params);
                let e0 = a_norm(&a.matrix, &v_star);
                let ek = a_norm(&a.matrix, &(&v - &v_star));
                let z = (kappa + 1.0) / (kappa - 1.0);
                let t_k = (k as f64 * z.acosh()).cosh();
                assert!(
                    (ek / e0 * t_k - 1.0).abs() <= 1e-6,
                    "κ={kappa} k={k}: ‖e_k‖_A/‖e_0‖_A = {:e}, 1/T_k = {:e}",
                    ek / e0,
                    1.0 / t_k
                );
                let ratio = ek / cg_a_priori(kappa, k, e0);
                assert!(
                    (0.5..=1.0).contains(&ratio),
                    "κ={kappa} k={k}: ratio {ratio}"
                );
            }
        }
    }

    /// `n` distinct eigenvalues and `b` with every component: CG needs all `n` steps (after
    /// `n − 1` the residual is still large), so "within n" cannot be tightened.
    #[test]
    fn termination_needs_all_n_steps_for_distinct_eigenvalues() {
        let n = 8;
        let ev: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
        let a = Spectral::new(&ev, &[vec![1.0; n], (0..n).map(|i| i as f64).collect()]);
        let b = a.from_eigen_coordinates(&Array1::from_elem(n, 1.0));
        let short = cg::Params {
            max_iter: n - 1,
            rel_tol: 1e-10,
            require_convergence: false,
            ..Default::default()
        };
        let (_, info, _) = solve_recorded(&a.matrix, &b, &Array1::zeros(n), &short);
        assert!(info.residual >= 1e-4 * norm(&b), "{:e}", info.residual);
        let full = cg::Params {
            max_iter: n,
            rel_tol: 1e-10,
            ..Default::default()
        };
        let (v, info, _) = solve_recorded(&a.matrix, &b, &Array1::zeros(n), &full);
        assert_eq!(info.iterations, n);
        assert!(norm(&(&b - &a.matrix.dot(&v))) <= 1e-10 * norm(&b));
        // With all n steps the Ritz values are the extreme eigenvalues.
        let s = info.spectrum.unwrap();
        assert!((s.lambda_min - 1.0).abs() <= 1e-8 && (s.lambda_max - n as f64).abs() <= 1e-8);
    }

    /// `J` with eigenvalues `q` and `−q`: `κ(I − J) = (1+q)/(1−q)` exactly.
    #[test]
    fn kappa_bound_is_attained() {
        for q in [0.1, 0.5, 0.9, 0.999] {
            let j = Spectral::new(&[q, -q, 0.0], &[vec![1.0, -1.0, 2.0]]);
            let a = Array2::<f64>::eye(3) - &j.matrix;
            let ev = dense::symmetric_eigenvalues(&a).unwrap();
            let ratio = (ev[2] / ev[0]) / kappa_from_contraction(q);
            assert!((0.999..=1.0 + 1e-9).contains(&ratio), "q={q}: {ratio}");
        }
    }

    /// `A = diag(1, 100)`, `b = (1, 1)`, one step: the error is `0.707…` of `‖r‖/λ_min`, and the
    /// solver's certified bound is exactly that a-posteriori bound.
    #[test]
    fn a_posteriori_bound_is_nearly_attained() {
        let hh = vec![vec![0.3, 1.0]];
        let a = spd_with_condition(100.0, 1.0, &[], &hh);
        let b = a.from_eigen_coordinates(&ndarray::array![1.0, 1.0]);
        let v_star = dense::solve(&a.matrix, &b).unwrap();
        let params = cg::Params {
            max_iter: 1,
            lambda_min: Some(1.0),
            require_convergence: false,
            ..Default::default()
        };
        let (v, info, _) = solve_recorded(&a.matrix, &b, &Array1::zeros(2), &params);
        let bound = info.error_bound.unwrap();
        assert!(bound.is_certified());
        let ratio = dist(&v, &v_star) / bound.value;
        assert!((0.7..=1.0).contains(&ratio), "ratio {ratio}");
    }

    /// Regression (found by this crate, fixed in core 6263994): CG with a fixed budget and no
    /// tolerance (`rel_tol = abs_tol = 0`) on an SPD system kept iterating after convergence; the
    /// residual decayed into the subnormal range, `pᵀAp` underflowed to 0 and the solver reported
    /// `NotPositiveDefinite` with curvature `0/0 = NaN` for a positive definite matrix.
    #[test]
    fn fixed_budget_cg_past_convergence_on_spd() {
        let a = Array2::from_diag(&ndarray::array![1.0, 2.0, 3.0]);
        let b = ndarray::array![1.0, 1.0, 1.0];
        let mut v = Array1::zeros(3);
        let params = cg::Params {
            max_iter: 100,
            rel_tol: 0.0,
            require_convergence: false,
            ..Default::default()
        };
        let res = cg::solve(&mut DenseOperator::new(a), &b, &mut v, &params, &mut ());
        assert!(res.is_ok(), "SPD system, fixed budget: {res:?}");
        let exact = ndarray::array![1.0, 0.5, 1.0 / 3.0];
        assert!(dist(&v, &exact) <= 1e-15, "{v}");
    }

    proptest! {
        /// Householder strategies give orthogonal matrices of every size used above.
        #[test]
        fn strategy_sanity(hh in householder(5)) {
            let s = spd_with_condition(10.0, 1.0, &[0.5, 0.5, 0.5], &hh);
            let ev = dense::symmetric_eigenvalues(&s.matrix).unwrap();
            prop_assert!((ev[0] - 1.0).abs() <= 1e-13 && (ev[4] - 10.0).abs() <= 1e-12);
        }
    }
}
