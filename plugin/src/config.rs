//! Experiment configuration: TOML files (unknown keys are errors) with command-line overrides.
//!
//! ```toml
//! dataset = "mnist"          # or "fashion-mnist"
//! attack = "badnets"         # badnets | blended | sig | all-to-all
//! target = 0
//! poison_ratio = 0.1
//! arch = "cnn"               # cnn | vgg
//! epochs = 2
//! clean_size = 5000          # ≤ 5000: the first n of the defender's clean pool
//! seed = 0
//! preset = "paper"           # paper | tuned
//!
//! [unlearn]                  # optional: overrides keys of the preset's configuration
//! rounds = 3
//! ```

use serde::{Deserialize, Serialize};

use crate::attacks::AttackKind;
use crate::data::DatasetName;
use crate::error::{Error, Result};
use crate::ibau::{Method, UnlearnConfig};
use crate::models::Arch;

/// Unlearning presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The authors' defaults ([`UnlearnConfig::paper`]).
    Paper,
    /// Ours ([`UnlearnConfig::tuned`]).
    Tuned,
}

/// One experiment: poisoned training, unlearning and evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Data set.
    pub dataset: DatasetName,
    /// Attack.
    pub attack: AttackKind,
    /// Target class.
    pub target: i64,
    /// Fraction of the training set poisoned.
    pub poison_ratio: f64,
    /// Architecture.
    pub arch: Arch,
    /// Epochs of poisoned training.
    pub epochs: usize,
    /// Batch size of poisoned training.
    pub train_batch_size: usize,
    /// Adam learning rate of poisoned training.
    pub train_lr: f64,
    /// Clean samples available to the defender (first n of the clean pool, ≤ 5000).
    pub clean_size: usize,
    /// Seed of everything.
    pub seed: i64,
    /// Unlearning preset (ignored when `unlearn` is given).
    pub preset: Preset,
    /// I-BAU or the fine-tuning ablation (overrides the preset's method).
    pub method: Method,
    /// An unlearning configuration overriding the preset (in a file, `[unlearn]` may give only
    /// some keys: [`ExperimentConfig::from_toml`]).
    pub unlearn: Option<UnlearnConfig>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            dataset: DatasetName::Mnist,
            attack: AttackKind::Badnets,
            target: 0,
            poison_ratio: 0.1,
            arch: Arch::Cnn,
            epochs: 2,
            train_batch_size: 128,
            train_lr: 1e-3,
            clean_size: 5000,
            seed: 0,
            preset: Preset::Paper,
            method: Method::Ibau,
            unlearn: None,
        }
    }
}

impl ExperimentConfig {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// [`Error::Parse`] with the TOML error (unknown keys included); [`Error::Config`] for values
    /// out of range.
    ///
    /// An `[unlearn]` table may be partial: the keys it omits come from the file's `preset`
    /// (`tuned` sized by the file's `clean_size`), with the file's `method` and `seed`, and the
    /// completed table then replaces the preset (a later `--preset` does not change it).
    pub fn from_toml(text: &str) -> Result<Self> {
        let parse = |e: toml::de::Error| Error::Parse(e.to_string());
        let mut doc: toml::Table = toml::from_str(text).map_err(parse)?;
        let cfg = match doc.remove("unlearn") {
            // No [unlearn]: parse the text itself, so that errors point at their line.
            None => toml::from_str(text).map_err(parse)?,
            Some(toml::Value::Table(partial)) => {
                let mut cfg: ExperimentConfig = doc.try_into().map_err(parse)?;
                let base = cfg.unlearn_config();
                let mut full =
                    toml::Table::try_from(&base).map_err(|e| Error::Parse(e.to_string()))?;
                // Nested tables ([unlearn.solver], [unlearn.inner]) are tagged enums: a given
                // one replaces the preset's whole.
                full.extend(partial);
                cfg.unlearn = Some(
                    full.try_into()
                        .map_err(|e: toml::de::Error| Error::Parse(format!("[unlearn]: {e}")))?,
                );
                cfg
            }
            Some(other) => {
                return Err(Error::Parse(format!(
                    "unlearn must be a table ([unlearn]), not {}",
                    other.type_str()
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises as TOML (what is logged with a run).
    ///
    /// # Errors
    /// [`Error::Parse`] if serialisation fails.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Parse(e.to_string()))
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if !(0..10).contains(&self.target) {
            return Err(Error::Config(format!(
                "target = {} not in 0..10",
                self.target
            )));
        }
        if !(self.poison_ratio > 0.0 && self.poison_ratio <= 1.0) {
            return Err(Error::Config(format!(
                "poison_ratio = {} not in (0, 1]",
                self.poison_ratio
            )));
        }
        if self.clean_size == 0 || self.clean_size > 5000 {
            return Err(Error::Config(format!(
                "clean_size = {} not in 1..=5000",
                self.clean_size
            )));
        }
        if self.train_batch_size == 0 || !(self.train_lr.is_finite() && self.train_lr > 0.0) {
            return Err(Error::Config(
                "train_batch_size must be ≥ 1 and train_lr > 0".into(),
            ));
        }
        self.unlearn_config().validate()
    }

    /// The unlearning configuration this experiment uses.
    pub fn unlearn_config(&self) -> UnlearnConfig {
        let mut u = self.unlearn.clone().unwrap_or_else(|| match self.preset {
            Preset::Paper => UnlearnConfig::paper(),
            Preset::Tuned => UnlearnConfig::tuned(self.clean_size),
        });
        if self.unlearn.is_none() {
            u.method = self.method;
            u.seed = self.seed;
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibau::Recalibration;

    #[test]
    fn partial_files_use_defaults_and_unknown_keys_are_errors() {
        let c = ExperimentConfig::from_toml("attack = \"sig\"\nclean_size = 100\n").unwrap();
        assert_eq!(c.attack, AttackKind::Sig);
        assert_eq!(c.epochs, 2);
        let e = ExperimentConfig::from_toml("atack = \"sig\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("atack"), "{e}");
        assert!(ExperimentConfig::from_toml("attack = \"nope\"").is_err());
        assert!(ExperimentConfig::from_toml("clean_size = 0").is_err());
        assert!(ExperimentConfig::from_toml("target = 10").is_err());
    }

    #[test]
    fn partial_unlearn_tables_complete_the_files_preset() {
        let c = ExperimentConfig::from_toml("[unlearn]\nrounds = 3\n").unwrap();
        let u = c.unlearn.unwrap();
        assert_eq!(u.rounds, 3);
        assert_eq!(
            UnlearnConfig { rounds: 1, ..u },
            UnlearnConfig {
                rounds: 1,
                ..UnlearnConfig::paper()
            }
        );
        // The base is the file's preset, sized by the file's clean_size, with its seed.
        let c = ExperimentConfig::from_toml(
            "preset = \"tuned\"\nclean_size = 100\nseed = 7\n[unlearn]\nouter_lr = 0.5\n",
        )
        .unwrap();
        let expected = UnlearnConfig {
            outer_lr: 0.5,
            seed: 7,
            ..UnlearnConfig::tuned(100)
        };
        assert_eq!(c.unlearn.unwrap(), expected);
        // A nested table replaces the preset's.
        let c = ExperimentConfig::from_toml(
            "[unlearn.solver]\nkind = \"cg\"\nrel_tol = 0.01\nmax_iter = 20\n",
        )
        .unwrap();
        assert_eq!(
            c.unlearn.unwrap().solver,
            crate::ibau::Solver::Cg {
                rel_tol: 0.01,
                max_iter: 20
            }
        );
        // Unknown keys, bad values and a non-table are still errors, naming the key.
        for (text, needle) in [
            ("[unlearn]\nrounds = 3\nrouds = 4\n", "rouds"),
            ("[unlearn]\nrounds = \"three\"\n", "rounds"),
            ("[unlearn]\nrounds = 0\n", "rounds"),
            ("unlearn = 3\n", "unlearn must be a table"),
            ("atack = 1\n[unlearn]\nrounds = 3\n", "atack"),
        ] {
            let e = ExperimentConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn tuned_budgets_and_search_validation() {
        use crate::ibau::{ClassSearch, InnerSearch};
        assert_eq!(UnlearnConfig::tuned(5000).total_steps(5000), 50);
        assert_eq!(UnlearnConfig::tuned(100).total_steps(100), 100);
        assert_eq!(UnlearnConfig::paper().total_steps(100), 5);
        let mut c = UnlearnConfig::tuned(100);
        assert!(c.validate().is_ok());
        if let InnerSearch::ClassSearch(ClassSearch { radii, .. }) = &mut c.inner {
            *radii = vec![2.0, 1.0];
        }
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("radii"), "{e}");
        let mut c = UnlearnConfig::tuned(100);
        c.epochs_per_round = 0;
        assert!(c.validate().is_err());
        let mut c = UnlearnConfig::tuned(100);
        if let InnerSearch::ClassSearch(s) = &mut c.inner {
            s.max_candidates = 0;
        }
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_candidates"));
        for (distill, clip) in [
            (1.5, None),
            (-0.1, None),
            (0.5, Some(0.0)),
            (0.5, Some(f64::NAN)),
        ] {
            let mut c = UnlearnConfig::tuned(100);
            c.distill = distill;
            c.clip_grad_norm = clip;
            assert!(c.validate().is_err(), "{distill} {clip:?}");
        }
        // Small clean sets distil and clip; large ones keep the plain loss and recalibrate the
        // output bias.
        let small = UnlearnConfig::tuned(100);
        assert_eq!(
            (small.distill, small.clip_grad_norm, small.recalibrate),
            (0.6, Some(5.0), Recalibration::Off)
        );
        let large = UnlearnConfig::tuned(5000);
        assert_eq!(
            (large.distill, large.clip_grad_norm, large.recalibrate),
            (0.0, None, Recalibration::CleanAndPerturbed)
        );
        assert_eq!(UnlearnConfig::paper().recalibrate, Recalibration::Off);
        let mut c = UnlearnConfig::tuned(100);
        c.optimizer = crate::ibau::OuterOptimizer::Sgd { momentum: 1.0 };
        assert!(c.validate().is_err());
        // Configs written before these fields existed still parse, as the authors' defaults.
        let old = ExperimentConfig::from_toml(
            "[unlearn]\nmethod = \"ibau\"\nrounds = 5\nbatch_size = 100\nouter_lr = 0.001\ninner_lr = 10.0\nreg = 0.001\nfp_alpha = 0.1\nperturb_fraction = 0.01\nwarm_start = false\non_solver_failure = \"direct-gradient\"\nseed = 0\n[unlearn.solver]\nkind = \"fixed-point\"\nsteps = 5\n",
        )
        .unwrap();
        assert_eq!(old.unlearn.unwrap(), UnlearnConfig::paper());
        // A class search written before `shifts` existed keeps its old candidates.
        let old_search = ExperimentConfig::from_toml(
            "[unlearn]\nmethod = \"ibau\"\nrounds = 1\nbatch_size = 100\nouter_lr = 0.01\ninner_lr = 10.0\nreg = 0.001\nfp_alpha = 0.1\nperturb_fraction = 0.5\nwarm_start = true\non_solver_failure = \"direct-gradient\"\nseed = 0\n[unlearn.solver]\nkind = \"fixed-point\"\nsteps = 5\n[unlearn.inner]\nkind = \"class-search\"\nradii = [1.0, 2.0]\nsteps = 20\nstep_fraction = 0.25\nflip_threshold = 0.9\nsamples = 500\n",
        )
        .unwrap();
        match old_search.unlearn.unwrap().inner {
            InnerSearch::ClassSearch(ClassSearch {
                shifts,
                radii,
                max_candidates,
                ..
            }) => {
                assert!(!shifts);
                assert_eq!(max_candidates, 1);
                assert_eq!(radii, vec![1.0, 2.0]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            UnlearnConfig::tuned(100).inner,
            InnerSearch::ClassSearch(ClassSearch { shifts: true, .. })
        ));
    }

    #[test]
    fn round_trip_through_toml() {
        let c = ExperimentConfig {
            unlearn: Some(UnlearnConfig::tuned(100)),
            ..Default::default()
        };
        let back = ExperimentConfig::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
