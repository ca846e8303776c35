//! `debug ...`: read-only views of the kernel's IPVS state (`status`) and of the state the proxy
//! would program (`render`).

use std::process::ExitCode;

use crate::BoxError;
use crate::cli::DebugCommand;

/// Runs one `debug` subcommand, printing to stdout.
pub async fn run(command: DebugCommand) -> Result<ExitCode, BoxError> {
    match command {
        DebugCommand::Status(_args) => Err("debug status: not implemented yet".into()),
        DebugCommand::Render(_args) => Err("debug render: not implemented yet".into()),
    }
}
