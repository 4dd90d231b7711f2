//! Conjugate gradient (AID-CG) for `A v = b` with `A` symmetric positive definite; in a
//! hypergradient `A = I − Jᵀ` (see [`crate::operator::IdentityMinus`]).
//!
//! # Requirements
//! `A` symmetric positive definite. A direction with `pᵀAp ≤ 0` proves `A` is not positive
//! definite and gives [`Error::NotPositiveDefinite`] (the solver never divides by it).
//!
//! # Bounds (derived in `proofs::cg`)
//! * a priori: `‖v_k − v*‖_A ≤ 2((√κ − 1)/(√κ + 1))^k ‖v_0 − v*‖_A`, κ = λ_max/λ_min
//!   ([`crate::bounds::cg_a_priori`]); in exact arithmetic CG terminates within `n` steps;
//! * a posteriori: `‖v_k − v*‖ ≤ ‖b − A v_k‖ / λ_min(A)`. Reported as *certified* when the caller
//!   gives `lambda_min ≤ λ_min(A)` and the residual was recomputed from scratch
//!   (`verify_residual`, one extra application); otherwise the smallest Ritz value stands in for
//!   λ_min and the bound is an *estimate* (Ritz values over-estimate λ_min);
//! * a posteriori, tighter (with `gauss_radau` and `lambda_min`): the Gauss–Radau upper bound on
//!   `‖v_k − v*‖_A` from CG's coefficients with the node `(1 − 10⁻⁴)·lambda_min`
//!   ([`crate::bounds::gauss_radau_next`], [`crate::bounds::gauss_radau_node`], derived in
//!   `proofs::gauss_radau`), plus the measured
//!   drift of the recursive residual, divided by `√lambda_min`; the reported bound is the smaller
//!   of the two (as in [`crate::solve::pcg`], whose documentation states it in full).
//!
//! For the symmetric gradient-descent map with `‖J‖ ≤ q < 1`, the eigenvalues of `I − J` lie in
//! `[1 − q, 1 + q]`: `λ_min ≥ 1 − q` and `κ ≤ (1 + q)/(1 − q)`.
//!
//! Source: Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 5 (Thm. 5.1, eq. 5.36);
//! Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., §6.7.3 (CG–Lanczos relation);
//! Meurant & Tichý, Numer. Algorithms 82 (2019) (the Gauss–Radau bound).
//!
//! # Returned iterate
//! The iterate whose residual met the tolerance — never an earlier one. When the recursive
//! residual meets the tolerance and `verify_residual` is set, the true residual `b − A v` is
//! recomputed; if rounding made them drift apart, CG restarts from the true residual (at most
//! `max_restarts` times).

use crate::bounds::{gauss_radau_error, gauss_radau_next, gauss_radau_node, gauss_radau_start};
use crate::error::{Error, Location, Result};
use crate::lanczos;
use crate::observer::{IterationState, Observer};
use crate::operator::{apply_checked, Operator};
use crate::report::{Bound, Info, SolverKind, Termination};
use crate::solve::pcg::verify_residual;
use crate::solve::{check_inputs, tolerance};
use crate::vector::Vector;

/// Parameters of conjugate gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Maximum number of CG iterations (verification applications not counted).
    pub max_iter: usize,
    /// Absolute tolerance on `‖b − A v‖`.
    pub abs_tol: f64,
    /// Tolerance relative to `‖b‖`.
    pub rel_tol: f64,
    /// A certified lower bound on λ_min(A), `> 0`; makes the error bound certified.
    pub lambda_min: Option<f64>,
    /// Recompute `b − A v` once the recursive residual meets the tolerance (one application).
    pub verify_residual: bool,
    /// Restarts allowed when the recomputed residual misses the tolerance; past them the solve has
    /// stagnated at the rounding floor ([`Error::NotConverged`], or [`Termination::Stagnated`]
    /// when `require_convergence` is `false`).
    pub max_restarts: usize,
    /// If `false`, running out of iterations (or stagnating) returns the last iterate with
    /// [`Termination::MaxIterations`] (or [`Termination::Stagnated`]) instead of
    /// [`Error::NotConverged`].
    pub require_convergence: bool,
    /// Tighten the certified bound with the Gauss–Radau estimate of `‖v − v*‖_A` when
    /// `lambda_min` is given (module documentation); `false` keeps the residual bound alone.
    pub gauss_radau: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_iter: 1000,
            abs_tol: 0.0,
            rel_tol: 1e-10,
            lambda_min: None,
            verify_residual: true,
            max_restarts: 3,
            require_convergence: true,
            gauss_radau: true,
        }
    }
}

fn validate(params: &Params) -> Result<()> {
    if let Some(l) = params.lambda_min {
        if !(l.is_finite() && l > 0.0) {
            return Err(Error::InvalidParameter {
                name: "lambda_min",
                value: l,
                reason: "must be finite and > 0",
            });
        }
    }
    Ok(())
}

/// Solves `A v = b` by conjugate gradient. `a` applies `v ↦ A v`; `x` is the initial guess on
/// entry and the solution on exit.
///
/// # Errors
/// [`Error::NotPositiveDefinite`], [`Error::NotConverged`], [`Error::NonFinite`],
/// [`Error::DimensionMismatch`], [`Error::InvalidParameter`], or the operator's own error.
pub fn solve<V, O, Obs>(
    a: &mut O,
    b: &V,
    x: &mut V,
    params: &Params,
    observer: &mut Obs,
) -> Result<Info>
where
    V: Vector,
    O: Operator<V> + ?Sized,
    Obs: Observer<V> + ?Sized,
{
    validate(params)?;
    check_inputs(b, x)?;
    let tol = tolerance(params.abs_tol, params.rel_tol, b.norm())?;

    let mut applications = 0usize;
    let warm_started = x.norm() != 0.0;
    let mut ap = x.zeros_like();
    let mut r = b.clone();
    if x.norm() != 0.0 {
        apply_checked(a, x, &mut ap, 0)?;
        applications += 1;
        r.axpy(-1.0, &ap);
    }
    let mut r_norm = r.norm();
    let mut verified = true;
    let mut history = vec![r_norm];
    // The search direction is kept at unit norm, p_k = s·d_k, so that dᵀAd is a Rayleigh
    // quotient: it cannot underflow to 0 (and be mistaken for negative curvature) when the
    // residual becomes tiny, nor overflow when it is huge.
    let mut p = r.clone();
    let mut p_scale = r_norm;
    if p_scale > 0.0 {
        normalize(&mut p, p_scale);
    }
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut record_lanczos = true;
    let mut restarts = 0usize;
    let mut k = 0usize;
    // Gauss–Radau with the node λ_min: γ̃_k (None while unavailable) and the drift of the
    // recursive residual measured at the last recomputation.
    let gr_node = params
        .lambda_min
        .filter(|_| params.gauss_radau)
        .and_then(gauss_radau_node);
    let mut gt = gr_node.and_then(gauss_radau_start);
    let mut gap = 0.0f64;
    // ‖r_rec‖ of the recursion the quadrature belongs to (the true residual overwrites r_norm).
    let mut r_norm_rec = r_norm;

    let termination = loop {
        if !r_norm.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: k },
            });
        }
        if r_norm <= tol {
            if verified || !params.verify_residual {
                break Termination::Converged;
            }
            (r_norm, gap) = verify_residual(a, b, x, &mut r, &mut ap, k, gt.is_some())?;
            applications += 1;
            verified = true;
            if let Some(last) = history.last_mut() {
                *last = r_norm;
            }
            if r_norm <= tol {
                break Termination::Converged;
            }
            // A fresh Krylov process from the true residual: the quadrature starts over.
            gt = gr_node.and_then(gauss_radau_start);
            gap = 0.0;
            r_norm_rec = r_norm;
            // The recursive residual drifted away from the true one: restart from the truth.
            restarts += 1;
            if restarts > params.max_restarts {
                // The true residual is stuck at the rounding floor above the tolerance.
                if params.require_convergence {
                    return Err(Error::NotConverged {
                        iterations: k,
                        residual: r_norm,
                        tolerance: tol,
                    });
                }
                break Termination::Stagnated;
            }
            p.copy_from(&r);
            p_scale = r_norm;
            normalize(&mut p, p_scale);
            record_lanczos = false;
            continue;
        }
        if k >= params.max_iter {
            break Termination::MaxIterations;
        }
        apply_checked(a, &p, &mut ap, k + 1)?;
        applications += 1;
        // Rayleigh quotient of the unit direction.
        let curvature = p.dot(&ap);
        if curvature.is_nan() || curvature.is_infinite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: k + 1 },
            });
        }
        if curvature <= 0.0 {
            return Err(Error::NotPositiveDefinite {
                iteration: k + 1,
                curvature,
            });
        }
        // Textbook α = ‖r‖²/(pᵀAp) with p = s·d; the step along d is α·s. Both are formed from
        // the ratio ‖r‖/s ≤ 1 so that neither overflows nor underflows early.
        let ratio = r_norm / p_scale;
        let alpha = ratio * ratio / curvature;
        let step = ratio * r_norm / curvature;
        x.axpy(step, &p);
        // One pass: the residual update and its norm.
        let r_new = r.axpy_norm(-step, &ap);
        // r_norm > tol ≥ 0 here, so the ratio is defined.
        let beta = (r_new / r_norm) * (r_new / r_norm);
        gt = match (gt, gr_node) {
            (Some(g), Some(mu)) if r_new > 0.0 => gauss_radau_next(g, alpha, beta, mu),
            _ => None,
        };
        if record_lanczos {
            alphas.push(alpha);
            betas.push(beta);
        }
        // p_{k+1} = r_{k+1} + β p_k = r_{k+1} + β s d_k, then renormalised.
        p.axpby(1.0, &r, beta * p_scale);
        p_scale = p.norm();
        if !(p_scale.is_finite() && p_scale > 0.0) {
            if r_new == 0.0 {
                // Exact solution: the direction is irrelevant.
                p_scale = 1.0;
            } else {
                return Err(Error::NonFinite {
                    at: Location::Iterate { iteration: k + 1 },
                });
            }
        } else {
            normalize(&mut p, p_scale);
        }
        r_norm = r_new;
        r_norm_rec = r_new;
        verified = false;
        k += 1;
        history.push(r_norm);
        observer.on_iteration(&IterationState {
            solver: SolverKind::ConjugateGradient,
            iteration: k,
            residual: r_norm,
            operator_applications: applications,
            iterate: &*x,
        });
    };

    if termination == Termination::MaxIterations {
        if params.verify_residual && !verified {
            (r_norm, gap) = verify_residual(a, b, x, &mut r, &mut ap, k, gt.is_some())?;
            applications += 1;
            verified = true;
            if let Some(last) = history.last_mut() {
                *last = r_norm;
            }
        }
        if params.require_convergence {
            return Err(Error::NotConverged {
                iterations: k,
                residual: r_norm,
                tolerance: tol,
            });
        }
    }

    // The recursive residual can stay finite while the iterate overflows (found by the
    // `solvers` fuzz target: b = x₀ = f64::MAX, no verification); never return it as a result.
    if !x.is_finite() {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: k },
        });
    }
    let spectrum = lanczos::ritz_extremes(&alphas, &betas);
    // The residual bound, or the Gauss–Radau one where it is available and smaller.
    let with_gr = |l: f64| {
        let residual_bound = r_norm / l;
        gt.map_or(residual_bound, |g| {
            gauss_radau_error(g, r_norm_rec, gap, l).min(residual_bound)
        })
    };
    let error_bound = match (params.lambda_min, spectrum) {
        (Some(l), _) if verified => Some(Bound::certified(with_gr(l))),
        (Some(l), _) => Some(Bound::estimated(with_gr(l))),
        (None, Some(s)) if s.lambda_min > 0.0 => Some(Bound::estimated(r_norm / s.lambda_min)),
        _ => None,
    };
    let info = Info {
        solver: SolverKind::ConjugateGradient,
        iterations: k,
        operator_applications: applications,
        residual: r_norm,
        residual_history: history,
        residual_verified: verified,
        tolerance: tol,
        termination,
        error_bound,
        contraction: None,
        spectrum,
        restarts,
        warm_started,
        preconditioner: None,
        timing: None,
    };
    observer.on_finish(&info);
    Ok(info)
}

/// `p ← p / norm` for `norm > 0`, also when `1/norm` overflows (subnormal norms).
fn normalize<V: Vector>(p: &mut V, norm: f64) {
    let inv = 1.0 / norm;
    if inv.is_finite() {
        p.scale(inv);
    } else {
        let root = norm.sqrt();
        p.scale(1.0 / root);
        p.scale(1.0 / root);
    }
}
