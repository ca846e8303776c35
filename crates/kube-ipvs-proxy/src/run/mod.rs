//! `kube-ipvs-proxy run`: the daemon. Prepares the kernel (dummy link, settings, timeouts),
//! starts the sources (a cluster, or a file), the HTTP servers and the sync loop, and runs until
//! SIGTERM or SIGINT, leaving the kernel state in place (a restart adopts it).

mod heap;
mod sysctl;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use model::Update;
use proxier::{
    NetlinkKernel, NetlinkReader, NftFilter, OwnershipRecord, Shared, SyncLoop, SyncSettings, VerifySettings,
};

use crate::config::{DetectLocal, RunArgs, Settings, format_duration};
use crate::{BoxError, ResultExt};
use netfilter::LocalTraffic;
use serve::{DaemonObserver, Endpoints, HealthCheckServers, Metrics};

/// How often standalone mode checks its file for changes.
const FILE_POLL: Duration = Duration::from_secs(1);

/// `node-settings`: the kernel settings `run` writes at start, written once. IPVS is opened
/// first because its settings (`net.ipv4.vs.*`) exist only once the kernel has loaded it.
pub async fn node_settings(args: RunArgs) -> Result<ExitCode, BoxError> {
    let (settings, _) = Settings::resolve(&args)?;
    ipvs::Client::connect().await.context(|| "cannot open the IPVS netlink family".into())?;
    let failed = write_node_settings(&settings);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Writes the node's kernel settings; returns how many could not be written.
fn write_node_settings(settings: &Settings) -> usize {
    sysctl::apply(
        Path::new("/proc/sys"),
        Path::new("/sys/module/nf_conntrack/parameters/hashsize"),
        settings.strict_arp,
        settings.rate_estimation,
        &settings.conntrack,
    )
    .failed
}

/// Runs the daemon until a termination signal.
pub async fn run(args: RunArgs) -> Result<ExitCode, BoxError> {
    let (settings, warnings) = Settings::resolve(&args)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        node = %settings.node_name,
        source = %settings.from_file.as_ref().map_or("cluster".to_string(), |p| p.display().to_string()),
        sync_period = %format_duration(settings.sync_period),
        real_server_verify_period = %format_duration(settings.real_server_verify_period),
        min_sync_period = %format_duration(settings.min_sync_period),
        scheduler = %settings.scheduler,
        interface = %settings.interface,
        "starting kube-ipvs-proxy"
    );

    let client = ipvs::Client::connect().await.context(|| "cannot open the IPVS netlink family".into())?;
    let link = ipvs::DummyLink::ensure(&settings.interface)
        .await
        .context(|| format!("cannot ensure the dummy link {}", settings.interface))?;
    // Writes nothing when an init container (`node-settings`) already did; a setting that
    // differs and cannot be written (read-only /proc/sys) is a warning naming it.
    write_node_settings(&settings);
    if let Some(wanted) = settings.timeouts {
        proxier::ensure_timeouts(&client, &wanted).await;
    }

    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared::new(model::Model::new(settings.model_config()), settings.node_name.clone()));
    // Every input is a stream of updates; the node's addresses are one like the objects.
    let updates = futures::stream::select(
        objects(&settings, &metrics).await?,
        sources::node_address_updates(settings.interface.clone()).boxed(),
    );
    let feeder = shared.clone();
    tokio::spawn(async move {
        let mut updates = updates;
        while let Some(update) = updates.next().await {
            feeder.feed(update);
        }
        tracing::error!("the object source ended; no further changes will be applied");
    });
    tokio::spawn(watch_table(shared.clone()));

    let timeout = settings.sync_period.saturating_mul(2);
    let configz = Arc::new(settings.configz());
    let endpoints = Endpoints { shared: shared.clone(), metrics: metrics.clone(), timeout, configz };
    if let Some(addr) = settings.healthz_bind_address {
        serve::spawn("healthz", addr, serve::health_router(endpoints.clone())).await?;
    }
    if let Some(addr) = settings.metrics_bind_address {
        serve::spawn("metrics", addr, serve::metrics_router(endpoints.clone())).await?;
    }
    let health_source = shared.clone();
    let proxy_healthy = Arc::new(move || serve::proxy_healthy(&health_source.health(), Instant::now(), timeout));
    let health_checks = HealthCheckServers::new(health_check_addresses(&settings).await, proxy_healthy);
    let observer = heap::TrimHeap::new(DaemonObserver::new(metrics, health_checks));

    // The verification reads on an IPVS socket of its own, beside the loop's writes.
    // It compares configurations only: the statistics are not decoded.
    let reader_client = ipvs::Client::connect_with(ipvs::ClientOptions::default().without_statistics())
        .await
        .context(|| "cannot open the IPVS netlink family".into())?;
    let table = netfilter::FilterConfig::new(Vec::new()).table;
    // Its reads of one virtual server's real servers (dozens a second) on a socket whose dumps
    // come a page at a time; the whole-table list keeps large datagrams (fewer restarts).
    let dest_client =
        ipvs::Client::connect_with(ipvs::ClientOptions::default().without_statistics().with_page_datagrams())
            .await
            .context(|| "cannot open the IPVS netlink family".into())?;
    let reader = NetlinkReader::new(reader_client, link.clone())
        .with_real_server_client(dest_client)
        .with_sockopt_reader(
            ipvs::SockoptReader::open().context(|| "cannot open a socket to read IPVS's socket options".into())?,
        )
        .with_filter_sets(netfilter::SetReader::new(&table));
    let verify =
        VerifySettings { virtual_servers: settings.sync_period, real_servers: settings.real_server_verify_period };
    let kernel = NetlinkKernel::new(client, link);
    let sync_settings = SyncSettings { sync_period: settings.sync_period, min_sync_period: settings.min_sync_period };
    let mut sync = SyncLoop::new(kernel, shared, observer, sync_settings)
        .with_ownership_record(OwnershipRecord::in_dir(&settings.state_dir))
        .with_verifier(reader, verify);
    // Without nftables IPVS still balances, but nothing is masqueraded or filtered: the loop
    // retries the setup on every sync, and until it succeeds every sync counts as failed (so
    // /healthz says 503 and the failure is exported) rather than refusing to serve.
    let (cidrs, bit, detect) = (settings.cluster_cidrs.clone(), settings.masquerade_bit, settings.detect_local.clone());
    sync = sync.with_filter_starter(Box::new(move |node_pod_cidrs: &[ipnet::IpNet]| {
        // Pods told by source (the cluster's CIDRs, or the Node's as its object says when the
        // table is set up: a later change needs a restart, as upstream exits for it) or by
        // the interface their traffic arrives on.
        let (prefixes, local) = match &detect {
            DetectLocal::ClusterCidr => (cidrs.clone(), LocalTraffic::Prefixes),
            DetectLocal::NodeCidr => (node_pod_cidrs.to_vec(), LocalTraffic::Prefixes),
            DetectLocal::BridgeInterface(name) => (cidrs.clone(), LocalTraffic::BridgeInterface(name.clone())),
            DetectLocal::InterfaceNamePrefix(p) => (cidrs.clone(), LocalTraffic::InterfaceNamePrefix(p.clone())),
        };
        NftFilter::start(&prefixes, bit, local).map(|nft| Box::new(nft) as Box<dyn proxier::Filter>)
    }));
    tokio::select! {
        () = sync.run() => {}
        signal = shutdown_signal() => {
            tracing::info!("{signal}: stopping; the kernel state stays for the next start to adopt");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The objects' updates: the file in standalone mode, else the cluster.
async fn objects(settings: &Settings, metrics: &Metrics) -> Result<BoxStream<'static, Update>, BoxError> {
    if let Some(path) = &settings.from_file {
        return Ok(sources::file_updates(path.clone(), &settings.node_name, FILE_POLL).boxed());
    }
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(|| "no --kubeconfig and no in-cluster configuration".into())?,
    };
    // client-go's request metrics, for the standard dashboards.
    let client = kube::client::ClientBuilder::try_from(config)
        .context(|| "cannot build the API client".into())?
        .with_layer(&metrics.rest_client_layer())
        .build();
    Ok(sources::cluster_updates(client, &settings.node_name).boxed())
}

/// Where health-check node port servers listen: see [`serve::health_check_addresses`]. The
/// node's addresses are read once, at start, as upstream does.
async fn health_check_addresses(settings: &Settings) -> Vec<std::net::IpAddr> {
    if settings.node_port_addresses.is_empty() {
        return vec![settings.bind_address];
    }
    let node = sources::node_addresses(&settings.interface).await.unwrap_or_else(|e| {
        tracing::warn!(error = &e as &dyn std::error::Error, "cannot read the node's addresses");
        Vec::new()
    });
    let chosen = serve::health_check_addresses(&settings.node_port_addresses, &node, settings.bind_address);
    if chosen == [settings.bind_address] && !node.contains(&settings.bind_address) {
        tracing::warn!(
            "health-check node ports listen on {}: nodePortAddresses selects no address known at start",
            settings.bind_address
        );
    }
    chosen
}

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT; names the signal.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers the default action (exit) still applies.
            std::future::pending::<()>().await;
            "never"
        }
    }
}

/// Follows nftables' notifications for the proxy's table and has the sync loop replace the
/// table whenever someone else edits it: drift repaired when it happens, not at the next full
/// reconcile. It subscribes once the keeper's first whole write is done (a listener makes the
/// kernel build a notification per element of it: most of that write's time) and repairs once
/// unless the nftables generation shows no transaction since. A monitor that fails is opened
/// again after a pause.
async fn watch_table(shared: Arc<Shared>) {
    let settled = shared.filter_settled().await;
    let table = netfilter::FilterConfig::new(Vec::new()).table;
    let mut reopened = false;
    let mut first = true;
    loop {
        match netfilter::TableMonitor::open(&table) {
            Ok(mut monitor) => loop {
                if std::mem::take(&mut first) {
                    let now = netfilter::TableMonitor::generation();
                    match (&now, settled) {
                        (Ok(now), Some(settled)) if *now == settled => {
                            tracing::info!(
                                generation = now,
                                "following the nftables table's notifications; no transaction since it was written"
                            );
                        }
                        _ => {
                            tracing::info!(
                                ?settled,
                                now = ?now.as_ref().ok(),
                                "nftables transactions since the table was written, before its monitor subscribed: replacing it once"
                            );
                            reopened = true;
                        }
                    }
                }
                // What happened while no monitor listened is unknown: repair once.
                if std::mem::take(&mut reopened) {
                    shared.filter_edited();
                }
                match monitor.next_foreign_edit().await {
                    Ok(()) => shared.filter_edited(),
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, "nftables notifications lost; reopening");
                        reopened = true;
                        break;
                    }
                }
            },
            Err(e) => {
                reopened = true;
                tracing::warn!(error = &e as &dyn std::error::Error, "cannot follow nftables notifications")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
