//! Destroying ipsets by name over nfnetlink (`NFNL_SUBSYS_IPSET`), without the `ipset` program:
//! what removing upstream kube-proxy's leftovers needs. The crate has no typed ipset messages,
//! so the request goes as raw attributes (`linux/netfilter/ipset/ip_set.h`).

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily, NetfilterSubsystem,
};

use crate::nfnetlink::{NfSocket, NfnetlinkError};

const NFNL_SUBSYS_IPSET: u8 = 6;
const IPSET_CMD_DESTROY: u8 = 3;
/// The protocol version every request carries (current kernels speak 6 and 7).
const IPSET_PROTOCOL: u8 = 7;
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
/// ipset's own errno: the set is referenced (by an iptables rule, say).
const IPSET_ERR_BUSY: i32 = 4100;
/// Set names are at most 31 bytes.
const IPSET_MAXNAMELEN: usize = 32;

/// What became of one set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRemoval {
    /// It existed and is gone.
    Destroyed,
    /// There was no such set.
    Absent,
    /// Something still references it (an iptables rule): it stays.
    InUse,
}

/// An ipset socket.
pub struct Ipsets {
    socket: NfSocket,
}

impl Ipsets {
    /// Opens a socket (needs `CAP_NET_ADMIN`; the module `ip_set` for any set to exist).
    pub fn open() -> Result<Ipsets, NfnetlinkError> {
        Ok(Ipsets { socket: NfSocket::open("ipset")? })
    }

    /// Destroys the set `name`. A name longer than ipset allows names no set.
    pub async fn destroy(&mut self, name: &str) -> Result<SetRemoval, NfnetlinkError> {
        if name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
            return Ok(SetRemoval::Absent);
        }
        let request = destroy_request(name);
        let what = format!("destroy ipset {name}");
        match self.socket.exchange(request, NLM_F_REQUEST | NLM_F_ACK, &what, |_| {}).await {
            Ok(()) => Ok(SetRemoval::Destroyed),
            Err(NfnetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(SetRemoval::Absent)
            }
            Err(NfnetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(IPSET_ERR_BUSY) => {
                Ok(SetRemoval::InUse)
            }
            Err(e) => Err(e),
        }
    }
}

fn destroy_request(name: &str) -> NetfilterMessage {
    let mut set_name = name.as_bytes().to_vec();
    set_name.push(0);
    let attributes =
        vec![DefaultNla::new(IPSET_ATTR_PROTOCOL, vec![IPSET_PROTOCOL]), DefaultNla::new(IPSET_ATTR_SETNAME, set_name)];
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_IPSET),
            message_type: IPSET_CMD_DESTROY,
            attributes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkSerializable};

    /// The request as `ipset destroy KUBE-CLUSTER-IP` sends it: message type
    /// `(6 << 8) | 3`, the protocol attribute, the NUL-terminated name.
    #[test]
    fn the_destroy_request_is_ipsets_own() {
        let request = destroy_request("KUBE-CLUSTER-IP");
        assert_eq!(request.message_type(), (6 << 8) | 3);
        let mut message = NetlinkMessage::from(request);
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        // Netlink header (16), nfgenmsg (4), then PROTOCOL (len 5, type 1, 7, padding 3) and
        // SETNAME (len 4 + 16, type 2, the name and its NUL).
        let body = &bytes[20..];
        assert_eq!(&body[..5], &[5, 0, 1, 0, 7]);
        assert_eq!(&body[8..12], &[20, 0, 2, 0]);
        assert_eq!(&body[12..28], b"KUBE-CLUSTER-IP\0");
    }
}
