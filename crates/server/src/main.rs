//! The `crm-auth` binary.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match crm_auth_server::cli::run(crm_auth_server::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if crm_auth_server::cli::is_closed_output(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
