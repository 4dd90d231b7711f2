//! Proptest strategies over the instances of [`crate::instances`] (test-only).

use crate::instances::{
    general_contraction, spd_with_condition, symmetric_contraction, QuadraticBilevel, Ridge,
    Spectral,
};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

/// A vector with entries in `[−1, 1]`.
pub fn vector(n: usize) -> impl Strategy<Value = Array1<f64>> {
    prop::collection::vec(-1.0..1.0f64, n).prop_map(Array1::from)
}

/// A `rows × cols` matrix with entries in `[−1, 1]`.
pub fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
    prop::collection::vec(-1.0..1.0f64, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).expect("rows·cols entries"))
}

/// `n` Householder vectors of length `n`.
pub fn householder(n: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(-1.0..1.0f64, n), n)
}

/// SPD matrix of size `n ∈ [min_n, max_n]` with condition number `κ = 10^t`, `t ≤ max_log10_kappa`,
/// and `λ_min = 10^s`, `s ∈ [−1, 1]`.
pub fn spd(min_n: usize, max_n: usize, max_log10_kappa: f64) -> impl Strategy<Value = Spectral> {
    (min_n.max(2)..=max_n).prop_flat_map(move |n| {
        (
            0.0..=max_log10_kappa,
            -1.0..1.0f64,
            prop::collection::vec(0.0..1.0f64, n - 2),
            householder(n),
        )
            .prop_map(|(lk, ls, interior, hh)| {
                spd_with_condition(10f64.powf(lk), 10f64.powf(ls), &interior, &hh)
            })
    })
}

/// Symmetric `J` of size `n ∈ [1, max_n]` with `‖J‖ = q` exactly, `q ∈ [0.05, max_q]`.
pub fn symmetric_contraction_strategy(
    max_n: usize,
    max_q: f64,
) -> impl Strategy<Value = (f64, Spectral)> {
    (1..=max_n).prop_flat_map(move |n| {
        (
            0.05..max_q,
            any::<bool>(),
            prop::collection::vec(-1.0..1.0f64, n - 1),
            householder(n),
        )
            .prop_map(|(q, neg, interior, hh)| (q, symmetric_contraction(q, neg, &interior, &hh)))
    })
}

/// Non-symmetric `J` of size `n ∈ [2, max_n]` with `‖J‖ = q` exactly, `q ∈ [0.05, max_q]`.
pub fn general_contraction_strategy(
    max_n: usize,
    max_q: f64,
) -> impl Strategy<Value = (f64, Array2<f64>)> {
    (2..=max_n).prop_flat_map(move |n| {
        (
            0.05..max_q,
            prop::collection::vec(0.0..1.0f64, n - 1),
            householder(n),
            householder(n),
        )
            .prop_map(|(q, interior, hu, hv)| (q, general_contraction(q, &interior, &hu, &hv)))
    })
}

/// A [`QuadraticBilevel`] with `n ≤ max_n`, `m ≤ 4`, `κ(H) ≤ 10^max_log10_kappa`,
/// `α = frac/λ_max(H)` with `frac ∈ [0.3, 1]`, and `P` positive semi-definite with `‖P‖ ≤ 2`.
pub fn quadratic_bilevel(
    max_n: usize,
    max_log10_kappa: f64,
) -> impl Strategy<Value = QuadraticBilevel> {
    spd(2, max_n, max_log10_kappa).prop_flat_map(|h| {
        let n = h.n();
        (1..=4usize).prop_flat_map(move |m| {
            (
                Just(h.clone()),
                matrix(n, m),
                vector(n),
                0.3..=1.0f64,
                prop::collection::vec(0.0..2.0f64, n),
                householder(n),
                vector(n),
                matrix(n, m),
                0.0..1.0f64,
            )
                .prop_map(|(h, b, c, frac, p_ev, p_hh, w_bar, m, r)| {
                    let alpha = frac / h.max();
                    QuadraticBilevel {
                        h,
                        b,
                        c,
                        alpha,
                        p: Spectral::new(&p_ev, &p_hh),
                        w_bar,
                        m,
                        r,
                    }
                })
        })
    })
}

/// Ridge regression with `d ≤ 10` features, `n ≥ d + 1` training and 8 validation samples.
pub fn ridge() -> impl Strategy<Value = (Ridge, f64)> {
    (2..=10usize, 0usize..=10, -3.0..1.0f64).prop_flat_map(|(d, extra, lambda)| {
        let n = d + extra + 1;
        (matrix(n, d), vector(n), matrix(8, d), vector(8))
            .prop_map(move |(x, y, x_val, y_val)| (Ridge { x, y, x_val, y_val }, lambda))
    })
}
