//! Watching the proxy's table for edits by others, through nftables' own notifications
//! (`NFNLGRP_NFTABLES`), so that drift is repaired when it happens, with no polling.
//!
//! The kernel announces every committed change: one message per object (table, chain, rule,
//! set, element), each naming its table, then `NEWGEN`, whose header carries the netlink port of
//! the socket that made the transaction. A transaction that touched the table and came from
//! neither one of this process's sockets nor an `nft` it ran is an edit by someone else. Lost notifications (the socket's buffer
//! overran) count as one too: the repair is idempotent, a missed edit is not.

use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NetlinkAddr, TokioSocket};

use crate::nfnetlink::{NfnetlinkError, force_buffer, frames};
use crate::nft::is_own_writer;

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
/// Every nftables object message names its table in attribute 1 (`NFTA_TABLE_NAME`,
/// `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`, `NFTA_SET_ELEM_LIST_TABLE`, ...).
const NFTA_TABLE: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NFGENMSG_LEN: usize = 4;
const RECV_BUF_SIZE: usize = 256 * 1024;
/// The socket's receive buffer: the proxy's own transaction at 10,000 Services announces tens
/// of thousands of elements at once, and a buffer that overruns reads as an edit (a needless
/// rebuild of the whole table). Kernel memory, used only while a burst waits to be read.
const SOCKET_BUFFER: usize = 64 << 20;

/// Notifications about one `inet` table.
pub struct TableMonitor {
    socket: TokioSocket,
    table: String,
    recv_buf: Vec<u8>,
    /// Whether the transaction being announced touched the table.
    touched: bool,
}

impl TableMonitor {
    /// Subscribes to nftables' notifications for the `inet` table `table` (needs `CAP_NET_ADMIN`).
    pub fn open(table: &str) -> Result<TableMonitor, NfnetlinkError> {
        let io = |source| NfnetlinkError::Io { what: "subscribe to nftables notifications".into(), source };
        let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.socket_mut().bind(&NetlinkAddr::new(0, 0)).map_err(io)?;
        socket.socket_mut().add_membership(NFNLGRP_NFTABLES).map_err(io)?;
        force_buffer(socket.socket_ref(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, SOCKET_BUFFER);
        Ok(TableMonitor {
            socket,
            table: table.to_string(),
            recv_buf: Vec::with_capacity(RECV_BUF_SIZE),
            touched: false,
        })
    }

    /// The nftables generation now (the kernel's count of committed transactions), read on a
    /// socket of its own: read after subscribing and found equal to
    /// [`crate::Netfilter::settled_generation`], no transaction came before the subscription
    /// that the monitor missed.
    pub fn generation() -> Result<u32, NfnetlinkError> {
        crate::elements::ElementSocket::open()?.generation()
    }

    /// Waits until a transaction by someone else touches the table (or notifications were
    /// lost). Errors are the socket's; the caller may open a new monitor.
    pub async fn next_foreign_edit(&mut self) -> Result<(), NfnetlinkError> {
        loop {
            self.recv_buf.clear();
            match self.socket.recv(&mut self.recv_buf).await {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.touched = false;
                    return Ok(());
                }
                Err(source) => return Err(NfnetlinkError::Io { what: "read nftables notifications".into(), source }),
            }
            let mut foreign = false;
            // A malformed message ends the datagram's walk: the rest cannot be framed.
            for frame in frames(&self.recv_buf).map_while(Result::ok) {
                let message = NetlinkBuffer::new(frame);
                let message_type = message.message_type();
                let notice = classify(message_type, message.port_number(), message.payload(), &self.table);
                tracing::debug!(message_type, ?notice, "nftables notification");
                match notice {
                    Notice::Touched => self.touched = true,
                    Notice::Generation(port) => {
                        foreign |= std::mem::take(&mut self.touched) && !is_own_writer(port);
                    }
                    Notice::Other => {}
                }
            }
            if foreign {
                return Ok(());
            }
        }
    }
}

/// What one notification says about the table.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// An object of the table changed.
    Touched,
    /// A transaction ended, made through this netlink port.
    Generation(u32),
    Other,
}

fn classify(message_type: u16, port: u32, payload: &[u8], table: &str) -> Notice {
    if message_type >> 8 != NFNL_SUBSYS_NFTABLES || payload.len() < NFGENMSG_LEN {
        return Notice::Other;
    }
    let attributes = NlasIterator::new(&payload[NFGENMSG_LEN..]).filter_map(Result::ok);
    if message_type & 0xff == NFT_MSG_NEWGEN {
        return Notice::Generation(port);
    }
    if payload[0] != NFPROTO_INET {
        return Notice::Other;
    }
    let named = attributes
        .filter(|a| a.kind() == NFTA_TABLE)
        .any(|a| a.value().split(|b| *b == 0).next() == Some(table.as_bytes()));
    if named { Notice::Touched } else { Notice::Other }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, Emitable};

    fn payload(family: u8, attributes: &[DefaultNla]) -> Vec<u8> {
        let mut bytes = vec![family, 0, 0, 0];
        let mut rest = vec![0; attributes.buffer_len()];
        attributes.emit(&mut rest);
        bytes.extend(rest);
        bytes
    }

    fn name(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }

    #[test]
    fn notifications_are_read_by_table_and_writer() {
        let new_element = (10 << 8) | 12; // NFT_MSG_NEWSETELEM
        let ours = payload(NFPROTO_INET, &[DefaultNla::new(NFTA_TABLE, name("kube-ipvs-proxy"))]);
        assert_eq!(classify(new_element, 9, &ours, "kube-ipvs-proxy"), Notice::Touched);
        let other_table = payload(NFPROTO_INET, &[DefaultNla::new(NFTA_TABLE, name("kube-ipvs-proxy-2"))]);
        assert_eq!(classify(new_element, 9, &other_table, "kube-ipvs-proxy"), Notice::Other);
        let other_family = payload(2, &[DefaultNla::new(NFTA_TABLE, name("kube-ipvs-proxy"))]);
        assert_eq!(classify(new_element, 9, &other_family, "kube-ipvs-proxy"), Notice::Other);

        // The writer is the header's port, not the pid attribute (a thread id, host-numbered).
        let generation = payload(
            0,
            &[DefaultNla::new(1, 7u32.to_be_bytes().to_vec()), DefaultNla::new(2, 4242u32.to_be_bytes().to_vec())],
        );
        assert_eq!(classify((10 << 8) | NFT_MSG_NEWGEN, 77, &generation, "kube-ipvs-proxy"), Notice::Generation(77));
        // Another subsystem (conntrack) is never about the table.
        assert_eq!(classify(1 << 8, 9, &ours, "kube-ipvs-proxy"), Notice::Other);
    }
}
