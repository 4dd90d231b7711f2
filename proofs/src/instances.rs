//! Instances with known answers: symmetric matrices with a prescribed spectrum, contractions with
//! a prescribed norm, quadratic bilevel problems whose every Lipschitz constant is an exact
//! operator norm, and ridge regression tuned on a validation loss.
//!
//! Orthogonal matrices are products of Householder reflections `I − 2uuᵀ/uᵀu`, which are
//! orthogonal to rounding for any non-zero `u`; so `Q diag(d) Qᵀ` has the spectrum `d` up to a
//! few ulps, without calling an eigensolver. The dense linear algebra (LU solves, SVD, symmetric
//! eigenvalues) is the core's LAPACK oracle [`ibau_core::dense`].

use ibau_core::dense::{self, DenseOperator};
use ibau_core::{Problem, Result};
use ndarray::{Array1, Array2, Axis};

/// Euclidean norm `‖x‖₂`.
pub fn norm(x: &Array1<f64>) -> f64 {
    x.dot(x).sqrt()
}

/// Euclidean distance `‖x − y‖₂`.
pub fn dist(x: &Array1<f64>, y: &Array1<f64>) -> f64 {
    norm(&(x - y))
}

/// The A-norm `‖x‖_A = √(xᵀAx)` (A symmetric positive semi-definite; rounding below zero is
/// clamped to zero).
pub fn a_norm(a: &Array2<f64>, x: &Array1<f64>) -> f64 {
    x.dot(&a.dot(x)).max(0.0).sqrt()
}

/// Product of the Householder reflections `I − 2uuᵀ/uᵀu` for the vectors `u` in `vs` (each of
/// length `n`); vectors with `uᵀu < 10⁻⁶` are skipped, so the result is always orthogonal.
///
/// # Panics
/// If a vector's length differs from `n` (programmer error).
pub fn householder_orthogonal(n: usize, vs: &[Vec<f64>]) -> Array2<f64> {
    let mut q = Array2::<f64>::eye(n);
    for v in vs {
        assert_eq!(v.len(), n, "householder vector of the wrong length");
        let u = Array1::from(v.clone());
        let uu = u.dot(&u);
        if uu < 1e-6 {
            continue;
        }
        // q ← q (I − 2uuᵀ/uᵀu)
        let qu = q.dot(&u);
        for i in 0..n {
            for j in 0..n {
                q[[i, j]] -= 2.0 * qu[i] * u[j] / uu;
            }
        }
    }
    q
}

/// A symmetric matrix `Q diag(λ) Qᵀ` with a known spectrum and eigenbasis.
#[derive(Debug, Clone)]
pub struct Spectral {
    /// The matrix, symmetrised exactly.
    pub matrix: Array2<f64>,
    /// Its eigenvalues, ascending.
    pub eigenvalues: Vec<f64>,
    /// Orthogonal; column `j` is the unit eigenvector of `eigenvalues[j]`.
    pub eigenvectors: Array2<f64>,
}

impl Spectral {
    /// `Q diag(eigenvalues) Qᵀ` with `Q` the product of the Householder reflections `householder`
    /// (see [`householder_orthogonal`]). The eigenvalues are sorted ascending first.
    ///
    /// # Panics
    /// If `eigenvalues` is empty or a Householder vector has the wrong length.
    pub fn new(eigenvalues: &[f64], householder: &[Vec<f64>]) -> Self {
        assert!(!eigenvalues.is_empty(), "a spectrum needs an eigenvalue");
        let mut ev = eigenvalues.to_vec();
        ev.sort_by(f64::total_cmp);
        let n = ev.len();
        let q = householder_orthogonal(n, householder);
        let d = Array2::from_diag(&Array1::from(ev.clone()));
        let m = q.dot(&d).dot(&q.t());
        let matrix = (&m + &m.t()) * 0.5;
        Spectral {
            matrix,
            eigenvalues: ev,
            eigenvectors: q,
        }
    }

    /// Dimension.
    pub fn n(&self) -> usize {
        self.eigenvalues.len()
    }

    /// Smallest eigenvalue.
    pub fn min(&self) -> f64 {
        self.eigenvalues[0]
    }

    /// Largest eigenvalue.
    pub fn max(&self) -> f64 {
        self.eigenvalues[self.n() - 1]
    }

    /// Spectral norm `max |λ_i|`.
    pub fn norm(&self) -> f64 {
        self.min().abs().max(self.max().abs())
    }

    /// Unit eigenvector of `eigenvalues[j]`.
    pub fn eigenvector(&self, j: usize) -> Array1<f64> {
        self.eigenvectors.column(j).to_owned()
    }

    /// The vector with coordinates `coef` in the eigenbasis: `Σ_j coef_j q_j`.
    pub fn from_eigen_coordinates(&self, coef: &Array1<f64>) -> Array1<f64> {
        self.eigenvectors.dot(coef)
    }
}

/// Symmetric positive definite matrix of size `n = interior.len() + 2` with eigenvalues
/// `scale·κ^t` for `t ∈ {0, 1} ∪ interior` (`interior` in `[0, 1]`): both `λ_min = scale` and
/// `λ_max = scale·κ` are attained, so the condition number is exactly `κ`.
pub fn spd_with_condition(
    kappa: f64,
    scale: f64,
    interior: &[f64],
    householder: &[Vec<f64>],
) -> Spectral {
    let mut ev = vec![scale, scale * kappa];
    ev.extend(interior.iter().map(|t| scale * kappa.powf(*t)));
    Spectral::new(&ev, householder)
}

/// Symmetric matrix with spectral norm exactly `q`: eigenvalues `q·t` for `t ∈ interior`
/// (in `[−1, 1]`) plus one eigenvalue `q` (or `−q` when `negative`).
pub fn symmetric_contraction(
    q: f64,
    negative: bool,
    interior: &[f64],
    householder: &[Vec<f64>],
) -> Spectral {
    let mut ev = vec![if negative { -q } else { q }];
    ev.extend(interior.iter().map(|t| q * t.clamp(-1.0, 1.0)));
    Spectral::new(&ev, householder)
}

/// A general (non-symmetric) matrix `U diag(σ) Vᵀ` with singular values `σ = q ∪ q·interior`
/// (`interior` in `[0, 1]`), so its spectral norm is exactly `q`. `U` and `V` come from the two
/// sets of Householder vectors.
pub fn general_contraction(
    q: f64,
    interior: &[f64],
    householder_u: &[Vec<f64>],
    householder_v: &[Vec<f64>],
) -> Array2<f64> {
    let n = interior.len() + 1;
    let mut s = vec![q];
    s.extend(interior.iter().map(|t| q * t.clamp(0.0, 1.0)));
    let u = householder_orthogonal(n, householder_u);
    let v = householder_orthogonal(n, householder_v);
    u.dot(&Array2::from_diag(&Array1::from(s))).dot(&v.t())
}

/// A quadratic bilevel problem in which every constant of [`crate::aid_inexact`] is exact.
///
/// * inner: `G(w, λ) = ½ wᵀHw − wᵀ(Bλ + c)`, `w*(λ) = H⁻¹(Bλ + c)`; fixed-point map
///   `Φ(w, λ) = w − α∇_wG = w − α(Hw − Bλ − c)`, so `J = ∂_wΦ = I − αH` (symmetric) and
///   `∂_λΦ = αB`, both constant;
/// * outer: `E(w, λ) = ½ (w − w̄)ᵀP(w − w̄) + wᵀMλ + ½ r‖λ‖²`, so `∇_wE = P(w − w̄) + Mλ` and
///   `∇_λE = Mᵀw + rλ`; in `w` these are Lipschitz with constants exactly `‖P‖` and `‖M‖`;
/// * `f(λ) = E(w*(λ), λ)` and, since `dw*/dλ = H⁻¹B`, `∇f = ∇_λE + BᵀH⁻¹∇_wE`.
#[derive(Debug, Clone)]
pub struct QuadraticBilevel {
    /// Inner Hessian `H` (SPD).
    pub h: Spectral,
    /// Inner coupling `B` (`n × m`).
    pub b: Array2<f64>,
    /// Inner linear term `c`.
    pub c: Array1<f64>,
    /// Step size of the fixed-point map, `0 < α < 2/λ_max(H)`.
    pub alpha: f64,
    /// Outer curvature `P` (symmetric positive semi-definite).
    pub p: Spectral,
    /// Outer target `w̄`.
    pub w_bar: Array1<f64>,
    /// Outer coupling `M` (`n × m`).
    pub m: Array2<f64>,
    /// Outer regularisation `r ≥ 0`.
    pub r: f64,
}

impl QuadraticBilevel {
    /// Inner dimension `n`.
    pub fn n(&self) -> usize {
        self.h.n()
    }

    /// Outer dimension `m`.
    pub fn m(&self) -> usize {
        self.b.ncols()
    }

    /// `w*(λ) = H⁻¹(Bλ + c)` by a dense LU solve.
    ///
    /// # Errors
    /// The dense oracle's errors (a singular `H`).
    pub fn inner_solution(&self, lambda: &Array1<f64>) -> Result<Array1<f64>> {
        dense::solve(&self.h.matrix, &(self.b.dot(lambda) + &self.c))
    }

    /// `E(w, λ)`.
    pub fn outer(&self, w: &Array1<f64>, lambda: &Array1<f64>) -> f64 {
        let d = w - &self.w_bar;
        0.5 * d.dot(&self.p.matrix.dot(&d))
            + w.dot(&self.m.dot(lambda))
            + 0.5 * self.r * lambda.dot(lambda)
    }

    /// `f(λ) = E(w*(λ), λ)`.
    ///
    /// # Errors
    /// As [`QuadraticBilevel::inner_solution`].
    pub fn f(&self, lambda: &Array1<f64>) -> Result<f64> {
        Ok(self.outer(&self.inner_solution(lambda)?, lambda))
    }

    /// `∇_wE(w, λ) = P(w − w̄) + Mλ`.
    pub fn grad_w(&self, w: &Array1<f64>, lambda: &Array1<f64>) -> Array1<f64> {
        self.p.matrix.dot(&(w - &self.w_bar)) + self.m.dot(lambda)
    }

    /// `∇_λE(w, λ) = Mᵀw + rλ`.
    pub fn grad_lambda(&self, w: &Array1<f64>, lambda: &Array1<f64>) -> Array1<f64> {
        self.m.t().dot(w) + lambda * self.r
    }

    /// The matrix of `v ↦ Jᵀv`: `I − αH`.
    pub fn jt(&self) -> Array2<f64> {
        Array2::<f64>::eye(self.n()) - &self.h.matrix * self.alpha
    }

    /// The matrix of `v ↦ (∂_λΦ)ᵀv`: `αBᵀ` (`m × n`).
    pub fn cross_t(&self) -> Array2<f64> {
        self.b.t().to_owned() * self.alpha
    }

    /// `q = ‖J‖ = max(|1 − αλ_min(H)|, |1 − αλ_max(H)|)`, exact.
    pub fn q(&self) -> f64 {
        (1.0 - self.alpha * self.h.min())
            .abs()
            .max((1.0 - self.alpha * self.h.max()).abs())
    }

    /// The linearisation at `w*(λ)`: `Jᵀ = I − αH`, `(∂_λΦ)ᵀ = αBᵀ`, `∇_wE`, `∇_λE`.
    ///
    /// # Errors
    /// As [`QuadraticBilevel::inner_solution`].
    pub fn linearise(&self, lambda: &Array1<f64>) -> Result<Linearised> {
        let w = self.inner_solution(lambda)?;
        Ok(Linearised {
            jt: self.jt(),
            cross_t: self.cross_t(),
            grad_w: self.grad_w(&w, lambda),
            grad_lambda: self.grad_lambda(&w, lambda),
        })
    }

    /// The hypergradient in closed form, `∇_λE + BᵀH⁻¹∇_wE` at `w*(λ)`, solved on `H` (not on the
    /// operator `I − Jᵀ` the solvers see). Returns `(∇f, v*)` with `v* = H⁻¹∇_wE/α`.
    ///
    /// # Errors
    /// As [`QuadraticBilevel::inner_solution`].
    pub fn exact_hypergradient(&self, lambda: &Array1<f64>) -> Result<(Array1<f64>, Array1<f64>)> {
        let w = self.inner_solution(lambda)?;
        let h_inv_g = dense::solve(&self.h.matrix, &self.grad_w(&w, lambda))?;
        let grad = self.grad_lambda(&w, lambda) + self.b.t().dot(&h_inv_g);
        Ok((grad, h_inv_g / self.alpha))
    }
}

/// Ridge regression with regularisation `e^λ` tuned on a validation loss (one hyperparameter):
/// `G(w, λ) = ‖Xw − y‖²/(2n) + ½e^λ‖w‖²`, `E(w) = ‖X_v w − y_v‖²/(2n_v)`, fixed-point map
/// `Φ = w − α∇_wG` with `α = 1/λ_max(H)`, `H = XᵀX/n + e^λI`.
///
/// `∇_wG = H w − Xᵀy/n`, so `J = I − αH`, `∂_λ∇_wG = e^λ w` and `(∂_λΦ)ᵀv = −α e^λ wᵀv`.
#[derive(Debug, Clone)]
pub struct Ridge {
    /// Training inputs (`n × d`).
    pub x: Array2<f64>,
    /// Training targets.
    pub y: Array1<f64>,
    /// Validation inputs (`n_v × d`).
    pub x_val: Array2<f64>,
    /// Validation targets.
    pub y_val: Array1<f64>,
}

/// The linearisation of a bilevel problem at its inner solution: what the core consumes.
#[derive(Debug, Clone)]
pub struct Linearised {
    /// Matrix of `v ↦ Jᵀv` (`n × n`).
    pub jt: Array2<f64>,
    /// Matrix of `v ↦ (∂_λΦ)ᵀv` (`m × n`).
    pub cross_t: Array2<f64>,
    /// `∇_wE` at the inner solution.
    pub grad_w: Array1<f64>,
    /// `∇_λE` at the inner solution.
    pub grad_lambda: Array1<f64>,
}

impl Linearised {
    /// The problem as the core's [`hypergradient`](ibau_core::hypergradient()) takes it, with
    /// dense operators.
    pub fn problem(&self) -> Problem<Array1<f64>, Array1<f64>, DenseOperator, DenseOperator> {
        Problem {
            jt: DenseOperator::new(self.jt.clone()),
            cross_t: DenseOperator::new(self.cross_t.clone()),
            grad_w: self.grad_w.clone(),
            grad_lambda: self.grad_lambda.clone(),
        }
    }

    /// The implicit-function formula solved densely: `(∇f, v*)` with `(I − Jᵀ)v* = ∇_wE`
    /// (LU on `I − Jᵀ`) and `∇f = ∇_λE + (∂_λΦ)ᵀv*`.
    ///
    /// # Errors
    /// The dense oracle's errors (a singular `I − Jᵀ`).
    pub fn dense_hypergradient(&self) -> Result<(Array1<f64>, Array1<f64>)> {
        dense::hypergradient(&self.jt, &self.cross_t, &self.grad_w, &self.grad_lambda)
    }

    /// `A = I − Jᵀ`.
    pub fn system_matrix(&self) -> Array2<f64> {
        Array2::<f64>::eye(self.jt.nrows()) - &self.jt
    }
}

impl Ridge {
    /// `H(λ) = XᵀX/n + e^λ I`.
    pub fn hessian(&self, lambda: f64) -> Array2<f64> {
        let n = self.x.nrows() as f64;
        self.x.t().dot(&self.x) / n + Array2::<f64>::eye(self.x.ncols()) * lambda.exp()
    }

    /// `w*(λ) = H(λ)⁻¹ Xᵀy/n`.
    ///
    /// # Errors
    /// The dense oracle's errors.
    pub fn inner_solution(&self, lambda: f64) -> Result<Array1<f64>> {
        let n = self.x.nrows() as f64;
        dense::solve(&self.hessian(lambda), &(self.x.t().dot(&self.y) / n))
    }

    /// `f(λ) = ‖X_v w*(λ) − y_v‖²/(2n_v)`.
    ///
    /// # Errors
    /// As [`Ridge::inner_solution`].
    pub fn f(&self, lambda: f64) -> Result<f64> {
        let w = self.inner_solution(lambda)?;
        let res = self.x_val.dot(&w) - &self.y_val;
        Ok(res.dot(&res) / (2.0 * self.x_val.nrows() as f64))
    }

    /// Step size `α = 1/λ_max(H)` and the linearisation at `w*(λ)`.
    ///
    /// # Errors
    /// The dense oracle's errors.
    pub fn linearise(&self, lambda: f64) -> Result<(f64, Linearised)> {
        let h = self.hessian(lambda);
        let ev = dense::symmetric_eigenvalues(&h)?;
        let l = ev.iter().copied().fold(0.0, f64::max);
        let alpha = 1.0 / l;
        let w = self.inner_solution(lambda)?;
        let nv = self.x_val.nrows() as f64;
        let grad_w = self.x_val.t().dot(&(self.x_val.dot(&w) - &self.y_val)) / nv;
        let jt = Array2::<f64>::eye(h.nrows()) - &h * alpha;
        let cross_t = w.insert_axis(Axis(0)) * (-alpha * lambda.exp());
        Ok((
            alpha,
            Linearised {
                jt,
                cross_t,
                grad_w,
                grad_lambda: Array1::zeros(1),
            },
        ))
    }
}

/// A bilevel problem with a non-quadratic inner objective, a `w`-dependent `∂_λΦ` and a
/// non-quadratic outer objective, so that every constant of [`crate::aid_inexact`] (ν₁, ν₂ too)
/// is non-zero:
///
/// * `G(w, λ) = ½wᵀHw + (γ/4)Σ w_i⁴ − Σ_i (Bλ)_i (w_i + (β/2) w_i²) − cᵀw`, so
///   `∇_wG = Hw + γw³ − (1 + βw)⊙Bλ − c`,
///   `∇²_wwG = H + 3γ diag(w²) − β diag(Bλ)` and `∂_λ∇_wG = −diag(1 + βw) B`;
/// * `Φ = w − α∇_wG`: `J = I − α∇²_wwG` (symmetric), `∂_λΦ = α diag(1 + βw) B`;
/// * `E(w, λ) = ½(w − w̄)ᵀP(w − w̄) + wᵀMλ + ½r‖λ‖² + η Σ_i log cosh w_i`, so
///   `∇_wE = P(w − w̄) + Mλ + η tanh w`, `∇_λE = Mᵀw + rλ`.
///
/// [`NonlinearBilevel::new`] scales `β` so that `β|Bλ|_∞ ≤ λ_min(H)/4`: then
/// `∇²_wwG ⪰ ¾λ_min(H) I` everywhere, `G` is strongly convex and `w*(λ)` unique.
#[derive(Debug, Clone)]
pub struct NonlinearBilevel {
    /// `H` (SPD).
    pub h: Spectral,
    /// `B` (`n × m`).
    pub b: Array2<f64>,
    /// `c`.
    pub c: Array1<f64>,
    /// `β ≥ 0`.
    pub beta: f64,
    /// `γ ≥ 0`.
    pub gamma: f64,
    /// `P` (symmetric positive semi-definite).
    pub p: Spectral,
    /// `w̄`.
    pub w_bar: Array1<f64>,
    /// `M` (`n × m`).
    pub m: Array2<f64>,
    /// `r ≥ 0`.
    pub r: f64,
    /// `η ≥ 0`.
    pub eta: f64,
    /// The outer variable `λ` the instance is built at.
    pub lambda: Array1<f64>,
}

impl NonlinearBilevel {
    /// Builds the instance at `λ`, with `β = beta_frac·λ_min(H)/(4 max(|Bλ|_∞, 10⁻³))`
    /// (`beta_frac ∈ [0, 1]`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        h: Spectral,
        b: Array2<f64>,
        c: Array1<f64>,
        beta_frac: f64,
        gamma: f64,
        p: Spectral,
        w_bar: Array1<f64>,
        m: Array2<f64>,
        r: f64,
        eta: f64,
        lambda: Array1<f64>,
    ) -> Self {
        let b_lambda = b.dot(&lambda);
        let sup = b_lambda.iter().fold(1e-3f64, |s, v| s.max(v.abs()));
        let beta = beta_frac.clamp(0.0, 1.0) * h.min() / (4.0 * sup);
        NonlinearBilevel {
            h,
            b,
            c,
            beta,
            gamma,
            p,
            w_bar,
            m,
            r,
            eta,
            lambda,
        }
    }

    fn g(&self, w: &Array1<f64>) -> f64 {
        let bl = self.b.dot(&self.lambda);
        0.5 * w.dot(&self.h.matrix.dot(w))
            + 0.25 * self.gamma * w.iter().map(|x| x.powi(4)).sum::<f64>()
            - bl.iter()
                .zip(w)
                .map(|(bi, wi)| bi * (wi + 0.5 * self.beta * wi * wi))
                .sum::<f64>()
            - self.c.dot(w)
    }

    /// `∇_wG(w, λ)`.
    pub fn grad_g(&self, w: &Array1<f64>) -> Array1<f64> {
        let bl = self.b.dot(&self.lambda);
        let mut g = self.h.matrix.dot(w) - &self.c;
        for i in 0..w.len() {
            g[i] += self.gamma * w[i].powi(3) - (1.0 + self.beta * w[i]) * bl[i];
        }
        g
    }

    /// `∇²_wwG(w, λ)`.
    pub fn hess_g(&self, w: &Array1<f64>) -> Array2<f64> {
        let bl = self.b.dot(&self.lambda);
        let mut h = self.h.matrix.clone();
        for i in 0..w.len() {
            h[[i, i]] += 3.0 * self.gamma * w[i] * w[i] - self.beta * bl[i];
        }
        h
    }

    /// `w*(λ)` by damped Newton (backtracking on `G`) to `‖∇_wG‖ ≤ 10⁻¹³(1 + ‖c‖ + ‖Bλ‖)`.
    ///
    /// # Errors
    /// The dense oracle's errors; [`ibau_core::Error::NotConverged`] if 200 Newton steps do not
    /// reach the tolerance.
    pub fn inner_solution(&self) -> Result<Array1<f64>> {
        let mut w = Array1::<f64>::zeros(self.h.n());
        let tol = 1e-13 * (1.0 + norm(&self.c) + norm(&self.b.dot(&self.lambda)));
        for _ in 0..200 {
            let g = self.grad_g(&w);
            if norm(&g) <= tol {
                return Ok(w);
            }
            let step = dense::solve(&self.hess_g(&w), &g)?;
            let (g0, grad0) = (self.g(&w), norm(&g));
            // Backtrack until G or ‖∇G‖ decreases (near the solution G is flat to rounding,
            // and the full Newton step is accepted on the gradient).
            let mut t = 1.0;
            loop {
                let trial = &w - &(&step * t);
                if t <= 1e-8 || self.g(&trial) < g0 || norm(&self.grad_g(&trial)) < grad0 {
                    w = trial;
                    break;
                }
                t *= 0.5;
            }
        }
        let residual = norm(&self.grad_g(&w));
        Err(ibau_core::Error::NotConverged {
            iterations: 200,
            residual,
            tolerance: tol,
        })
    }

    /// `∇_wE(w, λ)`.
    pub fn grad_w(&self, w: &Array1<f64>) -> Array1<f64> {
        self.p.matrix.dot(&(w - &self.w_bar))
            + self.m.dot(&self.lambda)
            + w.mapv(f64::tanh) * self.eta
    }

    /// `∇_λE(w, λ)`.
    pub fn grad_lambda(&self, w: &Array1<f64>) -> Array1<f64> {
        self.m.t().dot(w) + &self.lambda * self.r
    }

    /// `∂_λΦ(w, λ) = α diag(1 + βw) B` (`n × m`).
    pub fn cross(&self, w: &Array1<f64>, alpha: f64) -> Array2<f64> {
        let mut c = self.b.clone() * alpha;
        for (i, mut row) in c.rows_mut().into_iter().enumerate() {
            row *= 1.0 + self.beta * w[i];
        }
        c
    }

    /// `J = ∂_wΦ(w, λ) = I − α∇²_wwG(w, λ)` (symmetric).
    pub fn jacobian(&self, w: &Array1<f64>, alpha: f64) -> Array2<f64> {
        Array2::<f64>::eye(self.h.n()) - &self.hess_g(w) * alpha
    }

    /// The linearisation at an arbitrary `w` (not necessarily `w*`), as AID uses it with an
    /// approximate inner solution.
    pub fn linearise_at(&self, w: &Array1<f64>, alpha: f64) -> Linearised {
        Linearised {
            jt: self.jacobian(w, alpha),
            cross_t: self.cross(w, alpha).t().to_owned(),
            grad_w: self.grad_w(w),
            grad_lambda: self.grad_lambda(w),
        }
    }
}

/// Central finite difference of a scalar function with one Richardson extrapolation step:
/// `D(h) = (f(x+h) − f(x−h))/(2h)`, returns `(4D(h/2) − D(h))/3`, whose truncation error is
/// `O(h⁴)`.
///
/// # Errors
/// The first error `f` returns.
pub fn richardson_derivative<F>(mut f: F, x: f64, h: f64) -> Result<f64>
where
    F: FnMut(f64) -> Result<f64>,
{
    let d_h = (f(x + h)? - f(x - h)?) / (2.0 * h);
    let d_h2 = (f(x + 0.5 * h)? - f(x - 0.5 * h)?) / h;
    Ok((4.0 * d_h2 - d_h) / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn householder_products_are_orthogonal_and_spectra_are_exact() {
        let hh = vec![
            vec![1.0, -0.5, 0.25, 2.0],
            vec![0.0, 1.0, 1.0, -1.0],
            vec![0.3, 0.0, -0.7, 0.1],
        ];
        let q = householder_orthogonal(4, &hh);
        let err = (q.t().dot(&q) - Array2::<f64>::eye(4))
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-14, "QᵀQ − I = {err:e}");
        let s = spd_with_condition(100.0, 0.5, &[0.3, 0.7], &hh);
        let ev = dense::symmetric_eigenvalues(&s.matrix).unwrap();
        for (got, want) in ev.iter().zip(&s.eigenvalues) {
            assert!((got - want).abs() <= 1e-13 * 50.0, "{got} vs {want}");
        }
        assert!((s.max() / s.min() - 100.0).abs() <= 1e-12);
        let j = general_contraction(0.8, &[0.5, 0.1, 1.0], &hh, &hh[1..]);
        let sn = dense::spectral_norm(&j).unwrap();
        assert!((sn - 0.8).abs() <= 1e-14, "‖J‖ = {sn}");
    }

    #[test]
    fn richardson_is_fourth_order() {
        let d = richardson_derivative(|x| Ok(x.sin()), 0.7, 1e-2).unwrap();
        assert!((d - 0.7f64.cos()).abs() <= 1e-10, "{d}");
    }
}
