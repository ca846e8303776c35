//! The crate's error: what went wrong ([`ErrorKind`]) and with which object.

use std::fmt;

/// What kind of failure an [`Error`] is. Kernel refusals map from their errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `EEXIST`: the virtual server, real server, link or address is already there.
    Exists,
    /// `ESRCH`: the virtual server named does not exist.
    NoSuchVirtualServer,
    /// `ENOENT`: the real server does not exist, or the scheduler / persistence engine module
    /// named is not loaded; also a missing link.
    NotFound,
    /// `EPERM`: the process lacks `CAP_NET_ADMIN`.
    PermissionDenied,
    /// `ERANGE`: a value out of range (negative weight, lower threshold above upper).
    OutOfRange,
    /// `EINVAL`: the kernel (or this client, before sending) found the request malformed.
    Invalid,
    /// `EAFNOSUPPORT`: the address family is not supported (IPv6 without IPv6 support, or
    /// mixed families outside tunnels).
    AddressFamilyNotSupported,
    /// The kernel has no IPVS (the `ip_vs` module is not loaded).
    IpvsUnavailable,
    /// Another errno from the kernel (see [`Error::errno`]).
    Os,
    /// The socket itself failed (send, receive, creation), or an acknowledgement was lost.
    Io,
    /// A reply could not be decoded.
    Decode,
}

impl ErrorKind {
    /// The kind an errno (positive) maps to.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            libc_errno::EEXIST => ErrorKind::Exists,
            libc_errno::ESRCH => ErrorKind::NoSuchVirtualServer,
            libc_errno::ENOENT => ErrorKind::NotFound,
            libc_errno::EPERM => ErrorKind::PermissionDenied,
            libc_errno::ERANGE => ErrorKind::OutOfRange,
            libc_errno::EINVAL => ErrorKind::Invalid,
            libc_errno::EAFNOSUPPORT => ErrorKind::AddressFamilyNotSupported,
            _ => ErrorKind::Os,
        }
    }
}

/// Linux errno values: the crate is pure without the `client` feature, so it does not pull in
/// libc for a handful of numbers.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ERANGE: i32 = 34;
    pub const ENOBUFS: i32 = 105;
    pub const EAFNOSUPPORT: i32 = 97;
}

/// An IPVS or link failure, naming the object concerned:
/// `add virtual server TCP 10.0.0.1:80: already exists`.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct Error {
    kind: ErrorKind,
    errno: Option<i32>,
    context: String,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` while doing `context` (e.g. "add virtual server TCP 10.0.0.1:80").
    pub fn new(kind: ErrorKind, context: impl fmt::Display, message: impl Into<String>) -> Error {
        Error { kind, errno: None, context: context.to_string(), message: message.into(), source: None }
    }

    /// The kernel refused `context` with `errno` (positive). `names` is the scheduler and
    /// persistence engine the request named, to explain an `ENOENT` for a missing module.
    pub fn from_errno(errno: i32, context: impl fmt::Display, names: Option<(&str, Option<&str>)>) -> Error {
        let kind = ErrorKind::from_errno(errno);
        let message = match (kind, names) {
            (ErrorKind::Exists, _) => "already exists".to_string(),
            (ErrorKind::NoSuchVirtualServer, _) => "no such virtual server".to_string(),
            (ErrorKind::NotFound, Some((sched, None))) => {
                format!("scheduler `{sched}` not found (is its module ip_vs_{sched} loaded?)")
            }
            (ErrorKind::NotFound, Some((sched, Some(pe)))) => format!(
                "scheduler `{sched}` or persistence engine `{pe}` not found \
                 (are the modules ip_vs_{sched} and ip_vs_pe_{pe} loaded?)"
            ),
            (ErrorKind::NotFound, None) => "not found".to_string(),
            (ErrorKind::PermissionDenied, _) => "permission denied (CAP_NET_ADMIN is needed)".to_string(),
            (ErrorKind::OutOfRange, _) => "value out of range".to_string(),
            (ErrorKind::Invalid, _) => "invalid argument".to_string(),
            (ErrorKind::AddressFamilyNotSupported, _) => "address family not supported".to_string(),
            _ => std::io::Error::from_raw_os_error(errno).to_string(),
        };
        Error { kind, errno: Some(errno), context: context.to_string(), message, source: None }
    }

    /// The kernel has no IPVS.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn ipvs_unavailable(context: impl fmt::Display) -> Error {
        Error::new(
            ErrorKind::IpvsUnavailable,
            context,
            "the kernel has no IPVS: load the ip_vs module (modprobe ip_vs) or use a kernel built \
             with CONFIG_IP_VS",
        )
    }

    /// A socket failure while doing `context`.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            errno: err.raw_os_error(),
            context: context.to_string(),
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }

    /// A reply to `context` that could not be decoded.
    pub fn decode(context: impl fmt::Display, err: netlink_packet_core::DecodeError) -> Error {
        Error {
            kind: ErrorKind::Decode,
            errno: None,
            context: context.to_string(),
            message: format!("cannot decode the kernel's reply: {err}"),
            source: Some(Box::new(err)),
        }
    }

    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn set_errno(&mut self, errno: i32) {
        self.errno = Some(errno);
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno (positive) the kernel or the socket reported, if any.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// What was being done, naming the object: `add virtual server TCP 10.0.0.1:80`.
    pub fn context(&self) -> &str {
        &self.context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_kind_and_message() {
        type Modules<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: &[(i32, Modules, ErrorKind, &str)] = &[
            (17, None, ErrorKind::Exists, "add virtual server TCP 10.0.0.1:80: already exists"),
            (3, None, ErrorKind::NoSuchVirtualServer, "add virtual server TCP 10.0.0.1:80: no such virtual server"),
            (
                2,
                Some(("xyz", None)),
                ErrorKind::NotFound,
                "add virtual server TCP 10.0.0.1:80: scheduler `xyz` not found (is its module ip_vs_xyz loaded?)",
            ),
            (2, None, ErrorKind::NotFound, "add virtual server TCP 10.0.0.1:80: not found"),
            (
                1,
                None,
                ErrorKind::PermissionDenied,
                "add virtual server TCP 10.0.0.1:80: permission denied (CAP_NET_ADMIN is needed)",
            ),
            (34, None, ErrorKind::OutOfRange, "add virtual server TCP 10.0.0.1:80: value out of range"),
            (22, None, ErrorKind::Invalid, "add virtual server TCP 10.0.0.1:80: invalid argument"),
            (
                97,
                None,
                ErrorKind::AddressFamilyNotSupported,
                "add virtual server TCP 10.0.0.1:80: address family not supported",
            ),
        ];
        for (errno, names, kind, text) in cases {
            let e = Error::from_errno(*errno, "add virtual server TCP 10.0.0.1:80", *names);
            assert_eq!(e.kind(), *kind, "errno {errno}");
            assert_eq!(e.errno(), Some(*errno));
            assert_eq!(e.to_string(), *text);
        }
        let other = Error::from_errno(16, "flush", None);
        assert_eq!(other.kind(), ErrorKind::Os);
        assert!(other.to_string().starts_with("flush: "), "{other}");
    }

    #[test]
    fn unavailable_says_how_to_fix() {
        let e = Error::ipvs_unavailable("connect to IPVS");
        assert_eq!(e.kind(), ErrorKind::IpvsUnavailable);
        assert!(e.to_string().contains("modprobe ip_vs"), "{e}");
    }
}
