//! [`TensorList`]: a list of tch tensors (any shapes, dtypes Float/Double, any device) as one
//! vector of the core's [`Vector`] space — the parameter list of a model.
//!
//! Dot products and norms accumulate in `f64` whatever the storage. The operations run on the
//! tensors' device; only the scalar results of `dot`/`norm`/`is_finite` are brought to the host.
//! The core's conformance suite (`ibau_core::conformance`) is run on this type in
//! `plugin/tests/conformance.rs`.
//!
//! # Panics
//! The [`Vector`] methods cannot return errors; they panic if libtorch fails, which happens only
//! on a programmer error (operands of different shapes or devices). Check operands first with
//! [`TensorList::check_same_layout`]: the autograd operators of this crate do, and report
//! [`Error::Mismatch`] instead.

use ibau_core::Vector;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A list of tensors treated as one vector.
#[derive(Debug)]
pub struct TensorList {
    tensors: Vec<Tensor>,
}

impl TensorList {
    /// Wraps tensors (kept as they are: no copy).
    pub fn new(tensors: Vec<Tensor>) -> Self {
        TensorList { tensors }
    }

    /// A detached deep copy of `tensors` (no autograd history).
    ///
    /// # Errors
    /// If libtorch fails to copy.
    pub fn detached_copy(tensors: &[Tensor]) -> Result<Self> {
        let t = tensors
            .iter()
            .map(|t| Ok(deep_copy(t)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorList { tensors: t })
    }

    /// Zeros with the layout of `tensors`.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn zeros_like_tensors(tensors: &[Tensor]) -> Result<Self> {
        let t = tensors
            .iter()
            .map(|t| Ok(t.f_zeros_like()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorList { tensors: t })
    }

    /// The tensors.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The tensors, mutably.
    pub fn tensors_mut(&mut self) -> &mut [Tensor] {
        &mut self.tensors
    }

    /// Unwraps the tensors.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.tensors
    }

    /// Moves (copies) every tensor to `device`.
    ///
    /// # Errors
    /// If libtorch fails (e.g. the device is unavailable).
    pub fn to_device(&self, device: Device) -> Result<Self> {
        let t = self
            .tensors
            .iter()
            .map(|t| Ok(t.f_to_device(device)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorList { tensors: t })
    }

    /// All entries, flattened in order, as `f64` on the host.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.dim());
        for t in &self.tensors {
            let flat = t
                .f_detach()?
                .f_to_device(Device::Cpu)?
                .f_to_kind(Kind::Double)?
                .f_contiguous()?
                .f_flatten(0, -1)?;
            out.extend(Vec::<f64>::try_from(&flat)?);
        }
        Ok(out)
    }

    /// Checks that `other` has the same number of tensors, and for each the same shape, dtype and
    /// device as `self`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming the first difference.
    pub fn check_same_layout(&self, other: &[Tensor], what: &'static str) -> Result<()> {
        check_layout(&self.tensors, other, what)
    }
}

/// Checks two tensor lists for equal count, shapes, dtypes and devices.
///
/// # Errors
/// [`Error::Mismatch`] naming the first difference.
pub fn check_layout(a: &[Tensor], b: &[Tensor], what: &'static str) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::Mismatch {
            what,
            index: a.len().min(b.len()),
            expected: format!("{} tensors", a.len()),
            found: format!("{} tensors", b.len()),
        });
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (sx, sy) = (x.size(), y.size());
        if sx != sy {
            return Err(Error::Mismatch {
                what,
                index: i,
                expected: format!("shape {sx:?}"),
                found: format!("shape {sy:?}"),
            });
        }
        if x.kind() != y.kind() {
            return Err(Error::Mismatch {
                what,
                index: i,
                expected: format!("dtype {:?}", x.kind()),
                found: format!("dtype {:?}", y.kind()),
            });
        }
        if x.device() != y.device() {
            return Err(Error::Mismatch {
                what,
                index: i,
                expected: format!("device {:?}", x.device()),
                found: format!("device {:?}", y.device()),
            });
        }
    }
    Ok(())
}

/// A detached copy of `t` that shares no storage with it.
///
/// # Errors
/// If libtorch fails.
pub fn deep_copy(t: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    let mut c = t.f_empty_like()?;
    tch::no_grad(|| c.f_copy_(&t.f_detach()?))?;
    Ok(c)
}

fn expect<T>(r: std::result::Result<T, tch::TchError>, op: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("TensorList::{op}: libtorch failed (mismatched operands?): {e}"),
    }
}

fn scalar_f64(t: &Tensor) -> std::result::Result<f64, tch::TchError> {
    t.f_double_value(&[])
}

/// ‖t‖₂ in f64 without overflow or underflow.
fn tensor_norm(t: &Tensor) -> std::result::Result<f64, tch::TchError> {
    let d = t.f_detach()?.f_to_kind(Kind::Double)?;
    let sumsq = scalar_f64(&d.f_square()?.f_sum(Kind::Double)?)?;
    if sumsq.is_nan() {
        return Ok(f64::NAN);
    }
    if sumsq.is_finite() && sumsq >= f64::MIN_POSITIVE / f64::EPSILON {
        return Ok(sumsq.sqrt());
    }
    if t.numel() == 0 {
        return Ok(0.0);
    }
    let max = scalar_f64(&d.f_abs()?.f_max()?)?;
    if max == 0.0 || max.is_infinite() {
        return Ok(max);
    }
    let scaled = scalar_f64(&d.f_div_scalar(max)?.f_square()?.f_sum(Kind::Double)?)?;
    Ok(max * scaled.sqrt())
}

impl Clone for TensorList {
    /// A deep copy (tch's `shallow_clone` would alias the storage and break the solvers).
    fn clone(&self) -> Self {
        TensorList {
            tensors: self
                .tensors
                .iter()
                .map(|t| expect(deep_copy(t), "clone"))
                .collect(),
        }
    }
}

impl Vector for TensorList {
    fn dim(&self) -> usize {
        self.tensors.iter().map(|t| t.numel()).sum()
    }

    fn dot(&self, other: &Self) -> f64 {
        assert_eq!(self.tensors.len(), other.tensors.len(), "dot: list lengths");
        let mut acc = 0.0;
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            let v = expect(
                (|| {
                    let a = a.f_detach()?.f_to_kind(Kind::Double)?.f_flatten(0, -1)?;
                    let b = b.f_detach()?.f_to_kind(Kind::Double)?.f_flatten(0, -1)?;
                    scalar_f64(&a.f_dot(&b)?)
                })(),
                "dot",
            );
            acc += v;
        }
        acc
    }

    fn norm(&self) -> f64 {
        let norms: Vec<f64> = self
            .tensors
            .iter()
            .map(|t| expect(tensor_norm(t), "norm"))
            .collect();
        // Combine the per-tensor norms with the core's overflow-safe rule.
        ibau_core::vector::safe_norm(norms.iter().copied())
    }

    fn axpy(&mut self, alpha: f64, x: &Self) {
        assert_eq!(self.tensors.len(), x.tensors.len(), "axpy: list lengths");
        for (y, x) in self.tensors.iter_mut().zip(&x.tensors) {
            let _ = expect(x.f_mul_scalar(alpha).and_then(|ax| y.f_add_(&ax)), "axpy");
        }
    }

    fn axpby(&mut self, alpha: f64, x: &Self, beta: f64) {
        assert_eq!(self.tensors.len(), x.tensors.len(), "axpby: list lengths");
        for (y, x) in self.tensors.iter_mut().zip(&x.tensors) {
            expect(
                (|| {
                    let ax = x.f_mul_scalar(alpha)?;
                    if beta == 0.0 {
                        // Discard the old contents, NaN included.
                        y.f_copy_(&ax)
                    } else {
                        let _ = y.f_mul_scalar_(beta)?;
                        y.f_add_(&ax).map(|_| ())
                    }
                })(),
                "axpby",
            );
        }
    }

    fn scale(&mut self, alpha: f64) {
        for y in &mut self.tensors {
            let _ = expect(y.f_mul_scalar_(alpha), "scale");
        }
    }

    fn zeros_like(&self) -> Self {
        TensorList {
            tensors: self
                .tensors
                .iter()
                .map(|t| expect(t.f_detach().and_then(|d| d.f_zeros_like()), "zeros_like"))
                .collect(),
        }
    }

    fn copy_from(&mut self, other: &Self) {
        assert_eq!(
            self.tensors.len(),
            other.tensors.len(),
            "copy_from: list lengths"
        );
        for (y, x) in self.tensors.iter_mut().zip(&other.tensors) {
            expect(y.f_copy_(x), "copy_from");
        }
    }

    fn is_finite(&self) -> bool {
        self.tensors.iter().all(|t| {
            expect(
                t.f_isfinite()
                    .and_then(|f| f.f_all())
                    .and_then(|a| a.f_int64_value(&[])),
                "is_finite",
            ) != 0
        })
    }

    fn epsilon(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| match t.kind() {
                Kind::Double => f64::EPSILON,
                Kind::Float => f64::from(f32::EPSILON),
                Kind::Half => 9.77e-4,
                Kind::BFloat16 => 7.81e-3,
                _ => f64::EPSILON,
            })
            .fold(f64::EPSILON, f64::max)
    }
}
