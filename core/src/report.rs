//! What every solve reports: iterations, residuals, operator applications, why it stopped, and
//! how far from the exact solution it can be.

use std::fmt;

/// Whether a number is guaranteed or only estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certainty {
    /// Follows from a theorem whose assumptions the caller certified (a contraction factor q,
    /// a lower bound on λ_min) and from quantities the solver computed exactly (up to rounding).
    Certified,
    /// Derived from an estimate (a ratio of successive steps, a Ritz value): usually close,
    /// but not a guarantee.
    Estimated,
}

/// A bound with its certainty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The value of the bound.
    pub value: f64,
    /// Whether it is guaranteed.
    pub certainty: Certainty,
}

impl Bound {
    /// A certified bound.
    pub fn certified(value: f64) -> Self {
        Bound {
            value,
            certainty: Certainty::Certified,
        }
    }
    /// An estimated bound.
    pub fn estimated(value: f64) -> Self {
        Bound {
            value,
            certainty: Certainty::Estimated,
        }
    }
    /// Whether the bound is certified.
    pub fn is_certified(&self) -> bool {
        self.certainty == Certainty::Certified
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.certainty {
            Certainty::Certified => write!(f, "{:.3e} (certified)", self.value),
            Certainty::Estimated => write!(f, "{:.3e} (estimate)", self.value),
        }
    }
}

/// Why a solve stopped (successful stops only; failures are [`crate::Error`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Termination {
    /// The residual met `max(abs_tol, rel_tol·‖b‖)`.
    Converged,
    /// The iteration budget was spent and the caller allowed an unconverged result
    /// (`require_convergence = false`, as in a fixed number of Neumann terms).
    MaxIterations,
    /// CG only: the recomputed residual stayed above the tolerance after every allowed restart
    /// (the tolerance is below the rounding floor), and the caller allowed an unconverged result.
    Stagnated,
    /// Preconditioned CG with a target error: the certified bound on the error (of `v`, or of the
    /// hypergradient when a scale was given) met the target, from a recomputed residual.
    ErrorTarget,
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Converged => write!(f, "converged"),
            Termination::MaxIterations => write!(f, "iteration budget spent"),
            Termination::Stagnated => write!(f, "stagnated at the rounding floor"),
            Termination::ErrorTarget => write!(f, "certified error target met"),
        }
    }
}

/// Which solver produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SolverKind {
    /// Fixed-point iteration (AID-FP).
    FixedPoint,
    /// Truncated Neumann series.
    Neumann,
    /// Conjugate gradient (AID-CG).
    ConjugateGradient,
    /// Preconditioned conjugate gradient.
    PreconditionedCg,
    /// Deflated (recycled) preconditioned conjugate gradient.
    DeflatedCg,
}

impl fmt::Display for SolverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SolverKind::FixedPoint => write!(f, "fixed point"),
            SolverKind::Neumann => write!(f, "Neumann series"),
            SolverKind::ConjugateGradient => write!(f, "conjugate gradient"),
            SolverKind::PreconditionedCg => write!(f, "preconditioned conjugate gradient"),
            SolverKind::DeflatedCg => write!(f, "deflated conjugate gradient"),
        }
    }
}

/// Spectrum estimates of `A` from the Lanczos tridiagonal that CG's α and β define
/// (Ritz values: they lie inside `[λ_min(A), λ_max(A)]`, so `lambda_min` over-estimates the true
/// smallest eigenvalue and is never a certificate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spectrum {
    /// Smallest Ritz value (≥ λ_min(A)).
    pub lambda_min: f64,
    /// Largest Ritz value (≤ λ_max(A)).
    pub lambda_max: f64,
}

impl Spectrum {
    /// Estimated condition number `lambda_max / lambda_min`.
    pub fn kappa(&self) -> f64 {
        self.lambda_max / self.lambda_min
    }
}

/// What a preconditioner is and what it cost to build (see [`crate::precond`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PreconditionerInfo {
    /// Its name (`"identity"`, `"jacobi"`, `"nystrom"`).
    pub name: &'static str,
    /// Rank of a low-rank preconditioner (Nyström), the number of probes of an estimated diagonal,
    /// 0 otherwise.
    pub rank: usize,
    /// Memory it holds, in vectors of the problem's dimension (`d` scalars each).
    pub vectors: f64,
    /// Memory it holds, in bytes (storage of its vectors and small matrices).
    pub bytes: usize,
    /// Operator applications spent building it (not counted in [`Info::operator_applications`]).
    pub build_applications: usize,
    /// Whether it was built for an earlier system and reused for this one.
    pub reused: bool,
}

/// Wall time of one solve, split into operator applications, preconditioner applications and the
/// rest (vector updates, dot products, bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timing {
    /// Time inside the operator (`A v`).
    pub operator: std::time::Duration,
    /// Time inside the preconditioner (`M⁻¹ r`).
    pub preconditioner: std::time::Duration,
    /// Total time of the solve.
    pub total: std::time::Duration,
}

impl Timing {
    /// Time outside operator applications (preconditioner included): the solver's own work.
    pub fn solver_work(&self) -> std::time::Duration {
        self.total.saturating_sub(self.operator)
    }
}

/// The report of one linear solve of `(I − Jᵀ) v = b` (or `A v = b`).
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// The solver.
    pub solver: SolverKind,
    /// Iterations performed (fixed-point steps, or CG steps).
    pub iterations: usize,
    /// Applications of the operator (Jᵀ or A; each is one Hessian-vector product in autodiff).
    pub operator_applications: usize,
    /// Residual norms, one per iteration. For conjugate gradient, entry `k` is `‖b − A v_k‖`
    /// (entry 0 is the initial residual). For fixed point and Neumann, entry `k − 1` is the
    /// step `‖v_k − v_{k−1}‖`, which equals the residual `‖b − (I − Jᵀ) v_{k−1}‖` of the
    /// *previous* iterate; the returned iterate's residual is at most ‖J‖ times the last entry.
    pub residual_history: Vec<f64>,
    /// The last residual (see `residual_history` for its meaning per solver).
    pub residual: f64,
    /// Whether `residual` was computed from scratch as `‖b − A v‖` (CG's verification), rather than
    /// by a recurrence.
    pub residual_verified: bool,
    /// The tolerance `max(abs_tol, rel_tol·‖b‖)` that was asked for.
    pub tolerance: f64,
    /// Why the solve stopped.
    pub termination: Termination,
    /// Bound on `‖v − v*‖` for the returned iterate, where one can be given.
    pub error_bound: Option<Bound>,
    /// Contraction factor of the fixed-point map: the caller's certified `q`, or an estimate
    /// from successive steps.
    pub contraction: Option<Bound>,
    /// CG only: Ritz estimates of the extreme eigenvalues of `A`.
    pub spectrum: Option<Spectrum>,
    /// CG only: restarts after the recursive residual drifted from the true one.
    pub restarts: usize,
    /// Whether the solve started from a non-zero initial guess (a warm start).
    pub warm_started: bool,
    /// Preconditioned CG only: the preconditioner used.
    pub preconditioner: Option<PreconditionerInfo>,
    /// Preconditioned CG only: where the time went.
    pub timing: Option<Timing>,
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "solver:                 {}", self.solver)?;
        writeln!(f, "termination:            {}", self.termination)?;
        writeln!(f, "iterations:             {}", self.iterations)?;
        writeln!(f, "operator applications:  {}", self.operator_applications)?;
        writeln!(
            f,
            "residual:               {:.3e}{} (tolerance {:.3e})",
            self.residual,
            if self.residual_verified {
                ", recomputed"
            } else {
                ""
            },
            self.tolerance
        )?;
        match &self.error_bound {
            Some(b) => writeln!(f, "error bound ‖v − v*‖:   {b}")?,
            None => writeln!(
                f,
                "error bound ‖v − v*‖:   none (give a contraction factor or λ_min)"
            )?,
        }
        if let Some(q) = &self.contraction {
            writeln!(f, "contraction q:          {q}")?;
        }
        if let Some(s) = &self.spectrum {
            writeln!(
                f,
                "Ritz spectrum of A:     [{:.3e}, {:.3e}], κ ≈ {:.3e}",
                s.lambda_min,
                s.lambda_max,
                s.kappa()
            )?;
        }
        if self.restarts > 0 {
            writeln!(f, "restarts:               {}", self.restarts)?;
        }
        if self.warm_started {
            writeln!(f, "warm start:             yes")?;
        }
        if let Some(p) = &self.preconditioner {
            writeln!(
                f,
                "preconditioner:         {} (rank {}, {:.1} vectors, {} bytes, {} build applications{})",
                p.name,
                p.rank,
                p.vectors,
                p.bytes,
                p.build_applications,
                if p.reused { ", reused" } else { "" }
            )?;
        }
        if let Some(t) = &self.timing {
            writeln!(
                f,
                "time:                   {:.3e} s ({:.3e} s operator, {:.3e} s preconditioner)",
                t.total.as_secs_f64(),
                t.operator.as_secs_f64(),
                t.preconditioner.as_secs_f64()
            )?;
        }
        write!(f, "residual history:       ")?;
        let h = &self.residual_history;
        let shown: Vec<String> = if h.len() <= 8 {
            h.iter().map(|r| format!("{r:.2e}")).collect()
        } else {
            let mut v: Vec<String> = h[..4].iter().map(|r| format!("{r:.2e}")).collect();
            v.push(format!("… ({} more) …", h.len() - 7));
            v.extend(h[h.len() - 3..].iter().map(|r| format!("{r:.2e}")));
            v
        };
        write!(f, "{}", shown.join(", "))
    }
}
