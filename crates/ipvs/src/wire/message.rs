//! The IPVS generic netlink message: a command and its top-level attributes.
//!
//! The top-level attribute ids depend on the command: in a `SET_INFO` reply ids 1 and 2 are the
//! version and table size, everywhere else they are the `SERVICE` and `DEST` nests. Parsing is
//! therefore parametrized by the generic netlink header.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable, ParseableParametrized, emit_u32,
    parse_u32,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::constants::*;
use super::dest::{DestAttr, parse_dest_attrs};
use super::service::{ServiceAttr, parse_service_attrs};

/// One top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttr {
    /// `SERVICE` nest.
    Service(Vec<ServiceAttr>),
    /// `DEST` nest.
    Dest(Vec<DestAttr>),
    /// `TIMEOUT_TCP`.
    TimeoutTcp(u32),
    /// `TIMEOUT_TCP_FIN`.
    TimeoutTcpFin(u32),
    /// `TIMEOUT_UDP`.
    TimeoutUdp(u32),
    /// `INFO_ATTR_VERSION` (only in `SET_INFO`).
    Version(u32),
    /// `INFO_ATTR_CONN_TAB_SIZE` (only in `SET_INFO`).
    ConnTableSize(u32),
    /// Anything else (e.g. the `DAEMON` nest).
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(a) => a.as_slice().buffer_len(),
            IpvsAttr::Dest(a) => a.as_slice().buffer_len(),
            IpvsAttr::Other(nla) => nla.value_len(),
            _ => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::Version(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttr::ConnTableSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsAttr::Service(a) => a.as_slice().emit(buffer),
            IpvsAttr::Dest(a) => a.as_slice().emit(buffer),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::Version(v)
            | IpvsAttr::ConnTableSize(v) => {
                // `buffer` is exactly 4 bytes: this cannot fail.
                let _ = emit_u32(buffer, *v);
            }
            IpvsAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl IpvsAttr {
    fn parse_for(buf: &NlaBuffer<&[u8]>, cmd: u8) -> Result<IpvsAttr, DecodeError> {
        let p = buf.value();
        let kind = buf.kind();
        let attr = match (cmd, kind) {
            (IPVS_CMD_SET_INFO, IPVS_INFO_ATTR_VERSION) => parse_u32(p).map(IpvsAttr::Version),
            (IPVS_CMD_SET_INFO, IPVS_INFO_ATTR_CONN_TAB_SIZE) => parse_u32(p).map(IpvsAttr::ConnTableSize),
            (IPVS_CMD_SET_INFO, _) => DefaultNla::parse(buf).map(IpvsAttr::Other),
            (_, IPVS_CMD_ATTR_SERVICE) => parse_service_attrs(p).map(IpvsAttr::Service),
            (_, IPVS_CMD_ATTR_DEST) => parse_dest_attrs(p).map(IpvsAttr::Dest),
            (_, IPVS_CMD_ATTR_TIMEOUT_TCP) => parse_u32(p).map(IpvsAttr::TimeoutTcp),
            (_, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN) => parse_u32(p).map(IpvsAttr::TimeoutTcpFin),
            (_, IPVS_CMD_ATTR_TIMEOUT_UDP) => parse_u32(p).map(IpvsAttr::TimeoutUdp),
            _ => DefaultNla::parse(buf).map(IpvsAttr::Other),
        };
        attr.map_err(|e| DecodeError::from(format!("IPVS attribute {kind}: {e}")))
    }
}

/// An IPVS generic netlink message: what goes after the generic netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command (`IPVS_CMD_*`).
    pub cmd: u8,
    /// Its top-level attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A message with command `cmd` and attributes `attrs`.
    pub fn new(cmd: u8, attrs: Vec<IpvsAttr>) -> IpvsMessage {
        IpvsMessage { cmd, attrs }
    }

    /// A virtual server dump entry as the kernel sends one (`NEW_SERVICE` with a `SERVICE` nest).
    pub fn service_entry(attrs: Vec<ServiceAttr>) -> IpvsMessage {
        IpvsMessage::new(super::constants::IPVS_CMD_NEW_SERVICE, vec![IpvsAttr::Service(attrs)])
    }

    /// A real server dump entry as the kernel sends one (`NEW_DEST` with a `DEST` nest).
    pub fn dest_entry(attrs: Vec<DestAttr>) -> IpvsMessage {
        IpvsMessage::new(super::constants::IPVS_CMD_NEW_DEST, vec![IpvsAttr::Dest(attrs)])
    }

    /// The first `SERVICE` nest, if any.
    pub fn service(&self) -> Option<&[ServiceAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(s) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The first `DEST` nest, if any.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(d) => Some(d.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = super::parse_nlas(buf, |nla| IpvsAttr::parse_for(nla, header.cmd))?;
        Ok(IpvsMessage { cmd: header.cmd, attrs })
    }
}
