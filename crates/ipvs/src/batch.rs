//! [`Client::apply`](crate::Client::apply): many writes pipelined over one socket.
//!
//! Requests are concatenated into one buffer per `sendmsg`, each with `NLM_F_ACK` and its own
//! sequence number. The kernel handles a buffer's messages in turn, during the `sendmsg` call,
//! queueing one acknowledgement per message on our socket; so a window of messages per
//! `sendmsg`, bounded by the receive buffer, keeps that queue from overflowing. Should it
//! overflow anyway (`ENOBUFS`), the acknowledgements the kernel dropped are reported as lost
//! for their operations only, and the window shrinks.

use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use crate::error::libc_errno;
use crate::socket::Connection;
use crate::wire::{Reply, check_operation, encode_request, frames, operation_message};
use crate::{Error, ErrorKind, Operation, Result};

/// Bytes of receive buffer one queued acknowledgement may use (the skb's true size, not its
/// 36 bytes of message): generous, so the window errs on the safe side.
const ACK_TRUESIZE: usize = 1024;
/// Window bounds, in messages per `sendmsg`.
const MIN_WINDOW: usize = 8;
const MAX_WINDOW: usize = 1024;
/// Bytes per `sendmsg`: well under the default socket send buffer (the kernel refuses a
/// message bigger than it with `EMSGSIZE`).
const MAX_SEND_BYTES: usize = 96 * 1024;

/// The initial window for a receive buffer of `rcvbuf` bytes.
fn window_for(rcvbuf: usize) -> usize {
    (rcvbuf / ACK_TRUESIZE).clamp(MIN_WINDOW, MAX_WINDOW)
}

/// The modules a service write names, to explain `ENOENT`.
fn modules(op: &Operation) -> Option<(&str, Option<&str>)> {
    match op {
        Operation::AddVirtualServer(vs) | Operation::UpdateVirtualServer(vs) => {
            Some((vs.scheduler.as_str(), vs.pe_name.as_deref()))
        }
        _ => None,
    }
}

/// One `sendmsg` worth of operations awaiting acknowledgement.
struct Chunk {
    /// Sequence number of the first message; message `i` has `base + i`.
    base: u32,
    /// Index in `ops` of each message.
    indices: Vec<usize>,
    /// Acknowledgements still expected.
    pending: usize,
}

impl Chunk {
    /// Records the acknowledgements in `conn.recv_buf`.
    fn take_acks(
        &mut self,
        recv_buf: &[u8],
        ops: &[Operation],
        results: &mut [Option<Result<()>>],
    ) {
        for frame in frames(recv_buf) {
            // A malformed header leaves nothing to match; the operations it hid stay pending
            // and are reported when the receive loop gives up on them.
            let Ok(frame) = frame else { break };
            let pos = frame.seq.wrapping_sub(self.base) as usize;
            let Some(&idx) = self.indices.get(pos) else {
                continue;
            };
            if results[idx].is_some() {
                continue;
            }
            let op = &ops[idx];
            let result = match Reply::decode(&frame) {
                Ok(Reply::Ack(None)) => Ok(()),
                Ok(Reply::Ack(Some(code))) => Err(Error::from_errno(-code.get(), op, modules(op))),
                Ok(_) => continue,
                Err(e) => Err(Error::decode(op, e)),
            };
            results[idx] = Some(result);
            self.pending -= 1;
        }
    }
}

/// See [`Client::apply`](crate::Client::apply).
pub(crate) async fn apply(conn: &mut Connection, ops: &[Operation]) -> Result<Vec<Result<()>>> {
    let mut results: Vec<Option<Result<()>>> = ops.iter().map(|_| None).collect();
    conn.begin()?;
    let mut window = window_for(conn.rcvbuf);
    let mut next = 0;
    while next < ops.len() {
        let mut chunk = Chunk {
            base: conn.next_seq(),
            indices: Vec::with_capacity(window),
            pending: 0,
        };
        let mut seq = chunk.base;
        conn.send_buf.clear();
        while next < ops.len()
            && chunk.indices.len() < window
            && conn.send_buf.len() < MAX_SEND_BYTES
        {
            let op = &ops[next];
            match check_operation(op) {
                Err((kind, message)) => results[next] = Some(Err(Error::new(kind, op, message))),
                Ok(()) => {
                    if !chunk.indices.is_empty() {
                        seq = conn.next_seq();
                    }
                    encode_request(
                        &mut conn.send_buf,
                        conn.family_id,
                        seq,
                        NLM_F_REQUEST | NLM_F_ACK,
                        operation_message(op),
                    );
                    chunk.indices.push(next);
                }
            }
            next += 1;
        }
        if chunk.indices.is_empty() {
            continue;
        }
        chunk.pending = chunk.indices.len();
        conn.socket_send()
            .await
            .map_err(|e| Error::io("send a batch of IPVS requests", e))?;
        while chunk.pending > 0 {
            match conn.recv().await {
                Ok(()) => chunk.take_acks(&conn.recv_buf, ops, &mut results),
                Err(e) if e.raw_os_error() == Some(libc_errno::ENOBUFS) => {
                    // The kernel dropped acknowledgements. Everything it will ever queue for
                    // this chunk is queued by now (it works inside our sendmsg), so read what
                    // is there, then the rest are lost.
                    drain(conn, &mut chunk, ops, &mut results)?;
                    for &idx in &chunk.indices {
                        if results[idx].is_none() {
                            results[idx] = Some(Err(lost(&ops[idx])));
                        }
                    }
                    chunk.pending = 0;
                    window = (window / 2).max(MIN_WINDOW);
                    tracing::warn!(
                        window,
                        "IPVS acknowledgements lost (ENOBUFS); shrinking the batch window"
                    );
                }
                Err(e) => return Err(Error::io("receive IPVS acknowledgements", e)),
            }
        }
    }
    conn.end();
    // Every operation got a result above; should one ever not have, say so rather than claim success.
    Ok(results
        .into_iter()
        .zip(ops)
        .map(|(r, op)| {
            r.unwrap_or_else(|| Err(Error::new(ErrorKind::Io, op, "no acknowledgement received")))
        })
        .collect())
}

/// Reads what is queued without waiting.
fn drain(
    conn: &mut Connection,
    chunk: &mut Chunk,
    ops: &[Operation],
    results: &mut [Option<Result<()>>],
) -> Result<()> {
    loop {
        match conn.try_recv() {
            Ok(()) => chunk.take_acks(&conn.recv_buf, ops, results),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc_errno::ENOBUFS) => continue,
            Err(e) => return Err(Error::io("receive IPVS acknowledgements", e)),
        }
    }
}

fn lost(op: &Operation) -> Error {
    let mut e = Error::new(
        ErrorKind::Io,
        op,
        "acknowledgement lost: the socket's receive buffer overflowed (ENOBUFS); outcome unknown",
    );
    e.set_errno(libc_errno::ENOBUFS);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_the_receive_buffer() {
        for (rcvbuf, window) in [
            (0, MIN_WINDOW),
            (212_992, 208),
            (425_984, 416),
            (16 << 20, MAX_WINDOW),
        ] {
            assert_eq!(window_for(rcvbuf), window, "rcvbuf {rcvbuf}");
        }
    }
}
