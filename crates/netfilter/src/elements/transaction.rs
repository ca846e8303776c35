//! [`Transaction`]: one nftables transaction of element changes, built as bytes.

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList, SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::{ElementBytes, NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, digest_bytes, element_bytes};
use crate::script::{DIGEST_SET, ELEMENT_MAPS, ELEMENT_SETS, FAMILY_SUFFIXES, set_name};
use crate::state::{Element, ElementChanges};

/// Bytes of elements per message: the list is one attribute, whose length is 16 bits.
const MAX_ELEMENT_BYTES: usize = 48 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::tests::t;
    use crate::nfnetlink::frames;
    use ipvs::Protocol;

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
