//! The implicit hypergradient `∇f(λ) = ∇_λE + (∂_λΦ)ᵀ v*`, `(I − Jᵀ) v* = ∇_wE`.
//!
//! The caller supplies, at the point `(w, λ)` (with `w` the inner solution):
//! * `jt`: `v ↦ Jᵀv`, a VJP of the fixed-point map Φ in `w`;
//! * `cross_t`: `v ↦ (∂_λΦ)ᵀv`, a VJP of Φ in `λ`;
//! * `grad_w = ∇_wE` and `grad_lambda = ∇_λE`.
//!
//! With an exact inner solution, `‖∇̂f − ∇f‖ ≤ ‖∂_λΦ‖ · ‖v − v*‖` (derived in
//! `proofs::hypergradient_error`); the report carries this bound when `cross_norm ≥ ‖∂_λΦ‖` is
//! given, certified exactly when the linear solve's bound is.
//!
//! Source: Grazzi et al., ICML 2020 (AID); Pedregosa, ICML 2016 (HOAG).

use crate::error::{Error, Location, Result};
use crate::observer::Observer;
use crate::operator::{apply_checked, IdentityMinus, Operator};
use crate::precond::Preconditioner;
use crate::report::{Bound, Info};
use crate::solve::{cg, fixed_point, neumann, pcg};
use crate::vector::Vector;

/// A bilevel problem linearised at its inner solution.
#[derive(Debug, Clone)]
pub struct Problem<W, L, J, C> {
    /// `v ↦ Jᵀv`.
    pub jt: J,
    /// `v ↦ (∂_λΦ)ᵀv`.
    pub cross_t: C,
    /// `∇_wE`, the right-hand side of the linear system.
    pub grad_w: W,
    /// `∇_λE`.
    pub grad_lambda: L,
}

/// The linear solver and its parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// Fixed-point iteration (AID-FP).
    FixedPoint(fixed_point::Params),
    /// Truncated Neumann series (fixed point from 0 with a fixed number of terms).
    Neumann(neumann::Params),
    /// Conjugate gradient on `I − Jᵀ` (AID-CG); needs `I − Jᵀ` symmetric positive definite.
    ConjugateGradient(cg::Params),
}

/// Parameters of a hypergradient computation.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The linear solver.
    pub method: Method,
    /// A certified `q ≥ ‖J‖`. Passed to the fixed-point solvers (unless their own is set) and,
    /// for symmetric J with `q < 1`, to CG as `λ_min(I − J) ≥ 1 − q`.
    pub contraction: Option<f64>,
    /// Whether J is symmetric (true for the gradient-descent map Φ = w − α∇_wG).
    pub symmetric: bool,
    /// A certified `c ≥ ‖∂_λΦ‖`; turns the bound on `‖v − v*‖` into one on the hypergradient.
    pub cross_norm: Option<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            method: Method::ConjugateGradient(cg::Params::default()),
            contraction: None,
            symmetric: false,
            cross_norm: None,
        }
    }
}

/// A hypergradient with its report.
#[derive(Debug, Clone)]
pub struct Hypergradient<W, L> {
    /// `∇_λE + (∂_λΦ)ᵀ v`.
    pub gradient: L,
    /// The solution `v` of the linear system (reuse it as a warm start for the next λ).
    pub v: W,
    /// The linear solve's report.
    pub info: Info,
    /// Bound on `‖∇̂f − ∇f‖`, when `cross_norm` and a bound on `‖v − v*‖` are known.
    pub error_bound: Option<Bound>,
}

/// Computes the implicit hypergradient. `warm_start` is the initial `v` (zero if `None`).
///
/// # Errors
/// Every error of the chosen solver; [`Error::NonFinite`] for a non-finite `∇_λE` or cross
/// output; [`Error::DimensionMismatch`] when the cross output and `∇_λE` differ in size.
pub fn hypergradient<W, L, J, C, Obs>(
    problem: &mut Problem<W, L, J, C>,
    params: &Params,
    warm_start: Option<&W>,
    observer: &mut Obs,
) -> Result<Hypergradient<W, L>>
where
    W: Vector,
    L: Vector,
    J: Operator<W>,
    C: Operator<W, L>,
    Obs: Observer<W> + ?Sized,
{
    check_cross_norm(params)?;
    if !problem.grad_lambda.is_finite() {
        return Err(Error::NonFinite {
            at: Location::OuterGradient,
        });
    }
    let mut v = match warm_start {
        Some(v0) => v0.clone(),
        None => problem.grad_w.zeros_like(),
    };
    let b = &problem.grad_w;
    let info = match &params.method {
        Method::FixedPoint(p) => {
            let p = fixed_point::Params {
                contraction: p.contraction.or(params.contraction),
                symmetric: p.symmetric || params.symmetric,
                ..p.clone()
            };
            fixed_point::solve(&mut problem.jt, b, &mut v, &p, observer)?
        }
        Method::Neumann(p) => {
            let p = neumann::Params {
                contraction: p.contraction.or(params.contraction),
                symmetric: p.symmetric || params.symmetric,
                ..p.clone()
            };
            neumann::solve(&mut problem.jt, b, &mut v, &p, observer)?
        }
        Method::ConjugateGradient(p) => {
            let implied = match params.contraction {
                Some(q) if params.symmetric && q < 1.0 => Some(1.0 - q),
                _ => None,
            };
            let p = cg::Params {
                lambda_min: p.lambda_min.or(implied),
                ..p.clone()
            };
            let mut a = IdentityMinus(&mut problem.jt);
            cg::solve(&mut a, b, &mut v, &p, observer)?
        }
    };
    finish(problem, v, info, params.cross_norm)
}

/// The implicit hypergradient by preconditioned CG on `I − Jᵀ` (which must be symmetric positive
/// definite: `params.symmetric` and, for a certified bound, `λ_min(I − Jᵀ) ≥ lambda_min`, given in
/// `pcg` or implied by `params.contraction` as `1 − q`). `params.method` is not used.
///
/// With `pcg.target_error = Some(ε)` the solve stops as soon as the certified bound on the
/// *hypergradient's* error, `c·‖r‖/λ_min` with `c = params.cross_norm ≥ ‖∂_λΦ‖`, is `≤ ε`
/// (accuracy-driven stopping; `pcg.error_scale` is set to `c`). `preconditioner` is kept by the
/// caller, so it can be reused for the next λ; `warm_start` is the initial `v`.
///
/// # Errors
/// As [`hypergradient`] and [`pcg::solve`]; [`Error::InvalidParameter`] for a target error without
/// `cross_norm`, or a non-symmetric `J`.
pub fn hypergradient_pcg<W, L, J, C, P, Obs>(
    problem: &mut Problem<W, L, J, C>,
    params: &Params,
    pcg: &pcg::Params,
    preconditioner: &mut P,
    warm_start: Option<&W>,
    observer: &mut Obs,
) -> Result<Hypergradient<W, L>>
where
    W: Vector,
    L: Vector,
    J: Operator<W>,
    C: Operator<W, L>,
    P: Preconditioner<W> + ?Sized,
    Obs: Observer<W> + ?Sized,
{
    check_cross_norm(params)?;
    if !params.symmetric {
        return Err(Error::InvalidParameter {
            name: "symmetric",
            value: 0.0,
            reason: "preconditioned CG needs a symmetric J",
        });
    }
    if !problem.grad_lambda.is_finite() {
        return Err(Error::NonFinite {
            at: Location::OuterGradient,
        });
    }
    let implied = match params.contraction {
        Some(q) if q < 1.0 => Some(1.0 - q),
        _ => None,
    };
    let mut p = pcg::Params {
        lambda_min: pcg.lambda_min.or(implied),
        ..pcg.clone()
    };
    if p.target_error.is_some() {
        match params.cross_norm {
            Some(c) if c > 0.0 => p.error_scale = c,
            Some(_) => {
                // ∂_λΦ = 0: the hypergradient is ∇_λE whatever v is; any residual meets the target.
                p.error_scale = 1.0;
                p.target_error = Some(f64::MAX);
            }
            None => {
                return Err(Error::InvalidParameter {
                    name: "cross_norm",
                    value: f64::NAN,
                    reason: "a hypergradient target error needs cross_norm ≥ ‖∂_λΦ‖",
                })
            }
        }
    }
    let mut v = match warm_start {
        Some(v0) => v0.clone(),
        None => problem.grad_w.zeros_like(),
    };
    let info = {
        let b = &problem.grad_w;
        let mut a = IdentityMinus(&mut problem.jt);
        pcg::solve(&mut a, preconditioner, b, &mut v, &p, observer)?
    };
    finish(problem, v, info, params.cross_norm)
}

fn check_cross_norm(params: &Params) -> Result<()> {
    if let Some(c) = params.cross_norm {
        if !(c.is_finite() && c >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "cross_norm",
                value: c,
                reason: "must be finite and ≥ 0",
            });
        }
    }
    Ok(())
}

/// `∇_λE + (∂_λΦ)ᵀv` and its bound.
fn finish<W, L, J, C>(
    problem: &mut Problem<W, L, J, C>,
    v: W,
    info: Info,
    cross_norm: Option<f64>,
) -> Result<Hypergradient<W, L>>
where
    W: Vector,
    L: Vector,
    C: Operator<W, L>,
{
    let mut gradient = problem.grad_lambda.clone();
    let mut cross = problem.grad_lambda.zeros_like();
    apply_checked(&mut problem.cross_t, &v, &mut cross, info.iterations).map_err(|e| match e {
        Error::NonFinite { .. } => Error::NonFinite {
            at: Location::CrossOutput,
        },
        other => other,
    })?;
    gradient.axpy(1.0, &cross);
    if !gradient.is_finite() {
        return Err(Error::NonFinite {
            at: Location::CrossOutput,
        });
    }
    let error_bound = match (cross_norm, info.error_bound) {
        // ‖∂_λΦ‖ ≤ 0 (the caller's certificate): the hypergradient is ∇_λE whatever v is, so it
        // is exact even where the solver's bound on v is infinite (0·∞ would be NaN).
        (Some(0.0), Some(_)) => Some(Bound::certified(0.0)),
        (Some(c), Some(b)) => Some(Bound {
            value: c * b.value,
            certainty: b.certainty,
        }),
        _ => None,
    };
    Ok(Hypergradient {
        gradient,
        v,
        info,
        error_bound,
    })
}
