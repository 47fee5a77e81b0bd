//! The `crm-auth` binary.

use std::process::ExitCode;

use clap::Parser as _;
use crm_auth_server::{cli, logging};

fn main() -> ExitCode {
    // The logger is set up by `cli::run` once the configuration (which chooses its format) has loaded; an error
    // before that is one plain line on stderr.
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_closed_output(&e) => ExitCode::SUCCESS,
        Err(e) => {
            logging::notice(log::Level::Error, format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
