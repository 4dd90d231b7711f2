//! The Gauss–Radau upper bound on CG's A-norm error, which tightens the certified bound of
//! preconditioned CG ([`ibau_core::solve::pcg`]).
//!
//! # Statement
//! Let `A` and `M` be symmetric positive definite, `v_k` the iterates of preconditioned CG for
//! `Av = b` (`M = I`: plain CG), `r_k = b − Av_k`, `z_k = M⁻¹r_k`, `ρ_k = r_kᵀz_k`, its step
//! lengths `γ_k = ρ_k/p_kᵀAp_k` and direction coefficients `δ_{k+1} = ρ_{k+1}/ρ_k`. For a node
//! `0 < μ ≤ λ_min(M⁻¹A)` define `γ̃_0 = 1/μ` and
//! `γ̃_{k+1} = (γ̃_k − γ_k)/(μ(γ̃_k − γ_k) + δ_{k+1})` ([`ibau_core::bounds::gauss_radau_next`]).
//! Then, in exact arithmetic, for every `k` before termination:
//!
//! 1. **Upper bound**: `‖v_k − v*‖²_A ≤ γ̃_k ρ_k`.
//! 2. **Never looser than the residual bound**: `γ̃_k ≤ 1/μ`, so `γ̃_k ρ_k ≤ ρ_k/μ`; for `M = I`
//!    and `μ = λ_min(A)` this is `‖r_k‖²/λ_min`, the square of the A-norm form of the residual
//!    bound `‖e_k‖_A ≤ ‖r_k‖/√λ_min`.
//! 3. **Exactness** (tightness): if `μ` is an eigenvalue of `M⁻¹A` and `r_0` has components on
//!    exactly `k + 1` eigenvectors of `M^{-1/2}AM^{-1/2}` (one of them `μ`'s), the bound is an
//!    equality at step `k`.
//!
//! With `λ_min(A) ≥ l` and `λ_min(M⁻¹) ≥ s` the node `μ = l·s` is admissible
//! ([`ibau_core::precond::Preconditioner::inverse_lower_bound`]), and `‖v − v*‖ ≤ ‖v − v*‖_A/√l`
//! turns 1 into the Euclidean bound the solver reports.
//!
//! # Derivation
//! PCG is CG on `Â = L⁻¹AL⁻ᵀ` (`M = LLᵀ`) with `ê = Lᵀe`, `‖ê‖_Â = ‖e‖_A` and `‖r̂‖² = ρ`, with the
//! same `γ_k, δ_k`; so it suffices to take `M = I`. With `ω` the spectral measure of `r_0`
//! (weights `(q_iᵀr_0)²` at the eigenvalues `λ_i`), `‖e_0‖²_A = ∫λ⁻¹dω(λ)`, and CG's `k` steps are
//! the `k`-node Gauss rule for it: `‖e_k‖²_A = ∫λ⁻¹dω − ‖r_0‖²[T_k⁻¹]₁₁` (Golub & Meurant 2010,
//! §12.3; Strakoš & Tichý 2002, eq. (3.9)), with `T_k` the Lanczos tridiagonal that `γ` and `δ`
//! define. The `(k+1)`-node Gauss–Radau rule with the node fixed at `μ ≤ λ_min` has remainder
//! `f^{(2k+1)}(η)/(2k+1)! · ∫(λ − μ)Π_j(λ − τ_j)² dω` for `f(λ) = λ⁻¹`; the integral is `≥ 0`
//! and `f^{(2k+1)} < 0`, so the rule over-estimates: `∫λ⁻¹dω ≤ ‖r_0‖²[T̃_{k+1}⁻¹]₁₁`, where
//! `T̃_{k+1}` is `T_{k+1}` with its last diagonal entry changed so that `μ` is an eigenvalue.
//! Writing the difference of the two `(1,1)` entries through the `LDLᵀ` factors of `T̃` gives
//! `‖r_0‖²([T̃_{k+1}⁻¹]₁₁ − [T_k⁻¹]₁₁) = γ̃_k‖r_k‖²`, and the recurrence for `γ̃` (Meurant &
//! Tichý 2019, §3, recalled and checked here against the dense error). 2 follows from the
//! recurrence: `x/(μx + δ) < 1/μ` for `x, δ > 0`. 3: the measure then has `k + 1` points, one at
//! `μ`, and the Gauss–Radau rule with `k + 1` nodes, one fixed at `μ`, integrates it exactly.
//!
//! In floating point the bound is used by the solver against the recursive residual, with the gap
//! to the true residual added (see the solver's documentation), and with the node a relative
//! `10⁻⁴` below the caller's lower bound ([`ibau_core::bounds::GAUSS_RADAU_NODE_MARGIN`]): the
//! coefficients of finite-precision CG are those of exact CG for a measure with points in small
//! intervals around the eigenvalues (Greenbaum 1989), so a node exactly at `λ_min` is not below
//! all of them, and the bound failed (by up to 1.6×) once a small Krylov space was exhausted —
//! found by test 2 below, whose seed is kept in `proptest-regressions/gauss_radau.txt`. Statement
//! 3 is about exact arithmetic and is tested on the textbook recurrence with the exact node, on
//! well-separated spectra. The tests below run κ up to 10⁶.
//!
//! # Sources
//! G. Meurant, P. Tichý, *Approximating the extreme Ritz values and upper bounds for the A-norm
//! of the error in CG*, Numer. Algorithms 82 (2019); G. H. Golub, G. Meurant, *Matrices, Moments
//! and Quadrature with Applications*, Princeton 2010, ch. 6 and 12; Z. Strakoš, P. Tichý, *On
//! error estimation in the conjugate gradient method and why it works in finite precision
//! computations*, ETNA 13 (2002). Equation numbers recalled.

#[cfg(test)]
mod tests {
    use crate::instances::{a_norm, dist, norm, Spectral};
    use crate::strategies::{householder, spd, vector};
    use ibau_core::bounds::gauss_radau_next;
    use ibau_core::dense::{self, DenseOperator};
    use ibau_core::precond::{Identity, Jacobi, Preconditioner};
    use ibau_core::solve::{cg, pcg};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    /// Textbook PCG (Saad, Alg. 9.1) from 0 with `M = diag(m)`, returning per step
    /// `(‖e_k‖_A, γ̃_k ρ_k, ρ_k)` for the node `mu`, until `k = steps` or the residual vanishes.
    fn pcg_with_gauss_radau(
        a: &Array2<f64>,
        b: &Array1<f64>,
        m: &Array1<f64>,
        mu: f64,
        steps: usize,
    ) -> Vec<(f64, Option<f64>, f64)> {
        let v_star = dense::solve(a, b).unwrap();
        let mut x = Array1::zeros(b.len());
        let mut r = b.clone();
        let mut z = &r / m;
        let mut p = z.clone();
        let mut rho = r.dot(&z);
        let mut gt = Some(1.0 / mu);
        let mut out = Vec::new();
        for _ in 0..=steps {
            out.push((a_norm(a, &(&x - &v_star)), gt.map(|g: f64| g * rho), rho));
            if rho <= 1e-30 * b.dot(b) {
                break;
            }
            let ap = a.dot(&p);
            let gamma = rho / p.dot(&ap);
            x.scaled_add(gamma, &p);
            r.scaled_add(-gamma, &ap);
            z = &r / m;
            let rho_new = r.dot(&z);
            let delta = rho_new / rho;
            gt = gt.and_then(|g| gauss_radau_next(g, gamma, delta, mu));
            p = &z + &(&p * delta);
            rho = rho_new;
        }
        out
    }

    /// λ_min of `M^{-1/2} A M^{-1/2}` for diagonal `M = diag(m)`.
    fn preconditioned_min(a: &Array2<f64>, m: &Array1<f64>) -> f64 {
        let s = m.mapv(|x| 1.0 / x.sqrt());
        let n = a.nrows();
        let scaled = Array2::from_shape_fn((n, n), |(i, j)| s[i] * a[(i, j)] * s[j]);
        dense::symmetric_eigenvalues(&scaled).unwrap()[0]
    }

    proptest! {
        /// 1 and 2 at every step, for κ up to 10⁶, any node `μ ∈ [10⁻³, 1]·λ_min`, plain CG and
        /// Jacobi-preconditioned CG, until the residual reaches 10⁻⁸‖b‖ (beyond, rounding
        /// dominates the dense error itself).
        #[test]
        fn gauss_radau_bounds_the_a_norm_error_at_every_step(
            (a, b) in spd(2, 24, 6.0).prop_flat_map(|a| { let n = a.n(); (Just(a), vector(n)) }),
            log_node in -3.0..=0.0f64,
            jacobi in any::<bool>(),
        ) {
            let n = a.n();
            prop_assume!(norm(&b) > 1e-3);
            let m = if jacobi { a.matrix.diag().to_owned() } else { Array1::ones(n) };
            let lmin = if jacobi { preconditioned_min(&a.matrix, &m) } else { a.min() };
            let mu = lmin * 10f64.powf(log_node);
            let v_star = dense::solve(&a.matrix, &b).unwrap();
            let kappa = a.max() / a.min();
            let slack = 1e-13 * kappa * a_norm(&a.matrix, &v_star);
            let rho0 = b.dot(&(&b / &m));
            for (k, (err_a, bound, rho)) in pcg_with_gauss_radau(&a.matrix, &b, &m, mu, 3 * n).into_iter().enumerate() {
                if rho < 1e-16 * rho0 {
                    break;
                }
                // Rounding may switch the bound off (solver: fall back to the residual bound).
                let Some(bound) = bound else { break };
                prop_assert!(err_a <= bound.sqrt() * (1.0 + 1e-8) + slack,
                    "k={k}: ‖e‖_A = {err_a:e} > Gauss–Radau {:e}", bound.sqrt());
                prop_assert!(bound <= rho / mu * (1.0 + 1e-12),
                    "k={k}: Gauss–Radau {bound:e} > ρ/μ = {:e}", rho / mu);
            }
        }

        /// The solver's reported bound: certified, above the true error, and never above the
        /// residual bound `‖r‖/λ_min` it reports without Gauss–Radau — at any budget and
        /// tolerance, κ up to 10⁶, plain and Jacobi.
        #[test]
        fn pcg_reports_the_tighter_bound_and_it_holds(
            (a, b) in spd(2, 24, 6.0).prop_flat_map(|a| { let n = a.n(); (Just(a), vector(n)) }),
            log_tol in -12.0..-1.0f64,
            budget in 1usize..60,
            jacobi in any::<bool>(),
        ) {
            let n = a.n();
            let v_star = dense::solve(&a.matrix, &b).unwrap();
            let kappa = a.max() / a.min();
            let run = |gauss_radau: bool| {
                let mut m: Box<dyn Preconditioner<Array1<f64>>> = if jacobi {
                    Box::new(Jacobi::from_diagonal(&a.matrix.diag().to_vec()).unwrap())
                } else {
                    Box::new(Identity)
                };
                let p = pcg::Params {
                    rel_tol: 10f64.powf(log_tol),
                    max_iter: budget,
                    lambda_min: Some(a.min()),
                    require_convergence: false,
                    gauss_radau,
                    ..Default::default()
                };
                let mut v = Array1::zeros(n);
                let mut op = DenseOperator::new(a.matrix.clone());
                let info = pcg::solve(&mut op, &mut m, &b, &mut v, &p, &mut ()).unwrap();
                (v, info)
            };
            let (v, info) = run(true);
            let (v_plain, plain) = run(false);
            prop_assert_eq!(&v, &v_plain);
            let bound = info.error_bound.unwrap();
            let residual_bound = plain.error_bound.unwrap();
            prop_assert!(bound.is_certified() && residual_bound.is_certified());
            prop_assert!(bound.value <= residual_bound.value,
                "Gauss–Radau {:e} > residual bound {:e}", bound.value, residual_bound.value);
            let err = dist(&v, &v_star);
            prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&v_star),
                "error {err:e} > bound {:e}", bound.value);
            // Plain CG (`solve::cg`, its own recurrences) reports the same kind of bound.
            let cg_run = |gauss_radau: bool| {
                let p = cg::Params {
                    rel_tol: 10f64.powf(log_tol),
                    max_iter: budget,
                    lambda_min: Some(a.min()),
                    require_convergence: false,
                    gauss_radau,
                    ..Default::default()
                };
                let mut v = Array1::zeros(n);
                let mut op = DenseOperator::new(a.matrix.clone());
                let info = cg::solve(&mut op, &b, &mut v, &p, &mut ()).unwrap();
                (v, info.error_bound.unwrap())
            };
            let ((v, bound), (_, residual_bound)) = (cg_run(true), cg_run(false));
            prop_assert!(bound.is_certified() && bound.value <= residual_bound.value,
                "CG: Gauss–Radau {:e} vs residual bound {:e}", bound.value, residual_bound.value);
            let err = dist(&v, &v_star);
            prop_assert!(err <= bound.value * (1.0 + 1e-9) + 1e-13 * kappa * norm(&v_star),
                "CG: error {err:e} > bound {:e}", bound.value);
        }

        /// 3: a spectrum of `k + 1` points with `μ = λ_min` among them: after `k` steps the
        /// bound equals the error (to rounding). Exactness is a property of exact arithmetic:
        /// in floating point it holds as long as the computed Krylov basis stays orthogonal,
        /// which needs the eigenvalues well separated. The strategy therefore spaces them on a
        /// log scale with gaps between ½ and 1½ times the mean (adjacent ratio ≥ κ^{1/(3k)}).
        /// Clustered spectra (found by CI on 2026-12-04, ratio 1.07 at κ = 10⁴: the large
        /// eigenvalue's Ritz value converges, orthogonality is lost, and the computed
        /// coefficients describe a measure with more than `k + 1` points) keep the upper bound
        /// (test 1) but not the equality.
        #[test]
        fn gauss_radau_is_exact_on_k_plus_one_eigenvalues(
            k in 1usize..6,
            log_kappa in 0.5..4.0f64,
            gaps in prop::collection::vec(0.5..1.5f64, 6),
            hh in householder(7),
            coef in prop::collection::vec(0.2..1.0f64, 7),
        ) {
            let kappa = 10f64.powf(log_kappa);
            let total: f64 = gaps[..k].iter().sum();
            let mut ev = vec![1.0, kappa];
            ev.extend((1..k).map(|i| kappa.powf(gaps[..i].iter().sum::<f64>() / total)));
            let hh: Vec<Vec<f64>> = hh[..=k].iter().map(|h| h[..=k].to_vec()).collect();
            let a = Spectral::new(&ev, &hh);
            let b = a.from_eigen_coordinates(&Array1::from(coef[..=k].to_vec()));
            let steps = pcg_with_gauss_radau(&a.matrix, &b, &Array1::ones(k + 1), 1.0, k);
            prop_assume!(steps.len() > k);
            let (err_a, bound, _) = steps[k];
            let bound = bound.expect("the recurrence stays positive on a well-separated spectrum").sqrt();
            let scale = a_norm(&a.matrix, &dense::solve(&a.matrix, &b).unwrap());
            prop_assert!((bound - err_a).abs() <= 1e-6 * bound + 1e-12 * kappa * scale,
                "k={k}: Gauss–Radau {bound:e} vs ‖e_k‖_A = {err_a:e}");
        }
    }

    /// The point of the bound: on a log-spread spectrum with κ = 10³ (n = 200, seeded), CG's
    /// reported certified bound with Gauss–Radau is at least 2× tighter than the residual bound
    /// at every tolerance from 10⁻² to 10⁻¹⁰ (measured: about 3–5×).
    #[test]
    fn gauss_radau_is_several_times_tighter_than_the_residual_bound() {
        let n = 200;
        let ev: Vec<f64> = (0..n)
            .map(|i| 1e3f64.powf(i as f64 / (n - 1) as f64))
            .collect();
        let hh: Vec<Vec<f64>> = (0..4)
            .map(|i| {
                (0..n)
                    .map(|j| (((i * 31 + j * 17) % 13) as f64 - 6.0) / 6.0)
                    .collect()
            })
            .collect();
        let a = Spectral::new(&ev, &hh);
        let b = Array1::from_shape_fn(n, |i| ((i * 7919) % 101) as f64 / 50.0 - 1.0);
        for e in 2..=10 {
            let bounds: Vec<f64> = [true, false]
                .iter()
                .map(|&gauss_radau| {
                    let p = pcg::Params {
                        rel_tol: 10f64.powi(-e),
                        lambda_min: Some(1.0),
                        gauss_radau,
                        ..Default::default()
                    };
                    let mut v = Array1::zeros(n);
                    let mut op = DenseOperator::new(a.matrix.clone());
                    let info = pcg::solve(&mut op, &mut Identity, &b, &mut v, &p, &mut ()).unwrap();
                    info.error_bound.unwrap().value
                })
                .collect();
            assert!(
                bounds[0] * 2.0 <= bounds[1],
                "tol 1e-{e}: Gauss–Radau {:e}, residual bound {:e}",
                bounds[0],
                bounds[1]
            );
        }
    }
}
