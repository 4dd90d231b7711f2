//! The implicit-function hypergradient formula.
//!
//! # Statement
//! Let `Φ : W × Λ → W` be continuously differentiable, `w*(λ)` a fixed point
//! `w*(λ) = Φ(w*(λ), λ)`, `J = ∂_wΦ(w*(λ), λ)` with `I − J` invertible, and
//! `f(λ) = E(w*(λ), λ)` with `E` differentiable. Then `w*` is differentiable near `λ` and
//!
//! ```text
//! ∇f(λ) = ∇_λE + (∂_λΦ)ᵀ v*,    (I − Jᵀ) v* = ∇_wE,
//! ```
//!
//! all derivatives taken at `(w*(λ), λ)`.
//!
//! # Derivation
//! The implicit function theorem applied to `F(w, λ) = w − Φ(w, λ)` (whose `∂_wF = I − J` is
//! invertible) gives a differentiable `w*(λ)`. Differentiating `w*(λ) = Φ(w*(λ), λ)`:
//! `Dw* = J·Dw* + ∂_λΦ`, so `Dw* = (I − J)⁻¹ ∂_λΦ`. By the chain rule
//! `∇f = ∇_λE + (Dw*)ᵀ ∇_wE = ∇_λE + (∂_λΦ)ᵀ (I − Jᵀ)⁻¹ ∇_wE`. For the gradient-descent map
//! `Φ = w − α∇_wG` this is `∇f = ∇_λE − ∇²_λwG (∇²_wwG)⁻¹ ∇_wE` (the `α` cancels).
//!
//! # Sources
//! The implicit function theorem (Cauchy); in this form Pedregosa, *Hyperparameter optimization
//! with approximate gradient*, ICML 2016 (HOAG, §2); Lorraine, Vicol, Duvenaud, AISTATS 2020
//! (their Theorem 1, "Cauchy, implicit function theorem"); Grazzi, Franceschi, Pontil, Salzo,
//! ICML 2020 (arXiv 2006.16218, §2, the fixed-point formulation used here). Statement recalled,
//! derivation written out above.
//!
//! # Checks
//! The hypergradient — from the formula solved densely (LU on `I − Jᵀ`) and from
//! [`ibau_core::hypergradient()`] with conjugate gradient — is compared with central finite
//! differences of `f` itself, where every `f(λ ± h)` solves the inner problem exactly (LU):
//! * [`QuadraticBilevel`](crate::instances::QuadraticBilevel): `f` is a quadratic in `λ`, so the
//!   central difference has no truncation error and the check is to rounding;
//! * [`Ridge`](crate::instances::Ridge) in the log-regularisation: Richardson-extrapolated central
//!   differences, truncation error `O(h⁴)`.

#[cfg(test)]
mod tests {
    use crate::instances::{dist, norm, richardson_derivative, Linearised};
    use crate::strategies::{quadratic_bilevel, ridge, vector};
    use ibau_core::solve::cg;
    use ibau_core::{hypergradient, Method, Params};
    use ndarray::Array1;
    use proptest::prelude::*;

    /// Core hypergradient by CG to a tight tolerance.
    fn core_cg(lin: &Linearised) -> Array1<f64> {
        let params = Params {
            method: Method::ConjugateGradient(cg::Params {
                rel_tol: 1e-13,
                max_iter: 50 * lin.grad_w.len() + 50,
                ..Default::default()
            }),
            symmetric: true,
            ..Params::default()
        };
        hypergradient(&mut lin.problem(), &params, None, &mut ())
            .expect("I − Jᵀ is SPD")
            .gradient
    }

    proptest! {
        /// Quadratic bilevel: `f` is quadratic in `λ`, so `(f(λ+he_i) − f(λ−he_i))/2h` is the exact
        /// partial derivative up to rounding.
        #[test]
        fn quadratic_hypergradient_matches_finite_differences(
            (inst, lambda) in quadratic_bilevel(10, 2.0)
                .prop_flat_map(|q| { let m = q.m(); (Just(q), vector(m)) }),
        ) {
            let lin = inst.linearise(&lambda).unwrap();
            let (formula, _) = lin.dense_hypergradient().unwrap();
            let by_cg = core_cg(&lin);
            let h = 0.5;
            let kappa = inst.h.max() / inst.h.min();
            let mut fd = Array1::zeros(inst.m());
            let mut f_scale = inst.f(&lambda).unwrap().abs();
            for i in 0..inst.m() {
                let (mut lp, mut lm) = (lambda.clone(), lambda.clone());
                lp[i] += h;
                lm[i] -= h;
                let (fp, fm) = (inst.f(&lp).unwrap(), inst.f(&lm).unwrap());
                f_scale = f_scale.max(fp.abs()).max(fm.abs());
                fd[i] = (fp - fm) / (2.0 * h);
            }
            // Rounding: each f carries a relative error of about κ·ε.
            let tol = 1e3 * f64::EPSILON * kappa * (1.0 + f_scale) / h;
            let err = dist(&formula, &fd);
            prop_assert!(err <= tol, "formula vs FD: {err:e} > {tol:e} ({formula} vs {fd})");
            let err = dist(&by_cg, &fd);
            prop_assert!(err <= tol, "core CG vs FD: {err:e} > {tol:e} ({by_cg} vs {fd})");
            // The closed form through H⁻¹ agrees as well (an independent route).
            let (closed, _) = inst.exact_hypergradient(&lambda).unwrap();
            prop_assert!(dist(&closed, &fd) <= tol);
        }

        /// Ridge regression in the log-regularisation λ: Richardson-extrapolated central
        /// differences of the validation loss through the exactly solved inner problem.
        #[test]
        fn ridge_hypergradient_matches_finite_differences((inst, lambda) in ridge()) {
            let (_, lin) = inst.linearise(lambda).unwrap();
            let (formula, _) = lin.dense_hypergradient().unwrap();
            let by_cg = core_cg(&lin);
            let fd = richardson_derivative(|l| inst.f(l), lambda, 1e-2).unwrap();
            let f0 = inst.f(lambda).unwrap();
            // Truncation O(h⁴) of a function whose derivatives are of the size of f, rounding
            // ε·f/h: both far below 1e-7 of the scale.
            let tol = 1e-7 * (f0.abs() + fd.abs());
            let err = (formula[0] - fd).abs();
            prop_assert!(err <= tol, "formula vs FD: {err:e} > {tol:e} ({} vs {fd})", formula[0]);
            let err = (by_cg[0] - fd).abs();
            prop_assert!(err <= tol, "core CG vs FD: {err:e} > {tol:e} ({} vs {fd})", by_cg[0]);
            prop_assert!(norm(&formula).is_finite());
        }
    }

    /// Hand-checkable instance: `G = ½hw² − λw`, `Φ = w − α(hw − λ)`, `E = ½w²`, so
    /// `w* = λ/h`, `f = λ²/(2h²)`, `f' = λ/h²`; the formula gives `α·v*` with
    /// `(αh) v* = w*`, i.e. `λ/h²`, for every admissible α.
    #[test]
    fn scalar_instance_by_hand() {
        let (h, lambda) = (4.0, 3.0);
        for alpha in [0.05, 0.25, 0.4] {
            let lin = Linearised {
                jt: ndarray::array![[1.0 - alpha * h]],
                cross_t: ndarray::array![[alpha]],
                grad_w: ndarray::array![lambda / h],
                grad_lambda: ndarray::array![0.0],
            };
            let g = core_cg(&lin);
            assert!((g[0] - lambda / (h * h)).abs() <= 1e-15, "α={alpha}: {g}");
        }
    }
}
