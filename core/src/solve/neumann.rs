//! Truncated Neumann series for `(I − Jᵀ) v = b`: `v_K = Σ_{j=0..K} (Jᵀ)^j b`.
//!
//! This is exactly the fixed-point iterate after `K + 1` steps from `v_0 = 0`
//! (`v_1 = b`, `v_{k+1} = Jᵀ v_k + b`), and it is computed that way, with `K` operator
//! applications (hypertorch's `neumann(K)` equals its `fixed_point(K+1)`).
//!
//! # Requirements and bounds
//! As for [`crate::solve::fixed_point`]: with a certified `q ≥ ‖J‖`, `q < 1`, the reported bound
//! `q/(1−q)·‖v_K − v_{K−1}‖` is certified. For the gradient-descent map `J = I − α∇²G` with
//! `μ ⪯ ∇²G ⪯ L` and `0 < α ≤ 1/L`, `q = 1 − αμ` and the a-priori bound is
//! `‖v_K − v*‖ ≤ (1 − αμ)^{K+1} ‖v*‖` ([`crate::bounds::neumann_gradient_descent`]); the series
//! diverges for `α > 2/L` or an indefinite Hessian, which is reported as [`crate::Error::Diverging`].
//!
//! Source: Lorraine, Vicol, Duvenaud, *Optimizing Millions of Hyperparameters by Implicit
//! Differentiation*, AISTATS 2020.

use crate::error::Result;
use crate::observer::Observer;
use crate::operator::Operator;
use crate::report::{Info, SolverKind};
use crate::solve::fixed_point;
use crate::vector::Vector;

/// Parameters of the Neumann series.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Number of terms after the first: `K` in `Σ_{j=0..K}`.
    pub terms: usize,
    /// A certified bound `q ≥ ‖J‖`; with `q < 1` the error bound is certified.
    pub contraction: Option<f64>,
    /// Whether J is symmetric (growth then proves divergence at once).
    pub symmetric: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            terms: 5,
            contraction: None,
            symmetric: false,
        }
    }
}

/// Computes `v_K = Σ_{j=0..K} (Jᵀ)^j b` into `x` (its contents on entry are ignored).
///
/// # Errors
/// As [`fixed_point::solve`], except that spending the `K` terms is the normal end
/// ([`crate::Termination::MaxIterations`]) unless the terms grow ([`crate::Error::Diverging`]).
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
    let fp = fixed_point::Params {
        max_iter: params.terms.saturating_add(1),
        abs_tol: 0.0,
        rel_tol: 0.0,
        contraction: params.contraction,
        symmetric: params.symmetric,
        require_convergence: false,
        ..fixed_point::Params::default()
    };
    // Start from exactly zero (discarding whatever x held, NaN included).
    if x.dim() == b.dim() {
        x.axpby(0.0, b, 0.0);
    }
    fixed_point::run(jt, b, x, &fp, observer, SolverKind::Neumann)
}
