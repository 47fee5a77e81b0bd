//! The extractor's integration tests, in one binary: offline verification in an actix test service, and,
//! with the `validate` feature, online verification against the real server, and with the `jwks` feature,
//! verification through the real server's JWKS.

#[macro_use]
mod common;

mod docs;
mod extractor;
#[cfg(feature = "jwks")]
mod jwks;
#[cfg(feature = "validate")]
mod online;
