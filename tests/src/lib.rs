//! End-to-end tests across crates live in `tests/tests/`. This library is empty on purpose:
//! the crate exists to hold integration tests that use several workspace crates together.
#![warn(missing_docs)]
