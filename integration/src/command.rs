//! Running the real command-line tools (`ipvsadm`, `ip`) and capturing what they print.

use std::io::Write;
use std::process::{Command, Stdio};

/// A tool that could not be started or that failed; names the command line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (missing, not executable).
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs `program args...` in the calling thread's network namespace, feeding it `stdin` when
/// given, and returns its stdout; an unsuccessful exit is an error carrying its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CommandError> {
    let command = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let spawn_error = |source| CommandError::Spawn { command: command.clone(), source };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes its end; its exit status then tells what went wrong.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs the real `ipvsadm` with `args` and returns what it printed.
pub fn ipvsadm(args: &[&str]) -> Result<String, CommandError> {
    run("ipvsadm", args, None)
}

/// Feeds `rules` (the `ipvsadm -S` format, one `-A`/`-a` command a line) to `ipvsadm -R`.
pub fn ipvsadm_restore(rules: &str) -> Result<(), CommandError> {
    run("ipvsadm", &["-R"], Some(rules)).map(drop)
}

/// Runs `ip args...` (iproute2) and returns what it printed.
pub fn ip(args: &[&str]) -> Result<String, CommandError> {
    run("ip", args, None)
}
