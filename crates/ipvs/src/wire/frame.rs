//! Netlink framing of IPVS messages: appending requests to a send buffer, splitting a received
//! datagram into messages and decoding each.

use std::num::NonZeroI32;

use netlink_packet_core::{DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::constants::*;
use super::message::{IpvsAttr, IpvsMessage};
use crate::{Info, Timeouts};

/// Appends one request to `buf`: netlink header (`family_id`, `flags`, `seq`), generic netlink
/// header, then `msg`'s attributes. Returns the request's length.
pub fn encode_request(buf: &mut Vec<u8>, family_id: u16, seq: u32, flags: u16, msg: IpvsMessage) -> usize {
    let genl = GenlMessage::new(GenlHeader { cmd: msg.cmd, version: IPVS_GENL_VERSION }, msg, family_id);
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let len = nl.buffer_len();
    let start = buf.len();
    // Attributes are 4-byte aligned and both headers are too, so messages can be concatenated.
    buf.resize(start + len, 0);
    nl.serialize(&mut buf[start..]);
    len
}

/// One netlink message of a datagram, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Its sequence number (what acknowledgements are matched by).
    pub seq: u32,
    /// Its netlink message type.
    pub message_type: u16,
    /// Its netlink flags.
    pub flags: u16,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// Iterator over the messages of one datagram; see [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

/// Splits a datagram into messages. A malformed netlink header ends the iteration with an error
/// (nothing after it can be trusted); a malformed payload is only found by [`Reply::decode`].
pub fn frames(datagram: &[u8]) -> Frames<'_> {
    Frames { rest: datagram }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = match NetlinkBuffer::new_checked(self.rest) {
            Ok(buf) => buf,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e));
            }
        };
        // new_checked guarantees 16 <= length <= rest.len().
        let len = buf.length() as usize;
        let frame = Frame {
            seq: buf.sequence_number(),
            message_type: buf.message_type(),
            flags: buf.flags(),
            bytes: &self.rest[..len],
        };
        let advance = (len + 3) & !3;
        self.rest = self.rest.get(advance..).unwrap_or(&[]);
        Some(Ok(frame))
    }
}

impl<'a> Frame<'a> {
    /// The `DEST` nest of a real server dump entry, if this message has one, without decoding
    /// the rest: the hot path of a table dump ([`real_server_entry_from_nest`](super::real_server_entry_from_nest)).
    pub fn dest_nest(&self) -> Result<Option<&'a [u8]>, DecodeError> {
        self.attribute(super::constants::IPVS_CMD_ATTR_DEST)
    }

    /// The payload of the first top-level attribute of kind `kind` of this IPVS message (e.g.
    /// the `DEST` nest of a dump entry), without decoding the rest.
    pub(crate) fn attribute(&self, kind: u16) -> Result<Option<&'a [u8]>, DecodeError> {
        // Netlink header (16 bytes), then the generic netlink header (4 bytes).
        let attrs = self.bytes.get(20..).ok_or_else(|| DecodeError::buffer_too_small(self.bytes.len(), 20))?;
        for nla in NlasIterator::new(attrs) {
            let nla = nla?;
            if nla.kind() == kind {
                let len = usize::from(nla.length());
                // A checked attribute buffer holds at least `len >= 4` bytes.
                return Ok(nla.into_inner().get(4..len));
            }
        }
        Ok(None)
    }
}

/// A decoded reply message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// `NLMSG_ERROR`: an acknowledgement (`None`) or a failure with a negative errno.
    Ack(Option<NonZeroI32>),
    /// `NLMSG_DONE`: the end of a dump, with its status (0, or a negative errno).
    Done(i32),
    /// An IPVS message (a dump entry or a reply to a `GET_*`).
    Message(IpvsMessage),
    /// Anything else (`NLMSG_NOOP`, `NLMSG_OVERRUN`, another family's message).
    Other,
}

impl Reply {
    /// Decodes `frame`. Never panics; malformed input is a [`DecodeError`].
    pub fn decode(frame: &Frame<'_>) -> Result<Reply, DecodeError> {
        let msg = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(frame.bytes)?;
        Ok(match msg.payload {
            NetlinkPayload::Error(e) => Reply::Ack(e.code),
            NetlinkPayload::Done(d) => Reply::Done(d.code),
            NetlinkPayload::InnerMessage(genl) => Reply::Message(genl.payload),
            _ => Reply::Other,
        })
    }
}

/// The [`Info`] in a `SET_INFO` reply; absent fields are 0.
pub fn info_from_message(msg: &IpvsMessage) -> Info {
    let mut info = Info { version: 0, conn_table_size: 0 };
    for attr in &msg.attrs {
        match attr {
            IpvsAttr::Version(v) => info.version = *v,
            IpvsAttr::ConnTableSize(v) => info.conn_table_size = *v,
            _ => {}
        }
    }
    info
}

/// The [`Timeouts`] in a `SET_CONFIG` reply; absent fields are 0.
pub fn timeouts_from_message(msg: &IpvsMessage) -> Timeouts {
    let mut t = Timeouts::default();
    for attr in &msg.attrs {
        match attr {
            IpvsAttr::TimeoutTcp(v) => t.tcp = *v,
            IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
            IpvsAttr::TimeoutUdp(v) => t.udp = *v,
            _ => {}
        }
    }
    t
}

/// The attributes of a `SET_CONFIG` request; zero fields are left out so the kernel keeps them.
pub fn timeouts_attrs(t: &Timeouts) -> Vec<IpvsAttr> {
    let mut attrs = Vec::new();
    if t.tcp != 0 {
        attrs.push(IpvsAttr::TimeoutTcp(t.tcp));
    }
    if t.tcp_fin != 0 {
        attrs.push(IpvsAttr::TimeoutTcpFin(t.tcp_fin));
    }
    if t.udp != 0 {
        attrs.push(IpvsAttr::TimeoutUdp(t.udp));
    }
    attrs
}
