//! Fuzz target bodies: `fn(&[u8])`, panicking only when a contract is violated.
//!
//! Kept free of `crate::` paths so that `tests/tests/fuzz_replay.rs` can include this file
//! with `#[path]` and replay the kept inputs as ordinary tests.

use std::io::Write;

use arbitrary::{Arbitrary, Unstructured};
use ibau_core::dense;
use ibau_core::hypergradient::{
    hypergradient as compute_hypergradient, Method, Params as HgParams, Problem,
};
use ibau_core::operator::Fallible;
use ibau_core::solve::{cg, fixed_point, neumann};
use ibau_core::{Error, Termination};
use ndarray::{Array1, Array2};

/// Inputs longer than this are rejected (`-max_len` is set lower in the runs anyway).
pub const MAX_INPUT: usize = 1 << 16;

/// Largest dimension of the dense instances.
const MAX_DIM: usize = 6;

/// A number as the fuzzer chooses it: mostly small multiples of 1/8 (so that structured
/// instances are common), sometimes special values, sometimes any bit pattern.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Num {
    Small(i8),
    Special(u8),
    Raw(f64),
}

impl Num {
    fn value(self) -> f64 {
        match self {
            Num::Small(i) => f64::from(i) / 8.0,
            Num::Special(k) => [
                0.0,
                -0.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e-300,
                1e300,
                f64::MIN_POSITIVE / 4.0,
                f64::EPSILON,
                1.0 - f64::EPSILON,
                1.0,
                f64::MAX,
            ][usize::from(k) % 12],
            Num::Raw(x) => x,
        }
    }
}

fn vector(nums: &[Num], n: usize) -> Array1<f64> {
    Array1::from_iter((0..n).map(|i| nums.get(i).map_or(0.0, |x| x.value())))
}

fn matrix(nums: &[Num], rows: usize, cols: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        nums.get(i * cols + j).map_or(0.0, |x| x.value())
    })
}

/// How the fuzzer's matrix is turned into the operator, so that every solver meets both
/// instances satisfying its assumptions and instances violating them.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Shape {
    /// As given.
    Raw,
    /// `(M + Mᵀ)/2`.
    Symmetric,
    /// `MᵀM/‖M‖_F² + s·I` (`s` ≥ 0 from the byte): symmetric positive (semi)definite.
    Spd(u8),
    /// `q·M/‖M‖_F` with `q = byte/256`: a contraction, spectral norm ≤ q < 1.
    Contraction(u8),
    /// `q·(M + Mᵀ)/‖M + Mᵀ‖_F`: a symmetric contraction.
    SymmetricContraction(u8),
}

/// Euclidean norm without overflow or underflow in the squares (scaled by the largest entry).
fn scaled_norm<'a>(xs: impl Iterator<Item = &'a f64> + Clone) -> f64 {
    let m = xs.clone().fold(0.0_f64, |m, x| m.max(x.abs()));
    if m == 0.0 || !m.is_finite() {
        return m;
    }
    m * xs.map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
}

fn frobenius(m: &Array2<f64>) -> f64 {
    scaled_norm(m.iter())
}

fn shaped(m: Array2<f64>, shape: Shape) -> Array2<f64> {
    let n = m.nrows();
    match shape {
        Shape::Raw => m,
        Shape::Symmetric => (&m + &m.t()) * 0.5,
        Shape::Spd(s) => {
            let f = frobenius(&m);
            let g = if f > 0.0 && f.is_finite() {
                let u = &m / f;
                u.t().dot(&u)
            } else {
                Array2::zeros((n, n))
            };
            g + Array2::<f64>::eye(n) * (f64::from(s) / 64.0)
        }
        Shape::Contraction(q) => {
            let f = frobenius(&m);
            if f > 0.0 && f.is_finite() {
                m * (f64::from(q) / 256.0 / f)
            } else {
                m
            }
        }
        Shape::SymmetricContraction(q) => {
            let s = &m + &m.t();
            let f = frobenius(&s);
            if f > 0.0 && f.is_finite() {
                s * (f64::from(q) / 256.0 / f)
            } else {
                s
            }
        }
    }
}

fn norm(v: &Array1<f64>) -> f64 {
    scaled_norm(v.iter())
}

/// Whether every entry is 0 or of moderate size (`1e-100 ≤ |x| ≤ 1e100`), so that dense
/// reference computations are themselves trustworthy (products neither overflow nor
/// underflow into subnormals).
fn tame(xs: impl IntoIterator<Item = f64>) -> bool {
    xs.into_iter()
        .all(|x| x == 0.0 || (x.is_finite() && (1e-100..=1e100).contains(&x.abs())))
}

/// The operator given to a solver: a dense matrix, optionally failing at one application
/// (an autodiff call that errors) so that errors are seen to propagate as typed errors.
struct Op {
    m: Array2<f64>,
    fail_at: Option<usize>,
    applications: usize,
}

impl Op {
    fn apply(&mut self, x: &Array1<f64>, out: &mut Array1<f64>) -> Result<(), String> {
        self.applications += 1;
        if self.fail_at == Some(self.applications) {
            return Err(format!(
                "injected failure at application {}",
                self.applications
            ));
        }
        out.assign(&self.m.dot(x));
        Ok(())
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum SolverChoice {
    FixedPoint {
        max_iter: u8,
        abs_tol: Num,
        rel_tol: Num,
        contraction: Option<Num>,
        symmetric: bool,
        require_convergence: bool,
        divergence_factor: Option<Num>,
    },
    Neumann {
        terms: u8,
        contraction: Option<Num>,
        symmetric: bool,
    },
    Cg {
        max_iter: u8,
        abs_tol: Num,
        rel_tol: Num,
        lambda_min: Option<Num>,
        verify_residual: bool,
        max_restarts: u8,
        require_convergence: bool,
    },
}

#[derive(Debug, Arbitrary)]
struct SolverInput {
    dim: u8,
    shape: Shape,
    matrix: Vec<Num>,
    rhs: Vec<Num>,
    x0: Vec<Num>,
    solver: SolverChoice,
    fail_at: Option<u8>,
}

/// Rounding slack for a residual `‖b − A x‖` computed in floating point.
fn residual_slack(a: &Array2<f64>, x: &Array1<f64>, b: &Array1<f64>) -> f64 {
    let n = a.nrows() as f64;
    64.0 * n * f64::EPSILON * (frobenius(a) * norm(x) + norm(b)) + f64::MIN_POSITIVE
}

/// Rounding slack of the identity part of `I − M`.
fn residual_slack_identity(x: &Array1<f64>) -> f64 {
    64.0 * x.len() as f64 * f64::EPSILON * norm(x)
}

/// The solvers on small dense operators.
///
/// Contracts checked: no panic; an `Ok` has a finite iterate and a finite, non-negative
/// residual; CG's *verified* residual is the true residual (up to rounding) and, when converged,
/// meets the tolerance; a fixed-point result's true residual is at most `‖J‖` times its last
/// step; a *certified* error bound holds against the dense solution whenever the certified
/// assumption (`‖J‖ ≤ q < 1`, or `A` symmetric with `λ_min(A) ≥ lambda_min`) is true.
pub fn solvers(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = SolverInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let n = 1 + usize::from(input.dim) % MAX_DIM;
    let m = shaped(matrix(&input.matrix, n, n), input.shape);
    if std::env::var_os("IBAU_FUZZ_DEBUG").is_some() {
        eprintln!("{input:#?}\nmatrix {m:?}");
    }
    let b = vector(&input.rhs, n);
    let mut x = vector(&input.x0, n);
    let mut op = Op {
        m: m.clone(),
        fail_at: input.fail_at.map(usize::from),
        applications: 0,
    };
    let mut f = Fallible(|v: &Array1<f64>, out: &mut Array1<f64>| op.apply(v, out));
    // The system matrix A (CG solves A x = b; fixed point solves (I − M) x = b).
    let (result, a, certified_assumption) = match input.solver.clone() {
        SolverChoice::FixedPoint {
            max_iter,
            abs_tol,
            rel_tol,
            contraction,
            symmetric,
            require_convergence,
            divergence_factor,
        } => {
            let mut p = fixed_point::Params {
                max_iter: usize::from(max_iter),
                abs_tol: abs_tol.value(),
                rel_tol: rel_tol.value(),
                contraction: contraction.map(Num::value),
                symmetric,
                require_convergence,
                ..fixed_point::Params::default()
            };
            if let Some(d) = divergence_factor {
                p.divergence_factor = d.value();
            }
            let r = fixed_point::solve(&mut f, &b, &mut x, &p, &mut ());
            let q = p.contraction;
            (r, Array2::eye(n) - &m, contraction_holds(&m, q, symmetric))
        }
        SolverChoice::Neumann {
            terms,
            contraction,
            symmetric,
        } => {
            let p = neumann::Params {
                terms: usize::from(terms),
                contraction: contraction.map(Num::value),
                symmetric,
            };
            let r = neumann::solve(&mut f, &b, &mut x, &p, &mut ());
            let q = p.contraction;
            (r, Array2::eye(n) - &m, contraction_holds(&m, q, symmetric))
        }
        SolverChoice::Cg {
            max_iter,
            abs_tol,
            rel_tol,
            lambda_min,
            verify_residual,
            max_restarts,
            require_convergence,
        } => {
            // Spelled out field by field; `..default()` keeps it compiling when fields are added.
            #[allow(clippy::needless_update)]
            let p = cg::Params {
                max_iter: usize::from(max_iter),
                abs_tol: abs_tol.value(),
                rel_tol: rel_tol.value(),
                lambda_min: lambda_min.map(Num::value),
                verify_residual,
                max_restarts: usize::from(max_restarts),
                require_convergence,
                ..cg::Params::default()
            };
            let r = cg::solve(&mut f, &b, &mut x, &p, &mut ());
            let holds = p.lambda_min.is_some_and(|l| spd_with(&m, l));
            (r, m.clone(), holds)
        }
    };
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            // Typed by construction; its message must render, and an injected failure must
            // come back as the operator's error, not as something else.
            let _ = e.to_string();
            if matches!(e, Error::Operator(_)) {
                assert!(
                    op.fail_at.is_some_and(|k| op.applications >= k),
                    "Operator error without an injected failure: {e}"
                );
            }
            return;
        }
    };
    assert!(
        x.iter().all(|v| v.is_finite()),
        "Ok with a non-finite iterate"
    );
    assert!(
        info.residual.is_finite() && info.residual >= 0.0,
        "Ok with residual {}",
        info.residual
    );
    if let Some(bound) = info.error_bound {
        assert!(bound.value >= 0.0, "error bound {} < 0", bound.value);
    }
    if !(tame(m.iter().copied()) && tame(b.iter().copied()) && tame(x.iter().copied())) {
        return;
    }
    let r_true = norm(&(&b - &a.dot(&x)));
    // Rounding in the solver's own products scales with its operator (M, not A = I − M: with
    // ‖A‖ ≈ 0 a step ‖Mx − x‖ still carries errors of order ε‖x‖).
    let slack =
        residual_slack(&a, &x, &b) + residual_slack(&m, &x, &b) + residual_slack_identity(&x);
    match input.solver {
        SolverChoice::Cg { .. } => {
            if info.residual_verified {
                assert!(
                    (r_true - info.residual).abs() <= slack + 1e-9 * info.residual,
                    "verified residual {} but true residual {r_true}",
                    info.residual
                );
                if info.termination == Termination::Converged {
                    assert!(
                        r_true <= info.tolerance + slack,
                        "converged with true residual {r_true} > tolerance {}",
                        info.tolerance
                    );
                }
            }
        }
        _ => {
            // The returned iterate's residual is at most ‖J‖ times the last recorded step.
            if let Ok(j) = dense::spectral_norm(&m) {
                assert!(
                    r_true <= j * info.residual * (1.0 + 1e-9) + slack,
                    "fixed point: true residual {r_true} > ‖J‖ {j} × last step {}",
                    info.residual
                );
            }
        }
    }
    let Some(bound) = info.error_bound.filter(|b| b.is_certified()) else {
        return;
    };
    if !certified_assumption {
        return;
    }
    // A is invertible here (‖J‖ < 1, or SPD with λ_min > 0): compare with the dense solution.
    let Ok(x_star) = dense::solve(&a, &b) else {
        return;
    };
    let Some(sigma_min) = smallest_singular_value(&a) else {
        return;
    };
    let err = norm(&(&x - &x_star));
    let tol = bound.value * (1.0 + 1e-7)
        + (slack + 64.0 * f64::EPSILON * norm(&b)) / sigma_min
        + 1e-9 * norm(&x_star);
    assert!(
        err <= tol,
        "certified bound {} violated: ‖x − x*‖ = {err} (σ_min(A) = {sigma_min}, info {info:?})",
        bound.value
    );
}

/// Whether `q` is a true bound on `‖M‖` with `q < 1` (and `M` symmetric when claimed), with a
/// margin against rounding in the reference.
fn contraction_holds(m: &Array2<f64>, q: Option<f64>, symmetric: bool) -> bool {
    let Some(q) = q.filter(|q| q.is_finite() && *q < 1.0) else {
        return false;
    };
    if symmetric && m != m.t() {
        return false;
    }
    tame(m.iter().copied())
        && dense::spectral_norm(m).is_ok_and(|j| j * (1.0 + 1e-9) + 1e-300 <= q && q < 1.0 - 1e-9)
}

/// Whether `m` is exactly symmetric with `λ_min(m) ≥ l > 0` (with a margin).
fn spd_with(m: &Array2<f64>, l: f64) -> bool {
    if !(l.is_finite() && l > 1e-200) || m != m.t() || !tame(m.iter().copied()) {
        return false;
    }
    let Ok(eig) = dense::symmetric_eigenvalues(m) else {
        return false;
    };
    let scale = frobenius(m);
    eig.iter()
        .all(|&e| e >= l * (1.0 + 1e-9) + 64.0 * f64::EPSILON * scale)
}

fn smallest_singular_value(a: &Array2<f64>) -> Option<f64> {
    // σ_min(A)² = λ_min(AᵀA); the Gram matrix is symmetric.
    let g = a.t().dot(a);
    let e = dense::symmetric_eigenvalues(&g).ok()?;
    let s = e
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.0)
        .sqrt();
    (s > 0.0 && s.is_finite()).then_some(s)
}

#[derive(Debug, Arbitrary)]
struct PcgInput {
    dim: u8,
    shape: Shape,
    matrix: Vec<Num>,
    rhs: Vec<Num>,
    x0: Vec<Num>,
    /// `None`: Jacobi from the matrix's own diagonal; `Some`: an arbitrary diagonal.
    diagonal: Option<Vec<Num>>,
    max_iter: u8,
    abs_tol: Num,
    rel_tol: Num,
    lambda_min: Option<Num>,
    target_error: Option<Num>,
    error_scale: Num,
    verify_residual: bool,
    max_restarts: u8,
    require_convergence: bool,
    fail_at: Option<u8>,
    gauss_radau: bool,
}

/// Preconditioned CG with a Jacobi preconditioner (the matrix's diagonal or an arbitrary one)
/// and accuracy-driven stopping.
///
/// Contracts: as for CG in [`solvers`]; with `target_error` met, the certified bound is at most
/// the target, and it holds against the dense solution whenever `A` is symmetric with
/// `λ_min(A) ≥ lambda_min`.
pub fn pcg(data: &[u8]) {
    use ibau_core::precond::Jacobi;
    use ibau_core::solve::pcg;
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = PcgInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let n = 1 + usize::from(input.dim) % MAX_DIM;
    let a = shaped(matrix(&input.matrix, n, n), input.shape);
    let b = vector(&input.rhs, n);
    let mut x = vector(&input.x0, n);
    let diag: Vec<f64> = match &input.diagonal {
        None => (0..n).map(|i| a[[i, i]]).collect(),
        Some(d) => vector(d, n).to_vec(),
    };
    let Ok(mut jacobi) = Jacobi::from_diagonal(&diag) else {
        return;
    };
    let params = pcg::Params {
        max_iter: usize::from(input.max_iter),
        abs_tol: input.abs_tol.value(),
        rel_tol: input.rel_tol.value(),
        lambda_min: input.lambda_min.map(Num::value),
        target_error: input.target_error.map(Num::value),
        error_scale: input.error_scale.value(),
        verify_residual: input.verify_residual,
        max_restarts: usize::from(input.max_restarts),
        require_convergence: input.require_convergence,
        timing: false,
        gauss_radau: input.gauss_radau,
    };
    let mut op = Op {
        m: a.clone(),
        fail_at: input.fail_at.map(usize::from),
        applications: 0,
    };
    let mut f = Fallible(|v: &Array1<f64>, out: &mut Array1<f64>| op.apply(v, out));
    let info = match pcg::solve(&mut f, &mut jacobi, &b, &mut x, &params, &mut ()) {
        Ok(info) => info,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        x.iter().all(|v| v.is_finite()),
        "Ok with a non-finite iterate"
    );
    assert!(
        info.residual.is_finite() && info.residual >= 0.0,
        "Ok with residual {}",
        info.residual
    );
    if let Some(bound) = info.error_bound {
        assert!(bound.value >= 0.0, "error bound {} < 0", bound.value);
    }
    if info.termination == Termination::ErrorTarget {
        let (Some(bound), Some(target)) = (info.error_bound, params.target_error) else {
            panic!("ErrorTarget without a bound or a target: {info:?}");
        };
        assert!(bound.is_certified(), "ErrorTarget with an estimated bound");
        assert!(
            bound.value * params.error_scale <= target * (1.0 + 1e-12),
            "ErrorTarget with bound {} × scale {} > target {target}",
            bound.value,
            params.error_scale
        );
    }
    if !(tame(a.iter().copied()) && tame(b.iter().copied()) && tame(x.iter().copied())) {
        return;
    }
    let r_true = norm(&(&b - &a.dot(&x)));
    let slack = residual_slack(&a, &x, &b);
    if info.residual_verified {
        assert!(
            (r_true - info.residual).abs() <= slack + 1e-9 * info.residual,
            "verified residual {} but true residual {r_true}",
            info.residual
        );
        if info.termination == Termination::Converged {
            assert!(
                r_true <= info.tolerance + slack,
                "converged with true residual {r_true} > tolerance {}",
                info.tolerance
            );
        }
    }
    let Some(bound) = info.error_bound.filter(|b| b.is_certified()) else {
        return;
    };
    if !params.lambda_min.is_some_and(|l| spd_with(&a, l)) {
        return;
    }
    let Ok(x_star) = dense::solve(&a, &b) else {
        return;
    };
    let Some(sigma_min) = smallest_singular_value(&a) else {
        return;
    };
    let err = norm(&(&x - &x_star));
    let tol = bound.value * (1.0 + 1e-7)
        + (slack + 64.0 * f64::EPSILON * norm(&b)) / sigma_min
        + 1e-9 * norm(&x_star);
    assert!(
        err <= tol,
        "certified PCG bound {} violated: ‖x − x*‖ = {err} (σ_min(A) = {sigma_min}, info {info:?})",
        bound.value
    );
}

#[derive(Debug, Arbitrary)]
struct HypergradientInput {
    dim_w: u8,
    dim_l: u8,
    shape: Shape,
    jt: Vec<Num>,
    cross: Vec<Num>,
    grad_w: Vec<Num>,
    grad_lambda: Vec<Num>,
    warm_start: Option<Vec<Num>>,
    method: u8,
    iterations: u8,
    rel_tol: Num,
    contraction: Option<Num>,
    symmetric: bool,
    cross_norm: Option<Num>,
    fail_jt_at: Option<u8>,
    fail_cross: bool,
}

/// The hypergradient assembly with arbitrary dimensions and values.
///
/// Contracts: no panic; an `Ok` gradient is finite and equals `∇_λE + C v` for the returned `v`
/// (up to rounding); a certified hypergradient bound holds against the dense hypergradient when
/// the certified assumptions (`‖Jᵀ‖ ≤ q < 1`, symmetric when claimed, `c ≥ ‖C‖`) are true.
pub fn hypergradient(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = HypergradientInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let nw = 1 + usize::from(input.dim_w) % MAX_DIM;
    let nl = 1 + usize::from(input.dim_l) % 4;
    let jt = shaped(matrix(&input.jt, nw, nw), input.shape);
    let cross = matrix(&input.cross, nl, nw);
    let grad_w = vector(&input.grad_w, nw);
    let grad_lambda = vector(&input.grad_lambda, nl);
    // Wrong-sized warm starts are part of the input space.
    let warm: Option<Array1<f64>> = input
        .warm_start
        .as_ref()
        .map(|w| vector(w, if w.len() % 7 == 6 { nw + 1 } else { nw }));
    let iters = usize::from(input.iterations);
    let method = match input.method % 3 {
        0 => Method::FixedPoint(fixed_point::Params {
            max_iter: iters,
            rel_tol: input.rel_tol.value(),
            require_convergence: false,
            ..fixed_point::Params::default()
        }),
        1 => Method::Neumann(neumann::Params {
            terms: iters,
            ..neumann::Params::default()
        }),
        _ => Method::ConjugateGradient(cg::Params {
            max_iter: iters,
            rel_tol: input.rel_tol.value(),
            require_convergence: false,
            ..cg::Params::default()
        }),
    };
    let params = HgParams {
        method,
        contraction: input.contraction.map(Num::value),
        symmetric: input.symmetric,
        cross_norm: input.cross_norm.map(Num::value),
    };
    let mut jt_op = Op {
        m: jt.clone(),
        fail_at: input.fail_jt_at.map(usize::from),
        applications: 0,
    };
    let fail_cross = input.fail_cross;
    let cross_m = cross.clone();
    let mut problem = Problem {
        jt: Fallible(|v: &Array1<f64>, out: &mut Array1<f64>| jt_op.apply(v, out)),
        cross_t: Fallible(move |v: &Array1<f64>, out: &mut Array1<f64>| {
            if fail_cross {
                return Err("injected cross failure".to_string());
            }
            out.assign(&cross_m.dot(v));
            Ok(())
        }),
        grad_w: grad_w.clone(),
        grad_lambda: grad_lambda.clone(),
    };
    let result = compute_hypergradient(&mut problem, &params, warm.as_ref(), &mut ());
    let hg = match result {
        Ok(hg) => hg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!fail_cross, "Ok although the cross operator failed");
    assert_eq!(hg.gradient.len(), nl);
    assert_eq!(hg.v.len(), nw);
    assert!(
        hg.gradient.iter().all(|g| g.is_finite()),
        "non-finite gradient"
    );
    assert!(hg.v.iter().all(|g| g.is_finite()), "non-finite v");
    if !(tame(jt.iter().copied())
        && tame(cross.iter().copied())
        && tame(grad_w.iter().copied())
        && tame(grad_lambda.iter().copied())
        && tame(hg.v.iter().copied()))
    {
        return;
    }
    let assembled = &grad_lambda + &cross.dot(&hg.v);
    let scale = norm(&grad_lambda) + frobenius(&cross) * norm(&hg.v);
    let d = norm(&(&assembled - &hg.gradient));
    assert!(
        d <= 64.0 * f64::EPSILON * scale * (nw as f64) + f64::MIN_POSITIVE,
        "gradient ≠ ∇λE + C v by {d}"
    );
    let Some(bound) = hg.error_bound.filter(|b| b.is_certified()) else {
        return;
    };
    let q_ok = match params.method {
        Method::ConjugateGradient(_) => {
            params.symmetric && contraction_holds(&jt, params.contraction, true)
        }
        _ => contraction_holds(&jt, params.contraction, params.symmetric),
    };
    let c_ok = params
        .cross_norm
        .is_some_and(|c| dense::spectral_norm(&cross).is_ok_and(|s| s * (1.0 + 1e-9) <= c));
    if !(q_ok && c_ok) {
        return;
    }
    let Ok((g_star, v_star)) = dense::hypergradient(&jt, &cross, &grad_w, &grad_lambda) else {
        return;
    };
    let a = Array2::eye(nw) - &jt;
    let Some(sigma_min) = smallest_singular_value(&a) else {
        return;
    };
    let c = params.cross_norm.unwrap_or(0.0);
    let err = norm(&(&hg.gradient - &g_star));
    let slack = c * residual_slack(&a, &hg.v, &grad_w) / sigma_min
        + 1e-9 * (norm(&g_star) + c * norm(&v_star))
        + 64.0 * f64::EPSILON * scale;
    assert!(
        err <= bound.value * (1.0 + 1e-7) + slack,
        "certified hypergradient bound {} violated: error {err}",
        bound.value
    );
}

#[derive(Debug, Arbitrary)]
enum ConfigInput<'a> {
    /// Any text.
    Text(&'a str),
    /// Lines of `key = value` from known keys, to get past the parser more often.
    Lines(Vec<(u8, ConfigValue<'a>)>),
}

#[derive(Debug, Arbitrary)]
enum ConfigValue<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Word(u8),
}

const CONFIG_KEYS: &[&str] = &[
    "dataset",
    "attack",
    "target",
    "poison_ratio",
    "arch",
    "epochs",
    "train_batch_size",
    "train_lr",
    "clean_size",
    "seed",
    "preset",
    "method",
    "[unlearn]",
    "rounds",
    "batch_size",
    "outer_lr",
    "inner_lr",
    "reg",
    "fp_alpha",
    "solver",
    "perturb_fraction",
    "projection",
    "warm_start",
    "on_solver_failure",
    "[unlearn.solver]",
    "fixed-point",
    "steps",
    "kind",
];

const CONFIG_WORDS: &[&str] = &[
    "mnist",
    "fashion-mnist",
    "badnets",
    "blended",
    "sig",
    "all-to-all",
    "cnn",
    "vgg",
    "paper",
    "tuned",
    "ibau",
    "fine-tune",
    "nan",
    "inf",
    "-inf",
    "true",
    "cg",
    "fixed-point",
    "direct-gradient",
    "skip",
    "abort",
    "{}",
    "[]",
];

/// Experiment config files (TOML).
///
/// Contracts: no panic; an accepted config validates, serialises, and parses back equal.
pub fn config_toml(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = ConfigInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let text = match input {
        ConfigInput::Text(t) => t.to_owned(),
        ConfigInput::Lines(lines) => {
            let mut s = String::new();
            for (k, v) in lines {
                let key = CONFIG_KEYS[usize::from(k) % CONFIG_KEYS.len()];
                if key.starts_with('[') {
                    s.push_str(key);
                } else {
                    let value = match v {
                        ConfigValue::Int(i) => i.to_string(),
                        ConfigValue::Float(x) => format!("{x:?}"),
                        ConfigValue::Str(t) => format!("{t:?}"),
                        ConfigValue::Word(w) => {
                            let w = CONFIG_WORDS[usize::from(w) % CONFIG_WORDS.len()];
                            if w.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                                format!("\"{w}\"")
                            } else {
                                w.to_owned()
                            }
                        }
                    };
                    s.push_str(&format!("{key} = {value}"));
                }
                s.push('\n');
            }
            s
        }
    };
    let Ok(cfg) = ibau_plugin::config::ExperimentConfig::from_toml(&text) else {
        return;
    };
    cfg.validate()
        .expect("from_toml returned a config that does not validate");
    let _ = cfg.unlearn_config();
    let out = cfg.to_toml().expect("an accepted config serialises");
    let back = ibau_plugin::config::ExperimentConfig::from_toml(&out)
        .unwrap_or_else(|e| panic!("serialised config does not parse back: {e}\n{out}"));
    assert_eq!(back, cfg, "config changed in a TOML round trip:\n{out}");
}

#[derive(Debug, Arbitrary)]
enum IdxInput<'a> {
    Images(&'a [u8]),
    Labels(&'a [u8]),
    /// A well-formed header followed by arbitrary bytes.
    ImagesWithHeader(u16, u8, u8, &'a [u8]),
    Gunzip(u32, &'a [u8]),
    /// gzip round trip: compress, then decompress with `limit`.
    GzipRoundTrip(u32, &'a [u8]),
}

/// Dataset file parsers: idx images and labels, gzip.
///
/// Contracts: no panic; accepted images hold exactly `n·rows·cols` bytes; accepted labels are
/// as many as the header says and all `< 10`; `gunzip` never returns more than its limit and
/// inverts gzip exactly when the limit allows.
pub fn idx(data: &[u8]) {
    use ibau_plugin::data::{gunzip, parse_idx_images, parse_idx_labels};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = IdxInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        IdxInput::Images(bytes) => check_images(bytes, parse_idx_images(bytes)),
        IdxInput::ImagesWithHeader(n, rows, cols, body) => {
            let mut bytes = Vec::with_capacity(16 + body.len());
            for v in [2051u32, n.into(), rows.into(), cols.into()] {
                bytes.extend_from_slice(&v.to_be_bytes());
            }
            bytes.extend_from_slice(body);
            let parsed = parse_idx_images(&bytes);
            let expect_ok = usize::from(n) * usize::from(rows) * usize::from(cols) == body.len();
            assert_eq!(parsed.is_ok(), expect_ok, "idx images verdict");
            check_images(&bytes, parsed);
        }
        IdxInput::Labels(bytes) => {
            if let Ok(labels) = parse_idx_labels(bytes) {
                let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                assert_eq!(labels.len() as u64, u64::from(n));
                assert!(labels.iter().all(|&l| l < 10));
            }
        }
        IdxInput::Gunzip(limit, bytes) => {
            let limit = (limit % (1 << 20)) as usize;
            if let Ok(out) = gunzip(bytes, limit) {
                assert!(out.len() <= limit, "gunzip exceeded its limit");
            }
        }
        IdxInput::GzipRoundTrip(limit, payload) => {
            let limit = (limit % (1 << 17)) as usize;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(payload).expect("gzip into memory");
            let gz = enc.finish().expect("gzip into memory");
            match gunzip(&gz, limit) {
                Ok(out) => {
                    assert!(payload.len() <= limit);
                    assert_eq!(out, payload);
                }
                Err(_) => assert!(payload.len() > limit, "gunzip rejected valid gzip"),
            }
        }
    }
}

type ImagesResult<'a> = ibau_plugin::Result<(usize, usize, usize, &'a [u8])>;

fn check_images(bytes: &[u8], parsed: ImagesResult<'_>) {
    if let Ok((n, rows, cols, pixels)) = parsed {
        assert_eq!(pixels.len(), n * rows * cols);
        assert_eq!(bytes.len(), 16 + pixels.len());
    }
}

#[derive(Debug, Arbitrary)]
enum SafetensorsInput<'a> {
    /// Any file.
    Raw(&'a [u8]),
    /// A header (any text) with a correct length prefix, then data.
    Header(&'a str, &'a [u8]),
    /// A structurally plausible header built from parts.
    Built(Vec<(u8, u8, Vec<u8>, u16, u16)>, u16, bool),
}

const DTYPES: &[&str] = &[
    "F32", "F64", "I64", "U8", "BOOL", "F16", "BF16", "I32", "I16", "I8", "U16", "F8_E4M3", "x",
];

/// Safetensors model files: [`ibau_plugin::model_io::parse_safetensors_header`].
///
/// Contracts: no panic; an accepted file is also accepted by the `safetensors` crate that tch
/// reads with, with the same tensors (names, dtypes, shapes, offsets), and its tensors tile the
/// data exactly.
pub fn safetensors(data: &[u8]) {
    use ibau_plugin::model_io::parse_safetensors_header;
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = SafetensorsInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let file: Vec<u8> = match input {
        SafetensorsInput::Raw(b) => b.to_vec(),
        SafetensorsInput::Header(h, rest) => {
            let mut f = (h.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(h.as_bytes());
            f.extend_from_slice(rest);
            f
        }
        SafetensorsInput::Built(parts, extra, metadata) => {
            let mut entries = Vec::new();
            for (i, (name, dtype, shape, begin, end)) in parts.iter().enumerate().take(8) {
                let dtype = DTYPES[usize::from(*dtype) % DTYPES.len()];
                let shape: Vec<String> =
                    shape.iter().take(4).map(|d| (d % 5).to_string()).collect();
                entries.push(format!(
                    "\"t{name}_{i}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{begin},{end}]}}",
                    shape.join(",")
                ));
            }
            if metadata {
                entries.push("\"__metadata__\":{\"format\":\"pt\"}".into());
            }
            let header = format!("{{{}}}", entries.join(","));
            let mut f = (header.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(header.as_bytes());
            f.resize(f.len() + usize::from(extra % 4096), 0);
            f
        }
    };
    let Ok(entries) = parse_safetensors_header(&file) else {
        return;
    };
    let theirs = safetensors::SafeTensors::deserialize(&file).unwrap_or_else(|e| {
        panic!("accepted by parse_safetensors_header, rejected by safetensors: {e:?}")
    });
    let mut names: Vec<String> = theirs.names().into_iter().cloned().collect();
    names.sort();
    let mut ours: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    ours.sort();
    assert_eq!(
        ours, names,
        "tensor names differ from the safetensors crate's"
    );
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let data_len = file.len() - 8 - n;
    let mut at = 0;
    for e in &entries {
        let view = theirs.tensor(&e.name).expect("named tensor");
        assert_eq!(view.shape(), e.shape.as_slice(), "shape of {}", e.name);
        assert_eq!(
            format!("{:?}", view.dtype()),
            e.dtype,
            "dtype of {}",
            e.name
        );
        assert_eq!(view.data().len(), e.data.len(), "size of {}", e.name);
        assert_eq!(e.data.start, at, "tensors do not tile the data");
        at = e.data.end;
    }
    assert_eq!(at, data_len, "tensors do not cover the data");
}

#[derive(Debug, Arbitrary)]
enum MlflowInput<'a> {
    /// A successful answer of one endpoint.
    Answer(u8, &'a [u8]),
    /// An error answer (status, body).
    ApiError(u16, &'a str),
    /// A spool file as found on disk after a crash.
    Spool(&'a str),
}

/// MLflow JSON answers and spool files.
///
/// Contracts: no panic; a decoded answer re-encodes to JSON that decodes to the same value
/// (nothing is half-read); an error answer's message is bounded; a spool file opens or gives a
/// typed error.
pub fn mlflow_json(data: &[u8]) {
    use ibau_plugin::mlflow::responses::{
        api_error, decode, CreateExperiment, GetExperiment, GetRun, ListArtifacts, MetricHistory,
        SearchRuns,
    };
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(input) = MlflowInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    fn round_trip<T>(bytes: &[u8])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = decode::<T>("fuzz", bytes) {
            let json = serde_json::to_vec(&v).expect("a decoded answer re-encodes");
            let back: T = decode("fuzz", &json)
                .unwrap_or_else(|e| panic!("re-encoded answer does not decode: {e}"));
            // NaN metric values are not equal to themselves; compare their encodings instead.
            assert_eq!(
                serde_json::to_vec(&back).expect("re-encodes"),
                json,
                "answer changed in a round trip: {v:?}"
            );
        }
    }
    match input {
        MlflowInput::Answer(kind, bytes) => match kind % 6 {
            0 => round_trip::<GetExperiment>(bytes),
            1 => round_trip::<CreateExperiment>(bytes),
            2 => round_trip::<GetRun>(bytes),
            3 => round_trip::<MetricHistory>(bytes),
            4 => round_trip::<SearchRuns>(bytes),
            _ => round_trip::<ListArtifacts>(bytes),
        },
        MlflowInput::ApiError(status, body) => {
            let e = api_error("fuzz", status, body);
            let text = e.to_string();
            if serde_json::from_str::<serde_json::Value>(body).is_err() {
                assert!(
                    text.chars().count() <= 500 + 200,
                    "error message not bounded"
                );
            }
        }
        MlflowInput::Spool(text) => {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(text.as_bytes()).expect("write temp file");
            let _ = ibau_plugin::mlflow::spool::Spool::open(file.path());
        }
    }
}
