//! Seeded training (the attacker's poisoned training, and plain fine-tuning) and evaluation.

use tch::nn::{Adam, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::attacks::Attack;
use crate::data::Split;
use crate::error::Result;
use crate::models::Model;

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initialisation and the shuffling.
    pub seed: i64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 2,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// Trains `model` on `data` with Adam and cross-entropy, shuffling with `config.seed`.
/// `progress` is called after every batch with (epoch, batch, batches per epoch, loss).
///
/// # Errors
/// If libtorch fails.
pub fn train(
    model: &Model,
    data: &Split,
    config: &TrainConfig,
    mut progress: impl FnMut(usize, usize, usize, f64),
) -> Result<()> {
    let device = model.vs.device();
    let mut opt = Adam::default().build(&model.vs, config.lr)?;
    let n = data.len() as i64;
    let b = config.batch_size.max(1) as i64;
    let batches = ((n + b - 1) / b) as usize;
    tch::manual_seed(config.seed);
    for epoch in 0..config.epochs {
        let perm = Tensor::f_randperm(n, (Kind::Int64, Device::Cpu))?;
        for i in 0..batches {
            let idx = perm.f_narrow(0, i as i64 * b, b.min(n - i as i64 * b))?;
            let x = data.images.f_index_select(0, &idx)?.f_to_device(device)?;
            let y = data.labels.f_index_select(0, &idx)?.f_to_device(device)?;
            let loss = crate::ibau::cross_entropy(&model.forward_t(&x, true), &y)?;
            opt.backward_step(&loss);
            progress(epoch, i, batches, loss.f_double_value(&[])?);
        }
    }
    Ok(())
}

/// Clean accuracy and attack success rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Accuracy on the clean evaluation set.
    pub acc: f64,
    /// Fraction of counted triggered images classified as the attacker's label.
    pub asr: f64,
}

/// `map` of the model's logits on `images`, in eval mode and without gradients, in batches of
/// `batch`, concatenated.
pub(crate) fn map_logits(
    model: &Model,
    images: &Tensor,
    batch: i64,
    map: impl Fn(Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let device = model.vs.device();
    let n = images.size()[0];
    let mut out = Vec::new();
    tch::no_grad(|| -> Result<()> {
        let mut i = 0;
        while i < n {
            let k = batch.min(n - i);
            let x = images.f_narrow(0, i, k)?.f_to_device(device)?;
            out.push(map(model.forward_t(&x, false))?);
            i += k;
        }
        Ok(())
    })?;
    Ok(Tensor::f_cat(&out, 0)?)
}

/// Predicted classes of `images`, in eval mode, in batches.
///
/// # Errors
/// If libtorch fails.
pub fn predict(model: &Model, images: &Tensor) -> Result<Tensor> {
    map_logits(model, images, 1000, |logits| {
        Ok(logits.f_argmax(-1, false)?.f_to_device(Device::Cpu)?)
    })
}

/// ACC on `eval` and ASR of `attack` on it (see [`Attack::asr_mask`] for which images count).
///
/// # Errors
/// If libtorch fails.
pub fn evaluate(model: &Model, eval: &Split, attack: &Attack) -> Result<Metrics> {
    let labels = eval.labels.f_to_device(Device::Cpu)?;
    let pred = predict(model, &eval.images)?;
    let acc = pred
        .f_eq_tensor(&labels)?
        .f_to_kind(Kind::Double)?
        .f_mean(Kind::Double)?
        .f_double_value(&[])?;
    let mask = attack.asr_mask(&labels)?;
    let triggered = attack.apply(&eval.images.f_index(&[Some(mask.shallow_clone())])?)?;
    let want = attack.target_labels(&labels.f_index(&[Some(mask)])?)?;
    let pred_t = predict(model, &triggered)?;
    let asr = pred_t
        .f_eq_tensor(&want)?
        .f_to_kind(Kind::Double)?
        .f_mean(Kind::Double)?
        .f_double_value(&[])?;
    Ok(Metrics { acc, asr })
}
