//! Unit tests of solver behaviour on small, hand-built systems.

use ibau_core::dense::DenseOperator;
use ibau_core::solve::{cg, fixed_point, neumann};
use ibau_core::{Error, Fallible, Recorder, Termination, Vector};
use ndarray::{array, Array1, Array2};

fn counting(
    m: Array2<f64>,
    count: &std::cell::Cell<usize>,
) -> impl FnMut(&Array1<f64>, &mut Array1<f64>) + '_ {
    move |x, out| {
        count.set(count.get() + 1);
        out.assign(&m.dot(x));
    }
}

#[test]
fn neumann_k_equals_fixed_point_k_plus_one_steps_from_zero() {
    let j = array![[0.3, 0.1, 0.0], [0.1, -0.2, 0.05], [0.0, 0.05, 0.4]];
    let b = array![1.0, -2.0, 0.5];
    for k in 0..8 {
        let mut nv = Array1::from_elem(3, f64::NAN);
        let info = neumann::solve(
            &mut DenseOperator::new(j.clone()),
            &b,
            &mut nv,
            &neumann::Params {
                terms: k,
                ..Default::default()
            },
            &mut (),
        )
        .unwrap();
        assert_eq!(info.operator_applications, k);
        // Explicit series Σ_{i=0..k} (Jᵀ)^i b.
        let mut term = b.clone();
        let mut series = b.clone();
        for _ in 0..k {
            term = j.dot(&term);
            series += &term;
        }
        let diff = (&nv - &series)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(diff <= 1e-15, "K={k}: {diff:e}");
        let mut fv = Array1::zeros(3);
        let p = fixed_point::Params {
            max_iter: k + 1,
            rel_tol: 0.0,
            require_convergence: false,
            ..Default::default()
        };
        fixed_point::solve(&mut DenseOperator::new(j.clone()), &b, &mut fv, &p, &mut ()).unwrap();
        assert_eq!(fv, nv, "K={k}");
    }
}

#[test]
fn fixed_point_first_step_from_zero_is_free() {
    let count = std::cell::Cell::new(0);
    let j = Array2::<f64>::eye(2) * 0.5;
    let b = array![1.0, 1.0];
    let mut v = Array1::zeros(2);
    let p = fixed_point::Params {
        max_iter: 1,
        require_convergence: false,
        ..Default::default()
    };
    let info = fixed_point::solve(&mut counting(j, &count), &b, &mut v, &p, &mut ()).unwrap();
    assert_eq!(count.get(), 0);
    assert_eq!(info.operator_applications, 0);
    assert_eq!(v, b);
}

#[test]
fn cg_terminates_within_n_steps_and_returns_the_converged_iterate() {
    let a = array![[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
    let b = array![1.0, 2.0, 3.0];
    let mut v = Array1::zeros(3);
    let mut rec = Recorder::default();
    let info = cg::solve(
        &mut DenseOperator::new(a.clone()),
        &b,
        &mut v,
        &cg::Params {
            rel_tol: 1e-14,
            ..Default::default()
        },
        &mut rec,
    )
    .unwrap();
    assert_eq!(info.termination, Termination::Converged);
    assert!(info.iterations <= 3, "{info}");
    // The returned iterate is the last one recorded, and its true residual meets the tolerance.
    assert_eq!(&v, rec.iterates.last().unwrap());
    let r = &b - &a.dot(&v);
    assert!(r.dot(&r).sqrt() <= info.tolerance);
    assert!(info.residual_verified);
    // With all n steps taken, the Ritz values are the eigenvalues.
    let ev = ibau_core::dense::symmetric_eigenvalues(&a).unwrap();
    let s = info.spectrum.unwrap();
    assert!((s.lambda_min - ev[0]).abs() <= 1e-10, "{s:?} vs {ev}");
    assert!((s.lambda_max - ev[2]).abs() <= 1e-10, "{s:?} vs {ev}");
}

#[test]
fn cg_on_zero_rhs_returns_zero_without_nan() {
    let a = Array2::<f64>::eye(3);
    let b = Array1::zeros(3);
    let mut v = Array1::zeros(3);
    let info = cg::solve(
        &mut DenseOperator::new(a),
        &b,
        &mut v,
        &cg::Params::default(),
        &mut (),
    )
    .unwrap();
    assert_eq!(info.iterations, 0);
    assert_eq!(info.operator_applications, 0);
    assert!(v.is_finite() && v.norm() == 0.0);
    assert!(info.residual == 0.0);
}

#[test]
fn cg_reports_negative_curvature_instead_of_dividing() {
    let a = array![[1.0, 0.0], [0.0, -1.0]];
    let b = array![1.0, 1.0]; // pᵀAp = 0 at the first step
    let mut v = Array1::zeros(2);
    match cg::solve(
        &mut DenseOperator::new(a),
        &b,
        &mut v,
        &cg::Params::default(),
        &mut (),
    ) {
        Err(Error::NotPositiveDefinite {
            iteration: 1,
            curvature,
        }) => assert!(curvature <= 0.0),
        other => panic!("{other:?}"),
    }
    assert!(v.is_finite());
}

#[test]
fn cg_max_iter_is_an_error_unless_allowed() {
    let a = Array2::from_diag(&array![1.0, 10.0, 100.0, 1000.0]);
    let b = array![1.0, 1.0, 1.0, 1.0];
    let mut v = Array1::zeros(4);
    let p = cg::Params {
        max_iter: 2,
        ..Default::default()
    };
    match cg::solve(&mut DenseOperator::new(a.clone()), &b, &mut v, &p, &mut ()) {
        Err(Error::NotConverged {
            iterations: 2,
            residual,
            tolerance,
        }) => assert!(residual > tolerance),
        other => panic!("{other:?}"),
    }
    let p = cg::Params {
        max_iter: 2,
        require_convergence: false,
        lambda_min: Some(1.0),
        ..Default::default()
    };
    let mut v = Array1::zeros(4);
    let info = cg::solve(&mut DenseOperator::new(a.clone()), &b, &mut v, &p, &mut ()).unwrap();
    assert_eq!(info.termination, Termination::MaxIterations);
    // The residual is recomputed (one extra application) so the bound is certified.
    assert_eq!(info.operator_applications, 3);
    assert!(info.error_bound.unwrap().is_certified());
}

#[test]
fn dimension_mismatch_and_bad_parameters_are_typed_errors() {
    let a = Array2::<f64>::eye(3);
    let b = Array1::ones(3);
    let mut v = Array1::zeros(2);
    assert!(matches!(
        cg::solve(
            &mut DenseOperator::new(a.clone()),
            &b,
            &mut v,
            &cg::Params::default(),
            &mut ()
        ),
        Err(Error::DimensionMismatch { .. })
    ));
    let mut v = Array1::zeros(3);
    for (abs_tol, rel_tol) in [
        (-1.0, 0.0),
        (f64::NAN, 0.0),
        (0.0, f64::INFINITY),
        (0.0, -1e-3),
    ] {
        let p = cg::Params {
            abs_tol,
            rel_tol,
            ..Default::default()
        };
        assert!(matches!(
            cg::solve(&mut DenseOperator::new(a.clone()), &b, &mut v, &p, &mut ()),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let p = fixed_point::Params {
        contraction: Some(f64::NAN),
        ..Default::default()
    };
    assert!(matches!(
        fixed_point::solve(
            &mut DenseOperator::new(a.clone() * 0.5),
            &b,
            &mut v,
            &p,
            &mut ()
        ),
        Err(Error::InvalidParameter {
            name: "contraction",
            ..
        })
    ));
    // An operator that resizes its output is caught.
    let mut bad = |_: &Array1<f64>, out: &mut Array1<f64>| *out = Array1::zeros(5);
    let mut v = Array1::ones(3);
    assert!(matches!(
        fixed_point::solve(
            &mut bad,
            &b,
            &mut v,
            &fixed_point::Params::default(),
            &mut ()
        ),
        Err(Error::DimensionMismatch { .. })
    ));
}

#[test]
fn operator_errors_are_propagated() {
    let mut failing = Fallible(|_: &Vec<f64>, _: &mut Vec<f64>| -> Result<(), String> {
        Err("device lost".into())
    });
    let b = vec![1.0, 2.0];
    let mut v = vec![0.0, 0.0];
    match cg::solve(&mut failing, &b, &mut v, &cg::Params::default(), &mut ()) {
        Err(Error::Operator(e)) => assert_eq!(e.to_string(), "device lost"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fixed_point_without_claim_reports_an_estimate_not_a_certificate() {
    let j = Array2::from_diag(&array![0.5, 0.25]);
    let b = array![1.0, 1.0];
    let mut v = Array1::zeros(2);
    let info = fixed_point::solve(
        &mut DenseOperator::new(j),
        &b,
        &mut v,
        &fixed_point::Params::default(),
        &mut (),
    )
    .unwrap();
    let q = info.contraction.unwrap();
    assert!(!q.is_certified());
    assert!((q.value - 0.5).abs() <= 1e-6, "{q:?}");
    assert!(!info.error_bound.unwrap().is_certified());
}

#[test]
fn f32_storage_solves_to_f32_accuracy() {
    let a: Array2<f64> = array![[3.0, 1.0], [1.0, 2.0]];
    let a32 = a.mapv(|x| x as f32);
    let b = Array1::from(vec![1.0f32, -1.0]);
    let mut v = Array1::<f32>::zeros(2);
    let mut op = |x: &Array1<f32>, out: &mut Array1<f32>| out.assign(&a32.dot(x));
    let info = cg::solve(
        &mut op,
        &b,
        &mut v,
        &cg::Params {
            rel_tol: 1e-6,
            ..Default::default()
        },
        &mut (),
    )
    .unwrap();
    assert_eq!(info.termination, Termination::Converged);
    let exact = ibau_core::dense::solve(&a, &array![1.0, -1.0]).unwrap();
    for i in 0..2 {
        assert!((f64::from(v[i]) - exact[i]).abs() <= 1e-5);
    }
}

/// Found by the proofs crate: a fixed budget with zero tolerance on an SPD system drove the
/// residual into the subnormal range, pᵀAp underflowed to 0 and CG reported a false
/// `NotPositiveDefinite` with curvature 0/0. The direction is now kept at unit norm.
#[test]
fn cg_past_convergence_with_zero_tolerance_stays_ok() {
    for scale in [1.0, 1e-150, 1e150] {
        let a = Array2::from_diag(&array![1.0, 2.0, 3.0]);
        let b = array![1.0, 1.0, 1.0] * scale;
        let mut v = Array1::zeros(3);
        let params = cg::Params {
            max_iter: 100,
            rel_tol: 0.0,
            require_convergence: false,
            ..Default::default()
        };
        let info = cg::solve(
            &mut DenseOperator::new(a.clone()),
            &b,
            &mut v,
            &params,
            &mut (),
        )
        .unwrap_or_else(|e| panic!("scale {scale:e}: {e:?}"));
        let exact = array![1.0, 0.5, 1.0 / 3.0] * scale;
        let err = (&v - &exact).mapv(f64::abs).fold(0.0f64, |m, &x| m.max(x));
        assert!(
            err <= 1e-15 * scale,
            "scale {scale:e}: error {err:e}\n{info}"
        );
        assert!(info.residual.is_finite());
    }
}

/// Found by the `solvers` fuzz target (fuzz/regressions/solvers/crash-9370…): with
/// b = x₀ = f64::MAX and no residual verification, the recursive residual stayed finite while
/// the iterate overflowed, and CG returned `Ok` with an infinite iterate.
#[test]
fn cg_never_returns_an_overflowed_iterate() {
    let mut x = array![f64::MAX];
    let r = cg::solve(
        &mut DenseOperator::new(array![[0.65625]]),
        &array![f64::MAX],
        &mut x,
        &cg::Params {
            max_iter: 99,
            rel_tol: 0.0,
            verify_residual: false,
            max_restarts: 0,
            require_convergence: false,
            ..Default::default()
        },
        &mut (),
    );
    assert!(
        matches!(r, Err(Error::NonFinite { .. })),
        "{r:?} with iterate {x:?}"
    );
}

/// Found by the `pcg` fuzz target (fuzz/regressions/pcg/crash-2cf8…): with a target error and
/// `verify_residual = false`, PCG reported `ErrorTarget` ("certified error target met") on an
/// estimated bound. A target now always verifies the residual.
#[test]
fn pcg_error_target_is_always_certified() {
    use ibau_core::precond::Jacobi;
    use ibau_core::solve::pcg;
    let a = array![[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
    let b = array![1.0, -2.0, 0.5];
    let mut x = Array1::zeros(3);
    let mut m = Jacobi::from_diagonal(&[4.0, 3.0, 2.0]).unwrap();
    let info = pcg::solve(
        &mut DenseOperator::new(a.clone()),
        &mut m,
        &b,
        &mut x,
        &pcg::Params {
            lambda_min: Some(1.0),
            target_error: Some(1e-6),
            verify_residual: false,
            ..Default::default()
        },
        &mut (),
    )
    .unwrap();
    assert_eq!(info.termination, Termination::ErrorTarget);
    let bound = info.error_bound.unwrap();
    assert!(bound.is_certified() && info.residual_verified, "{info:?}");
    assert!(bound.value <= 1e-6);
    let exact = ibau_core::dense::solve(&a, &b).unwrap();
    let err = (&x - &exact).mapv(|v| v * v).sum().sqrt();
    assert!(err <= bound.value, "error {err} > bound {}", bound.value);
}

/// Found by the `pcg` fuzz target (fuzz/regressions/pcg/crash-3dfb…): a subnormal
/// `error_scale` made the residual threshold representable but the reported bound `‖r‖/λ_min`
/// infinite, with `ErrorTarget` claimed. Such parameters are now refused.
#[test]
fn pcg_refuses_unrepresentable_error_targets() {
    use ibau_core::precond::Identity;
    use ibau_core::solve::pcg;
    for (target, scale, lambda_min) in [
        (2.0, 5.56e-309, 1e-300),
        (1e-300, 1e300, 1.0),
        (1e300, 1e-300, 1e300),
    ] {
        let mut x = Array1::zeros(1);
        let r = pcg::solve(
            &mut DenseOperator::new(array![[1.0]]),
            &mut Identity,
            &array![1.0],
            &mut x,
            &pcg::Params {
                lambda_min: Some(lambda_min),
                target_error: Some(target),
                error_scale: scale,
                ..Default::default()
            },
            &mut (),
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidParameter {
                    name: "target_error",
                    ..
                })
            ),
            "{target} {scale} {lambda_min}: {r:?}"
        );
    }
}

/// Found by the `pcg` fuzz target (fuzz/regressions/pcg/crash-279f…): as for CG, PCG could
/// return `Ok` with an overflowed iterate when the residual was not verified.
#[test]
fn pcg_never_returns_an_overflowed_iterate() {
    use ibau_core::precond::Identity;
    use ibau_core::solve::pcg;
    let mut x = array![f64::MAX];
    let r = pcg::solve(
        &mut DenseOperator::new(array![[0.65625]]),
        &mut Identity,
        &array![f64::MAX],
        &mut x,
        &pcg::Params {
            max_iter: 99,
            rel_tol: 0.0,
            verify_residual: false,
            max_restarts: 0,
            require_convergence: false,
            ..Default::default()
        },
        &mut (),
    );
    assert!(
        matches!(r, Err(Error::NonFinite { .. })),
        "{r:?} with iterate {x:?}"
    );
}

#[test]
fn zero_cross_norm_gives_an_exact_bound_even_when_the_solve_bound_is_infinite() {
    // Fuzz regression (fuzz/regressions/hypergradient/crash-c41369bf…): c = 0 times an infinite
    // bound on ‖v − v*‖ was reported as a certified NaN.
    use ibau_core::hypergradient::{hypergradient, Method, Params, Problem};
    let j = Array2::from_diag(&array![0.5, 0.25]);
    let mut problem = Problem {
        jt: DenseOperator::new(j),
        cross_t: DenseOperator::new(Array2::<f64>::zeros((1, 2))),
        grad_w: array![1e308, 1e308],
        grad_lambda: array![2.0],
    };
    let params = Params {
        method: Method::FixedPoint(fixed_point::Params {
            max_iter: 0,
            require_convergence: false,
            ..fixed_point::Params::default()
        }),
        contraction: Some(0.875),
        symmetric: true,
        cross_norm: Some(0.0),
    };
    let hg = hypergradient(&mut problem, &params, None, &mut ()).unwrap();
    assert!(hg.info.error_bound.unwrap().value.is_infinite());
    let bound = hg.error_bound.unwrap();
    assert!(bound.is_certified());
    assert!(bound.value == 0.0, "{bound:?}");
    assert!((hg.gradient[0] - 2.0).abs() <= 0.0);
}
