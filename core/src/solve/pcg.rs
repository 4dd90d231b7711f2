//! Preconditioned conjugate gradient for `A v = b`, `A` symmetric positive definite, with a
//! pluggable [`Preconditioner`], warm starts, and accuracy-driven stopping.
//!
//! # Requirements
//! `A` and the preconditioner `M` symmetric positive definite. A direction with `pᵀAp ≤ 0` is
//! [`Error::NotPositiveDefinite`]; `rᵀM⁻¹r ≤ 0` for `r ≠ 0` proves `M` indefinite and is
//! [`Error::InvalidParameter`] (`preconditioner`). Neither is ever divided by.
//!
//! # Bounds
//! * a priori: `‖v_k − v*‖_A ≤ 2((√κ̃ − 1)/(√κ̃ + 1))^k ‖v_0 − v*‖_A` with `κ̃ = κ(M⁻¹A)`
//!   (PCG is CG on `M^{-1/2}AM^{-1/2}`);
//! * a posteriori: `‖v − v*‖ ≤ ‖b − Av‖/λ_min(A)` — of `A`, not of `M⁻¹A`, with the Euclidean norm
//!   of the *true* residual, recomputed from scratch before the solve reports it (one extra
//!   application). Certified when the caller gives `lambda_min ≤ λ_min(A)`; preconditioning does
//!   not enter it, so any `M` keeps it valid;
//! * a posteriori, tighter (Gauss–Radau, with `gauss_radau`, when `lambda_min` is given and the
//!   preconditioner knows `s ≤ λ_min(M⁻¹)`, [`Preconditioner::inverse_lower_bound`]): with the
//!   node `μ = (1 − 10⁻⁴)·lambda_min·s < λ_min(M⁻¹A)` ([`crate::bounds::gauss_radau_node`]; the
//!   margin is for floating point, below), the recurrence `γ̃_0 = 1/μ`,
//!   `γ̃_{k+1} = (γ̃_k − γ_k)/(μ(γ̃_k − γ_k) + δ_{k+1})` over PCG's step lengths `γ_k` and
//!   direction coefficients `δ_{k+1}` gives `‖v_k − v*‖²_A ≤ γ̃_k·r_kᵀz_k` in exact arithmetic
//!   (the Gauss–Radau quadrature rule for the Stieltjes integral that `‖e_k‖²_A` is, with a node
//!   fixed at μ). It is used against the recursive residual; the gap `g = ‖r_true − r_rec‖`, measured
//!   when the residual is recomputed, enters as `‖r_true‖_{A⁻¹} ≤ ‖r_rec‖_{A⁻¹} + g/√λ_min`, so
//!   `‖v − v*‖ ≤ (√(γ̃_k·r_kᵀz_k) + g/√λ_min)/√λ_min`. The reported bound is the smaller of the
//!   two; the Gauss–Radau one is typically several times tighter (the residual bound pays
//!   `‖r‖/√λ_min ≥ ‖e‖_A` on top). Floating point: the coefficients of finite-precision CG are
//!   those of exact CG on a nearby larger matrix whose spectrum lies in tiny intervals around
//!   that of `A` (Greenbaum 1989), which is why such quadrature bounds stay valid up to the
//!   attainable accuracy (Strakoš & Tichý 2002) — provided the node lies below those intervals,
//!   which the relative margin `10⁻⁴` ensures while `ε·κ·n ≪ 10⁻⁴` (a node exactly at
//!   `λ_min` gave a bound 10 % below the error once the Krylov space was exhausted, see
//!   [`crate::bounds::GAUSS_RADAU_NODE_MARGIN`]); the gap term covers the drift of the recursive
//!   residual, and a rounding that breaks `γ̃_k > γ_k` switches the bound off for the rest of
//!   the run (until a restart). Checked against the dense error by property tests
//!   (`core/tests/performance.rs`, `proofs::cg`).
//!
//! # Stopping
//! By default, as every solver here: `‖b − Av‖ ≤ max(abs_tol, rel_tol·‖b‖)`. With
//! `target_error = Some(ε)` (needs `lambda_min`) the tolerances are ignored and the solve stops
//! at the first iterate whose certified bound `error_scale · ‖b − Av‖/λ_min ≤ ε`, i.e. at the
//! residual `ε·λ_min/error_scale`: the requested accuracy, and no more. In a hypergradient
//! `error_scale = c ≥ ‖∂_λΦ‖` makes ε a bound on the hypergradient's error
//! ([`crate::hypergradient::hypergradient_pcg`]).
//!
//! # Warm start
//! A non-zero `x` on entry is the initial guess (one application for its residual); along a
//! trajectory of nearby systems, the previous solution and a reused preconditioner
//! ([`crate::precond::Nystrom::set_shift`]) save most of the work. [`Info::warm_started`] and
//! [`crate::PreconditionerInfo::reused`] say whether they were used.
//!
//! The Ritz values reported in [`Info::spectrum`] are those of the preconditioned operator
//! `M⁻¹A` (from PCG's α and β); they are never used for a certified bound.
//!
//! Source: Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Alg. 9.1 and §9.2;
//! Golub & Van Loan, *Matrix Computations*, 4th ed., §11.5; the Gauss–Radau bound: G. Meurant,
//! P. Tichý, *Approximating the extreme Ritz values and upper bounds for the A-norm of the error
//! in CG*, Numer. Algorithms 82 (2019), and Golub & Meurant, *Matrices, Moments and Quadrature
//! with Applications* (2010), ch. 12; Z. Strakoš, P. Tichý, *On error estimation in the conjugate
//! gradient method and why it works in finite precision computations*, ETNA 13 (2002);
//! A. Greenbaum, *Behavior of slightly perturbed Lanczos and conjugate-gradient recurrences*,
//! Linear Algebra Appl. 113 (1989).

use std::time::{Duration, Instant};

use crate::bounds::{gauss_radau_error, gauss_radau_next, gauss_radau_node, gauss_radau_start};
use crate::error::{Error, Location, Result};
use crate::lanczos;
use crate::observer::{IterationState, Observer};
use crate::operator::{apply_checked, Operator};
use crate::precond::Preconditioner;
use crate::report::{Bound, Info, SolverKind, Termination, Timing};
use crate::solve::{check_inputs, tolerance};
use crate::vector::Vector;

/// Parameters of preconditioned conjugate gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Maximum number of iterations (verification applications not counted).
    pub max_iter: usize,
    /// Absolute tolerance on `‖b − A v‖` (ignored with `target_error`).
    pub abs_tol: f64,
    /// Tolerance relative to `‖b‖` (ignored with `target_error`).
    pub rel_tol: f64,
    /// A certified lower bound on λ_min(A), `> 0`; makes the error bound certified.
    pub lambda_min: Option<f64>,
    /// Stop as soon as the certified bound (`error_scale ·` the bound on `‖v − v*‖`: the residual
    /// bound or, where available, the tighter Gauss–Radau one) is `≤` this.
    pub target_error: Option<f64>,
    /// The factor that turns `‖v − v*‖` into the error the target is about (1 for `v` itself;
    /// `c ≥ ‖∂_λΦ‖` for a hypergradient).
    pub error_scale: f64,
    /// Recompute `b − A v` before declaring convergence (one application). Always done with
    /// `target_error`, whose stop is a certified bound on the recomputed residual.
    pub verify_residual: bool,
    /// Restarts allowed when the recomputed residual misses the tolerance.
    pub max_restarts: usize,
    /// If `false`, running out of iterations (or stagnating) returns the last iterate with
    /// [`Termination::MaxIterations`] (or [`Termination::Stagnated`]) instead of
    /// [`Error::NotConverged`].
    pub require_convergence: bool,
    /// Time the operator and preconditioner applications ([`Info::timing`]; two clock reads per
    /// application).
    pub timing: bool,
    /// Tighten the bound with the Gauss–Radau estimate of `‖v − v*‖_A` (module documentation)
    /// when `lambda_min` is given and the preconditioner reports
    /// [`Preconditioner::inverse_lower_bound`]; `false` keeps the residual bound alone.
    pub gauss_radau: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_iter: 1000,
            abs_tol: 0.0,
            rel_tol: 1e-10,
            lambda_min: None,
            target_error: None,
            error_scale: 1.0,
            verify_residual: true,
            max_restarts: 3,
            require_convergence: true,
            timing: true,
            gauss_radau: true,
        }
    }
}

pub(crate) fn validate(params: &Params) -> Result<()> {
    if let Some(l) = params.lambda_min {
        if !(l.is_finite() && l > 0.0) {
            return Err(Error::InvalidParameter {
                name: "lambda_min",
                value: l,
                reason: "must be finite and > 0",
            });
        }
    }
    if !(params.error_scale.is_finite() && params.error_scale > 0.0) {
        return Err(Error::InvalidParameter {
            name: "error_scale",
            value: params.error_scale,
            reason: "must be finite and > 0",
        });
    }
    if let Some(e) = params.target_error {
        if !(e.is_finite() && e > 0.0) {
            return Err(Error::InvalidParameter {
                name: "target_error",
                value: e,
                reason: "must be finite and > 0",
            });
        }
        let Some(l) = params.lambda_min else {
            return Err(Error::InvalidParameter {
                name: "target_error",
                value: e,
                reason: "needs a certified lambda_min to be certified",
            });
        };
        // The stop is `‖r‖ ≤ (ε/scale)·λ_min`; both factors must be ordinary numbers, or the
        // reported bound ‖r‖/λ_min could overflow while the threshold is met (found by the
        // `pcg` fuzz target with a subnormal error_scale).
        let per_unit = e / params.error_scale;
        let threshold = per_unit * l;
        if !(per_unit.is_normal() && threshold.is_normal()) {
            return Err(Error::InvalidParameter {
                name: "target_error",
                value: e,
                reason: "target_error/error_scale·lambda_min is not a normal positive number",
            });
        }
    }
    Ok(())
}

/// Times the closure when `on`.
pub(crate) struct Clock {
    pub(crate) on: bool,
    pub(crate) total: Duration,
}

impl Clock {
    pub(crate) fn run<T>(&mut self, f: impl FnOnce() -> T) -> T {
        if self.on {
            let t = Instant::now();
            let out = f();
            self.total += t.elapsed();
            out
        } else {
            f()
        }
    }
}

/// Solves `A v = b` by preconditioned CG. `a` applies `v ↦ Av`, `m` applies `r ↦ M⁻¹r`; `x` is
/// the initial guess on entry and the solution on exit.
///
/// Memory: four work vectors (`r`, `z = M⁻¹r`, `p`, `Ap`) besides `b`, `x` and the
/// preconditioner.
///
/// # Errors
/// [`Error::NotPositiveDefinite`], [`Error::NotConverged`], [`Error::NonFinite`],
/// [`Error::DimensionMismatch`], [`Error::InvalidParameter`] (also for an indefinite
/// preconditioner), or the operator's and the preconditioner's own errors.
pub fn solve<V, O, P, Obs>(
    a: &mut O,
    m: &mut P,
    b: &V,
    x: &mut V,
    params: &Params,
    observer: &mut Obs,
) -> Result<Info>
where
    V: Vector,
    O: Operator<V> + ?Sized,
    P: Preconditioner<V> + ?Sized,
    Obs: Observer<V> + ?Sized,
{
    let start = Instant::now();
    validate(params)?;
    check_inputs(b, x)?;
    let tol = match (params.target_error, params.lambda_min) {
        (Some(e), Some(l)) => e / params.error_scale * l,
        _ => tolerance(params.abs_tol, params.rel_tol, b.norm())?,
    };
    let mut op_clock = Clock {
        on: params.timing,
        total: Duration::ZERO,
    };
    let mut pc_clock = Clock {
        on: params.timing,
        total: Duration::ZERO,
    };

    let mut applications = 0usize;
    let warm_started = x.norm() != 0.0;
    let mut ap = x.zeros_like();
    let mut r = b.clone();
    if warm_started {
        op_clock.run(|| apply_checked(a, x, &mut ap, 0))?;
        applications += 1;
        r.axpy(-1.0, &ap);
    }
    let mut r_norm = r.norm();
    let mut verified = true;
    let mut history = vec![r_norm];
    let mut z = x.zeros_like();
    let mut p = x.zeros_like();
    // ρ = rᵀM⁻¹r, set when a direction is (re)started.
    let mut rho = 0.0f64;
    let mut need_direction = true;
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut record_lanczos = true;
    let mut restarts = 0usize;
    let mut k = 0usize;
    let target = params.target_error.is_some();
    // A target is met only by a certified bound, i.e. a recomputed residual (found by the `pcg`
    // fuzz target: without verification the stop reported `ErrorTarget` on an estimate).
    let verify = params.verify_residual || target;
    // Gauss–Radau: the node μ ≤ λ_min(M⁻¹A), the running γ̃_k (None while unavailable), and the
    // gap ‖r_true − r_rec‖ measured at the last recomputation of the residual.
    let gr_node = if params.gauss_radau {
        match (params.lambda_min, m.inverse_lower_bound()) {
            (Some(l), Some(s)) if s.is_finite() && s > 0.0 => gauss_radau_node(l * s),
            _ => None,
        }
    } else {
        None
    };
    let gr_bound = |gt: Option<f64>, rho: f64, gap: f64| {
        gt.zip(params.lambda_min)
            .map(|(g, l)| gauss_radau_error(g, rho.sqrt(), gap, l))
    };
    let per_unit = params.target_error.map(|e| e / params.error_scale);
    let gr_meets = |b: Option<f64>| matches!((b, per_unit), (Some(b), Some(e)) if b <= e);
    let mut gt: Option<f64> = None;
    let mut gap = 0.0f64;

    let termination = loop {
        if !r_norm.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: k },
            });
        }
        if r_norm <= tol || gr_meets(gr_bound(gt, rho, 0.0)) {
            if verified || !verify {
                break converged(target);
            }
            (r_norm, gap) =
                op_clock.run(|| verify_residual(a, b, x, &mut r, &mut ap, k, gt.is_some()))?;
            applications += 1;
            verified = true;
            if let Some(last) = history.last_mut() {
                *last = r_norm;
            }
            if r_norm <= tol || gr_meets(gr_bound(gt, rho, gap)) {
                break converged(target);
            }
            // A fresh Krylov process from the true residual: the quadrature starts over.
            gt = None;
            gap = 0.0;
            restarts += 1;
            if restarts > params.max_restarts {
                if params.require_convergence {
                    return Err(Error::NotConverged {
                        iterations: k,
                        residual: r_norm,
                        tolerance: tol,
                    });
                }
                break Termination::Stagnated;
            }
            need_direction = true;
            record_lanczos = false;
            continue;
        }
        if k >= params.max_iter {
            break Termination::MaxIterations;
        }
        if need_direction {
            // p = z = M⁻¹r (a fresh start, or a restart from the true residual).
            pc_clock.run(|| m.apply(&r, &mut z))?;
            rho = precond_dot(&r, &z, k)?;
            p.copy_from(&z);
            need_direction = false;
            gt = gr_node.and_then(gauss_radau_start);
        }
        op_clock.run(|| apply_checked(a, &p, &mut ap, k + 1))?;
        applications += 1;
        let pap = p.dot(&ap);
        if !pap.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: k + 1 },
            });
        }
        if pap <= 0.0 {
            // Reported as a Rayleigh quotient; pᵀp is only needed here.
            let pp = p.dot(&p);
            return Err(Error::NotPositiveDefinite {
                iteration: k + 1,
                curvature: if pp > 0.0 { pap / pp } else { pap },
            });
        }
        let alpha = rho / pap;
        x.axpy(alpha, &p);
        // One pass: the residual update and its norm.
        let r_new = r.axpy_norm(-alpha, &ap);
        k += 1;
        if r_new == 0.0 {
            // Exact solution: no further direction is needed.
            if record_lanczos {
                alphas.push(alpha);
            }
            r_norm = r_new;
            verified = false;
            // No δ for the recurrence; the residual bound (0 here) takes over.
            gt = None;
            history.push(r_norm);
            notify(observer, k, r_norm, applications, x);
            continue;
        }
        pc_clock.run(|| m.apply(&r, &mut z))?;
        let rho_new = precond_dot(&r, &z, k)?;
        let beta = rho_new / rho;
        // γ̃_{k+1} = (γ̃_k − γ_k)/(μ(γ̃_k − γ_k) + δ_{k+1}); γ̃_k > γ_k in exact arithmetic, so a
        // rounding that breaks it switches the bound off.
        gt = match (gt, gr_node) {
            (Some(g), Some(mu)) => gauss_radau_next(g, alpha, beta, mu),
            _ => None,
        };
        if record_lanczos {
            alphas.push(alpha);
            betas.push(beta);
        }
        rho = rho_new;
        // p ← z + βp.
        p.axpby(1.0, &z, beta);
        r_norm = r_new;
        verified = false;
        history.push(r_norm);
        notify(observer, k, r_norm, applications, x);
    };

    if termination == Termination::MaxIterations {
        if verify && !verified {
            (r_norm, gap) =
                op_clock.run(|| verify_residual(a, b, x, &mut r, &mut ap, k, gt.is_some()))?;
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

    // As in CG: the recursive residual can stay finite while the iterate overflows (found by
    // the `pcg` fuzz target); never return it as a result.
    if !x.is_finite() {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: k },
        });
    }
    // Ritz values of M⁻¹A; the β list may be one short after an exact solution.
    let spectrum = if betas.len() + 1 >= alphas.len() {
        lanczos::ritz_extremes(&alphas, &betas)
    } else {
        None
    };
    // The residual bound, or the Gauss–Radau one where it is available and smaller.
    let error_bound = params.lambda_min.map(|l| {
        let residual_bound = r_norm / l;
        let value = gr_bound(gt, rho, gap).map_or(residual_bound, |g| g.min(residual_bound));
        if verified {
            Bound::certified(value)
        } else {
            Bound::estimated(value)
        }
    });
    let timing = params.timing.then(|| Timing {
        operator: op_clock.total,
        preconditioner: pc_clock.total,
        total: start.elapsed(),
    });
    let info = Info {
        solver: SolverKind::PreconditionedCg,
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
        preconditioner: Some(m.info()),
        timing,
    };
    observer.on_finish(&info);
    Ok(info)
}

/// The termination of a converged solve: met the error target, or the residual tolerance.
pub(crate) fn converged(target: bool) -> Termination {
    if target {
        Termination::ErrorTarget
    } else {
        Termination::Converged
    }
}

fn notify<V: Vector, Obs: Observer<V> + ?Sized>(
    observer: &mut Obs,
    k: usize,
    residual: f64,
    applications: usize,
    x: &V,
) {
    observer.on_iteration(&IterationState {
        solver: SolverKind::PreconditionedCg,
        iteration: k,
        residual,
        operator_applications: applications,
        iterate: x,
    });
}

/// `rᵀz` for `z = M⁻¹r`, checked: finite, and `> 0` (an SPD `M` gives `rᵀM⁻¹r > 0` for `r ≠ 0`).
pub(crate) fn precond_dot<V: Vector>(r: &V, z: &V, k: usize) -> Result<f64> {
    if !z.is_finite() {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: k },
        });
    }
    let rho = r.dot(z);
    if !rho.is_finite() {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: k },
        });
    }
    if rho <= 0.0 {
        return Err(Error::InvalidParameter {
            name: "preconditioner",
            value: rho,
            reason: "rᵀM⁻¹r ≤ 0: the preconditioner is not positive definite",
        });
    }
    Ok(rho)
}

/// `r ← b − A x` from the recursive residual in `r`, returning `‖r‖` and, when `gap`, the drift
/// `‖r_true − r_rec‖` of the recursive residual (three more vector passes; 0 otherwise).
pub(crate) fn verify_residual<V, O>(
    a: &mut O,
    b: &V,
    x: &V,
    r: &mut V,
    ap: &mut V,
    k: usize,
    gap: bool,
) -> Result<(f64, f64)>
where
    V: Vector,
    O: Operator<V> + ?Sized,
{
    apply_checked(a, x, ap, k)?;
    let drift = if gap {
        // r ← r_rec + Ax − b = r_rec − r_true.
        r.axpy(1.0, ap);
        r.axpy(-1.0, b);
        r.norm()
    } else {
        0.0
    };
    r.copy_from(b);
    r.axpy(-1.0, ap);
    Ok((r.norm(), drift))
}
