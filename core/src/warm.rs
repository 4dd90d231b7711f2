//! Warm starts along a trajectory of nearby systems `A(s_t) v = b(s_t)` (hyperparameter search,
//! the outer loop of I-BAU): the next initial guess is extrapolated from the last solutions.
//!
//! With two solutions `v(s₁)`, `v(s₂)` the guess for `s` is the secant extrapolation
//! `v(s₂) + (s − s₂)/(s₂ − s₁)·(v(s₂) − v(s₁))`, whose error is `O(Δs²)` for a smooth path
//! (against `O(Δs)` for reusing `v(s₂)`); with one solution it is that solution.
//!
//! A warm start never weakens a certificate: every solver's bound is computed from the residual
//! of the iterate it returns. It saves iterations because the stopping test `‖r‖ ≤ tol` starts
//! closer to it; the solvers report its use in [`crate::Info::warm_started`].
//!
//! Source: the continuation (predictor) step of path-following methods, Allgower & Georg,
//! *Introduction to Numerical Continuation Methods*, SIAM 2003, §2.2.

use crate::vector::Vector;

/// Keeps the last two solutions of a trajectory and extrapolates the next initial guess.
#[derive(Debug, Clone, Default)]
pub struct Extrapolation<V> {
    last: Option<(f64, V)>,
    before: Option<(f64, V)>,
}

impl<V: Vector> Extrapolation<V> {
    /// An empty history (the first guess is `None`: start from zero).
    pub fn new() -> Self {
        Extrapolation {
            last: None,
            before: None,
        }
    }

    /// Records the solution `v` at the path parameter `s` (a scalar hyperparameter, or the step
    /// index). Memory: two vectors.
    pub fn push(&mut self, s: f64, v: &V) {
        match self.before.take() {
            Some((_, mut old)) => {
                old.copy_from(v);
                self.before = self.last.take();
                self.last = Some((s, old));
            }
            None => {
                self.before = self.last.take();
                self.last = Some((s, v.clone()));
            }
        }
    }

    /// The initial guess for the parameter `s`: secant extrapolation from the last two
    /// solutions, the last solution when only one is known (or the two parameters coincide),
    /// `None` before the first.
    pub fn guess(&self, s: f64) -> Option<V> {
        let (s2, v2) = self.last.as_ref()?;
        let mut g = v2.clone();
        if let Some((s1, v1)) = &self.before {
            let ds = s2 - s1;
            if ds != 0.0 && ds.is_finite() && (s - s2).is_finite() {
                let t = (s - s2) / ds;
                // g = v2 + t (v2 − v1) = (1 + t) v2 − t v1.
                g.axpby(-t, v1, 1.0 + t);
            }
        }
        Some(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secant_extrapolation_is_exact_on_a_linear_path() {
        let mut e = Extrapolation::new();
        assert!(e.guess(0.0).is_none());
        e.push(1.0, &vec![1.0, 2.0]);
        assert_eq!(e.guess(2.0), Some(vec![1.0, 2.0]));
        e.push(2.0, &vec![2.0, 4.0]);
        e.push(3.0, &vec![3.0, 6.0]);
        let g = e.guess(4.5).unwrap();
        assert!(
            (g[0] - 4.5).abs() <= 1e-14 && (g[1] - 9.0).abs() <= 1e-14,
            "{g:?}"
        );
    }
}
