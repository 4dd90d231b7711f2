//! The bodies of MLflow's answers that [`Client`](super::Client) decodes, and
//! [`decode`]/[`api_error`], the two functions every answer goes through. They take bytes from
//! the network, so they are fuzzed (`fuzz/fuzz_targets/mlflow_json.rs`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{Experiment, FileInfo, Metric, Run};
use crate::{Error, Result};

/// `experiments/get-by-name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetExperiment {
    /// The experiment.
    pub experiment: Experiment,
}

/// `experiments/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateExperiment {
    /// Id of the new experiment.
    pub experiment_id: String,
}

/// `runs/create` and `runs/get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRun {
    /// The run.
    pub run: Run,
}

/// `metrics/get-history` (one page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricHistory {
    /// Values of the page.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Token of the next page; absent or empty on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `runs/search` (one page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRuns {
    /// Runs of the page.
    #[serde(default)]
    pub runs: Vec<Run>,
    /// Token of the next page; absent or empty on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `artifacts/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListArtifacts {
    /// Entries directly under the listed path.
    #[serde(default)]
    pub files: Vec<FileInfo>,
}

/// Decodes a successful answer of `endpoint`.
///
/// # Errors
/// [`Error::MlflowInvalid`] quoting (at most 300 bytes of) the body when it is not the
/// expected JSON.
pub fn decode<T: DeserializeOwned>(endpoint: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::MlflowInvalid(format!(
            "{endpoint}: unexpected answer ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ))
    })
}

/// The error for a 4xx/5xx answer: MLflow's `error_code` and `message` when the body is its
/// JSON error, otherwise the body's first 500 characters as the message.
pub fn api_error(endpoint: &str, status: u16, body: &str) -> Error {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        message: String,
    }
    let (error_code, message) = match serde_json::from_str::<E>(body) {
        Ok(e) => (e.error_code, e.message),
        Err(_) => (String::new(), body.chars().take(500).collect()),
    };
    Error::MlflowApi {
        endpoint: endpoint.to_owned(),
        status,
        error_code,
        message,
    }
}
