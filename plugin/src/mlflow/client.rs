//! A blocking client for MLflow's REST API (the `/api/2.0/mlflow/...` paths served by
//! MLflow 3.x) and its artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/...`).
//!
//! # Retries and the outcome of a failed request
//! Connection errors, timeouts and 5xx answers are retried with exponential backoff, a bounded
//! number of times ([`RetryPolicy`]); 4xx answers are not retried and come back as
//! [`Error::MlflowApi`] with the server's `error_code` and `message`.
//!
//! Every request except a metrics batch is idempotent (reads, `runs/update`, artifact `PUT`,
//! params — the server accepts an identical param again — and tags, which overwrite). A
//! metrics batch is not: MLflow appends each metric, so resending a batch whose first attempt
//! was applied but whose answer was lost (the connection dropped after the request was sent, a
//! timeout, a 5xx from a proxy in front of a server that did the work) could log it twice.
//! (MLflow's SQL store happens to drop exact duplicates of `(key, timestamp, step, value)`, but
//! other stores do not, and we do not rely on it.) So [`Client::log_batch_chunk`] tracks
//! whether an earlier attempt *may* have been applied; before resending it reads the metric
//! history of the batch's keys and sends only the metrics the server does not hold
//! ([`Client::missing_metrics`]). A request that failed to connect was never applied and is
//! resent as is.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::responses::{
    api_error, decode, CreateExperiment, GetExperiment, GetRun, ListArtifacts, MetricHistory,
    SearchRuns,
};
use super::types::{
    chunk, Batch, Experiment, FileInfo, Metric, Param, Run, RunInfo, RunStatus, Tag,
};
use crate::{Error, Result};

/// The CA bundle MLflow's own client reads: PEM certificates trusted for `https://` servers
/// instead of the system's.
pub const CERT_PATH_ENV: &str = "MLFLOW_TRACKING_SERVER_CERT_PATH";

/// TLS for `https://` tracking URIs (rustls): the certificates of `MLFLOW_TRACKING_SERVER_CERT_PATH`
/// when set, else the platform's trust store (which holds corporate proxy and private CAs that
/// Mozilla's bundled roots lack).
fn tls_config() -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let roots = match std::env::var_os(CERT_PATH_ENV).filter(|p| !p.is_empty()) {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let shown = std::path::Path::new(&path).display().to_string();
            let bad = |m: String| Error::MlflowInvalid(format!("{CERT_PATH_ENV}={shown}: {m}"));
            let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
            let mut certs = Vec::new();
            for item in parse_pem(&pem) {
                if let PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

/// Bounded exponential backoff: attempt `k` (from 1) waits `initial · 2^(k−1)`, at most `max`,
/// before attempt `k + 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (≥ 1).
    pub attempts: u32,
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Timeout of one attempt (connect, send and read together).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 0.1 s doubling to 2 s (≈ 3.1 s of waiting in all), 30 s per attempt.
    fn default() -> Self {
        Self {
            attempts: 6,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Credentials sent with every request. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
    /// `Authorization: Basic …` (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
        }
    }
}

impl Auth {
    /// Credentials from `MLFLOW_TRACKING_TOKEN`, else `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD`, else none.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
            return Some(Self::Bearer(token));
        }
        match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(username), Some(password)) => Some(Self::Basic { username, password }),
            _ => None,
        }
    }

    fn header(&self) -> String {
        match self {
            Self::Bearer(t) => format!("Bearer {t}"),
            Self::Basic { username, password } => {
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                )
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), for Basic auth.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `uri` with a password in its user-info (`http://user:secret@host`) replaced.
fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a relative artifact path (`a/b.bin`): no empty, `.` or `..` segment, no leading `/`,
/// so an artifact cannot escape its run's directory.
fn check_artifact_path(path: &str) -> Result<()> {
    if path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::MlflowInvalid(format!(
            "artifact path {path:?} must be relative, without empty, '.' or '..' segments"
        )));
    }
    Ok(())
}

/// The path under the artifact proxy of a run's `artifact_uri`:
/// `mlflow-artifacts:/1/<run>/artifacts` or `mlflow-artifacts://host:port/1/<run>/artifacts`
/// give `1/<run>/artifacts`.
///
/// # Errors
/// [`Error::MlflowInvalid`] for any other scheme: the server does not proxy artifacts (start it
/// with `--serve-artifacts`), and this client does not write to object stores itself.
pub fn proxied_artifact_root(artifact_uri: &str) -> Result<String> {
    let rest = artifact_uri
        .strip_prefix("mlflow-artifacts:")
        .ok_or_else(|| {
            Error::MlflowInvalid(format!(
                "artifact_uri {artifact_uri:?} is not proxied (mlflow-artifacts:/…); start the \
             server with --serve-artifacts"
            ))
        })?;
    let path = match rest.strip_prefix("//") {
        Some(with_authority) => with_authority.split_once('/').map_or("", |(_, p)| p),
        None => rest.trim_start_matches('/'),
    };
    Ok(path.trim_end_matches('/').to_owned())
}

/// How one attempt failed.
enum Failure {
    /// The server answered with this status and body.
    Status(u16, String),
    /// No connection was made: the request was certainly not applied.
    NotSent(String),
    /// The connection broke after (part of) the request went out: outcome unknown.
    Unknown(String),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Self::Status(s, body) => {
                format!("HTTP {s}: {}", body.chars().take(300).collect::<String>())
            }
            Self::NotSent(m) | Self::Unknown(m) => m.clone(),
        }
    }
}

/// The body of one request.
enum Body<'a> {
    None,
    Json(&'a Value),
    File(&'a Path),
}

/// A blocking MLflow REST client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<Auth>,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &redact_uri(&self.base))
            .field("auth", &self.auth)
            .field("retry", &self.retry)
            .finish()
    }
}

/// What [`Client::log_batch_chunk`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Requests sent (attempts).
    pub attempts: u32,
    /// Whether metric histories were read to reconcile a batch whose outcome was unknown.
    pub reconciled: bool,
    /// Metrics not resent because the server already held them.
    pub already_present: usize,
}

impl Client {
    /// A client for the tracking server at `uri` (`http://…` or `https://…`), with the
    /// default [`RetryPolicy`] and no credentials.
    ///
    /// # Errors
    /// [`Error::MlflowInvalid`] if `uri` is not http(s).
    pub fn new(uri: &str) -> Result<Self> {
        Self::with(uri, None, RetryPolicy::default())
    }

    /// A client with credentials and a retry policy.
    ///
    /// # Errors
    /// [`Error::MlflowInvalid`] if `uri` is not http(s) or `retry.attempts` is 0.
    pub fn with(uri: &str, auth: Option<Auth>, retry: RetryPolicy) -> Result<Self> {
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(Error::MlflowInvalid(format!(
                "tracking URI {uri:?} is not http(s)://; point MLFLOW_TRACKING_URI at a tracking \
                 server, or unset it for the embedded local store"
            )));
        }
        if retry.attempts == 0 {
            return Err(Error::MlflowInvalid(
                "RetryPolicy::attempts must be ≥ 1".into(),
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls_config()?)
            .http_status_as_error(false)
            .timeout_global(Some(retry.timeout))
            .user_agent("ibau-plugin-mlflow")
            .build()
            .into();
        Ok(Self {
            base: uri.trim_end_matches('/').to_owned(),
            agent,
            auth,
            retry,
        })
    }

    /// A client for `MLFLOW_TRACKING_URI` with credentials from the environment
    /// ([`Auth::from_env`]); `None` when the variable is unset or empty.
    ///
    /// # Errors
    /// As [`Client::with`].
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("MLFLOW_TRACKING_URI") {
            Ok(uri) if !uri.is_empty() => {
                Self::with(&uri, Auth::from_env(), RetryPolicy::default()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The server's base URI.
    pub fn uri(&self) -> &str {
        &self.base
    }

    /// Whether `text` contains this client's secret (token or password), so that the
    /// tracker can refuse to log it as a param or tag.
    pub fn leaks_secret(&self, text: &str) -> bool {
        match &self.auth {
            Some(Auth::Bearer(s) | Auth::Basic { password: s, .. }) => {
                !s.is_empty() && text.contains(s.as_str())
            }
            None => false,
        }
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Replaces the retry policy.
    pub fn set_retry_policy(&mut self, retry: RetryPolicy) {
        self.retry = RetryPolicy {
            attempts: retry.attempts.max(1),
            ..retry
        };
    }

    fn attempt(
        &self,
        method: &str,
        url: &str,
        body: &Body<'_>,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let auth = self.auth.as_ref().map(Auth::header);
        let result = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = if method == "PUT" {
                    self.agent.put(url)
                } else {
                    self.agent.post(url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Body::None => req.send_empty(),
                    Body::Json(v) => req.send_json(v),
                    Body::File(p) => {
                        let f = std::fs::File::open(p)
                            .map_err(|e| Failure::Status(0, format!("{}: {e}", p.display())))?;
                        req.header("Content-Type", "application/octet-stream")
                            .send(f)
                    }
                }
            }
        };
        let mut resp = result.map_err(classify)?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        let read = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .reader()
            .read_to_end(&mut bytes);
        if let Err(e) = read {
            return Err(Failure::Unknown(format!("reading the answer: {e}")));
        }
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(Failure::Status(
                status,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        }
    }

    /// One request with retries. `idempotent = false` stops at the first failure whose outcome
    /// is unknown and returns it as `Err(Err(failure))` for the caller to reconcile.
    fn request(
        &self,
        method: &str,
        endpoint: &str,
        url: &str,
        body: &Body<'_>,
        idempotent: bool,
        attempts_made: &mut u32,
    ) -> std::result::Result<Vec<u8>, std::result::Result<Error, Failure>> {
        let mut last = String::new();
        for k in 1..=self.retry.attempts {
            *attempts_made += 1;
            match self.attempt(method, url, body) {
                Ok(bytes) => return Ok(bytes),
                Err(Failure::Status(0, msg)) => return Err(Ok(Error::MlflowInvalid(msg))),
                Err(Failure::Status(status, body)) if (400..500).contains(&status) => {
                    return Err(Ok(api_error(endpoint, status, &body)));
                }
                Err(f @ (Failure::Status(..) | Failure::Unknown(_))) if !idempotent => {
                    return Err(Err(f));
                }
                Err(f) => last = f.message(),
            }
            if k < self.retry.attempts {
                std::thread::sleep(self.retry.delay(k));
            }
        }
        Err(Ok(Error::MlflowUnreachable {
            endpoint: endpoint.to_owned(),
            attempts: self.retry.attempts,
            message: last,
        }))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T> {
        self.call_with(method, endpoint, query, body, true)
    }

    /// A REST call; a non-idempotent one is not resent after a failure with an unknown
    /// outcome, which comes back as [`Error::MlflowUnreachable`] saying so.
    fn call_with<T: DeserializeOwned>(
        &self,
        method: &str,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<T> {
        let mut url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{}={}", encode_segment(k), encode_segment(v)));
        }
        let body = body.map_or(Body::None, Body::Json);
        let mut n = 0;
        let bytes = self
            .request(method, endpoint, &url, &body, idempotent, &mut n)
            .map_err(|e| {
                e.unwrap_or_else(|f| Error::MlflowUnreachable {
                    endpoint: endpoint.to_owned(),
                    attempts: n,
                    message: format!("outcome unknown, not resent: {}", f.message()),
                })
            })?;
        decode(endpoint, &bytes)
    }

    /// `GET /health`: whether the server answers `OK` (one attempt, no retry).
    pub fn health(&self) -> bool {
        self.attempt("GET", &format!("{}/health", self.base), &Body::None)
            .is_ok()
    }

    /// The experiment called `name`, if it exists.
    ///
    /// # Errors
    /// [`Error::MlflowApi`] (other than not found) or [`Error::MlflowUnreachable`].
    pub fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        match self.call::<GetExperiment>(
            "GET",
            "experiments/get-by-name",
            &[("experiment_name", name)],
            None,
        ) {
            Ok(r) => Ok(Some(r.experiment)),
            Err(Error::MlflowApi { error_code, .. }) if error_code == "RESOURCE_DOES_NOT_EXIST" => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The id of experiment `name`, created if missing (a concurrent creation is tolerated).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        if let Some(e) = self.get_experiment_by_name(name)? {
            return Ok(e.experiment_id);
        }
        match self.call::<CreateExperiment>(
            "POST",
            "experiments/create",
            &[],
            Some(&json!({ "name": name })),
        ) {
            Ok(r) => Ok(r.experiment_id),
            // Created by someone else between the two calls (or by our own retried attempt).
            Err(Error::MlflowApi { error_code, .. }) if error_code == "RESOURCE_ALREADY_EXISTS" => {
                self.get_experiment_by_name(name)?
                    .map(|e| e.experiment_id)
                    .ok_or_else(|| Error::MlflowInvalid(format!("experiment {name:?} vanished")))
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run in `experiment_id` with `tags` (MLflow adds `mlflow.runName`).
    ///
    /// Not idempotent, so not resent after a failure with an unknown outcome (that comes back
    /// as [`Error::MlflowUnreachable`]); the spool finds such a run by its `ibau.spool_id` tag
    /// before creating another.
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[Tag],
    ) -> Result<RunInfo> {
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time,
            "tags": tags,
        });
        Ok(self
            .call_with::<GetRun>("POST", "runs/create", &[], Some(&body), false)?
            .run
            .info)
    }

    /// A run with its params, tags and latest metrics.
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        Ok(self
            .call::<GetRun>("GET", "runs/get", &[("run_id", run_id)], None)?
            .run)
    }

    /// Sets a run's status and end time (`runs/update`).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn update_run(&self, run_id: &str, status: RunStatus, end_time: Option<i64>) -> Result<()> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.call::<Value>("POST", "runs/update", &[], Some(&body))
            .map(drop)
    }

    /// Logs records, split into batches the server accepts ([`chunk`]); each batch goes
    /// through [`Client::log_batch_chunk`], so no metric is logged twice.
    ///
    /// # Errors
    /// The first batch's error; earlier batches stay logged.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<()> {
        for b in chunk(metrics, params, tags) {
            self.log_batch_chunk(run_id, &b, false)?;
        }
        Ok(())
    }

    /// Sends one batch (within the server's limits), retrying with backoff. `maybe_applied`
    /// says that an earlier attempt, possibly by an earlier process (the spool's in-flight
    /// marker), may have been applied; then, and after any attempt of our own whose outcome is
    /// unknown, the metrics the server already holds are left out ([`Client::missing_metrics`]).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] on 4xx (nothing retried), [`Error::MlflowUnreachable`] once the
    /// attempts are spent.
    pub fn log_batch_chunk(
        &self,
        run_id: &str,
        batch: &Batch,
        maybe_applied: bool,
    ) -> Result<BatchOutcome> {
        let url = format!("{}/api/2.0/mlflow/runs/log-batch", self.base);
        let mut out = BatchOutcome::default();
        let mut pending = batch.clone();
        let mut maybe = maybe_applied;
        let mut last = String::new();
        for k in 1..=self.retry.attempts {
            if maybe && !pending.metrics.is_empty() {
                let before = pending.metrics.len();
                pending.metrics = self.missing_metrics(run_id, &pending.metrics)?;
                out.reconciled = true;
                out.already_present += before - pending.metrics.len();
                maybe = false;
            }
            if pending.is_empty() {
                return Ok(out);
            }
            let mut body = serde_json::to_value(&pending)
                .map_err(|e| Error::MlflowInvalid(format!("encoding a batch: {e}")))?;
            body["run_id"] = json!(run_id);
            // One attempt: `request` with a one-attempt policy would hide the failure kind.
            out.attempts += 1;
            match self.attempt("POST", &url, &Body::Json(&body)) {
                Ok(_) => return Ok(out),
                Err(Failure::Status(status, body)) if (400..500).contains(&status) => {
                    return Err(api_error("runs/log-batch", status, &body));
                }
                Err(f @ Failure::NotSent(_)) => last = f.message(),
                Err(f) => {
                    last = f.message();
                    maybe = true;
                }
            }
            if k < self.retry.attempts {
                std::thread::sleep(self.retry.delay(k));
            }
        }
        Err(Error::MlflowUnreachable {
            endpoint: "runs/log-batch".into(),
            attempts: self.retry.attempts,
            message: last,
        })
    }

    /// The metrics of `metrics` that the run does not hold yet, by [`Metric::identity`], read
    /// from the history of each key (one paginated `metrics/get-history` per key).
    ///
    /// # Errors
    /// As [`Client::get_metric_history`].
    pub fn missing_metrics(&self, run_id: &str, metrics: &[Metric]) -> Result<Vec<Metric>> {
        let keys: HashSet<&str> = metrics.iter().map(|m| m.key.as_str()).collect();
        let mut held = HashSet::new();
        for key in keys {
            held.extend(
                self.get_metric_history(run_id, key)?
                    .iter()
                    .map(Metric::identity),
            );
        }
        Ok(metrics
            .iter()
            .filter(|m| !held.contains(&m.identity()))
            .cloned()
            .collect())
    }

    /// Every value ever logged for metric `key` (`metrics/get-history`, paginated).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn get_metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: 10 000 pages of 25 000 values.
        for _ in 0..10_000 {
            let mut q = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if let Some(t) = &token {
                q.push(("page_token", t));
            }
            let r: MetricHistory = self.call("GET", "metrics/get-history", &q, None)?;
            out.extend(r.metrics);
            match r.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Err(Error::MlflowInvalid(format!(
            "metric history of {key:?} has too many pages"
        )))
    }

    /// Runs of `experiment_ids` matching `filter` (MLflow's search syntax, "" for all), newest
    /// first, at most `max` of them (paginated, 1000 per page).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn search_runs(
        &self,
        experiment_ids: &[String],
        filter: &str,
        max: usize,
    ) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < max {
            let mut body = json!({
                "experiment_ids": experiment_ids,
                "filter": filter,
                "max_results": (max - out.len()).min(1000),
                "order_by": ["attributes.start_time DESC"],
            });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let r: SearchRuns = self.call("POST", "runs/search", &[], Some(&body))?;
            let got = r.runs.len();
            out.extend(r.runs);
            match r.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if got > 0 => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The artifacts directly under `path` ("" for the root) of a run (`artifacts/list`).
    ///
    /// # Errors
    /// [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        let mut q = vec![("run_id", run_id)];
        if !path.is_empty() {
            q.push(("path", path));
        }
        Ok(self
            .call::<ListArtifacts>("GET", "artifacts/list", &q, None)?
            .files)
    }

    /// Every file (not directory) under a run's artifact root, depth first, bounded to 10 000
    /// listings.
    ///
    /// # Errors
    /// As [`Client::list_artifacts`].
    pub fn list_artifacts_recursive(&self, run_id: &str) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let mut dirs = vec![String::new()];
        let mut listings = 0;
        while let Some(dir) = dirs.pop() {
            listings += 1;
            if listings > 10_000 {
                return Err(Error::MlflowInvalid("artifact tree too large".into()));
            }
            for f in self.list_artifacts(run_id, &dir)? {
                if f.is_dir {
                    dirs.push(f.path);
                } else {
                    out.push(f);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn artifact_url(&self, artifact_uri: &str, artifact_path: &str) -> Result<String> {
        check_artifact_path(artifact_path)?;
        let root = proxied_artifact_root(artifact_uri)?;
        let segments: Vec<String> = root
            .split('/')
            .chain(artifact_path.split('/'))
            .filter(|s| !s.is_empty())
            .map(encode_segment)
            .collect();
        Ok(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            self.base,
            segments.join("/")
        ))
    }

    /// Uploads `local` to `artifact_path` (relative, e.g. `model/weights.safetensors`) under
    /// a run's `artifact_uri`, through the artifact proxy (`PUT`, idempotent, retried).
    ///
    /// # Errors
    /// [`Error::MlflowInvalid`] for a bad path, a non-proxied `artifact_uri` or an unreadable
    /// file; [`Error::MlflowApi`] or [`Error::MlflowUnreachable`].
    pub fn upload_artifact(
        &self,
        artifact_uri: &str,
        artifact_path: &str,
        local: &Path,
    ) -> Result<()> {
        let url = self.artifact_url(artifact_uri, artifact_path)?;
        let mut n = 0;
        self.request(
            "PUT",
            "mlflow-artifacts/artifacts",
            &url,
            &Body::File(local),
            true,
            &mut n,
        )
        .map(drop)
        .map_err(|e| e.unwrap_or_else(|f| Error::MlflowInvalid(f.message())))
    }

    /// Downloads the artifact at `artifact_path` under `artifact_uri` through the proxy.
    ///
    /// # Errors
    /// As [`Client::upload_artifact`].
    pub fn download_artifact(&self, artifact_uri: &str, artifact_path: &str) -> Result<Vec<u8>> {
        let url = self.artifact_url(artifact_uri, artifact_path)?;
        let mut n = 0;
        self.request(
            "GET",
            "mlflow-artifacts/artifacts",
            &url,
            &Body::None,
            true,
            &mut n,
        )
        .map_err(|e| e.unwrap_or_else(|f| Error::MlflowInvalid(f.message())))
    }
}

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    let msg = e.to_string();
    match &e {
        E::ConnectionFailed | E::HostNotFound => Failure::NotSent(msg),
        E::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) =>
        {
            Failure::NotSent(msg)
        }
        E::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => Failure::NotSent(msg),
        _ => Failure::Unknown(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_credentials() {
        let bearer = Auth::Bearer("s3cr3t-token".into());
        let basic = Auth::Basic {
            username: "ann".into(),
            password: "hunter2".into(),
        };
        let client = Client::with(
            "http://127.0.0.1:1",
            Some(basic.clone()),
            RetryPolicy::default(),
        )
        .unwrap();
        for text in [
            format!("{bearer:?}"),
            format!("{basic:?}"),
            format!("{client:?}"),
        ] {
            assert!(
                !text.contains("s3cr3t") && !text.contains("hunter2"),
                "{text}"
            );
            assert!(text.contains("redacted"), "{text}");
        }
        assert!(format!("{client:?}").contains("ann"));
        let with_userinfo = Client::new("https://ann:hunter2@mlflow.example/x").unwrap();
        let text = format!("{with_userinfo:?}");
        assert!(
            !text.contains("hunter2") && text.contains("mlflow.example/x"),
            "{text}"
        );
    }

    #[test]
    fn basic_auth_header_is_rfc_base64() {
        // RFC 7617 §2's example.
        let a = Auth::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(a.header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn artifact_uris_map_to_proxy_paths() {
        let c = Client::new("http://h:1/").unwrap();
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts:/1/abc/artifacts").unwrap(),
            "1/abc/artifacts"
        );
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts://host:5000/1/abc/artifacts").unwrap(),
            "1/abc/artifacts"
        );
        assert!(proxied_artifact_root("s3://bucket/1/abc").is_err());
        assert_eq!(
            c.artifact_url("mlflow-artifacts:/1/abc/artifacts", "dir/a b.bin")
                .unwrap(),
            "http://h:1/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/dir/a%20b.bin"
        );
        for bad in ["", "/abs", "a/../b", "a//b", "./a"] {
            assert!(
                c.artifact_url("mlflow-artifacts:/1/abc/artifacts", bad)
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(40), Duration::from_secs(2));
        assert!(Client::new("sqlite:///mlflow.db").is_err());
    }

    #[test]
    fn unreachable_server_is_an_error_not_a_panic() {
        // Port 9 on loopback: nothing listens there in our environments.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let fast = RetryPolicy {
            attempts: 2,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            timeout: Duration::from_secs(2),
        };
        let c = Client::with(&format!("http://127.0.0.1:{port}"), None, fast).unwrap();
        assert!(!c.health());
        match c.get_or_create_experiment("x") {
            Err(Error::MlflowUnreachable { attempts: 2, .. }) => {}
            other => panic!("expected MlflowUnreachable, got {other:?}"),
        }
    }
}
