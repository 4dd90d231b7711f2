//! MLflow's REST entities (the JSON of the 2.0 API) and the batch limits of `runs/log-batch`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Most metrics in one `runs/log-batch` request (`MAX_METRICS_PER_BATCH` in
/// `mlflow/utils/validation.py`, MLflow 3.17.2).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Most params in one request (`MAX_PARAMS_TAGS_PER_BATCH`, MLflow 3.17.2).
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// Most tags in one request (`MAX_PARAMS_TAGS_PER_BATCH`, MLflow 3.17.2).
pub const MAX_TAGS_PER_BATCH: usize = 100;
/// Most metrics + params + tags in one request (`MAX_ENTITIES_PER_BATCH`, MLflow 3.17.2).
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// Largest JSON body of one request in bytes (`MAX_BATCH_LOG_REQUEST_SIZE = 1e6`,
/// MLflow 3.17.2). Batches are cut well below it, see [`chunk`].
pub const MAX_BATCH_REQUEST_BYTES: usize = 1_000_000;
/// Longest metric, param or tag key (`MAX_ENTITY_KEY_LENGTH`).
pub const MAX_KEY_LENGTH: usize = 250;
/// Longest param value (`MAX_PARAM_VAL_LENGTH`; the server would truncate, we refuse).
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// Longest tag value (`MAX_TAG_VAL_LENGTH`).
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;

/// One metric value at a step. MLflow requires the timestamp (milliseconds since the epoch).
///
/// Non-finite values travel as protobuf-JSON strings (`"NaN"`, `"Infinity"`, `"-Infinity"`);
/// MLflow's SQL store keeps NaN and stores ±∞ as ±`f64::MAX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name.
    pub key: String,
    /// Value.
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Step (iteration) number.
    #[serde(default)]
    pub step: i64,
}

impl Metric {
    /// The identity MLflow's SQL store deduplicates on — `(key, timestamp, step, value)` with
    /// ±∞ mapped to ±`f64::MAX`, every NaN equal and `-0.0 = 0.0` — used to tell which records
    /// of a batch with an unknown outcome the server already holds.
    pub fn identity(&self) -> (String, i64, i64, u64) {
        let v = if self.value.is_nan() {
            f64::NAN
        } else if self.value == f64::INFINITY {
            f64::MAX
        } else if self.value == f64::NEG_INFINITY {
            -f64::MAX
        } else if self.value == 0.0 {
            0.0
        } else {
            self.value
        };
        (self.key.clone(), self.timestamp, self.step, v.to_bits())
    }
}

fn ser_f64<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if *v == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_f64(*v)
    }
}

fn de_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::F(v) => Ok(v),
        Num::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(serde::de::Error::custom),
        },
    }
}

/// A run parameter (immutable once logged: MLflow refuses a different value for the same key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// A run tag (setting it again overwrites it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

impl Tag {
    /// A tag from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A run's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Still running.
    Running,
    /// Scheduled, not started.
    Scheduled,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside.
    Killed,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "RUNNING",
            Self::Scheduled => "SCHEDULED",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        })
    }
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    /// Its id (a decimal string).
    pub experiment_id: String,
    /// Its unique name.
    pub name: String,
    /// Where its runs' artifacts go, e.g. `mlflow-artifacts:/1`.
    #[serde(default)]
    pub artifact_location: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// A run's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id (32 hex digits).
    pub run_id: String,
    /// Experiment id.
    pub experiment_id: String,
    /// Display name.
    #[serde(default)]
    pub run_name: String,
    /// Status.
    pub status: RunStatus,
    /// Start, ms since the epoch.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// End, ms since the epoch.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// Root of the run's artifacts, e.g. `mlflow-artifacts:/1/<run_id>/artifacts` when the
    /// server proxies artifacts (`--serve-artifacts`).
    #[serde(default)]
    pub artifact_uri: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// A run's logged data: the latest value of each metric, params and tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// Latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Params.
    #[serde(default)]
    pub params: Vec<Param>,
    /// Tags (including MLflow's `mlflow.*` system tags).
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A run: metadata and data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Metadata.
    pub info: RunInfo,
    /// Data.
    #[serde(default)]
    pub data: RunData,
}

impl Run {
    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// An entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path relative to the run's artifact root.
    pub path: String,
    /// Whether it is a directory.
    #[serde(default)]
    pub is_dir: bool,
    /// Size in bytes (files only).
    #[serde(default)]
    pub file_size: Option<i64>,
}

/// One row of [`list_runs`](super::list_runs): what a `runs` table shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Display name.
    pub run_name: String,
    /// Status.
    pub status: RunStatus,
    /// Start, ms since the epoch.
    pub start_time: Option<i64>,
    /// End, ms since the epoch.
    pub end_time: Option<i64>,
    /// Parent run (`mlflow.parentRunId`) for sweep children.
    pub parent_run_id: Option<String>,
    /// Params by name.
    pub params: BTreeMap<String, String>,
    /// Latest value of each metric by name.
    pub metrics: BTreeMap<String, f64>,
}

impl From<&Run> for RunSummary {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.info.run_id.clone(),
            run_name: run.info.run_name.clone(),
            status: run.info.status,
            start_time: run.info.start_time,
            end_time: run.info.end_time,
            parent_run_id: run.tag("mlflow.parentRunId").map(str::to_owned),
            params: run
                .data
                .params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            metrics: run
                .data
                .metrics
                .iter()
                .map(|m| (m.key.clone(), m.value))
                .collect(),
        }
    }
}

/// The content of one `runs/log-batch` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Batch {
    /// Metrics.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// Params.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Byte budget per request that [`chunk`] keeps to: half the server's limit, leaving room for
/// the run id and JSON framing.
const CHUNK_BYTES: usize = MAX_BATCH_REQUEST_BYTES / 2;

/// Splits records into batches MLflow accepts: ≤ [`MAX_METRICS_PER_BATCH`] metrics,
/// ≤ [`MAX_PARAMS_PER_BATCH`] params, ≤ [`MAX_TAGS_PER_BATCH`] tags,
/// ≤ [`MAX_ENTITIES_PER_BATCH`] records and ≤ half of [`MAX_BATCH_REQUEST_BYTES`] of JSON
/// each. Order is kept within each kind, so a metric's steps arrive in order.
pub fn chunk(metrics: &[Metric], params: &[Param], tags: &[Tag]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut cur = Batch::default();
    let mut bytes = 0usize;
    let full = |cur: &Batch, bytes: usize, add: usize| {
        cur.len() + 1 > MAX_ENTITIES_PER_BATCH || bytes + add > CHUNK_BYTES
    };
    // Params first (the server applies params, metrics, tags in that order), then tags, then
    // metrics; every record is sized by its own JSON plus a separator.
    for p in params {
        let add = json_len(p) + 1;
        if cur.params.len() == MAX_PARAMS_PER_BATCH || full(&cur, bytes, add) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.params.push(p.clone());
        bytes += add;
    }
    for t in tags {
        let add = json_len(t) + 1;
        if cur.tags.len() == MAX_TAGS_PER_BATCH || full(&cur, bytes, add) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.tags.push(t.clone());
        bytes += add;
    }
    for m in metrics {
        let add = json_len(m) + 1;
        if cur.metrics.len() == MAX_METRICS_PER_BATCH || full(&cur, bytes, add) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.metrics.push(m.clone());
        bytes += add;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v)
        .map(|b| b.len())
        .unwrap_or(CHUNK_BYTES)
}

/// Checks a key the way MLflow does (non-empty, ≤ 250 characters, only alphanumerics,
/// `_ - . / space :`), so a bad record is refused when it is logged, not when its batch is.
///
/// # Errors
/// [`Error::MlflowInvalid`] naming the key.
pub fn validate_key(key: &str) -> Result<()> {
    let ok_char = |c: char| c.is_alphanumeric() || "_-./ :".contains(c);
    if key.is_empty() || key.chars().count() > MAX_KEY_LENGTH || !key.chars().all(ok_char) {
        return Err(Error::MlflowInvalid(format!(
            "invalid key {key:?}: 1 to {MAX_KEY_LENGTH} characters from [A-Za-z0-9_-./ :]"
        )));
    }
    if key.split('/').any(|part| part == "." || part == "..") || key.starts_with('/') {
        return Err(Error::MlflowInvalid(format!(
            "invalid key {key:?}: not a relative path"
        )));
    }
    Ok(())
}

/// Checks a value's length against `limit` characters.
///
/// # Errors
/// [`Error::MlflowInvalid`] naming the key.
pub fn validate_value(key: &str, value: &str, limit: usize) -> Result<()> {
    if value.chars().count() > limit {
        return Err(Error::MlflowInvalid(format!(
            "value of {key:?} is longer than {limit} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: usize) -> Metric {
        Metric {
            key: format!("k{}", i % 3),
            value: i as f64,
            timestamp: 1,
            step: i as i64,
        }
    }

    #[test]
    fn chunking_respects_every_limit_and_keeps_order() {
        let metrics: Vec<_> = (0..2500).map(m).collect();
        let params: Vec<_> = (0..250)
            .map(|i| Param {
                key: format!("p{i}"),
                value: "v".into(),
            })
            .collect();
        let tags: Vec<_> = (0..130).map(|i| Tag::new(format!("t{i}"), "x")).collect();
        let batches = chunk(&metrics, &params, &tags);
        for b in &batches {
            assert!(b.metrics.len() <= MAX_METRICS_PER_BATCH);
            assert!(b.params.len() <= MAX_PARAMS_PER_BATCH);
            assert!(b.tags.len() <= MAX_TAGS_PER_BATCH);
            assert!(b.len() <= MAX_ENTITIES_PER_BATCH);
            assert!(serde_json::to_vec(b).unwrap().len() <= MAX_BATCH_REQUEST_BYTES);
        }
        let all_m: Vec<_> = batches.iter().flat_map(|b| b.metrics.clone()).collect();
        let all_p: Vec<_> = batches.iter().flat_map(|b| b.params.clone()).collect();
        let all_t: Vec<_> = batches.iter().flat_map(|b| b.tags.clone()).collect();
        assert_eq!(all_m, metrics);
        assert_eq!(all_p, params);
        assert_eq!(all_t, tags);
        // [100 p] [100 p] [50 p + 100 t] [30 t + 970 m] [1000 m] [530 m]
        assert_eq!(batches.len(), 6);
        assert!(chunk(&[], &[], &[]).is_empty());
    }

    #[test]
    fn chunking_respects_the_byte_limit() {
        let big = "x".repeat(MAX_TAG_VALUE_LENGTH);
        let tags: Vec<_> = (0..100)
            .map(|i| Tag::new(format!("t{i}"), big.clone()))
            .collect();
        let batches = chunk(&[], &[], &tags);
        assert!(batches.len() >= 2);
        for b in &batches {
            assert!(serde_json::to_vec(b).unwrap().len() <= MAX_BATCH_REQUEST_BYTES / 2 + 100);
        }
        assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 100);
    }

    #[test]
    fn non_finite_values_round_trip_as_protobuf_json_strings() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5, -0.0] {
            let metric = Metric {
                key: "a".into(),
                value: v,
                timestamp: 3,
                step: 4,
            };
            let json = serde_json::to_string(&metric).unwrap();
            let back: Metric = serde_json::from_str(&json).unwrap();
            assert_eq!(back.identity(), metric.identity(), "{json}");
        }
        let json = serde_json::to_string(&Metric {
            key: "a".into(),
            value: f64::NAN,
            timestamp: 3,
            step: 4,
        })
        .unwrap();
        assert_eq!(json, r#"{"key":"a","value":"NaN","timestamp":3,"step":4}"#);
    }

    #[test]
    fn keys_are_checked_like_mlflow() {
        assert!(validate_key("solver/residual").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\"b").is_err());
        assert!(validate_key("../x").is_err());
        assert!(validate_key(&"k".repeat(251)).is_err());
        assert!(validate_value("p", &"v".repeat(6001), MAX_PARAM_VALUE_LENGTH).is_err());
    }
}
