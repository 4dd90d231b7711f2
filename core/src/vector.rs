//! The vector-space trait the solvers are generic over, and its implementations for
//! `Vec<f64>`, `ndarray::Array1<f64>` and `ndarray::Array1<f32>`.

use ndarray::Array1;

/// A real vector space with the handful of in-place operations the solvers need.
///
/// Scalars are `f64` whatever the storage: an `f32` implementation stores `f32` but accumulates
/// dot products and norms in `f64`. Solvers allocate their work vectors once (with
/// [`Vector::zeros_like`]) and then only call the in-place operations, so an implementation over
/// GPU tensors does not allocate per iteration.
///
/// # Panics
/// Binary operations on vectors of different [`Vector::dim`] (or incompatible layouts) are a
/// programmer error and may panic; solvers check dimensions up front and report
/// [`crate::Error::DimensionMismatch`] instead.
///
/// Implementations are checked by `ibau_core::conformance` (feature `test-suite`).
pub trait Vector: Clone {
    /// Number of scalar entries.
    fn dim(&self) -> usize;
    /// Inner product ⟨self, other⟩, accumulated in `f64`.
    fn dot(&self, other: &Self) -> f64;
    /// Euclidean norm, without overflow or underflow for finite entries
    /// (NaN if an entry is NaN, +Inf if an entry is infinite).
    fn norm(&self) -> f64;
    /// `self ← self + alpha·x`.
    fn axpy(&mut self, alpha: f64, x: &Self);
    /// `self ← alpha·x + beta·self`.
    fn axpby(&mut self, alpha: f64, x: &Self, beta: f64);
    /// `self ← alpha·self`.
    fn scale(&mut self, alpha: f64);
    /// A new vector of the same shape (and device), all zeros.
    fn zeros_like(&self) -> Self;
    /// `self ← other` (same shape), without allocating.
    fn copy_from(&mut self, other: &Self);
    /// Whether every entry is finite.
    fn is_finite(&self) -> bool;
    /// Machine epsilon of the storage type (`f64::EPSILON` for `f64`, `f32::EPSILON` for `f32`);
    /// solvers use it to tell rounding noise from a real signal.
    fn epsilon(&self) -> f64 {
        f64::EPSILON
    }
    /// `self ← self + alpha·x`, returning the new `‖self‖` (the residual update and its norm of
    /// CG). Same results as [`Vector::axpy`] then [`Vector::norm`]; an implementation may fuse
    /// them into one pass.
    fn axpy_norm(&mut self, alpha: f64, x: &Self) -> f64 {
        self.axpy(alpha, x);
        self.norm()
    }
    /// `out[j] ← ⟨self, others[j]⟩` (the projections onto a recycle space). Same results as
    /// [`Vector::dot`] for each; an implementation may compute them in one pass over `self`.
    ///
    /// # Panics
    /// If `out` and `others` differ in length (programmer error).
    fn dot_many(&self, others: &[Self], out: &mut [f64]) {
        assert_eq!(others.len(), out.len(), "dot_many: length mismatch");
        for (o, v) in out.iter_mut().zip(others) {
            *o = self.dot(v);
        }
    }
    /// `self ← self + Σ_j coeffs[j]·xs[j]` (a linear combination). Equal to successive
    /// [`Vector::axpy`]s up to rounding (the order of the additions may differ); an
    /// implementation may do it in one pass over `self`.
    ///
    /// # Panics
    /// If `coeffs` and `xs` differ in length (programmer error).
    fn axpy_many(&mut self, coeffs: &[f64], xs: &[Self]) {
        assert_eq!(coeffs.len(), xs.len(), "axpy_many: length mismatch");
        for (&c, x) in coeffs.iter().zip(xs) {
            if c != 0.0 {
                self.axpy(c, x);
            }
        }
    }
}

/// `y ← y + αx` and `‖y‖` in one pass (the fast path of [`norm_f64`]; the rescaled norm when
/// the sum of squares leaves the normal range).
fn axpy_norm_f64(y: &mut [f64], alpha: f64, x: &[f64]) -> f64 {
    assert_eq!(y.len(), x.len(), "axpy: dimension mismatch");
    let mut acc = [0.0f64; 4];
    let mut yc = y.chunks_exact_mut(4);
    let mut xc = x.chunks_exact(4);
    for (ys, xs) in (&mut yc).zip(&mut xc) {
        for i in 0..4 {
            ys[i] += alpha * xs[i];
            acc[i] += ys[i] * ys[i];
        }
    }
    let mut tail = 0.0;
    for (yi, xi) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *yi += alpha * xi;
        tail += *yi * *yi;
    }
    let sumsq = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
    if sumsq.is_finite() && sumsq >= f64::MIN_POSITIVE / f64::EPSILON {
        return sumsq.sqrt();
    }
    safe_norm(y.iter().copied())
}

/// Dot products of `a` with up to four vectors in one pass, each with the four accumulators and
/// the summation order of [`dot_f64`] (bitwise the same results).
fn dot_group_f64<const N: usize>(a: &[f64], bs: [&[f64]; N]) -> [f64; N] {
    let n = a.len();
    for b in &bs {
        assert_eq!(b.len(), n, "dot: dimension mismatch");
    }
    let mut acc = [[0.0f64; 4]; N];
    let full = n / 4 * 4;
    let mut i = 0;
    while i < full {
        for lane in 0..4 {
            let ai = a[i + lane];
            for j in 0..N {
                acc[j][lane] += ai * bs[j][i + lane];
            }
        }
        i += 4;
    }
    let mut out = [0.0f64; N];
    for j in 0..N {
        let mut tail = 0.0;
        for t in full..n {
            tail += a[t] * bs[j][t];
        }
        out[j] = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]) + tail;
    }
    out
}

/// `out[j] ← ⟨a, get(j)⟩` for `j < out.len()`, in groups of four (no allocation).
fn dot_many_f64<'a>(a: &[f64], get: impl Fn(usize) -> &'a [f64], out: &mut [f64]) {
    let count = out.len();
    let mut j = 0;
    while j < count {
        let others = [
            get(j),
            get((j + 1).min(count - 1)),
            get((j + 2).min(count - 1)),
            get((j + 3).min(count - 1)),
        ];
        let others = |i: usize| others[i - j];
        match count - j {
            1 => {
                out[j] = dot_f64(a, others(j));
                j += 1;
            }
            2 => {
                let r = dot_group_f64(a, [others(j), others(j + 1)]);
                out[j..j + 2].copy_from_slice(&r);
                j += 2;
            }
            3 => {
                let r = dot_group_f64(a, [others(j), others(j + 1), others(j + 2)]);
                out[j..j + 3].copy_from_slice(&r);
                j += 3;
            }
            _ => {
                let r = dot_group_f64(a, [others(j), others(j + 1), others(j + 2), others(j + 3)]);
                out[j..j + 4].copy_from_slice(&r);
                j += 4;
            }
        }
    }
}

/// `y ← y + Σ_j c_j get(j)` for `j < coeffs.len()`, four vectors per pass over `y` (no
/// allocation).
fn axpy_many_f64<'a>(y: &mut [f64], coeffs: &[f64], get: impl Fn(usize) -> &'a [f64]) {
    let n = y.len();
    let count = coeffs.len();
    for j in 0..count {
        assert_eq!(get(j).len(), n, "axpy: dimension mismatch");
    }
    let xs = |j: usize| &get(j)[..n];
    let mut j = 0;
    while j < count {
        match count - j {
            1 => {
                let (c0, x0) = (coeffs[j], xs(j));
                for (yi, a) in y.iter_mut().zip(x0) {
                    *yi += c0 * a;
                }
                j += 1;
            }
            2 | 3 => {
                let (c0, c1) = (coeffs[j], coeffs[j + 1]);
                let (x0, x1) = (xs(j), xs(j + 1));
                for ((yi, a), b) in y.iter_mut().zip(x0).zip(x1) {
                    *yi += c0 * a + c1 * b;
                }
                j += 2;
            }
            _ => {
                let (c0, c1, c2, c3) = (coeffs[j], coeffs[j + 1], coeffs[j + 2], coeffs[j + 3]);
                let (x0, x1, x2, x3) = (xs(j), xs(j + 1), xs(j + 2), xs(j + 3));
                for ((((yi, a), b), c), d) in y.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3) {
                    *yi += (c0 * a + c1 * b) + (c2 * c + c3 * d);
                }
                j += 4;
            }
        }
    }
}

/// Dot product of two `f64` slices with four accumulators (faster, and no less accurate than a
/// single running sum).
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: dimension mismatch");
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: dimension mismatch");
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += f64::from(x[i]) * f64::from(y[i]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += f64::from(*x) * f64::from(*y);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Overflow- and underflow-safe Euclidean norm of values given as `f64` (NaN if one is NaN,
/// +Inf if one is infinite). Backends use it to combine per-part norms.
///
/// Fast path: the plain sum of squares. Only when it overflows or may have underflowed does it
/// rescale by the largest magnitude (as LAPACK's `dnrm2` does throughout).
pub fn safe_norm<I>(values: I) -> f64
where
    I: Iterator<Item = f64> + Clone,
{
    let sumsq: f64 = values.clone().map(|x| x * x).sum();
    if sumsq.is_nan() {
        return f64::NAN;
    }
    if sumsq.is_finite() && sumsq >= f64::MIN_POSITIVE / f64::EPSILON {
        return sumsq.sqrt();
    }
    let max = values.clone().fold(0.0f64, |m, x| m.max(x.abs()));
    if max == 0.0 || max.is_infinite() {
        return max;
    }
    let scaled: f64 = values
        .map(|x| {
            let y = x / max;
            y * y
        })
        .sum();
    max * scaled.sqrt()
}

fn axpby_slice_f64(y: &mut [f64], alpha: f64, x: &[f64], beta: f64) {
    assert_eq!(y.len(), x.len(), "axpby: dimension mismatch");
    if beta == 0.0 {
        // Do not propagate NaN/Inf from the old contents when they are to be discarded.
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = alpha * xi;
        }
    } else {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = alpha * xi + beta * *yi;
        }
    }
}

fn axpby_slice_f32(y: &mut [f32], alpha: f64, x: &[f32], beta: f64) {
    assert_eq!(y.len(), x.len(), "axpby: dimension mismatch");
    if beta == 0.0 {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = (alpha * f64::from(*xi)) as f32;
        }
    } else {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = (alpha * f64::from(*xi) + beta * f64::from(*yi)) as f32;
        }
    }
}

/// Euclidean norm of an `f64` slice: the vectorised sum of squares of [`dot_f64`] when it is in
/// the normal range, [`safe_norm`]'s rescaled sum otherwise (same results, same NaN/Inf rules).
fn norm_f64(a: &[f64]) -> f64 {
    let sumsq = dot_f64(a, a);
    if sumsq.is_finite() && sumsq >= f64::MIN_POSITIVE / f64::EPSILON {
        return sumsq.sqrt();
    }
    safe_norm(a.iter().copied())
}

impl Vector for Vec<f64> {
    fn dim(&self) -> usize {
        self.len()
    }
    fn dot(&self, other: &Self) -> f64 {
        dot_f64(self, other)
    }
    fn norm(&self) -> f64 {
        norm_f64(self)
    }
    fn axpy(&mut self, alpha: f64, x: &Self) {
        assert_eq!(self.len(), x.len(), "axpy: dimension mismatch");
        for (yi, xi) in self.iter_mut().zip(x) {
            *yi += alpha * xi;
        }
    }
    fn axpby(&mut self, alpha: f64, x: &Self, beta: f64) {
        axpby_slice_f64(self, alpha, x, beta);
    }
    fn scale(&mut self, alpha: f64) {
        self.iter_mut().for_each(|v| *v *= alpha);
    }
    fn zeros_like(&self) -> Self {
        vec![0.0; self.len()]
    }
    fn copy_from(&mut self, other: &Self) {
        self.copy_from_slice(other);
    }
    fn is_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
    fn axpy_norm(&mut self, alpha: f64, x: &Self) -> f64 {
        axpy_norm_f64(self, alpha, x)
    }
    fn dot_many(&self, others: &[Self], out: &mut [f64]) {
        assert_eq!(others.len(), out.len(), "dot_many: length mismatch");
        dot_many_f64(self, |j| others[j].as_slice(), out);
    }
    fn axpy_many(&mut self, coeffs: &[f64], xs: &[Self]) {
        assert_eq!(coeffs.len(), xs.len(), "axpy_many: length mismatch");
        axpy_many_f64(self, coeffs, |j| xs[j].as_slice());
    }
}

/// Runs `f` on the contiguous slice of an array, or on a contiguous copy when the array is a
/// strided view (never the case for arrays the solvers create).
macro_rules! with_slice {
    ($a:expr, $s:ident => $body:expr) => {
        match $a.as_slice() {
            Some($s) => $body,
            None => {
                let owned = $a.to_vec();
                let $s = owned.as_slice();
                $body
            }
        }
    };
}

impl Vector for Array1<f64> {
    fn dim(&self) -> usize {
        self.len()
    }
    fn dot(&self, other: &Self) -> f64 {
        with_slice!(self, a => with_slice!(other, b => dot_f64(a, b)))
    }
    fn norm(&self) -> f64 {
        with_slice!(self, a => norm_f64(a))
    }
    fn axpy(&mut self, alpha: f64, x: &Self) {
        self.scaled_add(alpha, x);
    }
    fn axpby(&mut self, alpha: f64, x: &Self, beta: f64) {
        assert_eq!(self.len(), x.len(), "axpby: dimension mismatch");
        if beta == 0.0 {
            self.zip_mut_with(x, |y, xi| *y = alpha * xi);
        } else {
            self.zip_mut_with(x, |y, xi| *y = alpha * xi + beta * *y);
        }
    }
    fn scale(&mut self, alpha: f64) {
        self.mapv_inplace(|v| v * alpha);
    }
    fn zeros_like(&self) -> Self {
        Array1::zeros(self.len())
    }
    fn copy_from(&mut self, other: &Self) {
        self.assign(other);
    }
    fn is_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
    fn axpy_norm(&mut self, alpha: f64, x: &Self) -> f64 {
        match (self.as_slice_mut(), x.as_slice()) {
            (Some(y), Some(xs)) => axpy_norm_f64(y, alpha, xs),
            _ => {
                self.axpy(alpha, x);
                self.norm()
            }
        }
    }
    fn dot_many(&self, others: &[Self], out: &mut [f64]) {
        assert_eq!(others.len(), out.len(), "dot_many: length mismatch");
        let contiguous = others.iter().all(|o| o.as_slice().is_some());
        match self.as_slice() {
            Some(a) if contiguous => {
                dot_many_f64(a, |j| others[j].as_slice().expect("contiguous"), out)
            }
            _ => {
                for (o, v) in out.iter_mut().zip(others) {
                    *o = self.dot(v);
                }
            }
        }
    }
    fn axpy_many(&mut self, coeffs: &[f64], xs: &[Self]) {
        assert_eq!(coeffs.len(), xs.len(), "axpy_many: length mismatch");
        let contiguous = xs.iter().all(|o| o.as_slice().is_some());
        match self.as_slice_mut() {
            Some(y) if contiguous => {
                axpy_many_f64(y, coeffs, |j| xs[j].as_slice().expect("contiguous"))
            }
            _ => {
                for (&c, x) in coeffs.iter().zip(xs) {
                    self.axpy(c, x);
                }
            }
        }
    }
}

impl Vector for Array1<f32> {
    fn dim(&self) -> usize {
        self.len()
    }
    fn dot(&self, other: &Self) -> f64 {
        with_slice!(self, a => with_slice!(other, b => dot_f32(a, b)))
    }
    fn norm(&self) -> f64 {
        safe_norm(self.iter().map(|&v| f64::from(v)))
    }
    fn axpy(&mut self, alpha: f64, x: &Self) {
        self.axpby(alpha, x, 1.0);
    }
    fn axpby(&mut self, alpha: f64, x: &Self, beta: f64) {
        assert_eq!(self.len(), x.len(), "axpby: dimension mismatch");
        match (self.as_slice_mut(), x.as_slice()) {
            (Some(y), Some(xs)) => axpby_slice_f32(y, alpha, xs, beta),
            _ => {
                if beta == 0.0 {
                    self.zip_mut_with(x, |y, xi| *y = (alpha * f64::from(*xi)) as f32);
                } else {
                    self.zip_mut_with(x, |y, xi| {
                        *y = (alpha * f64::from(*xi) + beta * f64::from(*y)) as f32
                    });
                }
            }
        }
    }
    fn scale(&mut self, alpha: f64) {
        self.mapv_inplace(|v| (f64::from(v) * alpha) as f32);
    }
    fn zeros_like(&self) -> Self {
        Array1::zeros(self.len())
    }
    fn copy_from(&mut self, other: &Self) {
        self.assign(other);
    }
    fn is_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
    fn epsilon(&self) -> f64 {
        f64::from(f32::EPSILON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_survives_overflow_and_underflow() {
        let big = vec![1e200, 1e200];
        let n = big.norm();
        assert!((n / (1e200 * 2f64.sqrt()) - 1.0).abs() <= 1e-15);
        let tiny = vec![1e-200, 1e-200];
        let n = tiny.norm();
        assert!((n / (1e-200 * 2f64.sqrt()) - 1.0).abs() <= 1e-15);
        assert!(vec![f64::NAN, 1.0].norm().is_nan());
        assert_eq!(vec![f64::INFINITY, 1.0].norm(), f64::INFINITY);
        assert_eq!(vec![0.0; 3].norm(), 0.0);
    }

    #[test]
    fn axpby_with_zero_beta_discards_old_nan() {
        let mut y = vec![f64::NAN, f64::INFINITY];
        y.axpby(2.0, &vec![1.0, 2.0], 0.0);
        assert_eq!(y, vec![2.0, 4.0]);
    }
}
