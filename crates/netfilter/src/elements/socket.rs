//! [`ElementSocket`]: a blocking nfnetlink socket that runs element transactions and lists sets.

use std::io;

use netlink_packet_core::{
    NLA_F_NESTED, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_netfilter::nftables::{
    GenAttribute, GenMessage, NfTablesMessage, SetElementList, SetElementMessage,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use super::{ElementBytes, NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, Transaction};
use crate::nfnetlink::{NfnetlinkError, force_buffer, frames};

/// A blocking `NETLINK_NETFILTER` socket for element transactions: a transaction is handled
/// by the kernel during the `sendmsg` (sub-millisecond for a sync's change), so a blocking call
/// costs what an `nft` process would without the process.
pub(crate) struct ElementSocket {
    socket: Socket,
    seq: u32,
    send_buffer: usize,
    recv_buf: Vec<u8>,
}

impl ElementSocket {
    pub fn open() -> Result<ElementSocket, NfnetlinkError> {
        let io = |source| NfnetlinkError::Io { what: "open an nftables socket".into(), source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(io)?;
        // A refused message's error then echoes its header only, not 48 KiB of elements.
        let _ = socket.set_cap_ack(true);
        // The table monitor tells this proxy's transactions by their writer's port.
        let mut address = NetlinkAddr::new(0, 0);
        socket.get_address(&mut address).map_err(io)?;
        crate::nft::record_socket(address.port_number());
        Ok(ElementSocket { socket, seq: 0, send_buffer: 0, recv_buf: vec![0; 64 * 1024] })
    }

    /// Runs `transaction`; `what` names it in errors. An error names the message the kernel
    /// refused (its set); the kernel then applied none of the transaction.
    pub fn run(&mut self, transaction: Transaction, what: &str) -> Result<(), NfnetlinkError> {
        if transaction.is_empty() {
            return Ok(());
        }
        let io = |source| NfnetlinkError::Io { what: what.to_string(), source };
        let first = self.seq.wrapping_add(1);
        let (batch, steps) = transaction.encode(first);
        self.seq = first.wrapping_add(steps.len() as u32 + 1);
        // The whole batch is one datagram, which the kernel refuses beyond the send buffer.
        if batch.len() + 4096 > self.send_buffer {
            self.send_buffer = batch.len() + 4096;
            force_buffer(&self.socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, self.send_buffer);
        }
        self.socket.send(&batch, 0).map_err(io)?;
        // The kernel handled the batch during the send: every reply is queued now.
        let mut pending = steps.len();
        let mut refused = None;
        while pending > 0 {
            let n = match self.socket.recv(&mut &mut self.recv_buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(source) => return Err(io(source)),
            };
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(|source| NfnetlinkError::Decode { what: what.to_string(), source })?;
                let Ok(reply) = NetlinkMessage::<NetfilterMessage>::deserialize(frame) else { continue };
                let NetlinkPayload::Error(e) = reply.payload else { continue };
                let seq = reply.header.sequence_number;
                pending = pending.saturating_sub(1);
                if let Some(code) = e.code
                    && refused.is_none()
                {
                    let step = steps.iter().find(|(s, _)| *s == seq).map(|(_, step)| step.clone());
                    refused = Some((step, io::Error::from_raw_os_error(-code.get())));
                }
            }
        }
        match refused {
            Some((step, source)) => {
                let at =
                    step.map_or_else(|| "the batch".to_string(), |s| format!("{} elements of set {}", s.verb, s.set));
                Err(NfnetlinkError::Kernel { what: format!("{what}: {at}"), source })
            }
            None if pending > 0 => Err(NfnetlinkError::Io {
                what: what.to_string(),
                source: io::Error::other(format!("{pending} messages of the batch got no acknowledgement")),
            }),
            None => Ok(()),
        }
    }
}

/// Runs `call` on the socket in `slot`, opened first if there is none; the socket is kept for
/// the next call unless it failed itself (one the kernel merely answered with an error is kept).
pub(crate) fn with_socket<T>(
    slot: &mut Option<ElementSocket>,
    call: impl FnOnce(&mut ElementSocket) -> Result<T, NfnetlinkError>,
) -> Result<T, NfnetlinkError> {
    let mut socket = match slot.take() {
        Some(socket) => socket,
        None => ElementSocket::open()?,
    };
    let result = call(&mut socket);
    if !matches!(result, Err(NfnetlinkError::Io { .. })) {
        *slot = Some(socket);
    }
    result
}

impl ElementSocket {
    /// Every element of set `set` of the `inet` table `table` (one dump).
    pub fn list(&mut self, table: &str, set: &str) -> Result<Vec<ElementBytes>, NfnetlinkError> {
        let what = format!("list set {set} of table inet {table}");
        let io = |source| NfnetlinkError::Io { what: what.clone(), source };
        let attributes = vec![SetElementList::Table(table.to_string()), SetElementList::Set(set.to_string())];
        let request = NfTablesMessage::GetSetElement(SetElementMessage { attributes });
        let seq = self.send(NetfilterProtoFamily::Inet, request, NLM_F_REQUEST | NLM_F_DUMP).map_err(io)?;
        let mut elements = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.recv_buf[..], 0).map_err(io)?;
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(|source| NfnetlinkError::Decode { what: what.clone(), source })?;
                let message = NetlinkBuffer::new(frame);
                if message.sequence_number() != seq {
                    continue;
                }
                match message.message_type() {
                    NLMSG_DONE => return Ok(elements),
                    NLMSG_ERROR => {
                        let code =
                            message.payload().get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            return Err(NfnetlinkError::Kernel { what, source: io::Error::from_raw_os_error(-code) });
                        }
                    }
                    NEWSETELEM => {
                        let payload = message.payload();
                        elements.extend(listed_elements(payload.get(NFGENMSG_LEN..).unwrap_or_default()));
                    }
                    _ => {}
                }
            }
        }
    }
}

impl ElementSocket {
    /// Sends one nftables request with `flags`; its sequence number.
    fn send(&mut self, family: NetfilterProtoFamily, request: NfTablesMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut message = NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), request));
        message.header.flags = flags;
        message.header.sequence_number = self.seq;
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;
        Ok(self.seq)
    }

    /// The nftables generation now (`NFT_MSG_GETGEN`): the kernel's count of committed
    /// transactions, every table's and every writer's, one more with each commit.
    pub fn generation(&mut self) -> Result<u32, NfnetlinkError> {
        let what = "read the nftables generation";
        let io = |source| NfnetlinkError::Io { what: what.to_string(), source };
        let request = NfTablesMessage::GetGen(GenMessage { attributes: Vec::new() });
        let seq = self.send(NetfilterProtoFamily::Unspec, request, NLM_F_REQUEST).map_err(io)?;
        loop {
            let n = self.socket.recv(&mut &mut self.recv_buf[..], 0).map_err(io)?;
            for frame in frames(&self.recv_buf[..n]) {
                let frame = frame.map_err(|source| NfnetlinkError::Decode { what: what.to_string(), source })?;
                if NetlinkBuffer::new(frame).sequence_number() != seq {
                    continue;
                }
                let reply = NetlinkMessage::<NetfilterMessage>::deserialize(frame)
                    .map_err(|source| NfnetlinkError::Decode { what: what.to_string(), source })?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(message) => {
                        return generation_of(message)
                            .ok_or_else(|| io(io::Error::other("a reply without the generation")));
                    }
                    // An acknowledgement (no code) is not asked for; an error ends the read.
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(NfnetlinkError::Kernel {
                                what: what.to_string(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The generation a `NEWGEN` message carries.
fn generation_of(message: NetfilterMessage) -> Option<u32> {
    let netlink_packet_netfilter::NetfilterMessageInner::NfTables(NfTablesMessage::NewGen(generation)) = message.inner
    else {
        return None;
    };
    generation.attributes.iter().find_map(|a| match a {
        GenAttribute::Id(id) => Some(*id),
        _ => None,
    })
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NEWSETELEM: u16 = NFNL_SUBSYS_NFTABLES << 8 | 12;
const NFGENMSG_LEN: usize = 4;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;

/// The attributes of `bytes`, as (kind without flags, value); a malformed one ends the walk.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    NlasIterator::new(bytes).map_while(Result::ok).map(|a| {
        let (kind, length) = (a.kind() & !NLA_F_NESTED, usize::from(a.length()));
        let whole: &[u8] = a.into_inner();
        (kind, whole.get(4..length.min(whole.len())).unwrap_or_default())
    })
}

/// The value inside a nested `NFTA_DATA_VALUE`.
fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    attributes(nested).find(|(kind, _)| *kind == NFTA_DATA_VALUE).map(|(_, v)| v.to_vec())
}

/// The elements of one `NEWSETELEM` message of a listing (its attributes), as bytes. Walked
/// here rather than by the crate's typed parser, which took minutes under TCG over a set of
/// thousands of elements.
fn listed_elements(payload: &[u8]) -> Vec<ElementBytes> {
    let mut elements = Vec::new();
    for (kind, list) in attributes(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (kind, element) in attributes(list) {
            if kind != NFTA_LIST_ELEM {
                continue;
            }
            let mut e = ElementBytes { key: Vec::new(), key_end: None, data: None };
            for (kind, value) in attributes(element) {
                match kind {
                    NFTA_SET_ELEM_KEY => e.key = data_value(value).unwrap_or_default(),
                    NFTA_SET_ELEM_KEY_END => e.key_end = data_value(value),
                    NFTA_SET_ELEM_DATA => e.data = data_value(value),
                    _ => {}
                }
            }
            if !e.key.is_empty() {
                elements.push(e);
            }
        }
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::element_bytes;
    use crate::elements::tests::t;
    use crate::state::Element;
    use ipvs::Protocol;

    /// A listing's elements are read as the batch wrote them: keys, key ends, map values.
    #[test]
    fn listed_elements_read_back_what_was_written() {
        let web = t("10.96.0.10", Protocol::Tcp, 80);
        let written = [
            Element::SourceAllowed(web, "192.168.0.0/16".parse().unwrap()),
            Element::SourceAllowed(web, "10.0.0.0/8".parse().unwrap()),
        ];
        let mut tx = Transaction::new("kube-ipvs-proxy");
        tx.add(written.iter());
        let map = [Element::ShortCircuit(web, "10.96.0.11".parse().unwrap(), 8443)];
        tx.add(map.iter());
        let (bytes, _) = tx.encode(1);
        let mut read = Vec::new();
        for frame in frames(&bytes).map(Result::unwrap) {
            let message = NetlinkBuffer::new(frame);
            if message.message_type() == NEWSETELEM {
                read.extend(listed_elements(&message.payload()[NFGENMSG_LEN..]));
            }
        }
        let want: Vec<ElementBytes> = written.iter().chain(&map).map(element_bytes).collect();
        assert_eq!(read, want);
    }
}
