//! The `ibau` binary's configuration handling: a full `[unlearn]` table in a TOML file still
//! obeys the command line's method (the sweep's fine-tuning rows are fine-tuning), a preset
//! cannot silently lose against such a table, and `--holdout` measures on the rest of the
//! defender's pool or refuses when there is none. Needs `scripts/setup` (data).

use std::path::Path;
use std::process::{Command, Output};

use ibau_plugin::models::{Arch, Model};
use tch::Device;

const TABLE: &str = "\
epochs = 1
clean_size = 10
[unlearn]
method = \"ibau\"
rounds = 1
batch_size = 10
outer_lr = 0.001
inner_lr = 10.0
reg = 0.001
fp_alpha = 0.1
perturb_fraction = 0.5
warm_start = false
on_solver_failure = \"direct-gradient\"
seed = 0
[unlearn.solver]
kind = \"fixed-point\"
steps = 2
";

fn ibau(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ibau"))
        .current_dir(dir)
        .arg("--no-track")
        .args(args)
        .output()
        .expect("run ibau")
}

/// Runs `ibau` and checks that it exits non-zero with `message` on stderr.
fn fails_with(dir: &Path, args: &[&str], message: &str) {
    let out = ibau(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(message), "{stderr}");
}

/// The arguments `[before] --config table.toml sweep --clean-sizes 10 --models models --out
/// lines.jsonl [after]`.
fn sweep_args<'a>(before: &[&'a str], after: &[&'a str]) -> Vec<&'a str> {
    let mut args = before.to_vec();
    args.extend_from_slice(&[
        "--config",
        "table.toml",
        "sweep",
        "--clean-sizes",
        "10",
        "--models",
        "models",
        "--out",
        "lines.jsonl",
    ]);
    args.extend_from_slice(after);
    args
}

/// An untrained CNN saved where `sweep` looks for the cached poisoned model.
fn cached_model(models: &Path) {
    std::fs::create_dir_all(models).unwrap();
    tch::manual_seed(0);
    Model::new(Arch::Cnn, Device::Cpu)
        .save(&models.join("mnist-badnets-cnn-e1-s0.safetensors"))
        .unwrap();
}

#[test]
fn a_sweep_over_an_unlearn_table_runs_both_methods_and_records_the_evaluation_split() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("table.toml"), TABLE).unwrap();
    cached_model(&dir.join("models"));
    let out = ibau(dir, &sweep_args(&["--holdout"], &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sweep failed:\n{stderr}");
    let text = std::fs::read_to_string(dir.join("lines.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, method) in lines.iter().zip(["Ibau", "FineTune"]) {
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["preset"], "Config", "{line}");
        assert_eq!(line["eval"], "holdout", "{line}");
        assert_eq!(line["steps"], 1, "{line}");
    }
    // I-BAU solves the implicit system; fine-tuning has nothing to solve.
    assert!(lines[0]["hvps"].as_u64().unwrap() > 0, "{}", lines[0]);
    assert_eq!(lines[1]["hvps"], 0, "{}", lines[1]);
}

#[test]
fn a_preset_against_an_unlearn_table_and_a_holdout_without_images_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("table.toml"), TABLE).unwrap();
    cached_model(dir);
    let model = "mnist-badnets-cnn-e1-s0.safetensors";
    fails_with(
        dir,
        &[
            "--config",
            "table.toml",
            "unlearn",
            "--preset",
            "tuned",
            "--model",
            model,
            "--out",
            "x.safetensors",
        ],
        "--preset conflicts",
    );
    fails_with(
        dir,
        &[
            "--holdout",
            "unlearn",
            "--clean-size",
            "5000",
            "--model",
            model,
            "--out",
            "x.safetensors",
        ],
        "--holdout needs --clean-size < 5000",
    );
    assert!(!dir.join("x.safetensors").exists());
}

#[test]
fn a_sweep_runs_only_the_method_asked_for_and_refuses_the_options_its_lists_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("table.toml"), TABLE).unwrap();
    cached_model(&dir.join("models"));
    let out = ibau(dir, &sweep_args(&[], &["--method", "fine-tune"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("lines.jsonl")).unwrap();
    let methods: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["method"].to_string())
        .collect();
    assert_eq!(methods, ["\"FineTune\""], "{text}");
    for (option, value, list) in [
        ("--seed", "1", "--seeds"),
        ("--clean-size", "10", "--clean-sizes"),
        ("--dataset", "mnist", "--datasets"),
        ("--attack", "sig", "--attacks"),
        ("--preset", "tuned", "--presets"),
    ] {
        fails_with(
            dir,
            &sweep_args(&[], &[option, value]),
            &format!("sweep takes {list}"),
        );
    }
    // Refused before anything ran: no line was added.
    let after = std::fs::read_to_string(dir.join("lines.jsonl")).unwrap();
    assert_eq!(after, text);
}

/// The configs the README's commands use parse, validate, and recalibrate as their comments say.
#[test]
fn the_committed_bench_configs_parse() {
    use ibau_plugin::config::ExperimentConfig;
    use ibau_plugin::ibau::Recalibration;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/ibau/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("bench/ibau/configs") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let c = ExperimentConfig::from_toml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let u = c.unlearn_config();
        u.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_str().unwrap();
        let want = match name {
            "tuned-4000.toml" => Some(Recalibration::CleanAndPerturbed),
            "tuned-4000-no-recalibration.toml"
            | "finer-radii-4000.toml"
            | "fine-tune-4000.toml" => Some(Recalibration::Off),
            "recalibrate-clean-4000.toml" | "recalibrate-clean-100.toml" => {
                Some(Recalibration::Clean)
            }
            _ => None,
        };
        if let Some(want) = want {
            assert_eq!(u.recalibrate, want, "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 6, "{seen} configs in {}", dir.display());
}
