//! Preconditioners for [`crate::solve::pcg`]: `M⁻¹ ≈ A⁻¹`, symmetric positive definite, cheap to
//! apply.
//!
//! * [`Identity`]: `M = I` (plain CG, for comparison);
//! * [`jacobi::Jacobi`]: `M = diag(A)`, given exactly or estimated by Hutchinson's probes;
//! * [`nystrom::Nystrom`]: randomized Nyström low-rank approximation of `A` from a few sketches
//!   (Frangella, Tropp & Udell 2023), generic over any [`Vector`].
//!
//! Every preconditioner reports its memory and the operator applications spent building it
//! ([`PreconditionerInfo`]); the solver copies that report into its [`crate::Info`].
//!
//! Any SPD `M` keeps PCG correct (the iterate converges to `A⁻¹b` and the certified bound
//! `‖v − v*‖ ≤ ‖b − Av‖/λ_min(A)` uses the true residual); a better `M` only makes it faster.

pub mod jacobi;
pub mod nystrom;

use crate::error::Result;
use crate::report::PreconditionerInfo;
use crate::vector::Vector;

pub use jacobi::Jacobi;
pub use nystrom::Nystrom;

/// A symmetric positive definite preconditioner `M`, applied as `r ↦ M⁻¹ r`.
pub trait Preconditioner<V> {
    /// Computes `out ← M⁻¹ r`. `out` has the shape of `r` on entry (its contents are arbitrary).
    ///
    /// # Errors
    /// [`crate::Error::DimensionMismatch`] when `r` does not have the dimension it was built for.
    fn apply(&mut self, r: &V, out: &mut V) -> Result<()>;
    /// What it is, what it holds, what it cost.
    fn info(&self) -> PreconditionerInfo;
    /// A certified lower bound `s ≤ λ_min(M⁻¹)` on the smallest eigenvalue of the applied inverse,
    /// where one is known (`None` by default). With a certified `λ_min(A) ≥ l`,
    /// `λ_min(M⁻¹A) ≥ l·s` (for SPD `A` and `M⁻¹`, the eigenvalues of `M^{-1/2}AM^{-1/2}` are at
    /// least `λ_min(A)·λ_min(M⁻¹)`), which is the node PCG's Gauss–Radau bound needs
    /// ([`crate::solve::pcg`]).
    fn inverse_lower_bound(&self) -> Option<f64> {
        None
    }
}

/// `M = I`: preconditioned CG with it is plain CG (one extra copy per iteration).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<V: Vector> Preconditioner<V> for Identity {
    fn apply(&mut self, r: &V, out: &mut V) -> Result<()> {
        out.copy_from(r);
        Ok(())
    }
    fn info(&self) -> PreconditionerInfo {
        PreconditionerInfo {
            name: "identity",
            rank: 0,
            vectors: 0.0,
            bytes: 0,
            build_applications: 0,
            reused: false,
        }
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        Some(1.0)
    }
}

/// Lets a `&mut P` be passed where a preconditioner is expected (to keep it for the next solve).
impl<V, P: Preconditioner<V> + ?Sized> Preconditioner<V> for &mut P {
    fn apply(&mut self, r: &V, out: &mut V) -> Result<()> {
        (**self).apply(r, out)
    }
    fn info(&self) -> PreconditionerInfo {
        (**self).info()
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        (**self).inverse_lower_bound()
    }
}

/// A boxed preconditioner (to choose one at run time).
impl<V, P: Preconditioner<V> + ?Sized> Preconditioner<V> for Box<P> {
    fn apply(&mut self, r: &V, out: &mut V) -> Result<()> {
        (**self).apply(r, out)
    }
    fn info(&self) -> PreconditionerInfo {
        (**self).info()
    }
    fn inverse_lower_bound(&self) -> Option<f64> {
        (**self).inverse_lower_bound()
    }
}

/// A seeded stream of standard normal numbers (SplitMix64 and Box–Muller), so that the core needs
/// no random-number dependency. Not for cryptography; statistically adequate for sketching.
#[derive(Debug, Clone)]
pub struct GaussianStream {
    state: u64,
    spare: Option<f64>,
}

impl GaussianStream {
    /// A stream from a seed.
    pub fn new(seed: u64) -> Self {
        GaussianStream {
            state: seed,
            spare: None,
        }
    }
    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea & Flood 2014).
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A uniform number in `(0, 1]`.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// A Rademacher sign `±1`.
    pub fn sign(&mut self) -> f64 {
        if self.next_u64() >> 63 == 0 {
            1.0
        } else {
            -1.0
        }
    }
    /// A standard normal number.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

/// `count` vectors of `dim` independent standard normal entries, from `seed`: the test matrix Ω of
/// a Nyström sketch. Convert with `Array1::from` for ndarray.
pub fn gaussian_probes(dim: usize, count: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut g = GaussianStream::new(seed);
    (0..count)
        .map(|_| (0..dim).map(|_| g.normal()).collect())
        .collect()
}
