//! The sync loop's [`Kernel`] over netlink: the `ipvs` crate's client and dummy link.

use std::net::IpAddr;

use futures::{StreamExt, stream};
use ipvs::{Client, DummyLink, Operation, Table};
use watcher::{Kernel, KernelError};

/// Address requests kept in flight on the rtnetlink socket: binding thousands of addresses one
/// round trip at a time would dominate a first sync.
const ADDRESS_REQUESTS_IN_FLIGHT: usize = 64;

/// The real kernel: IPVS over generic netlink, the dummy link over rtnetlink.
pub struct NetlinkKernel {
    client: Client,
    link: DummyLink,
}

impl NetlinkKernel {
    /// Writes through `client` and `link`.
    pub fn new(client: Client, link: DummyLink) -> NetlinkKernel {
        NetlinkKernel { client, link }
    }
}

/// Whether NodePorts may listen on `addr` of interface `ifname`: not the dummy link's, not
/// loopback, not IPv6 link-local (upstream's rule).
pub fn is_node_address(ifname: &str, addr: &IpAddr, dummy: &str) -> bool {
    let link_local_v6 = matches!(addr, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
    ifname != dummy && !addr.is_loopback() && !addr.is_unspecified() && !link_local_v6
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

    async fn bind(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        let link = &self.link;
        stream::iter(addrs.to_vec())
            .map(|addr| async move {
                link.add_address(addr).await.map_err(|e| KernelError::new(format!("bind {addr} to {}", link.name()), e))
            })
            .buffered(ADDRESS_REQUESTS_IN_FLIGHT)
            .collect()
            .await
    }

    async fn unbind(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
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

    async fn apply(&mut self, ops: &[Operation]) -> Result<Vec<Result<(), KernelError>>, KernelError> {
        let results = self
            .client
            .apply(ops)
            .await
            .map_err(|e| KernelError::new(format!("run a batch of {} IPVS operations", ops.len()), e))?;
        Ok(results.into_iter().zip(ops).map(|(r, op)| r.map_err(|e| KernelError::new(op.to_string(), e))).collect())
    }

    async fn node_addresses(&mut self) -> Result<Vec<IpAddr>, KernelError> {
        let all = ipvs::local_addresses().await.map_err(|e| KernelError::new("list the host's addresses", e))?;
        let dummy = self.link.name();
        Ok(all.into_iter().filter(|(ifname, addr)| is_node_address(ifname, addr, dummy)).map(|(_, a)| a).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_follow_upstreams_rule() {
        let cases: &[(&str, &str, bool)] = &[
            ("eth0", "192.0.2.10", true),
            ("eth0", "2001:db8::10", true),
            ("eth0", "fe80::1", false),
            ("eth0", "febf::1", false),
            ("eth0", "fec0::1", true),
            ("lo", "127.0.0.1", false),
            ("eth0", "127.0.0.2", false),
            ("lo", "::1", false),
            ("kube-ipvs0", "10.96.0.10", false),
        ];
        for (ifname, addr, want) in cases {
            assert_eq!(is_node_address(ifname, &addr.parse().unwrap(), "kube-ipvs0"), *want, "{ifname} {addr}");
        }
    }
}
