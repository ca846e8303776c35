//! IP prefixes (`10.0.0.0/8`, `fd00::/64`) as the proxy's settings name them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipvs::Family;
use serde::{Deserialize, Serialize};

/// An IP prefix: a network address and a prefix length, host bits cleared.
///
/// Ordered and hashed by (address, length), so sets of prefixes are stable. Serialized as its
/// text (`"10.0.0.0/8"`) and deserialized through [`FromStr`], so no input yields a length
/// beyond the family's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a text is not a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{text:?} is not a CIDR: {addr:?} is not an IP address")]
    Address {
        /// The whole text given.
        text: String,
        /// The address part.
        addr: String,
    },
    /// The part after `/` is not a number within the family's width.
    #[error("{text:?} is not a CIDR: prefix length must be 0..={max}")]
    PrefixLength {
        /// The whole text given.
        text: String,
        /// The largest length the family allows (32 or 128).
        max: u8,
    },
}

impl Cidr {
    /// The prefix of `addr` with `prefix_len` leading bits; host bits are cleared.
    /// Fails when the length exceeds the family's width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_len(&addr);
        if prefix_len > max {
            return Err(CidrError::PrefixLength { text: format!("{addr}/{prefix_len}"), max });
        }
        Ok(Cidr { addr: mask(addr, prefix_len), prefix_len })
    }

    /// The single-address prefix (`/32` or `/128`) of `addr`.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr { addr, prefix_len: max_len(&addr) }
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether `addr` lies in this prefix; an address of the other family never does.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        Family::of(addr) == self.family() && mask(*addr, self.prefix_len) == self.addr
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/len`; a bare address is its host prefix. Surrounding blanks are ignored,
    /// as upstream trims `loadBalancerSourceRanges`.
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let trimmed = text.trim();
        let (addr_text, len_text) = match trimmed.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (trimmed, None),
        };
        let addr: IpAddr =
            addr_text.parse().map_err(|_| CidrError::Address { text: text.to_owned(), addr: addr_text.to_owned() })?;
        let max = max_len(&addr);
        let prefix_len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| CidrError::PrefixLength { text: text.to_owned(), max })?,
        };
        Ok(Cidr { addr: mask(addr, prefix_len), prefix_len })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    /// As [`FromStr`].
    fn try_from(text: String) -> Result<Cidr, CidrError> {
        text.parse()
    }
}

impl From<Cidr> for String {
    /// As [`fmt::Display`].
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        // (text, probe, expected containment)
        let cases = [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3/16", "10.1.99.1", true),
            ("0.0.0.0/0", "192.168.1.1", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/64", "fd00::5", true),
            ("fd00::/64", "fd00:0:0:1::5", false),
            (" 192.168.1.7 ", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
        ];
        for (text, probe, expected) in cases {
            let cidr: Cidr = text.parse().unwrap();
            assert_eq!(cidr.contains(&probe.parse().unwrap()), expected, "{text} contains {probe}");
        }
    }

    #[test]
    fn clears_host_bits_and_displays() {
        assert_eq!("10.1.2.3/16".parse::<Cidr>().unwrap().to_string(), "10.1.0.0/16");
        assert_eq!("fd00::1/120".parse::<Cidr>().unwrap().to_string(), "fd00::/120");
    }

    #[test]
    fn serializes_as_text_and_refuses_bad_lengths_when_deserialized() {
        let cidr: Cidr = "fd00::/64".parse().unwrap();
        assert_eq!(serde_json::to_string(&cidr).unwrap(), r#""fd00::/64""#);
        assert_eq!(serde_json::from_str::<Cidr>(r#""fd00::/64""#).unwrap(), cidr);
        // A length beyond the width would make `contains` shift out of range.
        for bad in [r#""10.0.0.0/40""#, r#"{"addr": "10.0.0.0", "prefix_len": 40}"#] {
            assert!(serde_json::from_str::<Cidr>(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for text in ["", "10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", "10.0.0.0/-1", "/8"] {
            assert!(text.parse::<Cidr>().is_err(), "{text:?} must be refused");
        }
    }
}
