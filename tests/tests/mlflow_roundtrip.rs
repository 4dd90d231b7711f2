//! A full run against a real `mlflow server` (sqlite store, artifact proxy), read back
//! through the REST API and compared exactly; and the embedded default store.

mod mlflow_common;

use std::collections::BTreeMap;
use std::time::Instant;

use ibau_core::solve::cg;
use ibau_plugin::mlflow::{list_runs, Client, RunStatus, SolverLog, Tracker};
use ibau_plugin::Error;
use mlflow_common::{config, start_server, value};

const KEYS: [&str; 3] = ["train/loss", "val/accuracy", "attack/asr"];
const STEPS: i64 = 50;

/// Bytes 0..=255 then a seeded xorshift stream: every byte value, no text encoding survives.
fn binary_blob() -> Vec<u8> {
    let mut out: Vec<u8> = (0..=255u8).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..4000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 56) as u8);
    }
    out
}

#[test]
fn full_run_reads_back_exactly() {
    let t0 = Instant::now();
    let (dir, server) = start_server();
    let client = Client::with(&server.url(), None, mlflow_common::fast_retry()).unwrap();
    let params = [
        ("solver", "cg".to_owned()),
        ("outer_lr", "0.001".to_owned()),
        ("inner_steps", "5".to_owned()),
        ("seed", "7".to_owned()),
    ];
    let mut run = Tracker::start_with(
        client.clone(),
        config(dir.path(), "roundtrip", "parent"),
        &params,
    )
    .expect("tracker starts");
    let run_id = run.run_id().expect("run created at start").to_owned();
    run.set_tag("dataset", "mnist").unwrap();
    for step in 0..STEPS {
        let row: Vec<(&str, f64)> = KEYS
            .iter()
            .enumerate()
            .map(|(k, name)| (*name, value(k, step)))
            .collect();
        run.log_metrics(&row, step).unwrap();
    }

    // The core's observer is how per-iteration data reaches the tracker: a CG solve of
    // diag(1..=8) v = 1.
    {
        let mut log = SolverLog::new(&mut run, "inner/");
        let mut op = |x: &Vec<f64>, y: &mut Vec<f64>| {
            for (i, (yi, xi)) in y.iter_mut().zip(x).enumerate() {
                *yi = (i as f64 + 1.0) * xi;
            }
        };
        let b = vec![1.0; 8];
        let mut x = vec![0.0; 8];
        let info = cg::solve(&mut op, &b, &mut x, &cg::Params::default(), &mut log).unwrap();
        assert_eq!(log.errors, 0, "{:?}", log.last_error);
        assert!(info.iterations >= 1);
    }

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "I-BAU run notes\n").unwrap();
    let blob = binary_blob();
    let bin = dir.path().join("weights.bin");
    std::fs::write(&bin, &blob).unwrap();
    run.log_artifact(&text, "notes.txt").unwrap();
    run.log_artifact(&bin, "model/weights.bin").unwrap();

    let mut child = run
        .start_child("sweep-lr-0.01", &[("outer_lr", "0.01".to_owned())])
        .unwrap();
    for step in 0..10 {
        child
            .log_metric("train/loss", 1.0 / (step as f64 + 1.0), step)
            .unwrap();
    }
    let child_report = child.finish(RunStatus::Finished).expect("child finishes");
    assert!(child_report.finished);
    let report = run.finish(RunStatus::Finished).expect("run finishes");
    assert!(report.finished && report.pending == 0, "{report:?}");

    // Read everything back through the REST API.
    let got = client.get_run(&run_id).unwrap();
    assert_eq!(got.info.status, RunStatus::Finished);
    assert_eq!(got.info.run_name, "parent");
    assert!(got.info.end_time.unwrap() >= got.info.start_time.unwrap());
    let got_params: BTreeMap<_, _> = got
        .data
        .params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    let want_params: BTreeMap<_, _> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(got_params, want_params);
    assert_eq!(got.tag("dataset"), Some("mnist"));
    assert_eq!(got.tag("mlflow.runName"), Some("parent"));
    assert!(got.tag("mlflow.source.name").is_some());
    assert!(got.tag("ibau.host").is_some());
    assert_eq!(got.tag("ibau.config_hash").map(str::len), Some(16));

    for (k, name) in KEYS.iter().enumerate() {
        let h = client.get_metric_history(&run_id, name).unwrap();
        let got: Vec<(i64, f64)> = h.iter().map(|m| (m.step, m.value)).collect();
        let want: Vec<(i64, f64)> = (0..STEPS).map(|s| (s, value(k, s))).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|(s, _)| *s);
        assert_eq!(got_sorted, want, "{name}");
        assert!(h.iter().all(|m| m.timestamp > 0));
    }
    let residuals = client
        .get_metric_history(&run_id, "inner/residual")
        .unwrap();
    assert!(!residuals.is_empty());
    assert!(residuals
        .iter()
        .all(|m| m.value.is_finite() && m.value >= 0.0));
    assert_eq!(
        client
            .get_metric_history(&run_id, "inner/iterations")
            .unwrap()
            .len(),
        1
    );

    let files = client.list_artifacts_recursive(&run_id).unwrap();
    let listed: Vec<(&str, Option<i64>)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.file_size))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("model/weights.bin", Some(blob.len() as i64)),
            ("notes.txt", Some(16))
        ]
    );
    let uri = &got.info.artifact_uri;
    assert!(uri.starts_with("mlflow-artifacts:/"), "{uri}");
    assert_eq!(
        client.download_artifact(uri, "model/weights.bin").unwrap(),
        blob
    );
    assert_eq!(
        client.download_artifact(uri, "notes.txt").unwrap(),
        b"I-BAU run notes\n"
    );

    // The nested run and the runs table.
    let exp = client.get_experiment_by_name("roundtrip").unwrap().unwrap();
    let children = client
        .search_runs(
            std::slice::from_ref(&exp.experiment_id),
            &format!("tags.mlflow.parentRunId = '{run_id}'"),
            10,
        )
        .unwrap();
    assert_eq!(children.len(), 1);
    let child_id = &children[0].info.run_id;
    assert_eq!(children[0].info.status, RunStatus::Finished);
    assert_eq!(
        client
            .get_metric_history(child_id, "train/loss")
            .unwrap()
            .len(),
        10
    );
    let table = list_runs(&client, "roundtrip", 100).unwrap();
    assert_eq!(table.len(), 2);
    let parent_row = table.iter().find(|r| r.run_id == run_id).unwrap();
    assert_eq!(parent_row.metrics["train/loss"], value(0, STEPS - 1));
    assert_eq!(parent_row.params["solver"], "cg");
    let child_row = table.iter().find(|r| &r.run_id == child_id).unwrap();
    assert_eq!(child_row.parent_run_id.as_deref(), Some(run_id.as_str()));
    assert!(list_runs(&client, "no-such-experiment", 10)
        .unwrap()
        .is_empty());

    // A 4xx comes back with MLflow's error_code and message, never retried.
    let err = client
        .log_batch(
            &run_id,
            &[],
            &[ibau_plugin::mlflow::Param {
                key: "solver".into(),
                value: "fp".into(),
            }],
            &[],
        )
        .unwrap_err();
    match err {
        Error::MlflowApi {
            status: 400,
            error_code,
            message,
            ..
        } => {
            assert_eq!(error_code, "INVALID_PARAMETER_VALUE");
            assert!(
                message.contains("Changing param values is not allowed"),
                "{message}"
            );
        }
        other => panic!("expected MlflowApi 400, got {other:?}"),
    }
    // A metric without a timestamp is what MLflow rejects; ours always carry one, so check
    // the same error path with a run that does not exist.
    match client.get_run("0123456789abcdef0123456789abcdef") {
        Err(Error::MlflowApi {
            status: 404,
            error_code,
            ..
        }) => {
            assert_eq!(error_code, "RESOURCE_DOES_NOT_EXIST");
        }
        other => panic!("expected MlflowApi 404, got {other:?}"),
    }
    drop(server);
    eprintln!(
        "full_run_reads_back_exactly: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Without a tracking URI the run goes to a local store that `mlflow ui` opens.
#[test]
fn embedded_store_records_runs_for_mlflow_ui() {
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let mut run = Tracker::start_embedded(
        root.path(),
        config(root.path(), "embedded", "local-run"),
        &[("seed", "1".to_owned())],
    )
    .expect("embedded tracker starts");
    // Records are taken at once, while the server may still be starting.
    for step in 0..30 {
        run.log_metric("loss", 1.0 / (step as f64 + 1.0), step)
            .unwrap();
    }
    let report = run.finish(RunStatus::Finished).expect("finish syncs");
    assert!(report.finished && report.pending == 0, "{report:?}");
    assert!(root.path().join("mlflow.db").is_file());

    // What `mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlruns`
    // shows: a server over the same store.
    let server = ibau_plugin::mlflow::LocalServer::start(
        &mlflow_common::mlflow(),
        root.path(),
        mlflow_common::START,
    )
    .unwrap();
    let client = server.client().unwrap();
    let rows = list_runs(&client, "embedded", 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].run_name, "local-run");
    assert_eq!(rows[0].status, RunStatus::Finished);
    assert_eq!(rows[0].params["seed"], "1");
    assert_eq!(
        client
            .get_metric_history(&rows[0].run_id, "loss")
            .unwrap()
            .len(),
        30
    );
    eprintln!(
        "embedded_store_records_runs_for_mlflow_ui: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
