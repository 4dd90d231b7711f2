//! Refitting the output layer's biases on the clean set after unlearning.
//!
//! Unlearning moves the boundaries between classes that the model confuses: on Fashion-MNIST
//! (BadNets, seed-0 model, the tuned preset, 4 000 clean samples) the held-out pool images of
//! class 6 ("shirt") were recognised 69 % of the time before and 42 % after, most of the loss
//! going to classes 0 and 2 ("T-shirt", "pullover"), and the clean samples unlearning trained on
//! showed the same shift (89.1 % → 87.8 % accuracy on them). A shift of the class priors is what
//! the logits' constant offsets express, and those can be refitted on the clean set without
//! touching anything that depends on the input: [`fit_logit_offsets`] finds the offsets `b`
//! maximising the clean set's likelihood, `min_b (1/n) Σᵢ CE(zᵢ + b, yᵢ) + (λ/2)‖b‖²`, and
//! [`recalibrate_output_bias`] adds them to the last layer's bias. The offsets are the same for
//! every input, so they add no input-dependent behaviour; they can, however, undo a prior shift
//! that was hiding what is left of a backdoor. On the Fashion-MNIST all-to-all seed-0 model
//! (4 000 samples, held-out pool) unlearning had lowered class 8's logit, and offsets fitted on
//! the clean set alone raised ASR from 1.9 to 6.1 %. So the I-BAU loop fits them on the clean
//! set together with a copy perturbed by the round's δ
//! ([`crate::ibau::Recalibration::CleanAndPerturbed`]):
//! there ASR went to 4.0 %.
//!
//! Re-estimating a classifier's class priors by maximum likelihood on data from the shifted
//! distribution is the classical remedy for prior shift (Saerens, Latinne & Decaestecker,
//! *Adjusting the Outputs of a Classifier to New a Priori Probabilities*, Neural Computation
//! 2002); per-class logit offsets fitted by maximum likelihood on held-out data are the "bias"
//! part of bias-corrected calibration (Alexandari, Kundaje & Shrikumar, *Maximum Likelihood with
//! Bias-Corrected Calibration is Hard-To-Beat at Label Shift Adaptation*, ICML 2020).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::Model;
use crate::train::map_logits;

/// Weight λ of the ridge term `(λ/2)‖b‖²`: it makes the minimiser unique and finite when a
/// class is missing from the clean set (its offset would otherwise go to −∞) and is negligible
/// against the likelihood otherwise (an offset of 1 costs 5·10⁻⁴ nats per sample).
pub const RIDGE: f64 = 1e-3;

/// The iteration stops when `‖∇‖∞` is at most this.
pub const GRADIENT_TOLERANCE: f64 = 1e-10;

/// Newton iterations at most.
pub const MAX_ITERATIONS: usize = 100;

/// What [`fit_logit_offsets`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFit {
    /// The offsets `b`, one per class.
    pub offsets: Vec<f64>,
    /// The objective (mean cross-entropy plus the ridge term) at `b = 0`.
    pub loss_before: f64,
    /// The objective at the returned `b`.
    pub loss_after: f64,
    /// Newton iterations taken.
    pub iterations: usize,
    /// ‖∇‖∞ of the objective at the returned `b`.
    pub gradient_norm: f64,
    /// Samples the offsets were fitted on.
    pub samples: usize,
}

/// The logit offsets `b` minimising `(1/n) Σᵢ CE(zᵢ + b, yᵢ) + (λ/2)‖b‖²` for logits `z`
/// (`[n, C]`) and labels `y` (`[n]`, in `0..C`), with λ = [`RIDGE`], by damped Newton.
///
/// The objective is strictly convex (the cross-entropy is convex in `b`, the ridge term
/// strongly convex), so Newton's method with a backtracking (Armijo) line search converges to
/// its unique minimiser, quadratically near it (Boyd & Vandenberghe, *Convex Optimization*,
/// §9.5). It stops when `‖∇‖∞ ≤` [`GRADIENT_TOLERANCE`], or when the Newton decrement `∇ᵀH⁻¹∇`
/// is below the rounding of the objective (`10⁻¹⁵·max(1, objective)`): then the full Newton
/// step is taken and the iteration ends, since a line search cannot tell a decrease from
/// rounding there. No step that raises the objective is taken. At the minimiser the mean
/// predicted probability of each class equals that class's frequency up to the ridge term:
/// `(1/n) Σᵢ softmax(zᵢ + b)_c = n_c/n − λ b_c`.
///
/// # Errors
/// [`Error::Config`] for an empty or mis-shaped input or a label out of range;
/// [`Error::NonFinite`] for non-finite logits; [`Error::NotConverged`] after
/// [`MAX_ITERATIONS`] or a line search that finds no decrease; libtorch errors.
pub fn fit_logit_offsets(logits: &Tensor, labels: &Tensor) -> Result<OffsetFit> {
    let z = logits.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
    let y = labels.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?;
    let shape = z.size();
    let (n, c) = match shape[..] {
        [n, c] if n > 0 && c > 0 => (n, c),
        _ => {
            return Err(Error::Config(format!(
                "logit offsets: logits of shape {shape:?}, expected [n > 0, C > 0]"
            )))
        }
    };
    if y.size() != [n] {
        return Err(Error::Config(format!(
            "logit offsets: {:?} labels for {n} logits",
            y.size()
        )));
    }
    let (lo, hi) = (
        y.f_min()?.f_int64_value(&[])?,
        y.f_max()?.f_int64_value(&[])?,
    );
    if lo < 0 || hi >= c {
        return Err(Error::Config(format!(
            "logit offsets: labels in {lo}..={hi}, expected 0..{c}"
        )));
    }
    let non_finite = z
        .f_isfinite()?
        .f_logical_not()?
        .f_sum(Kind::Int64)?
        .f_int64_value(&[])?;
    if non_finite > 0 {
        return Err(Error::NonFinite {
            what: "logit offsets: the model's logits",
            count: non_finite,
        });
    }
    let onehot = Tensor::f_zeros([n, c], (Kind::Double, Device::Cpu))?.f_scatter_value(
        1,
        &y.f_unsqueeze(1)?,
        1.0,
    )?;
    let frequency = onehot.f_mean_dim(0, false, Kind::Double)?;
    let eye = Tensor::f_eye(c, (Kind::Double, Device::Cpu))?;
    // Objective, gradient and Hessian at offsets b ([C]).
    let evaluate = |b: &Tensor| -> Result<(f64, Tensor, Tensor)> {
        let shifted = z.f_add(b)?;
        let log_p = shifted.f_log_softmax(-1, Kind::Double)?;
        let ce = -log_p
            .f_mul(&onehot)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?
            / n as f64;
        let ridge = 0.5 * RIDGE * b.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let p = log_p.f_exp()?;
        let mean_p = p.f_mean_dim(0, false, Kind::Double)?;
        let grad = mean_p.f_sub(&frequency)?.f_add(&b.f_mul_scalar(RIDGE)?)?;
        let hess = mean_p
            .f_diag(0)?
            .f_sub(&p.f_tr()?.f_matmul(&p)?.f_div_scalar(n as f64)?)?
            .f_add(&eye.f_mul_scalar(RIDGE)?)?;
        Ok((ce + ridge, grad, hess))
    };
    let mut b = Tensor::f_zeros([c], (Kind::Double, Device::Cpu))?;
    let (loss_before, mut grad, mut hess) = evaluate(&b)?;
    let mut loss = loss_before;
    let inf_norm = |g: &Tensor| -> Result<f64> { Ok(g.f_abs()?.f_max()?.f_double_value(&[])?) };
    let not_converged = |iterations, grad: &Tensor| -> Result<Error> {
        Ok(Error::NotConverged {
            what: "logit offsets (Newton)",
            iterations,
            residual: inf_norm(grad)?,
            tolerance: GRADIENT_TOLERANCE,
        })
    };
    let mut iterations = 0;
    while inf_norm(&grad)? > GRADIENT_TOLERANCE {
        if iterations == MAX_ITERATIONS {
            return Err(not_converged(iterations, &grad)?);
        }
        iterations += 1;
        let step = Tensor::f_linalg_solve(&hess, &grad.f_unsqueeze(1)?, true)?.f_squeeze_dim(1)?;
        // The Newton decrement ∇ᵀH⁻¹∇ (> 0: H is positive definite): twice the decrease the
        // quadratic model predicts for the full step.
        let decrement = grad.f_dot(&step)?.f_double_value(&[])?;
        let rounding = 1e-15 * loss.abs().max(1.0);
        if decrement <= rounding {
            let candidate = b.f_sub(&step)?;
            let (l, g, _) = evaluate(&candidate)?;
            if l <= loss + rounding {
                (b, loss, grad) = (candidate, l, g);
            }
            break;
        }
        // Backtracking (Armijo) along the Newton direction.
        let mut t = 1.0;
        loop {
            let candidate = b.f_sub(&step.f_mul_scalar(t)?)?;
            let (l, g, h) = evaluate(&candidate)?;
            if l <= loss - 1e-4 * t * decrement {
                (b, loss, grad, hess) = (candidate, l, g, h);
                break;
            }
            t *= 0.5;
            if t < 1e-10 {
                return Err(not_converged(iterations, &grad)?);
            }
        }
    }
    Ok(OffsetFit {
        offsets: Vec::<f64>::try_from(&b)?,
        loss_before,
        loss_after: loss,
        iterations,
        gradient_norm: inf_norm(&grad)?,
        samples: n as usize,
    })
}

/// Fits [`fit_logit_offsets`] on `model`'s logits for `images` (eval mode) and adds the offsets
/// to the bias of the model's last layer, so that the model's logits become `z + b`.
///
/// # Errors
/// As [`fit_logit_offsets`]; [`Error::Config`] if the model has no output bias of `C` entries.
pub fn recalibrate_output_bias(
    model: &Model,
    images: &Tensor,
    labels: &Tensor,
) -> Result<OffsetFit> {
    let logits = map_logits(model, images, 500, |l| Ok(l.f_to_device(Device::Cpu)?))?;
    let fit = fit_logit_offsets(&logits, labels)?;
    let bias = model.output_bias()?;
    let offsets = Tensor::f_from_slice(&fit.offsets)?
        .f_to_kind(bias.kind())?
        .f_to_device(bias.device())?;
    if bias.size() != offsets.size() {
        return Err(Error::Config(format!(
            "the output bias has shape {:?}, the logits {} classes",
            bias.size(),
            fit.offsets.len()
        )));
    }
    tch::no_grad(|| -> Result<()> {
        let mut bias = bias;
        let _ = bias.f_add_(&offsets)?;
        Ok(())
    })?;
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[f64], c: i64) -> Tensor {
        Tensor::from_slice(data).view([-1, c])
    }

    /// With equal logits the offsets are the log-frequencies up to a constant, to first order
    /// in the ridge λ: `softmax(b) = frequencies − λb` exactly, and `b − mean(b)` within
    /// `O(λ·‖b‖/min frequency)` of the centred log-frequencies.
    #[test]
    fn equal_logits_give_the_log_frequencies() {
        let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 2, 2]);
        let logits = Tensor::zeros([6, 3], (Kind::Double, Device::Cpu));
        let fit = fit_logit_offsets(&logits, &labels).unwrap();
        let b = Tensor::from_slice(&fit.offsets);
        let freq = Tensor::from_slice(&[0.5, 1.0 / 6.0, 1.0 / 3.0]);
        let p = b.softmax(0, Kind::Double);
        let want = freq.f_sub(&b.f_mul_scalar(RIDGE).unwrap()).unwrap();
        let diff = f64::try_from(p.f_sub(&want).unwrap().abs().max()).unwrap();
        assert!(diff <= 1e-9, "softmax(b) − (freq − λb) = {diff}");
        let centred = |t: &Tensor| t.f_sub(&t.mean(Kind::Double)).unwrap();
        let log_freq = freq.log();
        let gap = f64::try_from((centred(&b) - centred(&log_freq)).abs().max()).unwrap();
        assert!(
            gap <= 0.02,
            "b − mean(b) is {gap} from the centred log-frequencies"
        );
        assert!(gap > 0.0, "the ridge moves b off the log-frequencies");
        assert!(fit.loss_after <= fit.loss_before);
        assert_eq!(fit.samples, 6);
    }

    /// On random logits the first-order condition holds, `loss_after` is the objective at the
    /// offsets, and no perturbation of the offsets lowers it.
    #[test]
    fn offsets_are_the_minimiser() {
        tch::manual_seed(3);
        let logits = Tensor::randn([200, 10], (Kind::Double, Device::Cpu))
            .f_mul_scalar(3.0)
            .unwrap();
        let labels = Tensor::randint(10, [200], (Kind::Int64, Device::Cpu));
        let fit = fit_logit_offsets(&logits, &labels).unwrap();
        let objective = |b: &Tensor| -> f64 {
            let log_p = logits.f_add(b).unwrap().log_softmax(-1, Kind::Double);
            let ce = f64::try_from(log_p.nll_loss(&labels)).unwrap();
            ce + 0.5 * RIDGE * f64::try_from(b.square().sum(Kind::Double)).unwrap()
        };
        let b = Tensor::from_slice(&fit.offsets);
        let at = objective(&b);
        assert!(
            (at - fit.loss_after).abs() <= 1e-12,
            "{at} vs {}",
            fit.loss_after
        );
        assert!((objective(&b.zeros_like()) - fit.loss_before).abs() <= 1e-12);
        for k in 0..20 {
            tch::manual_seed(100 + k);
            let nudge = Tensor::randn([10], (Kind::Double, Device::Cpu))
                .f_mul_scalar(1e-3)
                .unwrap();
            let there = objective(&b.f_add(&nudge).unwrap());
            assert!(
                there - at >= -1e-14,
                "a nudge lowers the objective by {}",
                at - there
            );
        }
    }

    /// A class absent from the labels gets a finite, strongly negative offset.
    #[test]
    fn a_missing_class_stays_finite() {
        let logits = rows(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 3);
        let labels = Tensor::from_slice(&[0i64, 1, 1]);
        let fit = fit_logit_offsets(&logits, &labels).unwrap();
        assert!(
            fit.offsets.iter().all(|b| b.is_finite()),
            "{:?}",
            fit.offsets
        );
        assert!(fit.offsets[2] < fit.offsets[0] - 2.0, "{:?}", fit.offsets);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let logits = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
        for labels in [
            Tensor::from_slice(&[0i64, 3]),
            Tensor::from_slice(&[-1i64, 0]),
            Tensor::from_slice(&[0i64]),
        ] {
            assert!(matches!(
                fit_logit_offsets(&logits, &labels),
                Err(Error::Config(_))
            ));
        }
        let nan = rows(&[0.0, f64::NAN, 0.0, 0.0, 0.0, f64::INFINITY], 3);
        let labels = Tensor::from_slice(&[0i64, 1]);
        assert!(matches!(
            fit_logit_offsets(&nan, &labels),
            Err(Error::NonFinite { count: 2, .. })
        ));
        let empty = Tensor::zeros([0, 3], (Kind::Double, Device::Cpu));
        let none = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            fit_logit_offsets(&empty, &none),
            Err(Error::Config(_))
        ));
    }

    /// The recalibrated model's logits are the old ones plus the offsets, for both architectures.
    #[test]
    fn recalibration_shifts_the_logits_by_the_offsets() {
        for arch in [crate::models::Arch::Cnn, crate::models::Arch::Vgg] {
            tch::manual_seed(11);
            let model = Model::new(arch, Device::Cpu);
            let images = Tensor::rand([40, 1, 28, 28], (Kind::Float, Device::Cpu));
            let labels = Tensor::arange(40, (Kind::Int64, Device::Cpu)).remainder(4);
            let before = model.forward_t(&images, false);
            let fit = recalibrate_output_bias(&model, &images, &labels).unwrap();
            let after = model.forward_t(&images, false);
            let b = Tensor::from_slice(&fit.offsets).to_kind(Kind::Float);
            let diff = f64::try_from(after.f_sub(&before.f_add(&b).unwrap()).unwrap().abs().max())
                .unwrap();
            assert!(diff <= 1e-5, "{arch:?}: {diff}");
            // Classes 4..9 are absent: their offsets are the most negative.
            assert!(
                fit.offsets[9] < fit.offsets[0],
                "{arch:?}: {:?}",
                fit.offsets
            );
        }
    }
}
