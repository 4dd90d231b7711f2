//! Backdoor attacks for evaluation: BadNets, Blended, SIG (clean-label) and all-to-all.
//!
//! Every trigger is a fixed, documented pattern; the pattern, target and poisoned count are
//! recorded with each run (see [`Attack::describe`] and [`Attack::trigger_image`]).
//!
//! * **BadNets** (Gu et al. 2017): a 3×3 white square at rows/cols 24–26 (bottom-right corner),
//!   all-to-one: poisoned labels become the target.
//! * **Blended** (Chen et al. 2017): `x' = (1 − α)x + α·P` with α = 0.2 and `P` a fixed uniform
//!   noise image (a linear congruential generator with seed 1234); all-to-one.
//! * **SIG** (Barni et al. 2019): `x' = clamp(x + Δ·sin(2π·f·j/28))` along columns `j`, Δ = 0.2,
//!   f = 6; clean-label: only target-class training images are poisoned, labels unchanged.
//! * **All-to-all**: the BadNets patch, label `y → (y + 1) mod 10`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::Split;
use crate::error::{Error, Result};
use crate::tensor_vec::deep_copy;

/// A seed for one purpose (`stream`) derived from a run's seed, so that the random streams of
/// poisoning, training and unlearning are independent.
pub fn derive_seed(seed: i64, stream: &str) -> i64 {
    // FNV-1a over the stream name, mixed with the seed (splitmix64 finaliser).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in stream.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let mut z = h ^ (seed as u64).wrapping_mul(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Uniform `[0, 1)` noise from a fixed linear congruential generator.
fn fixed_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
}

/// The attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// Patch trigger, all-to-one.
    Badnets,
    /// Blended noise pattern (α = 0.2), all-to-one.
    Blended,
    /// Sinusoidal signal, clean-label.
    Sig,
    /// Patch trigger, label y → (y+1) mod 10.
    AllToAll,
}

impl std::fmt::Display for AttackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            AttackKind::Badnets => "badnets",
            AttackKind::Blended => "blended",
            AttackKind::Sig => "sig",
            AttackKind::AllToAll => "all-to-all",
        };
        f.write_str(s)
    }
}

/// Blending weight of the Blended attack.
pub const BLEND_ALPHA: f64 = 0.2;
/// Amplitude of the SIG signal (pixels in [0, 1]).
pub const SIG_DELTA: f64 = 0.2;
/// Frequency of the SIG signal (periods across the image width).
pub const SIG_FREQUENCY: f64 = 6.0;

/// A configured attack.
#[derive(Debug)]
pub struct Attack {
    /// Which attack.
    pub kind: AttackKind,
    /// Target class (all-to-one attacks and SIG).
    pub target: i64,
    /// Fraction of the training set poisoned.
    pub ratio: f64,
    /// `[1, 28, 28]` pattern (patch mask, blend pattern or signal).
    pattern: Tensor,
}

impl Attack {
    /// Builds an attack.
    ///
    /// # Errors
    /// [`Error::Config`] for a target outside 0..10 or a ratio outside (0, 1].
    pub fn new(kind: AttackKind, target: i64, ratio: f64) -> Result<Self> {
        if !(0..10).contains(&target) {
            return Err(Error::Config(format!("target class {target} not in 0..10")));
        }
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(Error::Config(format!("poison ratio {ratio} not in (0, 1]")));
        }
        let opts = (Kind::Float, Device::Cpu);
        let pattern = match kind {
            AttackKind::Badnets | AttackKind::AllToAll => {
                let m = Tensor::f_zeros([1, 28, 28], opts)?;
                let _ = m.f_narrow(1, 24, 3)?.f_narrow(2, 24, 3)?.f_fill_(1.0)?;
                m
            }
            AttackKind::Blended => {
                // A fixed pattern, independent of the run's seed and of libtorch's RNG.
                Tensor::from_slice(&fixed_noise(28 * 28, 1234)).f_view([1, 28, 28])?
            }
            AttackKind::Sig => {
                let j = Tensor::f_arange(28, opts)?;
                let row = j
                    .f_mul_scalar(2.0 * std::f64::consts::PI * SIG_FREQUENCY / 28.0)?
                    .f_sin()?
                    .f_mul_scalar(SIG_DELTA)?;
                row.f_view([1, 1, 28])?
                    .f_expand([1, 28, 28], false)?
                    .f_contiguous()?
            }
        };
        Ok(Attack {
            kind,
            target,
            ratio,
            pattern,
        })
    }

    /// The trigger as an image in `[0, 1]` (the SIG signal shifted to 0.5), for logging.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn trigger_image(&self) -> Result<Tensor> {
        Ok(match self.kind {
            AttackKind::Sig => self.pattern.f_add_scalar(0.5)?,
            _ => self.pattern.shallow_clone(),
        })
    }

    /// A one-line description recorded with runs.
    pub fn describe(&self) -> String {
        match self.kind {
            AttackKind::Badnets => format!(
                "BadNets 3x3 white patch at (24..27, 24..27), all-to-one → {}",
                self.target
            ),
            AttackKind::AllToAll => {
                "BadNets 3x3 white patch at (24..27, 24..27), all-to-all y → (y+1) mod 10".into()
            }
            AttackKind::Blended => format!(
                "Blended uniform noise (seed 1234), alpha {BLEND_ALPHA}, all-to-one → {}",
                self.target
            ),
            AttackKind::Sig => format!(
                "SIG sin(2π·{SIG_FREQUENCY}·j/28)·{SIG_DELTA}, clean-label, target {}",
                self.target
            ),
        }
    }

    /// Applies the trigger to `images` (`[N, 1, 28, 28]`, any device), clamped to `[0, 1]`.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn apply(&self, images: &Tensor) -> Result<Tensor> {
        let p = self.pattern.f_to_device(images.device())?.f_unsqueeze(0)?;
        let out = match self.kind {
            AttackKind::Badnets | AttackKind::AllToAll => {
                // Where the mask is 1, the pixel becomes 1.
                images.f_mul(&p.f_neg()?.f_add_scalar(1.0)?)?.f_add(&p)?
            }
            AttackKind::Blended => images
                .f_mul_scalar(1.0 - BLEND_ALPHA)?
                .f_add(&p.f_mul_scalar(BLEND_ALPHA)?)?,
            AttackKind::Sig => images.f_add(&p)?,
        };
        Ok(out.f_clamp(0.0, 1.0)?)
    }

    /// The labels the attacker wants for triggered images with true labels `labels`.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn target_labels(&self, labels: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            AttackKind::AllToAll => labels.f_add_scalar(1)?.f_remainder(10)?,
            _ => labels.f_full_like(self.target)?,
        })
    }

    /// Which evaluation images count for the attack success rate: those whose true label is not
    /// the target (all-to-one and SIG); every image for all-to-all. The authors' code also counts
    /// target-class images; we do not.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn asr_mask(&self, labels: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            AttackKind::AllToAll => labels.f_ones_like()?.f_to_kind(Kind::Bool)?,
            _ => labels.f_ne(self.target)?,
        })
    }

    /// Poisons `train`: `ratio·N` examples chosen with `seed` (for SIG, among the target class
    /// only, capped by its size) get the trigger and, except for SIG, the attacker's labels.
    /// Returns the poisoned split and the number of poisoned examples.
    ///
    /// # Errors
    /// If libtorch fails.
    pub fn poison(&self, train: &Split, seed: i64) -> Result<(Split, usize)> {
        let n = train.len() as i64;
        let want = ((self.ratio * n as f64).round() as i64).max(1);
        // A stream of its own: with the run's seed itself, the poisoning permutation would equal
        // the first training epoch's shuffle, putting every poisoned image in the first batches.
        tch::manual_seed(derive_seed(seed, "poison"));
        let candidates = match self.kind {
            AttackKind::Sig => train.labels.f_eq(self.target)?.f_nonzero()?.f_view([-1])?,
            _ => Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?,
        };
        let m = candidates.size()[0];
        let perm = Tensor::f_randperm(m, (Kind::Int64, Device::Cpu))?;
        let k = want.min(m);
        let idx = candidates.f_index_select(0, &perm.f_narrow(0, 0, k)?)?;
        let images = deep_copy(&train.images)?;
        let labels = deep_copy(&train.labels)?;
        let chosen = images.f_index_select(0, &idx)?;
        let triggered = self.apply(&chosen)?;
        let images = images.f_index_copy(0, &idx, &triggered)?;
        let labels = if self.kind == AttackKind::Sig {
            labels
        } else {
            let new = self.target_labels(&labels.f_index_select(0, &idx)?)?;
            labels.f_index_copy(0, &idx, &new)?
        };
        Ok((Split { images, labels }, k as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: i64) -> Split {
        Split {
            images: Tensor::zeros([n, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10),
        }
    }

    #[test]
    fn badnets_poisons_the_chosen_fraction_with_patch_and_target() {
        let a = Attack::new(AttackKind::Badnets, 3, 0.1).unwrap();
        let (p, k) = a.poison(&toy(200), 7).unwrap();
        assert_eq!(k, 20);
        let corner = p.images.narrow(2, 24, 3).narrow(3, 24, 3).sum_dim_intlist(
            [1i64, 2, 3].as_slice(),
            false,
            Kind::Float,
        );
        let patched = corner.eq(9.0);
        assert_eq!(patched.sum(Kind::Int64).int64_value(&[]), 20);
        // Every patched image carries the target label.
        let lab = p.labels.masked_select(&patched);
        assert_eq!(lab.eq(3).all().int64_value(&[]), 1);
        // Nothing outside the patch changed.
        assert_eq!(p.images.sum(Kind::Float).double_value(&[]), 180.0);
    }

    #[test]
    fn poisoning_is_independent_of_the_training_shuffle() {
        // Regression: poisoning with the run's seed itself reused the first epoch's shuffle.
        let a = Attack::new(AttackKind::Badnets, 0, 0.1).unwrap();
        let (p, _) = a.poison(&toy(1000), 0).unwrap();
        tch::manual_seed(0);
        let first_batch = Tensor::randperm(1000, (Kind::Int64, Device::Cpu)).narrow(0, 0, 100);
        let poisoned_in_first = p
            .images
            .index_select(0, &first_batch)
            .narrow(2, 24, 1)
            .narrow(3, 24, 1)
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(
            poisoned_in_first <= 30.0,
            "{poisoned_in_first} of 100 poisoned in the first batch"
        );
        assert_ne!(derive_seed(0, "poison"), derive_seed(0, "train"));
    }

    #[test]
    fn sig_is_clean_label_and_all_to_all_shifts_labels() {
        let a = Attack::new(AttackKind::Sig, 4, 0.5).unwrap();
        let data = toy(100);
        let (p, k) = a.poison(&data, 1).unwrap();
        assert_eq!(k, 10, "capped by the 10 target-class images");
        assert_eq!(p.labels.eq_tensor(&data.labels).all().int64_value(&[]), 1);
        let a = Attack::new(AttackKind::AllToAll, 0, 0.1).unwrap();
        let y = Tensor::from_slice(&[0i64, 5, 9]);
        assert_eq!(
            Vec::<i64>::try_from(a.target_labels(&y).unwrap()).unwrap(),
            vec![1, 6, 0]
        );
        assert_eq!(a.asr_mask(&y).unwrap().sum(Kind::Int64).int64_value(&[]), 3);
    }
}
