//! The `SERVICE` nest: a virtual server's attributes, and their mapping to [`VirtualServer`].

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator, Parseable, emit_u16, emit_u32,
    parse_string, parse_u16, parse_u16_be, parse_u32,
};

use super::address::*;
use super::constants::*;
use super::stats::{StatsAttr, parse_stats_attrs, stats_from_attrs, stats_from_nest};
use crate::{Family, Scheduler, ServiceFlags, Stats, VirtualServer, VirtualServerEntry, VirtualServerId};

/// `struct ip_vs_flags`: the kernel computes `new = (old & !mask) | (flags & mask)`.
///
/// ```text
/// 0        4        8
/// +--------+--------+
/// | flags  | mask   |   both u32, host order
/// +--------+--------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsMask {
    /// The flag bits.
    pub flags: u32,
    /// Which bits `flags` sets.
    pub mask: u32,
}

/// One attribute of a `SERVICE` nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAttr {
    /// `AF`.
    AddressFamily(u16),
    /// `PROTOCOL`.
    Protocol(u16),
    /// `ADDR`.
    Address(RawAddress),
    /// `PORT`, host order here.
    Port(u16),
    /// `FWMARK`.
    Fwmark(u32),
    /// `SCHED_NAME`.
    Scheduler(String),
    /// `FLAGS`.
    Flags(FlagsMask),
    /// `TIMEOUT` (persistence, seconds).
    Timeout(u32),
    /// `NETMASK` as the native-order reading of its 4 bytes (see [`crate::VirtualServer::netmask`]).
    Netmask(u32),
    /// `STATS`.
    Stats(Vec<StatsAttr>),
    /// `PE_NAME`.
    PersistenceEngine(String),
    /// `STATS64`.
    Stats64(Vec<StatsAttr>),
    /// Anything else.
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            ServiceAttr::AddressFamily(_) | ServiceAttr::Protocol(_) | ServiceAttr::Port(_) => 2,
            ServiceAttr::Address(_) => 16,
            ServiceAttr::Fwmark(_) | ServiceAttr::Timeout(_) | ServiceAttr::Netmask(_) => 4,
            ServiceAttr::Flags(_) => 8,
            ServiceAttr::Scheduler(s) | ServiceAttr::PersistenceEngine(s) => s.len() + 1,
            ServiceAttr::Stats(a) | ServiceAttr::Stats64(a) => a.as_slice().buffer_len(),
            ServiceAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            ServiceAttr::AddressFamily(_) => IPVS_SVC_ATTR_AF,
            ServiceAttr::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            ServiceAttr::Address(_) => IPVS_SVC_ATTR_ADDR,
            ServiceAttr::Port(_) => IPVS_SVC_ATTR_PORT,
            ServiceAttr::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            ServiceAttr::Scheduler(_) => IPVS_SVC_ATTR_SCHED_NAME,
            ServiceAttr::Flags(_) => IPVS_SVC_ATTR_FLAGS,
            ServiceAttr::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            ServiceAttr::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            ServiceAttr::Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            ServiceAttr::PersistenceEngine(_) => IPVS_SVC_ATTR_PE_NAME,
            ServiceAttr::Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            ServiceAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        // `buffer` is exactly value_len() bytes, so the fixed-size emits cannot fail.
        match self {
            ServiceAttr::AddressFamily(v) | ServiceAttr::Protocol(v) => {
                let _ = emit_u16(buffer, *v);
            }
            ServiceAttr::Port(p) => buffer.copy_from_slice(&p.to_be_bytes()),
            ServiceAttr::Address(raw) => buffer.copy_from_slice(raw),
            ServiceAttr::Fwmark(v) | ServiceAttr::Timeout(v) | ServiceAttr::Netmask(v) => {
                let _ = emit_u32(buffer, *v);
            }
            ServiceAttr::Flags(f) => {
                let _ = emit_u32(&mut buffer[..4], f.flags);
                let _ = emit_u32(&mut buffer[4..], f.mask);
            }
            ServiceAttr::Scheduler(s) | ServiceAttr::PersistenceEngine(s) => emit_cstring(buffer, s),
            ServiceAttr::Stats(a) | ServiceAttr::Stats64(a) => a.as_slice().emit(buffer),
            ServiceAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

/// Writes `s` and its terminating NUL into a buffer of `s.len() + 1` bytes.
pub(crate) fn emit_cstring(buffer: &mut [u8], s: &str) {
    let n = s.len();
    buffer[..n].copy_from_slice(s.as_bytes());
    buffer[n] = 0;
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        let p = buf.value();
        let kind = buf.kind();
        let attr = match kind {
            IPVS_SVC_ATTR_AF => parse_u16(p).map(ServiceAttr::AddressFamily),
            IPVS_SVC_ATTR_PROTOCOL => parse_u16(p).map(ServiceAttr::Protocol),
            IPVS_SVC_ATTR_ADDR => parse_raw_address(p).map(ServiceAttr::Address),
            IPVS_SVC_ATTR_PORT => parse_u16_be(p).map(ServiceAttr::Port),
            IPVS_SVC_ATTR_FWMARK => parse_u32(p).map(ServiceAttr::Fwmark),
            IPVS_SVC_ATTR_SCHED_NAME => parse_string(p).map(ServiceAttr::Scheduler),
            IPVS_SVC_ATTR_FLAGS if p.len() == 8 => {
                Ok(ServiceAttr::Flags(FlagsMask { flags: parse_u32(&p[..4])?, mask: parse_u32(&p[4..])? }))
            }
            IPVS_SVC_ATTR_FLAGS => Err(DecodeError::invalid_number(8, p.len())),
            IPVS_SVC_ATTR_TIMEOUT => parse_u32(p).map(ServiceAttr::Timeout),
            IPVS_SVC_ATTR_NETMASK => parse_u32(p).map(ServiceAttr::Netmask),
            IPVS_SVC_ATTR_STATS => parse_stats_attrs(p).map(ServiceAttr::Stats),
            IPVS_SVC_ATTR_PE_NAME => parse_string(p).map(ServiceAttr::PersistenceEngine),
            IPVS_SVC_ATTR_STATS64 => parse_stats_attrs(p).map(ServiceAttr::Stats64),
            _ => DefaultNla::parse(buf).map(ServiceAttr::Other),
        };
        attr.map_err(|e| DecodeError::from(format!("service attribute {kind}: {e}")))
    }
}

/// Parses the payload of a `SERVICE` nest.
pub fn parse_service_attrs(payload: &[u8]) -> Result<Vec<ServiceAttr>, DecodeError> {
    super::parse_nlas(payload, |nla| ServiceAttr::parse(nla))
}

/// The attributes that name a virtual server (enough for `DEL_SERVICE`, `GET_SERVICE`, and the
/// `SERVICE` nest of destination commands).
pub fn service_id_attrs(id: &VirtualServerId) -> Vec<ServiceAttr> {
    match id {
        VirtualServerId::Tuple { protocol, addr, port } => vec![
            ServiceAttr::AddressFamily(family_number(id.family())),
            ServiceAttr::Protocol(protocol_number(*protocol)),
            ServiceAttr::Address(raw_address(addr)),
            ServiceAttr::Port(*port),
        ],
        VirtualServerId::Fwmark { family, mark } => {
            vec![ServiceAttr::AddressFamily(family_number(*family)), ServiceAttr::Fwmark(*mark)]
        }
    }
}

/// Every attribute `NEW_SERVICE` / `SET_SERVICE` need. The flags mask is all ones: the
/// [`VirtualServer`] is the whole truth about its flags (the kernel re-adds `HASHED` itself).
pub fn service_attrs(vs: &VirtualServer) -> Vec<ServiceAttr> {
    let mut attrs = service_id_attrs(&vs.id);
    attrs.push(ServiceAttr::Scheduler(vs.scheduler.to_string()));
    if let Some(pe) = &vs.pe_name {
        attrs.push(ServiceAttr::PersistenceEngine(pe.clone()));
    }
    attrs.push(ServiceAttr::Flags(FlagsMask { flags: vs.flags.bits(), mask: u32::MAX }));
    attrs.push(ServiceAttr::Timeout(vs.timeout));
    attrs.push(ServiceAttr::Netmask(netmask_to_wire(vs.id.family(), vs.netmask)));
    attrs
}

/// The kernel keeps an IPv4 netmask as a big-endian mask and an IPv6 one as a prefix length in
/// host order, and copies the attribute's 4 bytes either way.
fn netmask_to_wire(family: Family, netmask: u32) -> u32 {
    match family {
        Family::V4 => u32::from_ne_bytes(netmask.to_be_bytes()),
        Family::V6 => netmask,
    }
}

fn netmask_from_wire(family: Family, wire: u32) -> u32 {
    match family {
        Family::V4 => u32::from_be_bytes(wire.to_ne_bytes()),
        Family::V6 => wire,
    }
}

/// Builds a [`VirtualServerEntry`] from a `SERVICE` nest as the kernel sends it. Prefers
/// `STATS64`, falls back to `STATS`. Fails when the nest does not name a service.
pub fn virtual_server_entry(attrs: &[ServiceAttr]) -> Result<VirtualServerEntry, DecodeError> {
    let mut fold = ServiceFold::default();
    for attr in attrs {
        fold.add(attr);
    }
    fold.finish()
}

/// [`virtual_server_entry`] straight from a `SERVICE` nest's payload, without building the
/// attribute list; with `statistics` false the statistics are not decoded (left zero): a
/// listing read only to compare configurations skips two thirds of the attributes.
pub fn virtual_server_entry_from_nest(payload: &[u8], statistics: bool) -> Result<VirtualServerEntry, DecodeError> {
    let mut fold = ServiceFold::default();
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        match nla.kind() {
            IPVS_SVC_ATTR_STATS | IPVS_SVC_ATTR_STATS64 if !statistics => {}
            IPVS_SVC_ATTR_STATS => fold.stats = Some(stats_from_nest(nla.value())?),
            IPVS_SVC_ATTR_STATS64 => fold.stats64 = Some(stats_from_nest(nla.value())?),
            _ => fold.add(&ServiceAttr::parse(&nla)?),
        }
    }
    fold.finish()
}

/// What a `SERVICE` nest said so far.
#[derive(Default)]
struct ServiceFold {
    af: Option<u16>,
    proto: Option<u16>,
    addr: Option<RawAddress>,
    port: Option<u16>,
    mark: Option<u32>,
    flags: u32,
    scheduler: String,
    pe_name: Option<String>,
    timeout: u32,
    netmask: Option<u32>,
    stats: Option<Stats>,
    stats64: Option<Stats>,
}

impl ServiceFold {
    fn add(&mut self, attr: &ServiceAttr) {
        match attr {
            ServiceAttr::AddressFamily(v) => self.af = Some(*v),
            ServiceAttr::Protocol(v) => self.proto = Some(*v),
            ServiceAttr::Address(v) => self.addr = Some(*v),
            ServiceAttr::Port(v) => self.port = Some(*v),
            ServiceAttr::Fwmark(v) => self.mark = Some(*v),
            ServiceAttr::Scheduler(v) => self.scheduler.clone_from(v),
            ServiceAttr::Flags(f) => self.flags = f.flags,
            ServiceAttr::Timeout(v) => self.timeout = *v,
            ServiceAttr::Netmask(v) => self.netmask = Some(*v),
            ServiceAttr::Stats(v) => self.stats = Some(stats_from_attrs(v)),
            ServiceAttr::PersistenceEngine(v) => self.pe_name = Some(v.clone()),
            ServiceAttr::Stats64(v) => self.stats64 = Some(stats_from_attrs(v)),
            ServiceAttr::Other(_) => {}
        }
    }

    fn finish(self) -> Result<VirtualServerEntry, DecodeError> {
        let family = family_from_number(self.af.ok_or("service without address family")?)?;
        let id = match (self.mark, self.proto, self.addr, self.port) {
            (Some(mark), ..) if mark != 0 => VirtualServerId::Fwmark { family, mark },
            (_, Some(p), Some(a), Some(port)) => {
                VirtualServerId::Tuple { protocol: protocol_from_number(p), addr: address_of(&a, family), port }
            }
            _ => {
                return Err("service with neither firewall mark nor protocol, address and port".into());
            }
        };
        let netmask = match self.netmask {
            Some(wire) => netmask_from_wire(family, wire),
            None => VirtualServer::new(id, "").netmask,
        };
        let server = VirtualServer {
            id,
            scheduler: Scheduler::from(self.scheduler),
            flags: ServiceFlags::from_bits_retain(self.flags),
            timeout: self.timeout,
            netmask,
            pe_name: self.pe_name,
        };
        let stats = self.stats64.or(self.stats).unwrap_or_default();
        Ok(VirtualServerEntry { server, stats })
    }
}
