//! The authors' fixed-point map for a piecewise-linear classifier, with its second derivatives
//! in closed form instead of by double backward.
//!
//! I-BAU's inner objective over perturbations `w_1 … w_m` (one, or one per class-search
//! candidate), on a batch `(x, y)` of `B` samples, is
//!
//! ```text
//! G(w, θ) = (1/m) Σ_j [ −CE(f_θ(x + w_j), y) + reg·‖w_j‖² ],   Φ = w − α∇_wG.
//! ```
//!
//! For a model that is piecewise linear in its input ([`Model::is_piecewise_linear`]), with
//! `J_ij` the input-Jacobian of sample i's logits at `x_i + w_j` ([`Linearisation`]), softmax
//! `p_ij` and one-hot label `e_i`, and `H(p)u = p∘u − p·⟨p, u⟩` the softmax cross-entropy's
//! Hessian in the logits (the input-Hessian of the logits is zero almost everywhere, see
//! [`Linearisation`]):
//!
//! ```text
//! ∇_{w_j}G       = −1/(mB) Σ_i J_ijᵀ (p_ij − e_i)            + (2·reg/m)·w_j
//! ∇²_{w_j w_j}G v = −1/(mB) Σ_i J_ijᵀ H(p_ij) J_ij v_j         + (2·reg/m)·v_j
//! ∇_θ⟨∇_wG, v⟩    = ∇_θ [ −1/(mB) Σ_ij ⟨p_ij(θ) − e_i, J_ij(θ) v_j⟩ ]
//! ```
//!
//! so `Jᵀv = v − α∇²_wwG v` is one forward pass of the tangent `J v` (no autograd) and one
//! backward pass from the logits to `w` only, and `(∂_θΦ)ᵀv = −α∇_θ⟨∇_wG, v⟩` is one ordinary
//! backward pass through the tangent and the logits — where double backward
//! ([`crate::autograd::GradientDescentMap`]) differentiates the whole first-order backward
//! graph each time. The values are the same up to rounding and up to the cotangent entries
//! below [`FLUSH_BELOW`] (absolute) that are dropped (`plugin/tests/backend/piecewise_linear.rs`
//! compares the two maps, at small and at saturating perturbations). What it saves per I-BAU
//! round is measured by `bench/ibau/run` (README).

use tch::Tensor;

use crate::autograd::{gradients, LinearisedMap, MapPoint};
use crate::error::Result;
use crate::models::{Linearisation, Model};
use crate::tensor_vec::TensorList;

/// One perturbation's part of G: its logits (with autograd history to `w_j` and θ), their
/// softmax `p` (detached, flushed), the cotangent `−(p − e)/(mB)` of G in the logits
/// (flushed) and the linearisation.
#[derive(Debug)]
struct Part {
    logits: Tensor,
    probs: Tensor,
    residual: Tensor,
    lin: Linearisation,
}

/// Entries of the cotangents this map pulls back (and of `p`) smaller than this in magnitude
/// are set to zero.
///
/// Why: at a large perturbation the logits saturate, the softmax has entries far below f32's
/// smallest normal number (1.2·10⁻³⁸), and the backward pass through the network then computes
/// on subnormal numbers, on which x86 CPUs are up to a hundred times slower — measured on the
/// `paper` preset (MNIST, ‖δ‖ ≈ 1.4·10³, timing prints during development): three of 50 steps
/// took 1.4 s instead of 0.1 s. The threshold is absolute, so the operators are exact up to
/// rounding *and* an absolute change of each output entry of about 10⁻³⁰ times the network's
/// gain (below 10⁻²² here): invisible at f32 precision for outputs above that, but the
/// operators are not exactly linear for vectors so small that their products are.
pub const FLUSH_BELOW: f64 = 1e-30;

/// `t` with its entries of magnitude below [`FLUSH_BELOW`] set to zero (no autograd history).
fn flush(t: &Tensor) -> Result<Tensor> {
    let keep = t.f_abs()?.f_ge(FLUSH_BELOW)?.f_to_kind(t.kind())?;
    Ok(t.f_mul(&keep)?)
}

/// `H(p) t = p∘t − p·⟨p, t⟩` row by row: the Hessian of softmax cross-entropy in the logits.
fn softmax_hessian(p: &Tensor, t: &Tensor) -> Result<Tensor> {
    let pt = p.f_mul(t)?;
    Ok(pt.f_sub(&p.f_mul(&pt.f_sum_dim_intlist(-1, true, pt.kind())?)?)?)
}

/// The map `Φ(w, θ) = w − α∇_wG(w, θ)` of the authors' G for a piecewise-linear model,
/// linearised at `(w, θ)`, with the operators `Jᵀ` and `(∂_θΦ)ᵀ` in closed form (module docs).
#[derive(Debug)]
pub struct PiecewiseLinearMap {
    point: MapPoint,
    parts: Vec<Part>,
    /// `1/(mB)`: the weight of each sample's cross-entropy in G.
    weight: f64,
    /// `2·reg/m`: the curvature of the regulariser.
    reg_curvature: f64,
}

impl PiecewiseLinearMap {
    /// Builds the map at `(w, λ)` for G on the batch `(x, y)` (labels as class indices), or
    /// `None` when the model is not piecewise linear. `λ` must be the model's parameters
    /// (requiring gradients).
    ///
    /// # Errors
    /// [`crate::Error::NoGrad`] for λ, [`crate::Error::Config`] for an empty `w` or batch, or a
    /// libtorch failure.
    pub fn new(
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        w: &[Tensor],
        lambda: &[Tensor],
        reg: f64,
        alpha: f64,
    ) -> Result<Option<Self>> {
        if !model.is_piecewise_linear() {
            return Ok(None);
        }
        let batch = x.size().first().copied().unwrap_or(0);
        if w.is_empty() || batch == 0 {
            return Err(crate::Error::Config(
                "the piecewise-linear map needs at least one perturbation and one sample".into(),
            ));
        }
        let point = MapPoint::new(w, lambda, alpha)?;
        let m = w.len() as f64;
        let weight = 1.0 / (m * batch as f64);
        let mut parts = Vec::with_capacity(w.len());
        for wj in point.w() {
            let Some((logits, lin)) = model.linearised_forward(&x.f_add(wj)?)? else {
                return Ok(None);
            };
            let probs = flush(&logits.f_detach()?.f_softmax(-1, logits.kind())?)?;
            let onehot = y.f_one_hot(logits.size()[1])?.f_to_kind(logits.kind())?;
            let residual = flush(&probs.f_sub(&onehot)?.f_mul_scalar(-weight)?)?;
            parts.push(Part {
                logits,
                probs,
                residual,
                lin,
            });
        }
        Ok(Some(PiecewiseLinearMap {
            point,
            parts,
            weight,
            reg_curvature: 2.0 * reg / m,
        }))
    }

    /// `∇_{w_j}` of `⟨u, logits_j⟩` plus `reg_curvature · r`: one backward pass from part j's
    /// logits to `w_j` (the forward graph is kept for the next).
    fn pull_back(&self, j: usize, u: &Tensor, r: &Tensor) -> Result<Tensor> {
        let part = &self.parts[j];
        let s = part.logits.f_mul(u)?.f_sum(part.logits.kind())?;
        let g = gradients(&s, std::slice::from_ref(&self.w()[j]), true, false)?;
        Ok(g[0].f_add(&r.f_mul_scalar(self.reg_curvature)?)?)
    }
}

impl LinearisedMap for PiecewiseLinearMap {
    fn point(&self) -> &MapPoint {
        &self.point
    }

    /// One backward pass per perturbation, from the logits with the cotangent `−(p − e)/(mB)`.
    fn inner_gradient(&self) -> Result<TensorList> {
        let grads = (0..self.parts.len())
            .map(|j| {
                let residual = &self.parts[j].residual;
                self.pull_back(j, residual, &self.w()[j])?
                    .f_detach()
                    .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorList::new(grads))
    }

    /// The tangent `J v` without autograd, then one backward pass to `w` from the logits with
    /// the cotangent `−H(p) J v/(mB)`.
    fn hessian_vector(&self, v: &TensorList) -> Result<Vec<Tensor>> {
        self.point.count_application(v)?;
        self.parts
            .iter()
            .zip(v.tensors())
            .enumerate()
            .map(|(j, (part, vj))| {
                // The cotangent −H(p) J v /(mB) of the logits, without autograd history.
                let u = tch::no_grad(|| -> Result<Tensor> {
                    let t = part.lin.tangent(vj)?;
                    flush(&softmax_hessian(&part.probs, &t)?.f_mul_scalar(-self.weight)?)
                })?;
                self.pull_back(j, &u, vj)
            })
            .collect()
    }

    /// `∇_θ⟨∇_wG, v⟩ = ∇_θ s(θ)`, `s = −1/(mB) Σ ⟨p(θ) − e, T(θ)⟩` with `T = J v`: one
    /// backward pass of `⟨c, logits⟩ + ⟨r, T⟩` with the cotangents written out, `c =
    /// −H(p) T/(mB)` for the logits (the softmax Jacobian is `H(p)`) and `r = −(p − e)/(mB)`
    /// for the tangent (both flushed, [`FLUSH_BELOW`]).
    fn mixed(&self, v: &TensorList) -> Result<Vec<Tensor>> {
        self.point.count_application(v)?;
        let mut s: Option<Tensor> = None;
        for (part, vj) in self.parts.iter().zip(v.tensors()) {
            let t = part.lin.tangent(vj)?;
            let c =
                flush(&softmax_hessian(&part.probs, &t.f_detach()?)?.f_mul_scalar(-self.weight)?)?;
            let kind = part.logits.kind();
            let term = part
                .logits
                .f_mul(&c)?
                .f_sum(kind)?
                .f_add(&t.f_mul(&part.residual)?.f_sum(kind)?)?;
            s = Some(match s {
                Some(acc) => acc.f_add(&term)?,
                None => term,
            });
        }
        let s = s.expect("checked: at least one perturbation");
        gradients(&s, self.lambda(), true, false)
    }
}
