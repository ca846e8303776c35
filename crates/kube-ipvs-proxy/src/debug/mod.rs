//! `debug ...`: read-only views of the kernel's IPVS state (`status`) and of the state the proxy
//! would program (`render`).

mod daemon;
mod render;
mod status;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;

use crate::BoxError;
use crate::cli::DebugCommand;

/// The link `debug render` lists addresses for: the one the daemon binds service addresses on.
const SERVICE_LINK: &str = "kube-ipvs0";

/// Runs one `debug` subcommand, printing its result to stdout and diagnostics to stderr.
pub async fn run(command: DebugCommand) -> Result<ExitCode, BoxError> {
    let output = match command {
        DebugCommand::Status(args) => {
            let mut state = status::read(&args.link).await?;
            if let (false, Some(addr)) = (args.numeric, args.daemon_address()) {
                state.origins = status::ask_daemon(addr).await;
            }
            status::render(&state, &args)?
        }
        DebugCommand::Render(args) => {
            let rendered = render::compute(&args)?;
            for warning in &rendered.warnings {
                eprintln!("warning: {warning}");
            }
            for skipped in &rendered.skipped {
                // A Service or slice the watches' label selection leaves out says so itself.
                if skipped.ends_with(')') {
                    tracing::info!("ignored {skipped}: not this proxy's");
                } else {
                    tracing::info!("ignored {skipped}: not a Service, EndpointSlice or Node");
                }
            }
            if args.json {
                serde_json::to_string_pretty(&render::json(&rendered))? + "\n"
            } else {
                render::listing(rendered.model.desired(), SERVICE_LINK)
            }
        }
    };
    print(&output)
}

/// Writes `output` to stdout; a closed pipe (`| head`) is a normal end, not an error.
fn print(output: &str) -> Result<ExitCode, BoxError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(err) => Err(Box::new(err)),
    }
}

/// `kube-ipvs0 addresses (2):` then one address a line, ordered; `addresses` is `None` when the
/// link does not exist.
fn write_addresses(out: &mut String, link: &str, addresses: Option<&[IpAddr]>) {
    // Writing to a String cannot fail; the results are ignored for that reason.
    let Some(addresses) = addresses else {
        let _ = writeln!(out, "{link}: no such link");
        return;
    };
    let _ = writeln!(out, "{link} addresses ({}):", addresses.len());
    let mut sorted = addresses.to_vec();
    sorted.sort();
    for addr in sorted {
        let _ = writeln!(out, "  {addr}");
    }
}
