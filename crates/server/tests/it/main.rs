//! The server's integration tests, in one binary so that the shared support in `common` is built once and
//! every test links against one copy of the server. Each module is one area of behaviour.

#[macro_use]
mod common;

mod admin;
mod attacks;
mod bad_input;
mod cli;
mod client;
mod coalesce;
mod console;
mod failover;
mod faults;
mod import;
mod legacy;
mod lockout;
mod login;
mod logs;
mod ops;
mod races;
mod rate_limit;
mod readme;
mod retention;
mod revocations;
mod schema;
mod secrets;
mod sessions;
mod shutdown;
mod signing;
mod storage;
mod timing;
