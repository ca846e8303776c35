//! How many virtual servers the kernel holds, in O(1).
//!
//! Generic netlink has no such query (`IPVS_CMD_GET_INFO` answers the version and the
//! connection table's size only): knowing whether a virtual server went missing takes a dump of
//! the whole table, which at 10,000 virtual servers the kernel restarts from the top for each
//! datagram. The IPVS socket option `IP_VS_SO_GET_INFO` answers the count of the socket's
//! network namespace (`ipvs->num_services`, which counts IPv4 virtual servers only) under the
//! same lock as one netlink call, and is the one thing this crate reads that way: it writes
//! nothing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// `IP_VS_BASE_CTL + 1` in `include/uapi/linux/ip_vs.h`.
const IP_VS_SO_GET_INFO: libc::c_int = 64 + 1024 + 64 + 1;

/// `struct ip_vs_getinfo`.
#[repr(C)]
#[derive(Default)]
struct GetInfo {
    version: libc::c_uint,
    conn_tab_size: libc::c_uint,
    num_services: libc::c_uint,
}

/// Reads the number of IPv4 virtual servers (address and port, or firewall mark; this proxy's
/// and others') of the network namespace it was opened in: the kernel counts no IPv6 ones
/// there, the option belonging to the interface that predates them. Needs `CAP_NET_ADMIN`, as
/// every IPVS call does.
#[derive(Debug)]
pub struct VirtualServerCounter {
    /// Any IPv4 socket reaches the option (the kernel hands unknown IP options to netfilter's
    /// registered ones); a datagram socket needs no `CAP_NET_RAW`, unlike `ipvsadm`'s raw one.
    socket: OwnedFd,
}

impl VirtualServerCounter {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<VirtualServerCounter> {
        // SAFETY: plain socket(2); the descriptor is owned at once below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io("open a socket to count the IPVS virtual servers", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(VirtualServerCounter { socket })
    }

    /// The number of IPv4 virtual servers the kernel holds now.
    pub fn count(&self) -> Result<u32> {
        let ctx = "count the IPVS virtual servers";
        let mut info = GetInfo::default();
        let mut len = std::mem::size_of::<GetInfo>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, a live repr(C) value of
        // exactly that size, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_VS_SO_GET_INFO,
                (&mut info as *mut GetInfo).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(Error::io(ctx, io::Error::last_os_error()));
        }
        if (len as usize) < std::mem::size_of::<GetInfo>() {
            return Err(Error::io(ctx, io::Error::new(io::ErrorKind::InvalidData, format!("a {len}-byte answer"))));
        }
        Ok(info.num_services)
    }
}
