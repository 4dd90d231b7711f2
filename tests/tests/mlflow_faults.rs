//! Faults against a real `mlflow server`: the server killed mid-run and restarted on the same
//! port and store; a run finished while the server is down and replayed from its spool; and a
//! loopback proxy that answers 5xx in bursts and drops connections after forwarding. In each,
//! every metric logged is found exactly once.

mod mlflow_common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibau_plugin::mlflow::{sync, Client, RunStatus, Tracker, TrackerConfig};
use mlflow_common::{config, count, fast_retry, start_server, value, START};

const KEYS: [&str; 3] = ["loss", "grad_norm", "asr"];

fn log_steps(run: &mut Tracker, steps: std::ops::Range<i64>) -> usize {
    let mut n = 0;
    for step in steps {
        for (k, key) in KEYS.iter().enumerate() {
            // A tracking failure must not reach the caller as an error.
            run.log_metric(key, value(k, step), step)
                .expect("a record is always spooled");
            n += 1;
        }
    }
    n
}

fn found(client: &Client, run_id: &str) -> (usize, usize) {
    KEYS.iter()
        .map(|k| count(client, run_id, k))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn server_killed_mid_run_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    let (dir, mut server) = start_server();
    let client = Client::with(&server.url(), None, fast_retry()).unwrap();

    // (a) Killed at step 100 of 300, restarted (same port, same sqlite db) at step 200.
    let mut run =
        Tracker::start_with(client.clone(), config(dir.path(), "faults", "killed"), &[]).unwrap();
    let run_id = run.run_id().expect("run created").to_owned();
    let mut logged = log_steps(&mut run, 0..100);
    server.kill();
    logged += log_steps(&mut run, 100..200);
    assert!(run.stats().failed_syncs > 0, "{:?}", run.stats());
    server.restart().unwrap();
    server.wait_healthy(START).unwrap();
    logged += log_steps(&mut run, 200..300);
    let stats = run.stats();
    let report = run
        .finish(RunStatus::Finished)
        .expect("synced after the restart");
    assert_eq!(report.pending, 0);
    let (found_n, distinct) = found(&client, &run_id);
    eprintln!(
        "killed server: logged {logged}, found {found_n}, distinct {distinct}, {stats:?}, {report:?}"
    );
    assert_eq!((found_n, distinct), (logged, logged));
    assert_eq!(logged, 900);

    // (a') Finished while the server is down: everything stays in the spool and `sync`
    // replays it once the server is back.
    let mut run =
        Tracker::start_with(client.clone(), config(dir.path(), "faults", "offline"), &[]).unwrap();
    let run_id = run.run_id().expect("run created").to_owned();
    let mut logged = log_steps(&mut run, 0..40);
    server.kill();
    logged += log_steps(&mut run, 40..80);
    let spool = run.spool_path().to_owned();
    let err = run.finish(RunStatus::Failed).expect_err("server is down");
    eprintln!("finish while down: {err}");
    assert!(spool.is_file());
    server.restart().unwrap();
    server.wait_healthy(START).unwrap();
    let replay = sync(&client, &dir.path().join("spool")).expect("replay");
    assert!(replay.finished || replay.sent > 0, "{replay:?}");
    let (found_n, distinct) = found(&client, &run_id);
    eprintln!("replayed spool: logged {logged}, found {found_n}, distinct {distinct}, {replay:?}");
    assert_eq!((found_n, distinct), (logged, logged));
    assert_eq!(
        client.get_run(&run_id).unwrap().info.status,
        RunStatus::Failed
    );
    // Replaying again sends nothing.
    let again = sync(&client, &dir.path().join("spool")).unwrap();
    assert_eq!(again.sent, 0);
    assert_eq!(found(&client, &run_id), (logged, logged));
    drop(server);
    eprintln!("server_killed_mid_run: {:.1} s", t0.elapsed().as_secs_f64());
}

/// What the proxy did.
#[derive(Default)]
struct ProxyStats {
    requests: AtomicUsize,
    answered_5xx: AtomicUsize,
    dropped_after_forward: AtomicUsize,
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body) from `s`, bounded.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // One request per connection: tell the server to close after answering.
    let head = String::from_utf8_lossy(&buf[..head_end])
        .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let head = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection: keep-alive"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&buf[head_end..]);
    Some(out)
}

/// Forwards to `upstream`. Request n (from 0) is answered 503 without forwarding when
/// `n % 10` is 3, 4 or 5 (a burst of three); of the `runs/log-batch` requests that get through,
/// every third is forwarded and its answer dropped (the server stored it; the client cannot
/// know), as is every fifth other request (run creation, reads).
fn serve(mut client: TcpStream, upstream: u16, n: usize, batches: &mut usize, stats: &ProxyStats) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut client) else {
        return;
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let burst = (3..=5).contains(&(n % 10));
    let drop_answer = if req.starts_with(b"POST /api/2.0/mlflow/runs/log-batch ") {
        *batches += usize::from(!burst);
        !burst && batches.is_multiple_of(3)
    } else {
        n % 5 == 1
    };
    match n % 10 {
        3..=5 => {
            stats.answered_5xx.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"proxy burst"}"#;
            let _ = write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        _ => {
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let _ = up.set_read_timeout(Some(Duration::from_secs(30)));
            if up.write_all(&req).is_err() {
                return;
            }
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer);
            if drop_answer {
                // The server did the work; the client never hears of it.
                stats.dropped_after_forward.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = client.write_all(&answer);
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

#[test]
fn flaky_proxy_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    let (dir, server) = start_server();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stats = Arc::new(ProxyStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = server.port();
    let proxy = {
        let (stats, stop) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut n, mut batches) = (0, 0);
            // Bounded by time as well as by `stop`.
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        serve(s, upstream, n, &mut batches, &stats);
                        n += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })
    };

    let client = Client::with(
        &format!("http://127.0.0.1:{proxy_port}"),
        None,
        fast_retry(),
    )
    .unwrap();
    let params = [("lr", "0.01".to_owned()), ("k", "5".to_owned())];
    // Run creation can itself meet a dropped answer; the tracker then finds the run by its
    // spool tag at the next sync, so a few records may go before it has an id.
    let mut tracker = Tracker::start_with(
        client.clone(),
        TrackerConfig {
            flush_every: 15,
            ..config(dir.path(), "faults", "flaky")
        },
        &params,
    )
    .unwrap();
    // Slowly enough that the tracker sends many small batches (it pauses 0.2–0.4 s after a
    // failed send): 200 steps over ~2 s, a batch every 5 steps.
    let mut logged = 0;
    for step in 0..200 {
        logged += log_steps(&mut tracker, step..step + 1);
        std::thread::sleep(Duration::from_millis(10));
    }
    tracker.set_tag("phase", "done").unwrap();
    let tstats = tracker.stats();
    let report = tracker
        .finish(RunStatus::Finished)
        .expect("finish through the flaky proxy");
    assert_eq!(report.pending, 0);
    stop.store(true, Ordering::Relaxed);
    proxy.join().unwrap();

    // Count through the server directly.
    let direct = server.client().unwrap();
    let exp = direct.get_experiment_by_name("faults").unwrap().unwrap();
    let runs = direct
        .search_runs(&[exp.experiment_id], "attributes.run_name = 'flaky'", 10)
        .unwrap();
    assert_eq!(runs.len(), 1, "exactly one run despite dropped answers");
    let run_id = runs[0].info.run_id.clone();
    let (found_n, distinct) = found(&direct, &run_id);
    let got = direct.get_run(&run_id).unwrap();
    eprintln!(
        "flaky proxy: logged {logged}, found {found_n}, distinct {distinct}; proxy saw {} \
         requests, answered {} with 503, dropped {} answers after forwarding; tracker {tstats:?}, \
         {report:?}",
        stats.requests.load(Ordering::Relaxed),
        stats.answered_5xx.load(Ordering::Relaxed),
        stats.dropped_after_forward.load(Ordering::Relaxed),
    );
    assert_eq!((found_n, distinct), (logged, logged));
    assert!(stats.answered_5xx.load(Ordering::Relaxed) > 0);
    assert!(stats.dropped_after_forward.load(Ordering::Relaxed) > 0);
    assert!(
        report.reconciled > 0,
        "an unknown outcome was reconciled: {report:?}"
    );
    assert_eq!(got.info.status, RunStatus::Finished);
    assert_eq!(got.tag("phase"), Some("done"));
    assert_eq!(got.data.params.len(), 2);
    drop(server);
    eprintln!("flaky_proxy: {:.1} s", t0.elapsed().as_secs_f64());
}
