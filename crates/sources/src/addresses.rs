//! The node's addresses as a source: the addresses NodePorts may use, read once and then
//! followed through rtnetlink's address and link notifications, so that a NodePort follows an
//! address change within moments, with no polling.
//!
//! Each notification costs one address (or one link) of work: the dummy link's own addresses
//! (tens of thousands of ClusterIPs, each bind a notification) are discarded by interface index
//! without a dump, except that one removed from it is reported ([`Update::Unbound`]) so that the
//! proxy binds it again at once if it is still wanted. A dump is taken only at start and when
//! the kernel says notifications were lost (`NLMSG_OVERRUN`) or the socket failed, and it asks
//! for the other links' addresses only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use model::Update;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, MulticastGroup};

/// How long to wait before reconnecting after the rtnetlink socket failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Why the node's addresses could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AddressesError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Socket(#[source] std::io::Error),
    /// The kernel refused or broke off a dump.
    #[error("cannot list the host's {what}")]
    Dump {
        /// `links` or `addresses`.
        what: &'static str,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// Whether NodePorts may listen on `addr` of interface `ifname`: not the dummy link's, not
/// loopback, not unspecified, not IPv6 link-local (upstream's rule).
pub(crate) fn is_node_address(ifname: &str, addr: &IpAddr, dummy: &str) -> bool {
    let link_local_v6 = matches!(addr, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
    ifname != dummy && !addr.is_loopback() && !addr.is_unspecified() && !link_local_v6
}

/// The node's addresses now (sorted, deduplicated): every interface's addresses except those of
/// `dummy` (the proxy's dummy link), loopback, unspecified and IPv6 link-local ones (upstream's
/// rule). For commands that need
/// them once; the daemon follows them with [`node_address_updates`].
pub async fn node_addresses(dummy: &str) -> Result<Vec<IpAddr>, AddressesError> {
    let (mut connection, handle, _) = rtnetlink::new_connection().map_err(AddressesError::Socket)?;
    let per_link = strict_dumps(&mut connection);
    let task = tokio::spawn(connection);
    let host = Host::dump(&handle, dummy, per_link).await;
    task.abort();
    Ok(host?.node_addresses(dummy))
}

/// The node's addresses as [`Update::NodeAddresses`]: the complete list first, then the list
/// again each time it changes. Failures are logged and retried; the stream never ends.
pub fn node_address_updates(dummy: impl Into<String>) -> impl Stream<Item = Update> + Send + 'static {
    let follower = Follower { dummy: dummy.into(), last: None, session: None };
    stream::unfold(follower, |mut f| async move {
        let updates = f.next_change().await;
        Some((stream::iter(updates), f))
    })
    .flatten()
}

/// What is known of the host's interfaces and addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Host {
    /// Interface names by index.
    links: HashMap<u32, String>,
    /// Addresses by interface index, as the kernel keys them (address and prefix length), so
    /// that applying a notification twice (one that raced the dump) changes nothing. The dummy
    /// link's are not kept: they are never node addresses, and there are thousands.
    addresses: BTreeMap<u32, BTreeSet<(IpAddr, u8)>>,
}

impl Host {
    /// Dumps the links, then the addresses of each link but `dummy`. With `per_link` (the
    /// socket checks dump requests strictly, so the kernel honours the request's index) the
    /// dummy link's thousands of addresses are never sent; without, one dump of all is read
    /// and theirs dropped one by one as they arrive.
    async fn dump(handle: &Handle, dummy: &str, per_link: bool) -> Result<Host, AddressesError> {
        let mut host = Host::default();
        handle
            .link()
            .get()
            .execute()
            .try_for_each(|link| {
                host.link(&link, true);
                futures::future::ready(Ok(()))
            })
            .await
            .map_err(|source| AddressesError::Dump { what: "links", source })?;
        let indexes: Vec<Option<u32>> = if per_link {
            host.links.iter().filter(|(_, name)| *name != dummy).map(|(index, _)| Some(*index)).collect()
        } else {
            vec![None]
        };
        for index in indexes {
            let mut request = handle.address().get();
            if let Some(index) = index {
                request.message_mut().header.index = index;
                request = request.set_link_index_filter(index);
            }
            let mut addresses = request.execute();
            while let Some(address) =
                addresses.try_next().await.map_err(|source| AddressesError::Dump { what: "addresses", source })?
            {
                host.address(&address, true, dummy);
            }
        }
        Ok(host)
    }

    /// Records a link that appeared (`present`) or went.
    fn link(&mut self, link: &LinkMessage, present: bool) {
        let index = link.header.index;
        if !present {
            self.links.remove(&index);
            self.addresses.remove(&index);
            return;
        }
        if let Some(name) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) {
            self.links.insert(index, name);
        }
    }

    /// Records an address that appeared (`present`) or went, unless it is the link `dummy`'s.
    fn address(&mut self, message: &AddressMessage, present: bool, dummy: &str) {
        let index = message.header.index;
        if self.links.get(&index).is_some_and(|name| name == dummy) {
            return;
        }
        let Some(addr) = address_of(message) else { return };
        let key = (addr, message.header.prefix_len);
        let on_link = self.addresses.entry(index).or_default();
        if present {
            on_link.insert(key);
        } else {
            on_link.remove(&key);
        }
        if on_link.is_empty() {
            self.addresses.remove(&index);
        }
    }

    /// The node's addresses, sorted and deduplicated.
    fn node_addresses(&self, dummy: &str) -> Vec<IpAddr> {
        let mut out = BTreeSet::new();
        for (index, addrs) in &self.addresses {
            let name = self.links.get(index).map_or("", String::as_str);
            out.extend(addrs.iter().map(|(a, _)| *a).filter(|a| is_node_address(name, a, dummy)));
        }
        out.into_iter().collect()
    }

    /// Applies one notification; false when notifications were lost and a dump is needed. An
    /// address removed from the link named `dummy` is added to `unbound`.
    fn notify(
        &mut self,
        message: &NetlinkMessage<RouteNetlinkMessage>,
        dummy: &str,
        unbound: &mut Vec<IpAddr>,
    ) -> bool {
        match &message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => self.address(m, true, dummy),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                if self.links.get(&m.header.index).is_some_and(|name| name == dummy)
                    && let Some(addr) = address_of(m)
                {
                    unbound.push(addr);
                }
                self.address(m, false, dummy)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => self.link(m, true),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => self.link(m, false),
            NetlinkPayload::Overrun(_) => return false,
            _ => {}
        }
        true
    }
}

/// The address an address message carries: the local address (`IFA_LOCAL`), else `IFA_ADDRESS`
/// (the peer's on point-to-point links, the local one elsewhere).
fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(addr) => Some(*addr),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(addr) => Some(*addr),
            _ => None,
        })
    })
}

/// One subscription: the notifications and the state they update.
struct Session {
    notifications: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    host: Host,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Follower {
    dummy: String,
    last: Option<Vec<IpAddr>>,
    session: Option<Session>,
}

impl Follower {
    /// Waits until the node's addresses differ from the last ones yielded (the first call:
    /// until they are known), or addresses leave the dummy link, and returns the updates.
    async fn next_change(&mut self) -> Vec<Update> {
        loop {
            let Some(session) = self.session.as_mut() else {
                match subscribe(&self.dummy).await {
                    Ok(session) => self.session = Some(session),
                    Err(e) => {
                        tracing::warn!("cannot follow the node's addresses, retrying: {e}");
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                }
                if let Some(change) = self.changed() {
                    return vec![Update::NodeAddresses(change)];
                }
                continue;
            };
            let Some((message, _)) = session.notifications.next().await else {
                tracing::warn!("the rtnetlink notification socket closed; reconnecting");
                self.session = None;
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            };
            let mut unbound = Vec::new();
            let mut in_step = session.host.notify(&message, &self.dummy, &mut unbound);
            // Whatever else is queued already: one update for a burst.
            while let Ok((message, _)) = session.notifications.try_recv() {
                in_step &= session.host.notify(&message, &self.dummy, &mut unbound);
            }
            let mut updates = Vec::new();
            if !unbound.is_empty() {
                updates.push(Update::Unbound(unbound));
            }
            if !in_step {
                // Lost notifications may have been removals too: the periodic full sync, which
                // reads the link's addresses, repairs those.
                tracing::warn!("rtnetlink notifications were lost; reading the addresses again");
                self.session = None;
                if !updates.is_empty() {
                    return updates;
                }
                continue;
            }
            if let Some(change) = self.changed() {
                updates.push(Update::NodeAddresses(change));
            }
            if !updates.is_empty() {
                return updates;
            }
        }
    }

    fn changed(&mut self) -> Option<Vec<IpAddr>> {
        let now = self.session.as_ref()?.host.node_addresses(&self.dummy);
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        tracing::info!(addresses = ?now, "node addresses");
        self.last = Some(now.clone());
        Some(now)
    }
}

/// Subscribes to address and link notifications, then dumps: nothing is missed, and a change
/// that raced the dump is in both, which is harmless (notifications are idempotent on [`Host`]).
async fn subscribe(dummy: &str) -> Result<Session, AddressesError> {
    let groups = [MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
    let (mut connection, handle, notifications) =
        rtnetlink::new_multicast_connection(&groups).map_err(AddressesError::Socket)?;
    let per_link = strict_dumps(&mut connection);
    let task = tokio::spawn(connection);
    let mut session = Session { notifications, host: Host::default(), task };
    session.host = Host::dump(&handle, dummy, per_link).await?;
    Ok(session)
}

/// Asks the kernel to check dump requests strictly (Linux 4.20 on), so that an address dump
/// naming a link returns that link's addresses only; false where it cannot.
fn strict_dumps(connection: &mut rtnetlink::proto::Connection<RouteNetlinkMessage>) -> bool {
    use rtnetlink::sys::AsyncSocket;
    connection.socket_mut().socket_mut().set_netlink_get_strict_chk(true).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        NetlinkMessage::from(RouteNetlinkMessage::NewLink(m))
    }

    fn address(index: u32, addr: &str, present: bool) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = 32;
        m.attributes.push(AddressAttribute::Local(addr.parse().unwrap()));
        let message = if present { RouteNetlinkMessage::NewAddress(m) } else { RouteNetlinkMessage::DelAddress(m) };
        NetlinkMessage::from(message)
    }

    #[test]
    fn the_dummy_links_addresses_are_not_kept_and_one_removed_is_reported() {
        let mut host = Host::default();
        let mut unbound = Vec::new();
        assert!(host.notify(&link(2, "eth0"), "kube-ipvs0", &mut unbound));
        assert!(host.notify(&link(3, "kube-ipvs0"), "kube-ipvs0", &mut unbound));
        assert!(host.notify(&address(2, "192.0.2.10", true), "kube-ipvs0", &mut unbound));
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a60_0000 + i).to_string();
            assert!(host.notify(&address(3, &ip, true), "kube-ipvs0", &mut unbound));
        }
        // Each burst of binds recomputes the node's addresses: from the node's few, not from
        // every ClusterIP.
        assert_eq!(host.addresses.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(host.node_addresses("kube-ipvs0"), ["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert!(host.notify(&address(3, "10.96.0.5", false), "kube-ipvs0", &mut unbound));
        assert_eq!(unbound, ["10.96.0.5".parse::<IpAddr>().unwrap()]);
        assert!(host.notify(&address(2, "192.0.2.10", false), "kube-ipvs0", &mut unbound));
        assert!(host.node_addresses("kube-ipvs0").is_empty());
        assert_eq!(unbound.len(), 1, "only the dummy link's removals are reported");
    }

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
