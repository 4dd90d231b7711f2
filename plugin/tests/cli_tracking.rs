//! The `ibau` binary end to end against a real MLflow server (the project venv's `mlflow`,
//! started on a free loopback port): a small BadNets-poisoned CNN is unlearned by
//! `ibau unlearn`, and the run is read back through the REST API — params, per-step and
//! per-round metric history, solver metrics, the model, the trigger and the plots (as PNG).
//! Needs `scripts/setup` (data and venv).

use std::process::Command;
use std::time::Duration;

use ibau_plugin::attacks::{Attack, AttackKind};
use ibau_plugin::data::{self, DatasetName};
use ibau_plugin::mlflow::{server, LocalServer, RunStatus};
use ibau_plugin::models::{Arch, Model};
use ibau_plugin::train::{self, TrainConfig};
use tch::Device;

#[test]
fn unlearn_run_is_tracked_with_step_metrics_plots_and_model() {
    let tmp = tempfile::tempdir().unwrap();
    // A quickly poisoned model (the backdoor need not be perfect: the test is about tracking).
    let d = data::load(DatasetName::Mnist, &data::default_root())
        .expect("MNIST under data/ (run scripts/setup)");
    let attack = Attack::new(AttackKind::Badnets, 0, 0.1).unwrap();
    let (poisoned, _) = attack.poison(&d.train.slice(0, 3000).unwrap(), 0).unwrap();
    tch::manual_seed(0);
    let model = Model::new(Arch::Cnn, Device::Cpu);
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 64,
        lr: 2e-3,
        seed: 0,
    };
    train::train(&model, &poisoned, &tc, |_, _, _, _| {}).unwrap();
    let model_path = tmp.path().join("poisoned.safetensors");
    model.save(&model_path).unwrap();

    let mlflow = server::find_mlflow().expect("the project venv's mlflow (scripts/setup)");
    let srv = LocalServer::start(&mlflow, &tmp.path().join("store"), Duration::from_secs(240))
        .expect("mlflow server starts");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // 300 clean images, batch 100 (paper preset): 3 steps per round, 2 rounds, ACC/ASR every
    // 2 steps; the output bias recalibrated at the end.
    std::fs::write(
        work.join("run.toml"),
        "preset = \"paper\"\nclean_size = 300\n[unlearn]\nrounds = 2\nrecalibrate = \"clean-and-perturbed\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ibau"))
        .current_dir(&work)
        .env("MLFLOW_TRACKING_URI", srv.url())
        .args([
            "--eval-every",
            "2",
            "--config",
            "run.toml",
            "unlearn",
            "--model",
        ])
        .arg(&model_path)
        .arg("--out")
        .arg(work.join("clean.safetensors"))
        .output()
        .expect("run ibau");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ibau unlearn failed:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("warning"), "tracking warnings:\n{stderr}");

    let client = srv.client().unwrap();
    let exp = client
        .get_experiment_by_name("ibau")
        .unwrap()
        .expect("experiment ibau");
    let runs = client
        .search_runs(std::slice::from_ref(&exp.experiment_id), "", 10)
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &client.get_run(&runs[0].info.run_id).unwrap();
    assert_eq!(run.info.status, RunStatus::Finished);
    let param = |k: &str| {
        run.data
            .params
            .iter()
            .find(|p| p.key == k)
            .map(|p| p.value.clone())
    };
    assert_eq!(
        param("clean_size").as_deref(),
        Some("300"),
        "{:?}",
        run.data.params
    );
    assert_eq!(param("unlearn.rounds").as_deref(), Some("2"));
    assert_eq!(
        param("unlearn.recalibrate").as_deref(),
        Some("clean-and-perturbed")
    );
    assert!(param("attack.trigger").is_some());

    let id = &run.info.run_id;
    let steps = |key: &str| -> Vec<i64> {
        client
            .get_metric_history(id, key)
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(steps("outer_loss"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(steps("gradient_norm"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(steps("solver_failed"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(steps("acc_step"), vec![2, 4, 6]);
    assert_eq!(steps("asr_step"), vec![2, 4, 6]);
    assert_eq!(steps("acc"), vec![1, 2]);
    assert_eq!(steps("asr"), vec![1, 2]);
    for m in client.get_metric_history(id, "asr_step").unwrap() {
        assert!((0.0..=1.0).contains(&m.value), "{m:?}");
    }
    for k in [
        "acc_before",
        "asr_before",
        "acc_after",
        "asr_after",
        "hvps",
        "acc_unrecalibrated",
        "asr_unrecalibrated",
    ] {
        assert_eq!(steps(k).len(), 1, "{k}");
    }

    // The metrics before the recalibration are the last round's.
    let last = |key: &str| {
        let h = client.get_metric_history(id, key).unwrap();
        h.iter().max_by_key(|m| m.step).map(|m| m.value)
    };
    assert_eq!(last("acc_unrecalibrated"), last("acc"));
    assert_eq!(last("asr_unrecalibrated"), last("asr"));
    assert!(stdout.contains("output bias recalibrated"), "{stdout}");

    let files: Vec<String> = client
        .list_artifacts_recursive(id)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    for want in [
        "config.toml",
        "model/model.safetensors",
        "trigger.png",
        "plots/acc_asr_rounds.png",
        "plots/acc_asr_steps.png",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
    }
    for (path, size) in [
        ("plots/acc_asr_rounds.png", (800, 500)),
        ("plots/acc_asr_steps.png", (800, 500)),
        ("trigger.png", (224, 224)),
    ] {
        let bytes = client
            .download_artifact(&run.info.artifact_uri, path)
            .unwrap();
        // To look at them: IBAU_KEEP_ARTIFACTS=<dir>.
        if let Some(dir) = std::env::var_os("IBAU_KEEP_ARTIFACTS") {
            let name = path.replace('/', "_");
            std::fs::write(std::path::Path::new(&dir).join(name), &bytes).unwrap();
        }
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = dec.read_info().expect("a PNG");
        let info = reader.info();
        assert_eq!((info.width, info.height), size, "{path}");
    }
    // The cleaned model logged is the one written to --out.
    let logged = client
        .download_artifact(&run.info.artifact_uri, "model/model.safetensors")
        .unwrap();
    assert_eq!(
        logged,
        std::fs::read(work.join("clean.safetensors")).unwrap()
    );
}
