//! [`DummyLink::add_addresses`](crate::DummyLink::add_addresses): many host addresses added in
//! few system calls (a cold start binds 10,000).
//!
//! The `RTM_NEWADDR` requests of a chunk go in one `sendmsg`, and only the chunk's last asks
//! for an acknowledgement: the kernel handles a buffer's messages in turn during that call and
//! answers a request without `NLM_F_ACK` only when it fails. So a chunk costs one send and a
//! few receives instead of a round trip (and a task switch) per address; the answer to the
//! last, queued after every other, says the chunk is done, and an address without an error
//! before it was added. The receive buffer holds a whole chunk's errors (the requests are not
//! echoed back: `NETLINK_CAP_ACK`); should it overflow anyway (`ENOBUFS`), the addresses whose
//! answer may have been dropped are reported as unknown, never as added.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use rtnetlink::AddressMessageBuilder;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};

use crate::batch::unanswered;
use crate::error::libc_errno;
use crate::socket::set_receive_buffer;
use crate::wire::frames;
use crate::{Error, ErrorKind, Result};

/// Requests per `sendmsg`: their errors, if all fail, fit the receive buffer below.
const CHUNK: usize = 256;
/// Receive buffer: room for a chunk's errors (an skb of about 1 KiB each) twice over.
const RECEIVE_BUFFER: usize = 512 * 1024;

/// The `RTM_NEWADDR` message adding `addr` as a host address (/32 or /128) to link `index`;
/// an IPv6 one skips duplicate address detection (or it would stay "tentative" a while).
pub(crate) fn new_address(index: u32, addr: IpAddr) -> AddressMessage {
    match addr {
        IpAddr::V4(v4) => AddressMessageBuilder::<std::net::Ipv4Addr>::new().index(index).address(v4, 32).build(),
        IpAddr::V6(v6) => {
            let mut msg = AddressMessageBuilder::<std::net::Ipv6Addr>::new().index(index).address(v6, 128).build();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            msg
        }
    }
}

/// Adds `addrs` to link `index` (named `name`, for errors); one result per address, in order.
/// A present address is Ok. Blocking: the kernel does the work during each `sendmsg`.
pub(crate) fn add_addresses(index: u32, name: &str, addrs: &[IpAddr]) -> Vec<Result<()>> {
    let context = |addr: &IpAddr| format!("add address {addr} to {name}");
    let socket = match open() {
        Ok(socket) => socket,
        Err(e) => {
            let why = e.to_string();
            return addrs.iter().map(|a| Err(Error::new(ErrorKind::Io, context(a), why.clone()))).collect();
        }
    };
    let mut results = Vec::with_capacity(addrs.len());
    let mut send_buf = Vec::new();
    let mut recv_buf = vec![0u8; 64 * 1024];
    let mut seq: u32 = 0;
    for chunk in addrs.chunks(CHUNK) {
        let base = seq.wrapping_add(1);
        send_buf.clear();
        for (i, addr) in chunk.iter().enumerate() {
            let mut message = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(new_address(index, *addr)));
            let last = i + 1 == chunk.len();
            message.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | if last { NLM_F_ACK } else { 0 };
            seq = seq.wrapping_add(1);
            message.header.sequence_number = seq;
            message.finalize();
            let start = send_buf.len();
            send_buf.resize(start + message.buffer_len(), 0);
            message.serialize(&mut send_buf[start..]);
        }
        let mut answers: Vec<Option<Result<()>>> = chunk.iter().map(|_| None).collect();
        if let Err(e) = socket.send(&send_buf, 0) {
            let why = e.to_string();
            results.extend(chunk.iter().map(|a| Err(Error::new(ErrorKind::Io, context(a), why.clone()))));
            continue;
        }
        let outcome = drain(&socket, &mut recv_buf, base, chunk, &mut answers, &context);
        results.extend(answers.into_iter().zip(chunk).map(|(answer, addr)| match (answer, &outcome) {
            (Some(answer), _) => answer,
            // The kernel answers failures only: no error before the last answer, added.
            (None, Drained::Done) => Ok(()),
            (None, Drained::Unanswered { overflowed, unreadable }) => {
                Err(unanswered(context(addr), *overflowed, unreadable))
            }
            (None, Drained::ReadFailed(why)) => Err(Error::new(
                ErrorKind::Io,
                context(addr),
                format!("cannot read the answers: {why}; outcome unknown"),
            )),
        }));
    }
    results
}

/// How the answers to a chunk ended.
enum Drained {
    /// The last request's answer came, and no answer was dropped: every error was read.
    Done,
    /// Some answers may be missing: dropped on a full receive buffer (`overflowed`), or hidden
    /// behind a malformed message (`unreadable`, why), or never sent.
    Unanswered { overflowed: bool, unreadable: Option<String> },
    /// The socket failed.
    ReadFailed(std::io::Error),
}

/// Reads the answers queued for the chunk `base..` (all are queued when `sendmsg` returns),
/// without waiting, into `answers`.
fn drain(
    socket: &Socket,
    buf: &mut [u8],
    base: u32,
    chunk: &[IpAddr],
    answers: &mut [Option<Result<()>>],
    context: &dyn Fn(&IpAddr) -> String,
) -> Drained {
    let mut overflowed = false;
    loop {
        let len = match socket.recv(&mut &mut *buf, libc::MSG_DONTWAIT) {
            Ok(len) => len,
            Err(e) if e.raw_os_error() == Some(libc_errno::ENOBUFS) => {
                overflowed = true;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Drained::Unanswered { overflowed, unreadable: None };
            }
            Err(e) => return Drained::ReadFailed(e),
        };
        for frame in frames(&buf[..len.min(buf.len())]) {
            let unreadable = |e: netlink_packet_core::DecodeError| Drained::Unanswered {
                overflowed,
                unreadable: Some(format!("an answer could not be decoded: {e}")),
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return unreadable(e),
            };
            let pos = frame.seq.wrapping_sub(base) as usize;
            let (Some(answer), Some(addr)) = (answers.get_mut(pos), chunk.get(pos)) else { continue };
            let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.bytes) {
                Ok(message) => message,
                Err(e) => return unreadable(e),
            };
            let NetlinkPayload::Error(error) = message.payload else { continue };
            *answer = Some(match -error.raw_code() {
                0 | libc_errno::EEXIST => Ok(()),
                errno => Err(Error::from_errno(errno, context(addr), None)),
            });
            if pos + 1 == chunk.len() {
                return if overflowed { Drained::Unanswered { overflowed, unreadable: None } } else { Drained::Done };
            }
        }
    }
}

/// A route socket of its own, connected to the kernel, with a receive buffer for a chunk's
/// errors and error answers that do not echo the request.
fn open() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // Older kernels lack the option; the full echo is merely bigger.
    let _ = socket.set_cap_ack(true);
    set_receive_buffer(&socket, RECEIVE_BUFFER);
    Ok(socket)
}
