//! Property tests of the performance features: preconditioned CG with each preconditioner,
//! warm starts and preconditioner reuse along a trajectory, and accuracy-driven stopping — each
//! against the dense oracle, with the certified bound checked against the true error. Instances
//! are built by the strategies in `common` (SPD matrices of chosen condition number, bilevel
//! quadratics); every assertion is written `err <= tol` so that NaN fails.

mod common;

use common::*;
use ibau_core::dense::DenseOperator;
use ibau_core::precond::{gaussian_probes, Identity, Jacobi, Nystrom, Preconditioner};
use ibau_core::solve::{cg, pcg};
use ibau_core::warm::Extrapolation;
use ibau_core::{hypergradient_pcg, Params, Problem, Termination};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Identity,
    Jacobi,
    Hutchinson,
    Nystrom(usize),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Identity),
        Just(Kind::Jacobi),
        Just(Kind::Hutchinson),
        (1usize..12).prop_map(Kind::Nystrom),
    ]
}

/// The system matrix `A = I − Jᵀ` of an instance.
fn system(inst: &Linearised) -> Array2<f64> {
    Array2::<f64>::eye(inst.grad_w.len()) - &inst.jt
}

/// A preconditioner of the given kind for `a`, boxed behind the trait.
fn build(kind: Kind, a: &Array2<f64>, seed: u64) -> Box<dyn Preconditioner<Array1<f64>>> {
    let n = a.nrows();
    match kind {
        Kind::Identity => Box::new(Identity),
        Kind::Jacobi => {
            let diag: Vec<f64> = a.diag().to_vec();
            Box::new(Jacobi::from_diagonal(&diag).unwrap())
        }
        Kind::Hutchinson => {
            let mut op = DenseOperator::new(a.clone());
            Box::new(Jacobi::hutchinson(&mut op, n, 8, 1e-3, seed).unwrap())
        }
        Kind::Nystrom(s) => {
            let probes = gaussian_probes(n, s.min(n), seed)
                .into_iter()
                .map(Array1::from)
                .collect();
            let mut op = DenseOperator::new(a.clone());
            Box::new(Nystrom::build(&mut op, probes, 0.0).unwrap())
        }
    }
}

fn dense_problem(
    inst: &Linearised,
) -> Problem<Array1<f64>, Array1<f64>, DenseOperator, DenseOperator> {
    Problem {
        jt: DenseOperator::new(inst.jt.clone()),
        cross_t: DenseOperator::new(inst.cross_t.clone()),
        grad_w: inst.grad_w.clone(),
        grad_lambda: inst.grad_lambda.clone(),
    }
}

fn hg_params(inst: &Linearised) -> Params {
    Params {
        contraction: Some(inst.q),
        symmetric: true,
        cross_norm: Some(inst.cross_norm),
        ..Params::default()
    }
}

proptest! {
    /// PCG with every preconditioner gives the dense hypergradient to 1e-8 of its scale, and the
    /// certified bound (true residual / λ_min of A, not of M⁻¹A) is above the true error.
    #[test]
    fn pcg_matches_dense_with_every_preconditioner(
        inst in prop_oneof![quadratic(24, 3.0), ridge(), logistic()],
        kind in kind(),
        seed in any::<u64>(),
    ) {
        let a = system(&inst);
        let mut m = build(kind, &a, seed);
        let kappa = inst.a_max / inst.a_min;
        let p = pcg::Params {
            rel_tol: 1e-9 / kappa,
            max_iter: 10 * inst.grad_w.len() + 50,
            ..Default::default()
        };
        let mut problem = dense_problem(&inst);
        let hg = hypergradient_pcg(&mut problem, &hg_params(&inst), &p, &mut m, None, &mut ())
            .map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}")))?;
        let err = dist(&hg.gradient, &inst.exact);
        prop_assert!(err <= 1e-8 * inst.scale, "{kind:?}: error {err:e} > 1e-8·{:e}\n{}", inst.scale, hg.info);
        prop_assert_eq!(hg.info.termination, Termination::Converged);
        prop_assert!(hg.info.residual_verified);
        let bound = hg.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        let slack = 1e3 * f64::EPSILON * kappa * inst.scale;
        prop_assert!(err <= bound.value + slack, "{kind:?}: bound {:e} below error {err:e}", bound.value);
        let v_err = dist(&hg.v, &inst.v_star);
        let v_bound = hg.info.error_bound.unwrap().value;
        prop_assert!(v_err <= v_bound * (1.0 + 1e-9) + 1e-13 * kappa * norm(&inst.v_star),
            "{kind:?}: ‖v − v*‖ = {v_err:e} > bound {v_bound:e}");
    }

    /// At any tolerance and budget, with any preconditioner, a certified bound is never below the
    /// true error of `v`.
    #[test]
    fn pcg_certified_bound_holds_at_any_budget(
        inst in quadratic(20, 3.0),
        kind in kind(),
        seed in any::<u64>(),
        log_tol in -14.0..-1.0f64,
        budget in 1usize..60,
    ) {
        let a = system(&inst);
        let mut m = build(kind, &a, seed);
        let p = pcg::Params {
            rel_tol: 10f64.powf(log_tol),
            max_iter: budget,
            lambda_min: Some(inst.a_min),
            require_convergence: false,
            ..Default::default()
        };
        let mut op = DenseOperator::new(a.clone());
        let mut v = Array1::zeros(inst.grad_w.len());
        let info = pcg::solve(&mut op, &mut m, &inst.grad_w, &mut v, &p, &mut ()).unwrap();
        let bound = info.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        prop_assert!(info.residual_verified);
        let kappa = inst.a_max / inst.a_min;
        let err = dist(&v, &inst.v_star);
        prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&inst.v_star),
            "{kind:?}: error {err:e} > bound {:e}", bound.value);
        // The reported residual is the true residual of the returned iterate.
        let r = &inst.grad_w - &a.dot(&v);
        prop_assert!((norm(&r) - info.residual).abs() <= 1e-12 * norm(&inst.grad_w) + 1e-300);
    }

    /// Along a trajectory `A₀ + μ_t I`: one Nyström sketch of `A₀` reused through `set_shift`, warm
    /// starts by extrapolation of order 0–2; every solve matches the dense solution and its certified
    /// bound holds, and the report says that the warm start and the reuse happened.
    #[test]
    fn warm_started_reused_trajectory_matches_dense(
        h in spd(20, 3.0),
        b in prop::collection::vec(-1.0..1.0f64, 20),
        mu0 in 1e-3..1.0f64,
        step in -0.2..0.2f64,
        sketch in 1usize..10,
        order in 0usize..=2,
        seed in any::<u64>(),
    ) {
        let n = h.n();
        let b = Array1::from(b[..n].to_vec());
        let probes = gaussian_probes(n, sketch.min(n), seed).into_iter().map(Array1::from).collect();
        let mu_at = |t: usize| mu0 * (step * t as f64).exp();
        let mut a0 = DenseOperator::new(h.matrix.clone() + Array2::<f64>::eye(n) * mu_at(0));
        // Sketch A − μ₀I = H (positive semi-definite).
        let mut ny = Nystrom::build(&mut a0, probes, mu_at(0)).unwrap();
        let mut history = Extrapolation::with_order(order);
        for t in 0..4 {
            let mu = mu_at(t);
            if t > 0 {
                ny.set_shift(mu).unwrap();
            }
            let a = h.matrix.clone() + Array2::<f64>::eye(n) * mu;
            let exact = ibau_core::dense::solve(&a, &b).unwrap();
            let lambda_min = h.min() + mu;
            let p = pcg::Params { rel_tol: 1e-12, lambda_min: Some(lambda_min), ..Default::default() };
            let mut v = history.guess(mu.ln()).unwrap_or_else(|| Array1::zeros(n));
            let mut op = DenseOperator::new(a.clone());
            let info = pcg::solve(&mut op, &mut ny, &b, &mut v, &p, &mut ()).unwrap();
            prop_assert_eq!(info.warm_started, t > 0);
            prop_assert_eq!(info.preconditioner.as_ref().unwrap().reused, t > 0);
            let err = dist(&v, &exact);
            let kappa = (h.max() + mu) / lambda_min;
            prop_assert!(err <= 1e-10 * kappa * norm(&exact) + 1e-300, "t={t}: error {err:e}");
            let bound = info.error_bound.unwrap();
            prop_assert!(bound.is_certified());
            prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&exact),
                "t={t}: bound {:e} below error {err:e}", bound.value);
            history.push(mu.ln(), &v);
        }
    }

    /// Accuracy-driven stopping: asked for a hypergradient error ε, the solve stops with the
    /// certified bound ≤ ε, and the error against the dense formula is ≤ ε.
    #[test]
    fn accuracy_driven_stop_meets_the_target(
        inst in prop_oneof![quadratic(24, 3.0), ridge()],
        kind in kind(),
        seed in any::<u64>(),
        log_rel in -10.0..-2.0f64,
    ) {
        prop_assume!(inst.cross_norm > 0.0);
        let a = system(&inst);
        let mut m = build(kind, &a, seed);
        let target = 10f64.powf(log_rel) * inst.scale;
        let p = pcg::Params {
            target_error: Some(target),
            max_iter: 10 * inst.grad_w.len() + 50,
            ..Default::default()
        };
        let mut problem = dense_problem(&inst);
        let hg = hypergradient_pcg(&mut problem, &hg_params(&inst), &p, &mut m, None, &mut ())
            .map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}")))?;
        prop_assert_eq!(hg.info.termination, Termination::ErrorTarget);
        let bound = hg.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        prop_assert!(bound.value <= target * (1.0 + 1e-12), "bound {:e} > target {target:e}", bound.value);
        let err = dist(&hg.gradient, &inst.exact);
        let slack = 1e3 * f64::EPSILON * (inst.a_max / inst.a_min) * inst.scale;
        prop_assert!(err <= target + slack, "{kind:?}: error {err:e} > target {target:e}");
    }
}

/// On a spectrum with fast decay (`λ_k = 10³ k^{−2} + 0.1`, κ ≈ 10⁴), a rank-40 Nyström
/// preconditioner cuts CG's iteration count by more than half (counts, not times).
#[test]
fn nystrom_reduces_iterations_on_fast_spectral_decay() {
    let n = 300;
    let householder = gaussian_probes(n, n, 11);
    let eig: Vec<f64> = (1..=n).map(|k| 1e3 / (k * k) as f64 + 0.1).collect();
    let h = Spectral::new(eig, &householder);
    let b = Array1::from(gaussian_probes(n, 1, 12).remove(0));
    let lambda_min = 0.1;
    let cg_params = cg::Params {
        rel_tol: 1e-10,
        lambda_min: Some(lambda_min),
        ..Default::default()
    };
    let mut op = DenseOperator::new(h.matrix.clone());
    let mut v = Array1::zeros(n);
    let plain = cg::solve(&mut op, &b, &mut v, &cg_params, &mut ()).unwrap();
    let probes = gaussian_probes(n, 40, 13)
        .into_iter()
        .map(Array1::from)
        .collect();
    let mut ny = Nystrom::build(&mut op, probes, 0.0).unwrap();
    let p = pcg::Params {
        rel_tol: 1e-10,
        lambda_min: Some(lambda_min),
        ..Default::default()
    };
    let mut w = Array1::zeros(n);
    let pre = pcg::solve(&mut op, &mut ny, &b, &mut w, &p, &mut ()).unwrap();
    assert!(
        2 * pre.iterations <= plain.iterations,
        "PCG-Nyström {} iterations vs CG {}",
        pre.iterations,
        plain.iterations
    );
    // Exact solution from the spectral decomposition the instance was built from (no LAPACK:
    // its LU on this size needs more stack than a test thread has).
    let coef = h.q.t().dot(&b) / &Array1::from(h.eigenvalues.clone());
    let exact = h.q.dot(&coef);
    let err = dist(&w, &exact);
    assert!(
        err <= pre.error_bound.unwrap().value * (1.0 + 1e-9) + 1e-12 * norm(&exact),
        "{err:e}"
    );
}
