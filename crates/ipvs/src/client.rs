//! [`Client`]: the IPVS API over one generic netlink socket.

use tokio::sync::Mutex;

use crate::socket::{ClientOptions, Connection, Context};
use crate::wire::constants::*;
use crate::wire::{
    IpvsAttr, IpvsMessage, check_operation, info_from_message, operation_message, real_server_entry_from_nest_with,
    service_id_attrs, timeouts_attrs, timeouts_from_message, virtual_server_entry, virtual_server_entry_from_nest,
};
use crate::{
    Error, Info, Operation, RealServer, RealServerEntry, RealServerId, Result, Table, Timeouts, VirtualServer,
    VirtualServerEntry, VirtualServerId,
};

/// A connection to the kernel's IPVS tables in the current network namespace.
///
/// `Send + Sync`; every method takes `&self` and calls are serialized on one socket. Cancelling
/// a call (dropping its future) is safe: the next call opens a fresh socket instead of reading
/// the abandoned replies. Every call needs `CAP_NET_ADMIN`.
pub struct Client {
    conn: Mutex<Connection>,
    /// Whether listings decode the statistics ([`ClientOptions::without_statistics`]).
    statistics: bool,
}

impl Client {
    /// Opens a socket and resolves the `IPVS` generic netlink family. Fails with
    /// [`ErrorKind::IpvsUnavailable`](crate::ErrorKind::IpvsUnavailable) when the kernel has no IPVS.
    pub async fn connect() -> Result<Client> {
        Client::connect_with(ClientOptions::default()).await
    }

    /// Like [`Client::connect`], with the socket set up as `options` say.
    pub async fn connect_with(options: ClientOptions) -> Result<Client> {
        Ok(Client { conn: Mutex::new(Connection::connect(options).await?), statistics: options.statistics })
    }

    /// The IPVS version and connection table size (`GET_INFO`).
    pub async fn info(&self) -> Result<Info> {
        let mut info = None;
        let what = "get IPVS info";
        self.conn
            .lock()
            .await
            .exchange(Context::new(&what), IpvsMessage::new(IPVS_CMD_GET_INFO, vec![]), false, |m| {
                info = Some(info_from_message(&m));
                Ok(())
            })
            .await?;
        info.ok_or_else(|| Error::new(crate::ErrorKind::Decode, what, "the kernel sent no info"))
    }

    /// Creates a virtual server; [`ErrorKind::Exists`](crate::ErrorKind::Exists) if it is there.
    pub async fn add_virtual_server(&self, vs: &VirtualServer) -> Result<()> {
        self.write(&Operation::AddVirtualServer(vs.clone())).await
    }

    /// Changes a virtual server's scheduler, flags, timeout, netmask and persistence engine
    /// in place; [`ErrorKind::NoSuchVirtualServer`](crate::ErrorKind::NoSuchVirtualServer) if absent.
    pub async fn update_virtual_server(&self, vs: &VirtualServer) -> Result<()> {
        self.write(&Operation::UpdateVirtualServer(vs.clone())).await
    }

    /// Deletes a virtual server and its real servers.
    pub async fn delete_virtual_server(&self, id: &VirtualServerId) -> Result<()> {
        self.write(&Operation::DeleteVirtualServer(*id)).await
    }

    /// Creates a real server under `vs`.
    pub async fn add_real_server(&self, vs: &VirtualServerId, rs: &RealServer) -> Result<()> {
        self.write(&Operation::AddRealServer(*vs, *rs)).await
    }

    /// Changes a real server's weight, forwarding method and thresholds in place.
    pub async fn update_real_server(&self, vs: &VirtualServerId, rs: &RealServer) -> Result<()> {
        self.write(&Operation::UpdateRealServer(*vs, *rs)).await
    }

    /// Deletes a real server of `vs`.
    pub async fn delete_real_server(&self, vs: &VirtualServerId, rs: &RealServerId) -> Result<()> {
        self.write(&Operation::DeleteRealServer(*vs, *rs)).await
    }

    /// One write, acknowledged.
    async fn write(&self, op: &Operation) -> Result<()> {
        if let Err((kind, message)) = check_operation(op) {
            return Err(Error::new(kind, op, message));
        }
        let modules = match op {
            Operation::AddVirtualServer(vs) | Operation::UpdateVirtualServer(vs) => {
                Some((vs.scheduler.as_str(), vs.pe_name.as_deref()))
            }
            _ => None,
        };
        let ctx = Context { what: op, modules };
        self.conn.lock().await.exchange(ctx, operation_message(op), false, |_| Ok(())).await
    }

    /// One virtual server with its counters;
    /// [`ErrorKind::NoSuchVirtualServer`](crate::ErrorKind::NoSuchVirtualServer) if absent.
    pub async fn get_virtual_server(&self, id: &VirtualServerId) -> Result<VirtualServerEntry> {
        let what = format!("get virtual server {id}");
        let msg = IpvsMessage::new(IPVS_CMD_GET_SERVICE, vec![IpvsAttr::Service(service_id_attrs(id))]);
        let mut found = None;
        self.conn
            .lock()
            .await
            .exchange(Context::new(&what), msg, false, |m| {
                if let Some(attrs) = m.service() {
                    found = Some(virtual_server_entry(attrs).map_err(|e| Error::decode(&what, e))?);
                }
                Ok(())
            })
            .await?;
        found.ok_or_else(|| Error::from_errno(crate::error::libc_errno::ESRCH, &what, None))
    }

    /// Whether the virtual server exists.
    pub async fn is_present(&self, id: &VirtualServerId) -> Result<bool> {
        match self.get_virtual_server(id).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == crate::ErrorKind::NoSuchVirtualServer => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every virtual server, in the kernel's dump order (one dump).
    pub async fn list_virtual_servers(&self) -> Result<Vec<VirtualServerEntry>> {
        let mut conn = self.conn.lock().await;
        list_services(&mut conn, self.statistics).await
    }

    /// Every virtual server's configuration, without counters (one dump), in a vector with room
    /// for `expected` (a caller that knows about how many there are): for a reader comparing
    /// configurations, which need not hold the counters, nor a vector grown by doubling, at
    /// tens of thousands.
    pub async fn list_virtual_server_configs(&self, expected: usize) -> Result<Vec<VirtualServer>> {
        let mut conn = self.conn.lock().await;
        let mut out = Vec::with_capacity(expected);
        each_service(&mut conn, false, |entry| out.push(entry.server)).await?;
        Ok(out)
    }

    /// The real servers of `vs` (one dump); empty if `vs` does not exist (the kernel does not
    /// tell the difference).
    pub async fn list_real_servers(&self, vs: &VirtualServerId) -> Result<Vec<RealServerEntry>> {
        let mut conn = self.conn.lock().await;
        list_dests(&mut conn, vs, self.statistics).await
    }

    /// The whole table: one service dump, then one destination dump per service, on one socket
    /// with reused buffers. Not a snapshot: writes by others during the listing may show.
    pub async fn table(&self) -> Result<Table> {
        let mut conn = self.conn.lock().await;
        let services = list_services(&mut conn, self.statistics).await?;
        let mut table = Table { services: Vec::with_capacity(services.len()) };
        for vs in services {
            let dests = list_dests(&mut conn, &vs.server.id, self.statistics).await?;
            table.services.push((vs, dests));
        }
        Ok(table)
    }

    /// The connection timeouts (`GET_CONFIG`).
    pub async fn timeouts(&self) -> Result<Timeouts> {
        let mut t = None;
        let what = "get IPVS timeouts";
        self.conn
            .lock()
            .await
            .exchange(Context::new(&what), IpvsMessage::new(IPVS_CMD_GET_CONFIG, vec![]), false, |m| {
                t = Some(timeouts_from_message(&m));
                Ok(())
            })
            .await?;
        t.ok_or_else(|| Error::new(crate::ErrorKind::Decode, what, "the kernel sent no timeouts"))
    }

    /// Sets the connection timeouts; fields that are 0 are left unchanged.
    pub async fn set_timeouts(&self, t: &Timeouts) -> Result<()> {
        let what = format!("set IPVS timeouts tcp {} tcpfin {} udp {}", t.tcp, t.tcp_fin, t.udp);
        let msg = IpvsMessage::new(IPVS_CMD_SET_CONFIG, timeouts_attrs(t));
        self.conn.lock().await.exchange(Context::new(&what), msg, false, |_| Ok(())).await
    }

    /// Deletes every virtual server (`FLUSH`).
    pub async fn flush(&self) -> Result<()> {
        let what = "flush the IPVS table";
        let msg = IpvsMessage::new(IPVS_CMD_FLUSH, vec![]);
        self.conn.lock().await.exchange(Context::new(&what), msg, false, |_| Ok(())).await
    }

    /// Zeroes the counters of one virtual server (and its real servers), or of all.
    pub async fn zero(&self, vs: Option<&VirtualServerId>) -> Result<()> {
        let what = match vs {
            Some(id) => format!("zero the counters of virtual server {id}"),
            None => "zero all IPVS counters".to_string(),
        };
        let attrs = vs.map(|id| vec![IpvsAttr::Service(service_id_attrs(id))]).unwrap_or_default();
        let msg = IpvsMessage::new(IPVS_CMD_ZERO, attrs);
        self.conn.lock().await.exchange(Context::new(&what), msg, false, |_| Ok(())).await
    }

    /// Performs many writes pipelined: requests concatenated into few `sendmsg` calls, each
    /// acknowledged and matched by sequence number. Returns one result per operation, in input
    /// order; a failure does not stop the rest (there is no transaction). The outer error is
    /// only for a failure of the socket itself.
    pub async fn apply(&self, ops: &[Operation]) -> Result<Vec<Result<()>>> {
        let mut conn = self.conn.lock().await;
        crate::batch::apply(&mut conn, ops).await
    }
}

async fn list_services(conn: &mut Connection, statistics: bool) -> Result<Vec<VirtualServerEntry>> {
    let mut out = Vec::new();
    each_service(conn, statistics, |entry| out.push(entry)).await?;
    Ok(out)
}

/// Dumps the virtual servers, handing each entry to `take` as it is decoded.
async fn each_service(conn: &mut Connection, statistics: bool, mut take: impl FnMut(VirtualServerEntry)) -> Result<()> {
    let what = "list virtual servers";
    let msg = IpvsMessage::new(IPVS_CMD_GET_SERVICE, vec![]);
    // Each entry decoded straight from its bytes, as for destinations.
    conn.exchange_frames(Context::new(&what), msg, true, |frame| {
        let nest = frame.attribute(IPVS_CMD_ATTR_SERVICE).map_err(|e| Error::decode(what, e))?;
        // Unknown values decode as `Other`; an entry that still cannot be read (an address
        // family IPVS never reports) is left out, named in a warning, rather than failing the
        // dump: it cannot be one this crate's users wrote.
        if let Some(nest) = nest {
            match virtual_server_entry_from_nest(nest, statistics) {
                Ok(entry) => take(entry),
                Err(e) => tracing::warn!(error = %e, "{what}: skipped an entry that cannot be decoded"),
            }
        }
        Ok(())
    })
    .await
}

async fn list_dests(conn: &mut Connection, vs: &VirtualServerId, statistics: bool) -> Result<Vec<RealServerEntry>> {
    let what = ListDests(vs);
    let family = vs.family();
    let mut out = Vec::new();
    let msg = IpvsMessage::new(IPVS_CMD_GET_DEST, vec![IpvsAttr::Service(service_id_attrs(vs))]);
    // The hot path of `table()`: decode each entry straight from its bytes.
    conn.exchange_frames(Context::new(&what), msg, true, |frame| {
        let nest = frame.dest_nest().map_err(|e| Error::decode(&what, e))?;
        if let Some(nest) = nest {
            match real_server_entry_from_nest_with(nest, family, statistics) {
                Ok(entry) => out.push(entry),
                Err(e) => tracing::warn!(error = %e, "{what}: skipped an entry that cannot be decoded"),
            }
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Formats lazily: the destination dump of every service in [`Client::table`] must not pay for
/// a string it only needs on failure.
struct ListDests<'a>(&'a VirtualServerId);

impl std::fmt::Display for ListDests<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "list real servers of {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code, unreachable_code, unused_variables)]
    fn futures_are_send(c: &Client, id: &VirtualServerId, vs: &VirtualServer, rs: &RealServer) {
        // Compiles only if the daemon can hold these futures across tokio::spawn.
        assert_send(&c.table());
        assert_send(&c.apply(&[]));
        assert_send(&c.add_virtual_server(vs));
        assert_send(&c.add_real_server(id, rs));
        assert_send(&c.get_virtual_server(id));
        assert_send(&c.list_real_servers(id));
        assert_send(&Client::connect());
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
    }
}
