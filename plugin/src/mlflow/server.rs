//! A local `mlflow server` process: the embedded default store, and the server the tests use.
//!
//! It runs `mlflow server --host 127.0.0.1 --port <free port> --backend-store-uri
//! sqlite:///<root>/mlflow.db --artifacts-destination <root>/mlruns --serve-artifacts` in its
//! own process group (uvicorn runs in a child process), with
//! `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` (MLflow 3's background job runner is for GenAI
//! evaluation; it would start several more Python processes). Dropping the handle kills the
//! whole group.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::Client;
use crate::{Error, Result};

/// The project venv's `mlflow` executable: `$IBAU_MLFLOW` if set, else
/// `<workspace root>/.venv/bin/mlflow` (installed by `scripts/setup` from requirements.txt).
pub fn default_mlflow() -> PathBuf {
    match std::env::var_os("IBAU_MLFLOW") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/mlflow"),
    }
}

/// [`default_mlflow`] if it exists.
///
/// # Errors
/// [`Error::MlflowServer`] telling to run `scripts/setup`.
pub fn find_mlflow() -> Result<PathBuf> {
    let p = default_mlflow();
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MlflowServer(format!(
            "{} not found: run scripts/setup (it installs mlflow from requirements.txt into .venv)",
            p.display()
        )))
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: another process could take it first,
/// which [`LocalServer::wait_healthy`] would then report).
///
/// # Errors
/// [`Error::MlflowServer`] if no port can be bound.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::MlflowServer(format!("no free port on 127.0.0.1: {e}")))
}

/// A running `mlflow server` on 127.0.0.1, killed (with its process group) on drop.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    mlflow: PathBuf,
    root: PathBuf,
    port: u16,
    log: PathBuf,
}

impl LocalServer {
    /// Starts a server storing into `root` (`mlflow.db`, `mlruns/`) on a free port and waits
    /// until `/health` answers, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::MlflowServer`] if it cannot be started or does not become healthy.
    pub fn start(mlflow: &Path, root: &Path, timeout: Duration) -> Result<Self> {
        let mut s = Self::spawn(mlflow, root, free_port()?)?;
        s.wait_healthy(timeout)?;
        Ok(s)
    }

    /// Starts the server on `port` without waiting for it.
    ///
    /// # Errors
    /// [`Error::MlflowServer`] if the process cannot be spawned.
    pub fn spawn(mlflow: &Path, root: &Path, port: u16) -> Result<Self> {
        let root = std::path::absolute(root)
            .map_err(|e| Error::MlflowServer(format!("{}: {e}", root.display())))?;
        std::fs::create_dir_all(root.join("mlruns"))
            .map_err(|e| Error::MlflowServer(format!("{}: {e}", root.display())))?;
        let mut s = Self {
            child: None,
            mlflow: mlflow.to_owned(),
            log: root.join("mlflow-server.log"),
            root,
            port,
        };
        s.restart()?;
        Ok(s)
    }

    /// (Re)starts the process on the same port and store (after [`LocalServer::kill`]).
    ///
    /// # Errors
    /// [`Error::MlflowServer`] if the process cannot be spawned.
    pub fn restart(&mut self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        self.kill();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::MlflowServer(format!("{}: {e}", self.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::MlflowServer(format!("{}: {e}", self.log.display())))?;
        let child = Command::new(&self.mlflow)
            .arg("server")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                self.root.join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(self.root.join("mlruns"))
            .arg("--serve-artifacts")
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env_remove("MLFLOW_TRACKING_URI")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::MlflowServer(format!(
                    "cannot run {}: {e} (run scripts/setup to install mlflow into .venv)",
                    self.mlflow.display()
                ))
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `GET /health` answers, at most `timeout` (polling every 250 ms).
    ///
    /// # Errors
    /// [`Error::MlflowServer`] with the tail of the server's log if the process exits or the
    /// time runs out.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let client = self.client()?;
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if client.health() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::MlflowServer(format!(
                        "exited with {status} before answering /health; log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(Error::MlflowServer(format!(
            "no answer on {} after {timeout:?}; log:\n{}",
            self.url(),
            self.log_tail()
        )))
    }

    /// Whether `/health` answers now (one attempt).
    pub fn is_healthy(&self) -> bool {
        self.client().is_ok_and(|c| c.health())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store's root directory (`mlflow.db`, `mlruns/`, `mlflow-server.log`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A client for this server.
    ///
    /// # Errors
    /// Never in practice (the URL is http).
    pub fn client(&self) -> Result<Client> {
        Client::new(&self.url())
    }

    /// Kills the server's process group (SIGKILL) and reaps it; a no-op when not running.
    /// The sqlite store stays consistent (every write is its own transaction).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group id is the child's pid (process_group(0)); `kill -- -pgid` reaches
            // uvicorn too. No libc: the workspace forbids unsafe code.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            // Wait (bounded) until the port is free again, so a restart can bind it.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10)
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}
