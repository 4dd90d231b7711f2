//! # ibau-proofs
//!
//! The theorems `ibau-core` relies on, one module per statement, each with its source and its
//! property tests.
#![warn(missing_docs)]
