//! Health-check node port servers: one HTTP listener per `healthCheckNodePort` of a Service
//! with `externalTrafficPolicy: Local`, answering as upstream's do so that cloud load
//! balancers send traffic only to nodes with a local endpoint.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{NodePortAddress, ServiceInfo, ServiceKey};
use serde_json::json;
use tokio::task::JoinHandle;

/// Whether the proxy itself is healthy (upstream's `serviceProxyHealthy`).
pub type ProxyHealthy = Arc<dyn Fn() -> bool + Send + Sync>;

/// What one listener answers about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    service: ServiceKey,
    local_endpoints: usize,
}

struct Server {
    entry: Arc<Mutex<Entry>>,
    /// One per listen address.
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The addresses health-check node port servers listen on, as upstream chooses them: all
/// (`all`, normally unspecified: both families) unless `nodePortAddresses` lists prefixes, then
/// those of `node_addresses` inside them. `primary` names an address known only from the Node
/// object, after start, and no match at all is a misconfiguration: both listen on `all`, as
/// upstream does when it cannot tell (the caller logs it).
pub fn health_check_addresses(
    node_port_addresses: &[NodePortAddress],
    node_addresses: &[IpAddr],
    all: IpAddr,
) -> Vec<IpAddr> {
    if node_port_addresses.is_empty() || node_port_addresses.contains(&NodePortAddress::Primary) {
        return vec![all];
    }
    let inside = |addr: &IpAddr| {
        node_port_addresses.iter().any(|p| matches!(p, NodePortAddress::Cidr(cidr) if cidr.contains(addr)))
    };
    let mut chosen: Vec<IpAddr> = node_addresses.iter().copied().filter(inside).collect();
    chosen.sort_unstable();
    chosen.dedup();
    if chosen.is_empty() { vec![all] } else { chosen }
}

/// The running health-check node port servers, kept in step with the Services' facts.
pub struct HealthCheckServers {
    binds: Vec<IpAddr>,
    proxy_healthy: ProxyHealthy,
    servers: HashMap<u16, Server>,
    ports: HashMap<ServiceKey, u16>,
    /// Services whose port could not be bound: (port, local endpoints), retried each sync.
    unbound: HashMap<ServiceKey, (u16, usize)>,
}

impl HealthCheckServers {
    /// No server yet; each will listen on every one of `binds` (see [`health_check_addresses`];
    /// none: all addresses). An unspecified address (`0.0.0.0` or `::`) means every address of
    /// both families, as upstream's servers listen on `:port`: a dual-stack socket, or IPv4
    /// alone when the node has IPv6 disabled.
    pub fn new(binds: Vec<IpAddr>, proxy_healthy: ProxyHealthy) -> HealthCheckServers {
        let binds = if binds.is_empty() { vec![Ipv4Addr::UNSPECIFIED.into()] } else { binds };
        HealthCheckServers {
            binds,
            proxy_healthy,
            servers: HashMap::new(),
            ports: HashMap::new(),
            unbound: HashMap::new(),
        }
    }

    /// The ports served now, sorted.
    #[cfg(test)]
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.servers.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Tries again every port that could not be bound (upstream retries on every sync: until
    /// then the load balancer sees the node as unhealthy for that Service).
    pub fn retry_unbound(&mut self) {
        let unbound: Vec<(ServiceKey, (u16, usize))> = self.unbound.drain().collect();
        for (key, (port, local_endpoints)) in unbound {
            self.serve(&key, port, Entry { service: key.clone(), local_endpoints });
        }
    }

    /// Brings Service `key`'s server in step with `info` (`None`: the Service is gone). A port
    /// that cannot be bound is logged and tried again by [`HealthCheckServers::retry_unbound`].
    pub fn update(&mut self, key: &ServiceKey, info: Option<&ServiceInfo>) {
        self.unbound.remove(key);
        let wanted = info.and_then(|i| i.health_check_node_port.filter(|_| i.external_traffic_local));
        if let Some(old) = self.ports.get(key).copied()
            && Some(old) != wanted
        {
            self.ports.remove(key);
            if let Some(server) = self.servers.remove(&old) {
                server.stop();
                tracing::info!(service = %key, port = old, "health-check node port closed");
            }
        }
        let (Some(port), Some(info)) = (wanted, info) else {
            return;
        };
        let entry = Entry { service: key.clone(), local_endpoints: info.local_endpoints };
        if let Some(server) = self.servers.get(&port) {
            let mut current = server.entry.lock().unwrap_or_else(|p| p.into_inner());
            if current.service != *key {
                tracing::warn!(service = %key, port, "health-check node port already serves {}", current.service);
                return;
            }
            *current = entry;
            return;
        }
        self.serve(key, port, entry);
    }

    fn serve(&mut self, key: &ServiceKey, port: u16, entry: Entry) {
        let local_endpoints = entry.local_endpoints;
        match self.spawn(port, entry) {
            Ok(server) => {
                tracing::info!(service = %key, port, "health-check node port serving");
                self.servers.insert(port, server);
                self.ports.insert(key.clone(), port);
            }
            Err(e) => {
                tracing::warn!(service = %key, port, "cannot serve health-check node port (retried): {e}");
                self.unbound.insert(key.clone(), (port, local_endpoints));
            }
        }
    }

    /// Listens on every address (all or none: a port taken on one fails the server, retried at
    /// the Service's next change) and serves them.
    fn spawn(&self, port: u16, entry: Entry) -> std::io::Result<Server> {
        let listeners = self
            .binds
            .iter()
            .map(|bind| tokio::net::TcpListener::from_std(listen(*bind, port)?))
            .collect::<std::io::Result<Vec<_>>>()?;
        let entry = Arc::new(Mutex::new(entry));
        let shared = entry.clone();
        let healthy = self.proxy_healthy.clone();
        let app = axum::Router::new().fallback(move || {
            let entry = shared.lock().map(|e| e.clone()).unwrap_or_else(|p| p.into_inner().clone());
            let healthy = healthy();
            std::future::ready(answer(&entry, healthy))
        });
        let tasks = listeners
            .into_iter()
            .map(|listener| {
                let app = app.clone();
                tokio::spawn(crate::listener::serve(listener, app, "health-check node port"))
            })
            .collect();
        Ok(Server { entry, tasks })
    }
}

/// A non-blocking listener on `bind`:`port`; for an unspecified `bind`, on `[::]` with
/// `IPV6_V6ONLY` off (explicitly: the sysctl `net.ipv6.bindv6only` may say otherwise), falling
/// back to `0.0.0.0` when the kernel has no IPv6.
fn listen(bind: IpAddr, port: u16) -> std::io::Result<std::net::TcpListener> {
    if !bind.is_unspecified() {
        return socket(SocketAddr::new(bind, port), None);
    }
    socket(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port), Some(false)).or_else(|e| {
        if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            socket(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), None)
        } else {
            Err(e)
        }
    })
}

fn socket(addr: SocketAddr, only_v6: Option<bool>) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(only_v6) = only_v6 {
        socket.set_only_v6(only_v6)?;
    }
    // As std's listeners do: a restarted daemon rebinds despite connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Drop for HealthCheckServers {
    fn drop(&mut self) {
        for server in self.servers.values() {
            server.stop();
        }
    }
}

/// Upstream's answer: 200 when there are local endpoints and the proxy is healthy, else 503.
fn answer(entry: &Entry, proxy_healthy: bool) -> Response {
    let status =
        if entry.local_endpoints > 0 && proxy_healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "service": {"namespace": entry.service.namespace(), "name": entry.service.name()},
        "localEndpoints": entry.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    headers.insert("X-Load-Balancing-Endpoint-Weight", HeaderValue::from(entry.local_endpoints));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(super) fn info(port: Option<u16>, local: usize) -> ServiceInfo {
        ServiceInfo {
            service: ServiceKey::new("ns", "lb"),
            health_check_node_port: port,
            local_endpoints: local,
            external_traffic_local: true,
            internal_traffic_local: false,
            source_ranges: vec![],
            virtual_servers: vec![],
        }
    }

    async fn get(port: u16) -> Option<(u16, serde_json::Value)> {
        let (status, body) = crate::test_client::get(([127, 0, 0, 1], port).into(), "/anything").await?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn listen_addresses_follow_node_port_addresses() {
        let all: IpAddr = "0.0.0.0".parse().unwrap();
        let node: Vec<IpAddr> = ["192.168.1.10", "10.0.0.5", "fd00::5"].iter().map(|a| a.parse().unwrap()).collect();
        let npa = |list: &[&str]| -> Vec<NodePortAddress> { list.iter().map(|p| p.parse().unwrap()).collect() };
        // (nodePortAddresses, listen addresses)
        let cases: [(&[&str], &[&str]); 5] = [
            (&[], &["0.0.0.0"]),
            (&["10.0.0.0/8"], &["10.0.0.5"]),
            (&["10.0.0.0/8", "fd00::/64", "192.168.1.0/24"], &["10.0.0.5", "192.168.1.10", "fd00::5"]),
            (&["172.16.0.0/12"], &["0.0.0.0"]),
            (&["primary"], &["0.0.0.0"]),
        ];
        for (given, want) in cases {
            let want: Vec<IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
            assert_eq!(health_check_addresses(&npa(given), &node, all), want, "{given:?}");
        }
    }

    #[tokio::test]
    async fn every_listen_address_answers_and_no_other() {
        let binds: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let mut servers = HealthCheckServers::new(binds, Arc::new(|| true));
        let port = free_port();
        servers.update(&ServiceKey::new("ns", "lb"), Some(&info(Some(port), 1)));
        // (address, answers)
        for (addr, answers) in [("127.0.0.1", true), ("::1", true), ("127.0.0.2", false)] {
            let addr = SocketAddr::new(addr.parse().unwrap(), port);
            let status = crate::test_client::get(addr, "/").await.map(|(status, _)| status);
            assert_eq!(status, answers.then_some(200), "{addr}");
        }
        servers.update(&ServiceKey::new("ns", "lb"), None);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for addr in ["127.0.0.1", "::1"] {
            let addr = SocketAddr::new(addr.parse().unwrap(), port);
            assert!(crate::test_client::get(addr, "/").await.is_none(), "{addr} still answers");
        }
    }

    #[tokio::test]
    async fn an_unspecified_bind_serves_both_families() {
        // (bind, addresses that must answer, addresses that must not)
        let cases: [(&str, &[&str], &[&str]); 3] = [
            ("0.0.0.0", &["127.0.0.1", "::1"], &[]),
            ("::", &["127.0.0.1", "::1"], &[]),
            ("127.0.0.1", &["127.0.0.1"], &["::1"]),
        ];
        for (bind, answering, silent) in cases {
            let mut servers = HealthCheckServers::new(vec![bind.parse().unwrap()], Arc::new(|| true));
            let port = free_port();
            servers.update(&ServiceKey::new("ns", "lb"), Some(&info(Some(port), 1)));
            assert_eq!(servers.ports(), vec![port], "bind {bind}");
            for addr in answering {
                let addr = SocketAddr::new(addr.parse().unwrap(), port);
                let answer = crate::test_client::get(addr, "/").await;
                assert_eq!(answer.map(|(status, _)| status), Some(200), "bind {bind}: {addr}");
            }
            for addr in silent {
                let addr = SocketAddr::new(addr.parse().unwrap(), port);
                assert!(crate::test_client::get(addr, "/").await.is_none(), "bind {bind}: {addr}");
            }
        }
    }

    #[tokio::test]
    async fn serves_follows_and_closes() {
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let mut servers =
            HealthCheckServers::new(vec!["127.0.0.1".parse().unwrap()], Arc::new(move || flag.load(Ordering::SeqCst)));
        let key = ServiceKey::new("ns", "lb");
        let (p1, p2) = (free_port(), free_port());
        // (info, port expected to answer, status, localEndpoints, serviceProxyHealthy)
        let steps: Vec<(Option<ServiceInfo>, bool, u16, u16, u64)> = vec![
            (Some(info(Some(p1), 2)), true, p1, 200, 2),
            (Some(info(Some(p1), 0)), true, p1, 503, 0),
            (Some(info(Some(p1), 1)), false, p1, 503, 1),
            (Some(info(Some(p2), 3)), true, p2, 200, 3),
        ];
        for (i, (info, proxy_ok, port, status, local)) in steps.into_iter().enumerate() {
            healthy.store(proxy_ok, Ordering::SeqCst);
            servers.update(&key, info.as_ref());
            let (got_status, body) = get(port).await.expect("an answer");
            assert_eq!(got_status, status, "step {i}");
            assert_eq!(body["localEndpoints"], local, "step {i}");
            assert_eq!(body["serviceProxyHealthy"], proxy_ok, "step {i}");
            assert_eq!(body["service"]["namespace"], "ns");
            assert_eq!(body["service"]["name"], "lb");
        }
        assert_eq!(servers.ports(), vec![p2], "moving the port closed the old one");
        servers.update(&key, None);
        assert!(servers.ports().is_empty());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(get(p2).await.is_none(), "a gone Service's port no longer answers");
    }
}

#[cfg(test)]
mod retry_tests {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;

    use model::ServiceKey;

    use super::HealthCheckServers;

    /// Issue 8, item 7: a health-check node port that could not be bound (someone held it) is
    /// bound by a later sync's retry, without the Service changing.
    #[tokio::test]
    async fn a_port_that_could_not_be_bound_is_retried() {
        let bind: IpAddr = "127.0.0.1".parse().unwrap();
        let taken = std::net::TcpListener::bind((bind, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut servers = HealthCheckServers::new(vec![bind], Arc::new(|| true));
        let key = ServiceKey::new("ns", "lb");
        servers.update(&key, Some(&super::tests::info(Some(port), 1)));
        assert!(servers.ports().is_empty(), "the port is taken");
        drop(taken);
        servers.retry_unbound();
        assert_eq!(servers.ports(), [port]);
        let answer = crate::test_client::get(SocketAddr::new(bind, port), "/").await;
        assert_eq!(answer.map(|(status, _)| status), Some(200));
    }
}
