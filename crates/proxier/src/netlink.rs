//! The sync loop's [`Kernel`] over netlink: the `ipvs` crate's client and dummy link.

use std::future::Future;
use std::net::IpAddr;

use crate::kernel::{Kernel, KernelError};
use crate::verify::KernelReader;
use futures::{StreamExt, stream};
use ipvs::{
    Client, DummyLink, Family, ForwardMethod, Operation, RealServerEntry, SockoptReader, Table, VirtualServer,
    VirtualServerEntry, VirtualServerId,
};
use netfilter::{Conntrack, SetReader, StaleFlows};

/// Unbind requests kept in flight on the rtnetlink socket (binds go in batches: see `bind`).
const ADDRESS_REQUESTS_IN_FLIGHT: usize = 64;

/// The real kernel: IPVS over generic netlink, the dummy link over rtnetlink, conntrack over
/// ctnetlink.
pub struct NetlinkKernel {
    client: Client,
    link: DummyLink,
    /// Opened at the first stale flow (most nodes seldom have one), again after a failure.
    conntrack: Option<Conntrack>,
}

impl NetlinkKernel {
    /// Writes through `client` and `link`.
    pub fn new(client: Client, link: DummyLink) -> NetlinkKernel {
        NetlinkKernel { client, link, conntrack: None }
    }
}

impl Kernel for NetlinkKernel {
    async fn observe(&mut self) -> Result<(Table, Vec<IpAddr>), KernelError> {
        let table = self.client.table().await.map_err(|e| KernelError::new("dump the IPVS table", e))?;
        let bound = self
            .link
            .addresses()
            .await
            .map_err(|e| KernelError::new(format!("list the addresses of {}", self.link.name()), e))?;
        Ok((table, bound))
    }

    async fn real_servers(&mut self, ids: &[VirtualServerId]) -> Result<Vec<Vec<RealServerEntry>>, KernelError> {
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.push(list_real_servers(&self.client, id).await?);
        }
        Ok(all)
    }

    async fn virtual_server(&mut self, id: &VirtualServerId) -> Result<Option<VirtualServerEntry>, KernelError> {
        match self.client.get_virtual_server(id).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.kind() == ipvs::ErrorKind::NoSuchVirtualServer => Ok(None),
            Err(e) => Err(KernelError::new(format!("get {id}"), e)),
        }
    }

    fn bind(&self, addrs: Vec<IpAddr>) -> impl Future<Output = Vec<Result<(), KernelError>>> + Send + 'static {
        // A few hundred addresses per system call, on a blocking thread of its own, started
        // now: the loop writes the IPVS batches (whose `sendmsg` holds its thread while the
        // kernel works through a batch) and the nftables side while the kernel binds.
        let link = self.link.clone();
        let count = addrs.len();
        let binding = tokio::task::spawn_blocking(move || {
            let results = link.add_addresses(&addrs);
            results
                .into_iter()
                .zip(&addrs)
                .map(|(result, addr)| {
                    result.map_err(|e| KernelError::new(format!("bind {addr} to {}", link.name()), e))
                })
                .collect::<Vec<_>>()
        });
        async move {
            match binding.await {
                Ok(results) => results,
                Err(e) => {
                    let why = e.to_string();
                    (0..count).map(|_| Err(KernelError::new("bind addresses", why.clone()))).collect()
                }
            }
        }
    }

    async fn unbind(&self, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        let link = &self.link;
        stream::iter(addrs.to_vec())
            .map(|addr| async move {
                link.remove_address(addr)
                    .await
                    .map_err(|e| KernelError::new(format!("unbind {addr} from {}", link.name()), e))
            })
            .buffered(ADDRESS_REQUESTS_IN_FLIGHT)
            .collect()
            .await
    }

    async fn apply(&self, ops: &[Operation]) -> Result<Vec<Result<(), KernelError>>, KernelError> {
        let results = self
            .client
            .apply(ops)
            .await
            .map_err(|e| KernelError::new(format!("run a batch of {} IPVS operations", ops.len()), e))?;
        Ok(results.into_iter().zip(ops).map(|(r, op)| r.map_err(|e| KernelError::new(op.to_string(), e))).collect())
    }

    async fn forget(&mut self, flows: &[StaleFlows]) -> Vec<Result<usize, KernelError>> {
        let mut results = Vec::with_capacity(flows.len());
        for flow in flows {
            let conntrack = match self.conntrack.take() {
                Some(c) => Ok(c),
                None => Conntrack::open(),
            };
            let result = match conntrack {
                Ok(mut c) => {
                    let result = c.forget(flow).await;
                    // A socket that failed is replaced; one the kernel merely answered is kept.
                    if !matches!(result, Err(netfilter::NfnetlinkError::Io { .. })) {
                        self.conntrack = Some(c);
                    }
                    result
                }
                Err(e) => Err(e),
            };
            results.push(result.map_err(|e| KernelError::new(format!("forget the {flow}"), e)));
        }
        results
    }
}

async fn list_real_servers(client: &Client, id: &VirtualServerId) -> Result<Vec<RealServerEntry>, KernelError> {
    client.list_real_servers(id).await.map_err(|e| KernelError::new(format!("list the real servers of {id}"), e))
}

/// The verification's reads over netlink, on an IPVS socket of its own (the loop's writes and
/// these reads never wait for each other) and an rtnetlink handle to the dummy link.
pub struct NetlinkReader {
    client: Client,
    /// Reads one virtual server's real servers, when not `client` (see
    /// [`NetlinkReader::with_real_server_client`]).
    dests: Option<Client>,
    link: DummyLink,
    /// Reads the nftables sets' digests, when the proxy keeps a table.
    sets: Option<SetReader>,
    /// Counts the virtual servers, and reads an IPv4 virtual server's real servers, without a
    /// dump, when given.
    sockopt: Option<SockoptReader>,
}

impl NetlinkReader {
    /// Reads through `client` (open it for this reader alone) and `link`.
    pub fn new(client: Client, link: DummyLink) -> NetlinkReader {
        NetlinkReader { client, dests: None, link, sets: None, sockopt: None }
    }

    /// Reads the real servers through `client` (open it for this reader alone, with
    /// `ipvs::ClientOptions::with_page_datagrams`: dozens of small dumps a second, for each
    /// of which the kernel otherwise allocated and zeroed 64 KiB).
    #[must_use]
    pub fn with_real_server_client(mut self, client: Client) -> NetlinkReader {
        self.dests = Some(client);
        self
    }

    /// Counts the virtual servers with `sockopt` (opened in the proxy's network namespace), so
    /// that a missing one is noticed without a list of them all, and reads the real servers of
    /// IPv4 virtual servers with it: one system call each instead of a netlink dump.
    #[must_use]
    pub fn with_sockopt_reader(mut self, sockopt: SockoptReader) -> NetlinkReader {
        self.sockopt = Some(sockopt);
        self
    }

    /// Also reads the element sets of the nftables table `sets` reads.
    #[must_use]
    pub fn with_filter_sets(mut self, sets: SetReader) -> NetlinkReader {
        self.sets = Some(sets);
        self
    }
}

impl KernelReader for NetlinkReader {
    async fn virtual_servers(&mut self, expected: usize) -> Result<Vec<VirtualServer>, KernelError> {
        self.client
            .list_virtual_server_configs(expected)
            .await
            .map_err(|e| KernelError::new("list the IPVS virtual servers", e))
    }

    async fn virtual_server_count(&mut self) -> Result<Option<usize>, KernelError> {
        let Some(counter) = &self.sockopt else { return Ok(None) };
        let n = counter.count().map_err(|e| KernelError::new("count the IPVS virtual servers", e))?;
        Ok(Some(n as usize))
    }

    async fn real_servers(&mut self, vs: &VirtualServerId) -> Result<Option<Vec<RealServerEntry>>, KernelError> {
        if let Some(sockopt) = self.sockopt.as_ref().filter(|_| vs.family() == Family::V4) {
            let read =
                sockopt.real_servers(vs).map_err(|e| KernelError::new(format!("read the real servers of {vs}"), e))?;
            // A tunnel's encapsulation is only in the netlink answer (which also names real
            // servers of the other family, left out here; this proxy makes neither).
            let tunnel = |e: &RealServerEntry| matches!(e.server.forward, ForwardMethod::Tunnel { .. });
            if !read.as_ref().is_some_and(|entries| entries.iter().any(tunnel)) {
                return Ok(read);
            }
        }
        let client = self.dests.as_ref().unwrap_or(&self.client);
        let dests = list_real_servers(client, vs).await?;
        // Only an empty answer is ambiguous: ask for the virtual server then (seldom: a
        // Service without endpoints).
        if dests.is_empty() {
            let present = client.is_present(vs).await.map_err(|e| KernelError::new(format!("get {vs}"), e))?;
            return Ok(present.then_some(dests));
        }
        Ok(Some(dests))
    }

    async fn addresses(&mut self) -> Result<Vec<IpAddr>, KernelError> {
        self.link
            .addresses()
            .await
            .map_err(|e| KernelError::new(format!("list the addresses of {}", self.link.name()), e))
    }

    async fn filter_set(&mut self, n: usize) -> Result<Option<(String, u64)>, KernelError> {
        let Some(mut reader) = self.sets.take() else { return Ok(None) };
        let sets = netfilter::Netfilter::element_sets();
        let Some(set) = sets.get(n % sets.len().max(1)).cloned() else {
            self.sets = Some(reader);
            return Ok(None);
        };
        // One blocking dump (thousands of elements at scale): off the runtime's workers.
        let (reader, digest) = tokio::task::spawn_blocking(move || {
            let digest = reader
                .digest(&set)
                .map(|d| (set.clone(), d))
                .map_err(|e| KernelError::new(format!("read nftables set {set}"), e));
            (reader, digest)
        })
        .await
        .map_err(|e| KernelError::new("read an nftables set", e))?;
        self.sets = Some(reader);
        digest.map(Some)
    }
}
