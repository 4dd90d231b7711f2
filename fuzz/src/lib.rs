//! The fuzz targets' bodies. Each takes the raw input bytes, decodes them through `arbitrary`
//! structs, rejects oversized inputs, runs the code under test and checks its contracts
//! (panicking on a violation). The same file is compiled into the workspace test
//! `tests/tests/fuzz_replay.rs`, which replays every input kept under `fuzz/regressions/`.
#![warn(missing_docs)]

pub mod targets;
