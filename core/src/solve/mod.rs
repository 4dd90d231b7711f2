//! Solvers for the implicit linear system `(I − Jᵀ) v = b`, one file each: [`fixed_point`],
//! [`neumann`], [`cg`], [`pcg`] (preconditioned CG, preconditioners in [`crate::precond`]) and
//! [`deflated_cg`] (deflated PCG recycling a Krylov subspace along a sequence of systems).
//!
//! Every solver is a plain function `solve(op, b, x, &Params, observer) -> Result<Info>`: `x`
//! holds the initial guess on entry and the solution on exit (on error, the last iterate).
//! Stopping uses `max(abs_tol, rel_tol·‖b‖)`.

pub mod cg;
pub mod deflated_cg;
pub mod fixed_point;
pub mod neumann;
pub mod pcg;

use crate::error::{Error, Location, Result};
use crate::vector::Vector;

/// `max(abs_tol, rel_tol·‖b‖)`, after validating both tolerances.
pub(crate) fn tolerance(abs_tol: f64, rel_tol: f64, b_norm: f64) -> Result<f64> {
    if abs_tol.is_nan() || abs_tol < 0.0 {
        return Err(Error::InvalidParameter {
            name: "abs_tol",
            value: abs_tol,
            reason: "must be ≥ 0 (and not NaN)",
        });
    }
    if !(rel_tol.is_finite() && rel_tol >= 0.0) {
        return Err(Error::InvalidParameter {
            name: "rel_tol",
            value: rel_tol,
            reason: "must be finite and ≥ 0",
        });
    }
    Ok(abs_tol.max(rel_tol * b_norm))
}

/// Checks that `b` and `x` have the same dimension and finite entries.
pub(crate) fn check_inputs<V: Vector>(b: &V, x: &V) -> Result<()> {
    if b.dim() != x.dim() {
        return Err(Error::DimensionMismatch {
            what: "initial guess vs right-hand side",
            expected: b.dim(),
            found: x.dim(),
        });
    }
    if !b.is_finite() {
        return Err(Error::NonFinite { at: Location::Rhs });
    }
    if !x.is_finite() {
        return Err(Error::NonFinite {
            at: Location::InitialGuess,
        });
    }
    Ok(())
}
