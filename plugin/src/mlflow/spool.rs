//! The on-disk spool: a write-ahead log of one run's records, replayed to the server so that
//! no record is lost and none is logged twice.
//!
//! # Format
//! One JSON-lines file per run, `<dir>/<spool id>.jsonl`, appended to and never rewritten:
//!
//! | line | meaning |
//! |---|---|
//! | `header` | experiment, run name, start time, tags, parent — what `runs/create` needs |
//! | `run` | the server created the run: its id and `artifact_uri` |
//! | `metric` / `param` / `tag` / `artifact` | a record with its sequence number `seq` (1, 2, …) |
//! | `inflight {from, to}` | records `from..=to` are being sent |
//! | `ack {upto}` | the server holds every record with `seq ≤ upto` (the high-water mark) |
//! | `rejected {from, to, error}` | the server refused those records (4xx); not retried |
//! | `finish {status, end_time}` | the run ended locally |
//! | `done` | the server has the terminal status: the file is renamed `*.jsonl.done` |
//!
//! # Why nothing is lost or doubled
//! Every record is written here before it is sent. A window of records is sent only after an
//! `inflight` line names it, and acknowledged only after the server answered 2xx. On replay
//! (the same process after an outage, or [`sync_dir`] after a crash), records above the
//! high-water mark are sent again; if an `inflight` line above the mark exists, the first send
//! may have been applied, so the window goes through [`Client::log_batch_chunk`] with
//! `maybe_applied`, which leaves out metrics already in the server's history. Params and
//! tags are idempotent. Artifact uploads are `PUT`s of a copy kept in `<id>.files/` (taken
//! when the upload failed), idempotent as well. Run creation is made idempotent by the tag
//! `ibau.spool_id`: before creating a run, the spool searches for one carrying its id.
//!
//! A torn last line (a crash mid-write) is ignored when the file is read.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::client::Client;
use super::types::{
    Batch, Metric, Param, RunStatus, Tag, MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH,
};
use crate::{Error, Result};

/// The tag that makes run creation idempotent: the spool id of the run.
pub const SPOOL_ID_TAG: &str = "ibau.spool_id";

/// Where a run's parent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentRef {
    /// A run already on the server.
    RunId(String),
    /// A run known only by its spool id (created offline); resolved at sync.
    Spool(String),
}

/// What `runs/create` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Spool id (also the file name and the [`SPOOL_ID_TAG`] value).
    pub spool_id: String,
    /// Experiment name.
    pub experiment: String,
    /// Run name.
    pub run_name: String,
    /// Start, ms since the epoch.
    pub start_time: i64,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
    /// Parent run, for nested (sweep) runs.
    pub parent: Option<ParentRef>,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A metric value.
    Metric(Metric),
    /// A param.
    Param(Param),
    /// A tag.
    Tag(Tag),
    /// An artifact: the spooled copy and its path under the run's artifact root.
    Artifact {
        /// The copy in the spool's `.files/` directory.
        file: PathBuf,
        /// Relative path under the run's artifacts.
        artifact_path: String,
    },
}

/// One line of the spool file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Entry {
    Header(Header),
    Run {
        run_id: String,
        artifact_uri: String,
    },
    Record {
        seq: u64,
        record: Record,
    },
    Inflight {
        from: u64,
        to: u64,
    },
    Ack {
        upto: u64,
    },
    Rejected {
        from: u64,
        to: u64,
        error: String,
    },
    Finish {
        status: RunStatus,
        end_time: i64,
    },
    Done,
}

/// What a [`Spool::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records acknowledged by the server in this sync.
    pub sent: usize,
    /// Metrics left out because the server already held them (unknown-outcome replays).
    pub already_present: usize,
    /// Windows whose outcome was unknown and were reconciled against the metric history.
    pub reconciled: usize,
    /// Records still waiting (0 after a complete sync).
    pub pending: usize,
    /// Whether the run's terminal status reached the server (for [`sync_dir`]: some run's).
    pub finished: bool,
}

/// One run's spool file, open for appending.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    header: Header,
    run: Option<(String, String)>,
    records: Vec<(u64, Record)>,
    acked: u64,
    inflight: Option<(u64, u64)>,
    finish: Option<(RunStatus, i64)>,
    done: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh spool id: creation time, process id and a counter, so ids sort by creation.
pub fn new_spool_id() -> String {
    format!(
        "{:013}-{}-{:06}",
        super::now_ms(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Spool {
    /// Creates `<dir>/<header.spool_id>.jsonl` (and `dir`).
    ///
    /// # Errors
    /// [`Error::File`] when the directory or file cannot be created.
    pub fn create(dir: &Path, header: Header) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(format!("{}.jsonl", header.spool_id));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut s = Self {
            path,
            file,
            header: header.clone(),
            run: None,
            records: Vec::new(),
            acked: 0,
            inflight: None,
            finish: None,
            done: false,
        };
        s.append(&Entry::Header(header))?;
        Ok(s)
    }

    /// Opens an existing spool file and replays its lines into memory.
    ///
    /// # Errors
    /// [`Error::File`] when it cannot be read or has no header.
    pub fn open(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let mut header = None;
        let mut s_run = None;
        let mut records = Vec::new();
        let (mut acked, mut inflight, mut finish, mut done) = (0, None, None, false);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A torn last line (crash mid-write) does not parse; it was never acknowledged.
            let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                continue;
            };
            match entry {
                Entry::Header(h) => header = Some(h),
                Entry::Run {
                    run_id,
                    artifact_uri,
                } => s_run = Some((run_id, artifact_uri)),
                Entry::Record { seq, record } => records.push((seq, record)),
                Entry::Inflight { from, to } => inflight = Some((from, to)),
                Entry::Ack { upto } | Entry::Rejected { to: upto, .. } => acked = acked.max(upto),
                Entry::Finish { status, end_time } => finish = Some((status, end_time)),
                Entry::Done => done = true,
            }
        }
        let header = header.ok_or_else(|| io_err(path, "spool file without a header line"))?;
        if inflight.is_some_and(|(_, to)| to <= acked) {
            inflight = None;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            header,
            run: s_run,
            records,
            acked,
            inflight,
            finish,
            done,
        })
    }

    fn append(&mut self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(|e| io_err(&self.path, e))?;
        line.push(b'\n');
        // One write per line on an O_APPEND file: a crash leaves at most a torn last line.
        self.file
            .write_all(&line)
            .map_err(|e| io_err(&self.path, e))
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The server's run id, once the run exists there.
    pub fn run_id(&self) -> Option<&str> {
        self.run.as_ref().map(|(id, _)| id.as_str())
    }

    /// The run's `artifact_uri`, once the run exists on the server.
    pub fn artifact_uri(&self) -> Option<&str> {
        self.run.as_ref().map(|(_, uri)| uri.as_str())
    }

    /// Records not acknowledged yet.
    pub fn pending(&self) -> usize {
        self.records
            .iter()
            .filter(|(seq, _)| *seq > self.acked)
            .count()
    }

    /// Whether the terminal status reached the server.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends a record and returns its sequence number.
    ///
    /// # Errors
    /// [`Error::File`] when the line cannot be written.
    pub fn push(&mut self, record: Record) -> Result<u64> {
        let seq = self.records.last().map_or(self.acked, |(s, _)| *s) + 1;
        self.append(&Entry::Record {
            seq,
            record: record.clone(),
        })?;
        self.records.push((seq, record));
        Ok(seq)
    }

    /// Spools an artifact: copies `local` to `<id>.files/<seq>` so later changes to the file
    /// do not matter, and appends its record.
    ///
    /// # Errors
    /// [`Error::File`] when the copy fails.
    pub fn push_artifact(&mut self, local: &Path, artifact_path: &str) -> Result<u64> {
        let dir = self.files_dir();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let seq = self.records.last().map_or(self.acked, |(s, _)| *s) + 1;
        let copy = dir.join(seq.to_string());
        fs::copy(local, &copy).map_err(|e| io_err(local, e))?;
        self.push(Record::Artifact {
            file: copy,
            artifact_path: artifact_path.to_owned(),
        })
    }

    fn files_dir(&self) -> PathBuf {
        self.path.with_extension("files")
    }

    /// Records that the run ended with `status` (sent at the next [`Spool::sync`]).
    ///
    /// # Errors
    /// [`Error::File`].
    pub fn finish(&mut self, status: RunStatus, end_time: i64) -> Result<()> {
        self.append(&Entry::Finish { status, end_time })?;
        self.finish = Some((status, end_time));
        Ok(())
    }

    /// Records that the run was created on the server (done by [`Spool::sync`]; public for a
    /// tracker that creates the run itself).
    ///
    /// # Errors
    /// [`Error::File`].
    pub fn set_run(&mut self, run_id: &str, artifact_uri: &str) -> Result<()> {
        self.append(&Entry::Run {
            run_id: run_id.into(),
            artifact_uri: artifact_uri.into(),
        })?;
        self.run = Some((run_id.into(), artifact_uri.into()));
        Ok(())
    }

    /// Creates the run on the server if needed, idempotently (see the module docs).
    ///
    /// # Errors
    /// Client errors; [`Error::MlflowInvalid`] if the parent is an unsynced spool.
    pub fn ensure_run(&mut self, client: &Client) -> Result<(String, String)> {
        if let Some(run) = &self.run {
            return Ok(run.clone());
        }
        let exp = client.get_or_create_experiment(&self.header.experiment)?;
        let filter = format!("tags.\"{SPOOL_ID_TAG}\" = '{}'", self.header.spool_id);
        let existing = client.search_runs(std::slice::from_ref(&exp), &filter, 1)?;
        let info = match existing.into_iter().next() {
            Some(run) => run.info,
            None => {
                let mut tags = self.header.tags.clone();
                tags.push(Tag::new(SPOOL_ID_TAG, &self.header.spool_id));
                if let Some(parent) = self.resolve_parent()? {
                    tags.push(Tag::new("mlflow.parentRunId", parent));
                }
                client.create_run(&exp, &self.header.run_name, self.header.start_time, &tags)?
            }
        };
        self.set_run(&info.run_id, &info.artifact_uri)?;
        Ok((info.run_id, info.artifact_uri))
    }

    fn resolve_parent(&self) -> Result<Option<String>> {
        match &self.header.parent {
            None => Ok(None),
            Some(ParentRef::RunId(id)) => Ok(Some(id.clone())),
            Some(ParentRef::Spool(id)) => {
                let dir = self.path.parent().unwrap_or(Path::new("."));
                for name in [format!("{id}.jsonl"), format!("{id}.jsonl.done")] {
                    if let Ok(parent) = Spool::open(&dir.join(name)) {
                        if let Some(run_id) = parent.run_id() {
                            return Ok(Some(run_id.to_owned()));
                        }
                    }
                }
                Err(Error::MlflowInvalid(format!(
                    "parent spool {id} is not synced yet"
                )))
            }
        }
    }

    /// Sends everything not yet acknowledged, in order, then the terminal status if the run
    /// has finished; a fully synced, finished spool is renamed `*.jsonl.done` and its artifact
    /// copies removed.
    ///
    /// # Errors
    /// Client errors ([`Error::MlflowUnreachable`]: try again later; nothing is lost).
    /// A 4xx on a window of records marks it `rejected` (so it does not block the rest) and is
    /// returned after the remaining records are sent.
    pub fn sync(&mut self, client: &Client) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        if self.done {
            return Ok(report);
        }
        let (run_id, artifact_uri) = self.ensure_run(client)?;
        let mut rejected = None;
        loop {
            let start = self.records.partition_point(|(seq, _)| *seq <= self.acked);
            let Some((first_seq, first)) = self.records.get(start).cloned() else {
                break;
            };
            if let Record::Artifact {
                file,
                artifact_path,
            } = &first
            {
                let inflight = (first_seq, first_seq);
                self.append(&Entry::Inflight {
                    from: first_seq,
                    to: first_seq,
                })?;
                self.inflight = Some(inflight);
                match client.upload_artifact(&artifact_uri, artifact_path, file) {
                    Ok(()) => self.ack(first_seq)?,
                    Err(e @ (Error::MlflowApi { .. } | Error::MlflowInvalid(_))) => {
                        self.reject(first_seq, first_seq, &e)?;
                        rejected = Some(e);
                    }
                    Err(e) => return Err(e),
                }
                let _ = fs::remove_file(file);
                report.sent += 1;
                continue;
            }
            let (batch, last_seq) = self.window(start);
            let maybe_applied = self
                .inflight
                .is_some_and(|(from, to)| from <= last_seq && to >= first_seq);
            self.append(&Entry::Inflight {
                from: first_seq,
                to: last_seq,
            })?;
            self.inflight = Some((first_seq, last_seq));
            match client.log_batch_chunk(&run_id, &batch, maybe_applied) {
                Ok(out) => {
                    self.ack(last_seq)?;
                    report.sent += batch.len();
                    report.already_present += out.already_present;
                    report.reconciled += usize::from(out.reconciled);
                }
                Err(e @ Error::MlflowApi { .. }) => {
                    self.reject(first_seq, last_seq, &e)?;
                    rejected = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let (Some((status, end_time)), true) = (self.finish, self.pending() == 0) {
            client.update_run(&run_id, status, Some(end_time))?;
            self.append(&Entry::Done)?;
            self.done = true;
            report.finished = true;
            let _ = fs::remove_dir_all(self.files_dir());
            let done = self.path.with_extension("jsonl.done");
            fs::rename(&self.path, &done).map_err(|e| io_err(&self.path, e))?;
            self.path = done;
        }
        report.pending = self.pending();
        match rejected {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    fn ack(&mut self, upto: u64) -> Result<()> {
        self.append(&Entry::Ack { upto })?;
        self.acked = upto;
        self.inflight = None;
        Ok(())
    }

    fn reject(&mut self, from: u64, to: u64, e: &Error) -> Result<()> {
        self.append(&Entry::Rejected {
            from,
            to,
            error: e.to_string(),
        })?;
        self.acked = to;
        self.inflight = None;
        Ok(())
    }

    /// The longest run of non-artifact records from index `start` that fits one request.
    fn window(&self, start: usize) -> (Batch, u64) {
        let mut b = Batch::default();
        let mut last = 0;
        let mut bytes = 0;
        for (seq, r) in &self.records[start..] {
            let size = serde_json::to_vec(r).map_or(usize::MAX / 4, |v| v.len() + 1);
            let full = b.len() == MAX_ENTITIES_PER_BATCH || bytes + size > 400_000;
            match r {
                Record::Artifact { .. } => break,
                _ if full => break,
                Record::Metric(m) if b.metrics.len() < MAX_METRICS_PER_BATCH => {
                    b.metrics.push(m.clone());
                }
                Record::Param(p) if b.params.len() < MAX_PARAMS_PER_BATCH => {
                    b.params.push(p.clone())
                }
                Record::Tag(t) if b.tags.len() < MAX_TAGS_PER_BATCH => b.tags.push(t.clone()),
                _ => break,
            }
            bytes += size;
            last = *seq;
        }
        (b, last)
    }
}

/// Replays every unfinished spool in `dir` (oldest first, so parents exist before their
/// children), skipping runs whose process is still alive (their tracker syncs them).
///
/// # Errors
/// [`Error::File`] when `dir` cannot be read; the first sync error otherwise, after trying
/// every spool.
pub fn sync_dir(dir: &Path, client: &Client) -> Result<SyncReport> {
    let mut total = SyncReport::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(total);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    let mut first_err = None;
    for p in paths {
        if held_by_live_process(&p) {
            continue;
        }
        let result = Spool::open(&p).and_then(|mut s| s.sync(client));
        match result {
            Ok(r) => {
                total.sent += r.sent;
                total.already_present += r.already_present;
                total.reconciled += r.reconciled;
                total.pending += r.pending;
                total.finished |= r.finished;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Whether the spool's id names a process that is still running (and is not us).
fn held_by_live_process(path: &Path) -> bool {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let pid = stem.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if pid != std::process::id() => Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str) -> Header {
        Header {
            spool_id: id.into(),
            experiment: "e".into(),
            run_name: "r".into(),
            start_time: 1,
            tags: vec![Tag::new("a", "b")],
            parent: None,
        }
    }

    fn metric(step: i64) -> Record {
        Record::Metric(Metric {
            key: "loss".into(),
            value: step as f64,
            timestamp: 5,
            step,
        })
    }

    #[test]
    fn replay_restores_records_high_water_mark_and_inflight() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::create(dir.path(), header("0000000000001-1-0")).unwrap();
        for step in 0..5 {
            s.push(metric(step)).unwrap();
        }
        s.push(Record::Param(Param {
            key: "p".into(),
            value: "1".into(),
        }))
        .unwrap();
        s.set_run("abc", "mlflow-artifacts:/1/abc/artifacts")
            .unwrap();
        s.append(&Entry::Inflight { from: 1, to: 3 }).unwrap();
        s.ack(3).unwrap();
        s.append(&Entry::Inflight { from: 4, to: 6 }).unwrap();
        let path = s.path().to_owned();
        drop(s);
        // A crash mid-write leaves a torn line; it must be ignored.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"type\":\"record\",\"seq\":7,\"rec")
            .unwrap();

        let r = Spool::open(&path).unwrap();
        assert_eq!(r.header(), &header("0000000000001-1-0"));
        assert_eq!(r.run_id(), Some("abc"));
        assert_eq!(r.acked, 3);
        assert_eq!(r.pending(), 3);
        assert_eq!(r.inflight, Some((4, 6)));
        let (batch, last) = r.window(r.records.partition_point(|(s, _)| *s <= r.acked));
        assert_eq!(last, 6);
        assert_eq!(
            batch.metrics.iter().map(|m| m.step).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(batch.params.len(), 1);
    }

    #[test]
    fn window_stops_at_artifacts_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::create(dir.path(), header("0000000000002-1-0")).unwrap();
        for step in 0..1500 {
            s.push(metric(step)).unwrap();
        }
        let src = dir.path().join("a.bin");
        fs::write(&src, [0u8, 1, 2, 255]).unwrap();
        s.push_artifact(&src, "x/a.bin").unwrap();
        s.push(metric(1500)).unwrap();
        let (b, last) = s.window(0);
        assert_eq!((b.metrics.len(), last), (1000, 1000));
        let (b, last) = s.window(1000);
        assert_eq!((b.metrics.len(), last), (500, 1500));
        assert!(matches!(s.records[1500].1, Record::Artifact { .. }));
        // The spooled copy is independent of the original.
        fs::write(&src, b"changed").unwrap();
        let Record::Artifact { file, .. } = &s.records[1500].1 else {
            unreachable!()
        };
        assert_eq!(fs::read(file).unwrap(), vec![0u8, 1, 2, 255]);
    }

    #[test]
    fn spool_ids_sort_by_creation_and_name_their_process() {
        let a = new_spool_id();
        let b = new_spool_id();
        assert!(a < b, "{a} {b}");
        let pid = a.split('-').nth(1).unwrap().parse::<u32>().unwrap();
        assert_eq!(pid, std::process::id());
    }
}
