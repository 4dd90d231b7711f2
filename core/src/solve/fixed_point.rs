//! Fixed-point iteration (AID-FP) for `(I − Jᵀ) v = b`: `v_{k+1} = Jᵀ v_k + b`.
//!
//! # Requirements
//! Converges for every start iff the spectral radius ρ(J) < 1. The error bound is *certified*
//! only when the caller supplies `q ≥ ‖J‖` (spectral norm) with `q < 1`.
//!
//! # Bounds (derived in `proofs::fixed_point`)
//! With `e_k = v_k − v*`, `e_k = (Jᵀ)^k e_0`, hence for `‖J‖ ≤ q < 1`:
//! * a priori: `‖v_k − v*‖ ≤ q^k ‖v_0 − v*‖`;
//! * a posteriori: `‖v_k − v*‖ ≤ q/(1−q) · ‖v_k − v_{k−1}‖` (this is what [`Info::error_bound`]
//!   reports).
//!
//! Source: Grazzi, Franceschi, Pontil, Salzo, *On the Iteration Complexity of Hypergradient
//! Computation*, ICML 2020 (AID-FP); the bounds are the Banach fixed-point estimates.
//!
//! # Failure detection
//! * The step `v_{k+1} − v_k = Jᵀ(v_k − v_{k−1})`, so a ratio of successive steps above the claimed
//!   `q` disproves the claim: [`Error::ContractionViolated`].
//! * For symmetric J (`symmetric = true`, e.g. the gradient-descent map), the step ratios are
//!   non-decreasing and bounded by ρ(J); a ratio above 1 proves divergence: [`Error::Diverging`].
//! * Steps growing past `divergence_factor` times the first, or still growing when the budget is
//!   spent, give [`Error::Diverging`]: a non-contractive map never yields a result.
//!
//! Starting from `v_0 = 0` the first iterate is `b` and costs no operator application.

use crate::error::{Error, Location, Result};
use crate::observer::{IterationState, Observer};
use crate::operator::{apply_checked, Operator};
use crate::report::{Bound, Info, SolverKind, Termination};
use crate::solve::{check_inputs, tolerance};
use crate::vector::Vector;

/// Parameters of the fixed-point solver.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Maximum number of fixed-point steps.
    pub max_iter: usize,
    /// Absolute tolerance on the step `‖v_k − v_{k−1}‖`.
    pub abs_tol: f64,
    /// Tolerance relative to `‖b‖`.
    pub rel_tol: f64,
    /// A certified bound `q ≥ ‖J‖` (spectral norm). With `q < 1` the error bound is certified.
    pub contraction: Option<f64>,
    /// Whether J is symmetric (then growth of the steps proves divergence at once).
    pub symmetric: bool,
    /// If `false`, running out of iterations returns the last iterate with
    /// [`Termination::MaxIterations`] instead of [`Error::NotConverged`] (still an error if the
    /// steps are growing).
    pub require_convergence: bool,
    /// Steps larger than this factor times the first step mean divergence.
    pub divergence_factor: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_iter: 1000,
            abs_tol: 0.0,
            rel_tol: 1e-10,
            contraction: None,
            symmetric: false,
            require_convergence: true,
            divergence_factor: 1e6,
        }
    }
}

/// Number of most recent step ratios used to estimate the contraction factor.
const RATIO_WINDOW: usize = 5;

/// Solves `(I − Jᵀ) v = b` by fixed-point iteration. `jt` applies `v ↦ Jᵀv`; `x` is the initial
/// guess on entry and the solution on exit.
///
/// # Errors
/// [`Error::NotConverged`], [`Error::Diverging`], [`Error::ContractionViolated`],
/// [`Error::NonFinite`], [`Error::DimensionMismatch`], [`Error::InvalidParameter`], or the
/// operator's own error.
pub fn solve<V, O, Obs>(
    jt: &mut O,
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
    run(jt, b, x, params, observer, SolverKind::FixedPoint)
}

fn validate(params: &Params) -> Result<()> {
    if let Some(q) = params.contraction {
        if !(q.is_finite() && q >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "contraction",
                value: q,
                reason: "must be finite and ≥ 0",
            });
        }
    }
    if params.divergence_factor.is_nan() || params.divergence_factor <= 1.0 {
        return Err(Error::InvalidParameter {
            name: "divergence_factor",
            value: params.divergence_factor,
            reason: "must be > 1",
        });
    }
    Ok(())
}

pub(crate) fn run<V, O, Obs>(
    jt: &mut O,
    b: &V,
    x: &mut V,
    params: &Params,
    observer: &mut Obs,
    kind: SolverKind,
) -> Result<Info>
where
    V: Vector,
    O: Operator<V> + ?Sized,
    Obs: Observer<V> + ?Sized,
{
    validate(params)?;
    check_inputs(b, x)?;
    let warm_started = x.norm() != 0.0;
    let b_norm = b.norm();
    let tol = tolerance(params.abs_tol, params.rel_tol, b_norm)?;
    // Relative rounding noise in a step is about eps·scale/step; below this floor a step ratio
    // says nothing about J, above it the slack covers the noise.
    let noise = x.epsilon().sqrt();
    let slack = 16.0 * noise;

    let mut next = x.zeros_like();
    let mut diff = x.zeros_like();
    let mut history = Vec::new();
    let mut ratios: Vec<f64> = Vec::new();
    let mut applications = 0usize;

    // First step.
    let mut step = if x.norm() == 0.0 {
        // v_1 = Jᵀ·0 + b = b: no application needed.
        x.copy_from(b);
        b_norm
    } else {
        apply_checked(jt, x, &mut next, 1)?;
        applications += 1;
        next.axpy(1.0, b);
        diff.copy_from(&next);
        diff.axpy(-1.0, x);
        std::mem::swap(x, &mut next);
        diff.norm()
    };
    let mut k = 1usize;
    let mut prev_step: Option<f64> = None;

    let termination = loop {
        // Here x = v_k and step = ‖v_k − v_{k−1}‖.
        if !step.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: k },
            });
        }
        history.push(step);
        observer.on_iteration(&IterationState {
            solver: kind,
            iteration: k,
            residual: step,
            operator_applications: applications,
            iterate: &*x,
        });
        if let Some(p) = prev_step {
            let floor = noise * (x.norm() + b_norm);
            if p > floor {
                let ratio = step / p;
                ratios.push(ratio);
                if let Some(q) = params.contraction {
                    if ratio > q + slack * q.max(1.0) {
                        return Err(Error::ContractionViolated {
                            claimed: q,
                            observed: ratio,
                            iteration: k,
                        });
                    }
                }
                if params.symmetric && ratio > 1.0 + slack {
                    return Err(Error::Diverging {
                        iteration: k,
                        residual: step,
                        initial_residual: history[0],
                        ratio,
                    });
                }
            }
        }
        if step <= tol {
            break Termination::Converged;
        }
        if step > params.divergence_factor * history[0] {
            return Err(Error::Diverging {
                iteration: k,
                residual: step,
                initial_residual: history[0],
                ratio: ratios.last().copied().unwrap_or(f64::NAN),
            });
        }
        if k >= params.max_iter {
            break Termination::MaxIterations;
        }
        apply_checked(jt, x, &mut next, k + 1)?;
        applications += 1;
        next.axpy(1.0, b);
        diff.copy_from(&next);
        diff.axpy(-1.0, x);
        std::mem::swap(x, &mut next);
        prev_step = Some(step);
        step = diff.norm();
        k += 1;
    };

    if termination == Termination::MaxIterations {
        if let Some(&ratio) = ratios.last() {
            if ratio >= 1.0 {
                return Err(Error::Diverging {
                    iteration: k,
                    residual: step,
                    initial_residual: history[0],
                    ratio,
                });
            }
        }
        if params.require_convergence {
            return Err(Error::NotConverged {
                iterations: k,
                residual: step,
                tolerance: tol,
            });
        }
    }

    let estimate = ratios
        .iter()
        .rev()
        .take(RATIO_WINDOW)
        .copied()
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let contraction = match params.contraction {
        Some(q) => Some(Bound::certified(q)),
        None => estimate.map(Bound::estimated),
    };
    let error_bound = match (params.contraction, estimate) {
        (Some(q), _) if q < 1.0 => Some(Bound::certified(q / (1.0 - q) * step)),
        (_, Some(e)) if e < 1.0 => Some(Bound::estimated(e / (1.0 - e) * step)),
        _ => None,
    };
    let info = Info {
        solver: kind,
        iterations: k,
        operator_applications: applications,
        residual: step,
        residual_history: history,
        residual_verified: false,
        tolerance: tol,
        termination,
        error_bound,
        contraction,
        spectrum: None,
        restarts: 0,
        warm_started,
        preconditioner: None,
        timing: None,
    };
    observer.on_finish(&info);
    Ok(info)
}
