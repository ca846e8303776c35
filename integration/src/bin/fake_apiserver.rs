//! `fake_apiserver`: a fake Kubernetes API server on plain HTTP for tests and demos.
//!
//! Serves Services, EndpointSlices and Nodes with the real list/watch protocol, preloaded
//! from manifest files; tests change the cluster through the control API under `/fake/`
//! (see `integration::fake_api`). Prints `listening on http://ADDRESS` once it accepts
//! connections and runs until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use integration::fake_api::{FakeApiConfig, FakeApiServer};

/// Command line of the fake API server.
#[derive(Debug, Parser)]
#[command(version, about = "A fake Kubernetes API server (list/watch of Services, EndpointSlices, Nodes)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Manifest files (YAML or JSON, multi-document) to load before serving.
    #[arg(long = "file", short = 'f')]
    files: Vec<PathBuf>,
    /// Write a kubeconfig pointing at this server to this file.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Milliseconds between BOOKMARK events on an idle watch.
    #[arg(long, default_value_t = 5000)]
    bookmark_interval_ms: u64,
    /// Changes retained for watches; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 100_000)]
    history_limit: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake_apiserver: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = FakeApiConfig {
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        history_limit: args.history_limit,
        ..FakeApiConfig::default()
    };
    let server = FakeApiServer::start(args.listen, config).await.map_err(|e| e.to_string())?;
    for file in &args.files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let applied = server.apply_text(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        eprintln!("loaded {} objects from {}", applied.len(), file.display());
    }
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, server.kubeconfig()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("listening on {}", server.url());
    tokio::signal::ctrl_c().await.map_err(|e| format!("waiting for a signal: {e}"))?;
    Ok(())
}
