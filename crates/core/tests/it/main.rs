//! Core's integration tests, in one binary: the public API of `crm-auth-core` seen from outside.

mod envelope;
mod proptests;
mod signing;
mod token;
mod wire;
