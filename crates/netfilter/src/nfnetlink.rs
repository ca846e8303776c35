//! One nfnetlink socket: a request and its replies (acknowledgement, or a dump to its end),
//! framed by netlink-packet-core and netlink-packet-netfilter. Shared by the conntrack and
//! ipset clients.

use std::io;

use netlink_packet_core::{DecodeError, NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NetlinkAddr, TokioSocket};

/// Big enough for any dump datagram the kernel sends.
const RECV_BUF_SIZE: usize = 64 * 1024;

/// An nfnetlink request that failed, naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum NfnetlinkError {
    /// The socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be decoded.
    #[error("{what}: undecodable reply: {source}")]
    Decode {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// The kernel refused the request.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being done.
        what: String,
        /// The kernel's error number, as an I/O error.
        #[source]
        source: io::Error,
    },
}

/// A `NETLINK_NETFILTER` socket with its sequence numbers and receive buffer.
pub(crate) struct NfSocket {
    socket: TokioSocket,
    seq: u32,
    recv_buf: Vec<u8>,
}

impl NfSocket {
    /// Opens a socket; `name` names it in errors.
    pub(crate) fn open(name: &str) -> Result<NfSocket, NfnetlinkError> {
        let io = |source| NfnetlinkError::Io { what: format!("open a {name} socket"), source };
        let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.socket_mut().bind_auto().map_err(io)?;
        socket.socket_mut().connect(&NetlinkAddr::new(0, 0)).map_err(io)?;
        Ok(NfSocket { socket, seq: 0, recv_buf: Vec::with_capacity(RECV_BUF_SIZE) })
    }

    /// Sends one request and reads its replies up to the acknowledgement or the dump's end,
    /// giving each message's payload to `each`.
    pub(crate) async fn exchange(
        &mut self,
        request: NetfilterMessage,
        flags: u16,
        what: &str,
        mut each: impl FnMut(NetfilterMessageInner),
    ) -> Result<(), NfnetlinkError> {
        let io = |source| NfnetlinkError::Io { what: what.to_string(), source };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut message = NetlinkMessage::from(request);
        message.header.flags = flags;
        message.header.sequence_number = seq;
        message.finalize();
        let mut send_buf = vec![0; message.buffer_len()];
        message.serialize(&mut send_buf);
        self.socket.send(&send_buf).await.map_err(io)?;
        loop {
            self.recv_buf.clear();
            self.socket.recv(&mut self.recv_buf).await.map_err(io)?;
            for frame in frames(&self.recv_buf) {
                let frame = frame.map_err(|source| NfnetlinkError::Decode { what: what.to_string(), source })?;
                let reply = NetlinkMessage::<NetfilterMessage>::deserialize(frame)
                    .map_err(|source| NfnetlinkError::Decode { what: what.to_string(), source })?;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(NetfilterMessage { inner, .. }) => each(inner),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(NfnetlinkError::Kernel {
                                what: what.to_string(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sets a buffer of `socket` to `size` bytes past the `net.core` maximum with `forced`
/// (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`: they need `CAP_NET_ADMIN`, as writing or watching
/// nftables does anyway); without the capability, with `plain` (`SO_RCVBUF`, `SO_SNDBUF`), as
/// large as the maximum allows.
pub(crate) fn force_buffer(socket: &netlink_sys::Socket, forced: libc::c_int, plain: libc::c_int, size: usize) {
    use std::os::fd::AsRawFd;
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(forced) != 0 {
        set(plain);
    }
}

/// The messages of one datagram, each as its own bytes (header included); a malformed length
/// ends the walk with an error.
pub(crate) fn frames(datagram: &[u8]) -> impl Iterator<Item = Result<&[u8], DecodeError>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let bytes = datagram.get(offset..).filter(|b| !b.is_empty())?;
        let length = match NetlinkBuffer::new_checked(bytes) {
            Ok(message) => message.length() as usize,
            Err(e) => {
                offset = datagram.len();
                return Some(Err(e));
            }
        };
        offset += length.max(1).next_multiple_of(4);
        Some(Ok(&bytes[..length.min(bytes.len())]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages of 20 and 18 bytes (the second padded to 20) then a truncated header.
    #[test]
    fn a_datagram_is_split_at_each_aligned_length() {
        let mut datagram = Vec::new();
        for (length, kind) in [(20u32, 1u16), (18, 2)] {
            let mut message = vec![0u8; length.next_multiple_of(4) as usize];
            message[..4].copy_from_slice(&length.to_ne_bytes());
            message[4..6].copy_from_slice(&kind.to_ne_bytes());
            datagram.extend(message);
        }
        datagram.extend([9, 0, 0]);
        let got: Vec<Result<usize, ()>> = frames(&datagram).map(|f| f.map(<[u8]>::len).map_err(|_| ())).collect();
        assert_eq!(got, [Ok(20), Ok(18), Err(())]);
    }
}
