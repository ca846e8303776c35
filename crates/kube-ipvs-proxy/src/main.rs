//! `kube-ipvs-proxy`: the binary. `main` only reports errors; `try_main` parses the command line
//! and dispatches on [`cli::Command`].

mod cleanup;
mod cli;
mod compat;
mod config;
mod debug;
mod run;
mod upstream;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

/// The binary's error: any failure, with its chain of causes printed by [`report`].
pub(crate) type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What the binary was doing when a library call failed, with that failure kept as the
/// [`Error::source`], so that [`report`] prints the whole chain (ripgrep's style of context).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(crate) struct Context {
    what: String,
    #[source]
    source: BoxError,
}

/// Adds [`Context`] to a failed result.
pub(crate) trait ResultExt<T> {
    /// On failure, says what was being done (built only then).
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BoxError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BoxError> {
        self.map_err(|source| Box::new(Context { what: what(), source: source.into() }) as BoxError)
    }
}

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
    tune_malloc();
    let normalized = compat::normalize(std::env::args_os().collect());
    if normalized.version {
        println!("{}", compat::version_line());
        return Ok(ExitCode::SUCCESS);
    }
    let cli = cli::Cli::parse_from(normalized.args);
    init_logging(&cli.log_filter)?;
    raise_open_file_limit();
    if !normalized.ignored.is_empty() {
        tracing::warn!("kube-proxy flags accepted but not applied by this proxy: {}", normalized.ignored.join(", "));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(dispatch(cli.command))
}

/// Runs one command to completion; its `Ok` value is the process's exit status.
async fn dispatch(command: cli::Command) -> Result<ExitCode, BoxError> {
    match command {
        cli::Command::Run(args) => run::run(args).await,
        cli::Command::NodeSettings(args) => run::node_settings(args).await,
        cli::Command::Cleanup(args) => cleanup::run(args).await,
        cli::Command::Debug(args) => debug::run(args).await,
    }
}

/// Tunes glibc malloc for a low peak, before any thread starts (measured in the VM scale
/// bench, see benches/RESULTS.md):
/// - at most two arenas: by default each thread that allocates may get one of its own (up to
///   8 per CPU), and memory freed in one is not reused by the others, so the objects decoded
///   on one runtime worker and the plan built on another peak in separate arenas; the cost is
///   some lock contention, negligible for a daemon that mostly waits;
/// - a fixed mmap threshold: glibc otherwise raises it (up to 32 MiB) each time a large block
///   is freed, after which the big transient buffers of a cold start (list pages, a plan of
///   120,000 steps growing by doubling) come from the heap, where a growing vector's old and
///   new blocks coexist and the freed space fragments; mmapped ones grow in place (mremap)
///   and go back to the system when freed.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers and is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Raises the soft limit of open files to the hard one, as Go's runtime does for upstream: the
/// default 1,024 is what a thousand idle connections to a health-check node port exhaust.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            tracing::warn!("cannot raise the open-file limit from {}", limit.rlim_cur);
        }
    }
}

/// Logs go to stderr so that stdout stays the command's output (tables, JSON).
fn init_logging(filter: &str) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context(|| format!("invalid log filter {filter:?}"))?;
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
