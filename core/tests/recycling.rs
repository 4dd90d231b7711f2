//! Property tests of deflated CG with Krylov-subspace recycling (`solve::deflated_cg`) along
//! sequences of nearby SPD systems: every solve matches the dense oracle, its certified bound is
//! above the true error, the operator applications it reports are those it made, the recycled
//! Ritz values lie in the spectrum, and an indefinite or non-finite operator is an error.
//! Instances are SPD matrices of chosen condition number built by `common::spd`; assertions are
//! written `err <= tol` so that NaN fails.

mod common;

use common::*;
use ibau_core::dense::DenseOperator;
use ibau_core::precond::{Identity, Jacobi, Preconditioner};
use ibau_core::solve::cg;
use ibau_core::solve::deflated_cg::{self, RecycleSpace, Ritz};
use ibau_core::{Error, Operator, Termination};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

/// A dense operator that counts its applications.
struct Counting {
    op: DenseOperator,
    count: usize,
}

impl Operator<Array1<f64>> for Counting {
    fn apply(&mut self, x: &Array1<f64>, out: &mut Array1<f64>) -> ibau_core::Result<()> {
        self.count += 1;
        self.op.apply(x, out)
    }
}

/// A symmetric perturbation `E` with `‖E‖₂ ≤ ‖E‖_F ≤ 1` from entries in `[−1, 1]`.
fn perturbation(n: usize, entries: &[f64]) -> Array2<f64> {
    let e = Array2::from_shape_fn((n, n), |(i, j)| entries[(i * n + j) % entries.len()]);
    let s = (&e + &e.t()) * 0.5;
    let f = s.iter().map(|v| v * v).sum::<f64>().sqrt();
    if f > 0.0 {
        s / f
    } else {
        s
    }
}

fn keep() -> impl Strategy<Value = Ritz> {
    prop_oneof![Just(Ritz::Smallest), Just(Ritz::Largest)]
}

proptest! {
    /// Along `A_t = H + μ_t I + ε_t E` (shifts declared through `RecycleSpace::shift` when
    /// `ε = 0`, otherwise `AW` recomputed) with nearby right-hand sides, with or without a Jacobi
    /// preconditioner and with the recycle space carried between solves: every solve matches
    /// the dense solution, its certified bound is above the true error, the reported operator
    /// applications are the ones counted, and the recycle space's applications are `k` exactly
    /// when it was not declared current.
    #[test]
    fn recycled_sequence_matches_dense(
        h in spd(20, 3.0),
        b0 in prop::collection::vec(-1.0..1.0f64, 20),
        db in prop::collection::vec(-1.0..1.0f64, 20),
        e_entries in prop::collection::vec(-1.0..1.0f64, 1..40),
        mu0 in 1e-3..1.0f64,
        step in -0.1..0.1f64,
        eps in prop_oneof![Just(0.0), 1e-4..1e-2f64],
        recycle in 1usize..6,
        stored in 1usize..12,
        keep in keep(),
        jacobi in any::<bool>(),
        warm in any::<bool>(),
    ) {
        let n = h.n();
        let e = perturbation(n, &e_entries) * h.min();
        let mut space = RecycleSpace::new();
        let mut x_prev: Option<Array1<f64>> = None;
        let mut mu_prev = mu0;
        for t in 0..5 {
            let mu = mu0 * (step * t as f64).exp();
            let a = &h.matrix + &(Array2::<f64>::eye(n) * mu) + &(&e * (eps * t as f64));
            // ‖εtE‖ ≤ 4·1e-2·λ_min(H): A stays SPD with λ_min ≥ 0.96·λ_min(H) + μ.
            let lambda_min = 0.95 * h.min() + mu;
            let lambda_max = h.max() + mu + 0.05 * h.min();
            let b = Array1::from_shape_fn(n, |i| b0[i] + 0.01 * t as f64 * db[i]);
            let exact = ibau_core::dense::solve(&a, &b).unwrap();
            if t > 0 && eps == 0.0 {
                space.shift(mu - mu_prev).unwrap();
            }
            let k_before = space.len();
            let declared = t > 0 && eps == 0.0;
            let p = deflated_cg::Params {
                rel_tol: 1e-12,
                lambda_min: Some(lambda_min),
                max_iter: 20 * n + 50,
                recycle,
                stored_directions: stored,
                keep,
                ..Default::default()
            };
            let mut x = match (&x_prev, warm) {
                (Some(x), true) => x.clone(),
                _ => Array1::zeros(n),
            };
            let mut op = Counting { op: DenseOperator::new(a.clone()), count: 0 };
            let mut m: Box<dyn Preconditioner<Array1<f64>>> = if jacobi {
                Box::new(Jacobi::from_diagonal(&a.diag().to_vec()).unwrap())
            } else {
                Box::new(Identity)
            };
            let info = deflated_cg::solve(&mut op, &mut m, &b, &mut x, &mut space, &p, &mut ())
                .map_err(|err| TestCaseError::fail(format!("t={t}: {err}")))?;
            prop_assert_eq!(info.termination, Termination::Converged);
            prop_assert!(info.residual_verified);
            prop_assert_eq!(info.operator_applications, op.count);
            let rep = space.report().clone();
            prop_assert_eq!(rep.deflated, k_before);
            prop_assert_eq!(rep.applications, if declared { 0 } else { k_before });
            prop_assert!(space.len() <= recycle);
            let kappa = lambda_max / lambda_min;
            let err = dist(&x, &exact);
            prop_assert!(err <= 1e-10 * kappa * norm(&exact) + 1e-300,
                "t={t}: error {err:e} (κ ≈ {kappa:e})\n{info}");
            let bound = info.error_bound.unwrap();
            prop_assert!(bound.is_certified());
            prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&exact),
                "t={t}: bound {:e} below error {err:e}", bound.value);
            // The reported residual is the true residual of the returned iterate.
            let r = &b - &a.dot(&x);
            prop_assert!((norm(&r) - info.residual).abs() <= 1e-12 * norm(&b) + 1e-300);
            x_prev = Some(x);
            mu_prev = mu;
        }
    }

    /// At any tolerance and iteration budget, after a recycle space has been built on a nearby
    /// system, a certified bound is never below the true error of the returned iterate.
    #[test]
    fn recycled_certified_bound_holds_at_any_budget(
        h in spd(20, 3.0),
        b in prop::collection::vec(-1.0..1.0f64, 20),
        mu in 1e-3..1.0f64,
        dmu in -0.5..0.5f64,
        log_tol in -14.0..-1.0f64,
        budget in 1usize..40,
        recycle in 1usize..8,
    ) {
        let n = h.n();
        let b = Array1::from(b[..n].to_vec());
        let mut space = RecycleSpace::new();
        let a0 = &h.matrix + &(Array2::<f64>::eye(n) * mu);
        let p0 = deflated_cg::Params { rel_tol: 1e-6, lambda_min: Some(h.min() + mu), recycle,
            max_iter: 10 * n, ..Default::default() };
        let mut x = Array1::zeros(n);
        deflated_cg::solve(&mut DenseOperator::new(a0), &mut Identity, &b, &mut x, &mut space,
            &p0, &mut ()).unwrap();
        let mu1 = mu * (1.0 + dmu);
        space.shift(mu1 - mu).unwrap();
        let a1 = &h.matrix + &(Array2::<f64>::eye(n) * mu1);
        let exact = ibau_core::dense::solve(&a1, &b).unwrap();
        let p = deflated_cg::Params {
            rel_tol: 10f64.powf(log_tol),
            max_iter: budget,
            lambda_min: Some(h.min() + mu1),
            require_convergence: false,
            recycle,
            ..Default::default()
        };
        let mut x = Array1::zeros(n);
        let info = deflated_cg::solve(&mut DenseOperator::new(a1.clone()), &mut Identity, &b,
            &mut x, &mut space, &p, &mut ()).unwrap();
        let bound = info.error_bound.unwrap();
        prop_assert!(bound.is_certified());
        let kappa = (h.max() + mu1) / (h.min() + mu1);
        let err = dist(&x, &exact);
        prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&exact),
            "error {err:e} > bound {:e}", bound.value);
    }

    /// The recycled vectors are Ritz vectors of the operator they were extracted from: their
    /// Ritz values lie in `[λ_min, λ_max]`, and `WᵀW = I` up to rounding.
    #[test]
    fn recycled_ritz_values_lie_in_the_spectrum(
        h in spd(20, 4.0),
        b in prop::collection::vec(-1.0..1.0f64, 20),
        recycle in 1usize..8,
        stored in 1usize..16,
        keep in keep(),
    ) {
        let n = h.n();
        let b = Array1::from(b[..n].to_vec());
        let mut space = RecycleSpace::new();
        let p = deflated_cg::Params { rel_tol: 1e-10, max_iter: 20 * n + 50, recycle,
            stored_directions: stored, keep, ..Default::default() };
        for _ in 0..3 {
            let mut x = Array1::zeros(n);
            deflated_cg::solve(&mut DenseOperator::new(h.matrix.clone()), &mut Identity, &b,
                &mut x, &mut space, &p, &mut ()).unwrap();
            space.mark_current();
            let tol = 1e-9 * h.max();
            for &theta in space.ritz_values() {
                prop_assert!(theta >= h.min() - tol && theta <= h.max() + tol,
                    "Ritz value {theta:e} outside [{:e}, {:e}]", h.min(), h.max());
            }
            let w = space.vectors();
            for i in 0..w.len() {
                for j in 0..w.len() {
                    let g = w[i].dot(&w[j]);
                    let want = if i == j { 1.0 } else { 0.0 };
                    prop_assert!((g - want).abs() <= 1e-6, "WᵀW[{i},{j}] = {g:e}");
                }
            }
        }
    }

    /// A negative definite operator after a recycle space was built is an error
    /// (`NotPositiveDefinite`), never a result; so is one from an empty space.
    #[test]
    fn recycled_indefinite_operator_is_an_error(
        h in spd(12, 2.0),
        b in prop::collection::vec(-1.0..1.0f64, 12),
        with_space in any::<bool>(),
    ) {
        let n = h.n();
        let b = Array1::from(b[..n].to_vec());
        prop_assume!(norm(&b) > 1e-3);
        let mut space = RecycleSpace::new();
        let p = deflated_cg::Params { rel_tol: 1e-8, max_iter: 10 * n + 10, recycle: 3,
            ..Default::default() };
        if with_space {
            let mut x = Array1::zeros(n);
            deflated_cg::solve(&mut DenseOperator::new(h.matrix.clone()), &mut Identity, &b,
                &mut x, &mut space, &p, &mut ()).unwrap();
        }
        let neg = -&h.matrix;
        let mut x = Array1::zeros(n);
        let res = deflated_cg::solve(&mut DenseOperator::new(neg), &mut Identity, &b, &mut x,
            &mut space, &p, &mut ());
        prop_assert!(matches!(res, Err(Error::NotPositiveDefinite { .. })), "{res:?}");
    }
}

/// An operator that returns NaN is `NonFinite`, whether it is met refreshing the recycle space
/// or in an iteration.
#[test]
fn recycled_nan_operator_is_an_error() {
    let n = 6;
    let a = Array2::from_diag(&Array1::from_shape_fn(n, |i| 1.0 + i as f64));
    let b = Array1::from_elem(n, 1.0);
    let mut space = RecycleSpace::new();
    let p = deflated_cg::Params {
        recycle: 2,
        ..Default::default()
    };
    let mut x = Array1::zeros(n);
    deflated_cg::solve(
        &mut DenseOperator::new(a),
        &mut Identity,
        &b,
        &mut x,
        &mut space,
        &p,
        &mut (),
    )
    .unwrap();
    assert_eq!(space.len(), 2);
    for _ in 0..2 {
        let mut nan = |_: &Array1<f64>, out: &mut Array1<f64>| out.fill(f64::NAN);
        let mut x = Array1::zeros(n);
        let res = deflated_cg::solve(&mut nan, &mut Identity, &b, &mut x, &mut space, &p, &mut ());
        assert!(matches!(res, Err(Error::NonFinite { .. })), "{res:?}");
        // Second round: an empty space, the NaN is met in the first iteration.
        space = RecycleSpace::new();
    }
}

/// On the 2-D Laplacian plus a shift (small isolated eigenvalues whose eigenvectors do not
/// depend on the shift), along 8 shifts declared through `RecycleSpace::shift`, recycling 8
/// Ritz vectors needs at most 3/4 of plain CG's iterations over the sequence after the first
/// solve, at the same tolerance (counts, not times), and each solve's bound holds.
#[test]
fn recycling_reduces_iterations_on_a_shifted_laplacian() {
    let m = 24;
    let n = m * m;
    let laplacian = Array2::from_shape_fn((n, n), |(p, q)| {
        let (i, j, k, l) = (p / m, p % m, q / m, q % m);
        if p == q {
            4.0
        } else if (i == k && j.abs_diff(l) == 1) || (j == l && i.abs_diff(k) == 1) {
            -1.0
        } else {
            0.0
        }
    });
    let lmin = 4.0 - 4.0 * (std::f64::consts::PI / (m as f64 + 1.0)).cos();
    let b = Array1::from_shape_fn(n, |i| ((i * 7919) % 101) as f64 / 101.0 - 0.5);
    let mut space = RecycleSpace::new();
    let (mut plain_total, mut recycled_total) = (0usize, 0usize);
    let mut mu_prev = 1e-3;
    for t in 0..8 {
        let mu = 1e-3 * (-0.05 * t as f64).exp();
        let a = &laplacian + &(Array2::<f64>::eye(n) * mu);
        let mut op = DenseOperator::new(a.clone());
        let lambda_min = lmin + mu;
        let cg_p = cg::Params {
            rel_tol: 1e-10,
            lambda_min: Some(lambda_min),
            max_iter: 5000,
            ..Default::default()
        };
        let mut v = Array1::zeros(n);
        let plain = cg::solve(&mut op, &b, &mut v, &cg_p, &mut ()).unwrap();
        if t > 0 {
            space.shift(mu - mu_prev).unwrap();
        }
        let p = deflated_cg::Params {
            rel_tol: 1e-10,
            lambda_min: Some(lambda_min),
            max_iter: 5000,
            recycle: 8,
            stored_directions: 24,
            ..Default::default()
        };
        let mut x = Array1::zeros(n);
        let info = deflated_cg::solve(&mut op, &mut Identity, &b, &mut x, &mut space, &p, &mut ())
            .unwrap();
        let err = dist(&x, &v);
        assert!(
            err <= info.error_bound.unwrap().value + plain.error_bound.unwrap().value,
            "t={t}: {err:e}"
        );
        if t > 0 {
            plain_total += plain.iterations;
            recycled_total += info.iterations;
        }
        mu_prev = mu;
    }
    eprintln!("recycled {recycled_total} iterations, plain CG {plain_total}");
    assert!(
        4 * recycled_total <= 3 * plain_total,
        "recycled {recycled_total} iterations vs plain CG {plain_total}"
    );
}
