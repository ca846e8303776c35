//! Masquerade and filtering with nftables: the part of kube-proxy's IPVS mode that is not IPVS.
//!
//! The proxy owns one `inet` table (default `kube-ipvs-proxy`) with a fixed skeleton of chains
//! and rules, made once; what changes with the Services is only the elements of its sets:
//!
//! | set (`_v4`/`_v6`) | element | effect |
//! | --- | --- | --- |
//! | `masq_all` | `addr . proto . port` | traffic to it is marked, then masqueraded after IPVS |
//! | `masq_outside` | `addr . proto . port` | the same when the source is outside `cluster_prefixes` (a family without any: when the source is the address itself, the node's own traffic) |
//! | `hairpin` | `endpoint . proto . port . endpoint` | an endpoint reaching itself is masqueraded |
//! | `source_restricted` / `source_allowed_{tcp,udp,sctp}` | `addr . proto . port` / `addr . port . prefix` | other sources are dropped (chain `source_check`) |
//! | `bound` / `service_ports` | `addr` / `addr . proto . port` | new connections to a bound address on another port are rejected |
//! | `short_circuit_keys` / map `short_circuit` | `addr . proto . port` / `... : addr . port` | traffic from the cluster prefixes or the node to it goes to the mapped address instead (the node's masqueraded) |
//!
//! [`FilterState`] (pure) says what the sets hold per virtual server; [`FilterState::set`] and
//! [`FilterState::diff`] give [`ElementChanges`], which [`Netfilter`] writes over nfnetlink,
//! one transaction (a batch) per update and none when no element changes; [`Nft`] runs `nft`
//! for the skeleton of chains and rules and for a rebuild. [`Conntrack`] forgets the conntrack entries of stale
//! connectionless flows ([`StaleFlows`]) over ctnetlink. [`ForwardAccept`] lets service traffic
//! through a host's iptables `FORWARD` chain whose policy is drop.

mod conntrack;
mod elements;
mod forward;
mod ipset;
mod monitor;
mod nfnetlink;
mod script;
mod set_digest;
mod state;

mod nft;

#[cfg(test)]
mod tests;

pub use script::{DEFAULT_MASQUERADE_BIT, FilterConfig, LocalTraffic};
pub use state::{Element, ElementChanges, FilterState, MasqueradeRule, ServiceFilter, Target};

pub use conntrack::{Conntrack, StaleFlows};
pub use forward::{FORWARD_CHAIN, ForwardAccept, ForwardError, accept_forwarded};
pub use ipset::{Ipsets, SetRemoval};
pub use monitor::TableMonitor;
pub use nfnetlink::NfnetlinkError;
pub use nft::{Netfilter, Nft, NftError};
pub use set_digest::SetReader;
