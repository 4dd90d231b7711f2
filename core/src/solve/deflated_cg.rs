//! Deflated (recycled) preconditioned conjugate gradient for a *sequence* of symmetric positive
//! definite systems `A_t v = b_t` (a trajectory of hyperparameters, the outer loop of I-BAU):
//! the Krylov information of one solve is kept as a small subspace `W` of approximate
//! eigenvectors of `A` and deflated from the next solve.
//!
//! # Algorithm (Saad, Yeung, Erhel & Guyomarc'h 2000, Alg. 2.1, with a preconditioner)
//! With `W` (`d × k`), `AW` and `C = WᵀAW`:
//! 1. Galerkin projection of the initial guess onto `W`: `x₀ ← x₀ + W C⁻¹ Wᵀ r₀`, after which
//!    `Wᵀr₀ = 0` and the error is A-orthogonal to `W`;
//! 2. preconditioned CG whose directions are kept A-orthogonal to `W`:
//!    `p_j = z_j + β_{j−1} p_{j−1} − W C⁻¹ (AW)ᵀ z_j`, `z_j = M⁻¹ r_j`.
//!
//! Every iteration costs one application of `A`, one of `M⁻¹`, and `2k` extra vector passes
//! (`k` dot products with `AW`, `k` updates with `W`; fused by [`Vector::dot_many`] and
//! [`Vector::axpy_many`]). With `deflate_directions = false` only step 1 is done (and repeated at
//! a restart): "init-CG", the augmented CG of Erhel & Guyomarc'h (2000), no cost per iteration. After the solve the recycle space is
//! replaced by the `k` Ritz vectors of `A` on `span(W, p_0, …, p_{m−1})` for the smallest (or the
//! largest, [`Ritz`]) Ritz values: a Rayleigh–Ritz projection with `ZᵀAZ` and `ZᵀZ` computed
//! from the stored vectors and their images (`(k + m)(m + 1)`-ish dot products, no application;
//! Saad et al. 2000, §4: the approximate eigenvectors for the next system are extracted from `W`
//! and the first directions of the current run).
//!
//! # Requirements
//! `A` (each `A_t`) and `M` symmetric positive definite. A direction with `pᵀAp ≤ 0`, or a
//! non-positive pivot of `C = WᵀAW`, proves `A` indefinite: [`Error::NotPositiveDefinite`].
//! `rᵀM⁻¹r ≤ 0` is [`Error::InvalidParameter`] (`preconditioner`). NaN or ±Inf anywhere is
//! [`Error::NonFinite`].
//!
//! Between solves the recycle space must know the new operator. By default the next solve
//! recomputes `AW` (`k` applications, counted in [`Info::operator_applications`] and in
//! [`RecycleReport::applications`]). For `A_{t+1} = A_t + δI` (a ridge or Tikhonov shift),
//! [`RecycleSpace::shift`] updates `AW ← AW + δW` and `C ← C + δWᵀW` without an application;
//! [`RecycleSpace::mark_current`] says that the operator did not change.
//!
//! # Bounds
//! * a priori (M = I): if `W` spans the eigenvectors of `λ_1 ≤ … ≤ λ_k`, the error of the
//!   deflated iteration obeys CG's bound with the *effective* condition number
//!   `κ_eff = λ_n/λ_{k+1}`: `‖x_j − x*‖_A ≤ 2((√κ_eff − 1)/(√κ_eff + 1))^j ‖x_0 − x*‖_A`
//!   (Saad et al. 2000, Thm. 4.1 and the discussion after it);
//! * a posteriori, the one reported: `‖v − v*‖ ≤ ‖b − Av‖/λ_min(A)`, with the true residual
//!   recomputed from scratch before the solve reports it (one application). Certified when the
//!   caller gives `lambda_min ≤ λ_min(A)`. Neither `W` nor `M` enters it, so an inaccurate
//!   recycle space (or a wrong claim in [`RecycleSpace::shift`]) can cost iterations or end in
//!   [`Error::NotConverged`], but never makes the bound wrong.
//!
//! # Stopping
//! As [`crate::solve::pcg`]: `‖b − Av‖ ≤ max(abs_tol, rel_tol·‖b‖)`, or, with
//! `target_error = Some(ε)` (needs `lambda_min`), the first iterate whose certified bound
//! `error_scale · ‖b − Av‖/λ_min ≤ ε` ([`Termination::ErrorTarget`]).
//!
//! [`Info::spectrum`] reports the extreme Ritz values of `A` from the Rayleigh–Ritz projection
//! above (`None` when nothing was extracted); they lie in `[λ_min(A), λ_max(A)]` and are never
//! used for a certified bound.
//!
//! Source: Y. Saad, M. Yeung, J. Erhel, F. Guyomarc'h, *A deflated version of the conjugate
//! gradient algorithm*, SIAM J. Sci. Comput. 21(5), 2000, 1909–1926; J. Erhel, F. Guyomarc'h,
//! *An augmented conjugate gradient method for solving consecutive symmetric positive definite
//! linear systems*, SIAM J. Matrix Anal. Appl. 21(4), 2000; recycling along sequences
//! of systems: M. L. Parks, E. de Sturler, G. Mackey, D. D. Johnson, S. Maiti, *Recycling Krylov
//! subspaces for sequences of linear systems*, SIAM J. Sci. Comput. 28(5), 2006.

use std::time::{Duration, Instant};

use crate::error::{Error, Location, Result};
use crate::observer::{IterationState, Observer};
use crate::operator::{apply_checked, Operator};
use crate::precond::Preconditioner;
use crate::report::{Bound, Info, SolverKind, Spectrum, Termination, Timing};
use crate::solve::pcg::{converged, precond_dot, verify_residual, Clock};
use crate::solve::{check_inputs, tolerance};
use crate::vector::Vector;

/// Which Ritz vectors the recycle space keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ritz {
    /// Those of the smallest Ritz values: deflating them lowers the effective condition number
    /// from `λ_n/λ_1` to `λ_n/λ_{k+1}` (the usual choice; Saad et al. 2000).
    Smallest,
    /// Those of the largest Ritz values (when a few large outliers dominate `κ`).
    Largest,
}

/// Parameters of deflated CG.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Maximum number of iterations (applications for the recycle space and verification not
    /// counted).
    pub max_iter: usize,
    /// Absolute tolerance on `‖b − A v‖` (ignored with `target_error`).
    pub abs_tol: f64,
    /// Tolerance relative to `‖b‖` (ignored with `target_error`).
    pub rel_tol: f64,
    /// A certified lower bound on λ_min(A), `> 0`; makes the error bound certified.
    pub lambda_min: Option<f64>,
    /// Stop as soon as the certified bound `error_scale · ‖b − Av‖/lambda_min` is `≤` this.
    pub target_error: Option<f64>,
    /// The factor that turns `‖v − v*‖` into the error the target is about (1 for `v` itself).
    pub error_scale: f64,
    /// Recompute `b − A v` before declaring convergence (one application); always done with
    /// `target_error`.
    pub verify_residual: bool,
    /// Restarts allowed when the recomputed residual misses the tolerance.
    pub max_restarts: usize,
    /// If `false`, running out of iterations (or stagnating) returns the last iterate with
    /// [`Termination::MaxIterations`] (or [`Termination::Stagnated`]) instead of
    /// [`Error::NotConverged`].
    pub require_convergence: bool,
    /// Size `k` of the recycle space kept for the next solve (0: plain PCG, nothing kept).
    pub recycle: usize,
    /// Number `m` of this solve's first search directions (and their images) stored to extract
    /// the next recycle space from: `2m` vectors of memory during the solve.
    pub stored_directions: usize,
    /// Which Ritz vectors to keep.
    pub keep: Ritz,
    /// Whether to extract a new recycle space after this solve; `false` keeps the current one
    /// (for a trajectory whose invariant subspaces do not move, once they are resolved).
    pub refine: bool,
    /// Keep every search direction A-orthogonal to `W` (deflated CG, `2k` vector passes per
    /// iteration). `false` projects only the initial guess (and the residual at a restart) onto
    /// `W` and then runs plain PCG — "init-CG" (Erhel & Guyomarc'h 2000), cheaper per iteration;
    /// rounding slowly brings the deflated components back, so it saves less on long solves.
    pub deflate_directions: bool,
    /// Time the operator and preconditioner applications ([`Info::timing`]).
    pub timing: bool,
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
            recycle: 8,
            stored_directions: 16,
            keep: Ritz::Smallest,
            refine: true,
            deflate_directions: true,
            timing: true,
        }
    }
}

fn validate(params: &Params) -> Result<()> {
    // Same rules as PCG's parameters.
    crate::solve::pcg::validate(&crate::solve::pcg::Params {
        max_iter: params.max_iter,
        abs_tol: params.abs_tol,
        rel_tol: params.rel_tol,
        lambda_min: params.lambda_min,
        target_error: params.target_error,
        error_scale: params.error_scale,
        verify_residual: params.verify_residual,
        max_restarts: params.max_restarts,
        require_convergence: params.require_convergence,
        timing: params.timing,
        gauss_radau: false,
    })
}

/// What the recycle space did in the last solve.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecycleReport {
    /// Vectors of the space deflated in the last solve (`k` on entry).
    pub deflated: usize,
    /// Operator applications spent on the space in the last solve (recomputing `AW`); included
    /// in that solve's [`Info::operator_applications`].
    pub applications: usize,
    /// Whether `AW` was brought up to date without applications ([`RecycleSpace::shift`],
    /// [`RecycleSpace::mark_current`]).
    pub updated_without_applications: bool,
    /// Vectors in the space extracted for the next solve.
    pub extracted: usize,
    /// Memory the space holds between solves (`W` and `AW`), in vectors of the dimension.
    pub vectors: f64,
    /// Peak memory of the space during the last solve (`W`, `AW`, the stored directions and
    /// their images, and the new space while it is formed), in vectors of the dimension.
    pub peak_vectors: f64,
    /// Time spent on the space (projections excluded): refresh, extraction.
    pub time: Duration,
}

/// The recycle space carried between solves: `W`, `AW` and the small matrices `WᵀAW`, `WᵀW`.
#[derive(Debug, Clone)]
pub struct RecycleSpace<V> {
    w: Vec<V>,
    aw: Vec<V>,
    /// `WᵀAW`, row-major `k × k`.
    c: Vec<f64>,
    /// `WᵀW`, row-major `k × k`.
    g: Vec<f64>,
    /// Ritz values of the vectors of `W` when they were extracted.
    ritz: Vec<f64>,
    /// Whether `aw` is `A w` for the operator of the next solve.
    current: bool,
    updated: bool,
    report: RecycleReport,
}

impl<V: Vector> Default for RecycleSpace<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Vector> RecycleSpace<V> {
    /// An empty space: the first solve is plain PCG and extracts the first space.
    pub fn new() -> Self {
        RecycleSpace {
            w: Vec::new(),
            aw: Vec::new(),
            c: Vec::new(),
            g: Vec::new(),
            ritz: Vec::new(),
            current: false,
            updated: false,
            report: RecycleReport::default(),
        }
    }

    /// Number of vectors `k`.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// Whether the space is empty.
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// The vectors of `W` (approximate eigenvectors of the last operator, Euclidean
    /// orthonormal up to rounding).
    pub fn vectors(&self) -> &[V] {
        &self.w
    }

    /// The Ritz values of the vectors of `W` at extraction (with respect to the operator of the
    /// solve they were extracted from).
    pub fn ritz_values(&self) -> &[f64] {
        &self.ritz
    }

    /// What the space did in the last solve.
    pub fn report(&self) -> &RecycleReport {
        &self.report
    }

    /// Declares that the next operator is the last one plus `delta·I` and updates `AW` and
    /// `WᵀAW` accordingly (`k` vector updates, no operator application).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-finite `delta`.
    pub fn shift(&mut self, delta: f64) -> Result<()> {
        if !delta.is_finite() {
            return Err(Error::InvalidParameter {
                name: "delta",
                value: delta,
                reason: "must be finite",
            });
        }
        for (awj, wj) in self.aw.iter_mut().zip(&self.w) {
            awj.axpy(delta, wj);
        }
        for (c, g) in self.c.iter_mut().zip(&self.g) {
            *c += delta * g;
        }
        self.current = true;
        self.updated = true;
        Ok(())
    }

    /// Declares that the next operator is the same as the last one (`AW` stays valid).
    pub fn mark_current(&mut self) {
        self.current = true;
        self.updated = true;
    }

    /// Memory the space holds, in vectors.
    fn held_vectors(&self) -> usize {
        self.w.len() + self.aw.len()
    }

    /// Recomputes `AW` and `C = WᵀAW` for the operator `a` (`k` applications).
    fn refresh<O>(&mut self, a: &mut O, clock: &mut Clock) -> Result<usize>
    where
        O: Operator<V> + ?Sized,
    {
        let k = self.w.len();
        for (j, (wj, awj)) in self.w.iter().zip(self.aw.iter_mut()).enumerate() {
            clock.run(|| apply_checked(a, wj, awj, j))?;
        }
        self.c.iter_mut().for_each(|c| *c = 0.0);
        let mut row = vec![0.0; k];
        for i in 0..k {
            self.w[i].dot_many(&self.aw, &mut row);
            for (j, rj) in row.iter().enumerate() {
                // Symmetrised: c_ij = ½(w_iᵀAw_j + w_jᵀAw_i).
                self.c[i * k + j] += 0.5 * rj;
                self.c[j * k + i] += 0.5 * rj;
            }
        }
        Ok(k)
    }
}

/// Solves `A v = b` by deflated preconditioned CG with the recycle space `space`, and replaces
/// the space by one extracted from this solve (unless `params.refine` is `false`). `a` applies
/// `v ↦ Av`, `m` applies `r ↦ M⁻¹r` ([`crate::precond::Identity`] for none); `x` is the initial
/// guess on entry and the solution on exit.
///
/// Memory: four work vectors (`r`, `z`, `p`, `Ap`) besides `b`, `x` and the preconditioner; the
/// space's `2k` vectors; `2m` stored directions during the solve, and `2k` more while the next
/// space is formed ([`RecycleReport::peak_vectors`]).
///
/// # Errors
/// [`Error::NotPositiveDefinite`], [`Error::NotConverged`], [`Error::NonFinite`],
/// [`Error::DimensionMismatch`] (also for a space of another dimension),
/// [`Error::InvalidParameter`] (also for an indefinite preconditioner), or the operator's and
/// the preconditioner's own errors. On error, `x` holds the last iterate and the space is left
/// as it was on entry (with `AW` possibly recomputed for `a`).
pub fn solve<V, O, P, Obs>(
    a: &mut O,
    m: &mut P,
    b: &V,
    x: &mut V,
    space: &mut RecycleSpace<V>,
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
    if let Some(w) = space.w.first() {
        if w.dim() != b.dim() {
            return Err(Error::DimensionMismatch {
                what: "recycle space vs right-hand side",
                expected: b.dim(),
                found: w.dim(),
            });
        }
    }
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
    let mut space_time = Duration::ZERO;

    let mut applications = 0usize;
    let k = space.w.len();
    let mut space_applications = 0usize;
    let updated = space.updated;
    if k > 0 && !space.current {
        let t = Instant::now();
        space_applications = space.refresh(a, &mut op_clock)?;
        applications += space_applications;
        space_time += t.elapsed();
    }
    // AW now belongs to this operator; the next solve must be told about its own.
    space.current = false;
    space.updated = false;
    let chol = if k > 0 {
        cholesky(&space.c, k)?
    } else {
        Vec::new()
    };
    let mut coef = vec![0.0; k];

    let warm_started = x.norm() != 0.0;
    let mut ap = x.zeros_like();
    let mut r = b.clone();
    if warm_started {
        op_clock.run(|| apply_checked(a, x, &mut ap, 0))?;
        applications += 1;
        r.axpy(-1.0, &ap);
    }
    galerkin(space, &chol, &mut coef, x, &mut r);
    let mut r_norm = r.norm();
    // Without a space the residual is exact; after the projection it is `r − AW·c`, recursive.
    let mut verified = k == 0;
    let mut history = vec![r_norm];
    let mut z = x.zeros_like();
    let mut p = x.zeros_like();
    let mut rho = 0.0f64;
    let mut need_direction = true;
    let store = if params.recycle > 0 && params.refine {
        params.stored_directions
    } else {
        0
    };
    let mut stored_p: Vec<V> = Vec::with_capacity(store);
    let mut stored_ap: Vec<V> = Vec::with_capacity(store);
    let mut recording = true;
    let mut restarts = 0usize;
    let mut it = 0usize;
    let target = params.target_error.is_some();
    let verify = params.verify_residual || target;

    let termination = loop {
        if !r_norm.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: it },
            });
        }
        if r_norm <= tol {
            if verified || !verify {
                break converged(target);
            }
            r_norm = op_clock
                .run(|| verify_residual(a, b, x, &mut r, &mut ap, it, false))?
                .0;
            applications += 1;
            verified = true;
            if let Some(last) = history.last_mut() {
                *last = r_norm;
            }
            if r_norm <= tol {
                break converged(target);
            }
            restarts += 1;
            if restarts > params.max_restarts {
                if params.require_convergence {
                    return Err(Error::NotConverged {
                        iterations: it,
                        residual: r_norm,
                        tolerance: tol,
                    });
                }
                break Termination::Stagnated;
            }
            // Rounding may have put components along W back into r: project them out again.
            galerkin(space, &chol, &mut coef, x, &mut r);
            r_norm = r.norm();
            verified = false;
            need_direction = true;
            recording = false;
            continue;
        }
        if it >= params.max_iter {
            break Termination::MaxIterations;
        }
        if need_direction {
            pc_clock.run(|| m.apply(&r, &mut z))?;
            rho = precond_dot(&r, &z, it)?;
            p.copy_from(&z);
            if params.deflate_directions {
                deflate(space, &chol, &mut coef, &z, &mut p);
            }
            need_direction = false;
        }
        op_clock.run(|| apply_checked(a, &p, &mut ap, it + 1))?;
        applications += 1;
        let pap = p.dot(&ap);
        if !pap.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: it + 1 },
            });
        }
        if pap <= 0.0 {
            let pp = p.dot(&p);
            return Err(Error::NotPositiveDefinite {
                iteration: it + 1,
                curvature: if pp > 0.0 { pap / pp } else { pap },
            });
        }
        if recording && stored_p.len() < store {
            stored_p.push(p.clone());
            stored_ap.push(ap.clone());
        }
        // α = rᵀp/pᵀAp: the step that minimises the A-norm of the error along p, so the error
        // never grows. In exact arithmetic rᵀp = rᵀz (r ⟂ W and the previous direction), the
        // usual ρ/pᵀAp; with a recycle space whose AW or WᵀAW carries rounding, the two part:
        // on a case found by `recycled_ritz_values_lie_in_the_spectrum` (κ = 10⁴) ρ/pᵀAp let the
        // residual grow from 3 to 82, this one does not (one dot product more).
        let alpha = r.dot(&p) / pap;
        x.axpy(alpha, &p);
        let r_new = r.axpy_norm(-alpha, &ap);
        it += 1;
        r_norm = r_new;
        verified = false;
        history.push(r_norm);
        notify(observer, it, r_norm, applications, x);
        if r_new == 0.0 || !r_new.is_finite() {
            continue;
        }
        pc_clock.run(|| m.apply(&r, &mut z))?;
        let rho_new = precond_dot(&r, &z, it)?;
        let beta = rho_new / rho;
        rho = rho_new;
        // p ← z + βp − W C⁻¹ (AW)ᵀ z.
        p.axpby(1.0, &z, beta);
        if params.deflate_directions {
            deflate(space, &chol, &mut coef, &z, &mut p);
        }
    };

    if termination == Termination::MaxIterations {
        if verify && !verified {
            r_norm = op_clock
                .run(|| verify_residual(a, b, x, &mut r, &mut ap, it, false))?
                .0;
            applications += 1;
            verified = true;
            if let Some(last) = history.last_mut() {
                *last = r_norm;
            }
        }
        if params.require_convergence {
            return Err(Error::NotConverged {
                iterations: it,
                residual: r_norm,
                tolerance: tol,
            });
        }
    }
    if !x.is_finite() {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: it },
        });
    }

    // The next recycle space.
    let held_on_entry = space.held_vectors();
    let peak = held_on_entry + 2 * stored_p.len() + 2 * params.recycle.min(k + stored_p.len());
    let mut spectrum = None;
    if params.recycle > 0 && params.refine && !stored_p.is_empty() {
        let t = Instant::now();
        drop(z);
        spectrum = extract(space, stored_p, stored_ap, params)?;
        space_time += t.elapsed();
    }
    space.report = RecycleReport {
        deflated: k,
        applications: space_applications,
        updated_without_applications: k > 0 && updated,
        extracted: space.w.len(),
        vectors: space.held_vectors() as f64,
        peak_vectors: peak as f64,
        time: space_time,
    };

    let error_bound = match params.lambda_min {
        Some(l) if verified => Some(Bound::certified(r_norm / l)),
        Some(l) => Some(Bound::estimated(r_norm / l)),
        None => None,
    };
    let timing = params.timing.then(|| Timing {
        operator: op_clock.total,
        preconditioner: pc_clock.total,
        total: start.elapsed(),
    });
    let info = Info {
        solver: SolverKind::DeflatedCg,
        iterations: it,
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

fn notify<V: Vector, Obs: Observer<V> + ?Sized>(
    observer: &mut Obs,
    k: usize,
    residual: f64,
    applications: usize,
    x: &V,
) {
    observer.on_iteration(&IterationState {
        solver: SolverKind::DeflatedCg,
        iteration: k,
        residual,
        operator_applications: applications,
        iterate: x,
    });
}

/// `x ← x + W C⁻¹ Wᵀ r`, `r ← r − AW C⁻¹ Wᵀ r` (afterwards `Wᵀr = 0` up to rounding).
fn galerkin<V: Vector>(
    space: &RecycleSpace<V>,
    chol: &[f64],
    coef: &mut [f64],
    x: &mut V,
    r: &mut V,
) {
    if space.w.is_empty() {
        return;
    }
    r.dot_many(&space.w, coef);
    cholesky_solve(chol, coef);
    x.axpy_many(coef, &space.w);
    coef.iter_mut().for_each(|c| *c = -*c);
    r.axpy_many(coef, &space.aw);
}

/// `p ← p − W C⁻¹ (AW)ᵀ z` (makes `p` A-orthogonal to `W`).
fn deflate<V: Vector>(space: &RecycleSpace<V>, chol: &[f64], coef: &mut [f64], z: &V, p: &mut V) {
    if space.w.is_empty() {
        return;
    }
    z.dot_many(&space.aw, coef);
    cholesky_solve(chol, coef);
    coef.iter_mut().for_each(|c| *c = -*c);
    p.axpy_many(coef, &space.w);
}

/// Rayleigh–Ritz on `Z = [W, P]`: `ZᵀAZ` and `ZᵀZ` by dot products (the `W` blocks are known). The Gram matrix is scaled to
/// unit diagonal and eigendecomposed; directions with eigenvalue below `1e-8` of the largest
/// are dropped (numerically dependent), the projected `A` is eigendecomposed on the rest, and the
/// `k` selected Ritz vectors (Euclidean orthonormal) and their images replace the space.
/// Returns the extreme Ritz values.
fn extract<V: Vector>(
    space: &mut RecycleSpace<V>,
    p: Vec<V>,
    ap: Vec<V>,
    params: &Params,
) -> Result<Option<Spectrum>> {
    let k0 = space.w.len();
    let mut z: Vec<V> = std::mem::take(&mut space.w);
    let mut az: Vec<V> = std::mem::take(&mut space.aw);
    z.extend(p);
    az.extend(ap);
    let n = z.len();
    // F = ZᵀAZ and G = ZᵀZ from the vectors. In exact arithmetic F is block diagonal (the
    // directions are A-conjugate to each other and to W), but not once the directions are
    // rounding noise (W nearly invariant, CG nearly done), so it is computed (found by
    // `recycled_ritz_values_lie_in_the_spectrum`: assumed block diagonal, a Ritz value came out
    // above λ_max).
    let mut f = vec![0.0; n * n];
    let mut g = vec![0.0; n * n];
    let mut row_f = vec![0.0; n];
    let mut row_g = vec![0.0; n];
    for i in 0..n {
        if i < k0 {
            for j in 0..=i {
                row_f[j] = space.c[i * k0 + j];
                row_g[j] = space.g[i * k0 + j];
            }
        } else {
            // Row i against columns 0..=i, one pass over z_i each.
            z[i].dot_many(&az[..=i], &mut row_f[..=i]);
            z[i].dot_many(&z[..=i], &mut row_g[..=i]);
        }
        for j in 0..=i {
            f[i * n + j] = row_f[j];
            f[j * n + i] = row_f[j];
            g[i * n + j] = row_g[j];
            g[j * n + i] = row_g[j];
        }
    }
    if !f.iter().chain(&g).all(|v| v.is_finite()) {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: 0 },
        });
    }
    // Scale to unit diagonal: D G D, D F D.
    let dscale: Vec<f64> = (0..n)
        .map(|i| {
            let gii = g[i * n + i];
            if gii > 0.0 {
                1.0 / gii.sqrt()
            } else {
                0.0
            }
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            g[i * n + j] *= dscale[i] * dscale[j];
            f[i * n + j] *= dscale[i] * dscale[j];
        }
    }
    let (sigma, v) = symmetric_eigen(g, n);
    let smax = sigma.iter().copied().fold(0.0f64, f64::max);
    // 1e-8 rather than 1e-10: directions kept at 1e-10 gave Ritz vectors inaccurate enough
    // (coefficients ~10⁵) that the next solve stagnated above its tolerance (same case).
    let kept: Vec<usize> = (0..n).filter(|&i| sigma[i] > 1e-8 * smax).collect();
    let r = kept.len();
    // B = Σ^{-1/2} Vᵀ F V Σ^{-1/2} on the kept directions; S = D V Σ^{-1/2} (n × r).
    let mut s = vec![0.0; n * r];
    for (c, &i) in kept.iter().enumerate() {
        let w = 1.0 / sigma[i].sqrt();
        for row in 0..n {
            s[row * r + c] = dscale[row] * v[row * n + i] * w;
        }
    }
    // B = (VΣ^{-1/2})ᵀ (DFD) (VΣ^{-1/2}) with the scaled F.
    let mut vs = vec![0.0; n * r];
    for (c, &i) in kept.iter().enumerate() {
        let w = 1.0 / sigma[i].sqrt();
        for row in 0..n {
            vs[row * r + c] = v[row * n + i] * w;
        }
    }
    let mut fb = vec![0.0; n * r];
    for i in 0..n {
        for c in 0..r {
            fb[i * r + c] = (0..n).map(|j| f[i * n + j] * vs[j * r + c]).sum();
        }
    }
    let mut bmat = vec![0.0; r * r];
    for a in 0..r {
        for c in 0..=a {
            let val: f64 = (0..n).map(|i| vs[i * r + a] * fb[i * r + c]).sum();
            bmat[a * r + c] = val;
            bmat[c * r + a] = val;
        }
    }
    let (theta, q) = symmetric_eigen(bmat, r);
    let mut order: Vec<usize> = (0..r)
        .filter(|&i| theta[i] > 0.0 && theta[i].is_finite())
        .collect();
    let spectrum = if order.is_empty() {
        None
    } else {
        let lo = order
            .iter()
            .map(|&i| theta[i])
            .fold(f64::INFINITY, f64::min);
        let hi = order.iter().map(|&i| theta[i]).fold(0.0f64, f64::max);
        Some(Spectrum {
            lambda_min: lo,
            lambda_max: hi,
        })
    };
    match params.keep {
        Ritz::Smallest => order.sort_by(|&a, &b| theta[a].total_cmp(&theta[b])),
        Ritz::Largest => order.sort_by(|&a, &b| theta[b].total_cmp(&theta[a])),
    }
    order.truncate(params.recycle);
    let knew = order.len();
    // Coefficients Y = S Q[:, order] (n × knew).
    let mut y = vec![0.0; n * knew];
    for (c, &o) in order.iter().enumerate() {
        for row in 0..n {
            y[row * knew + c] = (0..r).map(|t| s[row * r + t] * q[t * r + o]).sum();
        }
    }
    let mut w_new = Vec::with_capacity(knew);
    let mut aw_new = Vec::with_capacity(knew);
    let mut ycol = vec![0.0; n];
    for c in 0..knew {
        for (row, yr) in ycol.iter_mut().enumerate() {
            *yr = y[row * knew + c];
        }
        let mut wc = z[0].zeros_like();
        let mut awc = z[0].zeros_like();
        wc.axpy_many(&ycol, &z);
        awc.axpy_many(&ycol, &az);
        w_new.push(wc);
        aw_new.push(awc);
    }
    drop(z);
    drop(az);
    // C and WᵀW of the new space, from the vectors (not from the projection), so that the
    // deflation of the next solve is consistent with the vectors it uses.
    let mut c = vec![0.0; knew * knew];
    let mut gw = vec![0.0; knew * knew];
    let mut row_c = vec![0.0; knew];
    let mut row_g = vec![0.0; knew];
    for i in 0..knew {
        w_new[i].dot_many(&aw_new, &mut row_c);
        w_new[i].dot_many(&w_new[..=i], &mut row_g[..=i]);
        for j in 0..knew {
            // Symmetrised: c_ij = ½(w_iᵀAw_j + w_jᵀAw_i), completed when row j is done.
            c[i * knew + j] += 0.5 * row_c[j];
            c[j * knew + i] += 0.5 * row_c[j];
        }
        for j in 0..=i {
            gw[i * knew + j] = row_g[j];
            gw[j * knew + i] = row_g[j];
        }
    }
    if !c.iter().chain(&gw).all(|v| v.is_finite()) {
        return Err(Error::NonFinite {
            at: Location::Iterate { iteration: 0 },
        });
    }
    space.ritz = order.iter().map(|&o| theta[o]).collect();
    space.w = w_new;
    space.aw = aw_new;
    space.c = c;
    space.g = gw;
    Ok(spectrum)
}

/// Lower Cholesky factor of the `k × k` row-major `c`; a non-positive pivot proves `WᵀAW`, hence
/// `A`, indefinite.
fn cholesky(c: &[f64], k: usize) -> Result<Vec<f64>> {
    crate::small::cholesky(c, k).map_err(|d| {
        if d.is_nan() {
            Error::NonFinite {
                at: Location::Iterate { iteration: 0 },
            }
        } else {
            Error::NotPositiveDefinite {
                iteration: 0,
                curvature: d,
            }
        }
    })
}

/// Solves `L Lᵀ y = c` in place.
fn cholesky_solve(l: &[f64], c: &mut [f64]) {
    let k = c.len();
    for i in 0..k {
        let mut s = c[i];
        for t in 0..i {
            s -= l[i * k + t] * c[t];
        }
        c[i] = s / l[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = c[i];
        for t in i + 1..k {
            s -= l[t * k + i] * c[t];
        }
        c[i] = s / l[i * k + i];
    }
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of the symmetric `n × n`
/// row-major `a`, by the cyclic Jacobi method (Golub & Van Loan, *Matrix Computations*, 4th ed.,
/// §8.5.3), to relative accuracy `ε` in the off-diagonal.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let mut off = 0.0f64;
        let mut diag = 0.0f64;
        for i in 0..n {
            diag += a[i * n + i] * a[i * n + i];
            for j in i + 1..n {
                off += a[i * n + j] * a[i * n + j];
            }
        }
        if off <= (f64::EPSILON * f64::EPSILON) * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let tau = (aqq - app) / (2.0 * apq);
                let t = if tau >= 0.0 {
                    1.0 / (tau + (1.0 + tau * tau).sqrt())
                } else {
                    -1.0 / (-tau + (1.0 + tau * tau).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                // A ← Jᵀ A J on rows/columns p, q.
                for i in 0..n {
                    let (aip, aiq) = (a[i * n + p], a[i * n + q]);
                    a[i * n + p] = c * aip - s * aiq;
                    a[i * n + q] = s * aip + c * aiq;
                }
                for j in 0..n {
                    let (apj, aqj) = (a[p * n + j], a[q * n + j]);
                    a[p * n + j] = c * apj - s * aqj;
                    a[q * n + j] = s * apj + c * aqj;
                }
                for i in 0..n {
                    let (vip, viq) = (v[i * n + p], v[i * n + q]);
                    v[i * n + p] = c * vip - s * viq;
                    v[i * n + q] = s * vip + c * viq;
                }
            }
        }
    }
    let eig = (0..n).map(|i| a[i * n + i]).collect();
    (eig, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_eigen_diagonalises_a_known_matrix() {
        // tridiag(-1, 2, -1) of size 6: eigenvalues 2 − 2cos(jπ/7).
        let n = 6;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = 2.0;
            if i + 1 < n {
                a[i * n + i + 1] = -1.0;
                a[(i + 1) * n + i] = -1.0;
            }
        }
        let (mut e, v) = symmetric_eigen(a.clone(), n);
        // A v_j = e_j v_j.
        for j in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|t| a[i * n + t] * v[t * n + j]).sum();
                assert!(
                    (av - e[j] * v[i * n + j]).abs() <= 1e-13,
                    "{av} vs {}",
                    e[j]
                );
            }
        }
        e.sort_by(f64::total_cmp);
        for (j, ej) in e.iter().enumerate() {
            let exact = 2.0 - 2.0 * ((j + 1) as f64 * std::f64::consts::PI / 7.0).cos();
            assert!((ej - exact).abs() <= 1e-13, "{ej} vs {exact}");
        }
    }

    #[test]
    fn cholesky_solve_inverts_a_known_matrix() {
        let c = vec![4.0, 2.0, 2.0, 3.0];
        let l = cholesky(&c, 2).unwrap();
        let mut y = vec![2.0, 5.0];
        cholesky_solve(&l, &mut y);
        // [4 2; 2 3] y = [2; 5] → y = [−0.5, 2].
        assert!(
            (y[0] + 0.5).abs() <= 1e-15 && (y[1] - 2.0).abs() <= 1e-15,
            "{y:?}"
        );
        assert!(matches!(
            cholesky(&[1.0, 2.0, 2.0, 1.0], 2),
            Err(Error::NotPositiveDefinite { .. })
        ));
    }
}
