//! The `STATS` / `STATS64` nests of services and destinations.
//!
//! The kernel sends both: `STATS` with 32-bit counters (byte counters 64-bit), `STATS64` with all
//! counters 64-bit. The decoder accepts either width for every counter, so one attribute enum
//! serves both nests; the encoder always writes 64-bit values.

use netlink_packet_core::{
    DecodeError, DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable, emit_u64, parse_u32, parse_u64,
};

use super::constants::*;
use crate::Stats;

/// One counter of a stats nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttr {
    /// `CONNS`.
    Conns(u64),
    /// `INPKTS`.
    InPkts(u64),
    /// `OUTPKTS`.
    OutPkts(u64),
    /// `INBYTES`.
    InBytes(u64),
    /// `OUTBYTES`.
    OutBytes(u64),
    /// `CPS`.
    Cps(u64),
    /// `INPPS`.
    InPps(u64),
    /// `OUTPPS`.
    OutPps(u64),
    /// `INBPS`.
    InBps(u64),
    /// `OUTBPS`.
    OutBps(u64),
    /// Anything else (`PAD`, attributes of newer kernels).
    Other(DefaultNla),
}

impl StatsAttr {
    fn value(&self) -> Option<(u16, u64)> {
        Some(match *self {
            StatsAttr::Conns(v) => (IPVS_STATS_ATTR_CONNS, v),
            StatsAttr::InPkts(v) => (IPVS_STATS_ATTR_INPKTS, v),
            StatsAttr::OutPkts(v) => (IPVS_STATS_ATTR_OUTPKTS, v),
            StatsAttr::InBytes(v) => (IPVS_STATS_ATTR_INBYTES, v),
            StatsAttr::OutBytes(v) => (IPVS_STATS_ATTR_OUTBYTES, v),
            StatsAttr::Cps(v) => (IPVS_STATS_ATTR_CPS, v),
            StatsAttr::InPps(v) => (IPVS_STATS_ATTR_INPPS, v),
            StatsAttr::OutPps(v) => (IPVS_STATS_ATTR_OUTPPS, v),
            StatsAttr::InBps(v) => (IPVS_STATS_ATTR_INBPS, v),
            StatsAttr::OutBps(v) => (IPVS_STATS_ATTR_OUTBPS, v),
            StatsAttr::Other(_) => return None,
        })
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Other(nla) => nla.value_len(),
            _ => 8,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Other(nla) => nla.kind(),
            other => other.value().map_or(0, |(kind, _)| kind),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            StatsAttr::Other(nla) => nla.emit_value(buffer),
            other => {
                if let Some((_, v)) = other.value() {
                    // The buffer is exactly value_len() bytes long: this cannot fail.
                    let _ = emit_u64(buffer, v);
                }
            }
        }
    }
}

/// A counter is a u32 in `STATS` and a u64 in `STATS64`: accept both.
fn parse_counter(payload: &[u8]) -> Result<u64, DecodeError> {
    match payload.len() {
        4 => parse_u32(payload).map(u64::from),
        _ => parse_u64(payload),
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        let payload = buf.value();
        let kind = buf.kind();
        let wrap: fn(u64) -> StatsAttr = match kind {
            IPVS_STATS_ATTR_CONNS => StatsAttr::Conns,
            IPVS_STATS_ATTR_INPKTS => StatsAttr::InPkts,
            IPVS_STATS_ATTR_OUTPKTS => StatsAttr::OutPkts,
            IPVS_STATS_ATTR_INBYTES => StatsAttr::InBytes,
            IPVS_STATS_ATTR_OUTBYTES => StatsAttr::OutBytes,
            IPVS_STATS_ATTR_CPS => StatsAttr::Cps,
            IPVS_STATS_ATTR_INPPS => StatsAttr::InPps,
            IPVS_STATS_ATTR_OUTPPS => StatsAttr::OutPps,
            IPVS_STATS_ATTR_INBPS => StatsAttr::InBps,
            IPVS_STATS_ATTR_OUTBPS => StatsAttr::OutBps,
            _ => return DefaultNla::parse(buf).map(StatsAttr::Other),
        };
        parse_counter(payload).map(wrap).map_err(|e| DecodeError::from(format!("stats attribute {kind}: {e}")))
    }
}

/// Parses the payload of a stats nest.
pub fn parse_stats_attrs(payload: &[u8]) -> Result<Vec<StatsAttr>, DecodeError> {
    super::parse_nlas(payload, |nla| StatsAttr::parse(nla))
}

/// The counters as attributes, in the kernel's order.
pub fn stats_to_attrs(s: &Stats) -> Vec<StatsAttr> {
    vec![
        StatsAttr::Conns(s.conns),
        StatsAttr::InPkts(s.in_pkts),
        StatsAttr::OutPkts(s.out_pkts),
        StatsAttr::InBytes(s.in_bytes),
        StatsAttr::OutBytes(s.out_bytes),
        StatsAttr::Cps(s.cps),
        StatsAttr::InPps(s.in_pps),
        StatsAttr::OutPps(s.out_pps),
        StatsAttr::InBps(s.in_bps),
        StatsAttr::OutBps(s.out_bps),
    ]
}

/// Folds attributes into counters; absent counters stay 0, unknown ones are ignored.
pub fn stats_from_attrs(attrs: &[StatsAttr]) -> Stats {
    let mut s = Stats::default();
    stats_from_attrs_into(&mut s, attrs);
    s
}

fn stats_from_attrs_into(s: &mut Stats, attrs: &[StatsAttr]) {
    for attr in attrs {
        match *attr {
            StatsAttr::Conns(v) => s.conns = v,
            StatsAttr::InPkts(v) => s.in_pkts = v,
            StatsAttr::OutPkts(v) => s.out_pkts = v,
            StatsAttr::InBytes(v) => s.in_bytes = v,
            StatsAttr::OutBytes(v) => s.out_bytes = v,
            StatsAttr::Cps(v) => s.cps = v,
            StatsAttr::InPps(v) => s.in_pps = v,
            StatsAttr::OutPps(v) => s.out_pps = v,
            StatsAttr::InBps(v) => s.in_bps = v,
            StatsAttr::OutBps(v) => s.out_bps = v,
            StatsAttr::Other(_) => {}
        }
    }
}

/// Folds a stats nest's payload into counters without building the attribute list.
pub fn stats_from_nest(payload: &[u8]) -> Result<Stats, DecodeError> {
    let mut s = Stats::default();
    for nla in NlasIterator::new(payload) {
        let attr = StatsAttr::parse(&nla?)?;
        stats_from_attrs_into(&mut s, std::slice::from_ref(&attr));
    }
    Ok(s)
}
