//! Jacobi (diagonal) preconditioner `M = diag(A)`, given exactly or estimated by Hutchinson's
//! probes.
//!
//! # Requirements
//! A positive diagonal. For SPD `A` every diagonal entry is positive; an estimated entry below
//! `floor · mean` is raised to it, so `M` stays SPD whatever the estimate.
//!
//! # Bound
//! PCG converges as CG on `M^{-1/2} A M^{-1/2}`: `‖e_k‖_A ≤ 2((√κ̃ − 1)/(√κ̃ + 1))^k ‖e_0‖_A`
//! with `κ̃ = κ(M⁻¹A)`. Among diagonal scalings, Jacobi is within a factor `m` (the most non-zeros
//! in a row) of the optimal κ̃ (van der Sluis 1969).
//!
//! Source: Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., §10.2; Bekas, Kokiopoulou
//! & Saad, *An estimator for the diagonal of a matrix*, Appl. Numer. Math. 57 (2007) (the probe
//! estimator `diag(A) ≈ Σ z⊙Az / Σ z⊙z` with Rademacher `z`).

use ndarray::Array1;

use crate::error::{Error, Location, Result};
use crate::operator::{apply_checked, Operator};
use crate::precond::{GaussianStream, Preconditioner};
use crate::report::PreconditionerInfo;

/// `M = diag(A)`, stored as its inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct Jacobi {
    inv_diag: Vec<f64>,
    probes: usize,
    build_applications: usize,
    reused: bool,
}

impl Jacobi {
    /// From the exact diagonal of `A` (every entry finite and `> 0`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an entry `≤ 0`; [`Error::NonFinite`].
    pub fn from_diagonal(diagonal: &[f64]) -> Result<Self> {
        let mut inv_diag = Vec::with_capacity(diagonal.len());
        for &d in diagonal {
            if !d.is_finite() {
                return Err(Error::NonFinite {
                    at: Location::Parameter,
                });
            }
            if d <= 0.0 {
                return Err(Error::InvalidParameter {
                    name: "diagonal entry",
                    value: d,
                    reason: "a Jacobi preconditioner needs a positive diagonal",
                });
            }
            inv_diag.push(1.0 / d);
        }
        Ok(Jacobi {
            inv_diag,
            probes: 0,
            build_applications: 0,
            reused: false,
        })
    }

    /// From the exact diagonal of `A₀`, for `A = A₀ + shift·I`, inverted in the storage of
    /// `diagonal` (the preconditioner then holds one vector and nothing else is allocated).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an entry of `diag(A₀) + shift` that is `≤ 0`;
    /// [`Error::NonFinite`].
    pub fn from_diagonal_vec(mut diagonal: Vec<f64>, shift: f64) -> Result<Self> {
        for d in diagonal.iter_mut() {
            let e = *d + shift;
            if !e.is_finite() {
                return Err(Error::NonFinite {
                    at: Location::Parameter,
                });
            }
            if e <= 0.0 {
                return Err(Error::InvalidParameter {
                    name: "diagonal entry",
                    value: e,
                    reason: "a Jacobi preconditioner needs a positive diagonal",
                });
            }
            *d = 1.0 / e;
        }
        Ok(Jacobi {
            inv_diag: diagonal,
            probes: 0,
            build_applications: 0,
            reused: false,
        })
    }

    /// For `A + delta·I` (a shift along a trajectory): `M ← M + delta·I`, in place, and marks the
    /// preconditioner as reused. The inverse is updated as `1/(1/m + delta)`, which costs a
    /// relative rounding error of a few ε per shift — harmless, as any SPD `M` keeps PCG exact.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if an entry of `M + delta·I` is not positive (the
    /// preconditioner is left unchanged); [`Error::NonFinite`].
    pub fn shift(&mut self, delta: f64) -> Result<()> {
        if !delta.is_finite() {
            return Err(Error::NonFinite {
                at: Location::Parameter,
            });
        }
        if let Some(&bad) = self.inv_diag.iter().find(|&&i| 1.0 / i + delta <= 0.0) {
            return Err(Error::InvalidParameter {
                name: "shifted diagonal entry",
                value: 1.0 / bad + delta,
                reason: "a Jacobi preconditioner needs a positive diagonal",
            });
        }
        for i in self.inv_diag.iter_mut() {
            *i = 1.0 / (1.0 / *i + delta);
        }
        self.reused = true;
        Ok(())
    }

    /// Estimates `diag(A)` from `probes` Rademacher vectors (`probes` applications of `a`), seeded.
    /// Entries below `floor · mean(estimate)` (e.g. `floor = 1e-3`) are raised to it.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `probes = 0` or a non-positive mean; the operator's errors.
    pub fn hutchinson<O>(
        a: &mut O,
        dim: usize,
        probes: usize,
        floor: f64,
        seed: u64,
    ) -> Result<Self>
    where
        O: Operator<Vec<f64>> + ?Sized,
    {
        if probes == 0 {
            return Err(Error::InvalidParameter {
                name: "probes",
                value: 0.0,
                reason: "at least one probe is needed",
            });
        }
        let mut rng = GaussianStream::new(seed);
        let mut z = vec![0.0; dim];
        let mut az = vec![0.0; dim];
        let mut num = vec![0.0; dim];
        for k in 0..probes {
            z.iter_mut().for_each(|zi| *zi = rng.sign());
            apply_checked(a, &z, &mut az, k)?;
            for ((n, zi), azi) in num.iter_mut().zip(&z).zip(&az) {
                *n += zi * azi;
            }
        }
        // Σ z_i² = probes for Rademacher probes.
        num.iter_mut().for_each(|n| *n /= probes as f64);
        let mean = num.iter().sum::<f64>() / dim.max(1) as f64;
        if !(mean.is_finite() && mean > 0.0) {
            return Err(Error::InvalidParameter {
                name: "estimated mean diagonal",
                value: mean,
                reason: "must be > 0 for an SPD operator",
            });
        }
        let low = floor.max(0.0) * mean;
        let diagonal: Vec<f64> = num
            .iter()
            .map(|&d| {
                if d > low {
                    d
                } else {
                    low.max(f64::MIN_POSITIVE)
                }
            })
            .collect();
        let mut j = Self::from_diagonal(&diagonal)?;
        j.probes = probes;
        j.build_applications = probes;
        Ok(j)
    }

    /// Marks it as reused for a later system (reported in [`PreconditionerInfo::reused`]).
    pub fn mark_reused(&mut self) {
        self.reused = true;
    }

    /// `λ_min(M⁻¹)`: the smallest stored inverse entry (exact: `M⁻¹` is the diagonal applied).
    fn min_inverse(&self) -> Option<f64> {
        let m = self.inv_diag.iter().copied().fold(f64::INFINITY, f64::min);
        (m.is_finite() && m > 0.0).then_some(m)
    }

    fn apply_slice(&self, r: &[f64], out: &mut [f64]) -> Result<()> {
        if r.len() != self.inv_diag.len() || out.len() != r.len() {
            return Err(Error::DimensionMismatch {
                what: "Jacobi preconditioner input",
                expected: self.inv_diag.len(),
                found: r.len(),
            });
        }
        for ((o, ri), di) in out.iter_mut().zip(r).zip(&self.inv_diag) {
            *o = ri * di;
        }
        Ok(())
    }
}

impl Preconditioner<Vec<f64>> for Jacobi {
    fn apply(&mut self, r: &Vec<f64>, out: &mut Vec<f64>) -> Result<()> {
        self.apply_slice(r, out)
    }
    fn info(&self) -> PreconditionerInfo {
        PreconditionerInfo {
            name: "jacobi",
            rank: self.probes,
            vectors: 1.0,
            bytes: 8 * self.inv_diag.len(),
            build_applications: self.build_applications,
            reused: self.reused,
        }
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        self.min_inverse()
    }
}

impl Preconditioner<Array1<f64>> for Jacobi {
    fn apply(&mut self, r: &Array1<f64>, out: &mut Array1<f64>) -> Result<()> {
        match (r.as_slice(), out.as_slice_mut()) {
            (Some(r), Some(o)) => self.apply_slice(r, o),
            _ => {
                let rv = r.to_vec();
                let mut o = vec![0.0; rv.len()];
                self.apply_slice(&rv, &mut o)?;
                out.assign(&Array1::from(o));
                Ok(())
            }
        }
    }
    fn info(&self) -> PreconditionerInfo {
        <Self as Preconditioner<Vec<f64>>>::info(self)
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        self.min_inverse()
    }
}
