//! `https://` tracking URIs: the client talks TLS (rustls) to a real MLflow server behind a
//! loopback HTTPS proxy with a certificate from a freshly generated private CA (`tests/tls_proxy.py`),
//! trusting it through `MLFLOW_TRACKING_SERVER_CERT_PATH` as MLflow's own client does — and
//! refusing it without. One test per binary: it sets an environment variable.

mod mlflow_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ibau_plugin::mlflow::client::CERT_PATH_ENV;
use ibau_plugin::mlflow::{Client, Metric};
use mlflow_common::*;

#[test]
fn https_with_a_private_ca_logs_and_reads_back_and_an_untrusted_one_is_refused() {
    let (_dir, srv) = start_server();
    let python = mlflow().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tls_proxy.py");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut proxy = Kill(
        Command::new(python)
            .arg(script)
            .arg(srv.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the TLS proxy"),
    );
    let mut line = String::new();
    BufReader::new(proxy.0.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("proxy port");
    let mut parts = line.split_whitespace();
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let cert = parts.next().unwrap().to_owned();
    let url = format!("https://127.0.0.1:{port}");

    // Not trusted: the platform store does not hold the test CA.
    std::env::remove_var(CERT_PATH_ENV);
    let untrusted = Client::with(&url, None, fast_retry()).unwrap();
    let err = untrusted.get_or_create_experiment("https").unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "expected a certificate error, got {err}"
    );

    // Trusted through the CA bundle variable.
    std::env::set_var(CERT_PATH_ENV, &cert);
    let client = Client::with(&url, None, fast_retry()).unwrap();
    let exp = client.get_or_create_experiment("https").unwrap();
    let run = client.create_run(&exp, "over-tls", 1, &[]).unwrap();
    let metrics: Vec<Metric> = (0..50)
        .map(|s| Metric {
            key: "m".into(),
            value: value(0, s),
            timestamp: 1_700_000_000_000 + s,
            step: s,
        })
        .collect();
    client.log_batch(&run.run_id, &metrics, &[], &[]).unwrap();
    let back = client.get_metric_history(&run.run_id, "m").unwrap();
    assert_eq!(back.len(), 50);
    // The same store seen without TLS.
    assert_eq!(
        srv.client()
            .unwrap()
            .get_metric_history(&run.run_id, "m")
            .unwrap()
            .len(),
        50
    );
    std::env::remove_var(CERT_PATH_ENV);
}
