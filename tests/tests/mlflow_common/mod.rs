//! Shared by the `mlflow_*` integration tests: the venv's mlflow, a server in a temp dir,
//! fast retry settings, and counting what a run holds.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ibau_plugin::mlflow::{server, Client, LocalServer, RetryPolicy, TrackerConfig};

/// How long a server may take to answer `/health` (a cold start on a busy 2-core machine
/// takes 15–40 s).
pub const START: Duration = Duration::from_secs(240);

/// `<workspace root>/.venv/bin/mlflow`; fails the test (never skips it) when missing.
pub fn mlflow() -> PathBuf {
    match server::find_mlflow() {
        Ok(p) => p,
        Err(e) => panic!("the MLflow tests need the project venv's mlflow: {e}"),
    }
}

/// A server over a fresh temp dir (sqlite store, proxied artifacts); killed on drop.
pub fn start_server() -> (tempfile::TempDir, LocalServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = LocalServer::start(&mlflow(), dir.path(), START).expect("mlflow server starts");
    (dir, s)
}

/// Retries that give up quickly, so outages are exercised in seconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 6,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        timeout: Duration::from_secs(20),
    }
}

/// A tracker config writing its spool under `dir`.
pub fn config(dir: &std::path::Path, experiment: &str, run: &str) -> TrackerConfig {
    TrackerConfig {
        experiment: experiment.into(),
        run_name: run.into(),
        spool_dir: Some(dir.join("spool")),
        flush_every: 25,
        flush_interval: Duration::from_secs(3600),
        offline_pause: Duration::from_millis(200),
        embedded_start_timeout: START,
    }
}

/// The metric the tests log: a value that differs for every key and step.
pub fn value(key: usize, step: i64) -> f64 {
    (key as f64 + 1.0) * 1000.0 + step as f64 * 0.5 - 0.25
}

/// `(logged, found, distinct found)` of metric `key`'s history: a lost record makes
/// found < logged, a doubled one found > distinct.
pub fn count(client: &Client, run_id: &str, key: &str) -> (usize, usize) {
    let h = client
        .get_metric_history(run_id, key)
        .expect("metric history");
    let distinct: BTreeSet<(i64, u64)> = h.iter().map(|m| (m.step, m.value.to_bits())).collect();
    (h.len(), distinct.len())
}
