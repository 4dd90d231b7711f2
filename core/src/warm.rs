//! Warm starts along a trajectory of nearby systems `A(s_t) v = b(s_t)` (hyperparameter search,
//! the outer loop of I-BAU): the next initial guess is extrapolated from the last solutions.
//!
//! With two solutions `v(s₁)`, `v(s₂)` the guess for `s` is the secant extrapolation
//! `v(s₂) + (s − s₂)/(s₂ − s₁)·(v(s₂) − v(s₁))`, whose error is `O(Δs²)` for a smooth path
//! (against `O(Δs)` for reusing `v(s₂)`); with one solution it is that solution; with
//! [`Extrapolation::with_order`] the polynomial through more solutions.
//!
//! A warm start never weakens a certificate: every solver's bound is computed from the residual
//! of the iterate it returns. It saves iterations because the stopping test `‖r‖ ≤ tol` starts
//! closer to it; the solvers report its use in [`crate::Info::warm_started`].
//!
//! Source: the continuation (predictor) step of path-following methods, Allgower & Georg,
//! *Introduction to Numerical Continuation Methods*, SIAM 2003, §2.2.

use crate::vector::Vector;

/// Keeps the last solutions of a trajectory (at most `order + 1`) and extrapolates the next
/// initial guess by the Lagrange polynomial through them.
#[derive(Debug, Clone)]
pub struct Extrapolation<V> {
    order: usize,
    points: Vec<(f64, V)>,
}

impl<V: Vector> Default for Extrapolation<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Vector> Extrapolation<V> {
    /// Secant (order-1) extrapolation: two vectors of memory.
    pub fn new() -> Self {
        Self::with_order(1)
    }

    /// Extrapolation by the polynomial of degree `order` through the last `order + 1` solutions
    /// (`order + 1` vectors of memory); error `O(Δs^{order+1})` on a smooth path. Orders above 2
    /// amplify the solutions' own errors (the Lagrange weights grow like `2^order`).
    pub fn with_order(order: usize) -> Self {
        Extrapolation {
            order,
            points: Vec::with_capacity(order + 1),
        }
    }

    /// Records the solution `v` at the path parameter `s` (a scalar hyperparameter, or the step
    /// index). A parameter equal to a stored one replaces it.
    pub fn push(&mut self, s: f64, v: &V) {
        if let Some(i) = self.points.iter().position(|(si, _)| *si == s) {
            self.points[i].1.copy_from(v);
            return;
        }
        if self.points.len() > self.order {
            // Recycle the oldest vector's storage.
            let (_, mut old) = self.points.remove(0);
            old.copy_from(v);
            self.points.push((s, old));
        } else {
            self.points.push((s, v.clone()));
        }
    }

    /// The initial guess for the parameter `s`: the Lagrange extrapolation through the stored
    /// solutions, `None` before the first.
    pub fn guess(&self, s: f64) -> Option<V> {
        let (_, last) = self.points.last()?;
        let mut g = last.zeros_like();
        for (i, (si, vi)) in self.points.iter().enumerate() {
            let mut weight = 1.0;
            for (j, (sj, _)) in self.points.iter().enumerate() {
                if i != j {
                    weight *= (s - sj) / (si - sj);
                }
            }
            if !weight.is_finite() {
                return Some(last.clone());
            }
            g.axpy(weight, vi);
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

    #[test]
    fn quadratic_extrapolation_is_exact_on_a_quadratic_path() {
        let mut e = Extrapolation::with_order(2);
        for s in [0.0, 1.0, 2.0, 3.0] {
            e.push(s, &vec![s * s, 1.0 - s]);
        }
        let g = e.guess(4.0).unwrap();
        assert!(
            (g[0] - 16.0).abs() <= 1e-12 && (g[1] + 3.0).abs() <= 1e-12,
            "{g:?}"
        );
    }
}
