//! [`DummyLink`]: the dummy link (`kube-ipvs0`) that holds service addresses so the host accepts
//! their packets, spoken over rtnetlink.
//!
//! Like upstream kube-proxy, the link is created and left down: a dummy link's addresses are
//! local addresses whether it is up or not, and down it answers nothing on its own.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkDummy};

use crate::{Error, ErrorKind, Result};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

/// A dummy link, by name and index, with its own rtnetlink connection (shared by its clones).
#[derive(Clone)]
pub struct DummyLink {
    name: String,
    index: u32,
    handle: Handle,
}

impl fmt::Debug for DummyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DummyLink").field("name", &self.name).field("index", &self.index).finish()
    }
}

fn connect(ctx: impl fmt::Display) -> Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| Error::io(ctx, e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Maps an rtnetlink failure to the crate's error, keeping the kernel's errno.
fn link_error(ctx: impl fmt::Display, err: rtnetlink::Error) -> Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => Error::from_errno(-msg.raw_code(), ctx, None),
        other => Error::new(ErrorKind::Io, ctx, other.to_string()),
    }
}

fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(link_error(format_args!("look up link {name}"), e)),
    }
}

/// The address of an address message: `IFA_LOCAL` (IPv4), else `IFA_ADDRESS`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

fn host_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl DummyLink {
    /// Opens the link `name`, creating it as a dummy link (left down) if it does not exist.
    pub async fn ensure(name: &str) -> Result<DummyLink> {
        let ctx = format!("create dummy link {name}");
        let handle = connect(&ctx)?;
        if let Some(index) = find_link(&handle, name).await? {
            return Ok(DummyLink { name: name.to_string(), index, handle });
        }
        match handle.link().add(LinkDummy::new(name).build()).execute().await {
            Ok(()) => {}
            // Someone else created it meanwhile: as good.
            Err(e) if errno_of(&e) == Some(EEXIST) => {}
            Err(e) => return Err(link_error(&ctx, e)),
        }
        match find_link(&handle, name).await? {
            Some(index) => Ok(DummyLink { name: name.to_string(), index, handle }),
            None => Err(Error::new(ErrorKind::NotFound, ctx, "created, but gone at once")),
        }
    }

    /// Opens the link `name` if it exists.
    pub async fn open(name: &str) -> Result<Option<DummyLink>> {
        let handle = connect(format_args!("open link {name}"))?;
        Ok(find_link(&handle, name).await?.map(|index| DummyLink { name: name.to_string(), index, handle }))
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The addresses on the link.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>> {
        dump_addresses(self.index, &self.name).await
    }

    /// Adds `addr` as a host address (/32 or /128). Adding a present address is Ok. IPv6
    /// addresses skip duplicate address detection, or they would stay "tentative" for a while.
    pub async fn add_address(&self, addr: IpAddr) -> Result<()> {
        let mut request = self.handle.address().add(self.index, addr, host_prefix(&addr));
        *request.message_mut() = crate::link_batch::new_address(self.index, addr);
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(link_error(format_args!("add address {addr} to {}", self.name), e)),
        }
    }

    /// Adds each of `addrs` as [`DummyLink::add_address`] does, but a few hundred per system
    /// call (on a socket of its own); one result per address, in order. Blocking: the kernel
    /// does the work inside each call (run it where blocking is allowed).
    pub fn add_addresses(&self, addrs: &[IpAddr]) -> Vec<Result<()>> {
        crate::link_batch::add_addresses(self.index, &self.name, addrs)
    }

    /// Removes `addr` from the link. Removing an absent address is Ok.
    pub async fn remove_address(&self, addr: IpAddr) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = match addr {
            IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
        };
        msg.header.prefix_len = host_prefix(&addr);
        msg.header.index = self.index;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(link_error(format_args!("remove address {addr} from {}", self.name), e)),
        }
    }

    /// Deletes the link (and its addresses). Deleting a link already gone is Ok.
    pub async fn delete(self) -> Result<()> {
        match self.handle.link().del(self.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(link_error(format_args!("delete link {}", self.name), e)),
        }
    }
}

/// The addresses of the link `index`, by one address dump on a socket of its own, each
/// datagram's messages decoded and dropped before the next is read. Through the shared
/// rtnetlink connection, its task decodes a whole dump into a queue before the caller reads
/// any: at 10,000 addresses, megabytes of messages held at once for a list of addresses.
async fn dump_addresses(index: u32, name: &str) -> Result<Vec<IpAddr>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use netlink_sys::protocols::NETLINK_ROUTE;
    use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
    use rtnetlink::packet_route::RouteNetlinkMessage;

    let ctx = || format!("list addresses of {name}");
    let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(|e| Error::io(ctx(), e))?;
    let raw = socket.socket_mut();
    raw.bind_auto().map_err(|e| Error::io(ctx(), e))?;
    raw.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::io(ctx(), e))?;
    // The kernel then dumps this link's addresses only; older kernels dump every link's, which
    // the index check below leaves out.
    let _ = raw.set_netlink_get_strict_chk(true);
    let mut request = AddressMessage::default();
    request.header.index = index;
    let mut message = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(request));
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = 1;
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf).await.map_err(|e| Error::io(ctx(), e))?;

    let mut out = Vec::new();
    let mut datagram = Vec::with_capacity(32 * 1024);
    loop {
        datagram.clear();
        socket.recv(&mut datagram).await.map_err(|e| Error::io(ctx(), e))?;
        for frame in crate::wire::frames(&datagram) {
            let frame = frame.map_err(|e| Error::decode(ctx(), e))?;
            let message =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.bytes).map_err(|e| Error::decode(ctx(), e))?;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.raw_code() != 0 => {
                    return Err(Error::from_errno(-e.raw_code(), ctx(), None));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) if m.header.index == index => {
                    out.extend(address_of(&m));
                }
                _ => {}
            }
        }
    }
}
