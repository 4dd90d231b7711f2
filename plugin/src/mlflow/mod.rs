//! Experiment tracking in MLflow: a small blocking client for MLflow's REST API (the 2.0
//! paths served by MLflow 3.x, pinned as `mlflow==3.17.2` in requirements.txt), an embedded
//! local store, and a spool on disk so that no record is lost and none is logged twice.
//!
//! * [`client`] — [`Client`]: experiments, runs, `runs/log-batch` chunked to the server's
//!   limits ([`types::chunk`]), `runs/update`, search, metric history, artifacts through the
//!   artifact proxy; bounded retries with backoff; credentials from the environment, never
//!   printed.
//! * [`tracker`] — [`Tracker`] (start, `log_metric`, `log_artifact`, `finish`, nested runs)
//!   and [`SolverLog`], the core's [`Observer`](ibau_core::Observer) for solver residuals.
//! * [`spool`] — the write-ahead log of each run and [`sync`], which replays it.
//! * [`server`] — [`LocalServer`]: `mlflow server` on a free loopback port with a sqlite store.
//! * [`types`] — the REST entities and the batch limits; [`responses`] — the answers' bodies.
//!
//! Without `MLFLOW_TRACKING_URI`, [`Tracker::start`] uses the embedded store: it starts a
//! local server over `./mlflow.db` and `./mlruns` for the duration of the run; afterwards
//! `.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlruns`
//! shows the runs (README, "Experiment tracking").

pub mod client;
pub mod responses;
pub mod server;
pub mod spool;
pub mod tracker;
pub mod types;

use std::path::Path;

pub use client::{Auth, Client, RetryPolicy};
pub use server::LocalServer;
pub use spool::SyncReport;
pub use tracker::{SolverLog, Tracker, TrackerConfig, TrackerStats};
pub use types::{Metric, Param, Run, RunStatus, RunSummary, Tag};

use crate::Result;

/// Milliseconds since the Unix epoch (MLflow's timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Replays every unfinished spool in `spool_dir` (by default `mlruns/.spool`) to the server
/// behind `client`; see [`spool`] for why this neither loses nor doubles records.
///
/// # Errors
/// The first spool that could not be synced (the others are still tried).
pub fn sync(client: &Client, spool_dir: &Path) -> Result<SyncReport> {
    spool::sync_dir(spool_dir, client)
}

/// The runs of experiment `experiment` (newest first, at most `max`), as table rows; an
/// unknown experiment has none.
///
/// # Errors
/// [`crate::Error::MlflowApi`] or [`crate::Error::MlflowUnreachable`].
pub fn list_runs(client: &Client, experiment: &str, max: usize) -> Result<Vec<RunSummary>> {
    let Some(exp) = client.get_experiment_by_name(experiment)? else {
        return Ok(Vec::new());
    };
    let runs = client.search_runs(&[exp.experiment_id], "", max)?;
    Ok(runs.iter().map(RunSummary::from).collect())
}
