//! Randomized Nyström preconditioner: a rank-`ℓ` approximation `Â = U Λ̂ Uᵀ` of `A₀ = A − μI`
//! from `ℓ` operator applications, inverted exactly on its range.
//!
//! # Construction (Frangella, Tropp & Udell 2023, Alg. 2.1; Tropp et al. 2017, Alg. 3)
//! With Ω the `d × ℓ` test matrix (orthonormalised Gaussian probes), `Y = A₀Ω`, a shift
//! `ν = √d·ε·‖Y‖_F`, `Y_ν = Y + νΩ`, the Cholesky factor `ΩᵀY_ν = LLᵀ`, `B = Y_ν L⁻ᵀ` and its thin
//! SVD `B = UΣWᵀ` (computed stably as a QR of `Y_ν` followed by a one-sided Jacobi SVD of the small
//! `ℓ × ℓ` factor), `Λ̂ = max(0, Σ² − νI)`. The preconditioner for `A = A₀ + μI` is
//!
//! ```text
//! M⁻¹ = (λ̂_ℓ + μ) U (Λ̂ + μI)⁻¹ Uᵀ + (I − UUᵀ),
//! ```
//!
//! symmetric positive definite (directions with `λ̂ = 0` are dropped, so it is also defined for
//! `μ = 0`). Only vector-space operations touch `d`-sized data, so it works for every [`Vector`].
//!
//! # Requirements
//! `A₀ = A − μI` symmetric positive semi-definite (μ = `shift`, 0 to sketch `A` itself); a
//! negative pivot in `ΩᵀY_ν` proves otherwise and is [`Error::NotPositiveDefinite`]. For a family
//! `A(μ) = A₀ + μI` (ridge regularisation along a trajectory) one sketch serves every μ:
//! [`Nystrom::set_shift`].
//!
//! # Bound
//! `κ(M^{-1/2} A M^{-1/2}) ≤ (λ̂_ℓ + μ + ‖A₀ − Â‖)/μ` (FTU 2023, Prop. 5.3), and with
//! `ℓ ≥ 2⌈1.5·d_eff(μ)⌉ + 1` (effective dimension `d_eff(μ) = tr(A₀(A₀ + μI)⁻¹)`) its expectation
//! is below 28 (FTU 2023, Thm. 5.1); PCG then needs `O(√κ log(1/ε))` iterations whatever κ(A).
//!
//! Source: Z. Frangella, J. A. Tropp, M. Udell, *Randomized Nyström preconditioning*, SIAM J.
//! Matrix Anal. Appl. 44(2), 2023; J. A. Tropp, A. Yurtsever, M. Udell, V. Cevher, *Fixed-rank
//! approximation of a positive-semidefinite matrix from streaming data*, NeurIPS 2017.

use crate::error::{Error, Location, Result};
use crate::operator::{apply_checked, Operator};
use crate::precond::Preconditioner;
use crate::report::PreconditionerInfo;
use crate::vector::Vector;

/// The Nyström preconditioner (see the module documentation).
#[derive(Debug, Clone)]
pub struct Nystrom<V> {
    /// Orthonormal eigenvector estimates, eigenvalues descending.
    u: Vec<V>,
    /// `Λ̂` (of `A₀ = A − μI`), descending, all `> 0`.
    eigenvalues: Vec<f64>,
    shift: f64,
    coef: Vec<f64>,
    dim: usize,
    sketch: usize,
    build_applications: usize,
    reused: bool,
}

impl<V: Vector> Nystrom<V> {
    /// Builds it from the `probes` (the columns of Ω: independent Gaussian vectors, e.g. from
    /// [`crate::precond::gaussian_probes`]) with one application of `a` per probe. `shift` is the
    /// μ with `A − μI` positive semi-definite that is sketched (0 to sketch `A` itself).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for no probes, more probes than dimensions or a negative
    /// shift; [`Error::NotPositiveDefinite`] when `A − μI` is shown indefinite;
    /// [`Error::NonFinite`], [`Error::DimensionMismatch`], and the operator's errors.
    pub fn build<O>(a: &mut O, probes: Vec<V>, shift: f64) -> Result<Self>
    where
        O: Operator<V> + ?Sized,
    {
        if !(shift.is_finite() && shift >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "shift",
                value: shift,
                reason: "must be finite and ≥ 0",
            });
        }
        let sketch = probes.len();
        let dim = probes.first().map_or(0, Vector::dim);
        if sketch == 0 || sketch > dim {
            return Err(Error::InvalidParameter {
                name: "sketch size",
                value: sketch as f64,
                reason: "needs 1 ≤ probes ≤ dimension",
            });
        }
        for p in &probes {
            if p.dim() != dim {
                return Err(Error::DimensionMismatch {
                    what: "Nyström probe",
                    expected: dim,
                    found: p.dim(),
                });
            }
            if !p.is_finite() {
                return Err(Error::NonFinite {
                    at: Location::Parameter,
                });
            }
        }
        // Ω with orthonormal columns (dependent probes dropped).
        let (omega, _) = orthonormalize(probes);
        let l = omega.len();
        // Y = A₀Ω.
        let mut y: Vec<V> = Vec::with_capacity(l);
        for (k, w) in omega.iter().enumerate() {
            let mut yk = w.zeros_like();
            apply_checked(a, w, &mut yk, k)?;
            if shift != 0.0 {
                yk.axpy(-shift, w);
            }
            y.push(yk);
        }
        let frob = y.iter().map(|v| v.norm().powi(2)).sum::<f64>().sqrt();
        let eps = omega[0].epsilon();
        let nu = (dim as f64).sqrt() * eps * frob.max(f64::MIN_POSITIVE);
        for (yk, w) in y.iter_mut().zip(&omega) {
            yk.axpy(nu, w);
        }
        // C = ΩᵀY_ν (symmetrised) = LLᵀ.
        let mut c = vec![0.0; l * l];
        for i in 0..l {
            for j in 0..=i {
                let cij = 0.5 * (omega[i].dot(&y[j]) + omega[j].dot(&y[i]));
                c[i * l + j] = cij;
                c[j * l + i] = cij;
            }
        }
        drop(omega);
        let chol = cholesky(&c, l)?;
        // Y_ν = QR, B = Q (R L⁻ᵀ) = Q G.
        let (q, r) = {
            let (q, r) = orthonormalize_keep(y);
            (q, r)
        };
        // G = R L⁻ᵀ: row i of G solves L gᵢᵀ = rᵢᵀ.
        let mut g = vec![0.0; l * l];
        for i in 0..l {
            for j in 0..l {
                let mut s = r[i * l + j];
                for k in 0..j {
                    s -= chol[j * l + k] * g[i * l + k];
                }
                g[i * l + j] = s / chol[j * l + j];
            }
        }
        let (w, sigma) = jacobi_svd_left(g, l);
        // Λ̂ = max(0, σ² − ν), keep the positive ones, descending.
        let mut order: Vec<usize> = (0..l).filter(|&k| sigma[k] * sigma[k] - nu > 0.0).collect();
        order.sort_by(|&a, &b| sigma[b].total_cmp(&sigma[a]));
        let mut u = Vec::with_capacity(order.len());
        let mut eigenvalues = Vec::with_capacity(order.len());
        for &k in &order {
            let mut uk = q[0].zeros_like();
            for (j, qj) in q.iter().enumerate() {
                let wjk = w[j * l + k];
                if wjk != 0.0 {
                    uk.axpy(wjk, qj);
                }
            }
            u.push(uk);
            eigenvalues.push(sigma[k] * sigma[k] - nu);
        }
        drop(q);
        if !eigenvalues.iter().all(|e| e.is_finite()) {
            return Err(Error::NonFinite {
                at: Location::Iterate { iteration: 0 },
            });
        }
        let coef = vec![0.0; u.len()];
        Ok(Nystrom {
            u,
            eigenvalues,
            shift,
            coef,
            dim,
            sketch,
            build_applications: l,
            reused: false,
        })
    }

    /// Uses the same sketch of `A₀` for `A = A₀ + shift·I` (no operator application), and marks
    /// the preconditioner as reused.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a negative or non-finite shift.
    pub fn set_shift(&mut self, shift: f64) -> Result<()> {
        if !(shift.is_finite() && shift >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "shift",
                value: shift,
                reason: "must be finite and ≥ 0",
            });
        }
        self.shift = shift;
        self.reused = true;
        Ok(())
    }

    /// Marks it as reused for a later system without changing it.
    pub fn mark_reused(&mut self) {
        self.reused = true;
    }

    /// The estimated eigenvalues `Λ̂` of `A₀`, descending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigenvalues
    }

    /// The number of probes it was built from.
    pub fn sketch_size(&self) -> usize {
        self.sketch
    }

    /// The rank kept (≤ the number of probes).
    pub fn rank(&self) -> usize {
        self.u.len()
    }
}

impl<V: Vector> Preconditioner<V> for Nystrom<V> {
    fn apply(&mut self, r: &V, out: &mut V) -> Result<()> {
        if r.dim() != self.dim {
            return Err(Error::DimensionMismatch {
                what: "Nyström preconditioner input",
                expected: self.dim,
                found: r.dim(),
            });
        }
        out.copy_from(r);
        let Some(&last) = self.eigenvalues.last() else {
            return Ok(());
        };
        let mu = self.shift;
        for (c, uk) in self.coef.iter_mut().zip(&self.u) {
            *c = uk.dot(r);
        }
        // out = r + Σ_k ((λ̂_ℓ + μ)/(λ̂_k + μ) − 1)(u_kᵀr) u_k.
        for ((c, uk), lk) in self.coef.iter().zip(&self.u).zip(&self.eigenvalues) {
            let factor = (last + mu) / (lk + mu) - 1.0;
            out.axpy(factor * c, uk);
        }
        Ok(())
    }
    fn info(&self) -> PreconditionerInfo {
        let k = self.u.len();
        PreconditionerInfo {
            name: "nystrom",
            rank: k,
            vectors: k as f64,
            bytes: 8 * (k * self.dim + 2 * k),
            build_applications: self.build_applications,
            reused: self.reused,
        }
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        // On span(U) M⁻¹ acts as (λ̂_ℓ + μ)/(λ̂_k + μ) ∈ (0, 1], on its complement as 1, so
        // λ_min(M⁻¹) = (λ̂_ℓ + μ)/(λ̂_1 + μ) for orthonormal U. The computed U is orthonormal to
        // about d·ε (Gram–Schmidt twice); the factor 1 − 10⁻⁶ covers that loss.
        let (Some(&first), Some(&last)) = (self.eigenvalues.first(), self.eigenvalues.last())
        else {
            return Some(1.0);
        };
        let s = (last + self.shift) / (first + self.shift) * (1.0 - 1e-6);
        (s.is_finite() && s > 0.0).then_some(s)
    }
}

/// Modified Gram–Schmidt applied twice ("twice is enough", Giraud et al. 2005); drops vectors
/// that are numerically dependent on the previous ones. Returns the orthonormal vectors and the
/// kept indices.
fn orthonormalize<V: Vector>(vs: Vec<V>) -> (Vec<V>, Vec<usize>) {
    let mut out: Vec<V> = Vec::with_capacity(vs.len());
    let mut kept = Vec::new();
    for (idx, mut v) in vs.into_iter().enumerate() {
        let n0 = v.norm();
        for _ in 0..2 {
            for q in &out {
                let c = q.dot(&v);
                v.axpy(-c, q);
            }
        }
        let n = v.norm();
        if n > 1e-10 * n0 && n > 0.0 {
            v.scale(1.0 / n);
            out.push(v);
            kept.push(idx);
        }
    }
    (out, kept)
}

/// Thin QR by modified Gram–Schmidt applied twice, keeping every column: `Y = QR` with `R`
/// (`l × l`, row-major) upper triangular; a numerically dependent column gives a zero column of
/// `Q` and a zero diagonal entry of `R`.
fn orthonormalize_keep<V: Vector>(mut y: Vec<V>) -> (Vec<V>, Vec<f64>) {
    let l = y.len();
    let mut r = vec![0.0; l * l];
    for j in 0..l {
        let (done, rest) = y.split_at_mut(j);
        let v = &mut rest[0];
        let n0 = v.norm();
        for _ in 0..2 {
            for (i, q) in done.iter().enumerate() {
                let c = q.dot(v);
                v.axpy(-c, q);
                r[i * l + j] += c;
            }
        }
        let n = v.norm();
        if n > 1e-12 * n0 && n > 0.0 {
            v.scale(1.0 / n);
            r[j * l + j] = n;
        } else {
            v.scale(0.0);
        }
    }
    (y, r)
}

/// Lower Cholesky factor of the `l × l` row-major SPD matrix `c`.
fn cholesky(c: &[f64], l: usize) -> Result<Vec<f64>> {
    crate::small::cholesky(c, l).map_err(|d| Error::NotPositiveDefinite {
        iteration: 0,
        curvature: d,
    })
}

/// One-sided Jacobi SVD (Hestenes) of the `l × l` row-major `g`: returns the left singular vectors
/// `W` (row-major, column `k` for singular value `k`; zero for a zero singular value) and the
/// singular values, unsorted. Rotations are applied to columns until all pairs are orthogonal to
/// `ε` (Demmel & Veselić 1992).
fn jacobi_svd_left(mut g: Vec<f64>, l: usize) -> (Vec<f64>, Vec<f64>) {
    let col_dot = |g: &[f64], p: usize, q: usize| -> f64 {
        (0..l).map(|i| g[i * l + p] * g[i * l + q]).sum()
    };
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..l {
            for q in p + 1..l {
                let alpha = col_dot(&g, p, p);
                let beta = col_dot(&g, q, q);
                let gamma = col_dot(&g, p, q);
                if gamma == 0.0 || gamma.abs() <= f64::EPSILON * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..l {
                    let (gp, gq) = (g[i * l + p], g[i * l + q]);
                    g[i * l + p] = c * gp - s * gq;
                    g[i * l + q] = s * gp + c * gq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sigma = vec![0.0; l];
    for k in 0..l {
        let s = col_dot(&g, k, k).sqrt();
        sigma[k] = s;
        for i in 0..l {
            g[i * l + k] = if s > 0.0 { g[i * l + k] / s } else { 0.0 };
        }
    }
    (g, sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_svd_recovers_singular_values_of_a_known_matrix() {
        // G = W diag(3, 2, 0.5) Zᵀ with rotations W, Z.
        let (c, s) = (0.6f64, 0.8f64);
        let w = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let z = [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c];
        let d = [3.0, 2.0, 0.5];
        let mut g = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                g[i * 3 + j] = (0..3).map(|k| w[i * 3 + k] * d[k] * z[j * 3 + k]).sum();
            }
        }
        let (_, mut sigma) = jacobi_svd_left(g, 3);
        sigma.sort_by(|a, b| b.total_cmp(a));
        for (got, want) in sigma.iter().zip(d) {
            assert!((got - want).abs() <= 1e-13, "{got} vs {want}");
        }
    }

    #[test]
    fn nystrom_is_exact_on_a_low_rank_plus_shift_operator() {
        // A = diag(10, 5, 1, 0, 0, 0) + 0.1 I, sketched with shift 0.1 and 4 probes: rank 3 exactly.
        let diag = [10.0, 5.0, 1.0, 0.0, 0.0, 0.0];
        let mut op = |x: &Vec<f64>, out: &mut Vec<f64>| {
            for i in 0..6 {
                out[i] = (diag[i] + 0.1) * x[i];
            }
        };
        let probes = crate::precond::gaussian_probes(6, 4, 3);
        let mut p = Nystrom::build(&mut op, probes, 0.1).unwrap();
        let ev = p.eigenvalues().to_vec();
        assert_eq!(ev.len(), 3, "{ev:?}");
        for (got, want) in ev.iter().zip([10.0, 5.0, 1.0]) {
            assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        }
        // M⁻¹A has eigenvalue λ̂_ℓ + μ = 1.1 on the range and 0.1 on the rest: check on e₀, e₅.
        let mut out = vec![0.0; 6];
        let mut e0 = vec![0.0; 6];
        e0[0] = 10.1;
        p.apply(&e0, &mut out).unwrap();
        assert!((out[0] - 1.1).abs() <= 1e-9, "{out:?}");
    }
}
