//! `ibau` — poison a model, unlearn its backdoor with I-BAU, evaluate, and sweep experiments.
//!
//! Run `ibau --help` (or `ibau <command> --help`) for the commands and their options.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ibau_plugin::attacks::{Attack, AttackKind};
use ibau_plugin::config::{ExperimentConfig, Preset};
use ibau_plugin::data::{self, Data, DatasetName};
use ibau_plugin::ibau::{
    self as ibau_loop, Candidate, Method, RoundReport, StepReport, UnlearnObserver,
};
use ibau_plugin::mlflow::{RunStatus, Tracker, TrackerConfig};
use ibau_plugin::models::{Arch, Model};
use ibau_plugin::plots::{self, CurvePoint};
use ibau_plugin::train::{self, Metrics, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;

const EXAMPLES: &str = "\
Examples:
  ibau demo                                   poison a CNN on MNIST, unlearn it, print ACC/ASR
  ibau train-poisoned --attack blended --out poisoned.safetensors
  ibau unlearn --model poisoned.safetensors --attack blended --clean-size 100 --preset tuned \\
               --out cleaned.safetensors
  ibau evaluate --model cleaned.safetensors --attack blended
  ibau sweep --datasets mnist,fashion-mnist --attacks badnets,blended,sig,all-to-all \\
             --clean-sizes 5000,100 --seeds 0,1,2 --out results.jsonl
  ibau --config experiment.toml unlearn --model poisoned.safetensors --out cleaned.safetensors";

#[derive(Parser, Debug)]
#[command(name = "ibau", version, about = "Adversarial unlearning of backdoors via implicit hypergradient (I-BAU)", after_help = EXAMPLES)]
struct Cli {
    /// Device to run on.
    #[arg(long, global = true, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// TOML experiment configuration (command-line options override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data folder (default: the workspace's data/, filled by scripts/setup).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Do not record runs in MLflow (by default: $MLFLOW_TRACKING_URI, else the embedded
    /// store in ./mlflow.db and ./mlruns).
    #[arg(long, global = true)]
    no_track: bool,
    /// With tracking: ACC/ASR every N outer steps on the first 1000 evaluation images, logged
    /// as `acc_step`/`asr_step` and plotted (0 = per round only).
    #[arg(long, global = true, default_value_t = 10)]
    eval_every: usize,
    /// For tuning: measure ACC/ASR on the defender's pool images that unlearning does not use
    /// (pool images clean-size … 5000) instead of the evaluation half, which then stays unseen.
    /// Needs --clean-size < 5000 (`unlearn`, `sweep`).
    #[arg(long, global = true)]
    holdout: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

/// Options that override the configuration file.
#[derive(Args, Debug, Clone, Default)]
struct Overrides {
    /// Data set.
    #[arg(long, value_enum)]
    dataset: Option<DatasetName>,
    /// Attack.
    #[arg(long, value_enum)]
    attack: Option<AttackKind>,
    /// Target class (0–9).
    #[arg(long)]
    target: Option<i64>,
    /// Fraction of the training set poisoned.
    #[arg(long)]
    poison_ratio: Option<f64>,
    /// Architecture.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Epochs of poisoned training.
    #[arg(long)]
    epochs: Option<usize>,
    /// Clean samples for the defender (1–5000).
    #[arg(long)]
    clean_size: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<i64>,
    /// Unlearning preset.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// I-BAU or the fine-tuning ablation.
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// Rounds of unlearning (overrides the preset).
    #[arg(long)]
    rounds: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on poisoned training data and save it (safetensors).
    TrainPoisoned {
        #[command(flatten)]
        o: Overrides,
        /// Where to save the model.
        #[arg(long)]
        out: PathBuf,
    },
    /// Unlearn a saved model's backdoor; print ACC/ASR before and after; save the result.
    Unlearn {
        #[command(flatten)]
        o: Overrides,
        /// The poisoned model.
        #[arg(long)]
        model: PathBuf,
        /// Where to save the cleaned model.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print ACC and ASR of a saved model.
    Evaluate {
        #[command(flatten)]
        o: Overrides,
        /// The model.
        #[arg(long)]
        model: PathBuf,
    },
    /// The main job: poison a CNN on MNIST (BadNets), unlearn with I-BAU and with the
    /// fine-tuning ablation, print ACC/ASR before/after.
    Demo {
        #[command(flatten)]
        o: Overrides,
    },
    /// List the recorded MLflow runs of experiment "ibau" (newest first).
    Runs {
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
    /// Send spooled MLflow records (from runs that could not reach the server) now.
    Sync,
    /// Run a grid of experiments, append one JSON line per run, print the mean ± sd table.
    ///
    /// Each grid point runs I-BAU and the fine-tuning ablation (`--method` runs only that one).
    /// The grid's lists replace the per-run options: `--dataset`, `--attack`, `--clean-size`,
    /// `--seed` and `--preset` are errors here.
    Sweep {
        /// Data sets (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "mnist")]
        datasets: Vec<DatasetName>,
        /// Attacks (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "badnets")]
        attacks: Vec<AttackKind>,
        /// Clean-set sizes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "5000")]
        clean_sizes: Vec<usize>,
        /// Seeds (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        seeds: Vec<i64>,
        /// Presets (comma-separated; default `paper`, or the configuration file's `[unlearn]`
        /// table when it has one).
        #[arg(long, value_enum, value_delimiter = ',')]
        presets: Option<Vec<Preset>>,
        /// Output file (JSON lines, appended).
        #[arg(long)]
        out: PathBuf,
        /// Folder caching the poisoned models.
        #[arg(long, default_value = "runs/models")]
        models: PathBuf,
        #[command(flatten)]
        o: Overrides,
    },
}

fn config(cli: &Cli, o: &Overrides) -> Result<ExperimentConfig> {
    let mut c = match &cli.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            ExperimentConfig::from_toml(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => ExperimentConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = o.$f { c.$f = v; } )* };
    }
    set!(
        dataset,
        attack,
        target,
        poison_ratio,
        arch,
        epochs,
        clean_size,
        seed,
        preset,
        method
    );
    if let Some(u) = c.unlearn.as_mut() {
        // An [unlearn] table (completed from the file's preset): the command line still overrides
        // its method and seed, and a preset cannot silently lose against it.
        if o.preset.is_some() {
            bail!("--preset conflicts with the [unlearn] table of the configuration file (remove one of them)");
        }
        if let Some(m) = o.method {
            u.method = m;
        }
        if let Some(s) = o.seed {
            u.seed = s;
        }
    }
    if let Some(r) = o.rounds {
        let mut u = c.unlearn_config();
        u.rounds = r;
        c.unlearn = Some(u);
    }
    c.validate()?;
    Ok(c)
}

fn device(cli: &Cli) -> Result<Device> {
    Ok(ibau_plugin::device(matches!(cli.device, DeviceArg::Cuda))?)
}

/// The images ACC/ASR are measured on: the evaluation half, or with `--holdout` the rest of the
/// defender's pool after the first `clean_size`.
fn evaluation_split(cli: &Cli, d: &Data, clean_size: usize) -> Result<data::Split> {
    if !cli.holdout {
        return Ok(d.eval.slice(0, d.eval.len())?);
    }
    let pool = d.clean_pool.len();
    if clean_size >= pool {
        bail!("--holdout needs --clean-size < {pool} (the held-out images are the rest of the defender's pool)");
    }
    Ok(d.clean_pool.slice(clean_size, pool - clean_size)?)
}

fn load_data(cli: &Cli, name: DatasetName) -> Result<Data> {
    let root = cli.data.clone().unwrap_or_else(data::default_root);
    Ok(data::load(name, &root)?)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// A line above the bar, or on stderr when the bar is hidden (not a terminal): `println` on a
/// hidden indicatif bar prints nothing.
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

fn train_poisoned(
    c: &ExperimentConfig,
    d: &Data,
    attack: &Attack,
    device: Device,
) -> Result<(Model, usize)> {
    let (poisoned, k) = attack.poison(&d.train, c.seed)?;
    tch::manual_seed(c.seed);
    let model = Model::new(c.arch, device);
    let tc = TrainConfig {
        epochs: c.epochs,
        batch_size: c.train_batch_size,
        lr: c.train_lr,
        seed: c.seed,
    };
    let pb = bar(0, "training");
    train::train(&model, &poisoned, &tc, |epoch, b, n, loss| {
        pb.set_length((n * tc.epochs) as u64);
        pb.set_position((epoch * n + b + 1) as u64);
        if b % 20 == 0 {
            pb.set_message(format!("training e{epoch} loss {loss:.3}"));
        }
    })?;
    pb.finish_and_clear();
    Ok((model, k))
}

struct Progress<'t> {
    pb: ProgressBar,
    failures: usize,
    tracker: Option<&'t mut Tracker>,
    eval_every: usize,
    curves: Curves,
}

/// ACC/ASR as the run went: after each round (whole evaluation split) and after every
/// `--eval-every` outer steps (its first 1000 images).
#[derive(Default)]
struct Curves {
    rounds: Vec<CurvePoint>,
    steps: Vec<CurvePoint>,
}

/// A tracking failure never stops unlearning: it is reported once and tracking goes on spooled.
fn track(r: ibau_plugin::Result<()>, warned: &mut bool) {
    if let Err(e) = r {
        if !*warned {
            eprintln!("warning: MLflow tracking: {e} (records stay in the spool; `ibau` goes on)");
            *warned = true;
        }
    }
}

impl UnlearnObserver for Progress<'_> {
    fn evaluate_after_step(&self, step: usize) -> bool {
        self.tracker.is_some() && self.eval_every > 0 && (step + 1).is_multiple_of(self.eval_every)
    }
    fn on_step(&mut self, r: &StepReport) {
        self.pb.inc(1);
        if let Some(x) = r.metrics {
            self.curves.steps.push(CurvePoint {
                x: (r.step + 1) as f64,
                acc: x.acc,
                asr: x.asr,
            });
        }
        if r.solver_error.is_some() {
            self.failures += 1;
        }
        if let Some(t) = self.tracker.as_deref_mut() {
            let step = r.step as i64;
            let mut m: Vec<(&str, f64)> = vec![
                ("outer_loss", r.outer_loss),
                ("gradient_norm", r.gradient_norm),
                (
                    "solver_failed",
                    if r.solver_error.is_some() { 1.0 } else { 0.0 },
                ),
            ];
            if let Some(x) = r.metrics {
                m.push(("acc_step", x.acc));
                m.push(("asr_step", x.asr));
            }
            if let Some(f) = r.fixed_point_residual {
                m.push(("fixed_point_residual", f));
            }
            if let Some(f) = r.implicit_ratio {
                m.push(("implicit_ratio", f));
            }
            if let Some(info) = &r.solver {
                m.push(("solver_iterations", info.iterations as f64));
                m.push(("solver_residual", info.residual));
                m.push(("solver_hvps", info.operator_applications as f64));
                m.push((
                    "solver_converged",
                    if info.termination == ibau_plugin::core::Termination::Converged {
                        1.0
                    } else {
                        0.0
                    },
                ));
                if let Some(b) = info.error_bound {
                    m.push(("solver_error_bound", b.value));
                }
            }
            let mut warned = true;
            track(t.log_metrics(&m, step + 1), &mut warned);
            if let Some(e) = &r.solver_error {
                track(t.set_tag("last_solver_error", e), &mut warned);
            }
        }
        if let Some(info) = &r.solver {
            self.pb.set_message(format!(
                "r{} loss {:.3} |g| {:.2e} solve: {} it, res {:.1e}, {}",
                r.round,
                r.outer_loss,
                r.gradient_norm,
                info.iterations,
                info.residual,
                info.termination
            ));
        }
    }
    fn on_round(&mut self, r: &RoundReport) {
        if let Some(x) = r.metrics {
            self.curves.rounds.push(CurvePoint {
                x: (r.round + 1) as f64,
                acc: x.acc,
                asr: x.asr,
            });
        }
        if let Some(t) = self.tracker.as_deref_mut() {
            let mut m: Vec<(&str, f64)> =
                vec![("delta_norm", r.delta_norm), ("round_seconds", r.seconds)];
            if let Some(x) = r.metrics {
                m.push(("acc", x.acc));
                m.push(("asr", x.asr));
            }
            if let Some(o) = r.search.first() {
                m.push(("search_candidates", r.search.len() as f64));
                m.push(("search_radius", o.radius));
                m.push(("search_flip_rate", o.flip_rate));
                // −1: untargeted; the class for all-to-one; 100 + k for the label shift by k.
                let code = match o.candidate {
                    Candidate::Untargeted => -1.0,
                    Candidate::Class(t) => t as f64,
                    Candidate::Shift(k) => (100 + k) as f64,
                };
                m.push(("search_target", code));
            }
            let mut warned = true;
            track(t.log_metrics(&m, r.round as i64 + 1), &mut warned);
        }
        if let Some(o) = r.search.first() {
            let also: String = r.search[1..]
                .iter()
                .map(|c| format!("; also {} ({:.1} %)", c.candidate, 100.0 * c.flip_rate))
                .collect();
            say(
                &self.pb,
                format!(
                    "  round {}: δ found for {} at radius {} (flips {:.1} % of the search samples){also}",
                    r.round + 1,
                    o.candidate,
                    o.radius,
                    100.0 * o.flip_rate
                ),
            );
        }
        if let Some(m) = r.metrics {
            say(
                &self.pb,
                format!(
                    "  round {}: ACC {:.2} %, ASR {:.2} %, ‖δ‖ {:.2}, {:.1} s",
                    r.round + 1,
                    100.0 * m.acc,
                    100.0 * m.asr,
                    r.delta_norm,
                    r.seconds
                ),
            );
        }
    }
}

/// Flattened `key = value` params of a configuration (nested tables as `table.key`).
fn params_of(c: &ExperimentConfig) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, x) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(text) = c.to_toml() {
        // A document is a table (`toml::Value`'s `FromStr` parses a single value).
        if let Ok(t) = text.parse::<toml::Table>() {
            walk("", &toml::Value::Table(t), &mut out);
        }
    }
    let u = c.unlearn_config();
    if c.unlearn.is_none() {
        if let Ok(v) = toml::Value::try_from(&u) {
            walk("unlearn", &v, &mut out);
        }
    }
    out
}

/// Starts an MLflow run, or explains why tracking is off; never fails the command.
fn start_tracker(
    cli: &Cli,
    run_name: &str,
    c: &ExperimentConfig,
    attack: &Attack,
) -> Option<Tracker> {
    if cli.no_track {
        return None;
    }
    let mut params = params_of(c);
    params.push(("attack.trigger".into(), attack.describe()));
    let refs: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let config = TrackerConfig {
        experiment: "ibau".into(),
        run_name: run_name.into(),
        ..Default::default()
    };
    match Tracker::start(config, &refs) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: MLflow tracking is off for this run: {e}");
            None
        }
    }
}

/// Logs the final metrics and artifacts and closes the run.
fn finish_tracker(
    mut t: Tracker,
    before: Metrics,
    out: &Outcome,
    c: &ExperimentConfig,
    model: &Model,
    attack: &Attack,
    status: RunStatus,
) {
    let mut warned = false;
    let metrics = [
        ("acc_before", before.acc),
        ("asr_before", before.asr),
        ("acc_after", out.after.acc),
        ("asr_after", out.after.asr),
        ("seconds", out.seconds),
        ("solver_failures", out.summary.solver_failures as f64),
        ("hvps", out.summary.hvps as f64),
    ];
    let fp = out.summary.fixed_point_residual_stats();
    // ACC/ASR just before the output bias was recalibrated, when it was.
    let unrecalibrated = out.summary.recalibration.as_ref().and_then(|r| r.before);
    let metrics: Vec<(&str, f64)> = metrics
        .into_iter()
        .chain(fp.map(|(median, _)| ("fixed_point_residual_median", median)))
        .chain(fp.map(|(_, max)| ("fixed_point_residual_max", max)))
        .chain(
            out.summary
                .implicit_ratio_stats()
                .map(|(median, _)| ("implicit_ratio_median", median)),
        )
        .chain(
            unrecalibrated
                .iter()
                .flat_map(|m| [("acc_unrecalibrated", m.acc), ("asr_unrecalibrated", m.asr)]),
        )
        .collect();
    track(
        t.log_metrics(&metrics, out.summary.steps as i64),
        &mut warned,
    );
    let dir = std::env::temp_dir().join(format!("ibau-artifacts-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_ok() {
        if let Ok(text) = c.to_toml() {
            let p = dir.join("config.toml");
            if std::fs::write(&p, text).is_ok() {
                track(t.log_artifact(&p, "config.toml"), &mut warned);
            }
        }
        let p = dir.join("model.safetensors");
        if model.save(&p).is_ok() {
            track(t.log_artifact(&p, "model/model.safetensors"), &mut warned);
        }
        if let Ok(img) = attack.trigger_image() {
            let p = dir.join("trigger.png");
            match plots::write_image_png(&p, &img, 8) {
                Ok(()) => track(t.log_artifact(&p, "trigger.png"), &mut warned),
                Err(e) => eprintln!("warning: trigger image: {e}"),
            }
        }
        let before_pt = CurvePoint {
            x: 0.0,
            acc: before.acc,
            asr: before.asr,
        };
        let title = format!("{} {:?} → {}", c.dataset.folder(), c.attack, c.target);
        let mut rounds = vec![before_pt];
        rounds.extend(&out.curves.rounds);
        let p = dir.join("acc_asr_rounds.png");
        match plots::write_acc_asr_plot(&p, &title, "round", &rounds) {
            Ok(()) => track(t.log_artifact(&p, "plots/acc_asr_rounds.png"), &mut warned),
            Err(e) => eprintln!("warning: plot: {e}"),
        }
        if !out.curves.steps.is_empty() {
            let mut steps = vec![before_pt];
            steps.extend(&out.curves.steps);
            let p = dir.join("acc_asr_steps.png");
            let title = format!("{title} (1000 evaluation images)");
            match plots::write_acc_asr_plot(&p, &title, "outer step", &steps) {
                Ok(()) => track(t.log_artifact(&p, "plots/acc_asr_steps.png"), &mut warned),
                Err(e) => eprintln!("warning: plot: {e}"),
            }
        }
    }
    match t.finish(status) {
        Ok(report) if report.pending == 0 => {}
        Ok(report) => eprintln!(
            "MLflow: {} records still spooled; run `ibau sync` later",
            report.pending
        ),
        Err(e) => eprintln!("warning: MLflow: {e}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn copy_model(m: &Model, device: Device) -> Result<Model> {
    let mut out = Model::new(m.arch, device);
    out.vs.copy(&m.vs)?;
    Ok(out)
}

struct Outcome {
    after: Metrics,
    seconds: f64,
    summary: ibau_loop::Summary,
    curves: Curves,
}

fn run_unlearning(
    cli: &Cli,
    c: &ExperimentConfig,
    model: &Model,
    d: &Data,
    attack: &Attack,
    verbose: bool,
    tracker: Option<&mut Tracker>,
) -> Result<Outcome> {
    let u = c.unlearn_config();
    let clean = d.clean_pool.slice(0, c.clean_size)?;
    let steps = u.total_steps(c.clean_size);
    let mut obs = Progress {
        pb: bar(
            steps as u64,
            match u.method {
                Method::Ibau => "I-BAU",
                Method::FineTune => "fine-tune",
            },
        ),
        failures: 0,
        tracker,
        eval_every: cli.eval_every,
        curves: Curves::default(),
    };
    let start = Instant::now();
    let split = evaluation_split(cli, d, c.clean_size)?;
    // With recalibration, the last round's metrics are those before it (reported next to the
    // final ones).
    let eval = if verbose || obs.tracker.is_some() || u.recalibrate != ibau_loop::Recalibration::Off
    {
        Some((&split, attack))
    } else {
        None
    };
    let summary = ibau_loop::unlearn(model, &clean, &u, eval, &mut obs)?;
    obs.pb.finish_and_clear();
    let after = train::evaluate(model, &split, attack)?;
    Ok(Outcome {
        after,
        seconds: start.elapsed().as_secs_f64(),
        summary,
        curves: obs.curves,
    })
}

/// The recalibration's offsets and the metrics just before it, when the run recalibrated.
fn print_recalibration(summary: &ibau_loop::Summary, indent: &str) {
    if let Some(e) = &summary.recalibration_failure {
        println!("{indent}warning: the output bias was not recalibrated: {e}");
    }
    let Some(r) = &summary.recalibration else {
        return;
    };
    let offsets: Vec<String> = r.fit.offsets.iter().map(|b| format!("{b:+.2}")).collect();
    print!(
        "{indent}output bias recalibrated: offsets [{}], loss {:.4} → {:.4}",
        offsets.join(", "),
        r.fit.loss_before,
        r.fit.loss_after
    );
    match r.before {
        Some(m) => println!("; before it ACC {}, ASR {}", pct(m.acc), pct(m.asr)),
        None => println!(),
    }
}

fn pct(x: f64) -> String {
    format!("{:6.2} %", 100.0 * x)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    let device = device(cli)?;
    match &cli.command {
        Command::TrainPoisoned { o, out } => {
            let c = config(cli, o)?;
            let d = load_data(cli, c.dataset)?;
            let attack = Attack::new(c.attack, c.target, c.poison_ratio)?;
            let (model, k) = train_poisoned(&c, &d, &attack, device)?;
            let m = train::evaluate(&model, &d.eval, &attack)?;
            model.save(out)?;
            println!(
                "{}: {k} poisoned training images; ACC {}, ASR {}; saved {}",
                attack.describe(),
                pct(m.acc),
                pct(m.asr),
                out.display()
            );
        }
        Command::Evaluate { o, model } => {
            let c = config(cli, o)?;
            let d = load_data(cli, c.dataset)?;
            let attack = Attack::new(c.attack, c.target, c.poison_ratio)?;
            let mut m = Model::new(c.arch, device);
            m.load(model)?;
            let r = train::evaluate(&m, &d.eval, &attack)?;
            println!(
                "ACC {}  ASR {}  ({}; {} evaluation images)",
                pct(r.acc),
                pct(r.asr),
                attack.describe(),
                d.eval.len()
            );
        }
        Command::Unlearn { o, model, out } => {
            let c = config(cli, o)?;
            let d = load_data(cli, c.dataset)?;
            let attack = Attack::new(c.attack, c.target, c.poison_ratio)?;
            let mut m = Model::new(c.arch, device);
            m.load(model)?;
            let before = train::evaluate(&m, &evaluation_split(cli, &d, c.clean_size)?, &attack)?;
            let mut tracker = start_tracker(cli, "unlearn", &c, &attack);
            let r = run_unlearning(cli, &c, &m, &d, &attack, true, tracker.as_mut());
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    if let Some(t) = tracker {
                        let _ = t.finish(RunStatus::Failed);
                    }
                    return Err(e);
                }
            };
            m.save(out)?;
            if let Some(t) = tracker {
                finish_tracker(t, before, &r, &c, &m, &attack, RunStatus::Finished);
            }
            println!(
                "{:<10} {:>9} {:>9}\n{:<10} {:>9} {:>9}\n{:<10} {:>9} {:>9}",
                "",
                "ACC",
                "ASR",
                "before",
                pct(before.acc),
                pct(before.asr),
                "after",
                pct(r.after.acc),
                pct(r.after.asr)
            );
            println!(
                "{} steps in {:.1} s, {} solver failures, {} HVPs; saved {}",
                r.summary.steps,
                r.seconds,
                r.summary.solver_failures,
                r.summary.hvps,
                out.display()
            );
            let per_round: Vec<String> = r
                .summary
                .round_seconds
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect();
            println!(
                "round seconds (without evaluation): {}",
                per_round.join(" ")
            );
            if let Some(e) = &r.summary.first_solver_error {
                println!("first solver failure (handled by the failure policy): {e}");
            }
            if let Some((median, max)) = r.summary.fixed_point_residual_stats() {
                println!(
                    "δ's fixed-point residual ‖Φ(δ) − δ‖/‖δ‖ over the steps (the implicit \
                     hypergradient assumes 0): median {median:.2e}, max {max:.2e}"
                );
            }
            if let Some((median, max)) = r.summary.implicit_ratio_stats() {
                println!(
                    "implicit term / direct gradient ‖(∂_θΦ)ᵀv‖/‖∇_θE‖ over the {} solved steps: \
                     median {median:.2e}, max {max:.2e}",
                    r.summary.implicit_ratios.len()
                );
            }
            print_recalibration(&r.summary, "");
        }
        Command::Demo { o } => demo(cli, o, device)?,
        Command::Runs { max } => runs(*max)?,
        Command::Sync => sync()?,
        Command::Sweep {
            datasets,
            attacks,
            clean_sizes,
            seeds,
            presets,
            out,
            models,
            o,
        } => sweep(
            cli,
            o,
            device,
            datasets,
            attacks,
            clean_sizes,
            seeds,
            presets.as_deref(),
            out,
            models,
        )?,
    }
    Ok(())
}

/// Where the embedded store lives: `$IBAU_MLFLOW_ROOT`, else the current directory.
fn mlflow_root() -> PathBuf {
    std::env::var_os("IBAU_MLFLOW_ROOT")
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The tracking server to read from: `$MLFLOW_TRACKING_URI`, else the embedded store in the
/// current directory (started for the command, stopped at the end).
fn tracking_client() -> Result<(
    ibau_plugin::mlflow::client::Client,
    Option<ibau_plugin::mlflow::server::LocalServer>,
)> {
    use ibau_plugin::mlflow::{client::Client, server};
    if let Some(c) = Client::from_env()? {
        return Ok((c, None));
    }
    let root = mlflow_root();
    if !root.join("mlflow.db").exists() {
        bail!(
            "no MLFLOW_TRACKING_URI and no embedded store ({}) here",
            root.join("mlflow.db").display()
        );
    }
    eprintln!(
        "starting the embedded MLflow server over {} …",
        root.join("mlflow.db").display()
    );
    let srv = server::LocalServer::start(
        &server::find_mlflow()?,
        &root,
        std::time::Duration::from_secs(180),
    )?;
    Ok((srv.client()?, Some(srv)))
}

fn runs(max: usize) -> Result<()> {
    let (client, _server) = tracking_client()?;
    let rows = ibau_plugin::mlflow::list_runs(&client, "ibau", max)?;
    if rows.is_empty() {
        println!("no runs in experiment \"ibau\"");
    }
    for r in rows {
        let get = |k: &str| {
            r.metrics
                .get(k)
                .map_or("-".to_string(), |v| format!("{:.2} %", 100.0 * v))
        };
        println!(
            "{}  {:<22} {:<9?} ACC {} → {}  ASR {} → {}",
            r.run_id,
            r.run_name,
            r.status,
            get("acc_before"),
            get("acc_after"),
            get("asr_before"),
            get("asr_after")
        );
    }
    Ok(())
}

fn sync() -> Result<()> {
    let (client, _server) = tracking_client()?;
    let root = mlflow_root();
    let report = ibau_plugin::mlflow::sync(&client, &root.join("mlruns/.spool"))?;
    println!(
        "sent {} records, {} already on the server, {} still pending",
        report.sent, report.already_present, report.pending
    );
    Ok(())
}

fn demo(cli: &Cli, o: &Overrides, device: Device) -> Result<()> {
    let mut o = o.clone();
    o.epochs = o.epochs.or(Some(1));
    o.preset = o.preset.or(Some(Preset::Tuned));
    if o.preset == Some(Preset::Paper) {
        o.rounds = o.rounds.or(Some(1));
    }
    let c = config(cli, &o)?;
    let start = Instant::now();
    let d = load_data(cli, c.dataset)?;
    let attack = Attack::new(c.attack, c.target, c.poison_ratio)?;
    println!(
        "I-BAU demo — {:?} / {:?}, {}, device {device:?}, seed {}",
        c.dataset,
        c.arch,
        attack.describe(),
        c.seed
    );
    let (model, k) = train_poisoned(&c, &d, &attack, device)?;
    let before = train::evaluate(&model, &d.eval, &attack)?;
    println!(
        "poisoned training: {k} of {} images poisoned, {} epoch(s), {:.0} s",
        d.train.len(),
        c.epochs,
        start.elapsed().as_secs_f64()
    );
    let mut rows = vec![("poisoned model".to_string(), before, 0.0, 0usize)];
    let mut tracked = false;
    for method in [Method::Ibau, Method::FineTune] {
        let mut cm = c.clone();
        cm.method = method;
        if let Some(u) = cm.unlearn.as_mut() {
            u.method = method;
        }
        let m = copy_model(&model, device)?;
        let name = match method {
            Method::Ibau => "I-BAU",
            Method::FineTune => "fine-tune only",
        };
        let mut tracker = start_tracker(cli, &format!("demo {name}"), &cm, &attack);
        let r = run_unlearning(cli, &cm, &m, &d, &attack, false, tracker.as_mut())?;
        print_recalibration(&r.summary, "  ");
        if let Some(t) = tracker {
            finish_tracker(t, before, &r, &cm, &m, &attack, RunStatus::Finished);
            tracked = true;
        }
        rows.push((
            name.to_string(),
            r.after,
            r.seconds,
            r.summary.solver_failures,
        ));
    }
    let u = c.unlearn_config();
    println!("\nunlearning: {} clean samples, {} round(s), batch {}, solver {:?}, evaluation on {} held-out images\n", c.clean_size, u.rounds, u.batch_size, u.solver, d.eval.len());
    println!(
        "| {:<16} | {:>9} | {:>9} | {:>8} |",
        "model", "ACC", "ASR", "time"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(18),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(10)
    );
    for (name, m, s, _) in &rows {
        println!(
            "| {:<16} | {:>9} | {:>9} | {:>6.0} s |",
            name,
            pct(m.acc),
            pct(m.asr),
            s
        );
    }
    println!(
        "\nASR counts only evaluation images whose true label is not the target. Total {:.0} s.",
        start.elapsed().as_secs_f64()
    );
    if tracked {
        println!("Runs recorded in MLflow (experiment \"ibau\"). Without MLFLOW_TRACKING_URI they are in ./mlflow.db and ./mlruns:\n  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlruns");
    }
    std::io::stdout().flush().ok();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    cli: &Cli,
    o: &Overrides,
    device: Device,
    datasets: &[DatasetName],
    attacks: &[AttackKind],
    clean_sizes: &[usize],
    seeds: &[i64],
    presets: Option<&[Preset]>,
    out: &Path,
    models: &Path,
) -> Result<()> {
    // The sweep's own lists replace these per-run options; taking one silently would run
    // something else than asked.
    for (given, single, list) in [
        (o.dataset.is_some(), "--dataset", "--datasets"),
        (o.attack.is_some(), "--attack", "--attacks"),
        (o.clean_size.is_some(), "--clean-size", "--clean-sizes"),
        (o.seed.is_some(), "--seed", "--seeds"),
        (o.preset.is_some(), "--preset", "--presets"),
    ] {
        if given {
            bail!("sweep takes {list} (comma-separated), not {single}");
        }
    }
    // `--method` restricts the sweep to that method; by default both.
    let methods: Vec<Method> = match o.method {
        Some(m) => vec![m],
        None => vec![Method::Ibau, Method::FineTune],
    };
    // `None`: the configuration file's [unlearn] table.
    let presets: Vec<Option<Preset>> = match presets {
        Some(p) => p.iter().copied().map(Some).collect(),
        None if config(cli, o)?.unlearn.is_some() => vec![None],
        None => vec![Some(Preset::Paper)],
    };
    if datasets.is_empty()
        || attacks.is_empty()
        || clean_sizes.is_empty()
        || seeds.is_empty()
        || presets.is_empty()
    {
        bail!("every sweep list needs at least one value");
    }
    std::fs::create_dir_all(models)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    for &dataset in datasets {
        let d = load_data(cli, dataset)?;
        for &attack_kind in attacks {
            for &seed in seeds {
                let mut o1 = o.clone();
                o1.dataset = Some(dataset);
                o1.attack = Some(attack_kind);
                o1.seed = Some(seed);
                let c = config(cli, &o1)?;
                let attack = Attack::new(c.attack, c.target, c.poison_ratio)?;
                let path = models.join(
                    format!(
                        "{:?}-{}-{:?}-e{}-s{}.safetensors",
                        dataset, attack_kind, c.arch, c.epochs, seed
                    )
                    .to_lowercase(),
                );
                let mut model = Model::new(c.arch, device);
                if path.exists() {
                    model.load(&path)?;
                } else {
                    model = train_poisoned(&c, &d, &attack, device)?.0;
                    model.save(&path)?;
                }
                for &clean_size in clean_sizes {
                    let before =
                        train::evaluate(&model, &evaluation_split(cli, &d, clean_size)?, &attack)?;
                    for &preset in &presets {
                        for &method in &methods {
                            let mut o2 = o1.clone();
                            o2.clean_size = Some(clean_size);
                            o2.preset = preset;
                            o2.method = Some(method);
                            let c2 = config(cli, &o2)?;
                            let m = copy_model(&model, device)?;
                            let r = run_unlearning(cli, &c2, &m, &d, &attack, false, None)?;
                            let u = c2.unlearn_config();
                            let label = preset.map_or("Config".to_string(), |p| format!("{p:?}"));
                            let mut row = serde_json::json!({
                                "dataset": format!("{dataset:?}"),
                                "attack": attack_kind.to_string(),
                                "arch": format!("{:?}", c.arch),
                                "seed": seed,
                                "clean_size": clean_size,
                                "preset": label,
                                "eval": if cli.holdout { "holdout" } else { "evaluation" },
                                "method": format!("{method:?}"),
                                "rounds": u.rounds,
                                "batch_size": u.batch_size,
                                "acc_before": before.acc,
                                "asr_before": before.asr,
                                "acc_after": r.after.acc,
                                "asr_after": r.after.asr,
                                "seconds": (r.seconds * 100.0).round() / 100.0,
                                "round_seconds": r.summary.round_seconds,
                                "solver_failures": r.summary.solver_failures,
                                "steps": r.summary.steps,
                                "hvps": r.summary.hvps,
                                "fixed_point_residual": r.summary.fixed_point_residual_stats()
                                    .map(|(median, max)| serde_json::json!({"median": median, "max": max})),
                                "implicit_ratio": r.summary.implicit_ratio_stats()
                                    .map(|(median, max)| serde_json::json!({"median": median, "max": max})),
                                "recalibration": r.summary.recalibration.as_ref().map(|r| serde_json::json!({
                                    "offsets": r.fit.offsets,
                                    "acc_unrecalibrated": r.before.map(|m| m.acc),
                                    "asr_unrecalibrated": r.before.map(|m| m.asr),
                                })),
                                "recalibration_failure": r.summary.recalibration_failure,
                            });
                            // The last round's search outcome (ClassSearch only): the best
                            // candidate, and the others it kept.
                            if let Some((best, rest)) =
                                r.summary.searches.last().and_then(|s| s.split_first())
                            {
                                let also: Vec<_> = rest
                                    .iter()
                                    .map(|c| {
                                        serde_json::json!({
                                            "candidate": c.candidate.to_string(),
                                            "flip_rate": c.flip_rate,
                                        })
                                    })
                                    .collect();
                                row["search"] = serde_json::json!({
                                    "candidate": best.candidate.to_string(),
                                    "radius": best.radius,
                                    "flip_rate": best.flip_rate,
                                    "also": also,
                                });
                            }
                            let line = serde_json::to_string(&row)?;
                            writeln!(file, "{line}")?;
                            file.flush()?;
                            println!("{:?} {} seed {} n={} {} {:?}: ACC {} → {}, ASR {} → {} ({:.0} s, {} solver failures)",
                                dataset, attack_kind, seed, clean_size, label, method, pct(before.acc), pct(r.after.acc), pct(before.asr), pct(r.after.asr), r.seconds, r.summary.solver_failures);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
