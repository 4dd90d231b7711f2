//! Ritz values from conjugate gradient's coefficients, at no extra operator cost.
//!
//! CG's `α_j`, `β_j` define the Lanczos tridiagonal `T_m` of `A` on the Krylov space:
//! `T_{jj} = 1/α_j + β_{j−1}/α_{j−1}` (the second term absent for `j = 0`) and
//! `T_{j,j+1} = √β_j / α_j` (Saad, *Iterative Methods for Sparse Linear Systems*, §6.7.3).
//! Its eigenvalues (Ritz values) lie in `[λ_min(A), λ_max(A)]` and approach the extremes first.
//! They are computed here by Sturm-sequence bisection, without LAPACK.

use crate::report::Spectrum;

/// Number of eigenvalues of the symmetric tridiagonal (diag `d`, off-diagonal `e`) below `x`.
fn count_below(d: &[f64], e: &[f64], x: f64) -> usize {
    let mut count = 0;
    let mut q = 1.0f64;
    for i in 0..d.len() {
        let off = if i == 0 { 0.0 } else { e[i - 1] * e[i - 1] / q };
        q = d[i] - x - off;
        if q == 0.0 {
            q = -f64::EPSILON * (d[i].abs() + x.abs()).max(f64::MIN_POSITIVE);
        }
        if q < 0.0 {
            count += 1;
        }
    }
    count
}

/// The `k`-th smallest eigenvalue (0-based) of a symmetric tridiagonal matrix by bisection.
fn kth_eigenvalue(d: &[f64], e: &[f64], k: usize) -> f64 {
    let n = d.len();
    // Gershgorin interval.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..n {
        let r = if i > 0 { e[i - 1].abs() } else { 0.0 } + if i + 1 < n { e[i].abs() } else { 0.0 };
        lo = lo.min(d[i] - r);
        hi = hi.max(d[i] + r);
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if count_below(d, e, mid) > k {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Extreme Ritz values from CG's step lengths `alphas` and ratios `betas`
/// (`β_j = ‖r_{j+1}‖²/‖r_j‖²`). `None` before the first iteration or on non-finite input.
pub fn ritz_extremes(alphas: &[f64], betas: &[f64]) -> Option<Spectrum> {
    let m = alphas.len();
    if m == 0 || betas.len() < m - 1 {
        return None;
    }
    let mut d = Vec::with_capacity(m);
    let mut e = Vec::with_capacity(m.saturating_sub(1));
    for j in 0..m {
        let mut djj = 1.0 / alphas[j];
        if j > 0 {
            djj += betas[j - 1] / alphas[j - 1];
        }
        d.push(djj);
        if j + 1 < m {
            e.push(betas[j].sqrt() / alphas[j]);
        }
    }
    if !d.iter().chain(&e).all(|v| v.is_finite()) {
        return None;
    }
    Some(Spectrum {
        lambda_min: kth_eigenvalue(&d, &e, 0),
        lambda_max: kth_eigenvalue(&d, &e, m - 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_eigenvalues_of_a_known_tridiagonal() {
        // tridiag(-1, 2, -1) of size n has eigenvalues 2 − 2cos(jπ/(n+1)).
        let n = 12;
        let d = vec![2.0; n];
        let e = vec![-1.0; n - 1];
        for j in 0..n {
            let exact =
                2.0 - 2.0 * (((j + 1) as f64) * std::f64::consts::PI / (n as f64 + 1.0)).cos();
            let got = kth_eigenvalue(&d, &e, j);
            assert!((got - exact).abs() <= 1e-12, "j={j}: {got} vs {exact}");
        }
    }
}
