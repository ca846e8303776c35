//! The IPVS domain types: what a virtual server and a real server are, independent of the wire.
//!
//! These are shared with `crates/model`, which computes the desired state in these terms, so they
//! stay pure data: no I/O, plain `Eq + Hash + Ord` values.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Scheduler;

/// An address family as IPVS knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4, `AF_INET` (2).
    V4,
    /// IPv6, `AF_INET6` (10).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A transport protocol a tuple virtual server can balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// Any other `IPPROTO_*` number the kernel reports: kept, not refused, so one entry this
    /// crate cannot name does not fail a whole dump. The proxy never makes such entries.
    Other(u16),
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Other(n) => return write!(f, "proto-{n}"),
        })
    }
}

/// What names a virtual server in the kernel: a protocol, address and port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VirtualServerId {
    /// `protocol addr:port`; the family is the address's.
    Tuple {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual address.
        addr: IpAddr,
        /// Virtual port (host order here; the wire carries it big-endian).
        port: u16,
    },
    /// `FWM mark` in one family.
    Fwmark {
        /// Address family of the packets the mark selects.
        family: Family,
        /// The firewall mark (non-zero).
        mark: u32,
    },
}

impl VirtualServerId {
    /// The address family of this virtual server.
    pub fn family(&self) -> Family {
        match self {
            VirtualServerId::Tuple { addr, .. } => Family::of(addr),
            VirtualServerId::Fwmark { family, .. } => *family,
        }
    }

    /// The virtual address, if this is a tuple virtual server.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            VirtualServerId::Tuple { addr, .. } => Some(*addr),
            VirtualServerId::Fwmark { .. } => None,
        }
    }
}

impl fmt::Display for VirtualServerId {
    /// Formats as `ipvsadm -Ln` names a virtual server: `TCP  10.0.0.1:80`, `TCP  [fd00::1]:80`,
    /// `FWM  7` (without the padding ipvsadm adds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtualServerId::Tuple { protocol, addr: IpAddr::V4(a), port } => {
                write!(f, "{protocol} {a}:{port}")
            }
            VirtualServerId::Tuple { protocol, addr: IpAddr::V6(a), port } => {
                write!(f, "{protocol} [{a}]:{port}")
            }
            VirtualServerId::Fwmark { family: Family::V4, mark } => write!(f, "FWM {mark}"),
            VirtualServerId::Fwmark { family: Family::V6, mark } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

bitflags::bitflags! {
    /// Virtual server flags (`IP_VS_SVC_F_*`), written with a mask so that only the named bits
    /// change. Bits this crate does not name are kept as the kernel reported them.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct ServiceFlags: u32 {
        /// Persistent service (session affinity); needs a timeout and netmask.
        const PERSISTENT = 0x0001;
        /// Hashed entry; set by the kernel, read only.
        const HASHED = 0x0002;
        /// One-packet scheduling (UDP).
        const ONE_PACKET = 0x0004;
        /// Scheduler flag 1 (`sh-fallback`, `mh-fallback`).
        const SCHED1 = 0x0008;
        /// Scheduler flag 2 (`sh-port`, `mh-port`).
        const SCHED2 = 0x0010;
        /// Scheduler flag 3.
        const SCHED3 = 0x0020;
        // Unknown bits are the kernel's to keep.
        const _ = !0;
    }
}

impl ServiceFlags {
    /// The flags a client may set: everything but the kernel-owned `HASHED` bit. Comparing desired
    /// and observed virtual servers must use this, or every read-back differs by `HASHED`.
    pub fn settable(self) -> ServiceFlags {
        self - ServiceFlags::HASHED
    }
}

/// As the raw `u32` the kernel uses (the JSON of `debug status --json` and `debug render --json`).
impl Serialize for ServiceFlags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.bits().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServiceFlags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ServiceFlags, D::Error> {
        u32::deserialize(deserializer).map(ServiceFlags::from_bits_retain)
    }
}

/// A virtual server's configuration: everything `NEW_SERVICE` / `SET_SERVICE` carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VirtualServer {
    /// What names it.
    pub id: VirtualServerId,
    /// Scheduler (`rr`, `wrr`, `lc`, `wlc`, `sh`, `mh`, ...).
    pub scheduler: Scheduler,
    /// Flags (see [`ServiceFlags`]); when read back, `HASHED` is set by the kernel.
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds; meaningful with `PERSISTENT`.
    pub timeout: u32,
    /// Persistence netmask: for IPv4 the mask itself (`0xffff_ffff`), for IPv6 the prefix length (128).
    pub netmask: u32,
    /// Persistence engine name (`sip`), if any.
    pub pe_name: Option<String>,
}

impl VirtualServer {
    /// A virtual server with the defaults `ipvsadm -A` uses: no flags, no persistence, a full netmask.
    pub fn new(id: VirtualServerId, scheduler: impl Into<Scheduler>) -> VirtualServer {
        let netmask = match id.family() {
            Family::V4 => 0xffff_ffff,
            Family::V6 => 128,
        };
        VirtualServer {
            id,
            scheduler: scheduler.into(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask,
            pe_name: None,
        }
    }
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ForwardMethod {
    /// NAT (`-m`, 0).
    Masquerade,
    /// Local delivery (1).
    Local,
    /// IP-in-IP / GUE / GRE tunnel (`-i`, 2).
    Tunnel {
        /// Tunnel encapsulation.
        tunnel: TunnelType,
        /// Destination UDP port for GUE (host order here).
        port: u16,
        /// Tunnel flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`: 0x1 checksum, 0x2 remote checksum).
        flags: u16,
    },
    /// Direct routing (`-g`, 3).
    Route,
    /// A forwarding method this crate does not name: the raw `IP_VS_CONN_F_FWD_MASK` bits.
    Other(u32),
}

/// Tunnel encapsulation of [`ForwardMethod::Tunnel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TunnelType {
    /// IP in IP (0), the default.
    IpIp,
    /// Generic UDP Encapsulation (1).
    Gue,
    /// GRE (2).
    Gre,
    /// A tunnel type this crate does not name, as the kernel numbers it.
    Other(u8),
}

/// What names a real server within its virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RealServerId {
    /// Address (its family may differ from the virtual server's only for tunnels).
    pub addr: IpAddr,
    /// Port (host order here).
    pub port: u16,
}

/// A real server's configuration: everything `NEW_DEST` / `SET_DEST` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RealServer {
    /// What names it.
    pub id: RealServerId,
    /// Weight; the kernel holds it as a signed 32-bit int, so values above `i32::MAX` are
    /// refused with a range error.
    pub weight: u32,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: u32,
}

impl RealServer {
    /// A masquerading real server with weight `weight` and no thresholds.
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> RealServer {
        RealServer {
            id: RealServerId { addr, port },
            weight,
            forward: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// Traffic counters of a virtual or real server (from `STATS64`, or `STATS` widened).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub in_pkts: u64,
    /// Outgoing packets.
    pub out_pkts: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
    /// Connections per second (rate estimate).
    pub cps: u64,
    /// Incoming packets per second.
    pub in_pps: u64,
    /// Outgoing packets per second.
    pub out_pps: u64,
    /// Incoming bytes per second.
    pub in_bps: u64,
    /// Outgoing bytes per second.
    pub out_bps: u64,
}

/// Connection counters the kernel keeps per real server (read only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Established connections.
    pub active: u32,
    /// Other connections (e.g. FIN_WAIT, TIME_WAIT, UDP).
    pub inactive: u32,
    /// Persistence templates.
    pub persistent: u32,
}

impl ConnectionCounts {
    /// Active plus inactive connections: what graceful removal waits on.
    pub fn total(&self) -> u64 {
        u64::from(self.active) + u64::from(self.inactive)
    }
}

/// A virtual server as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualServerEntry {
    /// Its configuration.
    pub server: VirtualServer,
    /// Its counters.
    pub stats: Stats,
}

/// A real server as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerEntry {
    /// Its configuration.
    pub server: RealServer,
    /// Its connection counters.
    pub connections: ConnectionCounts,
    /// Its traffic counters.
    pub stats: Stats,
}

/// A whole IPVS table as read from the kernel: each virtual server with its real servers, in the
/// kernel's dump order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Virtual servers with their real servers.
    pub services: Vec<(VirtualServerEntry, Vec<RealServerEntry>)>,
}

/// IPVS connection timeouts in seconds; 0 in a write means "leave unchanged".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// `GET_INFO`: the IPVS version and connection hash table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Version as the kernel encodes it (`0x010201` is 1.2.1).
    pub version: u32,
    /// Connection hash table size (buckets).
    pub conn_table_size: u32,
}

impl Info {
    /// The version as `major.minor.patch`, as ipvsadm prints it.
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", (self.version >> 16) & 0xff, (self.version >> 8) & 0xff, self.version & 0xff)
    }
}

/// One write in a batch: the unit [`crate`]'s batch call pipelines and reports on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// `NEW_SERVICE`.
    AddVirtualServer(VirtualServer),
    /// `SET_SERVICE`: scheduler, flags, timeout, netmask in place.
    UpdateVirtualServer(VirtualServer),
    /// `DEL_SERVICE` (its real servers go with it).
    DeleteVirtualServer(VirtualServerId),
    /// `NEW_DEST` under a virtual server.
    AddRealServer(VirtualServerId, RealServer),
    /// `SET_DEST` under a virtual server.
    UpdateRealServer(VirtualServerId, RealServer),
    /// `DEL_DEST` under a virtual server.
    DeleteRealServer(VirtualServerId, RealServerId),
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::AddVirtualServer(v) => write!(f, "add virtual server {}", v.id),
            Operation::UpdateVirtualServer(v) => write!(f, "update virtual server {}", v.id),
            Operation::DeleteVirtualServer(id) => write!(f, "delete virtual server {id}"),
            Operation::AddRealServer(v, r) => write!(f, "add real server {} to {v}", DisplayRs(&r.id)),
            Operation::UpdateRealServer(v, r) => write!(f, "update real server {} of {v}", DisplayRs(&r.id)),
            Operation::DeleteRealServer(v, r) => write!(f, "delete real server {} of {v}", DisplayRs(r)),
        }
    }
}

struct DisplayRs<'a>(&'a RealServerId);

impl fmt::Display for DisplayRs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.0.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.0.port),
        }
    }
}

impl fmt::Display for RealServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DisplayRs(self).fmt(f)
    }
}
