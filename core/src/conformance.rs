//! Conformance test suite for any [`Vector`] implementation (feature `test-suite`).
//!
//! A backend provides two conversions, from a slice of `f64` to its vector type and back, and a
//! relative tolerance suited to its storage (about `1e-14` for `f64`, `1e-6` for `f32`); then
//! [`check_vector`] runs every check and panics with the name of the first one that fails. The
//! checks compare each operation against an `f64` reference computed from the backend's own
//! round-tripped values, so storage rounding is not counted as an error.
//!
//! ```
//! ibau_core::conformance::check_vector(|xs: &[f64]| xs.to_vec(), |v: &Vec<f64>| v.clone(), 1e-14);
//! ```

use crate::vector::Vector;

/// Deterministic test values (a fixed linear congruential generator; no RNG dependency).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

fn close(what: &str, got: f64, want: f64, scale: f64, tol: f64) {
    let err = (got - want).abs();
    assert!(
        err <= tol * scale.max(f64::MIN_POSITIVE),
        "conformance check `{what}` failed: got {got:e}, want {want:e} (error {err:e} > {tol:e}·{scale:e})"
    );
}

fn close_vec(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "conformance check `{what}`: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * w.abs().max(1.0),
            "conformance check `{what}` failed at entry {i}: got {g:e}, want {w:e}"
        );
    }
}

/// Runs every conformance check on the implementation behind `from`/`to`.
///
/// # Panics
/// On the first failing check, naming it.
pub fn check_vector<V, F, T>(from: F, to: T, tol: f64)
where
    V: Vector,
    F: Fn(&[f64]) -> V,
    T: Fn(&V) -> Vec<f64>,
{
    let eps = from(&[1.0]).epsilon();
    assert!(
        eps > 0.0 && eps < 1e-3,
        "conformance check `epsilon` failed: {eps:e}"
    );
    for (case, &n) in [0usize, 1, 3, 4, 7, 64, 1001].iter().enumerate() {
        let seed = case as u64;
        let xs_in = values(n, seed);
        let ys_in = values(n, seed + 100);
        let x = from(&xs_in);
        let y = from(&ys_in);
        // The backend's own rounding of the inputs is the reference.
        let xs = to(&x);
        let ys = to(&y);
        close_vec("round trip", &xs, &xs_in, 2.0 * eps);
        assert_eq!(x.dim(), n, "conformance check `dim` failed");

        let dot_ref: f64 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        let dot_scale: f64 = xs.iter().zip(&ys).map(|(a, b)| (a * b).abs()).sum();
        close("dot", x.dot(&y), dot_ref, dot_scale, tol);
        close("dot symmetry", x.dot(&y), y.dot(&x), dot_scale, tol);

        let norm_ref = xs.iter().map(|a| a * a).sum::<f64>().sqrt();
        close("norm", x.norm(), norm_ref, norm_ref, tol);

        let mut z = x.clone();
        z.axpy(-0.75, &y);
        let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a - 0.75 * b).collect();
        close_vec("axpy", &to(&z), &want, tol.max(2.0 * eps));
        assert_eq!(
            to(&x),
            xs,
            "conformance check `clone independence` failed: axpy on a clone changed the original"
        );

        let mut z = x.clone();
        let nz = z.axpy_norm(-0.75, &y);
        let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a - 0.75 * b).collect();
        close_vec("axpy_norm update", &to(&z), &want, tol.max(2.0 * eps));
        let want_norm = want.iter().map(|a| a * a).sum::<f64>().sqrt();
        close(
            "axpy_norm norm",
            nz,
            want_norm,
            want_norm,
            tol.max(4.0 * eps),
        );

        // dot_many and axpy_many against 0..=6 vectors (groups of four and their remainders).
        let many: Vec<Vec<f64>> = (0..6).map(|j| values(n, seed + 200 + j)).collect();
        let many_v: Vec<V> = many.iter().map(|m| from(m)).collect();
        let many_s: Vec<Vec<f64>> = many_v.iter().map(&to).collect();
        for count in 0..=6 {
            let mut out = vec![f64::NAN; count];
            x.dot_many(&many_v[..count], &mut out);
            for (j, o) in out.iter().enumerate() {
                let r: f64 = xs.iter().zip(&many_s[j]).map(|(a, b)| a * b).sum();
                let sc: f64 = xs.iter().zip(&many_s[j]).map(|(a, b)| (a * b).abs()).sum();
                close("dot_many", *o, r, sc, tol);
            }
            let coeffs: Vec<f64> = (0..count).map(|j| 0.5 - 0.25 * j as f64).collect();
            let mut z = x.clone();
            z.axpy_many(&coeffs, &many_v[..count]);
            let want: Vec<f64> = (0..n)
                .map(|i| xs[i] + (0..count).map(|j| coeffs[j] * many_s[j][i]).sum::<f64>())
                .collect();
            close_vec("axpy_many", &to(&z), &want, tol.max(8.0 * eps));
        }

        let mut z = x.clone();
        z.axpby(1.5, &y, -0.5);
        let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| 1.5 * b - 0.5 * a).collect();
        close_vec("axpby", &to(&z), &want, tol.max(2.0 * eps));

        let mut z = x.clone();
        z.scale(-3.0);
        let want: Vec<f64> = xs.iter().map(|a| -3.0 * a).collect();
        close_vec("scale", &to(&z), &want, tol.max(2.0 * eps));

        let mut zero = x.zeros_like();
        assert_eq!(zero.dim(), n, "conformance check `zeros_like dim` failed");
        assert!(
            to(&zero).iter().all(|&v| v == 0.0),
            "conformance check `zeros_like` failed"
        );
        zero.axpy(1.0, &y);
        assert_eq!(
            to(&x),
            xs,
            "conformance check `zeros_like independence` failed"
        );

        let mut c = y.zeros_like();
        c.copy_from(&x);
        assert_eq!(to(&c), xs, "conformance check `copy_from` failed");
        c.scale(2.0);
        assert_eq!(
            to(&x),
            xs,
            "conformance check `copy_from independence` failed"
        );

        assert!(
            x.is_finite(),
            "conformance check `is_finite` failed on finite values"
        );
        if n > 0 {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut vals = xs_in.clone();
                vals[n / 2] = bad;
                let v = from(&vals);
                assert!(!v.is_finite(), "conformance check `is_finite` missed {bad}");
                let nv = v.norm();
                if bad.is_nan() {
                    assert!(nv.is_nan(), "conformance check `norm of NaN` failed: {nv}");
                } else {
                    assert!(
                        nv == f64::INFINITY,
                        "conformance check `norm of Inf` failed: {nv}"
                    );
                }
            }
            // axpby with beta = 0 discards the old contents, NaN included.
            let mut nan = from(&vec![f64::NAN; n]);
            nan.axpby(1.0, &x, 0.0);
            assert_eq!(
                to(&nan),
                xs,
                "conformance check `axpby beta=0 discards NaN` failed"
            );
        }
    }
    // Overflow and underflow safety of the norm at the extremes the storage can hold.
    for big in [1e300, 1e200, 1e30] {
        let v = from(&[big, big, big]);
        let stored = to(&v)[0];
        if stored.is_finite() && stored.to_bits() == big.to_bits() {
            close(
                "norm without overflow",
                v.norm(),
                big * 3f64.sqrt(),
                big * 3f64.sqrt(),
                tol.max(4.0 * eps),
            );
            break;
        }
    }
    for tiny in [1e-300, 1e-200, 1e-30] {
        let v = from(&[tiny, tiny, tiny]);
        let stored = to(&v)[0];
        if stored.to_bits() == tiny.to_bits() {
            close(
                "norm without underflow",
                v.norm(),
                tiny * 3f64.sqrt(),
                tiny * 3f64.sqrt(),
                tol.max(4.0 * eps),
            );
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    #[test]
    fn vec_f64_conforms() {
        check_vector(|xs: &[f64]| xs.to_vec(), |v: &Vec<f64>| v.clone(), 1e-14);
    }

    #[test]
    fn array1_f64_conforms() {
        check_vector(
            |xs: &[f64]| Array1::from(xs.to_vec()),
            |v: &Array1<f64>| v.to_vec(),
            1e-14,
        );
    }

    #[test]
    fn array1_f32_conforms() {
        check_vector(
            |xs: &[f64]| xs.iter().map(|&x| x as f32).collect::<Array1<f32>>(),
            |v: &Array1<f32>| v.iter().map(|&x| f64::from(x)).collect(),
            1e-12,
        );
    }

    /// A deliberately broken implementation must fail the suite.
    #[derive(Clone)]
    struct BrokenDot(Vec<f64>);
    impl Vector for BrokenDot {
        fn dim(&self) -> usize {
            self.0.len()
        }
        fn dot(&self, other: &Self) -> f64 {
            self.0.dot(&other.0) * (1.0 + 1e-9)
        }
        fn norm(&self) -> f64 {
            self.0.norm()
        }
        fn axpy(&mut self, a: f64, x: &Self) {
            self.0.axpy(a, &x.0)
        }
        fn axpby(&mut self, a: f64, x: &Self, b: f64) {
            self.0.axpby(a, &x.0, b)
        }
        fn scale(&mut self, a: f64) {
            self.0.scale(a)
        }
        fn zeros_like(&self) -> Self {
            BrokenDot(self.0.zeros_like())
        }
        fn copy_from(&mut self, o: &Self) {
            self.0.copy_from(&o.0)
        }
        fn is_finite(&self) -> bool {
            self.0.is_finite()
        }
    }

    #[test]
    #[should_panic(expected = "conformance check `dot` failed")]
    fn a_wrong_dot_fails_the_suite() {
        check_vector(
            |xs: &[f64]| BrokenDot(xs.to_vec()),
            |v: &BrokenDot| v.0.clone(),
            1e-14,
        );
    }
}
