//! The I-BAU loop (Zeng et al., ICLR 2022), as specified in `shared/ibau-spec.md` §3, with the
//! implicit hypergradient computed by the core.
//!
//! Each round: (1) a universal perturbation δ (`[1, C, H, W]`, from 0) by one pass of SGD
//! (lr `inner_lr`) over the clean set on `−CE(f(x + δ), argmax f(x)) + reg·‖δ‖²`, optionally
//! projected onto `‖δ‖₂ ≤ projection`; (2) for every clean batch, the hypergradient of the outer
//! loss — mean CE over the batch with δ added to `max(1, ⌊B·perturb_fraction⌋)` random samples —
//! through the fixed-point map `Φ(δ, θ) = δ − α∇_δG`, `G(δ, θ) = −CE(f(x₀ + δ), y₀) + reg·‖δ‖²`
//! on the first clean batch `(x₀, y₀)`, then one Adam step on θ. The model stays in eval mode
//! (BatchNorm running statistics, dropout off).
//!
//! Deviations from the authors' code, all deliberate: at least one sample is always perturbed
//! (their `int(B·0.01)` is 0 for B < 100, which silently turns the step into fine-tuning); a
//! solver failure (a non-contractive Φ, negative curvature) is reported and handled by
//! [`FailurePolicy`], never silently used; runs are seeded.

use std::time::Instant;

use ibau_core::solve::{cg, fixed_point};
use ibau_core::{Info, Vector};
use serde::{Deserialize, Serialize};
use tch::nn::{Adam, OptimizerConfig, Sgd};
use tch::{Device, Kind, Tensor};

use crate::attacks::Attack;
use crate::autograd::{outer_gradients, GradientDescentMap, LinearisedMap};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::piecewise_linear::PiecewiseLinearMap;
use crate::recalibrate::{recalibrate_output_bias, OffsetFit};
use crate::tensor_vec::TensorList;
use crate::train::{evaluate, map_logits, Metrics};

/// Unlearning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// I-BAU: implicit hypergradient through the adversarial perturbation.
    Ibau,
    /// The ablation: the same outer steps on plain clean cross-entropy (no δ).
    FineTune,
}

/// The linear solver of the implicit system.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Solver {
    /// `steps` fixed-point iterations from v₀ = 0 (the authors' K = 5), accepted unconverged
    /// unless the steps grow.
    FixedPoint {
        /// K.
        steps: usize,
    },
    /// Conjugate gradient on `I − Jᵀ = α∇²_δG` to a relative tolerance.
    Cg {
        /// Relative residual tolerance.
        rel_tol: f64,
        /// Iteration budget.
        max_iter: usize,
    },
}

/// What to do when the linear solve fails (Φ not contractive, `∇²G` indefinite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Use the direct gradient `∇_θE` (the implicit term dropped) for this step — counted.
    DirectGradient,
    /// Skip the outer step — counted.
    Skip,
    /// Stop with the error.
    Abort,
}

/// How each round's universal perturbation δ is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InnerSearch {
    /// The authors' (`defense.py`): one pass of SGD (lr `inner_lr`) over the clean set on
    /// `−CE(f(x + δ), argmax f(x)) + reg·‖δ‖²`, optionally projected onto `‖δ‖₂ ≤ projection`.
    Sgd,
    /// Ours: a norm-bounded search for the perturbation that flips the most clean samples, with
    /// the radius grown until one flips at least `flip_threshold` of them. At each radius r of
    /// `radii` (increasing) and for each candidate — untargeted (raise `CE(f(x + δ), y)`) and
    /// targeted at every class t (raise `log p_t(x + δ)` on the samples with y ≠ t) — δ starts
    /// at 0 and takes `steps` full-batch normalised gradient steps `δ += step_fraction · r ·
    /// g/‖g‖` on the first `samples` clean samples, projected onto `‖δ‖₂ ≤ r`. The candidate
    /// with the highest flip rate wins; the search stops at the first radius where it reaches
    /// `flip_threshold` (else the best over all radii is used). With `shifts`, the candidates
    /// also include each label shift k = 1 … C−1 (raise `log p_{(y+k) mod C}(x + δ)` on all
    /// samples): the all-to-all backdoor's form, which no single-class candidate matches.
    ///
    /// Why: a backdoor is a perturbation of small norm that sends (almost) every input to one
    /// class, so it is the first candidate to reach a high flip rate as the radius grows —
    /// found from 100 clean samples, where the authors' unbounded mini-batch SGD ascent ends at
    /// a saturated, huge δ unrelated to the trigger (see the README).
    ClassSearch(ClassSearch),
}

/// The settings of [`InnerSearch::ClassSearch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSearch {
    /// Radii tried, increasing.
    pub radii: Vec<f64>,
    /// Gradient steps per candidate and radius.
    pub steps: usize,
    /// Step length as a fraction of the radius.
    pub step_fraction: f64,
    /// Flip rate that stops the radius schedule.
    pub flip_threshold: f64,
    /// Clean samples the search uses (the first ones; all if fewer).
    pub samples: usize,
    /// Also try the label-shift candidates y → (y + k) mod C (default `false`).
    #[serde(default)]
    pub shifts: bool,
    /// Unlearn up to this many candidates at once: all that reach `flip_threshold` at the
    /// stopping radius, best first (default 1: the best only). Each perturbed sample of an
    /// outer batch gets one of their perturbations, in turn. Where a model has *natural*
    /// universal directions as strong as its backdoor (Fashion-MNIST's class 8, "bag", flips
    /// ≥ 90 % at radius 3), the best candidate is not always the backdoor; unlearning the few
    /// that qualify removes it either way.
    #[serde(default = "one")]
    pub max_candidates: usize,
}

/// The inner objective G whose fixed-point map Φ = δ − α∇_δG the implicit hypergradient
/// differentiates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InnerObjective {
    /// The authors': `G = −CE(f(x₀ + δ), y₀) + reg·‖δ‖²` on the first clean batch, whatever
    /// search found δ.
    #[default]
    Authors,
    /// With [`InnerSearch::ClassSearch`] only: the objective the search optimised, for each
    /// chosen candidate, on the first clean batch's samples of its candidate set (targeted: the
    /// samples not of class t, labelled t; untargeted and shifts as in the search), written as
    /// a penalised minimisation `G_j = s_j·CE(f(x + δ_j), y_j) + (μ_j/2)‖δ_j‖²` (`s_j = +1`
    /// targeted, `−1` untargeted), averaged over the candidates. The multiplier `μ_j =
    /// max(0, −⟨∇_δ s_j·CE, δ_j⟩ / ‖δ_j‖²)` is fixed at the start of the round from the search's
    /// end point: the KKT multiplier of the ball constraint the search ran under, so that the
    /// search's δ is (as far as the search converged) a stationary point of `G_j` and Φ's
    /// fixed point. Why: at the search's δ the authors' G (untargeted ascent) has
    /// `∇²G = −∇²CE + 2·reg·I`, so Φ is not contractive and every solve fails (the implicit
    /// term is then dropped); the targeted `G_j` is locally convex at a minimum. Measured
    /// (README, 2026-12-06): the solves then succeed, but the implicit term is ~10³ times the
    /// direct gradient, since δ is not re-solved as θ moves, and most models collapse; with
    /// [`UnlearnConfig::track_steps`] it is 9–27 % and helps on Fashion-MNIST. No preset uses
    /// it.
    Search,
}

/// How the second derivatives of Φ (`Jᵀv = v − α∇²_δδG v` and `(∂_θΦ)ᵀv`) are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecondOrder {
    /// [`SecondOrder::PiecewiseLinear`] where it applies (a piecewise-linear model — the CNN —
    /// and [`InnerObjective::Authors`]), else [`SecondOrder::Autograd`].
    #[default]
    Auto,
    /// Double backward through libtorch's autograd ([`GradientDescentMap`]), for every model
    /// and objective.
    Autograd,
    /// The closed form of [`PiecewiseLinearMap`]: the same values up to rounding and an
    /// absolute 10⁻³⁰-scale flush ([`crate::piecewise_linear::FLUSH_BELOW`]), without double
    /// backward (measured in the README). A configuration error for a model that is not
    /// piecewise linear or with [`InnerObjective::Search`] (a different G).
    PiecewiseLinear,
}

/// Whether and on what [`UnlearnConfig::recalibrate`] refits the output layer's biases after
/// the last round ([`crate::recalibrate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recalibration {
    /// No refit.
    #[default]
    Off,
    /// On the clean set alone. In the trial (Fashion-MNIST, seed-0 models, 4 000 samples,
    /// held-out pool images) it kept 0.2–1.4 pt more accuracy than
    /// [`Recalibration::CleanAndPerturbed`] on three of the four attacks (the same on Blended)
    /// but raised all-to-all's ASR from 1.9 to 6.1 % (4.0 % with the perturbed half).
    Clean,
    /// On the clean set and, for I-BAU, a copy of it perturbed by the last round's δ, sample
    /// `i` by the `(i mod k)`-th of its `k` candidates, as the outer loss shares them — half
    /// clean and half perturbed whatever `perturb_fraction` is (the tuned preset perturbs half
    /// of each batch): offsets that undid the unlearning of a searched direction raise the
    /// perturbed half's loss. Fine-tuning (δ = 0): the clean set alone.
    CleanAndPerturbed,
}

/// The outer optimizer on θ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OuterOptimizer {
    /// Adam (the authors').
    Adam,
    /// SGD with momentum.
    Sgd {
        /// Momentum.
        momentum: f64,
    },
}

fn default_inner() -> InnerSearch {
    InnerSearch::Sgd
}
fn default_optimizer() -> OuterOptimizer {
    OuterOptimizer::Adam
}
fn one() -> usize {
    1
}

/// Settings of one unlearning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlearnConfig {
    /// I-BAU or the fine-tuning ablation.
    pub method: Method,
    /// Rounds R.
    pub rounds: usize,
    /// Batch size B.
    pub batch_size: usize,
    /// Adam learning rate of the outer step.
    pub outer_lr: f64,
    /// SGD learning rate of the perturbation δ.
    pub inner_lr: f64,
    /// Weight of ‖δ‖² in the inner objective.
    pub reg: f64,
    /// Step α of the fixed-point map Φ = δ − α∇_δG.
    pub fp_alpha: f64,
    /// The linear solver.
    pub solver: Solver,
    /// Fraction of each batch perturbed by δ in the outer loss (at least one sample).
    pub perturb_fraction: f64,
    /// Radius of the L2 ball δ is projected onto (`None`: no projection, as in `defense.py`).
    pub projection: Option<f64>,
    /// Reuse the previous step's solution v as the next initial guess.
    pub warm_start: bool,
    /// What to do when the linear solve fails.
    pub on_solver_failure: FailurePolicy,
    /// Seed of the batch order and the perturbed samples.
    pub seed: i64,
    /// How δ is found each round (default: the authors' SGD pass).
    #[serde(default = "default_inner")]
    pub inner: InnerSearch,
    /// The outer optimizer (default: Adam, as the authors).
    #[serde(default = "default_optimizer")]
    pub optimizer: OuterOptimizer,
    /// Passes over the clean set per round, all with the round's δ (default 1, as the authors).
    #[serde(default = "one")]
    pub epochs_per_round: usize,
    /// Clip perturbed images `x + δ` to the pixel range [0, 1] in the search and the outer loss
    /// (default `false`, as the authors).
    #[serde(default)]
    pub clamp: bool,
    /// Weight w ∈ [0, 1] of self-distillation in the outer loss: `(1 − w)·CE(f(x̃), y) +
    /// w·CE(f(x̃), p₀(x))`, where `p₀(x)` is the softmax of the model *before* unlearning on the
    /// unperturbed image and x̃ the (possibly perturbed) input: a perturbed image is to be
    /// classified as the original model classifies the clean one. Distilling only the
    /// unperturbed samples was tried and kept less accuracy (Fashion-MNIST Blended, 100 samples,
    /// held-out pool: 83.4–84.6 % against 86.5–87.0 %). Default 0; both methods.
    #[serde(default)]
    pub distill: f64,
    /// Rescale each outer gradient to at most this norm (default `None`: no clipping).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// The inner objective of Φ (default: the authors').
    #[serde(default)]
    pub inner_objective: InnerObjective,
    /// With [`InnerObjective::Search`]: before every outer step, this many of the search's
    /// normalised gradient steps (length `track_step_fraction` × the candidate's radius,
    /// projected onto its ball) from the current δ on G's samples, and μ recomputed, so that δ
    /// tracks the inner solution δ*(θ) as θ moves (default 0: δ fixed for the round).
    #[serde(default)]
    pub track_steps: usize,
    /// Step length of [`UnlearnConfig::track_steps`] as a fraction of the radius (default 0.05).
    #[serde(default = "default_track_fraction")]
    pub track_step_fraction: f64,
    /// I-BAU: add the implicit term `(∂_θΦ)ᵀv` to the direct gradient (default `true`);
    /// `false` is the ablation that keeps everything else (δ, its tracking, the perturbed loss)
    /// and skips the linear solve — adversarial training on the same perturbations.
    #[serde(default = "yes")]
    pub implicit_term: bool,
    /// How Φ's second derivatives are computed (default [`SecondOrder::Auto`]; every choice
    /// gives the same operators up to rounding and the closed form's flush of cotangent entries
    /// below 10⁻³⁰).
    #[serde(default)]
    pub second_order: SecondOrder,
    /// After the last round, refit the output layer's biases by maximum likelihood
    /// ([`crate::recalibrate`]): unlearning shifts the class priors between classes the model
    /// confuses, and constant logit offsets undo that without adding anything that depends on
    /// the input (default [`Recalibration::Off`]; both methods).
    #[serde(default)]
    pub recalibrate: Recalibration,
}

fn yes() -> bool {
    true
}

fn default_track_fraction() -> f64 {
    0.05
}

impl UnlearnConfig {
    /// The authors' defaults (`defense.py`): B = 100, R = 5, K = 5, Adam 1e-3, δ by SGD lr 10,
    /// reg 0.001, α = 0.1, 1 % of each batch perturbed, no projection.
    pub fn paper() -> Self {
        UnlearnConfig {
            method: Method::Ibau,
            rounds: 5,
            batch_size: 100,
            outer_lr: 1e-3,
            inner_lr: 10.0,
            reg: 1e-3,
            fp_alpha: 0.1,
            solver: Solver::FixedPoint { steps: 5 },
            perturb_fraction: 0.01,
            projection: None,
            warm_start: false,
            on_solver_failure: FailurePolicy::DirectGradient,
            seed: 0,
            inner: InnerSearch::Sgd,
            optimizer: OuterOptimizer::Adam,
            epochs_per_round: 1,
            clamp: false,
            distill: 0.0,
            clip_grad_norm: None,
            inner_objective: InnerObjective::Authors,
            track_steps: 0,
            track_step_fraction: default_track_fraction(),
            implicit_term: true,
            second_order: SecondOrder::Auto,
            recalibrate: Recalibration::Off,
        }
    }

    /// Our tuned preset for a clean set of `clean_size` samples (tuned on the defender's clean
    /// pool only, never on the evaluation half): one round; δ by [`InnerSearch::ClassSearch`]
    /// (radii 1–8, 20 steps, stop at a 90 % flip rate, on at most 500 samples, with the
    /// label-shift candidates), perturbed images
    /// clipped to [0, 1], half of each batch perturbed; SGD with momentum 0.9 and lr 0.01 as the
    /// outer optimizer; B = 100 and one pass for ≥ 1000 samples (50 steps on 5000), else
    /// B = clean_size/5 (10–100) and enough passes for 100 outer steps; warm-started solves;
    /// below 1 000 samples a self-distilled outer loss with gradient clipping, from 1 000 the
    /// output bias recalibrated on the clean set and its perturbed copy after the round
    /// ([`Recalibration::CleanAndPerturbed`]; it cost accuracy at 100 samples, README).
    pub fn tuned(clean_size: usize) -> Self {
        let batch_size = if clean_size >= 1000 {
            100
        } else {
            (clean_size / 5).clamp(10, 100)
        };
        let batches = clean_size.div_ceil(batch_size).max(1);
        let epochs_per_round = if clean_size >= 1000 {
            1
        } else {
            100usize.div_ceil(batches).clamp(1, 100)
        };
        UnlearnConfig {
            rounds: 1,
            batch_size,
            epochs_per_round,
            outer_lr: 0.01,
            optimizer: OuterOptimizer::Sgd { momentum: 0.9 },
            perturb_fraction: 0.5,
            projection: None,
            warm_start: true,
            inner: InnerSearch::ClassSearch(ClassSearch {
                radii: vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0],
                steps: 20,
                step_fraction: 0.25,
                flip_threshold: 0.9,
                samples: 500,
                shifts: true,
                max_candidates: 3,
            }),
            clamp: true,
            distill: if clean_size >= 1000 { 0.0 } else { 0.6 },
            clip_grad_norm: (clean_size < 1000).then_some(5.0),
            recalibrate: if clean_size >= 1000 {
                Recalibration::CleanAndPerturbed
            } else {
                Recalibration::Off
            },
            ..Self::paper()
        }
    }

    /// Outer steps of a run on `clean_size` samples.
    pub fn total_steps(&self, clean_size: usize) -> usize {
        self.rounds
            * self.epochs_per_round
            * clean_size.div_ceil(self.batch_size.min(clean_size).max(1))
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.rounds == 0 || self.batch_size == 0 || self.epochs_per_round == 0 {
            return bad("rounds, batch_size and epochs_per_round must be ≥ 1".into());
        }
        if let OuterOptimizer::Sgd { momentum } = self.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return bad(format!("optimizer.momentum = {momentum} must be in [0, 1)"));
            }
        }
        if let InnerSearch::ClassSearch(ClassSearch {
            radii,
            steps,
            step_fraction,
            flip_threshold,
            samples,
            max_candidates,
            ..
        }) = &self.inner
        {
            if *max_candidates == 0 {
                return bad("inner.max_candidates must be ≥ 1".into());
            }
            if radii.is_empty()
                || radii.iter().any(|r| !(r.is_finite() && *r > 0.0))
                || radii.windows(2).any(|w| w[1] <= w[0])
            {
                return bad(format!(
                    "inner.radii = {radii:?} must be finite, > 0 and increasing"
                ));
            }
            if *steps == 0 || *samples == 0 {
                return bad("inner.steps and inner.samples must be ≥ 1".into());
            }
            if !(step_fraction.is_finite() && *step_fraction > 0.0) {
                return bad(format!("inner.step_fraction = {step_fraction} must be > 0"));
            }
            if !(0.0..=1.0).contains(flip_threshold) {
                return bad(format!(
                    "inner.flip_threshold = {flip_threshold} must be in [0, 1]"
                ));
            }
        }
        for (name, v) in [
            ("outer_lr", self.outer_lr),
            ("inner_lr", self.inner_lr),
            ("fp_alpha", self.fp_alpha),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} = {v} must be finite and > 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.distill) {
            return bad(format!("distill = {} must be in [0, 1]", self.distill));
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("clip_grad_norm = {c} must be finite and > 0"));
            }
        }
        if !(self.reg.is_finite() && self.reg >= 0.0) {
            return bad(format!("reg = {} must be finite and ≥ 0", self.reg));
        }
        if !(self.perturb_fraction > 0.0 && self.perturb_fraction <= 1.0) {
            return bad(format!(
                "perturb_fraction = {} must be in (0, 1]",
                self.perturb_fraction
            ));
        }
        if let Some(r) = self.projection {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!("projection = {r} must be finite and > 0"));
            }
        }
        if !(self.track_step_fraction.is_finite() && self.track_step_fraction > 0.0) {
            return bad(format!(
                "track_step_fraction = {} must be finite and > 0",
                self.track_step_fraction
            ));
        }
        if self.track_steps > 0 && self.inner_objective != InnerObjective::Search {
            return bad("track_steps needs inner_objective = \"search\"".into());
        }
        if self.inner_objective == InnerObjective::Search
            && self.second_order == SecondOrder::PiecewiseLinear
        {
            return bad(
                "second_order = \"piecewise-linear\" is the closed form of the authors' G; \
                 inner_objective = \"search\" needs \"autograd\" or \"auto\""
                    .into(),
            );
        }
        if self.inner_objective == InnerObjective::Search
            && !matches!(self.inner, InnerSearch::ClassSearch(_))
        {
            return bad(
                "inner_objective = \"search\" needs the class search (inner.kind = \"class-search\")"
                    .into(),
            );
        }
        match self.solver {
            Solver::FixedPoint { steps: 0 } => bad("solver.steps must be ≥ 1".into()),
            Solver::Cg { rel_tol, max_iter }
                if !(rel_tol.is_finite() && rel_tol > 0.0) || max_iter == 0 =>
            {
                bad("solver.rel_tol must be > 0 and solver.max_iter ≥ 1".into())
            }
            _ => Ok(()),
        }
    }

    fn core_params(&self) -> ibau_core::Params {
        let method = match self.solver {
            Solver::FixedPoint { steps } => ibau_core::Method::FixedPoint(fixed_point::Params {
                max_iter: steps,
                rel_tol: 0.0,
                require_convergence: false,
                ..Default::default()
            }),
            Solver::Cg { rel_tol, max_iter } => ibau_core::Method::ConjugateGradient(cg::Params {
                rel_tol,
                max_iter,
                require_convergence: false,
                ..Default::default()
            }),
        };
        ibau_core::Params {
            method,
            contraction: None,
            symmetric: true,
            cross_norm: None,
        }
    }
}

/// What one outer step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Round (0-based).
    pub round: usize,
    /// Outer step counted over the whole run (0-based).
    pub step: usize,
    /// Outer loss before the step.
    pub outer_loss: f64,
    /// Norm of the outer gradient, before [`UnlearnConfig::clip_grad_norm`] rescales it.
    pub gradient_norm: f64,
    /// The linear solve's report (I-BAU, when it succeeded).
    pub solver: Option<Info>,
    /// The linear solve's error (I-BAU, when it failed).
    pub solver_error: Option<String>,
    /// I-BAU: how far the round's δ is from being the fixed point the implicit hypergradient
    /// assumes, at this step's θ: `‖Φ(δ) − δ‖ / ‖δ‖ = α‖∇_δG‖ / ‖δ‖` (`None` for fine-tuning
    /// or δ = 0). The implicit function theorem gives `dδ*/dθ` at a fixed point `δ* = Φ(δ*)`
    /// only; the solve is exact for the linear system at the δ it is given, and this says how
    /// well that δ satisfies the premise. Neither the authors' code nor our presets re-solve δ
    /// after each outer step, so it grows as θ moves ([`UnlearnConfig::track_steps`] does).
    pub fixed_point_residual: Option<f64>,
    /// I-BAU, when the solve succeeded: `‖implicit term‖ / ‖∇_θE‖`, the size of the
    /// hypergradient's correction `(∂_θΦ)ᵀv` against the direct gradient (0: plain adversarial
    /// training).
    pub implicit_ratio: Option<f64>,
    /// ACC/ASR after the step on the first [`STEP_EVAL_SAMPLES`] images of the evaluation
    /// split, when the observer asked for them ([`UnlearnObserver::evaluate_after_step`]).
    pub metrics: Option<Metrics>,
}

/// Images of the evaluation split used for per-step ACC/ASR (the per-round numbers use all).
pub const STEP_EVAL_SAMPLES: usize = 1000;

/// What one round did.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// Round (0-based).
    pub round: usize,
    /// ‖δ‖₂ of the round's perturbation (0 for fine-tuning).
    pub delta_norm: f64,
    /// Wall time of the round.
    pub seconds: f64,
    /// Metrics after the round, when an evaluation set was given.
    pub metrics: Option<Metrics>,
    /// What [`InnerSearch::ClassSearch`] chose, best first (empty for the authors' search and
    /// fine-tuning).
    pub search: Vec<SearchOutcome>,
}

/// What [`InnerSearch::ClassSearch`] chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOutcome {
    /// The candidate that won.
    pub candidate: Candidate,
    /// The radius it was found at.
    pub radius: f64,
    /// Fraction of the search samples it flips (to the target, or away from their label).
    pub flip_rate: f64,
}

/// A candidate form of the backdoor in [`InnerSearch::ClassSearch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// Away from the true label (raise `CE(f(x + δ), y)`).
    Untargeted,
    /// To one class t (all-to-one).
    Class(i64),
    /// To the label shifted by k, `(y + k) mod C` (all-to-all).
    Shift(i64),
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Candidate::Untargeted => write!(f, "no single class"),
            Candidate::Class(t) => write!(f, "class {t}"),
            Candidate::Shift(k) => write!(f, "label shift y → y+{k}"),
        }
    }
}

/// Receives per-step and per-round reports (MLflow and progress bars implement it).
pub trait UnlearnObserver {
    /// After every outer step.
    fn on_step(&mut self, _report: &StepReport) {}
    /// After every round.
    fn on_round(&mut self, _report: &RoundReport) {}
    /// Whether to measure ACC/ASR after outer step `step` (0-based, over the run); needs an
    /// evaluation set. Reporting only: nothing is tuned on it.
    fn evaluate_after_step(&self, _step: usize) -> bool {
        false
    }
}

impl UnlearnObserver for () {}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Outer steps taken.
    pub steps: usize,
    /// Linear solves that failed (handled by the failure policy).
    pub solver_failures: usize,
    /// The first solver error, verbatim.
    pub first_solver_error: Option<String>,
    /// Outer steps skipped by the failure policy.
    pub skipped: usize,
    /// Operator applications (Hessian-vector products) in all linear solves.
    pub hvps: usize,
    /// Wall time per round.
    pub round_seconds: Vec<f64>,
    /// What [`InnerSearch::ClassSearch`] chose, per round, best first (empty for other
    /// searches).
    pub searches: Vec<Vec<SearchOutcome>>,
    /// [`StepReport::fixed_point_residual`] of every I-BAU step that has one, in order.
    pub fixed_point_residuals: Vec<f64>,
    /// [`StepReport::implicit_ratio`] of every step whose solve succeeded, in order.
    pub implicit_ratios: Vec<f64>,
    /// What [`UnlearnConfig::recalibrate`] did, when it ran and succeeded.
    pub recalibration: Option<RecalibrationReport>,
    /// Why [`UnlearnConfig::recalibrate`] was skipped, when its fit failed (non-finite logits
    /// of a diverged model, or no convergence): the model keeps its bias and the run its result.
    pub recalibration_failure: Option<String>,
}

/// What [`UnlearnConfig::recalibrate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecalibrationReport {
    /// The fitted offsets, now added to the output bias.
    pub fit: OffsetFit,
    /// ACC/ASR just before the offsets were added (the last round's), when an evaluation set
    /// was given.
    pub before: Option<Metrics>,
}

impl Summary {
    /// Median and maximum of [`Summary::fixed_point_residuals`] (`None` when there are none;
    /// the maximum is NaN when any residual is).
    pub fn fixed_point_residual_stats(&self) -> Option<(f64, f64)> {
        median_max(&self.fixed_point_residuals)
    }

    /// Median and maximum of [`Summary::implicit_ratios`], as
    /// [`Summary::fixed_point_residual_stats`].
    pub fn implicit_ratio_stats(&self) -> Option<(f64, f64)> {
        median_max(&self.implicit_ratios)
    }
}

/// Median and maximum (NaN when any value is NaN) of `values`; `None` when empty.
fn median_max(values: &[f64]) -> Option<(f64, f64)> {
    let mut r = values.to_vec();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let m = r.len() / 2;
    let median = if r.len() % 2 == 1 {
        r[m]
    } else {
        0.5 * (r[m - 1] + r[m])
    };
    let max = if r.iter().any(|x| x.is_nan()) {
        f64::NAN
    } else {
        r[r.len() - 1]
    };
    Some((median, max))
}

/// Cross-entropy in the logits' dtype (`f32` models use libtorch's fused kernel).
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits
        .f_log_softmax(-1, logits.kind())?
        .f_nll_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100)?)
}

/// The outer loss on `logits`: `CE(logits, y)`, mixed by `distill` with `CE(logits, soft)` when
/// the original model's probabilities on the unperturbed images, `soft`, are given.
fn outer_loss(logits: &Tensor, y: &Tensor, soft: Option<&Tensor>, distill: f64) -> Result<Tensor> {
    let hard = cross_entropy(logits, y)?;
    let Some(p0) = soft else { return Ok(hard) };
    let soft_ce = logits
        .f_log_softmax(-1, logits.kind())?
        .f_mul(p0)?
        .f_sum_dim_intlist(-1, false, logits.kind())?
        .f_mean(logits.kind())?
        .f_neg()?;
    Ok(hard
        .f_mul_scalar(1.0 - distill)?
        .f_add(&soft_ce.f_mul_scalar(distill)?)?)
}

/// `x + δ`, clipped to [0, 1] when `clamp`.
fn perturb(x: &Tensor, delta: &Tensor, clamp: bool) -> Result<Tensor> {
    let z = x.f_add(delta)?;
    Ok(if clamp { z.f_clamp(0.0, 1.0)? } else { z })
}

/// What the offsets are fitted on: the clean set, and with `deltas` (I-BAU's last round, for
/// [`Recalibration::CleanAndPerturbed`]) a copy of it perturbed, sample `i` by
/// `deltas[i mod k]`.
fn recalibration_set(clean: &Split, deltas: &[Tensor], clamp: bool) -> Result<Split> {
    if deltas.is_empty() {
        return Ok(clean.shallow_clone());
    }
    let device = clean.images.device();
    let which = Tensor::f_arange(clean.len() as i64, (Kind::Int64, device))?
        .f_remainder(deltas.len() as i64)?;
    let d = Tensor::f_cat(deltas, 0)?
        .f_to_device(device)?
        .f_index_select(0, &which)?;
    let perturbed = perturb(&clean.images, &d, clamp)?;
    Ok(Split {
        images: Tensor::f_cat(&[clean.images.shallow_clone(), perturbed], 0)?,
        labels: Tensor::f_cat(
            &[clean.labels.shallow_clone(), clean.labels.shallow_clone()],
            0,
        )?,
    })
}

/// Projects `delta` (in place, without recording gradients) onto the ball `‖δ‖₂ ≤ radius`.
fn project_l2(delta: &mut Tensor, radius: f64) -> Result<()> {
    let norm = delta.f_norm()?.f_double_value(&[])?;
    if norm > radius {
        let _ = delta.f_mul_scalar_(radius / norm)?;
    }
    Ok(())
}

/// The samples and labels a candidate is searched and scored on: all samples with their true
/// labels (untargeted) or shifted labels, or the samples outside class t labelled t.
fn candidate_set(
    x: &Tensor,
    y: &Tensor,
    candidate: Candidate,
    classes: i64,
) -> Result<(Tensor, Tensor)> {
    Ok(match candidate {
        Candidate::Untargeted => (x.shallow_clone(), y.shallow_clone()),
        Candidate::Class(t) => {
            let keep = y.f_ne(t)?.f_nonzero()?.f_squeeze_dim(1)?;
            let xs = x.f_index_select(0, &keep)?;
            let ys = xs.f_new_full([keep.size()[0]], t, (Kind::Int64, x.device()))?;
            (xs, ys)
        }
        Candidate::Shift(k) => (x.shallow_clone(), y.f_add_scalar(k)?.f_remainder(classes)?),
    })
}

/// Fraction of `xs` that `delta` flips: away from `ys` (untargeted), else to `ys`.
fn flip_rate(
    model: &Model,
    xs: &Tensor,
    ys: &Tensor,
    delta: &Tensor,
    candidate: Candidate,
    clamp: bool,
) -> Result<f64> {
    tch::no_grad(|| -> Result<f64> {
        let pred = model
            .forward_t(&perturb(xs, delta, clamp)?, false)
            .f_argmax(-1, false)?;
        let hit = match candidate {
            Candidate::Untargeted => pred.f_ne_tensor(ys)?,
            _ => pred.f_eq_tensor(ys)?,
        };
        Ok(hit
            .f_to_kind(Kind::Double)?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?)
    })
}

/// The search's inner loop for one candidate and radius: `search.steps` normalised gradient
/// steps from δ = 0, each projected onto `‖δ‖₂ ≤ radius`.
fn optimise_delta(
    model: &Model,
    xs: &Tensor,
    ys: &Tensor,
    candidate: Candidate,
    radius: f64,
    search: &ClassSearch,
    clamp: bool,
) -> Result<Tensor> {
    let mut shape = xs.size();
    shape[0] = 1;
    let start = Tensor::f_zeros(shape.as_slice(), (Kind::Float, xs.device()))?;
    let steps = (search.steps, search.step_fraction);
    ascend_delta(model, (xs, ys), candidate, radius, steps, clamp, start)
}

/// `steps.0` normalised gradient steps of length `steps.1 · radius` from `start` on the search
/// objective of `candidate` over `set = (xs, ys)`, each projected onto `‖δ‖₂ ≤ radius`.
fn ascend_delta(
    model: &Model,
    set: (&Tensor, &Tensor),
    candidate: Candidate,
    radius: f64,
    steps: (usize, f64),
    clamp: bool,
    start: Tensor,
) -> Result<Tensor> {
    let (xs, ys) = set;
    let mut delta = start;
    for step in 0..steps.0 {
        let d = delta.f_detach()?.f_set_requires_grad(true)?;
        let logits = model.forward_t(&perturb(xs, &d, clamp)?, false);
        // Ascent on CE(·, y) (untargeted) or on −CE(·, t) = mean log p_t (targeted).
        let loss = match candidate {
            Candidate::Untargeted => cross_entropy(&logits, ys)?,
            _ => cross_entropy(&logits, ys)?.f_neg()?,
        };
        let g = Tensor::f_run_backward(&[&loss], &[&d], false, false)?;
        let gn = g[0].f_norm()?.f_double_value(&[])?;
        if !gn.is_finite() {
            return Err(Error::Config(format!(
                "the perturbation search's gradient is not finite (step {step}, radius {radius})"
            )));
        }
        if gn == 0.0 {
            break;
        }
        delta = tch::no_grad(|| -> Result<Tensor> {
            let mut next = d
                .f_detach()?
                .f_add(&g[0].f_mul_scalar(steps.1 * radius / gn)?)?;
            project_l2(&mut next, radius)?;
            Ok(next)
        })?;
    }
    Ok(delta)
}

/// The number of classes `model` outputs, from one forward pass of the first image of `x`.
fn class_count(model: &Model, x: &Tensor) -> Result<i64> {
    tch::no_grad(|| -> Result<i64> { Ok(model.forward_t(&x.f_narrow(0, 0, 1)?, false).size()[1]) })
}

/// [`InnerSearch::ClassSearch`]: the round's perturbations (detached) and what was chosen, best
/// first — every candidate that reaches the threshold at the stopping radius, at most
/// `max_candidates`; else the single best over all radii.
fn class_search(
    model: &Model,
    clean: &Split,
    clamp: bool,
    search: &ClassSearch,
) -> Result<Vec<(Tensor, SearchOutcome)>> {
    let device = model.vs.device();
    let s = clean.slice(0, search.samples.min(clean.len()))?;
    let x = s.images.f_to_device(device)?;
    let y = s.labels.f_to_device(device)?;
    let classes = class_count(model, &x)?;
    let mut best: Option<(Tensor, SearchOutcome)> = None;
    for &radius in &search.radii {
        let mut here: Vec<(Tensor, SearchOutcome)> = Vec::new();
        let shift_candidates = if search.shifts { 1..classes } else { 0..0 };
        let candidates = std::iter::once(Candidate::Untargeted)
            .chain((0..classes).map(Candidate::Class))
            .chain(shift_candidates.map(Candidate::Shift));
        for candidate in candidates {
            let (xs, ys) = candidate_set(&x, &y, candidate, classes)?;
            if xs.size()[0] == 0 {
                continue;
            }
            let delta = optimise_delta(model, &xs, &ys, candidate, radius, search, clamp)?;
            let flip_rate = flip_rate(model, &xs, &ys, &delta, candidate, clamp)?;
            here.push((
                delta,
                SearchOutcome {
                    candidate,
                    radius,
                    flip_rate,
                },
            ));
        }
        // Best first; a stable sort keeps the candidates' order among equal rates.
        here.sort_by(|a, b| b.1.flip_rate.total_cmp(&a.1.flip_rate));
        let Some(top) = here.first() else { continue };
        if top.1.flip_rate >= search.flip_threshold {
            here.retain(|c| c.1.flip_rate >= search.flip_threshold);
            here.truncate(search.max_candidates);
            return Ok(here);
        }
        if best
            .as_ref()
            .is_none_or(|b| top.1.flip_rate > b.1.flip_rate)
        {
            best = here.into_iter().next();
        }
    }
    best.map(|b| vec![b])
        .ok_or_else(|| Error::Config("the perturbation search found no candidate".into()))
}

/// The round's universal perturbation δ (detached), by the authors' SGD pass.
fn perturbation(model: &Model, clean: &Split, cfg: &UnlearnConfig) -> Result<Tensor> {
    let device = model.vs.device();
    let mut delta =
        Tensor::f_zeros([1, 1, 28, 28], (Kind::Float, device))?.f_set_requires_grad(true)?;
    let n = clean.len();
    let mut i = 0;
    while i < n {
        let k = cfg.batch_size.min(n - i);
        let b = clean.slice(i, k)?;
        let x = b.images.f_to_device(device)?;
        let pseudo = tch::no_grad(|| model.forward_t(&x, false).f_argmax(-1, false))?;
        let loss = cross_entropy(
            &model.forward_t(&perturb(&x, &delta, cfg.clamp)?, false),
            &pseudo,
        )?
        .f_neg()?
        .f_add(
            &delta
                .f_square()?
                .f_sum(Kind::Float)?
                .f_mul_scalar(cfg.reg)?,
        )?;
        let g = Tensor::f_run_backward(&[&loss], &[&delta], false, false)?;
        tch::no_grad(|| -> Result<()> {
            let step = g[0].f_mul_scalar(cfg.inner_lr)?;
            let _ = delta.f_sub_(&step)?;
            if let Some(r) = cfg.projection {
                project_l2(&mut delta, r)?;
            }
            Ok(())
        })?;
        i += k;
    }
    Ok(delta.f_detach()?)
}

/// One mask `[k, 1, 1, 1]` per perturbation: sample `chosen[i]` of a batch of `k` gets
/// perturbation `i mod m`.
fn candidate_masks(chosen: &Tensor, k: usize, m: usize, device: Device) -> Result<Vec<Tensor>> {
    let n = chosen.size()[0];
    (0..m as i64)
        .map(|j| -> Result<Tensor> {
            let mask = Tensor::f_zeros([k as i64], (Kind::Float, Device::Cpu))?;
            // Fewer perturbed samples than perturbations: the last ones get none.
            let mask = if j < n {
                let mine = Tensor::f_arange_start_step(j, n, m as i64, (Kind::Int64, Device::Cpu))?;
                mask.f_index_fill(0, &chosen.f_index_select(0, &mine)?, 1.0)?
            } else {
                mask
            };
            Ok(mask.f_view([k as i64, 1, 1, 1])?.f_to_device(device)?)
        })
        .collect()
}

/// Sets the gradients of `params` to `grads` and takes one optimizer step.
fn apply_gradient(
    opt: &mut tch::nn::Optimizer,
    params: &[Tensor],
    grads: &TensorList,
) -> Result<()> {
    let mut surrogate = Tensor::f_zeros([], (Kind::Float, params[0].device()))?;
    for (p, g) in params.iter().zip(grads.tensors()) {
        surrogate = surrogate.f_add(&p.f_mul(&g.f_detach()?)?.f_sum(Kind::Float)?)?;
    }
    opt.zero_grad();
    surrogate.f_backward()?;
    opt.step();
    Ok(())
}

/// What every outer step of a round shares.
struct Step<'a> {
    model: &'a Model,
    params: &'a [Tensor],
    cfg: &'a UnlearnConfig,
    core_params: &'a ibau_core::Params,
    /// The first clean batch, on which the inner objective G is evaluated (as the authors do).
    first: &'a Split,
    /// The round's perturbations δ (one, or one per class-search candidate).
    deltas: &'a [Tensor],
    /// [`InnerObjective::Search`]: one term of G per perturbation (else the authors' G).
    search_objective: Option<&'a [SearchTerm]>,
}

/// One candidate's term of [`InnerObjective::Search`]'s G:
/// `sign·CE(f(x + δ), y) + (mu/2)‖δ‖²`.
struct SearchTerm {
    x: Tensor,
    y: Tensor,
    sign: f64,
    mu: f64,
}

impl SearchTerm {
    /// Sets μ to the ball constraint's KKT multiplier at `delta`:
    /// `max(0, −⟨∇_δ sign·CE, δ⟩ / ‖δ‖²)` (0 at δ = 0).
    fn set_multiplier(&mut self, model: &Model, delta: &Tensor, clamp: bool) -> Result<()> {
        let d = delta.f_detach()?.f_set_requires_grad(true)?;
        let loss = cross_entropy(
            &model.forward_t(&perturb(&self.x, &d, clamp)?, false),
            &self.y,
        )?
        .f_mul_scalar(self.sign)?;
        let g = Tensor::f_run_backward(&[&loss], &[&d], false, false)?;
        let dd = delta.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let gd = g[0]
            .f_mul(delta)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
        self.mu = if dd > 0.0 { (-gd / dd).max(0.0) } else { 0.0 };
        Ok(())
    }
}

/// The terms of [`InnerObjective::Search`]'s G for the chosen candidates and their δ, on the
/// first clean batch `first`, with each multiplier μ from the search's end point.
fn search_terms(
    model: &Model,
    first: &Split,
    chosen: &[SearchOutcome],
    deltas: &[Tensor],
    clamp: bool,
) -> Result<Vec<SearchTerm>> {
    let classes = class_count(model, &first.images)?;
    chosen
        .iter()
        .zip(deltas)
        .map(|(c, delta)| -> Result<SearchTerm> {
            let (x, y) = candidate_set(&first.images, &first.labels, c.candidate, classes)?;
            if x.size()[0] == 0 {
                return Err(Error::Config(format!(
                    "inner_objective = \"search\": the first clean batch has no sample for \
                     the candidate {}",
                    c.candidate
                )));
            }
            let sign = match c.candidate {
                Candidate::Untargeted => -1.0,
                _ => 1.0,
            };
            let mut term = SearchTerm {
                x,
                y,
                sign,
                mu: 0.0,
            };
            term.set_multiplier(model, delta, clamp)?;
            Ok(term)
        })
        .collect()
}

/// One outer step's mini-batch.
struct Batch<'a> {
    /// Its size.
    k: usize,
    x: &'a Tensor,
    y: &'a Tensor,
    /// The original model's probabilities on `x` (self-distillation), if used.
    soft: Option<&'a Tensor>,
}

/// The fine-tune-only ablation's gradient: the outer loss on the unperturbed batch.
fn fine_tune_gradient(
    step: &Step<'_>,
    batch: &Batch<'_>,
    report: &mut StepReport,
) -> Result<Option<TensorList>> {
    let og = outer_gradients(
        |_w, _l| {
            outer_loss(
                &step.model.forward_t(batch.x, false),
                batch.y,
                batch.soft,
                step.cfg.distill,
            )
        },
        step.deltas,
        step.params,
    )?;
    report.outer_loss = og.value;
    Ok(Some(og.grad_lambda))
}

/// I-BAU's outer gradient for one batch: the implicit hypergradient of the outer loss on the
/// perturbed batch through the fixed point of Φ = δ − α∇_δG, solved by the core from
/// `warm` (the previous step's `v`, when warm starts are on). Returns the gradient to apply
/// (`None`: skip the step) and the `v` to start the next solve from. A failed solve is
/// counted, reported and handled by [`UnlearnConfig::on_solver_failure`].
fn ibau_gradient(
    step: &Step<'_>,
    batch: &Batch<'_>,
    warm: Option<TensorList>,
    summary: &mut Summary,
    report: &mut StepReport,
) -> Result<(Option<TensorList>, Option<TensorList>)> {
    let (cfg, model) = (step.cfg, step.model);
    let k = batch.k;
    let device = model.vs.device();
    let n_pert = ((k as f64 * cfg.perturb_fraction) as usize).max(1);
    let chosen =
        Tensor::f_randperm(k as i64, (Kind::Int64, Device::Cpu))?.f_narrow(0, 0, n_pert as i64)?;
    // The perturbed samples take the perturbations in turn (all of them the one δ when there
    // is one).
    let masks = candidate_masks(&chosen, k, step.deltas.len(), device)?;
    let outer = |w: &[Tensor], _l: &[Tensor]| -> Result<Tensor> {
        let mut shift = masks[0].f_mul(&w[0])?;
        for (m, wj) in masks.iter().zip(w).skip(1) {
            shift = shift.f_add(&m.f_mul(wj)?)?;
        }
        outer_loss(
            &model.forward_t(&perturb(batch.x, &shift, cfg.clamp)?, false),
            batch.y,
            batch.soft,
            cfg.distill,
        )
    };
    // G of the stacked perturbations: the authors' G of each (or the search's), averaged.
    let first = step.first;
    let inner = |w: &[Tensor], _l: &[Tensor]| -> Result<Tensor> {
        let terms = w
            .iter()
            .enumerate()
            .map(|(j, wj)| -> Result<Tensor> {
                let square = wj.f_square()?.f_sum(Kind::Float)?;
                Ok(match step.search_objective {
                    Some(search) => {
                        let t = &search[j];
                        cross_entropy(
                            &model.forward_t(&perturb(&t.x, wj, cfg.clamp)?, false),
                            &t.y,
                        )?
                        .f_mul_scalar(t.sign)?
                        .f_add(&square.f_mul_scalar(0.5 * t.mu)?)?
                    }
                    None => cross_entropy(
                        &model.forward_t(&first.images.f_add(wj)?, false),
                        &first.labels,
                    )?
                    .f_neg()?
                    .f_add(&square.f_mul_scalar(cfg.reg)?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_stack(&terms, 0)?.f_mean(Kind::Float)?)
    };
    let closed_form = match (cfg.second_order, step.search_objective) {
        (SecondOrder::Autograd, _) | (_, Some(_)) => None,
        _ => PiecewiseLinearMap::new(
            model,
            &first.images,
            &first.labels,
            step.deltas,
            step.params,
            cfg.reg,
            cfg.fp_alpha,
        )?,
    };
    let map: Box<dyn LinearisedMap> = match closed_form {
        Some(map) => Box::new(map),
        None => Box::new(GradientDescentMap::new(
            inner,
            step.deltas,
            step.params,
            cfg.fp_alpha,
        )?),
    };
    let delta_norm = TensorList::detached_copy(step.deltas)?.norm();
    if delta_norm > 0.0 {
        let residual = cfg.fp_alpha * map.inner_gradient()?.norm() / delta_norm;
        report.fixed_point_residual = Some(residual);
        summary.fixed_point_residuals.push(residual);
    }
    let og = outer_gradients(outer, step.deltas, step.params)?;
    report.outer_loss = og.value;
    if !cfg.implicit_term {
        return Ok((Some(og.grad_lambda), None));
    }
    let direct = og.grad_lambda.clone();
    match map.hypergradient(og, step.core_params, warm.as_ref(), &mut ()) {
        Ok(hg) => {
            summary.hvps += hg.info.operator_applications + 1;
            let direct_norm = direct.norm();
            if direct_norm > 0.0 {
                let mut implicit = hg.gradient.clone();
                implicit.axpy(-1.0, &direct);
                let ratio = implicit.norm() / direct_norm;
                report.implicit_ratio = Some(ratio);
                summary.implicit_ratios.push(ratio);
            }
            report.solver = Some(hg.info);
            Ok((Some(hg.gradient), Some(hg.v)))
        }
        Err(e) => {
            summary.hvps += map.applications();
            summary.solver_failures += 1;
            report.solver_error = Some(e.to_string());
            if summary.first_solver_error.is_none() {
                summary.first_solver_error = Some(e.to_string());
            }
            match cfg.on_solver_failure {
                FailurePolicy::DirectGradient => Ok((Some(direct), None)),
                FailurePolicy::Skip => Ok((None, None)),
                FailurePolicy::Abort => Err(e),
            }
        }
    }
}

/// Unlearns `model` on the clean set with `cfg`. With `eval = Some((split, attack))`, ACC/ASR
/// are measured after every round (reporting only — nothing is tuned on it).
///
/// # Errors
/// [`Error::Config`] for an invalid config; libtorch errors; the core's error under
/// [`FailurePolicy::Abort`].
pub fn unlearn(
    model: &Model,
    clean: &Split,
    cfg: &UnlearnConfig,
    eval: Option<(&Split, &Attack)>,
    observer: &mut dyn UnlearnObserver,
) -> Result<Summary> {
    cfg.validate()?;
    if cfg.second_order == SecondOrder::PiecewiseLinear && !model.is_piecewise_linear() {
        return Err(Error::Config(format!(
            "second_order = \"piecewise-linear\" needs a piecewise-linear model; the {:?} is \
             not (use \"auto\" or \"autograd\")",
            model.arch
        )));
    }
    if clean.is_empty() {
        return Err(Error::Config("the clean set is empty".into()));
    }
    let device = model.vs.device();
    let params = model.parameters();
    let mut opt = match cfg.optimizer {
        OuterOptimizer::Adam => Adam::default().build(&model.vs, cfg.outer_lr)?,
        OuterOptimizer::Sgd { momentum } => Sgd {
            momentum,
            ..Default::default()
        }
        .build(&model.vs, cfg.outer_lr)?,
    };
    let n = clean.len();
    let b = cfg.batch_size.min(n);
    let first = clean.slice(0, b)?.to_device(device)?;
    let core_params = cfg.core_params();
    let mut summary = Summary::default();
    let mut warm: Option<TensorList> = None;
    let step_eval = match eval {
        Some((split, attack)) => {
            Some((split.slice(0, STEP_EVAL_SAMPLES.min(split.len()))?, attack))
        }
        None => None,
    };
    // The original model's probabilities on the clean set, for self-distillation.
    let teacher = if cfg.distill > 0.0 {
        Some(map_logits(model, &clean.images, 500, |logits| {
            Ok(logits.f_softmax(-1, Kind::Float)?)
        })?)
    } else {
        None
    };
    tch::manual_seed(crate::attacks::derive_seed(cfg.seed, "unlearn"));
    let mut last_metrics = None;
    let mut last_deltas: Vec<Tensor> = Vec::new();
    for round in 0..cfg.rounds {
        let start = Instant::now();
        let (deltas, search): (Vec<Tensor>, Vec<SearchOutcome>) = match (cfg.method, &cfg.inner) {
            (Method::Ibau, InnerSearch::Sgd) => (vec![perturbation(model, clean, cfg)?], vec![]),
            (Method::Ibau, InnerSearch::ClassSearch(search)) => {
                class_search(model, clean, cfg.clamp, search)?
                    .into_iter()
                    .unzip()
            }
            (Method::FineTune, _) => (
                vec![Tensor::f_zeros([1, 1, 28, 28], (Kind::Float, device))?],
                vec![],
            ),
        };
        let mut deltas = deltas;
        let searching = cfg.inner_objective == InnerObjective::Search && cfg.method == Method::Ibau;
        let mut terms = if searching {
            Some(search_terms(model, &first, &search, &deltas, cfg.clamp)?)
        } else {
            None
        };
        for _epoch in 0..cfg.epochs_per_round {
            let perm = Tensor::f_randperm(n as i64, (Kind::Int64, Device::Cpu))?;
            let mut i = 0;
            while i < n {
                let k = b.min(n - i);
                let idx = perm.f_narrow(0, i as i64, k as i64)?;
                i += k;
                let x = clean.images.f_index_select(0, &idx)?.f_to_device(device)?;
                let y = clean.labels.f_index_select(0, &idx)?.f_to_device(device)?;
                let soft = match &teacher {
                    Some(t) => Some(t.f_index_select(0, &idx.f_to_device(device)?)?),
                    None => None,
                };
                let mut report = StepReport {
                    round,
                    step: summary.steps,
                    outer_loss: f64::NAN,
                    gradient_norm: f64::NAN,
                    solver: None,
                    solver_error: None,
                    fixed_point_residual: None,
                    implicit_ratio: None,
                    metrics: None,
                };
                let batch = Batch {
                    k,
                    x: &x,
                    y: &y,
                    soft: soft.as_ref(),
                };
                if let (Some(t), true) = (terms.as_mut(), cfg.track_steps > 0) {
                    // δ follows δ*(θ): a few search steps from where it is, then a fresh μ.
                    deltas = deltas
                        .into_iter()
                        .zip(t.iter().zip(&search))
                        .map(|(d, (t, c))| {
                            let steps = (cfg.track_steps, cfg.track_step_fraction);
                            ascend_delta(
                                model,
                                (&t.x, &t.y),
                                c.candidate,
                                c.radius,
                                steps,
                                cfg.clamp,
                                d,
                            )
                        })
                        .collect::<Result<Vec<_>>>()?;
                    for (term, d) in t.iter_mut().zip(&deltas) {
                        term.set_multiplier(model, d, cfg.clamp)?;
                    }
                }
                let step = Step {
                    model,
                    params: &params,
                    cfg,
                    core_params: &core_params,
                    first: &first,
                    deltas: &deltas,
                    search_objective: terms.as_deref(),
                };
                let grads = match cfg.method {
                    Method::FineTune => fine_tune_gradient(&step, &batch, &mut report)?,
                    Method::Ibau => {
                        let start_v = if cfg.warm_start { warm.take() } else { None };
                        let (grads, v) =
                            ibau_gradient(&step, &batch, start_v, &mut summary, &mut report)?;
                        warm = v;
                        grads
                    }
                };
                match grads {
                    Some(mut g) => {
                        let norm = g.norm();
                        if let Some(c) = cfg.clip_grad_norm.filter(|c| norm > *c) {
                            g.scale(c / norm);
                        }
                        report.gradient_norm = norm;
                        apply_gradient(&mut opt, &params, &g)?;
                    }
                    None => summary.skipped += 1,
                }
                if let (Some(e), true) = (&step_eval, observer.evaluate_after_step(summary.steps)) {
                    report.metrics = Some(evaluate(model, &e.0, e.1)?);
                }
                observer.on_step(&report);
                summary.steps += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        summary.round_seconds.push(seconds);
        let metrics = match eval {
            Some((split, attack)) => Some(evaluate(model, split, attack)?),
            None => None,
        };
        last_metrics = metrics;
        last_deltas = deltas.iter().map(|d| d.detach()).collect();
        let report = RoundReport {
            round,
            delta_norm: deltas[0].f_norm()?.f_double_value(&[])?,
            seconds,
            metrics,
            search,
        };
        observer.on_round(&report);
        if !report.search.is_empty() {
            summary.searches.push(report.search);
        }
    }
    if cfg.recalibrate != Recalibration::Off {
        let deltas =
            if cfg.method == Method::Ibau && cfg.recalibrate == Recalibration::CleanAndPerturbed {
                &last_deltas[..]
            } else {
                &[]
            };
        let set = recalibration_set(clean, deltas, cfg.clamp)?;
        match recalibrate_output_bias(model, &set.images, &set.labels) {
            Ok(fit) => {
                summary.recalibration = Some(RecalibrationReport {
                    fit,
                    before: last_metrics,
                })
            }
            // The model is left as the rounds made it; the run's result stands.
            Err(e @ (Error::NonFinite { .. } | Error::NotConverged { .. })) => {
                summary.recalibration_failure = Some(e.to_string())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_residual_stats_are_median_and_max() {
        let mut s = Summary::default();
        assert_eq!(s.fixed_point_residual_stats(), None);
        s.fixed_point_residuals = vec![3.0, 1.0, 2.0];
        assert_eq!(s.fixed_point_residual_stats(), Some((2.0, 3.0)));
        s.fixed_point_residuals.push(10.0);
        assert_eq!(s.fixed_point_residual_stats(), Some((2.5, 10.0)));
        s.fixed_point_residuals.push(f64::NAN);
        let (_, max) = s.fixed_point_residual_stats().unwrap();
        assert!(max.is_nan());
    }

    /// `search_terms`' μ is the ball constraint's KKT multiplier: where it is positive, the
    /// gradient of `G_j = s·CE + (μ/2)‖δ‖²` at δ has no radial component (⟨∇G_j, δ⟩ = 0), and
    /// μ is 0 exactly when `s·CE` does not decrease outwards.
    #[test]
    fn search_terms_multiplier_cancels_the_radial_gradient() {
        tch::manual_seed(7);
        let model = Model::new(crate::models::Arch::Cnn, Device::Cpu);
        let images = Tensor::rand([12, 1, 28, 28], (Kind::Float, Device::Cpu));
        let labels = Tensor::arange(12, (Kind::Int64, Device::Cpu)).remainder(10);
        let first = Split { images, labels };
        let mut radial_checked = 0;
        for candidate in [
            Candidate::Class(0),
            Candidate::Class(3),
            Candidate::Untargeted,
            Candidate::Shift(1),
        ] {
            // δ = ∓0.5·g₀/‖g₀‖ with g₀ the gradient of s·CE at δ = 0: against it s·CE decreases
            // outwards (μ > 0), along it it increases (μ = 0).
            let (x, y) = candidate_set(&first.images, &first.labels, candidate, 10).unwrap();
            let sign = if candidate == Candidate::Untargeted {
                -1.0
            } else {
                1.0
            };
            let z =
                Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let l0 = cross_entropy(
                &model.forward_t(&perturb(&x, &z, false).unwrap(), false),
                &y,
            )
            .unwrap()
            .f_mul_scalar(sign)
            .unwrap();
            let g0 = Tensor::run_backward(&[&l0], &[&z], false, false)
                .pop()
                .unwrap();
            let unit = g0.f_div_scalar(f64::try_from(g0.norm()).unwrap()).unwrap();
            for direction in [-0.5, 0.5] {
                let delta = unit.f_mul_scalar(direction).unwrap();
                let chosen = [SearchOutcome {
                    candidate,
                    radius: 1.0,
                    flip_rate: 1.0,
                }];
                let terms =
                    search_terms(&model, &first, &chosen, &[delta.shallow_clone()], false).unwrap();
                let t = &terms[0];
                assert!(t.mu >= 0.0, "{candidate}: μ = {}", t.mu);
                let d = delta.detach().set_requires_grad(true);
                let g = cross_entropy(
                    &model.forward_t(&perturb(&t.x, &d, false).unwrap(), false),
                    &t.y,
                )
                .unwrap()
                .f_mul_scalar(t.sign)
                .unwrap()
                .f_add(
                    &d.square()
                        .sum(Kind::Float)
                        .f_mul_scalar(0.5 * t.mu)
                        .unwrap(),
                )
                .unwrap();
                let grad = Tensor::run_backward(&[&g], &[&d], false, false);
                let radial =
                    f64::try_from(grad[0].f_mul(&delta).unwrap().sum(Kind::Double)).unwrap();
                let scale =
                    f64::try_from(grad[0].norm()).unwrap() * f64::try_from(delta.norm()).unwrap();
                if t.mu > 0.0 {
                    radial_checked += 1;
                    assert!(
                        radial.abs() <= 1e-4 * scale.max(1e-12),
                        "{candidate}: ⟨∇G, δ⟩ = {radial}"
                    );
                } else {
                    assert!(radial >= 0.0, "{candidate}: μ = 0 but ⟨∇G, δ⟩ = {radial}");
                }
            }
        }
        // Against g₀ (a short step) s·CE still decreases outwards for every candidate.
        assert_eq!(radial_checked, 4);
    }

    /// A random CNN, 12 random images, and the tuned preset cut to one pass of two steps with a
    /// class search at radius 1 that keeps up to `max_candidates` candidates.
    fn tiny_search_run(seed: i64, max_candidates: usize) -> (Model, Split, UnlearnConfig) {
        tch::manual_seed(seed);
        let model = Model::new(crate::models::Arch::Cnn, Device::Cpu);
        let clean = Split {
            images: Tensor::rand([12, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::arange(12, (Kind::Int64, Device::Cpu)).remainder(10),
        };
        let cfg = UnlearnConfig {
            batch_size: 6,
            epochs_per_round: 1,
            inner: InnerSearch::ClassSearch(ClassSearch {
                radii: vec![1.0],
                steps: 2,
                step_fraction: 0.25,
                flip_threshold: 0.0,
                samples: 12,
                shifts: false,
                max_candidates,
            }),
            ..UnlearnConfig::tuned(100)
        };
        (model, clean, cfg)
    }

    /// With the search objective and tracking, every step either solves (and reports the
    /// implicit term's size) or counts a failure; without the implicit term no solve runs.
    #[test]
    fn the_implicit_term_ablation_skips_the_solve() {
        let (model, clean, cfg) = tiny_search_run(11, 1);
        let mut cfg = UnlearnConfig {
            inner_objective: InnerObjective::Search,
            track_steps: 1,
            ..cfg
        };
        let with = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        assert_eq!(with.steps, 2);
        assert_eq!(with.implicit_ratios.len() + with.solver_failures, 2);
        assert!(with.hvps > 0);
        cfg.implicit_term = false;
        let without = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        assert_eq!(
            (without.steps, without.hvps, without.solver_failures),
            (2, 0, 0)
        );
        assert!(without.implicit_ratios.is_empty());
        assert_eq!(without.fixed_point_residuals.len(), 2);
    }

    #[test]
    fn recalibration_set_is_half_clean_half_perturbed_in_turn() {
        let clean = Split {
            images: Tensor::full([5, 1, 28, 28], 0.5, (Kind::Float, Device::Cpu)),
            labels: Tensor::from_slice(&[3i64, 1, 4, 1, 5]),
        };
        let deltas = [
            Tensor::full([1, 1, 28, 28], 0.25, (Kind::Float, Device::Cpu)),
            Tensor::full([1, 1, 28, 28], 0.75, (Kind::Float, Device::Cpu)),
        ];
        let set = recalibration_set(&clean, &deltas, true).unwrap();
        assert_eq!(set.images.size(), [10, 1, 28, 28]);
        assert_eq!(
            Vec::<i64>::try_from(&set.labels).unwrap(),
            [3, 1, 4, 1, 5, 3, 1, 4, 1, 5]
        );
        // Clean first, then 0.5 + δ_{i mod 2}, clipped to [0, 1].
        let want = [0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 1.0, 0.75, 1.0, 0.75];
        for (i, w) in want.iter().enumerate() {
            let x = set.images.get(i as i64);
            let (lo, hi) = (
                f64::try_from(x.min()).unwrap(),
                f64::try_from(x.max()).unwrap(),
            );
            assert!(
                (lo - w).abs() <= 0.0 && (hi - w).abs() <= 0.0,
                "{i}: {lo}..{hi}, want {w}"
            );
        }
        let plain = recalibration_set(&clean, &[], true).unwrap();
        assert_eq!(plain.images.size(), [5, 1, 28, 28]);
    }

    /// After a run with `recalibrate` the model's logits on the clean set meet the offsets'
    /// first-order condition, mean softmax = class frequencies − λ·b (fine-tuning: no δ, so the
    /// offsets are fitted on the clean set alone); without it there is no recalibration.
    #[test]
    fn recalibration_leaves_the_clean_set_calibrated() {
        tch::manual_seed(5);
        let model = Model::new(crate::models::Arch::Cnn, Device::Cpu);
        let clean = Split {
            images: Tensor::rand([30, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::arange(30, (Kind::Int64, Device::Cpu)).remainder(3),
        };
        let mut cfg = UnlearnConfig {
            method: Method::FineTune,
            batch_size: 10,
            epochs_per_round: 1,
            ..UnlearnConfig::tuned(100)
        };
        let plain = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        assert!(plain.recalibration.is_none());
        cfg.recalibrate = Recalibration::CleanAndPerturbed;
        let summary = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        let RecalibrationReport { fit, before } = summary.recalibration.expect("a recalibration");
        assert!(before.is_none(), "no evaluation set was given");
        assert_eq!(fit.samples, 30, "fine-tuning fits on the clean set alone");
        assert!(fit.loss_after <= fit.loss_before);
        let p = model
            .forward_t(&clean.images, false)
            .softmax(-1, Kind::Double)
            .mean_dim(0, false, Kind::Double);
        let b = Tensor::from_slice(&fit.offsets);
        let freq = Tensor::from_slice(&[
            1.0 / 3.0,
            1.0 / 3.0,
            1.0 / 3.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ]);
        let condition = p - freq + b.f_mul_scalar(crate::recalibrate::RIDGE).unwrap();
        let worst = f64::try_from(condition.abs().max()).unwrap();
        assert!(worst <= 1e-5, "first-order condition off by {worst}");
        // The absent classes 3..9 are pushed down.
        assert!(
            fit.offsets[3..].iter().all(|o| *o < fit.offsets[0]),
            "{:?}",
            fit.offsets
        );
    }

    /// I-BAU fits the offsets on the clean set and its perturbed copy, or on the clean set alone
    /// with [`Recalibration::Clean`].
    #[test]
    fn ibau_recalibrates_on_the_perturbed_copy_too() {
        let (model, clean, cfg) = tiny_search_run(13, 2);
        let mut cfg = UnlearnConfig {
            recalibrate: Recalibration::CleanAndPerturbed,
            ..cfg
        };
        let both = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        assert_eq!(both.recalibration.expect("recalibrated").fit.samples, 24);
        cfg.recalibrate = Recalibration::Clean;
        let alone = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
        assert_eq!(alone.recalibration.expect("recalibrated").fit.samples, 12);
    }

    /// A copy of `init` after a `paper`-like run of two steps on `clean` with `second`. Every
    /// sample is perturbed and each step sees the whole set, so the run's result does not
    /// depend on what `unlearn` draws from libtorch's global generator (which tests running in
    /// parallel share and can advance in between); the three runs start from copies of one
    /// model. The model and data themselves are drawn after `manual_seed(21)` and may differ if
    /// another test draws in between: the comparison holds for any draw.
    fn paper_run(init: &Model, clean: &Split, second: SecondOrder) -> (Summary, TensorList) {
        let mut model = Model::new(crate::models::Arch::Cnn, Device::Cpu);
        model.vs.copy(&init.vs).unwrap();
        let cfg = UnlearnConfig {
            rounds: 1,
            epochs_per_round: 2,
            batch_size: clean.len(),
            perturb_fraction: 1.0,
            // G = −CE + 10‖δ‖² and α = 0.04: Jᵀ = 0.2·I + 0.04·∇²CE contracts, so that the
            // solves run all K steps (the authors' reg and α diverge on this random model).
            reg: 10.0,
            fp_alpha: 0.04,
            second_order: second,
            ..UnlearnConfig::paper()
        };
        let summary = unlearn(&model, clean, &cfg, None, &mut ()).unwrap();
        (
            summary,
            TensorList::detached_copy(&model.parameters()).unwrap(),
        )
    }

    #[test]
    fn the_closed_form_and_double_backward_give_the_same_run() {
        tch::manual_seed(21);
        let init = Model::new(crate::models::Arch::Cnn, Device::Cpu);
        let clean = Split {
            images: Tensor::rand([20, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::arange(20, (Kind::Int64, Device::Cpu)).remainder(10),
        };
        let (auto, theta_auto) = paper_run(&init, &clean, SecondOrder::Auto);
        let (pl, theta_pl) = paper_run(&init, &clean, SecondOrder::PiecewiseLinear);
        let (ag, theta_ag) = paper_run(&init, &clean, SecondOrder::Autograd);
        assert_eq!((auto.steps, auto.solver_failures), (2, 0));
        assert_eq!(
            (auto.hvps, pl.hvps, auto.solver_failures),
            (ag.hvps, ag.hvps, ag.solver_failures)
        );
        assert_eq!(
            auto.hvps,
            2 * 5,
            "K − 1 = 4 Jᵀ products and one cross product per step"
        );
        let start = TensorList::detached_copy(&init.parameters()).unwrap();
        let mut moved = theta_ag.clone();
        moved.axpy(-1.0, &start);
        for theta in [&theta_auto, &theta_pl] {
            let mut d = theta.clone();
            d.axpy(-1.0, &theta_ag);
            // Against how far the two steps moved θ, not against ‖θ‖.
            let e = d.norm() / moved.norm();
            assert!(e <= 1e-4, "parameters differ by {e:e} of the step");
        }
        for (a, b) in auto.implicit_ratios.iter().zip(&ag.implicit_ratios) {
            assert!((a - b).abs() <= 1e-3 * b.abs(), "implicit ratio {a} vs {b}");
        }
        assert_eq!(auto.implicit_ratios.len(), 2);
        assert!(auto.implicit_ratios.iter().all(|r| *r > 0.0));
    }

    #[test]
    fn the_closed_form_is_refused_where_it_does_not_apply() {
        let mut c = UnlearnConfig::tuned(100);
        c.inner_objective = InnerObjective::Search;
        c.second_order = SecondOrder::PiecewiseLinear;
        assert!(
            c.validate().is_err(),
            "the search objective has no closed form"
        );
        c.second_order = SecondOrder::Auto;
        assert!(c.validate().is_ok());
        let vgg = Model::new(crate::models::Arch::Vgg, Device::Cpu);
        let clean = Split {
            images: Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
        };
        let cfg = UnlearnConfig {
            second_order: SecondOrder::PiecewiseLinear,
            ..UnlearnConfig::paper()
        };
        match unlearn(&vgg, &clean, &cfg, None, &mut ()) {
            Err(Error::Config(m)) => assert!(m.contains("piecewise-linear"), "{m}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn the_search_objective_needs_the_class_search() {
        let mut c = UnlearnConfig::paper();
        c.inner_objective = InnerObjective::Search;
        assert!(c.validate().is_err());
        let mut t = UnlearnConfig::tuned(100);
        t.track_steps = 3;
        assert!(t.validate().is_err(), "tracking needs the search objective");
        t.inner_objective = InnerObjective::Search;
        assert!(t.validate().is_ok());
        t.track_step_fraction = 0.0;
        assert!(t.validate().is_err());
    }

    #[test]
    fn candidate_sets_shift_labels_and_drop_the_target_class() {
        let x = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0]).view([4, 1, 1, 1]);
        let y = Tensor::from_slice(&[0i64, 3, 9, 3]);
        let labels = |t: &Tensor| Vec::<i64>::try_from(t).unwrap();
        let (xs, ys) = candidate_set(&x, &y, Candidate::Shift(1), 10).unwrap();
        assert_eq!(xs.size()[0], 4);
        assert_eq!(labels(&ys), vec![1, 4, 0, 4]);
        let (xs, ys) = candidate_set(&x, &y, Candidate::Class(3), 10).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&xs.flatten(0, -1)).unwrap(),
            vec![0.0, 2.0]
        );
        assert_eq!(labels(&ys), vec![3, 3]);
        let (_, ys) = candidate_set(&x, &y, Candidate::Untargeted, 10).unwrap();
        assert_eq!(labels(&ys), vec![0, 3, 9, 3]);
        assert_eq!(Candidate::Shift(1).to_string(), "label shift y → y+1");
    }

    #[test]
    fn candidate_masks_share_the_perturbed_samples_in_turn() {
        let rows = |m: &Tensor| -> Vec<i64> {
            Vec::<f32>::try_from(&m.flatten(0, -1))
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == 1.0)
                .map(|(i, _)| i as i64)
                .collect()
        };
        let chosen = Tensor::from_slice(&[3i64, 0, 4, 1]);
        let masks = candidate_masks(&chosen, 6, 2, Device::Cpu).unwrap();
        assert_eq!(masks.len(), 2);
        assert_eq!(masks[0].size(), vec![6, 1, 1, 1]);
        assert_eq!(rows(&masks[0]), vec![3, 4]);
        assert_eq!(rows(&masks[1]), vec![0, 1]);
        let one = candidate_masks(&chosen, 6, 1, Device::Cpu).unwrap();
        assert_eq!(rows(&one[0]), vec![0, 1, 3, 4]);
        // More perturbations than perturbed samples: the extra masks are empty.
        let many = candidate_masks(&chosen.narrow(0, 0, 1), 6, 3, Device::Cpu).unwrap();
        assert_eq!(rows(&many[0]), vec![3]);
        assert!(rows(&many[1]).is_empty() && rows(&many[2]).is_empty());
    }

    #[test]
    fn outer_loss_mixes_the_labels_with_the_original_models_probabilities() {
        tch::manual_seed(0);
        let logits = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 3, 1, 1, 2]);
        let value = |t: Tensor| t.double_value(&[]);
        let ce = value(cross_entropy(&logits, &y).unwrap());
        assert!((value(outer_loss(&logits, &y, None, 0.7).unwrap()) - ce).abs() <= 1e-12);
        // One-hot probabilities are the labels: any weight gives plain CE.
        let onehot = y.one_hot(4).to_kind(Kind::Float);
        for w in [0.0, 0.6, 1.0] {
            let l = value(outer_loss(&logits, &y, Some(&onehot), w).unwrap());
            assert!((l - ce).abs() <= 1e-6, "w = {w}: {l} vs {ce}");
        }
        // Uniform probabilities: weight 1 gives the mean negative log-probability over classes.
        let uniform = Tensor::full([5, 4], 0.25, (Kind::Float, Device::Cpu));
        let expected = value(logits.log_softmax(-1, Kind::Float).mean(Kind::Float).neg());
        let l = value(outer_loss(&logits, &y, Some(&uniform), 1.0).unwrap());
        assert!((l - expected).abs() <= 1e-6, "{l} vs {expected}");
        let half = value(outer_loss(&logits, &y, Some(&uniform), 0.5).unwrap());
        assert!((half - 0.5 * (ce + expected)).abs() <= 1e-6);
    }
}
