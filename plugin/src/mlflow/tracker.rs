//! The [`Tracker`]: what an unlearning run uses to record itself, and [`SolverLog`], the
//! core [`Observer`] that sends per-iteration solver residuals through it.
//!
//! Every record goes to the run's [`Spool`] first and is sent in batches (every
//! [`TrackerConfig::flush_every`] records or [`TrackerConfig::flush_interval`]). When the
//! server is unreachable the tracker keeps spooling and tries again after a growing pause;
//! [`Tracker::finish`] replays whatever is left. A tracking failure never panics and never
//! stops the run: the `log_*` methods fail only when a record cannot be written at all
//! (an invalid key, a full disk).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ibau_core::observer::IterationState;
use ibau_core::report::Info;
use ibau_core::Observer;

use super::client::Client;
use super::now_ms;
use super::server::{find_mlflow, free_port, LocalServer};
use super::spool::{new_spool_id, Header, ParentRef, Record, Spool, SyncReport};
use super::types::{
    validate_key, validate_value, Metric, Param, RunStatus, Tag, MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
};
use crate::{Error, Result};

/// How a [`Tracker`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Experiment name (created if missing).
    pub experiment: String,
    /// Run name (`mlflow.runName`).
    pub run_name: String,
    /// Where spool files go; `None`: `<root>/mlruns/.spool` for the embedded store, else
    /// `./mlruns/.spool`.
    pub spool_dir: Option<PathBuf>,
    /// Send after this many new records.
    pub flush_every: usize,
    /// Send at least this often while records arrive.
    pub flush_interval: Duration,
    /// First pause after a failed send (doubles up to 5 minutes while the server stays away).
    pub offline_pause: Duration,
    /// How long [`Tracker::finish`] waits for an embedded server to come up.
    pub embedded_start_timeout: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            experiment: "ibau".into(),
            run_name: "run".into(),
            spool_dir: None,
            flush_every: 1000,
            flush_interval: Duration::from_secs(10),
            offline_pause: Duration::from_secs(5),
            embedded_start_timeout: Duration::from_secs(180),
        }
    }
}

/// Counters of a tracker's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Records written to the spool (metrics, params, tags, artifacts).
    pub recorded: usize,
    /// Records the server acknowledged.
    pub sent: usize,
    /// Syncs that failed because the server was unreachable.
    pub failed_syncs: usize,
    /// Windows with an unknown outcome reconciled against the metric history.
    pub reconciled: usize,
    /// Metrics not resent because the server already held them.
    pub already_present: usize,
}

/// Where the tracker's server is.
#[derive(Debug)]
enum Backend {
    /// A tracking server given by URI.
    Remote(Client),
    /// The embedded store: a local server this tracker started (shared with child runs by
    /// the parent, which owns it).
    Embedded(Option<LocalServer>, Client),
}

/// Records one MLflow run: params, metrics, tags, artifacts, status; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    backend: Backend,
    config: TrackerConfig,
    spool: Spool,
    unsent: usize,
    last_sync: Instant,
    next_try: Instant,
    pause: Duration,
    stats: TrackerStats,
    last_error: Option<String>,
    ended: bool,
}

impl Drop for Tracker {
    /// A tracker dropped without [`Tracker::finish`] (an early return, a panic) records the
    /// run as `KILLED` in its spool, without network traffic; [`super::sync`] sends it.
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.spool.finish(RunStatus::Killed, now_ms());
        }
    }
}

impl Tracker {
    /// Starts a run where the environment says: `MLFLOW_TRACKING_URI` (with credentials from
    /// `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`PASSWORD`), or, when unset, the
    /// embedded store in `$IBAU_MLFLOW_ROOT` (default: the current directory), see
    /// [`Tracker::start_embedded`].
    ///
    /// # Errors
    /// A bad `MLFLOW_TRACKING_URI`, an invalid param, or a spool that cannot be written. An
    /// unreachable server is not an error.
    pub fn start(config: TrackerConfig, params: &[(&str, String)]) -> Result<Self> {
        match Client::from_env()? {
            Some(client) => Self::start_with(client, config, params),
            None => {
                let root = std::env::var_os("IBAU_MLFLOW_ROOT")
                    .filter(|r| !r.is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from);
                Self::start_embedded(&root, config, params)
            }
        }
    }

    /// Starts a run on the server `client` talks to.
    ///
    /// # Errors
    /// An invalid param or a spool that cannot be written.
    pub fn start_with(
        client: Client,
        config: TrackerConfig,
        params: &[(&str, String)],
    ) -> Result<Self> {
        let spool_dir = config
            .spool_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("mlruns/.spool"));
        Self::begin(Backend::Remote(client), config, &spool_dir, params, None)
    }

    /// Starts a run in the embedded store under `root`: `mlflow server` from the project venv
    /// on a free loopback port with `sqlite:///<root>/mlflow.db` and artifacts in
    /// `<root>/mlruns`, started in the background (records are spooled while it starts) and
    /// stopped by [`Tracker::finish`]. Afterwards
    /// `.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlruns`
    /// in `root` shows the run.
    ///
    /// # Errors
    /// [`Error::MlflowServer`] when the venv's mlflow is missing (run `scripts/setup`), an
    /// invalid param, or a spool that cannot be written.
    pub fn start_embedded(
        root: &Path,
        config: TrackerConfig,
        params: &[(&str, String)],
    ) -> Result<Self> {
        let server = LocalServer::spawn(&find_mlflow()?, root, free_port()?)?;
        let client = server.client()?;
        let spool_dir = config
            .spool_dir
            .clone()
            .unwrap_or_else(|| server.root().join("mlruns/.spool"));
        Self::begin(
            Backend::Embedded(Some(server), client),
            config,
            &spool_dir,
            params,
            None,
        )
    }

    /// Starts a nested run (e.g. one point of a sweep) on the same server, tagged
    /// `mlflow.parentRunId`. Finish it before its parent: an embedded server belongs to
    /// the parent.
    ///
    /// # Errors
    /// As [`Tracker::start_with`].
    pub fn start_child(&mut self, run_name: &str, params: &[(&str, String)]) -> Result<Self> {
        // Make the parent exist on the server first if we can; else refer to its spool.
        self.try_sync(true);
        let parent = match self.spool.run_id() {
            Some(id) => ParentRef::RunId(id.to_owned()),
            None => ParentRef::Spool(self.spool.header().spool_id.clone()),
        };
        let backend = match &self.backend {
            Backend::Remote(c) => Backend::Remote(c.clone()),
            Backend::Embedded(_, c) => Backend::Embedded(None, c.clone()),
        };
        let config = TrackerConfig {
            run_name: run_name.to_owned(),
            ..self.config.clone()
        };
        let dir = self
            .spool
            .path()
            .parent()
            .unwrap_or(Path::new("."))
            .to_owned();
        Self::begin(backend, config, &dir, params, Some(parent))
    }

    fn begin(
        backend: Backend,
        config: TrackerConfig,
        spool_dir: &Path,
        params: &[(&str, String)],
        parent: Option<ParentRef>,
    ) -> Result<Self> {
        validate_key(&config.experiment.replace(['/', ':', ' '], "_"))?;
        let header = Header {
            spool_id: new_spool_id(),
            experiment: config.experiment.clone(),
            run_name: config.run_name.clone(),
            start_time: now_ms(),
            tags: default_tags(&config.run_name, params),
            parent,
        };
        let mut t = Self {
            backend,
            spool: Spool::create(spool_dir, header)?,
            config,
            unsent: 0,
            last_sync: Instant::now(),
            next_try: Instant::now(),
            pause: Duration::ZERO,
            stats: TrackerStats::default(),
            last_error: None,
            ended: false,
        };
        t.pause = t.config.offline_pause;
        t.log_params(params)?;
        // Create the run now if the server answers (not waiting for an embedded server).
        t.try_sync(true);
        Ok(t)
    }

    /// The server's run id, once the run exists there.
    pub fn run_id(&self) -> Option<&str> {
        self.spool.run_id()
    }

    /// The run's spool file.
    pub fn spool_path(&self) -> &Path {
        self.spool.path()
    }

    /// Traffic counters.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// The last sync error (server unreachable, a rejected record), if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The client of the tracker's server.
    pub fn client(&self) -> &Client {
        match &self.backend {
            Backend::Remote(c) | Backend::Embedded(_, c) => c,
        }
    }

    fn record(&mut self, r: Record) -> Result<()> {
        self.spool.push(r)?;
        self.stats.recorded += 1;
        self.unsent += 1;
        if self.unsent >= self.config.flush_every
            || self.last_sync.elapsed() >= self.config.flush_interval
        {
            self.try_sync(false);
        }
        Ok(())
    }

    /// Logs a param (refused if it carries a credential of the client).
    ///
    /// # Errors
    /// [`Error::MlflowInvalid`] for a bad key, a too long value or a credential;
    /// [`Error::File`] when the spool cannot be written.
    pub fn log_param(&mut self, key: &str, value: &str) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value, MAX_PARAM_VALUE_LENGTH)?;
        self.refuse_secret(key, value)?;
        self.record(Record::Param(Param {
            key: key.into(),
            value: value.into(),
        }))
    }

    /// Logs several params.
    ///
    /// # Errors
    /// As [`Tracker::log_param`]; params before the bad one are logged.
    pub fn log_params(&mut self, params: &[(&str, String)]) -> Result<()> {
        params.iter().try_for_each(|(k, v)| self.log_param(k, v))
    }

    /// Sets a tag.
    ///
    /// # Errors
    /// As [`Tracker::log_param`].
    pub fn set_tag(&mut self, key: &str, value: &str) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value, MAX_TAG_VALUE_LENGTH)?;
        self.refuse_secret(key, value)?;
        self.record(Record::Tag(Tag::new(key, value)))
    }

    fn refuse_secret(&self, key: &str, value: &str) -> Result<()> {
        if self.client().leaks_secret(value) {
            return Err(Error::MlflowInvalid(format!(
                "refusing to log {key:?}: it holds a credential"
            )));
        }
        Ok(())
    }

    /// Logs `value` of metric `key` at `step`, timestamped now.
    ///
    /// # Errors
    /// [`Error::MlflowInvalid`] for a bad key; [`Error::File`] when the spool cannot be
    /// written.
    pub fn log_metric(&mut self, key: &str, value: f64, step: i64) -> Result<()> {
        validate_key(key)?;
        let m = Metric {
            key: key.into(),
            value,
            timestamp: now_ms(),
            step,
        };
        self.record(Record::Metric(m))
    }

    /// Logs several metrics at one step.
    ///
    /// # Errors
    /// As [`Tracker::log_metric`].
    pub fn log_metrics(&mut self, metrics: &[(&str, f64)], step: i64) -> Result<()> {
        metrics
            .iter()
            .try_for_each(|(k, v)| self.log_metric(k, *v, step))
    }

    /// Uploads file `local` as `artifact_path` (relative, e.g. `model/weights.safetensors`)
    /// under the run's artifacts; if that fails, a copy is spooled and uploaded later.
    ///
    /// # Errors
    /// [`Error::File`] if `local` cannot be read; [`Error::MlflowInvalid`] for a bad path.
    pub fn log_artifact(&mut self, local: &Path, artifact_path: &str) -> Result<()> {
        if !local.is_file() {
            return Err(Error::File {
                path: local.display().to_string(),
                message: "not a file".into(),
            });
        }
        if artifact_path.is_empty()
            || artifact_path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::MlflowInvalid(format!(
                "bad artifact path {artifact_path:?}"
            )));
        }
        // Direct upload (no copy) when the run exists, the server is not known to be away and
        // no earlier record waits after a flush (keeps the spool's order meaningful).
        if self.spool.pending() > 0 {
            self.try_sync(false);
        }
        if let Some(uri) = self.spool.artifact_uri().map(str::to_owned) {
            if self.spool.pending() == 0 && Instant::now() >= self.next_try {
                match self.client().upload_artifact(&uri, artifact_path, local) {
                    Ok(()) => {
                        self.stats.recorded += 1;
                        self.stats.sent += 1;
                        return Ok(());
                    }
                    Err(e @ Error::MlflowApi { .. }) => return Err(e),
                    Err(e) => self.went_offline(&e),
                }
            }
        }
        self.spool.push_artifact(local, artifact_path)?;
        self.stats.recorded += 1;
        self.unsent += 1;
        Ok(())
    }

    /// Sends what is spooled now (unless the server was found away less than a pause ago).
    ///
    /// # Errors
    /// Only a record the server rejected (4xx); unreachability is recorded in
    /// [`Tracker::stats`] and [`Tracker::last_error`].
    pub fn flush(&mut self) -> Result<()> {
        match self.sync_now(false) {
            Err(e @ Error::MlflowApi { .. }) => Err(e),
            _ => Ok(()),
        }
    }

    fn try_sync(&mut self, create_only: bool) {
        let _ = self.sync_now(create_only);
    }

    fn sync_now(&mut self, create_only: bool) -> Result<SyncReport> {
        self.last_sync = Instant::now();
        if Instant::now() < self.next_try {
            return Ok(SyncReport::default());
        }
        if let Backend::Embedded(Some(server), _) = &self.backend {
            if !server.is_healthy() {
                return Ok(SyncReport::default());
            }
        }
        let client = self.client().clone();
        let result = if create_only {
            self.spool
                .ensure_run(&client)
                .map(|_| SyncReport::default())
        } else {
            self.spool.sync(&client)
        };
        match &result {
            Ok(r) => {
                self.stats.sent += r.sent;
                self.stats.reconciled += r.reconciled;
                self.stats.already_present += r.already_present;
                self.unsent = r.pending;
                self.pause = self.config.offline_pause;
            }
            Err(e @ Error::MlflowApi { .. }) => self.last_error = Some(e.to_string()),
            Err(e) => self.went_offline(e),
        }
        result
    }

    fn went_offline(&mut self, e: &Error) {
        self.stats.failed_syncs += 1;
        self.last_error = Some(e.to_string());
        self.next_try = Instant::now() + self.pause;
        self.pause = (self.pause * 2).min(Duration::from_secs(300));
    }

    /// Ends the run with `status`: sends everything spooled and the status (waiting up to
    /// [`TrackerConfig::embedded_start_timeout`] for an embedded server), then stops an
    /// embedded server. What cannot be sent stays in the spool for [`super::sync`].
    ///
    /// # Errors
    /// The last sync error if records or the status are still pending (they are safe in
    /// [`SyncReport`]'s spool and will be replayed); a rejected record.
    pub fn finish(mut self, status: RunStatus) -> Result<SyncReport> {
        self.spool.finish(status, now_ms())?;
        self.ended = true;
        if let Backend::Embedded(Some(server), _) = &mut self.backend {
            server.wait_healthy(self.config.embedded_start_timeout)?;
        }
        // The server may just have come back: try now, and once more after one pause.
        self.next_try = Instant::now();
        let mut result = self.sync_now(false);
        if !matches!(&result, Ok(r) if r.finished)
            && !matches!(result, Err(Error::MlflowApi { .. }))
        {
            std::thread::sleep(self.config.offline_pause.min(Duration::from_secs(30)));
            self.next_try = Instant::now();
            result = self.sync_now(false);
        }
        let mut report = result?;
        report.sent = self.stats.sent;
        report.already_present = self.stats.already_present;
        report.reconciled = self.stats.reconciled;
        if report.finished {
            Ok(report)
        } else {
            Err(Error::MlflowUnreachable {
                endpoint: "runs/update".into(),
                attempts: 0,
                message: format!(
                    "{} records left in {}; replay them with plugin::mlflow::sync",
                    report.pending,
                    self.spool.path().display()
                ),
            })
        }
    }
}

/// Tags every run gets: `mlflow.runName`, `mlflow.source.name` (the program),
/// `mlflow.source.type` (`LOCAL`), `mlflow.user`, `mlflow.source.git.commit` (when in a git
/// checkout), `ibau.host` and `ibau.config_hash` (FNV-1a of the sorted params).
pub fn default_tags(run_name: &str, params: &[(&str, String)]) -> Vec<Tag> {
    let program = std::env::args()
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "ibau".into());
    let mut tags = vec![
        Tag::new("mlflow.runName", run_name),
        Tag::new("mlflow.source.name", program),
        Tag::new("mlflow.source.type", "LOCAL"),
        Tag::new("ibau.host", host_name()),
        Tag::new("ibau.config_hash", config_hash(params)),
    ];
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        tags.push(Tag::new("mlflow.user", user));
    }
    if let Some(commit) = git_commit() {
        tags.push(Tag::new("mlflow.source.git.commit", commit));
    }
    tags
}

/// FNV-1a (64 bit) of the params sorted by key, as 16 hex digits: equal configs, equal hash.
pub fn config_hash(params: &[(&str, String)]) -> String {
    let mut sorted: Vec<_> = params.iter().collect();
    sorted.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in sorted {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && s.len() == 40).then_some(s)
}

/// The core's [`Observer`] that logs each solver iteration's residual as metric
/// `<prefix>residual` (step = a running iteration count across solves) and, when a solve
/// ends, `<prefix>iterations` and `<prefix>operator_applications` (step = solve number).
///
/// Tracking errors cannot be returned through the observer; they are counted in
/// [`SolverLog::errors`] and the last is kept in [`SolverLog::last_error`].
#[derive(Debug)]
pub struct SolverLog<'t> {
    tracker: &'t mut Tracker,
    prefix: String,
    base: i64,
    last: i64,
    solves: i64,
    /// Records that could not be logged.
    pub errors: usize,
    /// The last of them.
    pub last_error: Option<String>,
}

impl<'t> SolverLog<'t> {
    /// Logs into `tracker` under metric names starting with `prefix` (e.g. `"inner/"`).
    pub fn new(tracker: &'t mut Tracker, prefix: &str) -> Self {
        Self {
            tracker,
            prefix: prefix.to_owned(),
            base: 0,
            last: 0,
            solves: 0,
            errors: 0,
            last_error: None,
        }
    }

    fn log(&mut self, name: &str, value: f64, step: i64) {
        let key = format!("{}{name}", self.prefix);
        if let Err(e) = self.tracker.log_metric(&key, value, step) {
            self.errors += 1;
            self.last_error = Some(e.to_string());
        }
    }
}

impl<V> Observer<V> for SolverLog<'_> {
    fn on_iteration(&mut self, state: &IterationState<'_, V>) {
        if state.iteration == 1 {
            // A new solve (also after one that failed without `on_finish`).
            self.base = self.last;
        }
        let step = self.base + i64::try_from(state.iteration).unwrap_or(i64::MAX - self.base);
        self.last = self.last.max(step);
        self.log("residual", state.residual, step);
    }

    fn on_finish(&mut self, info: &Info) {
        self.solves += 1;
        self.log("iterations", info.iterations as f64, self.solves);
        self.log(
            "operator_applications",
            info.operator_applications as f64,
            self.solves,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_ignores_order_and_sees_values() {
        let a = config_hash(&[("lr", "0.1".into()), ("k", "5".into())]);
        let b = config_hash(&[("k", "5".into()), ("lr", "0.1".into())]);
        let c = config_hash(&[("k", "5".into()), ("lr", "0.2".into())]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
    }
}
