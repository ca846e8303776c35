//! [`Client::apply`](crate::Client::apply): many writes pipelined over one socket.
//!
//! Requests are concatenated into one buffer per `sendmsg`, each with `NLM_F_ACK` and its own
//! sequence number. The kernel handles a buffer's messages in turn, during the `sendmsg` call,
//! queueing one acknowledgement per message on our socket; so a window of messages per
//! `sendmsg`, bounded by the receive buffer, keeps that queue from overflowing. Should it
//! overflow anyway (`ENOBUFS`), the acknowledgements the kernel dropped are reported as lost
//! for their operations only, and the window shrinks. Since all of a chunk's acknowledgements
//! are queued (or dropped) by the time `sendmsg` returns, they are read without waiting: an
//! operation left without one gets an error saying the outcome is unknown, never `Ok`, and
//! nothing waits for a reply that cannot come.

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
    /// Why a datagram could not be split into messages, if one could not: the
    /// acknowledgements it held are unreadable.
    unreadable: Option<String>,
}

impl Chunk {
    /// Records the acknowledgements in `conn.recv_buf`.
    fn take_acks(&mut self, recv_buf: &[u8], ops: &[Operation], results: &mut [Option<Result<()>>]) {
        for frame in frames(recv_buf) {
            // A malformed header hides the rest of the datagram; the operations whose
            // acknowledgements it held stay pending and are reported as unreadable.
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    self.unreadable = Some(e.to_string());
                    break;
                }
            };
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
        let mut chunk =
            Chunk { base: conn.next_seq(), indices: Vec::with_capacity(window), pending: 0, unreadable: None };
        let mut seq = chunk.base;
        conn.send_buf.clear();
        while next < ops.len() && chunk.indices.len() < window && conn.send_buf.len() < MAX_SEND_BYTES {
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
        conn.socket_send().await.map_err(|e| Error::io("send a batch of IPVS requests", e))?;
        // The kernel handles the buffer's messages inside our `sendmsg`, queueing each
        // acknowledgement as it goes (or dropping it and flagging ENOBUFS on a full receive
        // buffer): once `sendmsg` has returned, everything this chunk will ever get is queued.
        // So read without waiting; what is not there then never comes, and waiting for it
        // would wait forever.
        let overflowed = drain(conn, &mut chunk, ops, &mut results)?;
        if chunk.pending > 0 {
            for &idx in &chunk.indices {
                if results[idx].is_none() {
                    results[idx] = Some(Err(unanswered(&ops[idx], overflowed, &chunk.unreadable)));
                }
            }
        }
        if overflowed {
            window = (window / 2).max(MIN_WINDOW);
            tracing::warn!(window, "IPVS acknowledgements lost (ENOBUFS); shrinking the batch window");
        }
    }
    conn.end();
    // Every operation got a result above; should one ever not have, say so rather than claim success.
    Ok(results.into_iter().zip(ops).map(|(r, op)| r.unwrap_or_else(|| Err(unanswered(op, false, &None)))).collect())
}

/// Reads every queued datagram without waiting, recording the acknowledgements; true if the
/// kernel reported dropping some (`ENOBUFS`).
fn drain(
    conn: &mut Connection,
    chunk: &mut Chunk,
    ops: &[Operation],
    results: &mut [Option<Result<()>>],
) -> Result<bool> {
    let mut overflowed = false;
    while chunk.pending > 0 {
        match conn.try_recv() {
            Ok(()) => chunk.take_acks(&conn.recv_buf, ops, results),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.raw_os_error() == Some(libc_errno::ENOBUFS) => overflowed = true,
            Err(e) => return Err(Error::io("receive IPVS acknowledgements", e)),
        }
    }
    Ok(overflowed)
}

/// The error for a request (`op`, what it did) whose acknowledgement never came: the kernel may
/// or may not have done it. Also the link's batched binds' ([`crate::DummyLink::add_addresses`]).
pub(crate) fn unanswered(op: impl std::fmt::Display, overflowed: bool, unreadable: &Option<String>) -> Error {
    if overflowed {
        let mut e = Error::new(
            ErrorKind::Io,
            op,
            "acknowledgement lost: the socket's receive buffer overflowed (ENOBUFS); outcome unknown",
        );
        e.set_errno(libc_errno::ENOBUFS);
        return e;
    }
    match unreadable {
        Some(why) => Error::new(ErrorKind::Decode, op, format!("acknowledgement unreadable ({why}); outcome unknown")),
        None => Error::new(ErrorKind::Io, op, "no acknowledgement received; outcome unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RealServerId, VirtualServerId};

    /// A netlink acknowledgement (`NLMSG_ERROR`) for `seq` with `code` (0 or -errno).
    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        // The request's header, echoed.
        b.extend_from_slice(&16u32.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    fn ops(n: usize) -> Vec<Operation> {
        let vs = VirtualServerId::Tuple { protocol: crate::Protocol::Tcp, addr: "10.0.0.1".parse().unwrap(), port: 80 };
        (0..n)
            .map(|i| {
                let rs = RealServerId { addr: format!("10.1.0.{}", i + 1).parse().unwrap(), port: 8080 };
                Operation::DeleteRealServer(vs, rs)
            })
            .collect()
    }

    /// Outcome of one operation after the datagrams: None (still pending), Some(None) for Ok,
    /// Some(Some(kind)) for an error.
    type Outcome = Option<Option<ErrorKind>>;

    /// (name, datagrams received, outcome of each of three operations, unreadable seen).
    type AckCase = (&'static str, Vec<Vec<u8>>, [Outcome; 3], bool);

    #[test]
    fn acknowledgements_are_matched_by_sequence_number() {
        const BASE: u32 = 100;
        let ok = Some(None);
        let cases: Vec<AckCase> = vec![
            (
                "all acked, out of order, across datagrams",
                vec![[ack(BASE + 2, 0), ack(BASE, 0)].concat(), ack(BASE + 1, 0)],
                [ok, ok, ok],
                false,
            ),
            (
                "errors map to their kind",
                vec![[ack(BASE, -17), ack(BASE + 1, -2), ack(BASE + 2, 0)].concat()],
                [Some(Some(ErrorKind::Exists)), Some(Some(ErrorKind::NotFound)), ok],
                false,
            ),
            (
                "other sequence numbers and repeats are ignored",
                vec![[ack(BASE - 1, -17), ack(BASE + 3, 0), ack(BASE, 0), ack(BASE, -17)].concat()],
                [ok, None, None],
                false,
            ),
            (
                "a truncated frame is unreadable",
                vec![[ack(BASE, 0), ack(BASE + 1, 0)[..20].to_vec()].concat()],
                [ok, None, None],
                true,
            ),
            (
                "a bad header hides the rest of its datagram, not later ones",
                vec![[ack(BASE, 0), vec![0xff; 7], ack(BASE + 1, 0)].concat(), ack(BASE + 2, -3)],
                [ok, None, Some(Some(ErrorKind::NoSuchVirtualServer))],
                true,
            ),
        ];
        for (name, datagrams, want, unreadable) in cases {
            let ops = ops(3);
            let mut results: Vec<Option<Result<()>>> = ops.iter().map(|_| None).collect();
            let mut chunk = Chunk { base: BASE, indices: vec![0, 1, 2], pending: 3, unreadable: None };
            for d in &datagrams {
                chunk.take_acks(d, &ops, &mut results);
            }
            let got: Vec<Outcome> =
                results.iter().map(|r| r.as_ref().map(|r| r.as_ref().err().map(|e| e.kind()))).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(chunk.pending, want.iter().filter(|o| o.is_none()).count(), "{name}");
            assert_eq!(chunk.unreadable.is_some(), unreadable, "{name}");
        }
    }

    #[test]
    fn an_unanswered_operation_is_an_error_naming_it() {
        let op = &ops(1)[0];
        for (overflowed, unreadable, kind, errno, says) in [
            (true, None, ErrorKind::Io, Some(libc_errno::ENOBUFS), "acknowledgement lost"),
            (false, Some("truncated".to_string()), ErrorKind::Decode, None, "unreadable (truncated)"),
            (false, None, ErrorKind::Io, None, "no acknowledgement received"),
        ] {
            let e = unanswered(op, overflowed, &unreadable);
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.errno(), errno, "{e}");
            let text = e.to_string();
            assert!(text.contains(says) && text.contains("outcome unknown"), "{text}");
            assert!(text.contains("10.1.0.1:8080") && text.contains("10.0.0.1:80"), "{text}");
        }
    }

    #[test]
    fn window_follows_the_receive_buffer() {
        for (rcvbuf, window) in [(0, MIN_WINDOW), (212_992, 208), (425_984, 416), (16 << 20, MAX_WINDOW)] {
            assert_eq!(window_for(rcvbuf), window, "rcvbuf {rcvbuf}");
        }
    }
}
