//! The exact dense oracle: assemble operators as matrices and solve with LAPACK
//! (ndarray-linalg, OpenBLAS). For tests and small problems only — `O(n³)` time, `O(n²)` memory.

use ndarray::{Array1, Array2};
use ndarray_linalg::{Eigh, Factorize, ReciprocalConditionNum, Solve, SVD, UPLO};

use crate::error::{Error, Location, Result};
use crate::operator::Operator;

/// A dense matrix as an operator `x ↦ M x` (on `Array1<f64>` and `Vec<f64>`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseOperator {
    /// The matrix.
    pub matrix: Array2<f64>,
}

impl DenseOperator {
    /// Wraps a matrix.
    pub fn new(matrix: Array2<f64>) -> Self {
        DenseOperator { matrix }
    }
}

impl Operator<Array1<f64>> for DenseOperator {
    fn apply(&mut self, x: &Array1<f64>, out: &mut Array1<f64>) -> Result<()> {
        check_shape(&self.matrix, x.len(), out.len())?;
        ndarray::linalg::general_mat_vec_mul(1.0, &self.matrix, x, 0.0, out);
        Ok(())
    }
}

impl Operator<Vec<f64>> for DenseOperator {
    fn apply(&mut self, x: &Vec<f64>, out: &mut Vec<f64>) -> Result<()> {
        check_shape(&self.matrix, x.len(), out.len())?;
        for (o, row) in out.iter_mut().zip(self.matrix.rows()) {
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        Ok(())
    }
}

fn check_shape(m: &Array2<f64>, n_in: usize, n_out: usize) -> Result<()> {
    if m.ncols() != n_in {
        return Err(Error::DimensionMismatch {
            what: "dense operator input",
            expected: m.ncols(),
            found: n_in,
        });
    }
    if m.nrows() != n_out {
        return Err(Error::DimensionMismatch {
            what: "dense operator output",
            expected: m.nrows(),
            found: n_out,
        });
    }
    Ok(())
}

/// Assembles the `n_out × n_in` matrix of a matrix-free operator, column by column
/// (`n_in` applications).
///
/// # Errors
/// The operator's errors.
pub fn assemble<O>(op: &mut O, n_in: usize, n_out: usize) -> Result<Array2<f64>>
where
    O: Operator<Array1<f64>> + ?Sized,
{
    let mut m = Array2::zeros((n_out, n_in));
    let mut e = Array1::zeros(n_in);
    let mut col = Array1::zeros(n_out);
    for j in 0..n_in {
        e[j] = 1.0;
        op.apply(&e, &mut col)?;
        m.column_mut(j).assign(&col);
        e[j] = 0.0;
    }
    Ok(m)
}

fn check_finite_matrix(m: &Array2<f64>) -> Result<()> {
    if m.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            at: Location::Matrix,
        })
    }
}

/// Solves `A x = b` by LU, refusing matrices whose reciprocal condition number (1-norm) is below
/// `n·ε`.
///
/// # Errors
/// [`Error::Singular`] for a singular or numerically singular `A`; [`Error::NonFinite`];
/// [`Error::DimensionMismatch`].
pub fn solve(a: &Array2<f64>, b: &Array1<f64>) -> Result<Array1<f64>> {
    if a.nrows() != a.ncols() || a.nrows() != b.len() {
        return Err(Error::DimensionMismatch {
            what: "dense solve",
            expected: a.nrows(),
            found: b.len(),
        });
    }
    check_finite_matrix(a)?;
    if !b.iter().all(|v| v.is_finite()) {
        return Err(Error::NonFinite { at: Location::Rhs });
    }
    if a.nrows() == 0 {
        return Ok(Array1::zeros(0));
    }
    let lu = a.factorize().map_err(|e| Error::Singular(e.to_string()))?;
    let rcond = lu.rcond().map_err(|e| Error::Singular(e.to_string()))?;
    if rcond.is_nan() || rcond <= a.nrows() as f64 * f64::EPSILON {
        return Err(Error::Singular(format!(
            "reciprocal condition number {rcond:.3e}"
        )));
    }
    let x = lu.solve(b).map_err(|e| Error::Singular(e.to_string()))?;
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::Singular("solution is not finite".into()));
    }
    Ok(x)
}

/// Solves `(I − Jᵀ) v = b` exactly, given the matrix `jt` of the operator `v ↦ Jᵀv`.
///
/// # Errors
/// As [`solve`].
pub fn solve_implicit(jt: &Array2<f64>, b: &Array1<f64>) -> Result<Array1<f64>> {
    let n = jt.nrows();
    let a = Array2::eye(n) - jt;
    solve(&a, b)
}

/// The exact hypergradient `∇_λE + C v*`, `(I − Jᵀ) v* = ∇_wE`, with `jt` the matrix of
/// `v ↦ Jᵀv` and `cross_t` the matrix of `v ↦ (∂_λΦ)ᵀv`. Returns `(∇f, v*)`.
///
/// # Errors
/// As [`solve`]; [`Error::DimensionMismatch`] for inconsistent shapes.
pub fn hypergradient(
    jt: &Array2<f64>,
    cross_t: &Array2<f64>,
    grad_w: &Array1<f64>,
    grad_lambda: &Array1<f64>,
) -> Result<(Array1<f64>, Array1<f64>)> {
    check_shape(cross_t, grad_w.len(), grad_lambda.len())?;
    check_finite_matrix(cross_t)?;
    let v = solve_implicit(jt, grad_w)?;
    Ok((grad_lambda + &cross_t.dot(&v), v))
}

/// Spectral norm (largest singular value).
///
/// # Errors
/// [`Error::Singular`] if LAPACK fails; [`Error::NonFinite`].
pub fn spectral_norm(a: &Array2<f64>) -> Result<f64> {
    check_finite_matrix(a)?;
    if a.is_empty() {
        return Ok(0.0);
    }
    let (_, s, _) = a
        .svd(false, false)
        .map_err(|e| Error::Singular(e.to_string()))?;
    Ok(s.iter().copied().fold(0.0, f64::max))
}

/// Eigenvalues of a symmetric matrix, ascending.
///
/// # Errors
/// [`Error::Singular`] if LAPACK fails; [`Error::NonFinite`].
pub fn symmetric_eigenvalues(a: &Array2<f64>) -> Result<Array1<f64>> {
    check_finite_matrix(a)?;
    let (e, _) = a
        .eigh(UPLO::Lower)
        .map_err(|e| Error::Singular(e.to_string()))?;
    Ok(e)
}
