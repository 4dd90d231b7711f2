//! When an assumption fails, the solvers say so — an error, never a gradient.
//!
//! # Statements
//! 1. **Fixed point / Neumann, ρ(J) ≥ 1.** If `Jᵀ` has a real eigenvalue `θ` with `|θ| ≥ 1`
//!    (eigenvector `u`) and `b` has a non-zero component `β` along `u` in the eigenbasis of a
//!    symmetric `J`, the iterates from `v_0 = 0` satisfy `v_k = Σ_{j<k}(Jᵀ)^j b`, whose `u`-component
//!    is `β Σ_{j<k} θ^j`; the steps `v_k − v_{k−1} = (Jᵀ)^{k−1} b` have a `u`-component `βθ^{k−1}`
//!    that does not decay. For symmetric `J` the step ratios `‖J^k b‖/‖J^{k−1} b‖` are
//!    non-decreasing (Cauchy–Schwarz: `‖J^k b‖² = ⟨J^{k−1}b, J^{k+1}b⟩ ≤ ‖J^{k−1}b‖‖J^{k+1}b‖`) and
//!    tend to `ρ(J)`: a ratio above 1 proves divergence. The core reports
//!    [`ibau_core::Error::Diverging`]. For the gradient-descent map `J = I − αH` this is the case
//!    `α > 2/λ_max(H)` (eigenvalue `1 − αλ_max < −1`) or an `H` with a negative eigenvalue
//!    (eigenvalue `> 1`).
//! 2. **CG on an indefinite `A`.** If `A` is symmetric with an eigenvalue `≤ 0` whose eigenvector
//!    `b` has a component along, then CG cannot converge without meeting `pᵀAp ≤ 0`: CG's
//!    coefficients define the Lanczos tridiagonal `T_m = L D Lᵀ` with pivots
//!    `D_jj = p_jᵀAp_j / r_jᵀr_j`; once the Krylov space is invariant, `T_m` has the eigenvalues of
//!    `A` present in `b`, one of them `≤ 0`, and by Sylvester's law of inertia some pivot — some
//!    curvature `pᵀAp` — is `≤ 0`. The core reports [`ibau_core::Error::NotPositiveDefinite`]
//!    and never divides by that curvature.
//! 3. **A false claim `q < ‖J‖`.** The fixed-point step obeys `d_{k+1} = Jᵀd_k`, so an observed
//!    ratio `‖d_{k+1}‖/‖d_k‖ > q` disproves `‖J‖ ≤ q`; for symmetric `J` with `q < ρ(J)` and `b`
//!    along the dominant eigenvector the ratios tend to `ρ(J)`, so the claim is disproved:
//!    [`ibau_core::Error::ContractionViolated`]. (The check is sufficient, not necessary: a
//!    non-normal `J` with `ρ(J) ≤ q < ‖J‖` may never show it — the certificate then rests on
//!    the caller.)
//!
//! # Sources
//! Statement 1: the spectral characterisation of the convergence of stationary iterations
//! (Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Thm. 4.1) and, for Neumann,
//! Lorraine et al. AISTATS 2020 (the series needs `‖I − αH‖ < 1`). Statement 2: Nocedal &
//! Wright, ch. 5 (CG needs `A ≻ 0`) and Saad §6.7.3 (CG–Lanczos, pivots); the inertia argument is
//! written out above. Statement 3: the derivation in [`crate::fixed_point`].

#[cfg(test)]
mod tests {
    use crate::instances::{Linearised, Spectral};
    use crate::strategies::{householder, spd, vector};
    use ibau_core::dense::DenseOperator;
    use ibau_core::solve::{cg, fixed_point, neumann};
    use ibau_core::{hypergradient, Error, Method, Params};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    /// A symmetric `J` of size `n` with one eigenvalue `bad` and the others in `(−0.95, 0.95)`,
    /// and a `b` whose component along the eigenvector of `bad` is at least 0.5.
    fn with_eigenvalue(
        bad: f64,
        others: &[f64],
        hh: &[Vec<f64>],
        c: &Array1<f64>,
    ) -> (Spectral, Array1<f64>) {
        let mut ev = others.to_vec();
        ev.push(bad);
        let j = Spectral::new(&ev, hh);
        let idx = j
            .eigenvalues
            .iter()
            .position(|&e| e.total_cmp(&bad).is_eq())
            .expect("the eigenvalue is there");
        let mut coef = c.clone();
        coef[idx] = 0.5 + coef[idx].abs();
        let b = j.from_eigen_coordinates(&coef);
        (j, b)
    }

    fn lin(jt: Array2<f64>, b: Array1<f64>) -> Linearised {
        let n = b.len();
        Linearised {
            jt,
            cross_t: Array2::from_elem((2, n), 0.5),
            grad_w: b,
            grad_lambda: Array1::zeros(2),
        }
    }

    fn others_and_c() -> impl Strategy<Value = (Vec<f64>, Vec<Vec<f64>>, Array1<f64>)> {
        (2usize..12).prop_flat_map(|n| {
            (
                prop::collection::vec(-0.95..0.95f64, n - 1),
                householder(n),
                vector(n),
            )
        })
    }

    proptest! {
        /// ρ(J) = q > 1 (eigenvalue ±q): fixed point and Neumann report `Diverging`, and so
        /// does the hypergradient — no gradient comes back.
        #[test]
        fn non_contractive_maps_are_reported_as_diverging(
            (others, hh, c) in others_and_c(),
            q in 1.02..3.0f64,
            negative in any::<bool>(),
            symmetric in any::<bool>(),
        ) {
            let bad = if negative { -q } else { q };
            let (j, b) = with_eigenvalue(bad, &others, &hh, &c);
            let mut op = DenseOperator::new(j.matrix.clone());
            let mut v = Array1::zeros(b.len());
            let res = fixed_point::solve(&mut op, &b, &mut v,
                &fixed_point::Params { symmetric, ..Default::default() }, &mut ());
            prop_assert!(matches!(res, Err(Error::Diverging { .. })), "fixed point: {:?}", res);
            let res = neumann::solve(&mut op, &b, &mut v,
                &neumann::Params { terms: 80, symmetric, ..Default::default() }, &mut ());
            prop_assert!(matches!(res, Err(Error::Diverging { .. })), "Neumann: {:?}", res);
            let params = Params {
                method: Method::FixedPoint(fixed_point::Params::default()),
                symmetric, ..Params::default()
            };
            let res = hypergradient(&mut lin(j.matrix.clone(), b.clone()).problem(), &params, None, &mut ());
            prop_assert!(matches!(res, Err(Error::Diverging { .. })), "hypergradient: {:?}", res.map(|h| h.gradient));
        }

        /// The gradient-descent map with a step `α > 2/L`: `J = I − αH` has the eigenvalue
        /// `1 − αL < −1`; Neumann (and fixed point) report `Diverging`.
        #[test]
        fn gradient_descent_map_with_too_large_a_step_diverges(
            (h, c) in spd(2, 10, 1.0).prop_flat_map(|h| { let n = h.n(); (Just(h), vector(n)) }),
            factor in 2.1..4.0f64,
        ) {
            let alpha = factor / h.max();
            let jt = Array2::<f64>::eye(h.n()) - &h.matrix * alpha;
            let mut coef = c.clone();
            let last = h.n() - 1;
            coef[last] = 0.5 + coef[last].abs();
            let b = h.from_eigen_coordinates(&coef);
            let mut v = Array1::zeros(b.len());
            let res = neumann::solve(&mut DenseOperator::new(jt.clone()), &b, &mut v,
                &neumann::Params { terms: 200, symmetric: true, ..Default::default() }, &mut ());
            prop_assert!(matches!(res, Err(Error::Diverging { .. })), "Neumann: {:?}", res);
            let res = fixed_point::solve(&mut DenseOperator::new(jt), &b, &mut v,
                &fixed_point::Params::default(), &mut ());
            prop_assert!(matches!(res, Err(Error::Diverging { .. })), "fixed point: {:?}", res);
        }

        /// `A = I − Jᵀ` with an eigenvalue `≤ 0` (J has an eigenvalue ≥ 1) and `b` along it:
        /// CG and the CG hypergradient report `NotPositiveDefinite` with curvature `≤ 0`.
        #[test]
        fn cg_on_an_indefinite_system_reports_it(
            (others, hh, c) in others_and_c(),
            excess in 0.0..2.0f64,
        ) {
            let (j, b) = with_eigenvalue(1.0 + excess, &others, &hh, &c);
            let a = Array2::<f64>::eye(b.len()) - &j.matrix;
            let mut v = Array1::zeros(b.len());
            let res = cg::solve(&mut DenseOperator::new(a), &b, &mut v,
                &cg::Params { rel_tol: 1e-12, ..Default::default() }, &mut ());
            prop_assert!(matches!(res, Err(Error::NotPositiveDefinite { curvature, .. }) if curvature <= 0.0),
                "CG: {:?}", res);
            let params = Params {
                method: Method::ConjugateGradient(cg::Params { rel_tol: 1e-12, ..Default::default() }),
                symmetric: true, ..Params::default()
            };
            let res = hypergradient(&mut lin(j.matrix.clone(), b.clone()).problem(), &params, None, &mut ());
            prop_assert!(matches!(res, Err(Error::NotPositiveDefinite { .. })), "hypergradient: {:?}", res.map(|h| h.gradient));
        }

        /// A claimed `q` below ρ(J) (b along the dominant eigenvector) is disproved:
        /// `ContractionViolated`, for fixed point, Neumann and the hypergradient.
        #[test]
        fn a_false_contraction_claim_is_caught(
            (others, hh, c) in others_and_c(),
            true_q in 0.7..0.99f64,
            claimed_frac in 0.1..0.9f64,
            negative in any::<bool>(),
        ) {
            let others: Vec<f64> = others.iter().map(|o| o * 0.5).collect();
            let bad = if negative { -true_q } else { true_q };
            let (j, b) = with_eigenvalue(bad, &others, &hh, &c);
            let claimed = claimed_frac * true_q;
            let mut op = DenseOperator::new(j.matrix.clone());
            let mut v = Array1::zeros(b.len());
            let params = fixed_point::Params {
                contraction: Some(claimed), rel_tol: 1e-12, max_iter: 10_000, ..Default::default()
            };
            let res = fixed_point::solve(&mut op, &b, &mut v, &params, &mut ());
            prop_assert!(matches!(res, Err(Error::ContractionViolated { .. })), "fixed point: {:?}", res);
            let params = Params {
                method: Method::Neumann(neumann::Params { terms: 200, ..Default::default() }),
                contraction: Some(claimed), symmetric: true, cross_norm: None,
            };
            let res = hypergradient(&mut lin(j.matrix.clone(), b.clone()).problem(), &params, None, &mut ());
            prop_assert!(matches!(res, Err(Error::ContractionViolated { .. })), "hypergradient: {:?}", res.map(|h| h.gradient));
        }
    }

    /// ρ(J) = 1 exactly (`J = I`, `J = −I`, and a rotation by 90°): never a result.
    #[test]
    fn spectral_radius_one_is_never_returned_as_a_solution() {
        let b = ndarray::array![1.0, -0.5];
        let rot = ndarray::array![[0.0, -1.0], [1.0, 0.0]];
        for (jt, symmetric) in [
            (Array2::<f64>::eye(2), true),
            (-Array2::<f64>::eye(2), true),
            (Array2::<f64>::eye(2), false),
            (rot, false),
        ] {
            let mut v = Array1::zeros(2);
            let res = fixed_point::solve(
                &mut DenseOperator::new(jt.clone()),
                &b,
                &mut v,
                &fixed_point::Params {
                    max_iter: 500,
                    symmetric,
                    require_convergence: false,
                    ..Default::default()
                },
                &mut (),
            );
            assert!(
                matches!(res, Err(Error::Diverging { .. })),
                "{jt}, symmetric {symmetric}: {res:?}"
            );
        }
    }

    /// Zero curvature (a singular `A`, `b` along its null space) is caught, not divided by.
    #[test]
    fn zero_curvature_is_reported_not_divided_by() {
        let a = ndarray::array![[0.0, 0.0], [0.0, 1.0]];
        let b = ndarray::array![1.0, 0.0];
        let mut v = Array1::zeros(2);
        let res = cg::solve(
            &mut DenseOperator::new(a),
            &b,
            &mut v,
            &cg::Params::default(),
            &mut (),
        );
        assert!(
            matches!(res, Err(Error::NotPositiveDefinite { iteration: 1, curvature }) if curvature == 0.0),
            "{res:?}"
        );
    }
}
