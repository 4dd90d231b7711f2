//! The plugin's error type.

use tch::{Device, Kind};

/// Everything that can go wrong in the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Tch(#[from] tch::TchError),
    /// The core refused or failed a solve.
    #[error(transparent)]
    Core(#[from] ibau_core::Error),
    /// Two parameter lists do not match (count, shape, dtype or device).
    #[error("{what}: tensor {index} expected {expected}, found {found}")]
    Mismatch {
        /// What was compared.
        what: &'static str,
        /// Index of the first tensor that differs.
        index: usize,
        /// What was expected (shape, dtype or device, as text).
        expected: String,
        /// What was found.
        found: String,
    },
    /// A dtype the operation does not support.
    #[error("unsupported dtype {0:?} (use Float or Double)")]
    UnsupportedKind(Kind),
    /// A tensor that must require gradients does not.
    #[error("{0} must require gradients (call set_requires_grad(true) on leaf tensors)")]
    NoGrad(&'static str),
    /// A loss closure did not return a scalar.
    #[error("{what} must be a scalar, found shape {shape:?}")]
    NotScalar {
        /// Which loss.
        what: &'static str,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// CUDA was asked for and is not available.
    #[error("device {0:?} is not available")]
    DeviceUnavailable(Device),
    /// An iteration of the plugin's own (not the core's) ended without meeting its tolerance.
    #[error("{what}: not converged after {iterations} iterations (residual {residual:e}, tolerance {tolerance:e})")]
    NotConverged {
        /// Which iteration.
        what: &'static str,
        /// Iterations taken.
        iterations: usize,
        /// The residual it ended at.
        residual: f64,
        /// The tolerance it did not reach.
        tolerance: f64,
    },
    /// Values that must be finite are not.
    #[error("{what}: {count} non-finite values")]
    NonFinite {
        /// Which values.
        what: &'static str,
        /// How many are NaN or infinite.
        count: i64,
    },
    /// Malformed outside input (a data file, a config).
    #[error("parse error: {0}")]
    Parse(String),
    /// An invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The MLflow server refused a request (4xx, or 5xx once retries are spent), with the
    /// server's `error_code` and `message`.
    #[error("MLflow {endpoint}: HTTP {status} {error_code}: {message}")]
    MlflowApi {
        /// The REST endpoint, e.g. `runs/log-batch`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code`, e.g. `INVALID_PARAMETER_VALUE`.
        error_code: String,
        /// MLflow's `message`.
        message: String,
    },
    /// The MLflow server could not be reached, or kept failing, after bounded retries.
    #[error("MLflow {endpoint}: unreachable after {attempts} attempts: {message}")]
    MlflowUnreachable {
        /// The REST endpoint.
        endpoint: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error or status.
        message: String,
    },
    /// A tracking input MLflow would reject (key too long, bad URI, artifact path escaping
    /// the run, an unreadable spool).
    #[error("MLflow: {0}")]
    MlflowInvalid(String),
    /// The local `mlflow server` could not be started or did not become healthy.
    #[error("mlflow server: {0}")]
    MlflowServer(String),
}

/// Result with the plugin's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
