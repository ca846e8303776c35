//! Set elements over nfnetlink, without the `nft` program: one sync's element changes (or a
//! whole rewrite of the sets) as one nftables transaction, a batch of `NEWSETELEM` and
//! `DELSETELEM` messages between `BATCH_BEGIN` and `BATCH_END` sent in one `sendmsg`. The
//! kernel applies all of it or none.
//!
//! Keys are laid out as nftables stores them: a concatenation's fields each padded to 4 bytes
//! (an `inet_proto` is 1 byte then 3 of padding, an `inet_service` 2 bytes in network order then
//! 2), addresses in network order, marks in host order. An interval of a concatenation
//! (`source_allowed`) has its first key and its last (`KEY_END`), as nft sends them.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::Protocol;
use netlink_packet_core::{
    DefaultNla, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload, NlasIterator,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList, SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use crate::nfnetlink::{NfnetlinkError, force_buffer, frames};
use crate::script::{DIGEST_SET, ELEMENT_MAPS, ELEMENT_SETS, FAMILY_SUFFIXES, set_name};
use crate::state::{Element, ElementChanges, Target};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
/// Bytes of elements per message: the list is one attribute, whose length is 16 bits.
const MAX_ELEMENT_BYTES: usize = 48 * 1024;

/// One element as the kernel takes it (and lists it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ElementBytes {
    pub key: Vec<u8>,
    /// The last key of an interval of a concatenation.
    pub key_end: Option<Vec<u8>>,
    /// A map element's value.
    pub data: Option<Vec<u8>>,
}

fn addr(out: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend(a.octets()),
        IpAddr::V6(a) => out.extend(a.octets()),
    }
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Other(n) => u8::try_from(n).unwrap_or(u8::MAX),
    }
}

fn port(out: &mut Vec<u8>, port: u16) {
    out.extend(port.to_be_bytes());
    out.extend([0, 0]);
}

fn target(out: &mut Vec<u8>, t: &Target) {
    addr(out, &t.addr);
    out.extend([protocol_number(t.protocol), 0, 0, 0]);
    port(out, t.port);
}

/// The key (and key end, and map value) of `element`.
pub(crate) fn element_bytes(element: &Element) -> ElementBytes {
    let mut key = Vec::with_capacity(48);
    let (mut key_end, mut data) = (None, None);
    match element {
        Element::Bound(a) => addr(&mut key, a),
        Element::MasqueradeAll(t)
        | Element::MasqueradeOutside(t)
        | Element::ServicePort(t)
        | Element::SourceRestricted(t)
        | Element::ShortCircuitKey(t) => target(&mut key, t),
        Element::SourceAllowed(t, prefix) => {
            target(&mut key, t);
            let mut end = key.clone();
            addr(&mut key, &prefix.network());
            addr(&mut end, &last_address(prefix));
            key_end = Some(end);
        }
        Element::Hairpin(t) => {
            target(&mut key, t);
            addr(&mut key, &t.addr);
        }
        Element::ShortCircuit(t, to, to_port) => {
            target(&mut key, t);
            let mut value = Vec::with_capacity(20);
            addr(&mut value, to);
            port(&mut value, *to_port);
            data = Some(value);
        }
    }
    ElementBytes { key, key_end, data }
}

fn last_address(prefix: &IpNet) -> IpAddr {
    prefix.broadcast()
}

/// The digest set's one element: two marks, in host order.
fn digest_bytes(digest: u64) -> ElementBytes {
    let mut key = Vec::with_capacity(8);
    key.extend(((digest >> 32) as u32).to_ne_bytes());
    key.extend(((digest & 0xffff_ffff) as u32).to_ne_bytes());
    ElementBytes { key, key_end: None, data: None }
}

fn value(bytes: Vec<u8>) -> DataAttribute {
    DataAttribute::Value(bytes)
}

fn element_attribute(e: ElementBytes) -> ListAttribute<SetElementAttribute> {
    let mut attributes = vec![SetElementAttribute::Key(value(e.key))];
    if let Some(end) = e.key_end {
        attributes.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(NFTA_DATA_VALUE, end)]));
    }
    if let Some(data) = e.data {
        attributes.push(SetElementAttribute::Data(value(data)));
    }
    ListAttribute::Element(attributes)
}

/// What one message of a transaction does, to name it in an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub verb: &'static str,
    pub set: String,
}

/// The messages of one transaction, in order, each with what it does.
///
/// Each message is serialized as it is added and only its bytes are kept: a cold start's
/// 40,000 elements held as message structures and then as bytes peaked at 8 MB more.
#[derive(Debug)]
pub(crate) struct Transaction {
    table: String,
    /// The batch: its begin marker, then the messages (sequence numbers set by `encode`).
    buffer: Vec<u8>,
    /// Where each message starts in `buffer`, with what it does.
    messages: Vec<(usize, Step)>,
}

/// Elements of one set waiting to become one message.
struct Pending {
    verb: &'static str,
    set: String,
    elements: Vec<ListAttribute<SetElementAttribute>>,
    bytes: usize,
}

impl Transaction {
    pub fn new(table: &str) -> Transaction {
        let mut buffer = Vec::new();
        put(&mut buffer, control(ControlMessage::BatchBegin), 0);
        Transaction { table: table.to_string(), buffer, messages: Vec::new() }
    }

    /// Empties every element set and map (not the cluster prefixes, which are the skeleton's).
    pub fn flush_sets(&mut self) {
        for suffix in FAMILY_SUFFIXES {
            for set in ELEMENT_SETS.iter().chain(&ELEMENT_MAPS) {
                self.flush(format!("{set}_{suffix}"));
            }
        }
    }

    fn flush(&mut self, set: String) {
        let attributes = vec![SetElementList::Table(self.table.clone()), SetElementList::Set(set.clone())];
        let message = NfTablesMessage::DeleteSetElement(SetElementMessage { attributes });
        self.message(Step { verb: "flush", set }, message, 0);
    }

    /// Deletes `removed`, then adds `added`, a message per run of elements of one set (or
    /// more for a long run).
    pub fn changes(&mut self, changes: &ElementChanges) {
        self.elements("delete", changes.removed.iter());
        self.elements("add", changes.added.iter());
    }

    /// Adds or deletes elements given as bytes (what a listing of the kernel's set found).
    pub fn raw(&mut self, verb: &'static str, set: &str, elements: Vec<ElementBytes>) {
        self.push(verb, elements.into_iter().map(|e| (set, e)));
    }

    /// Adds `elements`.
    pub fn add<'a>(&mut self, elements: impl Iterator<Item = &'a Element>) {
        self.elements("add", elements);
    }

    /// Replaces the recorded digest.
    pub fn digest(&mut self, digest: u64) {
        self.flush(DIGEST_SET.to_string());
        self.push("add", std::iter::once((DIGEST_SET, digest_bytes(digest))));
    }

    fn elements<'a>(&mut self, verb: &'static str, elements: impl Iterator<Item = &'a Element>) {
        // An ordered state's elements come set by set (a set is one variant of one family),
        // so runs are long; a set met again only costs another message.
        self.push(verb, elements.map(|e| (set_name(e), element_bytes(e))));
    }

    /// A message per run of elements of one set, split before the list outgrows its attribute.
    /// The set's name is copied once per message, not per element.
    fn push<S: AsRef<str>>(&mut self, verb: &'static str, elements: impl Iterator<Item = (S, ElementBytes)>) {
        let mut pending: Option<Pending> = None;
        for (set, e) in elements {
            let set = set.as_ref();
            if let Some(p) = pending.take_if(|p| p.set != set || p.bytes >= MAX_ELEMENT_BYTES) {
                self.emit(p);
            }
            let p =
                pending.get_or_insert_with(|| Pending { verb, set: set.to_string(), elements: Vec::new(), bytes: 0 });
            // Key, key end and value, each nested with its header, in an element of its own.
            p.bytes += 16
                + e.key.len()
                + e.key_end.as_ref().map_or(0, |k| 8 + k.len())
                + e.data.as_ref().map_or(0, |d| 8 + d.len());
            p.elements.push(element_attribute(e));
        }
        if let Some(p) = pending {
            self.emit(p);
        }
    }

    fn emit(&mut self, p: Pending) {
        let attributes = vec![
            SetElementList::Table(self.table.clone()),
            SetElementList::Set(p.set.clone()),
            SetElementList::Elements(p.elements),
        ];
        let message = SetElementMessage { attributes };
        let (message, flags) = match p.verb {
            "add" => (NfTablesMessage::NewSetElement(message), NLM_F_CREATE),
            _ => (NfTablesMessage::DeleteSetElement(message), 0),
        };
        self.message(Step { verb: p.verb, set: p.set }, message, flags);
    }

    fn message(&mut self, step: Step, message: NfTablesMessage, flags: u16) {
        let message = NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), message);
        let at = put(&mut self.buffer, message, NLM_F_ACK | flags);
        self.messages.push((at, step));
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The batch as bytes, its messages numbered from `seq` (the begin marker) on: every
    /// message but the markers asks for an acknowledgement. Returns the steps by sequence number.
    pub fn encode(mut self, seq: u32) -> (Vec<u8>, Vec<(u32, Step)>) {
        NetlinkBuffer::new(&mut self.buffer[..]).set_sequence_number(seq);
        let mut n = seq;
        let mut steps = Vec::with_capacity(self.messages.len());
        for (at, step) in self.messages {
            n = n.wrapping_add(1);
            NetlinkBuffer::new(&mut self.buffer[at..]).set_sequence_number(n);
            steps.push((n, step));
        }
        let end = put(&mut self.buffer, control(ControlMessage::BatchEnd), 0);
        NetlinkBuffer::new(&mut self.buffer[end..]).set_sequence_number(n.wrapping_add(1));
        (self.buffer, steps)
    }
}

/// A batch marker of the nftables subsystem.
fn control(inner: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES), inner)
}

/// Appends `message` to `buffer` as a request with `flags`; returns where it starts.
fn put(buffer: &mut Vec<u8>, message: NetfilterMessage, flags: u16) -> usize {
    let mut message = NetlinkMessage::from(message);
    message.header.flags = NLM_F_REQUEST | flags;
    message.finalize();
    let start = buffer.len();
    buffer.resize(start + message.buffer_len(), 0);
    message.serialize(&mut buffer[start..]);
    start
}

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
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let attributes = vec![SetElementList::Table(table.to_string()), SetElementList::Set(set.to_string())];
        let request = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
            NfTablesMessage::GetSetElement(SetElementMessage { attributes }),
        );
        let mut message = NetlinkMessage::from(request);
        message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        message.header.sequence_number = seq;
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(io)?;
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

    fn t(addr: &str, protocol: Protocol, port: u16) -> Target {
        Target::new(addr.parse().unwrap(), protocol, port)
    }

    type Layout<'a> = Option<&'a [u8]>;

    /// The layouts of nftables' own types (the VM tests read what is written back with `nft`).
    #[test]
    fn keys_are_laid_out_as_nftables_stores_them() {
        let web = t("10.96.0.10", Protocol::Tcp, 80);
        // (element, key, key end, map value)
        let cases: [(Element, &[u8], Layout, Layout); 5] = [
            (Element::Bound("10.96.0.10".parse().unwrap()), &[10, 96, 0, 10], None, None),
            (Element::ServicePort(web), &[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0], None, None),
            (
                Element::Hairpin(t("10.244.1.2", Protocol::Udp, 53)),
                &[10, 244, 1, 2, 17, 0, 0, 0, 0, 53, 0, 0, 10, 244, 1, 2],
                None,
                None,
            ),
            (
                Element::SourceAllowed(web, "192.168.0.0/16".parse().unwrap()),
                &[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0, 192, 168, 0, 0],
                Some(&[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0, 192, 168, 255, 255]),
                None,
            ),
            (
                Element::ShortCircuit(web, "10.96.0.11".parse().unwrap(), 8443),
                &[10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0],
                None,
                Some(&[10, 96, 0, 11, 0x20, 0xfb, 0, 0]),
            ),
        ];
        for (element, key, key_end, data) in cases {
            let got = element_bytes(&element);
            assert_eq!(got.key, key, "{element:?}");
            assert_eq!(got.key_end.as_deref(), key_end, "{element:?}");
            assert_eq!(got.data.as_deref(), data, "{element:?}");
        }
        let v6 = element_bytes(&Element::ServicePort(t("fd00::10", Protocol::Sctp, 9)));
        assert_eq!(v6.key.len(), 24);
        assert_eq!(&v6.key[16..], &[132, 0, 0, 0, 0, 9, 0, 0]);
    }

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

    #[test]
    fn a_transaction_is_one_batch_with_an_acknowledgement_per_message() {
        let mut tx = Transaction::new("kube-ipvs-proxy");
        let added: Vec<Element> =
            (0..5000u16).map(|p| Element::ServicePort(t("10.96.0.10", Protocol::Tcp, p))).collect();
        tx.add(added.iter());
        tx.digest(0x0123_4567_89ab_cdef);
        let (bytes, steps) = tx.encode(100);
        // 5,000 elements of 12 bytes: more than one message's worth, then the digest's flush
        // and add.
        let adds = steps.iter().filter(|(_, s)| s.set == "service_ports_v4").count();
        assert!(adds >= 2, "{steps:?}");
        assert_eq!(steps.last().map(|(_, s)| (s.verb, s.set.as_str())), Some(("add", DIGEST_SET)));
        assert_eq!(steps.first().map(|(seq, _)| *seq), Some(101));
        let messages: Vec<&[u8]> = frames(&bytes).map(Result::unwrap).collect();
        assert_eq!(messages.len(), steps.len() + 2, "begin, the steps, end");
        // Numbered in order from `seq`, the markers included, each step by its own number.
        let seqs: Vec<u32> = messages.iter().map(|m| u32::from_ne_bytes([m[8], m[9], m[10], m[11]])).collect();
        assert_eq!(seqs, (100..100 + messages.len() as u32).collect::<Vec<_>>());
        assert!(steps.iter().zip(&seqs[1..]).all(|((seq, _), m)| seq == m));
        for m in &messages {
            assert!(m.len() < 64 * 1024, "a message of {} bytes", m.len());
        }
        // The markers: nfnetlink's batch types, for the nftables subsystem.
        let kind = |m: &[u8]| u16::from_ne_bytes([m[4], m[5]]);
        assert_eq!((kind(messages[0]), kind(messages[messages.len() - 1])), (16, 17));
        // Every element message: nftables subsystem (10 << 8), NEWSETELEM (12) or DELSETELEM (14), acked.
        for m in &messages[1..messages.len() - 1] {
            assert!([10 << 8 | 12, 10 << 8 | 14].contains(&kind(m)), "type {:#x}", kind(m));
            assert_ne!(u16::from_ne_bytes([m[6], m[7]]) & NLM_F_ACK, 0);
        }
    }
}
