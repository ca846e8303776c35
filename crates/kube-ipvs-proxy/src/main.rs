//! `kube-ipvs-proxy`: the binary. `main` only reports errors; `try_main` parses the command line
//! and dispatches on [`cli::Command`].

mod cleanup;
mod cli;
mod config;
mod debug;
mod ipvsadm_format;
mod run;
mod serve;

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
        cli::Command::Run(args) => run::run(args).await,
        cli::Command::Cleanup(args) => cleanup::run(args).await,
        cli::Command::Debug(args) => debug::run(args).await,
    }
}

/// Logs go to stderr so that stdout stays the command's output (tables, JSON).
fn init_logging(filter: &str) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|err| format!("invalid log filter {filter:?}: {err}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    Ok(())
}

/// Prints an error and its causes, one per line, without a backtrace: what a user acts on.
/// A cause whose text the line before already contains is skipped: many errors quote their
/// source in their own message.
fn report(err: &(dyn Error + 'static)) {
    let mut last = err.to_string();
    eprintln!("kube-ipvs-proxy: error: {last}");
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !last.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        last = text;
        source = cause.source();
    }
}
