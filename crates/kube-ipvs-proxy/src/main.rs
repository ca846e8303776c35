//! `kube-ipvs-proxy`: the binary. `main` only reports errors; `try_main` parses the command line
//! and dispatches on [`cli::Command`].

mod cli;
mod debug;
mod ipvsadm_format;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

/// The binary's error: any failure, with its chain of causes printed by [`report`].
pub(crate) type BoxError = Box<dyn Error + Send + Sync + 'static>;

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            report(&*err);
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<ExitCode, BoxError> {
    let cli = cli::Cli::parse();
    init_logging(&cli.log_filter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(dispatch(cli.command))
}

/// Runs one command to completion; its `Ok` value is the process's exit status.
async fn dispatch(command: cli::Command) -> Result<ExitCode, BoxError> {
    match command {
        cli::Command::Debug(args) => debug::run(args).await,
    }
}

/// Logs go to stderr so that stdout stays the command's output (tables, JSON).
fn init_logging(filter: &str) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|err| format!("invalid log filter {filter:?}: {err}"))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    Ok(())
}

/// Prints an error and its causes, one per line, without a backtrace: what a user acts on.
fn report(err: &(dyn Error + 'static)) {
    eprintln!("kube-ipvs-proxy: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
