//! Kernels on the small `k × k` row-major Gram matrices of the Nyström preconditioner and the
//! recycled CG space (no LAPACK: `k` is a few dozen at most).

/// Lower Cholesky factor of the `k × k` row-major symmetric `c`, or the first pivot that is not
/// positive (NaN included), for the caller to turn into its error.
pub(crate) fn cholesky(c: &[f64], k: usize) -> Result<Vec<f64>, f64> {
    let mut f = vec![0.0; k * k];
    for j in 0..k {
        let mut d = c[j * k + j];
        for t in 0..j {
            d -= f[j * k + t] * f[j * k + t];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(d);
        }
        let djj = d.sqrt();
        f[j * k + j] = djj;
        for i in j + 1..k {
            let mut s = c[i * k + j];
            for t in 0..j {
                s -= f[i * k + t] * f[j * k + t];
            }
            f[i * k + j] = s / djj;
        }
    }
    Ok(f)
}
