//! Which conntrack entries an IPVS operation makes stale (upstream's `CleanStaleEntries`).
//!
//! Only connectionless protocols (UDP, SCTP) keep an entry for as long as a client keeps
//! sending, and the entry keeps its NAT decision. Three changes make such entries wrong: a
//! virtual server that gets its first serving real server (entries made while nothing served
//! there, before the proxy programmed it, carry no masquerade), a real server that goes (the
//! kernel would keep answering from its side), and a virtual server that goes. Judged against
//! the state before the operation, so a change of weights among serving real servers or a TCP
//! change costs nothing.

use std::net::SocketAddr;

use ipvs::{Operation, Protocol, VirtualServerId};
use model::Observed;
use netfilter::StaleFlows;

/// The entries `op` makes stale, given what the kernel held before it; None for most operations.
pub(crate) fn stale_flows(before: &Observed, op: &Operation) -> Option<StaleFlows> {
    let (id, reply_source) = match op {
        Operation::AddRealServer(id, rs) | Operation::UpdateRealServer(id, rs) => {
            let serving_before = before
                .virtual_server(id)
                .is_some_and(|vs| vs.real_servers.values().any(|r| r.server.weight > 0 && r.server.id != rs.id));
            if rs.weight == 0 || serving_before {
                return None;
            }
            (id, None)
        }
        Operation::DeleteRealServer(id, rs) => (id, Some(SocketAddr::new(rs.addr, rs.port))),
        Operation::DeleteVirtualServer(id) => (id, None),
        Operation::AddVirtualServer(_) | Operation::UpdateVirtualServer(_) => return None,
    };
    let VirtualServerId::Tuple { protocol, addr, port } = *id else { return None };
    let protocol = match protocol {
        Protocol::Udp => libc_proto::UDP,
        Protocol::Sctp => libc_proto::SCTP,
        Protocol::Tcp | Protocol::Other(_) => return None,
    };
    Some(StaleFlows { protocol, destination: SocketAddr::new(addr, port), reply_source })
}

/// IP protocol numbers.
mod libc_proto {
    pub(super) const UDP: u8 = 17;
    pub(super) const SCTP: u8 = 132;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{RealServer, VirtualServer};
    use model::Step;

    fn vs(protocol: Protocol) -> VirtualServer {
        VirtualServer::new(VirtualServerId::Tuple { protocol, addr: "10.96.0.53".parse().unwrap(), port: 53 }, "rr")
    }

    fn rs(n: u8, weight: u32) -> RealServer {
        RealServer::new(format!("10.244.{n}.2").parse().unwrap(), 8080, weight)
    }

    fn observed(v: &VirtualServer, reals: &[RealServer]) -> Observed {
        let mut o = Observed::new();
        o.apply(&Step::Kernel(Operation::AddVirtualServer(v.clone())));
        for r in reals {
            o.apply(&Step::Kernel(Operation::AddRealServer(v.id, *r)));
        }
        o
    }

    fn to_service() -> StaleFlows {
        StaleFlows { protocol: 17, destination: "10.96.0.53:53".parse().unwrap(), reply_source: None }
    }

    #[test]
    fn the_first_serving_real_server_makes_the_service_flows_stale() {
        let udp = vs(Protocol::Udp);
        let add = Operation::AddRealServer(udp.id, rs(1, 1));
        assert_eq!(stale_flows(&observed(&udp, &[]), &add), Some(to_service()));
        assert_eq!(stale_flows(&Observed::new(), &add), Some(to_service()), "a new virtual server");
        // Only weight 0 before (all terminating): nothing served either.
        assert_eq!(stale_flows(&observed(&udp, &[rs(2, 0)]), &add), Some(to_service()));
        let revived = Operation::UpdateRealServer(udp.id, rs(2, 1));
        assert_eq!(stale_flows(&observed(&udp, &[rs(2, 0)]), &revived), Some(to_service()));
        // Another real server served already, or the new one does not serve: nothing stale.
        assert_eq!(stale_flows(&observed(&udp, &[rs(2, 1)]), &add), None);
        assert_eq!(stale_flows(&observed(&udp, &[]), &Operation::AddRealServer(udp.id, rs(1, 0))), None);
    }

    #[test]
    fn a_real_server_or_virtual_server_that_goes_makes_its_flows_stale() {
        let udp = vs(Protocol::Udp);
        let before = observed(&udp, &[rs(1, 1), rs(2, 1)]);
        let gone = Operation::DeleteRealServer(udp.id, rs(1, 1).id);
        let want = StaleFlows { reply_source: Some("10.244.1.2:8080".parse().unwrap()), ..to_service() };
        assert_eq!(stale_flows(&before, &gone), Some(want));
        assert_eq!(stale_flows(&before, &Operation::DeleteVirtualServer(udp.id)), Some(to_service()));
        assert_eq!(stale_flows(&before, &Operation::UpdateRealServer(udp.id, rs(1, 5))), None, "a weight change");
    }

    #[test]
    fn sctp_counts_and_tcp_does_not() {
        let sctp = vs(Protocol::Sctp);
        let add = Operation::AddRealServer(sctp.id, rs(1, 1));
        assert_eq!(stale_flows(&Observed::new(), &add).map(|f| f.protocol), Some(132));
        let tcp = vs(Protocol::Tcp);
        assert_eq!(stale_flows(&Observed::new(), &Operation::AddRealServer(tcp.id, rs(1, 1))), None);
        assert_eq!(stale_flows(&observed(&tcp, &[rs(1, 1)]), &Operation::DeleteVirtualServer(tcp.id)), None);
    }
}
