//! Operators given as VJP/JVP closures or small trait objects, so any autodiff can plug in.

use crate::error::{BoxError, Error, Result};
use crate::vector::Vector;

/// A linear map `x ↦ y` from `X` to `Y`, applied into a pre-allocated output.
///
/// In a hypergradient the two operators are `v ↦ Jᵀv` (a VJP of the fixed-point map Φ in `w`,
/// `X = Y = W`) and `v ↦ (∂_λΦ)ᵀv` (a VJP of Φ in `λ`, `X = W`, `Y = L`).
///
/// Every infallible closure `FnMut(&X, &mut Y)` is an operator; wrap a closure returning a
/// `Result` in [`Fallible`] so its errors come back as [`Error::Operator`].
pub trait Operator<X, Y = X> {
    /// Computes `out ← A x`. `out` has the right shape on entry (its contents are arbitrary).
    fn apply(&mut self, x: &X, out: &mut Y) -> Result<()>;
}

impl<X, Y, F> Operator<X, Y> for F
where
    F: FnMut(&X, &mut Y),
{
    fn apply(&mut self, x: &X, out: &mut Y) -> Result<()> {
        self(x, out);
        Ok(())
    }
}

/// Adapter for an operator closure that can fail (an autodiff call, a device transfer).
#[derive(Debug, Clone)]
pub struct Fallible<F>(pub F);

impl<X, Y, F, E> Operator<X, Y> for Fallible<F>
where
    F: FnMut(&X, &mut Y) -> std::result::Result<(), E>,
    E: Into<BoxError>,
{
    fn apply(&mut self, x: &X, out: &mut Y) -> Result<()> {
        (self.0)(x, out).map_err(|e| Error::Operator(e.into()))
    }
}

/// The operator `A = I − Jᵀ` built from `Jᵀ`: the system matrix of the implicit linear system
/// `(I − Jᵀ) v = ∇_w E`. One application of `A` is one application of `Jᵀ`.
#[derive(Debug)]
pub struct IdentityMinus<'a, O>(pub &'a mut O);

impl<V: Vector, O: Operator<V>> Operator<V> for IdentityMinus<'_, O> {
    fn apply(&mut self, x: &V, out: &mut V) -> Result<()> {
        self.0.apply(x, out)?;
        // out ← x − Jᵀx
        out.axpby(1.0, x, -1.0);
        Ok(())
    }
}

/// Applies `op` and checks the output's dimension and finiteness. Used by every solver so a
/// misbehaving operator becomes a typed error, never a panic or a silent NaN.
pub(crate) fn apply_checked<X: Vector, Y: Vector, O: Operator<X, Y> + ?Sized>(
    op: &mut O,
    x: &X,
    out: &mut Y,
    iteration: usize,
) -> Result<()> {
    let expected = out.dim();
    op.apply(x, out)?;
    if out.dim() != expected {
        return Err(Error::DimensionMismatch {
            what: "operator output",
            expected,
            found: out.dim(),
        });
    }
    if !out.is_finite() {
        return Err(Error::NonFinite {
            at: crate::error::Location::OperatorOutput { iteration },
        });
    }
    Ok(())
}
