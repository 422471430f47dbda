//! The `steerhook` binary: parse the command line, run the command, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use steerhook::cli::Cli;
use steerhook::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = commands::run(cli);
    // The daemon's last log lines, before anything else is printed.
    steerhook::telemetry::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = commands::exit_code_for(&e);
            eprintln!("steerhook: {e:#}");
            ExitCode::from(code)
        }
    }
}
