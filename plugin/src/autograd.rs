//! The operators of an implicit hypergradient by double backward through libtorch's autograd.
//!
//! For an inner objective `G(w, λ)` given as a closure returning a scalar tensor, the
//! gradient-descent fixed-point map is `Φ(w, λ) = w − α∇_wG(w, λ)`, so
//!
//! ```text
//! Jᵀv       = v − α ∇²_ww G · v        (a Hessian-vector product)
//! (∂_λΦ)ᵀv  = −α ∇²_λw G · v           (a mixed second derivative)
//! ```
//!
//! Both come from one first-order gradient `g = ∇_wG` built with `create_graph = true`, then one
//! backward pass of `⟨g, v⟩` per application (retaining the graph). [`GradientDescentMap`]
//! counts the applications. [`LinearisedMap`] is what the core's solve needs of such a map —
//! its second derivatives — and turns them into the operators [`JtOperator`] and
//! [`CrossOperator`]; [`crate::piecewise_linear::PiecewiseLinearMap`] is the other map.
//!
//! Loss closures should compute in the dtype of the tensors they get: for `f64` checks use
//! `log_softmax(-1, Kind::Double)` + `nll_loss` — tch's `cross_entropy_for_logits` forces `f32`.

use std::cell::Cell;

use ibau_core::{Hypergradient, Observer, Operator};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::tensor_vec::{check_layout, deep_copy, TensorList};

/// Gradients of `loss` with respect to `inputs`; an input the loss does not use gets zeros.
pub(crate) fn gradients(
    loss: &Tensor,
    inputs: &[Tensor],
    keep_graph: bool,
    create_graph: bool,
) -> Result<Vec<Tensor>> {
    let grads = Tensor::f_run_backward(&[loss], inputs, keep_graph, create_graph)?;
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, x)| {
            if g.defined() {
                Ok(g)
            } else {
                Ok(x.f_zeros_like()?)
            }
        })
        .collect()
}

fn check_scalar(t: &Tensor, what: &'static str) -> Result<()> {
    if t.numel() == 1 {
        Ok(())
    } else {
        Err(Error::NotScalar {
            what,
            shape: t.size(),
        })
    }
}

/// Leaf copies of `w` that require gradients.
pub(crate) fn leaves(w: &[Tensor]) -> Result<Vec<Tensor>> {
    w.iter()
        .map(|t| Ok(deep_copy(t)?.f_set_requires_grad(true)?))
        .collect()
}

/// Shallow handles on `lambda`, which must require gradients (they are usually a model's
/// parameters, used inside the loss closures through the model).
pub(crate) fn outer_handles(lambda: &[Tensor]) -> Result<Vec<Tensor>> {
    lambda
        .iter()
        .map(|t| {
            if t.requires_grad() {
                Ok(t.shallow_clone())
            } else {
                Err(Error::NoGrad("every outer variable λ"))
            }
        })
        .collect()
}

/// What every [`LinearisedMap`] keeps of the point `(w, λ)` it is linearised at: leaf copies
/// of `w`, handles on `λ`, the step α, and the count of second-derivative products.
#[derive(Debug)]
pub struct MapPoint {
    w: Vec<Tensor>,
    lambda: Vec<Tensor>,
    alpha: f64,
    applications: Cell<usize>,
}

impl MapPoint {
    /// Leaf copies of `w` and handles on `λ` (which must require gradients).
    pub(crate) fn new(w: &[Tensor], lambda: &[Tensor], alpha: f64) -> Result<Self> {
        Ok(MapPoint {
            w: leaves(w)?,
            lambda: outer_handles(lambda)?,
            alpha,
            applications: Cell::new(0),
        })
    }

    /// The inner variables `w` (leaf copies).
    pub(crate) fn w(&self) -> &[Tensor] {
        &self.w
    }

    /// Checks that `v` has the layout of `w` and counts one second-derivative product.
    pub(crate) fn count_application(&self, v: &TensorList) -> Result<()> {
        check_layout(&self.w, v.tensors(), "vector v vs inner variables w")?;
        self.applications.set(self.applications.get() + 1);
        Ok(())
    }
}

/// The gradient-descent map `Φ(w, λ) = w − α∇_wG(w, λ)` linearised at `(w, λ)`.
#[derive(Debug)]
pub struct GradientDescentMap {
    point: MapPoint,
    grad_w: Vec<Tensor>,
}

impl GradientDescentMap {
    /// Builds the map at `(w, λ)`. `inner(w, λ)` must return the scalar `G(w, λ)`; it receives
    /// leaf copies of `w` and handles on `λ` (which must require gradients: pass a model's
    /// parameters and use the model inside the closure).
    ///
    /// # Errors
    /// [`Error::NoGrad`], [`Error::NotScalar`], or a libtorch failure.
    pub fn new<F>(inner: F, w: &[Tensor], lambda: &[Tensor], alpha: f64) -> Result<Self>
    where
        F: FnOnce(&[Tensor], &[Tensor]) -> Result<Tensor>,
    {
        let point = MapPoint::new(w, lambda, alpha)?;
        let g = inner(&point.w, &point.lambda)?;
        check_scalar(&g, "the inner objective G")?;
        let grad_w = gradients(&g, &point.w, true, true)?;
        Ok(GradientDescentMap { point, grad_w })
    }

    /// A zero vector with the layout of `w`.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn zeros_w(&self) -> Result<TensorList> {
        TensorList::zeros_like_tensors(&self.point.w)
    }

    /// `∇_{wrt} ⟨∇_wG, v⟩`.
    fn second_derivative(&self, v: &TensorList, wrt: &[Tensor]) -> Result<Vec<Tensor>> {
        self.point.count_application(v)?;
        let mut s = Tensor::f_zeros(
            [],
            (
                Kind::Double,
                self.point
                    .w
                    .first()
                    .map_or(tch::Device::Cpu, |t| t.device()),
            ),
        )?;
        for (g, vi) in self.grad_w.iter().zip(v.tensors()) {
            s = s.f_add(&g.f_mul(vi)?.f_sum(Kind::Double)?)?;
        }
        if !s.requires_grad() {
            // ∇_wG does not depend on anything (G linear in w): the derivative is zero.
            return wrt.iter().map(|t| Ok(t.f_zeros_like()?)).collect();
        }
        gradients(&s, wrt, true, false)
    }
}

impl LinearisedMap for GradientDescentMap {
    fn point(&self) -> &MapPoint {
        &self.point
    }

    /// Detached copy of the gradient built with the map (no extra pass).
    fn inner_gradient(&self) -> Result<TensorList> {
        TensorList::detached_copy(&self.grad_w)
    }

    fn hessian_vector(&self, v: &TensorList) -> Result<Vec<Tensor>> {
        self.second_derivative(v, &self.point.w)
    }

    fn mixed(&self, v: &TensorList) -> Result<Vec<Tensor>> {
        self.second_derivative(v, &self.point.lambda)
    }
}

/// A gradient-descent fixed-point map `Φ(w, λ) = w − α∇_wG(w, λ)` linearised at `(w, λ)`,
/// given by the second derivatives of G: [`GradientDescentMap`] computes them by double
/// backward for any G, [`crate::piecewise_linear::PiecewiseLinearMap`] in closed form for the
/// authors' G on a piecewise-linear model. The operators the core needs follow from them:
///
/// ```text
/// Jᵀv       = v − α ∇²_ww G · v        (JtOperator)
/// (∂_λΦ)ᵀv  = −α ∇²_λw G · v           (CrossOperator)
/// ```
pub trait LinearisedMap {
    /// The point the map is linearised at.
    fn point(&self) -> &MapPoint;

    /// The inner variables `w` (leaf copies).
    fn w(&self) -> &[Tensor] {
        &self.point().w
    }

    /// The outer variables `λ`.
    fn lambda(&self) -> &[Tensor] {
        &self.point().lambda
    }

    /// The step size α.
    fn alpha(&self) -> f64 {
        self.point().alpha
    }

    /// Operator applications (second-derivative products) so far, both kinds together.
    fn applications(&self) -> usize {
        self.point().applications.get()
    }

    /// `∇_wG` at `(w, λ)`, detached.
    ///
    /// # Errors
    /// If libtorch fails.
    fn inner_gradient(&self) -> Result<TensorList>;

    /// `∇²_wwG v`, one application (counted by [`MapPoint`]).
    ///
    /// # Errors
    /// [`Error::Mismatch`] for a `v` not of `w`'s layout; libtorch failures.
    fn hessian_vector(&self, v: &TensorList) -> Result<Vec<Tensor>>;

    /// `∇_λ⟨∇_wG, v⟩ = ∇²_λwG v`, one application (counted by [`MapPoint`]).
    ///
    /// # Errors
    /// [`Error::Mismatch`] for a `v` not of `w`'s layout; libtorch failures.
    fn mixed(&self, v: &TensorList) -> Result<Vec<Tensor>>;

    /// The operator `v ↦ Jᵀv = v − α∇²_wwG v`.
    fn jt(&self) -> JtOperator<'_, Self>
    where
        Self: Sized,
    {
        JtOperator(self)
    }

    /// The operator `v ↦ (∂_λΦ)ᵀv = −α∇²_λwG v`.
    fn cross_t(&self) -> CrossOperator<'_, Self>
    where
        Self: Sized,
    {
        CrossOperator(self)
    }

    /// Computes the implicit hypergradient with the core, from outer gradients computed by
    /// [`outer_gradients`] at the same point.
    ///
    /// # Errors
    /// [`Error::Mismatch`] for gradients or a warm start of the wrong layout; the core's errors.
    fn hypergradient(
        &self,
        outer: OuterGradients,
        params: &ibau_core::Params,
        warm_start: Option<&TensorList>,
        observer: &mut dyn Observer<TensorList>,
    ) -> Result<Hypergradient<TensorList, TensorList>> {
        check_layout(self.w(), outer.grad_w.tensors(), "∇_wE vs w")?;
        check_layout(self.lambda(), outer.grad_lambda.tensors(), "∇_λE vs λ")?;
        if let Some(v0) = warm_start {
            check_layout(self.w(), v0.tensors(), "warm start vs w")?;
        }
        let mut problem = ibau_core::Problem {
            jt: JtOperator(self),
            cross_t: CrossOperator(self),
            grad_w: outer.grad_w,
            grad_lambda: outer.grad_lambda,
        };
        Ok(ibau_core::hypergradient(
            &mut problem,
            params,
            warm_start,
            observer,
        )?)
    }
}

/// `v ↦ Jᵀv = v − α∇²_wwG v` of a [`LinearisedMap`].
#[derive(Debug)]
pub struct JtOperator<'a, M: ?Sized>(&'a M);

impl<M: LinearisedMap + ?Sized> Operator<TensorList> for JtOperator<'_, M> {
    fn apply(&mut self, v: &TensorList, out: &mut TensorList) -> ibau_core::Result<()> {
        let map = self.0;
        let mut run = || -> Result<()> {
            let hv = map.hessian_vector(v)?;
            for ((o, vi), hvi) in out.tensors_mut().iter_mut().zip(v.tensors()).zip(&hv) {
                o.f_copy_(&vi.f_sub(&hvi.f_mul_scalar(map.alpha())?)?)?;
            }
            Ok(())
        };
        run().map_err(|e| ibau_core::Error::Operator(Box::new(e)))
    }
}

/// `v ↦ (∂_λΦ)ᵀv = −α∇²_λwG v` of a [`LinearisedMap`].
#[derive(Debug)]
pub struct CrossOperator<'a, M: ?Sized>(&'a M);

impl<M: LinearisedMap + ?Sized> Operator<TensorList> for CrossOperator<'_, M> {
    fn apply(&mut self, v: &TensorList, out: &mut TensorList) -> ibau_core::Result<()> {
        let map = self.0;
        let mut run = || -> Result<()> {
            check_layout(map.lambda(), out.tensors(), "cross output vs λ")?;
            let c = map.mixed(v)?;
            for (o, ci) in out.tensors_mut().iter_mut().zip(&c) {
                o.f_copy_(&ci.f_mul_scalar(-map.alpha())?)?;
            }
            Ok(())
        };
        run().map_err(|e| ibau_core::Error::Operator(Box::new(e)))
    }
}

/// `∇_wE` and `∇_λE` at a point, with the value of `E`.
#[derive(Debug, Clone)]
pub struct OuterGradients {
    /// The value `E(w, λ)`.
    pub value: f64,
    /// `∇_wE`.
    pub grad_w: TensorList,
    /// `∇_λE`.
    pub grad_lambda: TensorList,
}

/// Computes `∇_wE` and `∇_λE` of the scalar `outer(w, λ)` (same conventions as
/// [`GradientDescentMap::new`]).
///
/// # Errors
/// [`Error::NoGrad`], [`Error::NotScalar`], or a libtorch failure.
pub fn outer_gradients<F>(outer: F, w: &[Tensor], lambda: &[Tensor]) -> Result<OuterGradients>
where
    F: FnOnce(&[Tensor], &[Tensor]) -> Result<Tensor>,
{
    let w = leaves(w)?;
    let lambda = outer_handles(lambda)?;
    let e = outer(&w, &lambda)?;
    check_scalar(&e, "the outer objective E")?;
    let value = e.f_double_value(&[])?;
    let mut inputs: Vec<Tensor> = w.iter().map(|t| t.shallow_clone()).collect();
    inputs.extend(lambda.iter().map(|t| t.shallow_clone()));
    let mut grads = gradients(&e, &inputs, false, false)?;
    let grad_lambda = grads.split_off(w.len());
    let detach = |v: Vec<Tensor>| -> Result<TensorList> {
        Ok(TensorList::new(
            v.into_iter()
                .map(|t| Ok(t.f_detach()?))
                .collect::<Result<Vec<_>>>()?,
        ))
    };
    Ok(OuterGradients {
        value,
        grad_w: detach(grads)?,
        grad_lambda: detach(grad_lambda)?,
    })
}
