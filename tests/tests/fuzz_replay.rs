//! Replays every input kept under `fuzz/regressions/<target>/` — each crash the fuzzers found,
//! and hand-picked edge cases — through the very target bodies the fuzzers run
//! (`fuzz/src/targets.rs`, compiled into this test), as rust-lang/regex does with its fuzz
//! regressions. A failing input names its file.

#[allow(dead_code)]
#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kept inputs in {}", dir.display());
    for path in &files {
        let bytes = std::fs::read(path).expect("read a kept input");
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panic!("fuzz regression {} fails", path.display());
        }
    }
    eprintln!("{target}: {} kept inputs replayed", files.len());
}

#[test]
fn solvers() {
    replay("solvers", targets::solvers);
}

#[test]
fn pcg() {
    replay("pcg", targets::pcg);
}

#[test]
fn hypergradient() {
    replay("hypergradient", targets::hypergradient);
}

#[test]
fn config_toml() {
    replay("config_toml", targets::config_toml);
}

#[test]
fn idx() {
    replay("idx", targets::idx);
}

#[test]
fn safetensors() {
    replay("safetensors", targets::safetensors);
}

#[test]
fn mlflow_json() {
    replay("mlflow_json", targets::mlflow_json);
}
