//! Reads through IPVS's socket options: the count of virtual servers, and one virtual server's
//! real servers, each in one system call.
//!
//! Generic netlink has no count (`IPVS_CMD_GET_INFO` answers the version and the connection
//! table's size only): knowing whether a virtual server went missing takes a dump of the whole
//! table, which at 10,000 virtual servers the kernel restarts from the top for each datagram.
//! And a netlink dump of one virtual server's real servers costs two passes of the kernel's
//! dump callback (the second only to say it is done), each looking the virtual server up again
//! and allocating and zeroing a datagram, plus the decoding of attributes. The socket options
//! `IP_VS_SO_GET_INFO` and `IP_VS_SO_GET_DESTS` answer the same under the same lock, by copying
//! fixed-size structures: `ipvs->num_services` (IPv4 virtual servers only), and the real
//! servers of one IPv4 virtual server. They are the interface that predates IPv6, which they
//! cannot name; this crate only reads through them, and writes nothing.

use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, ErrorKind, Result};
use crate::types::{ConnectionCounts, Family, RealServer, RealServerEntry, RealServerId, VirtualServerId};
use crate::wire::constants::IP_VS_CONN_F_TUNNEL_TYPE_IPIP;
use crate::wire::{forward_method, protocol_number};

/// `IP_VS_BASE_CTL` in `include/uapi/linux/ip_vs.h`.
const IP_VS_BASE_CTL: libc::c_int = 64 + 1024 + 64;
/// `IP_VS_SO_GET_INFO`.
const IP_VS_SO_GET_INFO: libc::c_int = IP_VS_BASE_CTL + 1;
/// `IP_VS_SO_GET_DESTS`.
const IP_VS_SO_GET_DESTS: libc::c_int = IP_VS_BASE_CTL + 4;

/// Real servers asked for in a first read: more than most Services have endpoints, so that
/// one call is the rule; a virtual server with more is read again with room for them.
const FIRST_READ: usize = 32;

/// `struct ip_vs_getinfo`: laid out here for its size and offsets (read from bytes).
#[repr(C)]
#[allow(dead_code)]
struct GetInfo {
    version: libc::c_uint,
    conn_tab_size: libc::c_uint,
    num_services: libc::c_uint,
}

/// `struct ip_vs_stats_user`: laid out here for its size and alignment only (not decoded).
#[repr(C)]
#[allow(dead_code)]
struct StatsUser {
    conns: u32,
    inpkts: u32,
    outpkts: u32,
    inbytes: u64,
    outbytes: u64,
    cps: u32,
    inpps: u32,
    outpps: u32,
    inbps: u32,
    outbps: u32,
}

/// `struct ip_vs_dest_entry`, whose layout (offsets, padding, size) the compiler computes
/// from the C declaration's order; the bytes the kernel writes are read at those offsets.
#[repr(C)]
#[allow(dead_code)]
struct DestEntry {
    addr: u32,
    port: u16,
    conn_flags: u32,
    weight: i32,
    u_threshold: u32,
    l_threshold: u32,
    activeconns: u32,
    inactconns: u32,
    persistconns: u32,
    stats: StatsUser,
}

/// `struct ip_vs_get_dests` without its trailing table of [`DestEntry`]s.
#[repr(C)]
#[allow(dead_code)]
struct GetDests {
    protocol: u16,
    addr: u32,
    port: u16,
    fwmark: u32,
    num_dests: u32,
    entrytable: [DestEntry; 0],
}

// The uapi structures' sizes on every Linux ABI with 8-byte-aligned 64-bit integers.
const _: () = assert!(size_of::<DestEntry>() == 96 || size_of::<DestEntry>() == 92);
const _: () = assert!(offset_of!(GetDests, entrytable) == size_of::<GetDests>());

/// Reads IPVS through its socket options, in the network namespace it was opened in. Needs
/// `CAP_NET_ADMIN`, as every IPVS call does.
#[derive(Debug)]
pub struct SockoptReader {
    /// Any IPv4 socket reaches the options (the kernel hands unknown IP options to netfilter's
    /// registered ones); a datagram socket needs no `CAP_NET_RAW`, unlike `ipvsadm`'s raw one.
    socket: OwnedFd,
}

impl SockoptReader {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<SockoptReader> {
        // SAFETY: plain socket(2); the descriptor is owned at once below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io("open a socket to read IPVS's socket options", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SockoptReader { socket })
    }

    /// The number of IPv4 virtual servers (address and port, or firewall mark; anyone's) the
    /// kernel holds now: it counts no IPv6 ones here.
    pub fn count(&self) -> Result<u32> {
        let ctx = "count the IPVS virtual servers";
        let mut buf = [0u8; size_of::<GetInfo>()];
        let len = self.get(IP_VS_SO_GET_INFO, &mut buf).map_err(|e| Error::io(ctx, e))?;
        if len < buf.len() {
            return Err(Error::io(ctx, io::Error::new(io::ErrorKind::InvalidData, format!("a {len}-byte answer"))));
        }
        Ok(u32_at(&buf, offset_of!(GetInfo, num_services)))
    }

    /// The real servers of the IPv4 virtual server `id`, in the kernel's order, without their
    /// statistics; `None` when there is no such virtual server. What this interface cannot
    /// tell: a tunnel's encapsulation (read as IP-in-IP, port and flags 0) and real servers of
    /// the other family (IPv6 ones, which only tunnels have; the kernel leaves them out). An
    /// IPv6 `id` is refused (`ErrorKind::AddressFamilyNotSupported`) without a call.
    pub fn real_servers(&self, id: &VirtualServerId) -> Result<Option<Vec<RealServerEntry>>> {
        let mut room = FIRST_READ;
        loop {
            let mut buf = request(id, room).map_err(|e| {
                Error::new(ErrorKind::AddressFamilyNotSupported, format!("read the real servers of {id}"), e)
            })?;
            if let Err(err) = self.get(IP_VS_SO_GET_DESTS, &mut buf) {
                return match err.raw_os_error() {
                    Some(libc::ESRCH) => Ok(None),
                    Some(errno) => Err(Error::from_errno(errno, format!("read the real servers of {id}"), None)),
                    None => Err(Error::io(format!("read the real servers of {id}"), err)),
                };
            }
            match decode(&buf, room) {
                Some(entries) => return Ok(Some(entries)),
                // Every slot filled: there may be more; ask again with room for four times as many.
                None => room = room.saturating_mul(4),
            }
        }
    }

    /// `getsockopt(IPPROTO_IP, option)` into `buf`, which holds the request (if the option
    /// takes one) and has room for the answer; returns how many bytes the kernel said it wrote.
    fn get(&self, option: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
        let mut len = libc::socklen_t::try_from(buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a request too large for getsockopt"))?;
        // SAFETY: getsockopt reads and writes at most `len` bytes of `buf`, a live buffer of
        // exactly that length, and updates `len`; the kernel copies byte-wise (no alignment).
        let rc = unsafe {
            libc::getsockopt(self.socket.as_raw_fd(), libc::IPPROTO_IP, option, buf.as_mut_ptr().cast(), &mut len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(len as usize)
    }
}

/// The request for the real servers of `id` with room for `room` of them: the header, then
/// `room` zeroed entries.
fn request(id: &VirtualServerId, room: usize) -> std::result::Result<Vec<u8>, &'static str> {
    let mut buf = vec![0u8; size_of::<GetDests>() + room * size_of::<DestEntry>()];
    match *id {
        VirtualServerId::Tuple { protocol, addr: IpAddr::V4(addr), port } => {
            put(&mut buf, offset_of!(GetDests, protocol), &protocol_number(protocol).to_ne_bytes());
            put(&mut buf, offset_of!(GetDests, addr), &addr.octets());
            put(&mut buf, offset_of!(GetDests, port), &port.to_be_bytes());
        }
        VirtualServerId::Fwmark { family: Family::V4, mark } => {
            put(&mut buf, offset_of!(GetDests, fwmark), &mark.to_ne_bytes());
        }
        _ => return Err("IPVS's socket options name IPv4 virtual servers only"),
    }
    let n = u32::try_from(room).map_err(|_| "too many real servers to ask for")?;
    put(&mut buf, offset_of!(GetDests, num_dests), &n.to_ne_bytes());
    Ok(buf)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = buf.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    if let Some(slot) = buf.get(at..at + 4) {
        bytes.copy_from_slice(slot);
    }
    u32::from_ne_bytes(bytes)
}

/// The entries the kernel wrote into `buf` (a request with room for `room`), or `None` when it
/// filled every slot (there may be more). The kernel writes its real servers from the first
/// slot on and says nothing of how many: an entry's connection flags are never zero (the kernel
/// sets `IP_VS_CONN_F_INACTIVE` on every real server it keeps), so the first slot still zero
/// ends them.
fn decode(buf: &[u8], room: usize) -> Option<Vec<RealServerEntry>> {
    let mut entries = Vec::new();
    for i in 0..room {
        let at = size_of::<GetDests>() + i * size_of::<DestEntry>();
        let flags = u32_at(buf, at + offset_of!(DestEntry, conn_flags));
        if flags == 0 {
            return Some(entries);
        }
        let addr = Ipv4Addr::from(u32_at(buf, at + offset_of!(DestEntry, addr)).to_ne_bytes());
        let port_bytes = buf.get(at + offset_of!(DestEntry, port)..at + offset_of!(DestEntry, port) + 2);
        let port = port_bytes.map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        // This interface carries no tunnel type, port or flags: a tunnel reads as IP-in-IP.
        let forward = forward_method(flags, IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, 0);
        entries.push(RealServerEntry {
            server: RealServer {
                id: RealServerId { addr: IpAddr::V4(addr), port },
                weight: u32_at(buf, at + offset_of!(DestEntry, weight)),
                forward,
                upper_threshold: u32_at(buf, at + offset_of!(DestEntry, u_threshold)),
                lower_threshold: u32_at(buf, at + offset_of!(DestEntry, l_threshold)),
            },
            connections: ConnectionCounts {
                active: u32_at(buf, at + offset_of!(DestEntry, activeconns)),
                inactive: u32_at(buf, at + offset_of!(DestEntry, inactconns)),
                persistent: u32_at(buf, at + offset_of!(DestEntry, persistconns)),
            },
            stats: Default::default(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ForwardMethod, Protocol};

    fn tcp(addr: &str, port: u16) -> VirtualServerId {
        VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: addr.parse().unwrap(), port }
    }

    /// Writes `entries` into `buf` as the kernel does: from the first slot on.
    fn kernel_writes(buf: &mut [u8], entries: &[(Ipv4Addr, u16, u32, u32, u32, u32)]) {
        for (i, (addr, port, flags, weight, active, inactive)) in entries.iter().enumerate() {
            let at = size_of::<GetDests>() + i * size_of::<DestEntry>();
            put(buf, at + offset_of!(DestEntry, addr), &addr.octets());
            put(buf, at + offset_of!(DestEntry, port), &port.to_be_bytes());
            put(buf, at + offset_of!(DestEntry, conn_flags), &flags.to_ne_bytes());
            put(buf, at + offset_of!(DestEntry, weight), &weight.to_ne_bytes());
            put(buf, at + offset_of!(DestEntry, activeconns), &active.to_ne_bytes());
            put(buf, at + offset_of!(DestEntry, inactconns), &inactive.to_ne_bytes());
        }
    }

    #[test]
    fn a_request_names_its_virtual_server_and_its_room() {
        let buf = request(&tcp("10.96.0.10", 53), 3).unwrap();
        assert_eq!(buf.len(), size_of::<GetDests>() + 3 * size_of::<DestEntry>());
        assert_eq!(u32_at(&buf, offset_of!(GetDests, num_dests)), 3);
        assert_eq!(buf[offset_of!(GetDests, addr)..][..4], [10, 96, 0, 10]);
        assert_eq!(buf[offset_of!(GetDests, port)..][..2], [0, 53]);
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), 6, "IPPROTO_TCP");
        let mark = request(&VirtualServerId::Fwmark { family: Family::V4, mark: 7 }, 1).unwrap();
        assert_eq!(u32_at(&mark, offset_of!(GetDests, fwmark)), 7);
        assert!(request(&tcp("fd00::1", 80), 1).is_err());
        assert!(request(&VirtualServerId::Fwmark { family: Family::V6, mark: 7 }, 1).is_err());
    }

    #[test]
    fn the_entries_end_at_the_first_slot_the_kernel_left_zero() {
        let mut buf = request(&tcp("10.96.0.10", 80), 4).unwrap();
        let a = Ipv4Addr::new(10, 244, 1, 2);
        let b = Ipv4Addr::new(10, 244, 2, 2);
        // IP_VS_CONN_F_INACTIVE | masquerade, then | direct routing.
        kernel_writes(&mut buf, &[(a, 8080, 0x100, 1, 2, 3), (b, 8443, 0x103, 70000, 0, 0)]);
        let entries = decode(&buf, 4).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].server, RealServer::new(IpAddr::V4(a), 8080, 1));
        assert_eq!((entries[0].connections.active, entries[0].connections.inactive), (2, 3));
        assert_eq!(entries[1].server.forward, ForwardMethod::Route);
        assert_eq!((entries[1].server.id.port, entries[1].server.weight), (8443, 70000));
        assert_eq!(decode(&request(&tcp("10.96.0.10", 80), 4).unwrap(), 4), Some(Vec::new()));
    }

    #[test]
    fn every_slot_filled_asks_for_more() {
        let mut buf = request(&tcp("10.96.0.10", 80), 2).unwrap();
        let a = Ipv4Addr::new(10, 244, 1, 2);
        kernel_writes(&mut buf, &[(a, 1, 0x100, 1, 0, 0), (a, 2, 0x100, 1, 0, 0)]);
        assert_eq!(decode(&buf, 2), None);
    }

    #[test]
    fn short_or_garbled_answers_decode_without_panicking() {
        for len in 0..300 {
            let buf: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = decode(&buf, 3);
        }
    }
}
