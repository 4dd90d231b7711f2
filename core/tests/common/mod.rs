//! Instances the property tests build themselves: SPD matrices with a chosen condition number,
//! bilevel quadratics, ridge regression and L2-regularised logistic regression, each with its
//! hypergradient by the dense implicit-function formula.
#![allow(dead_code)]

use ibau_core::dense;
use ndarray::{Array1, Array2};
use proptest::prelude::*;

/// Product of Householder reflections built from `vs`: an orthogonal matrix.
pub fn orthogonal(vs: &[Vec<f64>]) -> Array2<f64> {
    let n = vs.len();
    let mut q = Array2::<f64>::eye(n);
    for v in vs {
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

/// A symmetric matrix `Q diag(eigenvalues) Qᵀ` with known spectrum.
#[derive(Debug, Clone)]
pub struct Spectral {
    pub matrix: Array2<f64>,
    /// Ascending.
    pub eigenvalues: Vec<f64>,
    pub q: Array2<f64>,
}

impl Spectral {
    pub fn new(eigenvalues: Vec<f64>, householder: &[Vec<f64>]) -> Self {
        let mut eigenvalues = eigenvalues;
        eigenvalues.sort_by(f64::total_cmp);
        let q = orthogonal(householder);
        let d = Array2::from_diag(&Array1::from(eigenvalues.clone()));
        let m = q.dot(&d).dot(&q.t());
        // Symmetrise exactly.
        let matrix = (&m + &m.t()) * 0.5;
        Spectral {
            matrix,
            eigenvalues,
            q,
        }
    }
    pub fn min(&self) -> f64 {
        self.eigenvalues[0]
    }
    pub fn max(&self) -> f64 {
        *self.eigenvalues.last().unwrap()
    }
    pub fn n(&self) -> usize {
        self.eigenvalues.len()
    }
}

/// SPD matrix with eigenvalues in `[scale, scale·κ]`, both ends attained.
pub fn spd(max_n: usize, max_log10_kappa: f64) -> impl Strategy<Value = Spectral> {
    (2..=max_n).prop_flat_map(move |n| {
        (
            0.0..=max_log10_kappa,
            prop::collection::vec(0.0..1.0f64, n - 2),
            prop::collection::vec(prop::collection::vec(-1.0..1.0f64, n), n),
            -1.0..1.0f64,
        )
            .prop_map(move |(log_kappa, inner, hh, log_scale)| {
                let kappa = 10f64.powf(log_kappa);
                let scale = 10f64.powf(log_scale);
                let mut ev = vec![scale, scale * kappa];
                ev.extend(inner.iter().map(|t| scale * kappa.powf(*t)));
                Spectral::new(ev, &hh)
            })
    })
}

pub fn vector(n: usize) -> impl Strategy<Value = Array1<f64>> {
    prop::collection::vec(-1.0..1.0f64, n).prop_map(Array1::from)
}

pub fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
    prop::collection::vec(-1.0..1.0f64, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
}

/// A linearised bilevel problem given by dense matrices: the operator matrices `jt` (of
/// `v ↦ Jᵀv`) and `cross_t` (of `v ↦ (∂_λΦ)ᵀv`), the outer gradients, and the exact answer by an
/// independent route.
#[derive(Debug, Clone)]
pub struct Linearised {
    pub jt: Array2<f64>,
    pub cross_t: Array2<f64>,
    pub grad_w: Array1<f64>,
    pub grad_lambda: Array1<f64>,
    /// The exact hypergradient, from the closed form of the instance (not from `jt`).
    pub exact: Array1<f64>,
    /// Exact `v*`.
    pub v_star: Array1<f64>,
    /// Certified ‖J‖ (J symmetric for every instance here).
    pub q: f64,
    /// λ_min and λ_max of `I − Jᵀ`.
    pub a_min: f64,
    pub a_max: f64,
    /// ‖∂_λΦ‖.
    pub cross_norm: f64,
    /// Scale of the terms of the hypergradient: ‖∇_λE‖ + ‖(∂_λΦ)ᵀ‖·‖v*‖.
    pub scale: f64,
}

/// Builds the gradient-descent-map linearisation `J = I − αH`, `∂_λΦ = −α ∂_λ∇_wG`, with the
/// exact hypergradient `∇_λE − (∂_λ∇_wG)ᵀ H⁻¹ ∇_wE` solved on `H` directly.
pub fn gradient_descent_map(
    h: &Spectral,
    alpha: f64,
    cross_grad: &Array2<f64>, // ∂_λ∇_wG, n × m
    grad_w: Array1<f64>,
    grad_lambda: Array1<f64>,
) -> Linearised {
    let n = h.n();
    let jt = Array2::<f64>::eye(n) - &h.matrix * alpha;
    let cross_t = cross_grad.t().to_owned() * (-alpha);
    let h_inv_g = dense::solve(&h.matrix, &grad_w).expect("H is SPD");
    let exact = &grad_lambda - &cross_grad.t().dot(&h_inv_g);
    let v_star = &h_inv_g / alpha;
    let q = (1.0 - alpha * h.min())
        .abs()
        .max((1.0 - alpha * h.max()).abs());
    let cross_norm = dense::spectral_norm(&cross_t).unwrap();
    let scale = grad_lambda.dot(&grad_lambda).sqrt() + cross_norm * v_star.dot(&v_star).sqrt();
    Linearised {
        jt,
        cross_t,
        grad_w,
        grad_lambda,
        exact,
        v_star,
        q,
        a_min: alpha * h.min(),
        a_max: alpha * h.max(),
        cross_norm,
        scale,
    }
}

/// (a) Quadratic bilevel: G(w, λ) = ½wᵀHw − wᵀBλ, E(w, λ) = ½‖w − w_t‖² + ½ρ‖λ‖².
pub fn quadratic(max_n: usize, max_log10_kappa: f64) -> impl Strategy<Value = Linearised> {
    spd(max_n, max_log10_kappa).prop_flat_map(|h| {
        let n = h.n();
        (1..=4usize).prop_flat_map(move |m| {
            let h = h.clone();
            (matrix(n, m), vector(n), vector(m), 0.0..2.0f64, 0.5..1.0f64).prop_map(
                move |(b, w_t, lambda, rho, alpha_frac)| {
                    let w_star = dense::solve(&h.matrix, &b.dot(&lambda)).unwrap();
                    let grad_w = &w_star - &w_t;
                    let grad_lambda = &lambda * rho;
                    // ∇_wG = Hw − Bλ, so ∂_λ∇_wG = −B.
                    let alpha = alpha_frac / h.max();
                    gradient_descent_map(&h, alpha, &(-&b), grad_w, grad_lambda)
                },
            )
        })
    })
}

/// (b) Ridge regression, regularisation e^λ tuned on a validation loss:
/// G(w, λ) = ‖Xw − y‖²/(2n) + ½e^λ‖w‖², E(w) = ‖X_v w − y_v‖²/(2m).
pub fn ridge() -> impl Strategy<Value = Linearised> {
    (2..=12usize, 0usize..=10, -4.0..1.0f64).prop_flat_map(|(d, extra, log_reg)| {
        let n = d + extra + 1;
        let m = 8usize;
        (
            matrix(n, d),
            vector(n),
            matrix(m, d),
            vector(m),
            Just(log_reg),
        )
            .prop_map(move |(x, y, xv, yv, log_reg)| {
                let reg = log_reg.exp();
                let h_mat = x.t().dot(&x) / n as f64 + Array2::<f64>::eye(d) * reg;
                let w = dense::solve(&h_mat, &(x.t().dot(&y) / n as f64)).unwrap();
                let grad_w = xv.t().dot(&(xv.dot(&w) - &yv)) / m as f64;
                let cross_grad = w.clone().insert_axis(ndarray::Axis(1)) * reg; // ∂_λ∇_wG = e^λ w
                let h = spectral_of(&h_mat);
                let alpha = 1.0 / h.max();
                gradient_descent_map(&h, alpha, &cross_grad, grad_w, Array1::zeros(1))
            })
    })
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// (c) L2-regularised logistic regression: G(w, λ) = mean log(1 + e^{−y xᵀw}) + ½e^λ‖w‖²,
/// E = validation logistic loss; the inner problem solved by Newton's method, the Hessian
/// XᵀDX/n + e^λI assembled by formula.
pub fn logistic() -> impl Strategy<Value = Linearised> {
    (2..=10usize, 0usize..=12, -3.0..0.5f64).prop_flat_map(|(d, extra, log_reg)| {
        let n = d + extra + 2;
        let m = 10usize;
        (
            matrix(n, d),
            prop::collection::vec(prop::bool::ANY, n),
            matrix(m, d),
            prop::collection::vec(prop::bool::ANY, m),
            Just(log_reg),
        )
            .prop_map(move |(x, yb, xv, yvb, log_reg)| {
                let reg = log_reg.exp();
                let y: Array1<f64> = yb.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
                let yv: Array1<f64> = yvb.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
                let hessian = |w: &Array1<f64>| {
                    let z = x.dot(w);
                    let mut h = Array2::<f64>::eye(d) * reg;
                    for i in 0..n {
                        let s = sigmoid(y[i] * z[i]);
                        let di = s * (1.0 - s) / n as f64;
                        let xi = x.row(i);
                        for a in 0..d {
                            for b in 0..d {
                                h[[a, b]] += di * xi[a] * xi[b];
                            }
                        }
                    }
                    h
                };
                let gradient = |w: &Array1<f64>| {
                    let z = x.dot(w);
                    let coef: Array1<f64> = (0..n)
                        .map(|i| -y[i] * sigmoid(-y[i] * z[i]) / n as f64)
                        .collect();
                    x.t().dot(&coef) + w * reg
                };
                // Newton's method (G is reg-strongly convex): quadratic convergence.
                let mut w = Array1::<f64>::zeros(d);
                for _ in 0..100 {
                    let g = gradient(&w);
                    if g.dot(&g).sqrt() <= 1e-15 {
                        break;
                    }
                    let step = dense::solve(&hessian(&w), &g).unwrap();
                    w = &w - &step;
                }
                let h_mat = hessian(&w);
                let zv = xv.dot(&w);
                let coef: Array1<f64> = (0..m)
                    .map(|i| -yv[i] * sigmoid(-yv[i] * zv[i]) / m as f64)
                    .collect();
                let grad_w = xv.t().dot(&coef);
                let cross_grad = w.clone().insert_axis(ndarray::Axis(1)) * reg;
                let h = spectral_of(&h_mat);
                let alpha = 1.0 / h.max();
                gradient_descent_map(&h, alpha, &cross_grad, grad_w, Array1::zeros(1))
            })
    })
}

/// Spectral data of a symmetric matrix, by LAPACK.
pub fn spectral_of(m: &Array2<f64>) -> Spectral {
    let ev = dense::symmetric_eigenvalues(m).unwrap().to_vec();
    Spectral {
        matrix: m.clone(),
        eigenvalues: ev,
        q: Array2::eye(m.nrows()),
    }
}

/// ‖a − b‖₂.
pub fn dist(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    let d = a - b;
    d.dot(&d).sqrt()
}

pub fn norm(a: &Array1<f64>) -> f64 {
    a.dot(a).sqrt()
}

/// ‖x‖_A = sqrt(xᵀAx).
pub fn a_norm(a: &Array2<f64>, x: &Array1<f64>) -> f64 {
    x.dot(&a.dot(x)).max(0.0).sqrt()
}
