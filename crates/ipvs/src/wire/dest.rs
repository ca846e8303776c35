//! The `DEST` nest: a real server's attributes, and their mapping to [`RealServer`].

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator, Parseable, emit_u16, emit_u32,
    parse_u8, parse_u16, parse_u16_be, parse_u32,
};

use super::address::*;
use super::constants::*;
use super::stats::{StatsAttr, parse_stats_attrs, stats_from_attrs, stats_from_nest};
use crate::{ConnectionCounts, Family, ForwardMethod, RealServer, RealServerEntry, RealServerId, Stats, TunnelType};

/// One attribute of a `DEST` nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestAttr {
    /// `ADDR`.
    Address(RawAddress),
    /// `PORT`, host order here.
    Port(u16),
    /// `FWD_METHOD` (`IP_VS_CONN_F_*`).
    ForwardMethod(u32),
    /// `WEIGHT`.
    Weight(u32),
    /// `U_THRESH`.
    UpperThreshold(u32),
    /// `L_THRESH`.
    LowerThreshold(u32),
    /// `ACTIVE_CONNS` (read only).
    ActiveConns(u32),
    /// `INACT_CONNS` (read only).
    InactiveConns(u32),
    /// `PERSIST_CONNS` (read only).
    PersistentConns(u32),
    /// `STATS`.
    Stats(Vec<StatsAttr>),
    /// `ADDR_FAMILY`.
    AddressFamily(u16),
    /// `STATS64`.
    Stats64(Vec<StatsAttr>),
    /// `TUN_TYPE`.
    TunnelType(u8),
    /// `TUN_PORT`, host order here.
    TunnelPort(u16),
    /// `TUN_FLAGS`.
    TunnelFlags(u16),
    /// Anything else.
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Address(_) => 16,
            DestAttr::Port(_) | DestAttr::AddressFamily(_) | DestAttr::TunnelPort(_) | DestAttr::TunnelFlags(_) => 2,
            DestAttr::TunnelType(_) => 1,
            DestAttr::ForwardMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UpperThreshold(_)
            | DestAttr::LowerThreshold(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactiveConns(_)
            | DestAttr::PersistentConns(_) => 4,
            DestAttr::Stats(a) | DestAttr::Stats64(a) => a.as_slice().buffer_len(),
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Address(_) => IPVS_DEST_ATTR_ADDR,
            DestAttr::Port(_) => IPVS_DEST_ATTR_PORT,
            DestAttr::ForwardMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            DestAttr::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            DestAttr::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactiveConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            DestAttr::PersistentConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            DestAttr::Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            DestAttr::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            DestAttr::Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            DestAttr::TunnelType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            DestAttr::TunnelPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            DestAttr::TunnelFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        // `buffer` is exactly value_len() bytes, so the fixed-size emits cannot fail.
        match self {
            DestAttr::Address(raw) => buffer.copy_from_slice(raw),
            DestAttr::Port(p) | DestAttr::TunnelPort(p) => buffer.copy_from_slice(&p.to_be_bytes()),
            DestAttr::AddressFamily(v) | DestAttr::TunnelFlags(v) => {
                let _ = emit_u16(buffer, *v);
            }
            DestAttr::TunnelType(v) => buffer[0] = *v,
            DestAttr::ForwardMethod(v)
            | DestAttr::Weight(v)
            | DestAttr::UpperThreshold(v)
            | DestAttr::LowerThreshold(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactiveConns(v)
            | DestAttr::PersistentConns(v) => {
                let _ = emit_u32(buffer, *v);
            }
            DestAttr::Stats(a) | DestAttr::Stats64(a) => a.as_slice().emit(buffer),
            DestAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        let p = buf.value();
        let kind = buf.kind();
        let attr = match kind {
            IPVS_DEST_ATTR_ADDR => parse_raw_address(p).map(DestAttr::Address),
            IPVS_DEST_ATTR_PORT => parse_u16_be(p).map(DestAttr::Port),
            IPVS_DEST_ATTR_FWD_METHOD => parse_u32(p).map(DestAttr::ForwardMethod),
            IPVS_DEST_ATTR_WEIGHT => parse_u32(p).map(DestAttr::Weight),
            IPVS_DEST_ATTR_U_THRESH => parse_u32(p).map(DestAttr::UpperThreshold),
            IPVS_DEST_ATTR_L_THRESH => parse_u32(p).map(DestAttr::LowerThreshold),
            IPVS_DEST_ATTR_ACTIVE_CONNS => parse_u32(p).map(DestAttr::ActiveConns),
            IPVS_DEST_ATTR_INACT_CONNS => parse_u32(p).map(DestAttr::InactiveConns),
            IPVS_DEST_ATTR_PERSIST_CONNS => parse_u32(p).map(DestAttr::PersistentConns),
            IPVS_DEST_ATTR_STATS => parse_stats_attrs(p).map(DestAttr::Stats),
            IPVS_DEST_ATTR_ADDR_FAMILY => parse_u16(p).map(DestAttr::AddressFamily),
            IPVS_DEST_ATTR_STATS64 => parse_stats_attrs(p).map(DestAttr::Stats64),
            IPVS_DEST_ATTR_TUN_TYPE => parse_u8(p).map(DestAttr::TunnelType),
            IPVS_DEST_ATTR_TUN_PORT => parse_u16_be(p).map(DestAttr::TunnelPort),
            IPVS_DEST_ATTR_TUN_FLAGS => parse_u16(p).map(DestAttr::TunnelFlags),
            _ => DefaultNla::parse(buf).map(DestAttr::Other),
        };
        attr.map_err(|e| DecodeError::from(format!("destination attribute {kind}: {e}")))
    }
}

/// Parses the payload of a `DEST` nest.
pub fn parse_dest_attrs(payload: &[u8]) -> Result<Vec<DestAttr>, DecodeError> {
    super::parse_nlas(payload, |nla| DestAttr::parse(nla))
}

/// The attributes that name a real server (`DEL_DEST`). The family is always sent, so a real
/// server may be of another family than its virtual server (tunnels allow that).
pub fn dest_id_attrs(id: &RealServerId) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(raw_address(&id.addr)),
        DestAttr::Port(id.port),
        DestAttr::AddressFamily(family_number(Family::of(&id.addr))),
    ]
}

/// Every attribute `NEW_DEST` / `SET_DEST` need.
pub fn dest_attrs(rs: &RealServer) -> Vec<DestAttr> {
    let mut attrs = dest_id_attrs(&rs.id);
    let method = match rs.forward {
        ForwardMethod::Masquerade => IP_VS_CONN_F_MASQ,
        ForwardMethod::Local => IP_VS_CONN_F_LOCALNODE,
        ForwardMethod::Tunnel { .. } => IP_VS_CONN_F_TUNNEL,
        ForwardMethod::Route => IP_VS_CONN_F_DROUTE,
        ForwardMethod::Other(bits) => bits,
    };
    attrs.push(DestAttr::ForwardMethod(method));
    attrs.push(DestAttr::Weight(rs.weight));
    attrs.push(DestAttr::UpperThreshold(rs.upper_threshold));
    attrs.push(DestAttr::LowerThreshold(rs.lower_threshold));
    if let ForwardMethod::Tunnel { tunnel, port, flags } = rs.forward {
        let kind = match tunnel {
            TunnelType::IpIp => IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
            TunnelType::Gue => IP_VS_CONN_F_TUNNEL_TYPE_GUE,
            TunnelType::Gre => IP_VS_CONN_F_TUNNEL_TYPE_GRE,
            TunnelType::Other(n) => n,
        };
        attrs.extend([DestAttr::TunnelType(kind), DestAttr::TunnelPort(port), DestAttr::TunnelFlags(flags)]);
    }
    attrs
}

/// Builds a [`RealServerEntry`] from a `DEST` nest as the kernel sends it. `service_family` is
/// used when the nest has no `ADDR_FAMILY` (older kernels). Prefers `STATS64` to `STATS`.
pub fn real_server_entry(attrs: &[DestAttr], service_family: Family) -> Result<RealServerEntry, DecodeError> {
    let mut fold = DestFold::default();
    for attr in attrs {
        fold.add(attr);
    }
    fold.finish(service_family)
}

/// [`real_server_entry`] straight from a `DEST` nest's payload, without building the attribute
/// list: the same decoding, minus the allocations, for the destination dumps of
/// [`Client::table`](crate::Client::table).
pub fn real_server_entry_from_nest(payload: &[u8], service_family: Family) -> Result<RealServerEntry, DecodeError> {
    real_server_entry_from_nest_with(payload, service_family, true)
}

/// [`real_server_entry_from_nest`], the statistics decoded only if `statistics` (else zero).
pub fn real_server_entry_from_nest_with(
    payload: &[u8],
    service_family: Family,
    statistics: bool,
) -> Result<RealServerEntry, DecodeError> {
    let mut fold = DestFold::default();
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        match nla.kind() {
            IPVS_DEST_ATTR_STATS | IPVS_DEST_ATTR_STATS64 if !statistics => {}
            IPVS_DEST_ATTR_STATS => fold.stats = Some(stats_from_nest(nla.value())?),
            IPVS_DEST_ATTR_STATS64 => fold.stats64 = Some(stats_from_nest(nla.value())?),
            _ => fold.add(&DestAttr::parse(&nla)?),
        }
    }
    fold.finish(service_family)
}

/// The forwarding method a real server's connection flags (`IPVS_DEST_ATTR_FWD_METHOD`, or
/// `conn_flags` of the socket options' entries) name; the tunnel's type, port and flags count
/// only for a tunnel. Bits beyond the method's mask are ignored; a method this crate does not
/// know is kept as `Other`.
pub(crate) fn forward_method(conn_flags: u32, tun_type: u8, tun_port: u16, tun_flags: u16) -> ForwardMethod {
    match conn_flags & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => ForwardMethod::Masquerade,
        IP_VS_CONN_F_LOCALNODE => ForwardMethod::Local,
        IP_VS_CONN_F_DROUTE => ForwardMethod::Route,
        IP_VS_CONN_F_TUNNEL => {
            let tunnel = match tun_type {
                IP_VS_CONN_F_TUNNEL_TYPE_IPIP => TunnelType::IpIp,
                IP_VS_CONN_F_TUNNEL_TYPE_GUE => TunnelType::Gue,
                IP_VS_CONN_F_TUNNEL_TYPE_GRE => TunnelType::Gre,
                other => TunnelType::Other(other),
            };
            ForwardMethod::Tunnel { tunnel, port: tun_port, flags: tun_flags }
        }
        other => ForwardMethod::Other(other),
    }
}

/// What a `DEST` nest said so far.
#[derive(Default)]
struct DestFold {
    addr: Option<RawAddress>,
    port: Option<u16>,
    af: Option<u16>,
    method: Option<u32>,
    weight: u32,
    upper_threshold: u32,
    lower_threshold: u32,
    connections: ConnectionCounts,
    tun_type: u8,
    tun_port: u16,
    tun_flags: u16,
    stats: Option<Stats>,
    stats64: Option<Stats>,
}

impl DestFold {
    fn add(&mut self, attr: &DestAttr) {
        match attr {
            DestAttr::Address(v) => self.addr = Some(*v),
            DestAttr::Port(v) => self.port = Some(*v),
            DestAttr::ForwardMethod(v) => self.method = Some(*v),
            DestAttr::Weight(v) => self.weight = *v,
            DestAttr::UpperThreshold(v) => self.upper_threshold = *v,
            DestAttr::LowerThreshold(v) => self.lower_threshold = *v,
            DestAttr::ActiveConns(v) => self.connections.active = *v,
            DestAttr::InactiveConns(v) => self.connections.inactive = *v,
            DestAttr::PersistentConns(v) => self.connections.persistent = *v,
            DestAttr::Stats(v) => self.stats = Some(stats_from_attrs(v)),
            DestAttr::AddressFamily(v) => self.af = Some(*v),
            DestAttr::Stats64(v) => self.stats64 = Some(stats_from_attrs(v)),
            DestAttr::TunnelType(v) => self.tun_type = *v,
            DestAttr::TunnelPort(v) => self.tun_port = *v,
            DestAttr::TunnelFlags(v) => self.tun_flags = *v,
            DestAttr::Other(_) => {}
        }
    }

    fn finish(self, service_family: Family) -> Result<RealServerEntry, DecodeError> {
        let family = match self.af {
            Some(af) => family_from_number(af)?,
            None => service_family,
        };
        let addr = address_of(&self.addr.ok_or("destination without address")?, family);
        let port = self.port.ok_or("destination without port")?;
        let method = self.method.ok_or("destination without forwarding method")?;
        let forward = forward_method(method, self.tun_type, self.tun_port, self.tun_flags);
        let server = RealServer {
            id: RealServerId { addr, port },
            weight: self.weight,
            forward,
            upper_threshold: self.upper_threshold,
            lower_threshold: self.lower_threshold,
        };
        Ok(RealServerEntry {
            server,
            connections: self.connections,
            stats: self.stats64.or(self.stats).unwrap_or_default(),
        })
    }
}
