//! The extractor's integration tests, in one binary: offline verification in an actix test service, and,
//! with the `validate` feature, online verification against the real server.

#[macro_use]
mod common;

mod extractor;
#[cfg(feature = "validate")]
mod online;
