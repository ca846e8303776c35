//! IP prefixes (`10.0.0.0/8`, `fd00::/64`) as Kubernetes objects and kube-proxy's settings
//! write them, parsed into the ecosystem's type, [`IpNet`].

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a text is not a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
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

/// Parses a prefix as Kubernetes fields write them: `addr/len`, or a bare address for its host
/// prefix; surrounding blanks are ignored (as upstream trims `loadBalancerSourceRanges`), and
/// host bits are cleared (`10.1.2.3/16` is `10.1.0.0/16`).
pub fn parse_prefix(text: &str) -> Result<IpNet, PrefixError> {
    let trimmed = text.trim();
    let (addr_text, len_text) = match trimmed.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (trimmed, None),
    };
    let addr: IpAddr =
        addr_text.parse().map_err(|_| PrefixError::Address { text: text.to_owned(), addr: addr_text.to_owned() })?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len_text {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| PrefixError::PrefixLength { text: text.to_owned(), max })?,
    };
    IpNet::new(addr, len).map(|p| p.trunc()).map_err(|_| PrefixError::PrefixLength { text: text.to_owned(), max })
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
            let prefix = parse_prefix(text).unwrap();
            assert_eq!(prefix.contains(&probe.parse::<IpAddr>().unwrap()), expected, "{text} contains {probe}");
        }
    }

    #[test]
    fn clears_host_bits_and_displays() {
        assert_eq!(parse_prefix("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(parse_prefix("fd00::1/120").unwrap().to_string(), "fd00::/120");
    }

    #[test]
    fn serializes_as_text_and_refuses_bad_lengths_when_deserialized() {
        let prefix = parse_prefix("fd00::/64").unwrap();
        assert_eq!(serde_json::to_string(&prefix).unwrap(), r#""fd00::/64""#);
        assert_eq!(serde_json::from_str::<IpNet>(r#""fd00::/64""#).unwrap(), prefix);
        // A length beyond the width would make `contains` shift out of range.
        for bad in [r#""10.0.0.0/40""#, r#"{"addr": "10.0.0.0", "prefix_len": 40}"#] {
            assert!(serde_json::from_str::<IpNet>(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for text in ["", "10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", "10.0.0.0/-1", "/8"] {
            assert!(parse_prefix(text).is_err(), "{text:?} must be refused");
        }
    }
}
