//! Property tests of the solvers and the hypergradient against the dense implicit-function
//! formula, on instances the strategies build themselves (see `common`). The number of cases is
//! proptest's default (256) unless `PROPTEST_CASES` says otherwise.
//!
//! Tolerances: a hypergradient error is measured against the *scale* of its terms,
//! `‖∇_λE‖ + ‖∂_λΦ‖·‖v*‖` (a plain relative error is meaningless when the two terms cancel), and
//! every assertion is written `err <= tol` so that NaN fails.

mod common;

use common::*;
use ibau_core::dense::DenseOperator;
use ibau_core::solve::{cg, fixed_point, neumann};
use ibau_core::{
    hypergradient, Certainty, Error, Location, Method, Params, Problem, Recorder, Termination,
};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

type DenseProblem = Problem<Array1<f64>, Array1<f64>, DenseOperator, DenseOperator>;

fn problem(inst: &Linearised) -> DenseProblem {
    Problem {
        jt: DenseOperator::new(inst.jt.clone()),
        cross_t: DenseOperator::new(inst.cross_t.clone()),
        grad_w: inst.grad_w.clone(),
        grad_lambda: inst.grad_lambda.clone(),
    }
}

/// Fixed point to a tolerance tight enough that the certified error is ≤ 1e-9 relative.
fn fp_params(inst: &Linearised) -> Params {
    let kappa = inst.a_max / inst.a_min;
    Params {
        method: Method::FixedPoint(fixed_point::Params {
            max_iter: 2_000_000,
            rel_tol: 1e-9 / kappa,
            ..Default::default()
        }),
        contraction: Some(inst.q),
        symmetric: true,
        cross_norm: Some(inst.cross_norm),
    }
}

fn cg_params(inst: &Linearised) -> Params {
    let kappa = inst.a_max / inst.a_min;
    Params {
        method: Method::ConjugateGradient(cg::Params {
            rel_tol: 1e-9 / kappa,
            max_iter: 10 * inst.grad_w.len() + 50,
            ..Default::default()
        }),
        contraction: Some(inst.q),
        symmetric: true,
        cross_norm: Some(inst.cross_norm),
    }
}

/// The hypergradient matches the dense formula to 1e-8 of its scale, and the certified bound on
/// its error holds.
fn check_matches_dense(inst: &Linearised, params: &Params) -> Result<(), TestCaseError> {
    let mut p = problem(inst);
    let hg = hypergradient(&mut p, params, None, &mut ())
        .map_err(|e| TestCaseError::fail(format!("solver failed: {e}")))?;
    let err = dist(&hg.gradient, &inst.exact);
    prop_assert!(
        err <= 1e-8 * inst.scale,
        "hypergradient error {err:e} > 1e-8·{:e}\n{}",
        inst.scale,
        hg.info
    );
    prop_assert_eq!(hg.info.termination, Termination::Converged);
    let bound = hg
        .error_bound
        .expect("q and cross norm given: a bound is due");
    prop_assert_eq!(bound.certainty, Certainty::Certified);
    // Rounding in the dense reference itself: κ·ε relative.
    let slack = 1e3 * f64::EPSILON * (inst.a_max / inst.a_min) * inst.scale;
    prop_assert!(
        err <= bound.value + slack,
        "bound {:e} below error {err:e}",
        bound.value
    );
    Ok(())
}

macro_rules! matches_dense {
    ($fp:ident, $cg:ident, $strategy:expr) => {
        proptest! {
            #[test]
            fn $fp(inst in $strategy) {
                check_matches_dense(&inst, &fp_params(&inst))?;
            }

            #[test]
            fn $cg(inst in $strategy) {
                check_matches_dense(&inst, &cg_params(&inst))?;
            }
        }
    };
}

matches_dense!(
    fp_matches_dense_on_quadratics,
    cg_matches_dense_on_quadratics,
    quadratic(24, 2.5)
);

proptest! {
    /// CG on condition numbers up to 10³ (fixed point needs O(κ) steps, CG O(√κ)).
    #[test]
    fn cg_matches_dense_on_ill_conditioned_quadratics(inst in quadratic(24, 3.0)) {
        check_matches_dense(&inst, &cg_params(&inst))?;
    }
}
matches_dense!(
    fp_matches_dense_on_ridge,
    cg_matches_dense_on_ridge,
    ridge()
);
matches_dense!(
    fp_matches_dense_on_logistic,
    cg_matches_dense_on_logistic,
    logistic()
);

proptest! {
    /// ‖v_k − v*‖ ≤ q^k ‖v_0 − v*‖ at every iteration, and ‖v_k − v*‖ ≤ q/(1−q)‖v_k − v_{k−1}‖
    /// for every step, from a random warm start.
    #[test]
    fn fixed_point_bounds_hold_at_every_iteration(
        (inst, v0) in quadratic(16, 2.0).prop_flat_map(|i| { let n = i.grad_w.len(); (Just(i), vector(n)) }),
        max_iter in 1usize..400,
    ) {
        let mut rec = Recorder::default();
        let mut v = v0.clone();
        let params = fixed_point::Params {
            max_iter,
            rel_tol: 1e-14,
            contraction: Some(inst.q),
            symmetric: true,
            require_convergence: false,
            ..Default::default()
        };
        let mut jt = DenseOperator::new(inst.jt.clone());
        let info = fixed_point::solve(&mut jt, &inst.grad_w, &mut v, &params, &mut rec).unwrap();
        let e0 = dist(&v0, &inst.v_star);
        let slack = 1e-12 * (norm(&inst.v_star) + e0) * (inst.a_max / inst.a_min);
        for (k, vk) in rec.iterates.iter().enumerate() {
            let k = k + 1;
            let err = dist(vk, &inst.v_star);
            let a_priori = ibau_core::bounds::fixed_point_a_priori(inst.q, k, e0);
            prop_assert!(err <= a_priori + slack, "k={k}: {err:e} > q^k·e0 = {a_priori:e}");
            let step = info.residual_history[k - 1];
            let a_post = ibau_core::bounds::fixed_point_a_posteriori(inst.q, step);
            prop_assert!(err <= a_post + slack, "k={k}: {err:e} > a posteriori {a_post:e}");
        }
        let err = dist(&v, &inst.v_star);
        let bound = info.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        prop_assert!(err <= bound.value + slack, "reported bound {:e} below error {err:e}", bound.value);
    }

    /// ‖v_k − v*‖_A ≤ 2((√κ−1)/(√κ+1))^k ‖v_0 − v*‖_A at every CG iteration, and the certified
    /// a-posteriori bound ‖r‖/λ_min holds at the end.
    #[test]
    fn cg_bounds_hold_at_every_iteration(
        (inst, v0) in quadratic(24, 3.0).prop_flat_map(|i| { let n = i.grad_w.len(); (Just(i), vector(n)) }),
        max_iter in 1usize..60,
    ) {
        let a = Array2::<f64>::eye(inst.grad_w.len()) - &inst.jt;
        let kappa = inst.a_max / inst.a_min;
        let mut rec = Recorder::default();
        let mut v = v0.clone();
        let params = cg::Params {
            max_iter,
            rel_tol: 1e-14,
            lambda_min: Some(inst.a_min),
            require_convergence: false,
            ..Default::default()
        };
        let mut op = DenseOperator::new(a.clone());
        let info = cg::solve(&mut op, &inst.grad_w, &mut v, &params, &mut rec).unwrap();
        let e0 = a_norm(&a, &(&v0 - &inst.v_star));
        let slack = 1e-11 * (a_norm(&a, &inst.v_star) + e0) * kappa;
        for (k, vk) in rec.iterates.iter().enumerate() {
            let k = k + 1;
            let err = a_norm(&a, &(vk - &inst.v_star));
            let bound = ibau_core::bounds::cg_a_priori(kappa, k, e0);
            prop_assert!(err <= bound + slack, "k={k}: ‖e‖_A = {err:e} > {bound:e}");
        }
        let err = dist(&v, &inst.v_star);
        let bound = info.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        prop_assert!(info.residual_verified);
        prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * norm(&inst.v_star) * kappa,
            "reported bound {:e} below error {err:e}", bound.value);
        // The reported residual is the true residual of the returned iterate.
        let r = &inst.grad_w - &a.dot(&v);
        prop_assert!((norm(&r) - info.residual).abs() <= 1e-12 * norm(&inst.grad_w) + 1e-300);
    }

    /// At any tolerance and budget, a certified bound is never below the true error — for the
    /// linear solve and for the hypergradient.
    #[test]
    fn certified_bounds_are_never_below_the_true_error(
        inst in prop_oneof![quadratic(16, 3.0), ridge(), logistic()],
        log_tol in -14.0..-1.0f64,
        budget in 1usize..200,
        use_cg in any::<bool>(),
    ) {
        let method = if use_cg {
            Method::ConjugateGradient(cg::Params {
                rel_tol: 10f64.powf(log_tol), max_iter: budget, require_convergence: false, ..Default::default()
            })
        } else {
            Method::FixedPoint(fixed_point::Params {
                rel_tol: 10f64.powf(log_tol), max_iter: budget, require_convergence: false, ..Default::default()
            })
        };
        let params = Params { method, contraction: Some(inst.q), symmetric: true, cross_norm: Some(inst.cross_norm) };
        let mut p = problem(&inst);
        let hg = hypergradient(&mut p, &params, None, &mut ()).unwrap();
        let kappa = inst.a_max / inst.a_min;
        let v_err = dist(&hg.v, &inst.v_star);
        let v_bound = hg.info.error_bound.unwrap();
        prop_assert!(v_bound.is_certified());
        prop_assert!(v_err <= v_bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&inst.v_star),
            "‖v − v*‖ = {v_err:e} > bound {:e}", v_bound.value);
        let g_err = dist(&hg.gradient, &inst.exact);
        let g_bound = hg.error_bound.unwrap();
        prop_assert!(g_err <= g_bound.value * (1.0 + 1e-9) + 1e-12 * kappa * inst.scale,
            "gradient error {g_err:e} > bound {:e}", g_bound.value);
    }

    /// A fixed-point map with ‖J‖ = ρ(J) > 1 is reported as diverging, never returned.
    #[test]
    fn non_contractive_map_is_reported_as_diverging(
        (others, hh, c) in (2usize..12).prop_flat_map(|n| (
            prop::collection::vec(-0.95..0.95f64, n - 1),
            prop::collection::vec(prop::collection::vec(-1.0..1.0f64, n), n),
            vector(n),
        )),
        q in 1.05..3.0f64,
        negative in any::<bool>(),
        symmetric in any::<bool>(),
    ) {
        let bad = if negative { -q } else { q };
        let mut ev = others.clone();
        ev.push(bad);
        let j = Spectral::new(ev, &hh);
        // b with a component of at least 0.1‖b‖ on the expanding eigenvector.
        let idx = j.eigenvalues.iter().position(|&e| e == bad).unwrap();
        let mut coef = c.clone();
        coef[idx] = 0.5 + coef[idx].abs();
        let b = j.q.dot(&coef);
        let mut op = DenseOperator::new(j.matrix.clone());
        let mut v = Array1::zeros(b.len());
        let params = fixed_point::Params { symmetric, ..Default::default() };
        let res = fixed_point::solve(&mut op, &b, &mut v, &params, &mut ());
        prop_assert!(matches!(res, Err(Error::Diverging { .. })), "fixed point: {res:?}");
        let res = neumann::solve(&mut op, &b, &mut v, &neumann::Params { terms: 60, symmetric, ..Default::default() }, &mut ());
        prop_assert!(matches!(res, Err(Error::Diverging { .. })), "Neumann: {res:?}");
        if !negative {
            // I − J has the eigenvalue 1 − q < 0: CG must report indefiniteness.
            let a = Array2::<f64>::eye(b.len()) - &j.matrix;
            let mut op = DenseOperator::new(a);
            let res = cg::solve(&mut op, &b, &mut v, &cg::Params { rel_tol: 1e-13, ..Default::default() }, &mut ());
            prop_assert!(matches!(res, Err(Error::NotPositiveDefinite { curvature, .. }) if curvature <= 0.0), "CG: {res:?}");
        }
    }

    /// A claimed contraction factor below the true one is caught, never turned into a bound.
    #[test]
    fn a_false_contraction_claim_is_caught(
        (others, hh, c) in (2usize..12).prop_flat_map(|n| (
            prop::collection::vec(-0.5..0.5f64, n - 1),
            prop::collection::vec(prop::collection::vec(-1.0..1.0f64, n), n),
            vector(n),
        )),
        true_q in 0.7..0.99f64,
        claimed_frac in 0.1..0.9f64,
    ) {
        let mut ev = others.clone();
        ev.push(true_q);
        let j = Spectral::new(ev, &hh);
        let idx = j.eigenvalues.iter().position(|&e| e == true_q).unwrap();
        let mut coef = c.clone();
        coef[idx] = 0.5 + coef[idx].abs();
        let b = j.q.dot(&coef);
        let claimed = 0.5 * claimed_frac * true_q;
        let mut op = DenseOperator::new(j.matrix.clone());
        let mut v = Array1::zeros(b.len());
        let params = fixed_point::Params { contraction: Some(claimed), rel_tol: 1e-12, max_iter: 10_000, ..Default::default() };
        let res = fixed_point::solve(&mut op, &b, &mut v, &params, &mut ());
        prop_assert!(matches!(res, Err(Error::ContractionViolated { .. })), "{res:?}");
    }

    /// NaN or ±Inf anywhere in the input gives `NonFinite` with the right location.
    #[test]
    fn non_finite_inputs_give_the_non_finite_error(
        inst in quadratic(8, 1.0),
        which in 0usize..5,
        bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        pos in any::<prop::sample::Index>(),
        use_cg in any::<bool>(),
    ) {
        let mut inst = inst;
        let n = inst.grad_w.len();
        let mut v0 = None;
        let expected = match which {
            0 => { inst.grad_w[pos.index(n)] = bad; Location::Rhs }
            1 => { let mut v = Array1::zeros(n); v[pos.index(n)] = bad; v0 = Some(v); Location::InitialGuess }
            2 => { let i = pos.index(n * n); inst.jt[[i / n, i % n]] = bad; Location::OperatorOutput { iteration: 0 } }
            3 => { let m = inst.grad_lambda.len(); let i = pos.index(m * n); inst.cross_t[[i / n, i % n]] = bad; Location::CrossOutput }
            _ => { let m = inst.grad_lambda.len(); inst.grad_lambda[pos.index(m)] = bad; Location::OuterGradient }
        };
        let method = if use_cg { Method::ConjugateGradient(cg::Params::default()) }
                     else { Method::FixedPoint(fixed_point::Params { max_iter: 100_000, ..Default::default() }) };
        let params = Params { method, contraction: None, symmetric: true, cross_norm: None };
        let mut p = problem(&inst);
        let res = hypergradient(&mut p, &params, v0.as_ref(), &mut ());
        match res {
            Err(Error::NonFinite { at }) => {
                let same_kind = std::mem::discriminant(&at) == std::mem::discriminant(&expected);
                prop_assert!(same_kind, "expected {expected:?}, got {at:?}");
            }
            // A NaN/Inf in J or in the cross operator must surface; a zero direction may hide an
            // entry only if that entry is never multiplied by a non-zero (it is: v ≠ 0 here), so
            // every other outcome is a failure.
            other => prop_assert!(false, "expected NonFinite at {expected:?}, got {other:?}"),
        }
    }
}
