//! The solvers' documented contracts that the theorems rely on but do not themselves pin down:
//! what a report counts (operator applications, restarts, tolerance), where an error is located,
//! when a bound is certified or only estimated, and the numerically degenerate cases (an exact
//! step to the solution, a subnormal right-hand side, an overflowing curvature).
//!
//! These are the checks mutation testing (`scripts/mutants`) showed to be missing: each test
//! names the contract it holds the core to, as documented in `ibau_core::solve` and
//! `ibau_core::report`. In particular:
//!
//! * **Fixed point converges iff ρ(J) < 1, not ‖J‖ < 1.** A non-normal `J` with `ρ(J) < 1 < ‖J‖`
//!   has growing steps at first and still converges; only for symmetric `J` (where the step
//!   ratios are non-decreasing, see [`crate::assumption_violations`]) does one ratio above 1
//!   prove divergence.
//! * **The estimated fixed-point bound.** Without a certified `q`, the solver reports
//!   `ĉ/(1−ĉ)·‖v_k − v_{k−1}‖` with `ĉ` the largest of the last step ratios — the a-posteriori
//!   bound of [`crate::fixed_point`] with `ĉ` in place of `q`. For `J = qI` every ratio is `q`,
//!   so the estimate is exact and the bound attained; an estimate `ĉ ≥ 1` gives no bound.
//! * **The hypergradient wrapper** passes a certified `q` on — to the fixed-point solvers as
//!   their `q`, to CG as `λ_min(I − J) ≥ 1 − q` only for symmetric `J` and `q < 1` — and refuses
//!   invalid `cross_norm` and non-finite `∇_λE`.
//! * **Ritz values** are the eigenvalues of the tridiagonal CG's coefficients define; for the
//!   coefficients `α_j = (j+1)/(j+2)`, `β_j = α_j²` that tridiagonal is `tridiag(−1, 2, −1)`, whose
//!   eigenvalues `2 − 2cos(jπ/(m+1))` are known in closed form.
//! * **CG's accounting**: one application per iteration, one per residual verification, one for
//!   a non-zero initial guess; a restart each time the verified residual misses the tolerance,
//!   `Stagnated` after `max_restarts`.

#[cfg(test)]
mod tests {
    use crate::instances::{dist, norm, spd_with_condition, Spectral};
    use ibau_core::dense::{self, DenseOperator};
    use ibau_core::solve::{cg, fixed_point, neumann};
    use ibau_core::{Error, Location, Termination};
    use ndarray::{array, Array1, Array2};

    fn dense_op(m: &Array2<f64>) -> DenseOperator {
        DenseOperator::new(m.clone())
    }

    /// An operator `x ↦ Mx` that returns NaN from its `bad_call`-th application on (1-based).
    fn nan_from(m: Array2<f64>, bad_call: usize) -> impl FnMut(&Array1<f64>, &mut Array1<f64>) {
        let mut calls = 0usize;
        move |x, out| {
            calls += 1;
            out.assign(&m.dot(x));
            if calls >= bad_call {
                out[0] = f64::NAN;
            }
        }
    }

    // ---------------------------------------------------------------- conjugate gradient

    /// Applications: iterations + verifications (+1 for a non-zero start); no restarts on an
    /// easy system; the reported tolerance is `max(abs_tol, rel_tol·‖b‖)`.
    #[test]
    fn cg_counts_applications_and_reports_its_tolerance() {
        let a = spd_with_condition(10.0, 1.0, &[0.2, 0.5], &[vec![1.0, 2.0, 0.0, -1.0]]);
        let b = array![1.0, -1.0, 2.0, 0.5];
        for (v0, extra) in [(Array1::zeros(4), 0usize), (array![0.1, 0.0, 0.0, 0.0], 1)] {
            let mut v = v0.clone();
            let p = cg::Params {
                rel_tol: 1e-12,
                ..Default::default()
            };
            let info = cg::solve(&mut dense_op(&a.matrix), &b, &mut v, &p, &mut ()).unwrap();
            assert_eq!(info.termination, Termination::Converged);
            assert_eq!(info.restarts, 0);
            assert!(info.residual_verified);
            assert_eq!(info.operator_applications, info.iterations + 1 + extra);
            assert!((info.tolerance - 1e-12 * norm(&b)).abs() <= 1e-27);
            assert_eq!(info.residual_history.len(), info.iterations + 1);
        }
        // abs_tol dominates.
        let mut v = Array1::zeros(4);
        let p = cg::Params {
            abs_tol: 1e-3,
            rel_tol: 1e-12,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a.matrix), &b, &mut v, &p, &mut ()).unwrap();
        assert!((info.tolerance - 1e-3).abs() <= 1e-18);
        assert!(norm(&(&b - &a.matrix.dot(&v))) <= 1e-3);
    }

    /// `verify_residual = false`: no extra application, the residual is the recursive one, and
    /// the bound from a given `lambda_min` is only an estimate.
    #[test]
    fn cg_without_verification_reports_an_estimate() {
        let a = Array2::from_diag(&array![1.0, 3.0, 10.0]);
        let b = array![1.0, 1.0, 1.0];
        let v_star = array![1.0, 1.0 / 3.0, 0.1];
        let mut v = Array1::zeros(3);
        // A λ_min below the true one (1): still a valid lower bound, and ≠ 1 so that the
        // bound's value ‖r‖/λ_min is told apart from ‖r‖·λ_min.
        let p = cg::Params {
            verify_residual: false,
            lambda_min: Some(0.5),
            rel_tol: 1e-12,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.operator_applications, info.iterations);
        assert!(!info.residual_verified);
        let bound = info.error_bound.unwrap();
        assert!(!bound.is_certified());
        assert!((bound.value - 2.0 * info.residual).abs() <= 1e-15 * bound.value);
        assert!(dist(&v, &v_star) <= 1e-11);
        // Budget spent without verification: no extra application either.
        let mut v = Array1::zeros(3);
        let p = cg::Params {
            verify_residual: false,
            max_iter: 1,
            require_convergence: false,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.termination, Termination::MaxIterations);
        assert_eq!(info.operator_applications, 1);
        assert!(!info.residual_verified);
    }

    /// With no `lambda_min`, the estimate is `‖r‖/θ_min` with `θ_min` the smallest Ritz value.
    #[test]
    fn cg_estimate_without_lambda_min_uses_the_smallest_ritz_value() {
        let a = Array2::from_diag(&array![0.5, 2.0, 4.0, 8.0]);
        let b = array![1.0, 1.0, 1.0, 1.0];
        let mut v = Array1::zeros(4);
        let p = cg::Params {
            max_iter: 2,
            require_convergence: false,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        let s = info.spectrum.unwrap();
        assert!(s.lambda_min > 0.5 && s.lambda_max < 8.0);
        let bound = info.error_bound.unwrap();
        assert!(!bound.is_certified());
        assert!((bound.value - info.residual / s.lambda_min).abs() <= 1e-14 * bound.value);
        // Budget 0: nothing to estimate from, no bound; the start is verified by definition.
        let mut v = Array1::zeros(4);
        let p = cg::Params {
            max_iter: 0,
            require_convergence: false,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.operator_applications, 0);
        assert!(info.residual_verified && info.error_bound.is_none() && info.spectrum.is_none());
    }

    /// κ ≈ 1e18: the smallest Ritz value comes out of bisection at `−1.1e-16` (its accuracy is
    /// absolute, ~ε‖T‖), so it cannot stand in for λ_min: no estimated bound rather than a
    /// negative one.
    #[test]
    fn cg_withholds_the_estimate_when_the_smallest_ritz_value_is_not_positive() {
        let a = Array2::from_diag(&array![1e-18, 1.0, 2.0]);
        let b = array![1.0, 1.0, 1.0];
        let mut v = Array1::zeros(3);
        let p = cg::Params {
            max_iter: 3,
            rel_tol: 0.0,
            require_convergence: false,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        let s = info.spectrum.unwrap();
        assert!(s.lambda_min <= 0.0, "{s:?}");
        assert!(info.error_bound.is_none(), "{:?}", info.error_bound);
    }

    /// A residual that is exactly zero after one step (`A = I`, `b = e₁`): no division by the
    /// zero direction, the exact solution, one iteration.
    #[test]
    fn cg_exact_step_to_the_solution() {
        let a = Array2::from_diag(&array![1.0, 2.0]);
        let b = array![1.0, 0.0];
        let mut v = Array1::zeros(2);
        let p = cg::Params {
            rel_tol: 0.0,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.termination, Termination::Converged);
        assert_eq!(info.iterations, 1);
        assert!(info.residual == 0.0);
        assert!(dist(&v, &b) == 0.0);
    }

    /// A subnormal right-hand side (‖b‖ ≈ 1e-310, `1/‖b‖` overflows): solved to full relative
    /// accuracy, as a normal one.
    #[test]
    fn cg_on_a_subnormal_right_hand_side() {
        let a = Array2::from_diag(&array![1.0, 2.0, 4.0]);
        let b = array![1.0, 1.0, 1.0] * 1e-310;
        let mut v = Array1::zeros(3);
        // rel_tol 1e-4: the tolerance (~1e-314) must stay where subnormals still carry bits.
        let p = cg::Params {
            rel_tol: 1e-4,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.termination, Termination::Converged);
        let exact = array![1.0, 0.5, 0.25];
        let scaled = &v / 1e-310;
        assert!(dist(&scaled, &exact) <= 1e-6, "{scaled}");
    }

    /// A curvature that overflows is `NonFinite` at that iteration, not a zero step.
    #[test]
    fn cg_curvature_overflow_is_non_finite() {
        let mut op = |x: &Array1<f64>, out: &mut Array1<f64>| {
            for i in 0..x.len() {
                out[i] = (2.0 * x[i]) * 1.7e308;
            }
        };
        let b = array![1.0, 1.0, 1.0, 1.0];
        let mut v = Array1::zeros(4);
        let res = cg::solve(&mut op, &b, &mut v, &cg::Params::default(), &mut ());
        assert!(
            matches!(
                res,
                Err(Error::NonFinite {
                    at: Location::Iterate { iteration: 1 }
                })
            ),
            "{res:?}"
        );
    }

    /// Near the overflow threshold: with `A = diag(1, 1, L, L)`, `b = x·(1, 1, 1, 1)`,
    /// `x = 0.7e308`, `L = 10⁶`, every entry and the residual stay finite through the first step
    /// (‖r₁‖ ≈ ‖b‖ = 1.4e308), but the unnormalised next direction `r₁ + β‖p₀‖d₀ ≈ (2x, 2x, 0, 0)`
    /// has norm 2.8x ≈ 2e308: `NonFinite` at iteration 1 — not a direction silently scaled to 0.
    #[test]
    fn cg_direction_overflow_is_non_finite() {
        let a = Array2::from_diag(&array![1.0, 1.0, 1e6, 1e6]);
        let b = Array1::from_elem(4, 0.7e308);
        let mut v = Array1::zeros(4);
        let mut rec = ibau_core::Recorder::default();
        let res = cg::solve(
            &mut dense_op(&a),
            &b,
            &mut v,
            &cg::Params::default(),
            &mut rec,
        );
        assert!(
            matches!(
                res,
                Err(Error::NonFinite {
                    at: Location::Iterate { iteration: 1 }
                })
            ),
            "{res:?}"
        );
        // The error is the direction's, not the iterate's or the residual's.
        assert!(v.iter().all(|x| x.is_finite()) && rec.iterates.is_empty());
        let r = &b - &a.dot(&v);
        assert!(r.iter().all(|x| x.is_finite()));
    }

    /// NaN from the operator at its m-th call is located at iteration m (from `v₀ = 0`, the
    /// m-th call is CG iteration m).
    #[test]
    fn cg_locates_a_non_finite_operator_output() {
        let a = Array2::from_diag(&array![1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = array![1.0, 1.0, 1.0, 1.0, 1.0];
        for m in 1..=3 {
            let mut v = Array1::zeros(5);
            let res = cg::solve(
                &mut nan_from(a.clone(), m),
                &b,
                &mut v,
                &cg::Params::default(),
                &mut (),
            );
            assert!(
                matches!(res, Err(Error::NonFinite { at: Location::OperatorOutput { iteration } }) if iteration == m),
                "m={m}: {res:?}"
            );
        }
    }

    /// A tolerance below the rounding floor: the verified residual misses it, CG restarts
    /// `max_restarts` times, then reports `Stagnated` (or `NotConverged` when convergence is
    /// required); its iterate is still accurate to the floor.
    #[test]
    fn cg_restarts_then_stagnates_below_the_rounding_floor() {
        let hh = vec![
            vec![1.0, -2.0, 0.5, 1.0, 0.0, 3.0],
            vec![0.0, 1.0, 1.0, -1.0, 2.0, 0.5],
        ];
        let a = spd_with_condition(1e6, 1.0, &[0.1, 0.4, 0.6, 0.9], &hh);
        let b = array![1.0, -1.0, 0.5, 0.25, 2.0, -0.75];
        let v_star = dense::solve(&a.matrix, &b).unwrap();
        for max_restarts in [0usize, 2] {
            let p = cg::Params {
                rel_tol: 1e-19,
                max_restarts,
                max_iter: 10_000,
                require_convergence: false,
                ..Default::default()
            };
            let mut v = Array1::zeros(6);
            let info = cg::solve(&mut dense_op(&a.matrix), &b, &mut v, &p, &mut ()).unwrap();
            assert_eq!(info.termination, Termination::Stagnated, "{info}");
            assert_eq!(info.restarts, max_restarts + 1);
            assert!(info.residual_verified);
            assert!(dist(&v, &v_star) <= 1e-6 * norm(&v_star));
            let p = cg::Params {
                require_convergence: true,
                ..p
            };
            let mut v = Array1::zeros(6);
            let res = cg::solve(&mut dense_op(&a.matrix), &b, &mut v, &p, &mut ());
            assert!(matches!(res, Err(Error::NotConverged { .. })), "{res:?}");
        }
    }

    // ---------------------------------------------------------------- fixed point

    /// `J` non-normal with `ρ(J) = 0.5 < 1 < ‖J‖ ≈ 4`: the first steps grow, the iteration
    /// converges, and it is not called divergent unless `J` is declared symmetric.
    #[test]
    fn fixed_point_converges_for_a_non_normal_map_with_spectral_radius_below_one() {
        let jt = array![[0.5, 4.0], [0.0, 0.5]];
        let b = array![0.0, 1.0];
        let v_star = dense::solve_implicit(&jt, &b).unwrap();
        let mut v = Array1::zeros(2);
        let p = fixed_point::Params {
            rel_tol: 1e-12,
            ..Default::default()
        };
        let info = fixed_point::solve(&mut dense_op(&jt), &b, &mut v, &p, &mut ()).unwrap();
        assert_eq!(info.termination, Termination::Converged);
        assert!(dist(&v, &v_star) <= 1e-10 * norm(&v_star));
        assert!(info.residual_history[1] > info.residual_history[0]);
    }

    /// Symmetric J with ρ(J) > 1: divergence is declared at the first step ratio above 1
    /// (iteration 2 here), not later.
    #[test]
    fn symmetric_divergence_is_declared_at_the_first_growing_step() {
        let j = Array2::from_diag(&array![2.0, 0.5]);
        let b = array![1.0, 1.0];
        let mut v = Array1::zeros(2);
        let p = fixed_point::Params {
            symmetric: true,
            ..Default::default()
        };
        let res = fixed_point::solve(&mut dense_op(&j), &b, &mut v, &p, &mut ());
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 2, .. })),
            "{res:?}"
        );
        let mut v = Array1::zeros(2);
        let res = neumann::solve(
            &mut dense_op(&j),
            &b,
            &mut v,
            &neumann::Params {
                terms: 50,
                symmetric: true,
                ..Default::default()
            },
            &mut (),
        );
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 2, .. })),
            "{res:?}"
        );
    }

    /// Non-symmetric growth is declared when a step exceeds `divergence_factor` times the first:
    /// `J = 2I`, first step 1e-3, factor 1e6, so at the first step above 1e3, `v_21`.
    #[test]
    fn growth_past_the_divergence_factor_is_declared_there() {
        let j = Array2::<f64>::eye(2) * 2.0;
        let b = array![1e-3, 0.0];
        let mut v = Array1::zeros(2);
        let res = fixed_point::solve(
            &mut dense_op(&j),
            &b,
            &mut v,
            &fixed_point::Params::default(),
            &mut (),
        );
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 21, .. })),
            "{res:?}"
        );
    }

    /// `J = I` (ρ = 1, steps constant) with `symmetric`: no ratio is above 1, so divergence is
    /// declared when the budget is spent with a last ratio ≥ 1 — at iteration `max_iter`.
    #[test]
    fn unit_spectral_radius_is_declared_at_the_end_of_the_budget() {
        let mut v = Array1::zeros(2);
        let res = fixed_point::solve(
            &mut dense_op(&Array2::<f64>::eye(2)),
            &array![1.0, 0.0],
            &mut v,
            &fixed_point::Params {
                max_iter: 50,
                symmetric: true,
                require_convergence: false,
                ..Default::default()
            },
            &mut (),
        );
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 50, .. })),
            "{res:?}"
        );
    }

    /// A claim above 1 gets the relative slack `q·16√ε`, not `16√ε/q`: `J = (2 + 3e-7)I`
    /// claimed `q = 2` is within the slack (then diverges), not a violated claim.
    #[test]
    fn contraction_slack_scales_with_claims_above_one() {
        let j = Array2::<f64>::eye(2) * (2.0 + 3e-7);
        let mut v = Array1::zeros(2);
        let res = fixed_point::solve(
            &mut dense_op(&j),
            &array![1.0, 1.0],
            &mut v,
            &fixed_point::Params {
                contraction: Some(2.0),
                ..Default::default()
            },
            &mut (),
        );
        assert!(matches!(res, Err(Error::Diverging { .. })), "{res:?}");
    }

    /// Step ratios below the rounding floor `√ε(‖v‖ + ‖b‖)` are not evidence: run to the end
    /// of a long budget, `J = ½I` with the exact claim `q = ½` (and, separately, declared
    /// symmetric) is neither a violated claim nor divergent — at any scale of `b`.
    #[test]
    fn rounding_noise_is_not_taken_for_a_violated_claim() {
        let j = Array2::<f64>::eye(2) * 0.5;
        for scale in [1e-6, 1e-3, 1.0, 1e3, 1e6] {
            let b = array![1.0, 0.3] * scale;
            for (contraction, symmetric) in [(Some(0.5), false), (None, true)] {
                let mut v = Array1::zeros(2);
                let res = fixed_point::solve(
                    &mut dense_op(&j),
                    &b,
                    &mut v,
                    &fixed_point::Params {
                        max_iter: 300,
                        rel_tol: 0.0,
                        contraction,
                        symmetric,
                        require_convergence: false,
                        ..Default::default()
                    },
                    &mut (),
                );
                assert!(res.is_ok(), "scale {scale:e}, {contraction:?}: {res:?}");
                assert!(dist(&v, &(&b * 2.0)) <= 4.0 * f64::EPSILON * scale);
            }
        }
    }

    /// The three growth checks are strict inequalities. With `slack = 16√ε = 2⁻²²` exactly and
    /// powers of two, the boundary is hit exactly: a ratio of exactly `q + 2⁻²²` is within a
    /// claim `q = ½`; a symmetric ratio of exactly `1 + 2⁻²²` is not yet growth (but ρ ≥ 1 at
    /// the end of the budget is); a step of exactly `divergence_factor ×` the first is not yet
    /// divergence.
    #[test]
    fn growth_checks_are_strict_at_their_boundaries() {
        let slack = 2f64.powi(-22);
        let run = |c: f64, params: fixed_point::Params| {
            let mut v = Array1::zeros(1);
            fixed_point::solve(
                &mut dense_op(&array![[c]]),
                &array![1.0],
                &mut v,
                &params,
                &mut (),
            )
        };
        // v₁ = 1, v₂ = 1 + c, v₃ = 1 + c + c²: all exact, so the ratios are exactly c.
        let claim = fixed_point::Params {
            max_iter: 3,
            contraction: Some(0.5),
            require_convergence: false,
            ..Default::default()
        };
        assert!(run(0.5 + slack, claim).is_ok());
        let symmetric = fixed_point::Params {
            max_iter: 3,
            symmetric: true,
            require_convergence: false,
            ..Default::default()
        };
        let res = run(1.0 + slack, symmetric);
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 3, .. })),
            "{res:?}"
        );
        // J = 2: steps 2^{k−1} exactly; factor 2²⁰ is reached at v₂₁ and exceeded at v₂₂.
        let growth = fixed_point::Params {
            divergence_factor: 2f64.powi(20),
            ..Default::default()
        };
        let res = run(2.0, growth);
        assert!(
            matches!(res, Err(Error::Diverging { iteration: 22, .. })),
            "{res:?}"
        );
    }

    /// Without a claim, `J = qI`: the estimated contraction is `q` and the estimated bound
    /// `ĉ/(1−ĉ)·step` equals the true error.
    #[test]
    fn estimated_fixed_point_bound_is_exact_for_a_multiple_of_the_identity() {
        for q in [0.3, 0.6, 0.9] {
            let j = Array2::<f64>::eye(3) * q;
            let b = array![1.0, -0.5, 2.0];
            let v_star = &b / (1.0 - q);
            let mut v = Array1::zeros(3);
            let info = fixed_point::solve(
                &mut dense_op(&j),
                &b,
                &mut v,
                &fixed_point::Params {
                    max_iter: 10,
                    require_convergence: false,
                    ..Default::default()
                },
                &mut (),
            )
            .unwrap();
            let c = info.contraction.unwrap();
            assert!(!c.is_certified() && (c.value - q).abs() <= 1e-9, "{c:?}");
            let bound = info.error_bound.unwrap();
            assert!(!bound.is_certified());
            let ratio = dist(&v, &v_star) / bound.value;
            assert!((0.999..=1.0 + 1e-6).contains(&ratio), "q={q}: {ratio}");
        }
    }

    /// A step ratio ≥ 1 among the last ones leaves no estimated bound (`ĉ/(1−ĉ)` would be
    /// negative or infinite): nilpotent `J` reaching the solution exactly after growing steps.
    #[test]
    fn no_estimated_bound_from_a_ratio_of_one_or_more() {
        for (growth, b) in [(10.0, array![1.0, 0.0]), (1.0, array![1.0, 0.0])] {
            let jt = array![[0.0, 0.0], [growth, 0.0]];
            let mut v = Array1::zeros(2);
            let info = fixed_point::solve(
                &mut dense_op(&jt),
                &b,
                &mut v,
                &fixed_point::Params {
                    rel_tol: 0.0,
                    ..Default::default()
                },
                &mut (),
            )
            .unwrap();
            assert_eq!(info.termination, Termination::Converged);
            assert!(dist(&v, &array![1.0, growth]) == 0.0);
            assert!(info.error_bound.is_none(), "{:?}", info.error_bound);
        }
    }

    /// A claimed `q ≥ 1` certifies nothing: the bound falls back to the estimate.
    #[test]
    fn a_claim_of_one_or_more_certifies_no_bound() {
        let j = Array2::<f64>::eye(2) * 0.5;
        for claim in [1.0, 1.5] {
            let mut v = Array1::zeros(2);
            let info = fixed_point::solve(
                &mut dense_op(&j),
                &array![1.0, 1.0],
                &mut v,
                &fixed_point::Params {
                    contraction: Some(claim),
                    ..Default::default()
                },
                &mut (),
            )
            .unwrap();
            assert!(info.contraction.unwrap().is_certified());
            let bound = info.error_bound.unwrap();
            assert!(
                !bound.is_certified() && bound.value.is_finite(),
                "{bound:?}"
            );
        }
    }

    /// NaN from `Jᵀ` at its m-th call: located at the iterate being computed — from zero the
    /// first call computes `v₂`, from a warm start `v₁`.
    #[test]
    fn fixed_point_locates_a_non_finite_operator_output() {
        let j = Array2::<f64>::eye(2) * 0.5;
        let b = array![1.0, 1.0];
        for (v0, first) in [(array![0.0, 0.0], 2usize), (array![1.0, 0.0], 1)] {
            for m in 1..=3 {
                let mut v = v0.clone();
                let res = fixed_point::solve(
                    &mut nan_from(j.clone(), m),
                    &b,
                    &mut v,
                    &fixed_point::Params::default(),
                    &mut (),
                );
                let want = first + m - 1;
                assert!(
                    matches!(res, Err(Error::NonFinite { at: Location::OperatorOutput { iteration } }) if iteration == want),
                    "start {v0}, m={m}: {res:?}"
                );
            }
        }
    }

    /// Applications: none for the first step from zero, one per further step; from a warm
    /// start one per step.
    #[test]
    fn fixed_point_counts_applications() {
        let j = Spectral::new(&[0.5, -0.25, 0.1], &[vec![1.0, 1.0, 0.0]]);
        let b = array![1.0, 2.0, 3.0];
        for (v0, extra) in [(Array1::zeros(3), 0usize), (array![1.0, 0.0, 0.0], 1)] {
            let mut v = v0;
            let info = fixed_point::solve(
                &mut dense_op(&j.matrix),
                &b,
                &mut v,
                &fixed_point::Params {
                    max_iter: 7,
                    require_convergence: false,
                    ..Default::default()
                },
                &mut (),
            )
            .unwrap();
            assert_eq!(info.iterations, 7);
            assert_eq!(info.operator_applications, 6 + extra);
            assert_eq!(info.residual_history.len(), 7);
            assert!(info.residual_history.iter().all(|s| s.is_finite()));
            assert!((info.tolerance - 1e-10 * norm(&b)).abs() <= 1e-24);
        }
    }

    // ---------------------------------------------------------------- hypergradient wrapper

    use crate::instances::Linearised;
    use ibau_core::{hypergradient, Method, Params};

    fn lin(jt: Array2<f64>) -> Linearised {
        let n = jt.nrows();
        Linearised {
            jt,
            cross_t: Array2::from_elem((1, n), 1.0),
            grad_w: Array1::from_elem(n, 1.0),
            grad_lambda: array![0.5],
        }
    }

    /// Symmetric flag and certified `q` reach the fixed-point solvers; `cross_norm` is checked.
    #[test]
    fn hypergradient_passes_symmetry_and_contraction_on() {
        let j = Array2::from_diag(&array![2.0, 0.5]);
        for method in [
            Method::FixedPoint(fixed_point::Params::default()),
            Method::Neumann(neumann::Params {
                terms: 50,
                ..Default::default()
            }),
        ] {
            let params = Params {
                method: method.clone(),
                symmetric: true,
                ..Params::default()
            };
            let res = hypergradient(&mut lin(j.clone()).problem(), &params, None, &mut ());
            assert!(
                matches!(res, Err(Error::Diverging { iteration: 2, .. })),
                "{method:?}: {:?}",
                res.map(|h| h.gradient)
            );
            let params = Params {
                method,
                contraction: Some(0.5),
                cross_norm: Some(2f64.sqrt()),
                ..Params::default()
            };
            let j = Array2::from_diag(&array![0.5, -0.25]);
            let hg = hypergradient(&mut lin(j).problem(), &params, None, &mut ()).unwrap();
            assert!(hg.info.contraction.unwrap().is_certified());
            assert!(hg.error_bound.unwrap().is_certified());
        }
    }

    /// CG gets `λ_min = 1 − q` only for symmetric `J` with `q < 1`; otherwise no certificate
    /// (and no invalid `λ_min ≤ 0`).
    #[test]
    fn hypergradient_implies_lambda_min_only_when_valid() {
        let j = Array2::from_diag(&array![0.5, -0.25]);
        let cg_method = Method::ConjugateGradient(cg::Params::default());
        let run = |q: f64, symmetric: bool| {
            let params = Params {
                method: cg_method.clone(),
                contraction: Some(q),
                symmetric,
                cross_norm: Some(2f64.sqrt()),
            };
            hypergradient(&mut lin(j.clone()).problem(), &params, None, &mut ())
        };
        let certified = run(0.5, true).unwrap();
        let bound = certified.info.error_bound.unwrap();
        assert!(bound.is_certified());
        // ‖r‖/(1 − q) exactly.
        assert!((bound.value - certified.info.residual / 0.5).abs() <= 1e-15 * bound.value);
        for (q, symmetric) in [(0.5, false), (1.0, true), (1.5, true)] {
            let hg = run(q, symmetric).unwrap_or_else(|e| panic!("q={q}, {symmetric}: {e}"));
            assert!(
                hg.error_bound.is_none_or(|b| !b.is_certified()),
                "q={q}, symmetric {symmetric}: {:?}",
                hg.error_bound
            );
        }
    }

    /// `cross_norm` must be finite and ≥ 0 (0 is valid); `∇_λE` must be finite; an overflowing
    /// sum `∇_λE + (∂_λΦ)ᵀv` is `NonFinite` at the cross output.
    #[test]
    fn hypergradient_checks_its_inputs_and_output() {
        let j = Array2::from_diag(&array![0.5, -0.25]);
        let run = |cross_norm: Option<f64>, l: &Linearised| {
            let params = Params {
                cross_norm,
                symmetric: true,
                ..Params::default()
            };
            hypergradient(&mut l.problem(), &params, None, &mut ()).map(|h| h.gradient)
        };
        assert!(run(Some(0.0), &lin(j.clone())).is_ok());
        for c in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    run(Some(c), &lin(j.clone())),
                    Err(Error::InvalidParameter { .. })
                ),
                "{c}"
            );
        }
        let mut bad = lin(j.clone());
        bad.grad_lambda[0] = f64::NAN;
        assert!(matches!(
            run(None, &bad),
            Err(Error::NonFinite {
                at: Location::OuterGradient
            })
        ));
        let mut huge = lin(j);
        huge.grad_lambda[0] = 1.7e308;
        // Cross output 5e307·(2 + 0.8) = 1.4e308 is finite; adding 1.7e308 overflows.
        huge.cross_t *= 5e307;
        assert!(matches!(
            run(None, &huge),
            Err(Error::NonFinite {
                at: Location::CrossOutput
            })
        ));
    }

    // ---------------------------------------------------------------- Lanczos / Ritz values

    /// `α_j = (j+1)/(j+2)`, `β_j = α_j²` give `T_m = tridiag(−1, 2, −1)`: the extreme Ritz values
    /// are `2 − 2cos(π/(m+1))` and `2 − 2cos(mπ/(m+1))`.
    #[test]
    fn ritz_values_of_a_known_tridiagonal() {
        use ibau_core::lanczos::ritz_extremes;
        for m in 1..=14usize {
            let alphas: Vec<f64> = (0..m)
                .map(|j| (j as f64 + 1.0) / (j as f64 + 2.0))
                .collect();
            let betas: Vec<f64> = alphas.iter().map(|a| a * a).collect();
            let s = ritz_extremes(&alphas, &betas).unwrap();
            let h = std::f64::consts::PI / (m as f64 + 1.0);
            let (lo, hi) = (2.0 - 2.0 * h.cos(), 2.0 - 2.0 * (m as f64 * h).cos());
            assert!(
                (s.lambda_min - lo).abs() <= 1e-12,
                "m={m}: {} vs {lo}",
                s.lambda_min
            );
            assert!(
                (s.lambda_max - hi).abs() <= 1e-12,
                "m={m}: {} vs {hi}",
                s.lambda_max
            );
            assert!((s.kappa() - hi / lo).abs() <= 1e-9 * hi / lo);
            // Only the first m − 1 betas are used.
            let s2 = ritz_extremes(&alphas, &betas[..m - 1]).unwrap();
            assert!(s2 == s);
        }
        // A diagonal T (β = 0): the extremes of 1/α.
        let s = ritz_extremes(&[0.5, 0.25, 1.0], &[0.0, 0.0]).unwrap();
        assert!((s.lambda_min - 1.0).abs() <= 1e-13 && (s.lambda_max - 4.0).abs() <= 1e-13);
        assert!(ritz_extremes(&[], &[]).is_none());
        assert!(ritz_extremes(&[1.0, 1.0, 1.0], &[0.5]).is_none());
        assert!(ritz_extremes(&[0.0], &[]).is_none());
        assert!(ritz_extremes(&[1.0, 1.0], &[f64::INFINITY]).is_none());
    }

    /// Ritz values from a real CG run on a matrix with known spectrum: after all n steps they
    /// are the extreme eigenvalues, and `kappa()` is the condition number.
    #[test]
    fn cg_ritz_estimates_reach_the_spectrum() {
        let ev = [0.5, 1.0, 2.0, 3.0, 5.0, 8.0];
        let a = Spectral::new(&ev, &[vec![1.0, 0.5, -1.0, 2.0, 0.0, 1.0]]);
        let b = a.from_eigen_coordinates(&Array1::from_elem(6, 1.0));
        let mut v = Array1::zeros(6);
        let p = cg::Params {
            rel_tol: 1e-13,
            ..Default::default()
        };
        let info = cg::solve(&mut dense_op(&a.matrix), &b, &mut v, &p, &mut ()).unwrap();
        let s = info.spectrum.unwrap();
        assert!((s.lambda_min - 0.5).abs() <= 1e-8 && (s.lambda_max - 8.0).abs() <= 1e-8);
        assert!((s.kappa() - 16.0).abs() <= 1e-6);
    }

    // ---------------------------------------------------------------- vector spaces

    /// The core's three `Vector` implementations pass the core's own conformance suite.
    #[test]
    fn vector_implementations_conform() {
        use ibau_core::conformance::check_vector;
        check_vector(|xs: &[f64]| xs.to_vec(), |v: &Vec<f64>| v.clone(), 1e-14);
        check_vector(
            |xs: &[f64]| Array1::from(xs.to_vec()),
            |v: &Array1<f64>| v.to_vec(),
            1e-14,
        );
        check_vector(
            |xs: &[f64]| xs.iter().map(|&x| x as f32).collect::<Array1<f32>>(),
            |v: &Array1<f32>| v.iter().map(|&x| f64::from(x)).collect(),
            1e-6,
        );
    }

    // ---------------------------------------------------------------- parameters

    /// Every parameter outside its documented range is an `InvalidParameter`; the boundary
    /// values are accepted.
    #[test]
    fn parameter_ranges_are_enforced_at_their_boundaries() {
        let a = Array2::<f64>::eye(2) * 0.5;
        let b = array![1.0, 1.0];
        let fp = |p: fixed_point::Params| {
            let mut v = Array1::zeros(2);
            fixed_point::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ())
        };
        let cgs = |p: cg::Params| {
            let mut v = Array1::zeros(2);
            cg::solve(&mut dense_op(&a), &b, &mut v, &p, &mut ())
        };
        let invalid = |r: &ibau_core::Result<ibau_core::Info>| {
            matches!(r, Err(Error::InvalidParameter { .. }))
        };
        let d = fixed_point::Params::default;
        // Accepted boundaries.
        for p in [
            fixed_point::Params {
                abs_tol: 0.0,
                rel_tol: 0.0,
                ..d()
            },
            fixed_point::Params {
                abs_tol: 1e-3,
                ..d()
            },
            fixed_point::Params {
                abs_tol: f64::INFINITY,
                ..d()
            },
            fixed_point::Params {
                divergence_factor: 1.0 + 1e-9,
                ..d()
            },
        ] {
            assert!(fp(p.clone()).is_ok(), "{p:?}");
        }
        // Rejected.
        for p in [
            fixed_point::Params {
                abs_tol: -1e-300,
                ..d()
            },
            fixed_point::Params {
                abs_tol: f64::NAN,
                ..d()
            },
            fixed_point::Params {
                rel_tol: -1e-300,
                ..d()
            },
            fixed_point::Params {
                rel_tol: f64::INFINITY,
                ..d()
            },
            fixed_point::Params {
                rel_tol: f64::NAN,
                ..d()
            },
            fixed_point::Params {
                contraction: Some(-1e-300),
                ..d()
            },
            fixed_point::Params {
                contraction: Some(f64::INFINITY),
                ..d()
            },
            fixed_point::Params {
                divergence_factor: 1.0,
                ..d()
            },
            fixed_point::Params {
                divergence_factor: f64::NAN,
                ..d()
            },
        ] {
            assert!(invalid(&fp(p.clone())), "{p:?}");
        }
        // A claim of exactly 0 is valid (for J = 0).
        let mut v = Array1::zeros(2);
        let zero = fixed_point::Params {
            contraction: Some(0.0),
            ..d()
        };
        assert!(fixed_point::solve(
            &mut dense_op(&Array2::zeros((2, 2))),
            &b,
            &mut v,
            &zero,
            &mut ()
        )
        .is_ok());
        let c = cg::Params::default;
        assert!(cgs(cg::Params {
            lambda_min: Some(1e-300),
            ..c()
        })
        .is_ok());
        for l in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(
                invalid(&cgs(cg::Params {
                    lambda_min: Some(l),
                    ..c()
                })),
                "{l}"
            );
        }
    }

    /// Inputs: mismatched dimensions and non-finite `b` or `v₀` are typed errors, located.
    #[test]
    fn inputs_are_checked() {
        let a = Array2::<f64>::eye(2) * 0.5;
        let run = |b: Array1<f64>, v0: Array1<f64>, use_cg: bool| {
            let mut v = v0;
            if use_cg {
                cg::solve(
                    &mut dense_op(&a),
                    &b,
                    &mut v,
                    &cg::Params::default(),
                    &mut (),
                )
            } else {
                fixed_point::solve(
                    &mut dense_op(&a),
                    &b,
                    &mut v,
                    &fixed_point::Params::default(),
                    &mut (),
                )
            }
        };
        for use_cg in [false, true] {
            assert!(matches!(
                run(array![1.0, 1.0], array![0.0, 0.0, 0.0], use_cg),
                Err(Error::DimensionMismatch {
                    expected: 2,
                    found: 3,
                    ..
                })
            ));
            assert!(matches!(
                run(array![f64::NAN, 1.0], array![0.0, 0.0], use_cg),
                Err(Error::NonFinite { at: Location::Rhs })
            ));
            assert!(matches!(
                run(array![1.0, 1.0], array![f64::INFINITY, 0.0], use_cg),
                Err(Error::NonFinite {
                    at: Location::InitialGuess
                })
            ));
            assert!(run(array![1.0, 1.0], array![0.0, 0.0], use_cg).is_ok());
        }
    }
}
