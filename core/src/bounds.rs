//! A-priori bounds, as plain functions, so that tests, benchmarks and users evaluate the same
//! formulas the documentation states. Each is derived in the `proofs` crate.

/// Fixed point, a priori: `‖v_k − v*‖ ≤ q^k ‖v_0 − v*‖` for `‖J‖ ≤ q`.
pub fn fixed_point_a_priori(q: f64, k: usize, initial_error: f64) -> f64 {
    q.powi(saturating_i32(k)) * initial_error
}

/// Fixed point, a posteriori: `‖v_k − v*‖ ≤ q/(1−q) · ‖v_k − v_{k−1}‖` for `‖J‖ ≤ q < 1`
/// (`+∞` for `q ≥ 1`).
pub fn fixed_point_a_posteriori(q: f64, step: f64) -> f64 {
    if q < 1.0 {
        q / (1.0 - q) * step
    } else {
        f64::INFINITY
    }
}

/// Neumann series for the gradient-descent map `J = I − α∇²G`, `μ ⪯ ∇²G ⪯ L`, `0 < α ≤ 1/L`:
/// `‖v_K − v*‖ ≤ (1 − αμ)^{K+1} ‖v*‖` (Lorraine et al., AISTATS 2020).
pub fn neumann_gradient_descent(alpha: f64, mu: f64, terms: usize, v_star_norm: f64) -> f64 {
    (1.0 - alpha * mu).powi(saturating_i32(terms).saturating_add(1)) * v_star_norm
}

/// Conjugate gradient, a priori, in the A-norm:
/// `‖v_k − v*‖_A ≤ 2((√κ − 1)/(√κ + 1))^k ‖v_0 − v*‖_A` (Nocedal & Wright, eq. 5.36).
pub fn cg_a_priori(kappa: f64, k: usize, initial_error_a_norm: f64) -> f64 {
    let s = kappa.sqrt();
    2.0 * ((s - 1.0) / (s + 1.0)).powi(saturating_i32(k)) * initial_error_a_norm
}

/// One step of the Gauss–Radau recurrence of CG (Meurant & Tichý, Numer. Algorithms 82, 2019):
/// from `γ̃_k` (start: `γ̃_0 = 1/μ`), CG's step length `γ_k = r_kᵀz_k/p_kᵀAp_k` and direction
/// coefficient `δ_{k+1} = r_{k+1}ᵀz_{k+1}/r_kᵀz_k`,
/// `γ̃_{k+1} = (γ̃_k − γ_k)/(μ(γ̃_k − γ_k) + δ_{k+1})`. For `0 < μ ≤ λ_min(A)`, in exact arithmetic,
/// `‖v_k − v*‖²_A ≤ γ̃_k·r_kᵀz_k ≤ r_kᵀz_k/μ` (unpreconditioned: `z = r`; preconditioned: `μ ≤
/// λ_min(M⁻¹A)`). `None` when `γ̃_k ≤ γ_k` (impossible in exact arithmetic, so a sign that
/// rounding has taken over) or the result is not a positive finite number.
pub fn gauss_radau_next(gamma_tilde: f64, gamma: f64, delta: f64, mu: f64) -> Option<f64> {
    let diff = gamma_tilde - gamma;
    let next = diff / (mu * diff + delta);
    (diff > 0.0 && next.is_finite() && next > 0.0).then_some(next)
}

/// Relative margin by which the solvers place the Gauss–Radau node below the caller's lower
/// bound on `λ_min`: `μ = (1 − 10⁻⁴)·lower` ([`gauss_radau_node`]).
///
/// Finite-precision CG produces the coefficients of exact CG on a larger matrix whose eigenvalues
/// lie in small intervals around those of `A` (Greenbaum 1989), some of them slightly below
/// `λ_min`; and once the smallest Ritz value has converged to within rounding of the node, the
/// recurrence divides a rounding-level difference. A node *at* `λ_min` (a caller passing the
/// exact smallest eigenvalue) then gave a bound 10 % below the true error (found by the
/// `proofs::gauss_radau` property tests on 2026-12-04: n = 12, κ = 85, 16 steps). The margin keeps
/// the node below those intervals while `ε·κ·n ≪ 10⁻⁴`, and costs about `10⁻⁴` in relative
/// tightness while the bound is accurate (later it is nearly independent of μ: Meurant & Tichý,
/// Numer. Algorithms 94, 2023).
pub const GAUSS_RADAU_NODE_MARGIN: f64 = 1e-4;

/// The node the solvers use for a lower bound `lower ≤ λ_min` (of `A`, or of `M⁻¹A` for PCG):
/// `(1 − GAUSS_RADAU_NODE_MARGIN)·lower`, `None` unless it is a positive normal number.
pub fn gauss_radau_node(lower: f64) -> Option<f64> {
    Some(lower * (1.0 - GAUSS_RADAU_NODE_MARGIN)).filter(|mu| mu.is_normal() && *mu > 0.0)
}

/// The Gauss–Radau recurrence's start `γ̃_0 = 1/μ` (`None` if it is not finite).
pub fn gauss_radau_start(mu: f64) -> Option<f64> {
    Some(1.0 / mu).filter(|g| g.is_finite())
}

/// The Euclidean error bound from the Gauss–Radau one: with `‖e‖²_A ≤ γ̃·ρ` for the recursive
/// residual (`residual_norm = √ρ = √(r_recᵀz_rec)`, `‖r_rec‖` without preconditioner), the drift
/// `gap = ‖r_true − r_rec‖` and `λ_min(A) ≥ lambda_min`,
/// `‖v − v*‖ ≤ (√γ̃·√ρ + gap/√lambda_min)/√lambda_min` (documented in `solve::pcg`).
pub fn gauss_radau_error(gamma_tilde: f64, residual_norm: f64, gap: f64, lambda_min: f64) -> f64 {
    let sqrt_l = lambda_min.sqrt();
    (gamma_tilde.sqrt() * residual_norm + gap / sqrt_l) / sqrt_l
}

/// Condition number bound of `I − J` for symmetric `J` with `‖J‖ ≤ q < 1`: `(1 + q)/(1 − q)`.
pub fn kappa_from_contraction(q: f64) -> f64 {
    (1.0 + q) / (1.0 - q)
}

/// Hypergradient error with an exact inner solution: `‖∇̂f − ∇f‖ ≤ ‖∂_λΦ‖ · ‖v − v*‖`.
pub fn hypergradient_error(cross_norm: f64, v_error: f64) -> f64 {
    cross_norm * v_error
}

fn saturating_i32(k: usize) -> i32 {
    i32::try_from(k).unwrap_or(i32::MAX)
}
