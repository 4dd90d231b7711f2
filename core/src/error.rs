//! The one error type of the core crate.

use std::fmt;

/// Where a non-finite value (NaN or ±Inf) was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The right-hand side `b` (∇_w E in a hypergradient).
    Rhs,
    /// The initial guess `v₀`.
    InitialGuess,
    /// The output of the operator (Jᵀv, or Av) at the given iteration.
    OperatorOutput {
        /// Iteration during which the operator returned the value.
        iteration: usize,
    },
    /// A scalar the solver computed (a curvature pᵀAp, a step norm) at the given iteration.
    Iterate {
        /// Iteration at which the value appeared.
        iteration: usize,
    },
    /// The outer gradient ∇_λ E.
    OuterGradient,
    /// The output of the cross operator (∂_λΦ)ᵀv.
    CrossOutput,
    /// A parameter of the solver (a tolerance, a contraction bound).
    Parameter,
    /// An entry of a dense matrix handed to the dense oracle.
    Matrix,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Rhs => write!(f, "the right-hand side"),
            Location::InitialGuess => write!(f, "the initial guess"),
            Location::OperatorOutput { iteration } => {
                write!(f, "the operator output at iteration {iteration}")
            }
            Location::Iterate { iteration } => write!(f, "the iterate at iteration {iteration}"),
            Location::OuterGradient => write!(f, "the outer gradient ∇_λE"),
            Location::CrossOutput => write!(f, "the cross-operator output (∂_λΦ)ᵀv"),
            Location::Parameter => write!(f, "a solver parameter"),
            Location::Matrix => write!(f, "a dense matrix"),
        }
    }
}

/// Boxed error returned by a user-supplied operator (an autodiff backend, say).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core. Numerical failures carry their numbers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The iteration budget ran out before the residual met the tolerance.
    #[error(
        "not converged after {iterations} iterations: residual {residual:.3e} > tolerance {tolerance:.3e}"
    )]
    NotConverged {
        /// Iterations performed.
        iterations: usize,
        /// Last residual norm.
        residual: f64,
        /// Tolerance `max(abs_tol, rel_tol·‖b‖)` that was not met.
        tolerance: f64,
    },
    /// Conjugate gradient met a direction with pᵀAp ≤ 0: the operator is not positive definite.
    #[error(
        "operator is not positive definite: curvature pᵀAp/pᵀp = {curvature:.3e} at iteration {iteration}"
    )]
    NotPositiveDefinite {
        /// Iteration at which the direction was found.
        iteration: usize,
        /// The Rayleigh quotient pᵀAp / pᵀp (≤ 0).
        curvature: f64,
    },
    /// The fixed-point iteration is not contracting: its steps grow.
    #[error(
        "fixed-point iteration diverges at iteration {iteration}: step {residual:.3e} (first {initial_residual:.3e}, growth ratio {ratio:.4})"
    )]
    Diverging {
        /// Iteration at which divergence was declared.
        iteration: usize,
        /// Last step norm ‖v_k − v_{k−1}‖.
        residual: f64,
        /// First step norm.
        initial_residual: f64,
        /// Last ratio ‖v_k − v_{k−1}‖ / ‖v_{k−1} − v_{k−2}‖ (an estimate of the contraction factor).
        ratio: f64,
    },
    /// The caller claimed ‖J‖ ≤ q, and the iteration observed a larger ratio: the claim is false,
    /// so no bound derived from it may be reported.
    #[error(
        "claimed contraction factor q = {claimed} is violated: observed ‖Jᵀr‖/‖r‖ = {observed:.6} at iteration {iteration}"
    )]
    ContractionViolated {
        /// The q the caller claimed.
        claimed: f64,
        /// The ratio observed.
        observed: f64,
        /// Iteration at which it was observed.
        iteration: usize,
    },
    /// A NaN or infinity in the input or during the iteration.
    #[error("non-finite value (NaN or Inf) in {at}")]
    NonFinite {
        /// Where the value was found.
        at: Location,
    },
    /// Vectors or matrices of incompatible sizes.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// What was being compared.
        what: &'static str,
        /// Expected dimension.
        expected: usize,
        /// Dimension found.
        found: usize,
    },
    /// A parameter outside its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: f64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The dense system (I − Jᵀ) is singular (or numerically so) in the dense oracle.
    #[error("dense system is singular or LAPACK failed: {0}")]
    Singular(String),
    /// A user-supplied operator failed.
    #[error("operator failed: {0}")]
    Operator(#[source] BoxError),
}

/// Result with the core's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
