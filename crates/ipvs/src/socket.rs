//! One generic netlink socket speaking to the IPVS family: family resolution, request/reply
//! exchanges matched by sequence number, dumps, and the reused send and receive buffers.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::error::libc_errno;
use crate::wire::{Frame, IpvsMessage, Reply, encode_request, frames};
use crate::{Error, Result};

/// Big enough for any datagram the kernel sends: dump chunks are capped at 32 KiB.
const RECV_BUF_SIZE: usize = 64 * 1024;
/// A dump yields to the runtime after this many datagrams (of up to 32 KiB each).
const YIELD_EVERY: usize = 8;

/// Options for [`Client::connect_with`](crate::Client::connect_with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Receive buffer asked for, in bytes (`SO_RCVBUFFORCE`, else `SO_RCVBUF` capped at
    /// `net.core.rmem_max`; the kernel doubles it). It bounds how many acknowledgements a
    /// batch may have in flight: [`Client::apply`](crate::Client::apply) sizes its window from
    /// it, and should the kernel still drop acknowledgements (`ENOBUFS`), reports those
    /// operations as lost and shrinks the window. Default 8 MiB; small values are for tests.
    pub receive_buffer: usize,
    /// Whether listings decode the traffic statistics of each entry (default); without, they
    /// are left zero and a listing costs a third of the decoding (for a reader comparing
    /// configurations only).
    pub statistics: bool,
    /// The buffer each receive offers the kernel, in bytes (default 64 KiB). The kernel fills
    /// a dump's datagrams up to the largest buffer a socket has offered (at most 32 KiB) and
    /// allocates, and zeroes, that much for each, even for a few entries; with
    /// [`ClientOptions::with_page_datagrams`] a dump of one virtual server's real servers costs
    /// it a page per datagram instead.
    pub datagram_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions { receive_buffer: 8 * 1024 * 1024, statistics: true, datagram_buffer: RECV_BUF_SIZE }
    }
}

impl ClientOptions {
    /// The defaults with a receive buffer of `bytes`.
    pub fn with_receive_buffer(bytes: usize) -> ClientOptions {
        ClientOptions { receive_buffer: bytes, ..ClientOptions::default() }
    }

    /// These options, with listings that leave the statistics zero.
    #[must_use]
    pub fn without_statistics(self) -> ClientOptions {
        ClientOptions { statistics: false, ..self }
    }

    /// These options, with dumps in datagrams of a page (4 KiB): for a client that lists a few
    /// entries at a time, often (a whole-table listing then takes eight times the datagrams,
    /// and the kernel walks its table from the start for each).
    #[must_use]
    pub fn with_page_datagrams(self) -> ClientOptions {
        ClientOptions { datagram_buffer: 4096, ..self }
    }
}

/// Names a request for its error messages, and the modules it needs (for `ENOENT`).
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    /// What is being done: "add virtual server TCP 10.0.0.1:80".
    pub what: &'a (dyn fmt::Display + Sync),
    /// Scheduler and persistence engine the request names, if it is a service write.
    pub modules: Option<(&'a str, Option<&'a str>)>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(what: &'a (dyn fmt::Display + Sync)) -> Context<'a> {
        Context { what, modules: None }
    }
}

/// A netlink socket bound to the IPVS family, with its buffers. Not shareable: the client
/// wraps it in a mutex.
pub(crate) struct Connection {
    pub(crate) socket: TokioSocket,
    pub(crate) family_id: u16,
    seq: u32,
    pub(crate) send_buf: Vec<u8>,
    pub(crate) recv_buf: Vec<u8>,
    /// Set while an exchange runs. Still set when the next one starts means the previous one
    /// was cancelled (or its socket failed) and its replies may still arrive: start afresh.
    busy: bool,
    /// Effective receive buffer size, which bounds how many acknowledgements may be in flight.
    pub(crate) rcvbuf: usize,
    /// Kept to open a replacement socket the same way.
    options: ClientOptions,
}

fn open_socket(options: &ClientOptions) -> io::Result<(TokioSocket, usize)> {
    let mut socket = TokioSocket::new(NETLINK_GENERIC)?;
    let raw = socket.socket_mut();
    raw.bind_auto()?;
    raw.connect(&SocketAddr::new(0, 0))?;
    // Error acknowledgements then carry only the request's header, not the whole request.
    // Older kernels lack the option; the full echo is merely bigger.
    let _ = raw.set_cap_ack(true);
    let rcvbuf = set_receive_buffer(raw, options.receive_buffer);
    Ok((socket, rcvbuf))
}

/// Sets the receive buffer of `socket` to `bytes`, above the system's limit when the process
/// may (CAP_NET_ADMIN, which IPVS and links need anyway); returns the size the kernel took.
pub(crate) fn set_receive_buffer(socket: &netlink_sys::Socket, bytes: usize) -> usize {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        // Without CAP_NET_ADMIN the kernel caps it at rmem_max; that only matters for the
        // error path.
        let _ = socket.set_rx_buf_sz(size);
    }
    socket.get_rx_buf_sz().unwrap_or(212_992)
}

impl Connection {
    /// Opens a socket and resolves the IPVS family id.
    pub(crate) async fn connect(options: ClientOptions) -> Result<Connection> {
        let ctx = "connect to IPVS";
        let (socket, rcvbuf) = open_socket(&options).map_err(|e| Error::io(ctx, e))?;
        let mut conn = Connection {
            socket,
            family_id: 0,
            seq: 1,
            send_buf: Vec::with_capacity(RECV_BUF_SIZE),
            recv_buf: Vec::with_capacity(options.datagram_buffer),
            busy: false,
            rcvbuf,
            options,
        };
        conn.family_id = conn.resolve_family().await?;
        Ok(conn)
    }

    async fn resolve_family(&mut self) -> Result<u16> {
        let ctx = "resolve the IPVS generic netlink family";
        let request = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IpvsMessage::family_name().to_string())],
        };
        let mut msg = NetlinkMessage::from(GenlMessage::from_payload(request));
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let seq = self.next_seq();
        msg.header.sequence_number = seq;
        msg.finalize();
        self.send_buf.clear();
        self.send_buf.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.send_buf);
        self.socket.send(&self.send_buf).await.map_err(|e| Error::io(ctx, e))?;
        let mut family = None;
        loop {
            self.recv().await.map_err(|e| Error::io(ctx, e))?;
            for frame in frames(&self.recv_buf) {
                let frame = frame.map_err(|e| Error::decode(ctx, e))?;
                if frame.seq != seq {
                    continue;
                }
                let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(frame.bytes)
                    .map_err(|e| Error::decode(ctx, e))?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => {
                        family = genl.payload.nlas.iter().find_map(|a| match a {
                            GenlCtrlAttrs::FamilyId(id) => Some(*id),
                            _ => None,
                        });
                    }
                    NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                        None => return family.ok_or_else(|| Error::ipvs_unavailable(ctx)),
                        Some(libc_errno::ENOENT) => return Err(Error::ipvs_unavailable(ctx)),
                        Some(errno) => return Err(Error::from_errno(errno, ctx, None)),
                    },
                    _ => {}
                }
            }
        }
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Receives one datagram into `recv_buf`.
    pub(crate) async fn recv(&mut self) -> io::Result<()> {
        self.recv_buf.clear();
        self.socket.recv(&mut self.recv_buf).await
    }

    /// Receives one datagram into `recv_buf` if one is queued, else fails with `WouldBlock`.
    pub(crate) fn try_recv(&mut self) -> io::Result<()> {
        self.recv_buf.clear();
        self.socket.socket_ref().recv(&mut self.recv_buf, libc::MSG_DONTWAIT).map(|_| ())
    }

    /// Sends `send_buf` in one `sendmsg`.
    pub(crate) async fn socket_send(&mut self) -> io::Result<()> {
        self.socket.send(&self.send_buf).await.map(|_| ())
    }

    /// Marks the start of an exchange; replaces the socket if the previous one did not finish.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.busy {
            tracing::debug!("previous IPVS exchange did not finish; opening a fresh socket");
            let (socket, rcvbuf) = open_socket(&self.options).map_err(|e| Error::io("reopen the IPVS socket", e))?;
            self.socket = socket;
            self.rcvbuf = rcvbuf;
        }
        self.busy = true;
        Ok(())
    }

    /// Marks the clean end of an exchange: no reply of it is left on the socket.
    pub(crate) fn end(&mut self) {
        self.busy = false;
    }

    /// Sends `msg` (acknowledged, or as a dump) and hands each IPVS message of the reply to
    /// `on_message`, until the acknowledgement or the end of the dump.
    pub(crate) async fn exchange(
        &mut self,
        ctx: Context<'_>,
        msg: IpvsMessage,
        dump: bool,
        mut on_message: impl FnMut(IpvsMessage) -> Result<()>,
    ) -> Result<()> {
        self.exchange_frames(ctx, msg, dump, |frame| match Reply::decode(frame) {
            Ok(Reply::Message(m)) => on_message(m),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::decode(ctx.what, e)),
        })
        .await
    }

    /// Like [`Connection::exchange`], but hands over each IPVS message undecoded, for callers
    /// that decode only what they need (the destination dumps of a whole-table listing).
    pub(crate) async fn exchange_frames(
        &mut self,
        ctx: Context<'_>,
        msg: IpvsMessage,
        dump: bool,
        mut on_frame: impl FnMut(&Frame<'_>) -> Result<()>,
    ) -> Result<()> {
        self.begin()?;
        let seq = self.next_seq();
        let flags = if dump { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST | NLM_F_ACK };
        self.send_buf.clear();
        encode_request(&mut self.send_buf, self.family_id, seq, flags, msg);
        self.socket.send(&self.send_buf).await.map_err(|e| Error::io(ctx.what, e))?;
        // A failure in `on_frame` is remembered, not returned at once, so that the rest of
        // the reply is still read and the socket stays in step.
        let mut failure = None;
        let mut received = 0usize;
        loop {
            // A dump's datagrams are all ready at once (the kernel fills the next while this
            // one is read), so without a yield a whole-table listing (hundreds of datagrams,
            // each with the kernel's walk) ran as one poll, and the tasks queued behind it on
            // its worker thread waited for all of it. Not after every datagram: a yield costs
            // the runtime a look at its I/O driver, and the verification's dumps of one virtual
            // server's real servers (two datagrams, dozens a second) need none.
            if dump && received > 0 && received.is_multiple_of(YIELD_EVERY) {
                tokio::task::yield_now().await;
            }
            received += 1;
            self.recv().await.map_err(|e| Error::io(ctx.what, e))?;
            for frame in frames(&self.recv_buf) {
                let frame = frame.map_err(|e| Error::decode(ctx.what, e))?;
                if frame.seq != seq {
                    continue;
                }
                if frame.message_type == self.family_id {
                    if failure.is_none() {
                        failure = on_frame(&frame).err();
                    }
                    continue;
                }
                match Reply::decode(&frame) {
                    Ok(Reply::Ack(code)) => {
                        self.end();
                        return match (code, failure) {
                            (Some(code), _) => Err(Error::from_errno(-code.get(), ctx.what, ctx.modules)),
                            (None, Some(f)) => Err(f),
                            (None, None) => Ok(()),
                        };
                    }
                    Ok(Reply::Done(code)) => {
                        self.end();
                        return match (code, failure) {
                            (c, _) if c < 0 => Err(Error::from_errno(-c, ctx.what, ctx.modules)),
                            (_, Some(f)) => Err(f),
                            _ => Ok(()),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if failure.is_none() {
                            failure = Some(Error::decode(ctx.what, e));
                        }
                    }
                }
            }
        }
    }
}
