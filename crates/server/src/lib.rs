//! The crm-auth service: configuration, storage, password hashing, the HTTP API and the admin commands.

pub mod cli;
pub mod clock;
pub mod db;
pub mod error;
pub mod files;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod password;
pub mod ratelimit;
pub mod service;
pub mod settings;
pub mod signing;
pub mod state;
